"""Choosing the tf.distribute strategy and precision from the hardware and a task argument."""

from __future__ import annotations

import dataclasses
import os

from components.common.errors import KfpCtError

ACCELERATORS = ("auto", "cpu", "gpu", "tpu")


@dataclasses.dataclass(frozen=True)
class Plan:
    kind: str            # "default" (CPU), "one_gpu", "mirrored", "tpu"
    precision: str       # Keras mixed-precision policy name
    replicas: int

    def describe(self) -> str:
        return f"{self.kind} x{self.replicas} ({self.precision})"


def plan_strategy(accelerator: str, gpus: int, gpu_compute_capability: tuple[int, int] | None,
                  tpu_address: str | None) -> Plan:
    """The strategy for the hardware present: a pure decision, testable as a table.

    auto: a TPU when one is addressed, else every GPU (Mirrored when more than one), else CPU.
    Mixed precision where the hardware computes it natively: bfloat16 on TPU, float16 on
    GPUs of compute capability 7.0 or newer (Volta and later); float32 otherwise.
    """
    if accelerator not in ACCELERATORS:
        raise KfpCtError(f"accelerator must be one of {ACCELERATORS}, got {accelerator!r}")
    if accelerator == "tpu" and not tpu_address:
        raise KfpCtError("accelerator 'tpu' was asked for but no TPU is addressed: set TPU_NAME "
                         "(or run on a TPU VM, where it is 'local')")
    if accelerator == "gpu" and gpus == 0:
        raise KfpCtError("accelerator 'gpu' was asked for but TensorFlow sees no GPU "
                         "(is this the GPU image on a node with nvidia.com/gpu?)")
    if accelerator == "tpu" or (accelerator == "auto" and tpu_address):
        return Plan("tpu", "mixed_bfloat16", 0)
    if accelerator in ("gpu", "auto") and gpus > 0:
        fp16 = gpu_compute_capability is not None and gpu_compute_capability >= (7, 0)
        return Plan("mirrored" if gpus > 1 else "one_gpu",
                    "mixed_float16" if fp16 else "float32", gpus)
    return Plan("default", "float32", 1)


def make_strategy(accelerator: str):
    """Detects the hardware, plans, and builds (strategy, plan)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    capability = None
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        capability = details.get("compute_capability")
    tpu_address = os.environ.get("TPU_NAME") or None
    plan = plan_strategy(accelerator, len(gpus), capability, tpu_address)
    if plan.kind == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
        plan = dataclasses.replace(plan, replicas=strategy.num_replicas_in_sync)
    elif plan.kind == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    elif plan.kind == "one_gpu":
        strategy = tf.distribute.OneDeviceStrategy("/gpu:0")
    else:
        strategy = tf.distribute.get_strategy()
    return strategy, plan
