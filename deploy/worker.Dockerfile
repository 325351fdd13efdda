# Idle Accelerator image: the volunteer worker (and Flower, and the metrics
# exporter, with another entrypoint).
#   docker build -f deploy/worker.Dockerfile -t idle-accelerator .
#   docker build -f deploy/worker.Dockerfile --build-arg EXTRAS=render,inference \
#       -t idle-accelerator:full .          # the task modules' engines too
# GPU volunteers: build on a CUDA runtime base and pass the GPU through
# (compose profile "gpu"); see README, "Containers".
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ARG EXTRAS=""
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY compute ./compute
COPY worker ./worker
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".${EXTRAS:+[$EXTRAS]}"

FROM ${BASE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    HOME=/tmp \
    HF_HUB_OFFLINE=1
RUN groupadd --system --gid 10001 idle \
    && useradd --system --uid 10001 --gid idle --no-create-home --home-dir /nonexistent idle
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
USER 10001:10001
# The root filesystem can be read-only: everything written goes to /tmp (tmpfs).
WORKDIR /tmp
# The owner cannot be seen from inside a container: the host's sensor writes
# this file (idle-accel sensor --out), mounted read-only.
VOLUME ["/run/idle-accel"]
HEALTHCHECK --interval=30s --timeout=15s --start-period=30s --retries=3 \
    CMD ["idle-accel", "ping", "--from-status", "--timeout", "10"]
ENTRYPOINT ["idle-accel", "worker", "--sensor", "file:/run/idle-accel/state"]
