# kfp-ct CPU image: every pipeline task, and training on CPU.
#
# Build: `make image` (podman, from the repository's files and uv.lock), or by hand from a
# context holding pyproject.toml, uv.lock, README.md, compile.py, components/, pipelines/:
#   docker build -f images/cpu.Dockerfile --build-arg VERSION="$VERSION" -t "$CPU_IMAGE" .
# with the tag from `python -m kfp_ct.components.common.images`.
#
# BASE: Debian 12 (bookworm, glibc 2.36) with CPython 3.11, the platform the locked wheels
# (TFDV 1.16.1 and friends) are measured on. The default is the public
# python:3.11-slim-bookworm; `make image` builds from a local `debootstrap --variant=minbase
# bookworm` base with Debian's python3.11 (no registry needed). Packages come from uv.lock
# only (`uv sync --frozen`), so the image holds exactly what CI tested.
ARG BASE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- build: the venv
# hadolint ignore=DL3006
FROM ${BASE} AS build
# Build time only (ARGs are not in the image's environment): pip and uv trust the system
# CA bundle, so a build behind a TLS-inspecting proxy works when the build mounts the
# proxy's bundle there (`make image` mounts the host's: images/build.py --ca).
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt
ARG SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON=python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_CACHE_DIR=/var/cache/uv \
    PATH=/opt/venv/bin:/opt/uv/bin:${PATH}

# A C++ compiler and Python's headers for the lock's source-only packages (pyfarmhash,
# which TFDV needs, has no CPython 3.11 wheel); they stay in this stage. Then uv, pinned:
# the uv that wrote and checks uv.lock, in a venv of its own (Debian's python3.11 has no
# pip outside a venv).
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends g++ python3.11-dev \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/uv \
 && /opt/uv/bin/pip install --no-cache-dir --disable-pip-version-check uv==0.13.9

WORKDIR /opt/kfp-ct

# Dependencies first (a layer that changes only with the lock), then the project. The
# wheel cache is a build cache mount: never part of the image, reused by the next build.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,id=kfp-ct-uv,target=/var/cache/uv \
    uv sync --frozen --no-dev --no-install-project --compile-bytecode

COPY compile.py ./
COPY components ./components
COPY pipelines ./pipelines
RUN --mount=type=cache,id=kfp-ct-uv,target=/var/cache/uv \
    uv sync --frozen --no-dev --no-editable --compile-bytecode

# ---------------------------------------------------------------- the image
# hadolint ignore=DL3006
FROM ${BASE}

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
    PATH=/opt/venv/bin:${PATH}

# The run-time user: uid 1000, numeric so Kubernetes `runAsNonRoot` can verify it.
RUN useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin kfp

# The venv, project installed (not editable): root-owned, read-only to the tasks.
COPY --from=build /opt/venv /opt/venv

USER 1000
WORKDIR /home/kfp
