# syntax=docker/dockerfile:1
# The worker image: `make image` (or `docker build -t streaming-worker .`), then
# `docker run streaming-worker run`. Two stages on the same base: the build stage installs
# into a venv with pip; the runtime stage copies only that venv onto a fresh base, so no
# compiler, pip cache, build tool, test or benchmark ships.

# The official image by default; `make image-test` passes a stand-in built from Debian's own
# packages where registry images cannot be pulled (scripts/stand-in-base).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# A venv without pip or setuptools of its own: the build stage's pip installs into it, and the
# runtime image carries only what the worker imports.
RUN python -m venv --without-pip /opt/venv
# Dependencies first, pinned by the lock file, from pyproject.toml's list alone (no package,
# no stub of one), so a code change reuses this slow layer.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip --python /opt/venv/bin/python install --no-cache-dir -r requirements.txt -c constraints.txt
# Then the project itself, from a clean tree: .dockerignore admits only pyproject.toml, the
# README, the lock file, the example models files and the shipped packages (worker/, and
# simulator/ once it exists); pip installs whatever [tool.setuptools.packages.find] includes.
# Byte-compiled here: the non-root runtime user cannot write __pycache__, and LiteLLM's import
# is slow enough uncompiled to matter at every task start.
COPY . /src/
RUN pip --python /opt/venv/bin/python install --no-cache-dir --no-deps /src \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
    && /opt/venv/bin/python -c "import worker, worker.cli; print('worker', worker.__version__)"

FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="streaming-worker" \
      org.opencontainers.image.description="Runs LLM streaming jobs from SQS and writes their growing answers to PostgreSQL."
# LITELLM_LOCAL_MODEL_COST_MAP: LiteLLM otherwise fetches its price map over the network at
# import (5 s timeout, then background retries); the copy in the wheel is used instead.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    WORKER_METRICS_PORT=9100 \
    WORKER_MODELS_FILE=/app/config/models.yaml \
    WORKER_LOG_FORMAT=json
RUN groupadd --system --gid 10001 worker \
    && useradd --system --uid 10001 --gid worker --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin worker
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The example models files; mount or bake your own at WORKER_MODELS_FILE.
COPY config/models.yaml config/models.compose.yaml ./config/
USER 10001:10001
EXPOSE 9100
# Python's stdlib instead of curl: nothing extra in the image. A 503 (receive loop stuck)
# raises, so the check fails; the port follows WORKER_METRICS_PORT.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('WORKER_METRICS_PORT', '9100'), timeout=4)"]
# Exec form: the worker is PID 1 and receives ECS's and `docker stop`'s SIGTERM itself, so
# it can finish or hand back its running jobs within WORKER_SHUTDOWN_GRACE_S.
ENTRYPOINT ["streaming-worker"]
CMD ["run"]
