# Idle Accelerator's Redis: Debian's redis-server (7.0, with TLS and ACLs), run as
# the unprivileged user `redis` (fixed UID 10002), its data in /data (a volume owned
# by that user).
#   docker build -f deploy/redis.Dockerfile -t idle-accel-redis .
# Without an image registry, build on a base imported from debootstrap (docs/admin.md,
# "Containers"): --build-arg BASE=idle-accel-base:bookworm --network host.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
# The user first, so the package keeps it (a fixed UID, as the worker image's 10001).
# Debian's security updates replace the package version in place: not pinned here.
# hadolint ignore=DL3008
RUN groupadd --system --gid 10002 redis \
    && useradd --system --uid 10002 --gid redis --no-create-home --home-dir /data redis \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o redis -g redis -m 0700 /data
USER 10002:10002
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["redis-server"]
