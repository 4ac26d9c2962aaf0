"""Container image names: one version (``components.__version__``) drives every tag.

One image per dependency set, not per component (see ``images/``):

- ``CPU_IMAGE`` (``images/cpu.Dockerfile``): every task, and training on CPU.
- ``GPU_IMAGE`` (``images/gpu.Dockerfile``): the same locked packages plus the CUDA 12.3 /
  cuDNN 8.9 libraries TensorFlow 2.16.2 was built against; training on NVIDIA GPUs.

TPU: there is no TPU image yet, and the CPU image cannot drive a TPU. TensorFlow on a
Cloud TPU VM (GKE TPU node pools included) needs the TPU build of the same TensorFlow
version (``tensorflow-tpu`` plus its ``libtpu``), which is a different dependency set.
When TPU training is needed, add ``images/tpu.Dockerfile`` and a ``TPU_IMAGE`` here,
derived from ``__version__`` like the two below.

Build (context = repository root), for example::

    docker build -f images/cpu.Dockerfile --build-arg VERSION=<__version__> -t <CPU_IMAGE> .

Standard library only: compiling pipelines imports this module.
"""

from components import __version__

REGISTRY = "ghcr.io/kfp-ct"

CPU_IMAGE = f"{REGISTRY}/kfp-ct-cpu:{__version__}"
GPU_IMAGE = f"{REGISTRY}/kfp-ct-gpu:{__version__}"
