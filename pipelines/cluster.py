"""How each task runs on a cluster: resources, scratch space, timeouts, retries, caching,
accelerators and credentials, in one place for every pipeline.

kfp.local ignores all of this (shared/DESIGN.md); the compiled YAML carries it, and the
tests read it back from the YAML (tests/test_cluster_yaml.py).

- **Resources** (``RESOURCES``): CPU and memory requests and limits through the core KFP
  API; ephemeral storage as a ``/tmp`` emptyDir with a size limit (kfp-kubernetes
  ``empty_dir_mount``; ``TMPDIR`` points there). The KFP 2.13 IR has no field for an
  ephemeral-storage *request* on the container: a namespace ``LimitRange`` gives one
  (pipelines/CLUSTER.md). Sized from the peak RSS and CPU time each task used on the
  penguins run here (figures beside each entry), with head-room for bigger data.
- **Timeouts** on every task (``kubernetes.set_timeout``: the pod's activeDeadlineSeconds).
- **Retries with exponential backoff** on tasks that touch the network (data, the model
  base, the KFP API) and on train (preemption; it resumes from its durable checkpoint).
  gate reads only its input artifact: no retry.
- **Credentials never travel as parameters.** Default: workload identity (the pod's
  service account; nothing in the YAML). With ``gcp_key_secret`` set, the named
  Kubernetes Secret's ``key.json`` is mounted read-only (``use_secret_as_volume``) and
  ``GOOGLE_APPLICATION_CREDENTIALS`` points at it: the YAML holds the Secret's name only.
  Likewise ``notify_secret``: that Secret is mounted read-only at ``NOTIFY_SECRET_MOUNT``
  on the tasks that send notices (``NOTIFY_TASKS``), so a notification target reads its
  webhook URL (and token) from a file there, e.g. ``{"url_file":
  "/var/secrets/kfp-ct-notify/url"}`` (components/common/notify.py).
- **Variants** (``VARIANTS``): where train runs. CPU; GPU (``nvidia.com/gpu`` through the
  core API, GKE's ``cloud.google.com/gke-accelerator`` node selector, a toleration); TPU
  (``google.com/tpu`` chips, GKE's TPU accelerator and topology selectors, a toleration,
  ``TPU_NAME=local`` as on a TPU VM). Multi-worker (``multiworker``): train is a small
  launcher (``train_tfjob``) that starts a Kubeflow TFJob; each of its replicas gets
  ``RESOURCES["train"]`` (:func:`worker_resources`), and the launcher gets the downward
  API env naming its pod (:func:`configure_tfjob_launcher`), so the TFJob it creates is
  owned by that pod and deleted with it.

Every default can be overridden at compile time: ``compile.py --settings FILE`` (JSON),
read by :func:`load_settings`, e.g.
``{"resources": {"train": {"memory_limit": "16Gi"}}, "gcp_key_secret": "gcs-key",
"variants": {"gpu": {"node_selector": {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}}}}``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from typing import Any, Mapping

from kfp import dsl, kubernetes

from kfp_ct.components.common.images import CPU_IMAGE, GPU_IMAGE, TPU_IMAGE
from kfp_ct.components.train.tfjob import POD_NAME_ENV, POD_UID_ENV


def _ensure_container_spec_exists(self) -> None:
    """kfp's own check, without ``inspect.stack()``.

    kfp 2.13's PipelineTask setters (set_cpu_request, set_memory_limit, ...) look up their
    own name, for an error message, with ``inspect.stack()``, which reads the source of
    every frame on the stack: 40% of building a pipeline, about 2.8 s of a
    ``kfp-ct run-local`` on 2 cores (the module builds four pipeline variants, and
    kfp.local builds the one it runs again). The caller's name is its frame's code name;
    the check and its message are kfp's.
    """
    if self.container_spec is None:
        caller_method_name = sys._getframe(1).f_code.co_name
        raise ValueError(
            f"{caller_method_name} can only be used on single-step components, not pipelines "
            f"used as components, or special components like importers.")


dsl.PipelineTask._ensure_container_spec_exists = _ensure_container_spec_exists


class SettingsError(ValueError):
    """A cluster setting that cannot be used; the message names it."""


@dataclasses.dataclass(frozen=True)
class Resources:
    """Kubernetes quantities for one task's container."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    scratch: str  # size limit of the /tmp emptyDir (ephemeral storage)


