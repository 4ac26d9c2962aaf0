"""Choosing the tf.distribute strategy and precision from the hardware, ``TF_CONFIG`` and
a task argument.

Several workers: the Kubeflow Training Operator's TFJob (and any launcher that follows
the same convention) gives every replica a ``TF_CONFIG`` JSON::

    {"cluster": {"chief": ["host:port"], "worker": ["host:port", ...]},
     "task": {"type": "worker", "index": 0}}

When its cluster names more than one task, training runs under
``MultiWorkerMirroredStrategy`` (synchronous all-reduce; every worker holds the whole
model). The chief is the "chief" task when the cluster has one, else worker 0 (TF's
rule): it alone writes the model and the durable checkpoints. Parameter-server
("ps") and side-car evaluator clusters are refused, since nothing here runs them.
"""

from __future__ import annotations

import dataclasses
import json
import os

from kfp_ct.components.common.errors import KfpCtError

ACCELERATORS = ("auto", "cpu", "gpu", "tpu")
TF_CONFIG_ENV = "TF_CONFIG"
TASK_TYPES = ("chief", "worker")


@dataclasses.dataclass(frozen=True)
class Plan:
    kind: str            # "default" (CPU), "one_gpu", "mirrored", "tpu", "multi_worker"
    precision: str       # Keras mixed-precision policy name
    replicas: int        # across the whole cluster
    workers: int = 1     # processes taking part (multi_worker: the TF_CONFIG cluster)
    chief: bool = True   # this process writes the model and the checkpoints
    task: str = ""       # "worker:1" (multi_worker only)

    def describe(self) -> str:
        text = f"{self.kind} x{self.replicas} ({self.precision})"
        return text + (f" on {self.workers} workers" if self.workers > 1 else "")


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """What a ``TF_CONFIG`` says: the tasks of each type, and which one this process is."""

    cluster: dict[str, tuple[str, ...]]
    task_type: str
    task_index: int

    @property
    def workers(self) -> int:
        return sum(len(v) for v in self.cluster.values())

    @property
    def is_chief(self) -> bool:
        if "chief" in self.cluster:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0


def parse_tf_config(text: str | None) -> ClusterSpec | None:
    """The cluster ``TF_CONFIG`` describes; None when it is unset or empty.

    Raises:
        KfpCtError: naming TF_CONFIG and what is wrong with it (not JSON, no cluster,
            a task type other than chief/worker, this task not in the cluster, ...).
    """
    if text is None or not text.strip():
        return None
    where = f"${TF_CONFIG_ENV}"
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KfpCtError(f"{where} is not valid JSON ({exc}): {text[:200]!r}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cluster"), dict) \
            or not doc["cluster"]:
        raise KfpCtError(f"{where} has no \"cluster\" object naming the tasks "
                         f"(e.g. {{\"cluster\": {{\"worker\": [\"host:port\", ...]}}}}): "
                         f"{text[:200]!r}")
    cluster = {}
    for kind, addresses in doc["cluster"].items():
        if kind not in TASK_TYPES:
            raise KfpCtError(f"{where} names task type {kind!r}; only {TASK_TYPES} are run "
                             "here (MultiWorkerMirroredStrategy: no parameter servers, "
                             "no side-car evaluator)")
        if not isinstance(addresses, list) or not addresses or not all(
                isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addresses):
            raise KfpCtError(f"{where}: cluster.{kind} must be a non-empty list of "
                             f"\"host:port\" strings, got {addresses!r}")
        cluster[kind] = tuple(addresses)
    if len(cluster.get("chief", ())) > 1:
        raise KfpCtError(f"{where}: a cluster has at most one chief, got "
                         f"{len(cluster['chief'])}")
    task = doc.get("task")
    if not isinstance(task, dict) or "type" not in task:
        raise KfpCtError(f"{where} has no \"task\" {{\"type\": ..., \"index\": ...}} saying "
                         f"which task this process is: {text[:200]!r}")
    task_type, index = task["type"], task.get("index", 0)
    if not isinstance(index, int) or isinstance(index, bool):
        raise KfpCtError(f"{where}: task.index must be a whole number, got {index!r}")
    if task_type not in cluster or not 0 <= index < len(cluster[task_type]):
        raise KfpCtError(f"{where}: task {task_type}:{index} is not in the cluster "
                         f"{ {k: len(v) for k, v in cluster.items()} }")
    return ClusterSpec(cluster, task_type, index)


