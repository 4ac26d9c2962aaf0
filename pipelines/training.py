"""The training pipeline: validate -> transform -> train -> evaluate -> gate -> push.

One compiled graph runs locally (kfp.local) and on a cluster. Decisions live inside the
components (the gate writes a blessing, push reads it and records "not pushed"), so the
graph needs no dsl.If, which kfp.local cannot run (see shared/DESIGN.md). Each variant's
body runs inside the failed-run notice's exit handler (pipelines/notice.py), which
announces a failed run to the ``notify`` parameter's target.
"""

# No `from __future__ import annotations` here: kfp reads the pipeline signature at runtime.


import json
import pathlib

from kfp import dsl

from kfp_ct.components.evaluate.component import evaluate
from kfp_ct.components.gate.component import gate
from kfp_ct.components.push.component import push
from kfp_ct.components.rollout.component import rollout
from kfp_ct.components.common.images import GPU_IMAGE
from kfp_ct.components.train.component import train, train_gpu, train_tfjob, train_tpu
from kfp_ct.components.transform.component import transform
from kfp_ct.components.validate.component import validate
from kfp_ct.pipelines import cluster
from kfp_ct.pipelines.notice import failure_notice

PENGUINS_PROBLEM = json.dumps(
    json.loads((pathlib.Path(__file__).parent / "penguins" / "problem.json").read_text()),
    sort_keys=True, separators=(",", ":"))
BUNDLED_PENGUINS = "bundled:penguins"  # kfp_ct.components.common.data.BUNDLED_PENGUINS
# Empty: the gate's defaults for the problem's task (components/gate/logic.py,
# TASK_DEFAULTS): beat the no-skill predictor, at most a small step back from production,
# at least 50 eval rows. Nothing here is sized for penguins, so another problem compiled
# from this YAML gets a gate that fits it.
DEFAULT_THRESHOLDS = ""


def import_dataset(uri) -> dsl.PipelineTask:
    """The data parameter as a Dataset artifact (dsl.importer), the first artifact of the
    run's lineage. kfp.local takes any URI; a KFP 2.5 backend's importer records the URI
    as it is but accepts only object-store schemes (gs://, s3://, minio://), so on a
    cluster the data is one of those (pipelines/CLUSTER.md: "Data on a cluster").

    The task keeps its own name (``importer``): the Kubeflow UI 2.5 finds a task's output
    artifacts in ML Metadata under the task's name but draws them under its key, so a
    display name of its own would leave the imported data grey, without its URI."""
    # reimport, uncached: a window or folder keeps its URI while its rows change, so each
    # run records the data it read as an artifact of its own.
    task = dsl.importer(artifact_uri=uri, artifact_class=dsl.Dataset, reimport=True)
    task.set_caching_options(False)
    return task


def _after_training(settings, problem, push_destination, thresholds, slices, trigger,
                    validated, transformed, trained, beam_args):
    """evaluate -> gate -> push, the same in every variant."""
    evaluated = evaluate(problem=problem, push_destination=push_destination,
                         model=trained.outputs["model"],
                         raw_eval=transformed.outputs["raw_eval"], slices=slices,
                         beam_args=beam_args)
    cluster.configure(evaluated, "evaluate", settings)
    gated = gate(thresholds=thresholds, evaluation=evaluated.outputs["evaluation"])
    cluster.configure(gated, "gate", settings)
    pushed = push(problem=problem, push_destination=push_destination,
                  model=trained.outputs["model"], blessing=gated.outputs["blessing"],
                  raw_eval=transformed.outputs["raw_eval"],
                  statistics=validated.outputs["statistics"],
                  schema=validated.outputs["schema"],
                  evaluation=evaluated.outputs["evaluation"],
                  run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                  run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, trigger=trigger)
    cluster.configure(pushed, "push", settings)
    return pushed


def _before_training(settings, data_path, problem, schema_path, push_destination, strict,
                     beam_args, thresholds, slices, train_steps):
    """validate -> transform, the same in every variant."""
    # The first task checks the whole run's inputs before any heavy work.
    data = import_dataset(data_path).output
    validated = validate(data=data, problem=problem, schema_path=schema_path,
                         push_destination=push_destination, strict=strict,
                         beam_args=beam_args, training_thresholds=thresholds,
                         training_slices=slices, training_steps=train_steps)
    cluster.configure(validated, "validate", settings)
    transformed = transform(data=data, problem=problem,
                            schema=validated.outputs["schema"], beam_args=beam_args)
    cluster.configure(transformed, "transform", settings)
    return validated, transformed