# Measured on the penguins run here (python -m tests.benchmarks.task_usage: each task in
# a new interpreter, as in a pod; two runs, the second with a production baseline), as
# peak RSS of the task's process tree / CPU seconds / wall seconds. Requests sit above the
# peak (the imports alone are most of it); limits leave room for larger data and models.
# Scratch holds gs:// inputs downloaded before reading and transform's staged outputs.
RESOURCES: dict[str, Resources] = {
    "validate": Resources("1", "2", "1Gi", "4Gi", "10Gi"),       # 644 MiB, 11 s / 12 s
    "transform": Resources("1", "2", "1Gi", "4Gi", "20Gi"),      # 730 MiB, 23 s / 26 s
    "train": Resources("2", "4", "1Gi", "4Gi", "10Gi"),          # 617 MiB, 15 s / 16 s
    "evaluate": Resources("1", "2", "1Gi", "4Gi", "10Gi"),       # 809 MiB, 28 s / 31 s
    "gate": Resources("100m", "500m", "128Mi", "512Mi", "1Gi"),  # 19 MiB, 0.1 s
    "push": Resources("1", "2", "1Gi", "4Gi", "10Gi"),           # 581 MiB (with canary)
    # 581 MiB, 7.8 s on a 1M-row window (tests/benchmarks/bench_drift_speed: statistics
    # plus the production model scoring 5,000 rows); memory stays flat in the row count.
    "drift_check": Resources("1", "2", "1Gi", "4Gi", "10Gi"),
    # Not measured: on a cluster it is a KFP API client (kfp mode), no TensorFlow.
    "retrain_trigger": Resources("250m", "1", "256Mi", "1Gi", "1Gi"),
    # Not measured on a cluster: the TFJob launcher (kubernetes and storage clients, no
    # TensorFlow; it polls). Each TFJob replica gets "train" (worker_resources).
    "train_tfjob": Resources("250m", "1", "256Mi", "1Gi", "1Gi"),
    # Not measured on a cluster: the rollout (kubernetes and storage clients, HTTP requests
    # to the canary; TensorFlow only to read the warmup file of a version pushed before
    # serving checks were recorded). Scratch holds the one version it copies.
    "rollout": Resources("250m", "1", "256Mi", "2Gi", "10Gi"),
    # Not measured on a cluster: the failed-run notice (the exit task; a KFP API and a
    # Kubernetes API read, one HTTP POST; no TensorFlow).
    "announce_failure": Resources("100m", "500m", "256Mi", "1Gi", "1Gi"),
}

# Seconds; the pod is stopped after this (activeDeadlineSeconds).
TIMEOUTS_S: dict[str, int] = {
    "validate": 2 * 3600, "transform": 4 * 3600, "train": 4 * 3600, "evaluate": 2 * 3600,
    "gate": 15 * 60, "push": 3600, "drift_check": 3600,
    "retrain_trigger": 6 * 3600,  # local mode waits for the training run
    # The launcher waits up to TIMEOUTS_S["train"] for its TFJob, then deletes it; its
    # own deadline leaves time for that (and SIGTERM at the deadline deletes it too).
    "train_tfjob": 4 * 3600 + 600,
    # Ready (ready_timeout_s, default 900 s) + soak + promote; at the deadline SIGTERM sets
    # the canary's traffic to 0.
    "rollout": 3600,
    # Waits up to 30 s for the API to report the body's end, then a few tries to deliver.
    "announce_failure": 15 * 60,
}


