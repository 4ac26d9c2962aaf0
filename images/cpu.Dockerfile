# kfp-ct CPU image: every pipeline task, and training on CPU.
#
# Build from the repository root (the tag comes from components/common/images.py):
#   VERSION=$(python -c 'import components; print(components.__version__)')
#   docker build -f images/cpu.Dockerfile --build-arg VERSION="$VERSION" \
#     -t "ghcr.io/kfp-ct/kfp-ct-cpu:$VERSION" .
#
# Debian 12 (bookworm, glibc 2.36) with CPython 3.11: the platform the locked wheels
# (TFDV 1.16.1 and friends) are measured on. Packages come from uv.lock only
# (`uv sync --frozen`), so the image holds exactly what CI tested.
FROM python:3.11-slim-bookworm

ARG VERSION=dev
LABEL org.opencontainers.image.title="kfp-ct-cpu" \
      org.opencontainers.image.description="kfp-ct KFP v2 components (CPU)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# TF_USE_LEGACY_KERAS=1: TFT and TFMA need Keras 2 (tf-keras); it must be set before
# TensorFlow is imported, so it is set for every process in the image.
# PATH: the venv first, so `python3` (what KFP runs: `python3 -m kfp.dsl.executor_main`)
# is the venv's interpreter.
ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONUNBUFFERED=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    PATH=/opt/venv/bin:${PATH}

# uv pinned: the same uv that wrote and checks uv.lock. The run-time user (uid 1000,
# numeric so Kubernetes `runAsNonRoot` can verify it) is created here too.
RUN pip install --no-cache-dir uv==0.13.9 \
 && useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin kfp

WORKDIR /opt/kfp-ct

# Dependencies first (a layer that changes only with the lock), then the project.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project --compile-bytecode

COPY compile.py ./
COPY components ./components
COPY pipelines ./pipelines
RUN uv sync --frozen --no-dev --no-editable --compile-bytecode

# Non-root at run time (user `kfp`); the venv stays root-owned and read-only to tasks.
USER 1000
WORKDIR /home/kfp