def _train_in(settings, where, train_op, problem, transformed, train_steps, accelerator,
              seed, checkpoint_root, push_destination):
    """train (one process: CPU, GPU or TPU) in its variant's image, the same in every
    one-process variant."""
    # Checkpoints go to durable storage (checkpoint_root, else under push_destination)
    # under this run's id, which its retries share: a retry resumes there.
    trained = train_op(problem=problem, transform_graph=transformed.outputs["transform_graph"],
                       transformed_examples=transformed.outputs["transformed_examples"],
                       train_steps=train_steps, accelerator=accelerator, seed=seed,
                       checkpoint_root=checkpoint_root, push_destination=push_destination,
                       run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
    cluster.configure(trained, "train", settings, variant=where)
    if where.image != train_op.component_spec.implementation.container.image:
        trained.set_container_image(where.image)
    return trained


def make_multiworker_pipeline(settings: cluster.Settings = cluster.DEFAULT):
    """The training pipeline whose train step is a TFJob of several workers (Kubeflow
    Training Operator v1, MultiWorkerMirroredStrategy); cluster only, gs:// pipeline root
    (components/train/tfjob.py)."""
    where = settings.variants["multiworker"]

    @dsl.pipeline(
        name="kfp-ct-training-multiworker",
        description="Validate, transform, train on several workers (a Kubeflow TFJob), "
                    "evaluate against production, gate and push a TensorFlow model to a "
                    "versioned TF Serving model base.")
    def training_pipeline(
        push_destination: str,
        data_path: str = BUNDLED_PENGUINS,
        problem: str = PENGUINS_PROBLEM,
        schema_path: str = "",
        strict: bool = False,
        beam_args: list = [],
        train_steps: int = 300,
        accelerator: str = where.accelerator_param,
        seed: int = 42,
        thresholds: str = DEFAULT_THRESHOLDS,
        slices: list = [],
        trigger: str = "",
        checkpoint_root: str = "",
        workers: int = 2,
        gpus_per_worker: int = 0,
        namespace: str = "",
        worker_service_account: str = "",
        notify: str = "",
    ):
        with failure_notice("kfp-ct-training-multiworker", settings, notify=notify):
            validated, transformed = _before_training(
                settings, data_path, problem, schema_path, push_destination, strict, beam_args,
                thresholds, slices, train_steps)
            trained = train_tfjob(
                problem=problem, transform_graph=transformed.outputs["transform_graph"],
                transformed_examples=transformed.outputs["transformed_examples"],
                worker_resources=cluster.worker_resources(settings), workers=workers,
                gpus_per_worker=gpus_per_worker, train_steps=train_steps,
                accelerator=accelerator, seed=seed, checkpoint_root=checkpoint_root,
                push_destination=push_destination, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                namespace=namespace, worker_service_account=worker_service_account,
                gcp_key_source=settings.gcp_key_secret, cpu_image=where.image,
                gpu_image=settings.variants["gpu"].image if "gpu" in settings.variants
                else GPU_IMAGE, timeout_s=settings.timeouts_s["train"])
            cluster.configure(trained, "train_tfjob", settings, variant=where)
            cluster.configure_tfjob_launcher(trained)
            _after_training(settings, problem, push_destination, thresholds, slices, trigger,
                            validated, transformed, trained, beam_args)

    return training_pipeline


def make_training_pipeline(variant: str = "cpu", settings: cluster.Settings = cluster.DEFAULT):
    """The training pipeline; ``variant`` (pipelines/cluster.py VARIANTS) says where train
    runs: "cpu", "gpu" (GPU image, nvidia.com/gpu), "tpu" (TPU image, google.com/tpu)
    or "multiworker" (a TFJob of several workers: make_multiworker_pipeline).
    ``settings``: resources, timeouts, accelerators and credentials (cluster.load_settings)."""
    if variant not in settings.variants:
        raise cluster.SettingsError(f"unknown training variant {variant!r}; variants: "
                                    f"{sorted(settings.variants)}")
    if variant == "multiworker":
        return make_multiworker_pipeline(settings)
    where = settings.variants[variant]
    train_op = {"cpu": train, "gpu": train_gpu, "tpu": train_tpu}[variant]
    suffix = "" if variant == "cpu" else f"-{variant}"

    @dsl.pipeline(
        name=f"kfp-ct-training{suffix}",
        description="Validate, transform, train, evaluate against production, gate and "
                    "push a TensorFlow model to a versioned TF Serving model base.")
    def training_pipeline(
        push_destination: str,
        data_path: str = BUNDLED_PENGUINS,
        problem: str = PENGUINS_PROBLEM,
        schema_path: str = "",
        strict: bool = False,
        beam_args: list = [],
        train_steps: int = 300,
        accelerator: str = where.accelerator_param,
        seed: int = 42,
        thresholds: str = DEFAULT_THRESHOLDS,
        slices: list = [],
        trigger: str = "",
        checkpoint_root: str = "",
        notify: str = "",
    ):
        with failure_notice(f"kfp-ct-training{suffix}", settings, notify=notify):
            validated, transformed = _before_training(
                settings, data_path, problem, schema_path, push_destination, strict, beam_args,
                thresholds, slices, train_steps)
            trained = _train_in(settings, where, train_op, problem, transformed, train_steps,
                                accelerator, seed, checkpoint_root, push_destination)
            _after_training(settings, problem, push_destination, thresholds, slices, trigger,
                            validated, transformed, trained, beam_args)

    return training_pipeline


def make_kserve_pipeline(settings: cluster.Settings = cluster.DEFAULT):
    """The training pipeline that ends serving the pushed version through a KServe
    InferenceService: a canary first, judged, then promoted or rolled back
    (components/rollout). Cluster only: the rollout calls the Kubernetes API."""
    where = settings.variants["cpu"]

    @dsl.pipeline(
        name="kfp-ct-training-kserve",
        description="Validate, transform, train, evaluate against production, gate, push a "
                    "TensorFlow model to a versioned model base, and serve it through a KServe "
                    "InferenceService: a canary first, promoted or rolled back by a judge.")
    def training_pipeline(
        push_destination: str,
        inference_service: str,
        data_path: str = BUNDLED_PENGUINS,
        problem: str = PENGUINS_PROBLEM,
        schema_path: str = "",
        strict: bool = False,
        beam_args: list = [],
        train_steps: int = 300,
        accelerator: str = where.accelerator_param,
        seed: int = 42,
        thresholds: str = DEFAULT_THRESHOLDS,
        slices: list = [],
        trigger: str = "",
        checkpoint_root: str = "",
        namespace: str = "",
        canary_percent: int = 10,
        ready_timeout_s: int = 900,
        soak_s: int = 0,
        predictor_service_account: str = "",
        serving_runtime: str = "",
        predictor_resources: dict = {},
        canary_url: str = "",
        notify: str = "",
    ):
        with failure_notice("kfp-ct-training-kserve", settings, notify=notify):
            validated, transformed = _before_training(
                settings, data_path, problem, schema_path, push_destination, strict, beam_args,
                thresholds, slices, train_steps)
            trained = _train_in(settings, where, train, problem, transformed, train_steps,
                                accelerator, seed, checkpoint_root, push_destination)
            pushed = _after_training(settings, problem, push_destination, thresholds, slices,
                                     trigger, validated, transformed, trained, beam_args)
            served = rollout(pushed=pushed.outputs["pushed"], target="kserve",
                             name=inference_service, namespace=namespace,
                             canary_percent=canary_percent, ready_timeout_s=ready_timeout_s,
                             soak_s=soak_s, service_account=predictor_service_account,
                             runtime=serving_runtime, resources=predictor_resources,
                             canary_url=canary_url)
            cluster.configure(served, "rollout", settings)

    return training_pipeline


training_pipeline = make_training_pipeline()
training_pipeline_gpu = make_training_pipeline("gpu")
training_pipeline_tpu = make_training_pipeline("tpu")
training_pipeline_multiworker = make_training_pipeline("multiworker")
training_pipeline_kserve = make_kserve_pipeline()