@dataclasses.dataclass(frozen=True)
class Retry:
    retries: int
    backoff: str = "30s"        # first wait
    factor: float = 2.0         # then 60 s, 120 s, ...
    max_backoff: str = "600s"


# Network tasks and train (preemption). gate: none (a pure function of its input).
RETRIES: dict[str, Retry] = {
    "validate": Retry(2), "transform": Retry(2), "train": Retry(2, backoff="60s"),
    "evaluate": Retry(2), "push": Retry(2), "drift_check": Retry(2),
    "retrain_trigger": Retry(2),
    "train_tfjob": Retry(2, backoff="60s"),  # the next attempt replaces the TFJob, resumes
}

# Read data or state that changes under the same names: never cached.
UNCACHED = frozenset({"validate", "transform", "evaluate", "gate", "push", "drift_check",
                      "retrain_trigger", "train_tfjob", "rollout", "announce_failure"})


@dataclasses.dataclass(frozen=True)
class Variant:
    """Where train runs: image, accelerator (core KFP API), node selector and tolerations
    (kfp-kubernetes), extra environment."""

    name: str
    image: str
    accelerator_type: str = ""
    accelerator_count: int = 0
    node_selector: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tolerations: tuple[Mapping[str, str], ...] = ()
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    accelerator_param: str = "auto"   # the pipeline's `accelerator` default


VARIANTS: dict[str, Variant] = {
    "cpu": Variant("cpu", CPU_IMAGE),
    "gpu": Variant(
        "gpu", GPU_IMAGE, accelerator_type="nvidia.com/gpu", accelerator_count=1,
        node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
        tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
        accelerator_param="gpu"),
    # A v5e 2x2 slice: 4 chips on one host (a single-host TPU VM node).
    "tpu": Variant(
        "tpu", TPU_IMAGE, accelerator_type="google.com/tpu", accelerator_count=4,
        node_selector={"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
                       "cloud.google.com/gke-tpu-topology": "2x2"},
        tolerations=({"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"},),
        env={"TPU_NAME": "local"}, accelerator_param="tpu"),
    # Train is a TFJob launcher on a CPU node; the replicas' image and GPUs are pipeline
    # parameters (gpus_per_worker), their resources RESOURCES["train"].
    "multiworker": Variant("multiworker", CPU_IMAGE),
}

SECRET_MOUNT = "/var/secrets/kfp-ct-gcp"
NOTIFY_SECRET_MOUNT = "/var/secrets/kfp-ct-notify"
# The tasks that send notices (components/common/notify.py): the trigger (drift, a
# performance drop, a launch) and the failed-run notice.
NOTIFY_TASKS = frozenset({"retrain_trigger", "announce_failure"})
SECRET_KEY_FILE = "key.json"
SCRATCH_MOUNT = "/tmp"


@dataclasses.dataclass(frozen=True)
class Settings:
    resources: Mapping[str, Resources] = dataclasses.field(default_factory=lambda: RESOURCES)
    timeouts_s: Mapping[str, int] = dataclasses.field(default_factory=lambda: TIMEOUTS_S)
    variants: Mapping[str, Variant] = dataclasses.field(default_factory=lambda: VARIANTS)
    gcp_key_secret: str = ""   # empty: workload identity
    notify_secret: str = ""    # empty: no Secret mounted for the notification target


DEFAULT = Settings()

_CPU_RE = re.compile(r"^([0-9]*[.])?[0-9]+m?$")
_BYTES_RE = re.compile(r"^([0-9]+)(Ei|Pi|Ti|Gi|Mi|Ki|E|P|T|G|M|K)?$")
_UNITS = {None: 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
          "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
          "Ei": 2**60}
