# kfp-ct GPU image: training on NVIDIA GPUs (tf.distribute.MirroredStrategy).
#
# Build: `make image-gpu`, or as cpu.Dockerfile says, with this file.
#
# Why this base: TensorFlow 2.16.2 is built against CUDA 12.3 and cuDNN 8.9. The
# nvidia/cuda 12.3 images ship cuDNN 9 only (TF 2.16 loads libcudnn.so.8), and an
# Ubuntu base would need a second Python (deadsnakes). Instead this image is the CPU
# image's base (Debian 12, CPython 3.11, the same locked packages) plus the CUDA/cuDNN
# libraries as the NVIDIA wheels that TensorFlow's own `and-cuda` extra pins, locked in
# uv.lock as this project's `gpu` extra. The GPU driver (libcuda) comes from the node
# through the NVIDIA container toolkit / GKE.
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

# Dependencies first (a layer that changes only with the lock), CUDA 12.3 / cuDNN 8.9
# included: the lock's `gpu` extra is `tensorflow[and-cuda]==2.16.2` (tests/test_images.py
# checks its NVIDIA pins against tensorflow's metadata). Then the project. The wheel cache
# is a build cache mount: never part of the image, reused by the next build.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,id=kfp-ct-uv,target=/var/cache/uv \
    uv sync --frozen --no-dev --extra gpu --no-install-project --compile-bytecode

COPY compile.py ./
COPY components ./components
COPY pipelines ./pipelines
RUN --mount=type=cache,id=kfp-ct-uv,target=/var/cache/uv \
    uv sync --frozen --no-dev --extra gpu --no-editable --compile-bytecode

# ---------------------------------------------------------------- the image
# hadolint ignore=DL3006
FROM ${BASE}

ARG VERSION=dev
LABEL org.opencontainers.image.title="kfp-ct-gpu" \
      org.opencontainers.image.description="kfp-ct KFP v2 components (NVIDIA GPU: CUDA 12.3, cuDNN 8.9)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# TF_USE_LEGACY_KERAS=1: TFT and TFMA need Keras 2 (tf-keras); it must be set before
# TensorFlow is imported, so it is set for every process in the image.
# PATH: the venv first, so `python3` (what KFP runs: `python3 -m kfp.dsl.executor_main`)
# is the venv's interpreter; then ptxas from nvidia-cuda-nvcc-cu12 (XLA needs it).
# LD_LIBRARY_PATH: TF 2.16 does not find the NVIDIA wheels' libraries by itself
# (tensorflow/tensorflow#63362), so every nvidia/*/lib directory is listed.
# NVIDIA_*: this base is not an nvidia/cuda image, so ask the toolkit for the driver.
ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONUNBUFFERED=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NV=/opt/venv/lib/python3.11/site-packages/nvidia
ENV PATH=/opt/venv/bin:${NV}/cuda_nvcc/bin:${PATH} \
    XLA_FLAGS=--xla_gpu_cuda_data_dir=${NV}/cuda_nvcc \
    LD_LIBRARY_PATH=${NV}/cublas/lib:${NV}/cuda_cupti/lib:${NV}/cuda_nvrtc/lib:${NV}/cuda_runtime/lib:${NV}/cudnn/lib:${NV}/cufft/lib:${NV}/curand/lib:${NV}/cusolver/lib:${NV}/cusparse/lib:${NV}/nccl/lib:${NV}/nvjitlink/lib

# The run-time user: uid 1000, numeric so Kubernetes `runAsNonRoot` can verify it.
RUN useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin kfp

# The venv, project installed (not editable): root-owned, read-only to the tasks.
COPY --from=build /opt/venv /opt/venv

USER 1000
WORKDIR /home/kfp
