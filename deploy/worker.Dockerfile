# Idle Accelerator image: the volunteer worker (and Flower, and the metrics
# exporter, with another entrypoint).
#   docker build -f deploy/worker.Dockerfile -t idle-accelerator .
#   docker build -f deploy/worker.Dockerfile --build-arg EXTRAS=render,inference,train \
#       -t idle-accelerator:full .          # the task modules' engines too
# GPU volunteers: build on a CUDA runtime base and pass the GPU through
# (compose profile "gpu"); see docs/admin.md, "Containers".
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ARG EXTRAS=""
WORKDIR /src
COPY deploy/requirements.lock ./deploy/
COPY pyproject.toml README.md LICENSE ./
COPY compute ./compute
COPY worker ./worker
# Every dependency at the version and SHA-256 of deploy/requirements.lock (made for
# x86_64 Linux, Python 3.11: remake it for another platform); the project from this
# context. The optional EXTRAS are held to the same versions, without hashes.
RUN pip wheel --no-cache-dir --wheel-dir /wheels --require-hashes -r deploy/requirements.lock \
    && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && if [ -n "$EXTRAS" ]; then \
         sed 's/ --hash=.*//' deploy/requirements.lock > /tmp/constraints.txt \
         && pip wheel --no-cache-dir --wheel-dir /wheels -c /tmp/constraints.txt ".[$EXTRAS]"; \
       fi

FROM ${BASE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    HOME=/tmp \
    HF_HUB_OFFLINE=1
RUN groupadd --system --gid 10001 idle \
    && useradd --system --uid 10001 --gid idle --no-create-home --home-dir /nonexistent idle \
    && install -d -o 10001 -g 10001 -m 0700 /data
# /data: Flower's database (the compose volume flower-data starts as a copy of this
# folder, so it belongs to the image's user, not to root).
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