_SECRET_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def _cpu(value: str, where: str) -> float:
    if not isinstance(value, str) or not _CPU_RE.match(value):
        raise SettingsError(f"{where}: {value!r} is not a CPU quantity (e.g. \"500m\", \"2\")")
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def _bytes(value: str, where: str) -> int:
    m = _BYTES_RE.match(value) if isinstance(value, str) else None
    if not m:
        raise SettingsError(f"{where}: {value!r} is not a memory/storage quantity "
                            f"(e.g. \"512Mi\", \"4Gi\")")
    return int(m.group(1)) * _UNITS[m.group(2)]


def check_resources(task: str, res: Resources) -> Resources:
    """Every quantity parses and no request exceeds its limit."""
    where = f"resources.{task}"
    if _cpu(res.cpu_request, f"{where}.cpu_request") > _cpu(res.cpu_limit, f"{where}.cpu_limit"):
        raise SettingsError(f"{where}: cpu_request {res.cpu_request} exceeds cpu_limit "
                            f"{res.cpu_limit}")
    if (_bytes(res.memory_request, f"{where}.memory_request")
            > _bytes(res.memory_limit, f"{where}.memory_limit")):
        raise SettingsError(f"{where}: memory_request {res.memory_request} exceeds "
                            f"memory_limit {res.memory_limit}")
    if _bytes(res.scratch, f"{where}.scratch") == 0:
        raise SettingsError(f"{where}.scratch must be more than 0")
    return res


def _only(given: Mapping[str, Any], allowed, where: str) -> None:
    if not isinstance(given, Mapping):
        raise SettingsError(f"{where} must be a JSON object, got {type(given).__name__}")
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise SettingsError(f"{where}: unknown key(s) {unknown}; known: {sorted(allowed)}")


def load_settings(source: str | Mapping[str, Any] | None) -> Settings:
    """Overrides (a JSON file path, JSON text or a mapping) on top of the defaults.

    Raises:
        SettingsError: an unknown task, key or variant, a quantity that does not parse,
            a request above its limit, a timeout that is not a positive whole number, a
            Secret name Kubernetes would refuse.
    """
    if source is None or source == "":
        return DEFAULT
    if isinstance(source, str):
        text = source
        if not source.lstrip().startswith("{"):
            try:
                with open(source, encoding="utf-8") as f:
                    text = f.read()
            except OSError as exc:
                raise SettingsError(f"cluster settings {source}: {exc.strerror or exc}") \
                    from None
        try:
            source = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"cluster settings are not valid JSON: {exc}") from None
    _only(source, ("resources", "timeouts_s", "variants", "gcp_key_secret", "notify_secret"),
          "settings")
    resources = dict(RESOURCES)
    fields = [f.name for f in dataclasses.fields(Resources)]
    for task, over in (source.get("resources") or {}).items():
        if task not in RESOURCES:
            raise SettingsError(f"resources: unknown task {task!r}; tasks: {sorted(RESOURCES)}")
        _only(over, fields, f"resources.{task}")
        resources[task] = check_resources(task, dataclasses.replace(resources[task], **over))
    timeouts = dict(TIMEOUTS_S)
    for task, seconds in (source.get("timeouts_s") or {}).items():
        if task not in TIMEOUTS_S:
            raise SettingsError(f"timeouts_s: unknown task {task!r}; tasks: {sorted(TIMEOUTS_S)}")
        if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < 1:
            raise SettingsError(f"timeouts_s.{task} must be a whole number of seconds >= 1, "
                                f"got {seconds!r}")
        timeouts[task] = seconds
    variants = dict(VARIANTS)
    vfields = ("image", "accelerator_type", "accelerator_count", "node_selector",
               "tolerations", "env")
    for name, over in (source.get("variants") or {}).items():
        if name not in VARIANTS:
            raise SettingsError(f"variants: unknown variant {name!r}; variants: {sorted(VARIANTS)}")
        _only(over, vfields, f"variants.{name}")
        over = dict(over)
        if "tolerations" in over:
            over["tolerations"] = tuple(over["tolerations"])
        count = over.get("accelerator_count", variants[name].accelerator_count)
        if count not in (0, 1, 2, 4, 8, 16):
            raise SettingsError(f"variants.{name}.accelerator_count must be one of 0, 1, 2, 4, "
                                f"8, 16 (what KFP accepts), got {count!r}")
        variants[name] = dataclasses.replace(variants[name], **over)
    secret = source.get("gcp_key_secret") or ""
    if secret and not _SECRET_NAME_RE.match(secret):
        raise SettingsError(f"gcp_key_secret {secret!r} is not a Kubernetes Secret name "
                            "(lower-case letters, digits, '-' and '.')")
    notify_secret = source.get("notify_secret") or ""
    if notify_secret and not _SECRET_NAME_RE.match(notify_secret):
        raise SettingsError(f"notify_secret {notify_secret!r} is not a Kubernetes Secret name "
                            "(lower-case letters, digits, '-' and '.')")
    return Settings(resources=resources, timeouts_s=timeouts, variants=variants,
                    gcp_key_secret=secret, notify_secret=notify_secret)


