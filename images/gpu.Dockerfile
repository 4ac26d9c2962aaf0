# kfp-ct GPU image: training on NVIDIA GPUs (tf.distribute.MirroredStrategy).
#
# Build from the repository root (the tag comes from components/common/images.py):
#   VERSION=$(python -c 'import components; print(components.__version__)')
#   docker build -f images/gpu.Dockerfile --build-arg VERSION="$VERSION" \
#     -t "ghcr.io/kfp-ct/kfp-ct-gpu:$VERSION" .
#
# Why this base: TensorFlow 2.16.2 is built against CUDA 12.3 and cuDNN 8.9. The
# nvidia/cuda 12.3 images ship cuDNN 9 only (TF 2.16 loads libcudnn.so.8), and an
# Ubuntu base would need a second Python (deadsnakes). Instead this image is the CPU
# image's base (Debian 12, CPython 3.11, the same locked packages) plus the CUDA/cuDNN
# libraries as the NVIDIA wheels that TensorFlow's own `and-cuda` extra pins. The GPU
# driver (libcuda) comes from the node through the NVIDIA container toolkit / GKE.
FROM python:3.11-slim-bookworm

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
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NV=/opt/venv/lib/python3.11/site-packages/nvidia
ENV PATH=/opt/venv/bin:${NV}/cuda_nvcc/bin:${PATH} \
    XLA_FLAGS=--xla_gpu_cuda_data_dir=${NV}/cuda_nvcc \
    LD_LIBRARY_PATH=${NV}/cublas/lib:${NV}/cuda_cupti/lib:${NV}/cuda_nvrtc/lib:${NV}/cuda_runtime/lib:${NV}/cudnn/lib:${NV}/cufft/lib:${NV}/curand/lib:${NV}/cusolver/lib:${NV}/cusparse/lib:${NV}/nccl/lib:${NV}/nvjitlink/lib

# uv pinned: the same uv that wrote and checks uv.lock. The run-time user (uid 1000,
# numeric so Kubernetes `runAsNonRoot` can verify it) is created here too.
RUN pip install --no-cache-dir uv==0.13.9 \
 && useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin kfp

WORKDIR /opt/kfp-ct

# Dependencies first (a layer that changes only with the lock), then CUDA 12.3 /
# cuDNN 8.9 as wheels: exactly the `tensorflow[and-cuda]==2.16.2` pins
# (tests/test_images.py checks them against tensorflow's metadata). --no-deps: that
# set is closed, and nothing the lock installed may move.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project --compile-bytecode \
 && uv pip install --python /opt/venv/bin/python --no-deps --compile-bytecode \
      nvidia-cublas-cu12==12.3.4.1 \
      nvidia-cuda-cupti-cu12==12.3.101 \
      nvidia-cuda-nvcc-cu12==12.3.107 \
      nvidia-cuda-nvrtc-cu12==12.3.107 \
      nvidia-cuda-runtime-cu12==12.3.101 \
      nvidia-cudnn-cu12==8.9.7.29 \
      nvidia-cufft-cu12==11.0.12.1 \
      nvidia-curand-cu12==10.3.4.107 \
      nvidia-cusolver-cu12==11.5.4.101 \
      nvidia-cusparse-cu12==12.2.0.103 \
      nvidia-nccl-cu12==2.19.3 \
      nvidia-nvjitlink-cu12==12.3.101

# The project. --inexact: keep the NVIDIA wheels, which are not in uv.lock.
COPY compile.py ./
COPY components ./components
COPY pipelines ./pipelines
RUN uv sync --frozen --no-dev --no-editable --inexact --compile-bytecode

# Non-root at run time (user `kfp`); the venv stays root-owned and read-only to tasks.
USER 1000
WORKDIR /home/kfp