def plan_strategy(accelerator: str, gpus: int, gpu_compute_capability: tuple[int, int] | None,
                  tpu_address: str | None, cluster: ClusterSpec | None = None) -> Plan:
    """The strategy for the hardware present: a pure decision, testable as a table.

    auto: a TPU when one is addressed, else every GPU (Mirrored when more than one), else CPU.
    Mixed precision where the hardware computes it natively: bfloat16 on TPU, float16 on
    GPUs of compute capability 7.0 or newer (Volta and later); float32 otherwise.
    ``cluster`` (parse_tf_config) with more than one task: "multi_worker", each worker
    contributing its GPUs (all of them) or its CPU, ``gpus`` being this worker's count (every
    replica of a TFJob gets the same resources).
    """
    if accelerator not in ACCELERATORS:
        raise KfpCtError(f"accelerator must be one of {ACCELERATORS}, got {accelerator!r}")
    if accelerator == "tpu" and not tpu_address:
        raise KfpCtError("accelerator 'tpu' was asked for but no TPU is addressed: set TPU_NAME "
                         "(or run on a TPU VM, where it is 'local')")
    if accelerator == "gpu" and gpus == 0:
        raise KfpCtError("accelerator 'gpu' was asked for but TensorFlow sees no GPU "
                         "(is this the GPU image on a node with nvidia.com/gpu?)")
    if cluster is not None and cluster.workers > 1:
        if accelerator == "tpu" or (accelerator == "auto" and tpu_address):
            raise KfpCtError(f"${TF_CONFIG_ENV} names {cluster.workers} workers and a TPU is "
                             "addressed: a TPU slice is one strategy of its own (TPUStrategy); "
                             "unset TF_CONFIG, or train on CPU/GPU workers")
        use_gpus = gpus if accelerator in ("gpu", "auto") else 0
        fp16 = bool(use_gpus) and gpu_compute_capability is not None \
            and gpu_compute_capability >= (7, 0)
        return Plan("multi_worker", "mixed_float16" if fp16 else "float32",
                    cluster.workers * max(1, use_gpus), workers=cluster.workers,
                    chief=cluster.is_chief, task=f"{cluster.task_type}:{cluster.task_index}")
    if accelerator == "tpu" or (accelerator == "auto" and tpu_address):
        return Plan("tpu", "mixed_bfloat16", 0)
    if accelerator in ("gpu", "auto") and gpus > 0:
        fp16 = gpu_compute_capability is not None and gpu_compute_capability >= (7, 0)
        return Plan("mirrored" if gpus > 1 else "one_gpu",
                    "mixed_float16" if fp16 else "float32", gpus)
    return Plan("default", "float32", 1)


def make_strategy(accelerator: str, environ=None):
    """Detects the hardware, reads TF_CONFIG, plans, and builds (strategy, plan).

    Call it before any other TensorFlow op: MultiWorkerMirroredStrategy configures the
    collective ops of the process's eager context, which must not have started yet.
    """
    env = os.environ if environ is None else environ
    cluster = parse_tf_config(env.get(TF_CONFIG_ENV))  # a bad TF_CONFIG fails before TF
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    capability = None
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        capability = details.get("compute_capability")
    tpu_address = env.get("TPU_NAME") or None
    plan = plan_strategy(accelerator, len(gpus), capability, tpu_address, cluster)
    if plan.kind == "multi_worker":
        if accelerator == "cpu" and gpus:
            tf.config.set_visible_devices([], "GPU")
        # RING on CPU (gRPC all-reduce); AUTO picks NCCL between GPUs.
        implementation = (tf.distribute.experimental.CommunicationImplementation.AUTO
                          if plan.replicas > plan.workers
                          else tf.distribute.experimental.CommunicationImplementation.RING)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=implementation))
        plan = dataclasses.replace(plan, replicas=strategy.num_replicas_in_sync)
    elif plan.kind == "tpu":
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