def worker_resources(settings: Settings = DEFAULT) -> dict:
    """Requests and limits of each TFJob replica: those of the train task."""
    res = settings.resources["train"]
    return {"requests": {"cpu": res.cpu_request, "memory": res.memory_request},
            "limits": {"cpu": res.cpu_limit, "memory": res.memory_limit,
                       "ephemeral-storage": res.scratch}}


LAUNCHER_POD_ENV = ((POD_NAME_ENV, "metadata.name"), (POD_UID_ENV, "metadata.uid"))


def configure_tfjob_launcher(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """The launcher's pod name and uid from the downward API (the TFJob's owner)."""
    for env_name, field_path in LAUNCHER_POD_ENV:
        kubernetes.use_field_path_as_env(task, env_name=env_name, field_path=field_path)
    return task


def configure(task: dsl.PipelineTask, name: str, settings: Settings = DEFAULT,
              variant: Variant | None = None) -> dsl.PipelineTask:
    """Applies the cluster settings of component ``name`` to ``task``."""
    res = settings.resources[name]
    (task.set_cpu_request(res.cpu_request).set_cpu_limit(res.cpu_limit)
         .set_memory_request(res.memory_request).set_memory_limit(res.memory_limit))
    kubernetes.empty_dir_mount(task, volume_name="scratch", mount_path=SCRATCH_MOUNT,
                               size_limit=res.scratch)
    task.set_env_variable("TMPDIR", SCRATCH_MOUNT)
    kubernetes.set_timeout(task, settings.timeouts_s[name])
    retry = RETRIES.get(name)
    if retry:
        task.set_retry(num_retries=retry.retries, backoff_duration=retry.backoff,
                       backoff_factor=retry.factor, backoff_max_duration=retry.max_backoff)
    if name in UNCACHED:
        task.set_caching_options(False)
    if settings.gcp_key_secret:
        kubernetes.use_secret_as_volume(task, secret_name=settings.gcp_key_secret,
                                        mount_path=SECRET_MOUNT)
        task.set_env_variable("GOOGLE_APPLICATION_CREDENTIALS",
                              f"{SECRET_MOUNT}/{SECRET_KEY_FILE}")
    if settings.notify_secret and name in NOTIFY_TASKS:
        kubernetes.use_secret_as_volume(task, secret_name=settings.notify_secret,
                                        mount_path=NOTIFY_SECRET_MOUNT)
    if variant is not None and variant.accelerator_type:
        task.set_accelerator_type(variant.accelerator_type)
        task.set_accelerator_limit(variant.accelerator_count)
    if variant is not None:
        if variant.node_selector:
            for key, value in sorted(variant.node_selector.items()):
                kubernetes.add_node_selector(task, label_key=key, label_value=value)
        for tol in variant.tolerations:
            kubernetes.add_toleration(task, **tol)
        for key, value in sorted(variant.env.items()):
            task.set_env_variable(key, value)
    return task
