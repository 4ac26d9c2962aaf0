"""Container image names: one version (``kfp_ct.components.__version__``) drives every tag.

One image per dependency set, not per component (see ``images/``):

- ``CPU_IMAGE`` (``images/cpu.Dockerfile``): every task, and training on CPU.
- ``GPU_IMAGE`` (``images/gpu.Dockerfile``): the same locked packages plus the CUDA 12.3 /
  cuDNN 8.9 libraries TensorFlow 2.16.2 was built against; training on NVIDIA GPUs.
- ``TPU_IMAGE`` (``images/tpu.Dockerfile``): the same locked packages with TensorFlow's
  TPU build (``tensorflow-tpu`` of the same version, plus the ``libtpu`` it pins, which
  TensorFlow publishes outside PyPI); training on Cloud TPU VMs (GKE TPU node pools).

The registry prefix is a setting: ``$KFP_CT_REGISTRY`` when compiling (default
``ghcr.io/kfp-ct``). A digest is added (``name:version@sha256:...``) when
``$KFP_CT_IMAGE_DIGESTS`` names a JSON file ``{"kfp-ct-cpu": "sha256:...", ...}``, as
written after pushing the built images (``make image`` writes the local build's record
to ``build/images.json``). Neither is needed: compiling works with no environment.

Build (context = repository root): ``make image`` (podman), or for example::

    docker build -f images/cpu.Dockerfile --build-arg VERSION=<__version__> -t <CPU_IMAGE> .

Standard library only: compiling pipelines imports this module.
"""

import json
import os

from kfp_ct.components import __version__

DEFAULT_REGISTRY = "ghcr.io/kfp-ct"
REGISTRY = os.environ.get("KFP_CT_REGISTRY", "").rstrip("/") or DEFAULT_REGISTRY
NAMES = ("kfp-ct-cpu", "kfp-ct-gpu", "kfp-ct-tpu")


def _digests() -> dict:
    path = os.environ.get("KFP_CT_IMAGE_DIGESTS", "")
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            found = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"$KFP_CT_IMAGE_DIGESTS={path}: cannot read image digests: {exc}") \
            from None
    bad = {k: v for k, v in found.items()
           if k not in NAMES or not (isinstance(v, str) and v.startswith("sha256:")
                                     and len(v) == 71)}
    if bad:
        raise ValueError(f"$KFP_CT_IMAGE_DIGESTS={path}: entries must map one of {NAMES} "
                         f"to 'sha256:<64 hex>', got {bad}")
    return found


def image(name: str, registry: str = REGISTRY, digests: dict | None = None) -> str:
    """``<registry>/<name>:<__version__>``, plus ``@<digest>`` when one is known."""
    digest = (_digests() if digests is None else digests).get(name)
    ref = f"{registry}/{name}:{__version__}"
    return f"{ref}@{digest}" if digest else ref


CPU_IMAGE = image("kfp-ct-cpu")
GPU_IMAGE = image("kfp-ct-gpu")
TPU_IMAGE = image("kfp-ct-tpu")

if __name__ == "__main__":  # `python -m kfp_ct.components.common.images`: the tags, for make
    print(json.dumps({"version": __version__, "registry": REGISTRY, "cpu": CPU_IMAGE,
                      "gpu": GPU_IMAGE, "tpu": TPU_IMAGE}))
