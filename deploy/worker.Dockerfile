# Idle Accelerator image: the volunteer worker, and Flower for admins.
# Build from the repository root: docker build -f deploy/worker.Dockerfile .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY compute ./compute
COPY worker ./worker
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1
RUN groupadd --system --gid 10001 idle \
    && useradd --system --uid 10001 --gid idle --no-create-home --home-dir /nonexistent idle
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["idle-accel"]
CMD ["worker"]
