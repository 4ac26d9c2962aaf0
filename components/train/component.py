"""KFP wrapper of train."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from kfp_ct.components.common.images import CPU_IMAGE, GPU_IMAGE, TPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def train(
    problem: str,
    transform_graph: Input[Artifact],
    transformed_examples: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    train_steps: int = 300,
    accelerator: str = "auto",
    seed: int = 42,
    checkpoint_dir: str = "",
    checkpoint_root: str = "",
    push_destination: str = "",
    run_id: str = "",
):
    """Trains the Keras model on the transformed data and exports a serving SavedModel.

    Args:
        problem: The problem spec; its module_file, if any, may supply build_model.
        transform_graph: The TF Transform output (embedded in the serving signature).
        transformed_examples: Transformed train/eval TFRecord shards.
        train_steps: Optimizer steps.
        accelerator: auto, cpu, gpu or tpu (auto: TPU if addressed, else all GPUs, else CPU).
        seed: Random seed (CPU runs are reproducible).
        checkpoint_dir: The durable folder (local or gs://) the training state is copied
            to after every epoch, so a retried or preempted task resumes from it; empty:
            <checkpoint_root>/<run_id>/train.
        checkpoint_root: Durable root for checkpoints; empty:
            <push_destination>/kfp_ct_checkpoints.
        push_destination: The serving model base (durable storage on a cluster).
        run_id: The pipeline run id: retries of this task share it, other runs do not.

    Returns:
        model: SavedModel whose serving_default takes serialized raw tf.Examples.
        metrics: Training and eval-split metrics, throughput, strategy.
    """
    import time

    from kfp_ct.components.train.logic import run_train

    from kfp_ct.components.common.artifacts import check_inputs, stamp_outputs

    started = time.perf_counter()
    check_inputs("train", transform_graph=transform_graph,
                 transformed_examples=transformed_examples)
    result = run_train(
        transform_graph_dir=transform_graph.path, examples_dir=transformed_examples.path,
        problem=problem, model_dir=model.path, train_steps=train_steps,
        accelerator=accelerator, checkpoint_dir=checkpoint_dir, seed=seed,
        checkpoint_root=checkpoint_root, push_destination=push_destination, run_id=run_id)
    for key, value in result.summary().items():
        if isinstance(value, (int, float)):
            metrics.log_metric(key, value)
    model.metadata["strategy"] = result.summary()["strategy"]
    model.metadata["framework"] = "tensorflow"
    stamp_outputs("train", model=model)
    print(f"[kfp-ct] timing task=train logic_s={time.perf_counter() - started:.2f}")


# The same component in the GPU image (CUDA libraries) and the TPU image (TensorFlow's
# TPU build), for the pipeline variants and for loading on their own.
train_gpu = dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)(train.python_func)
train_tpu = dsl.component(base_image=TPU_IMAGE, install_kfp_package=False)(train.python_func)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def train_tfjob(
    problem: str,
    transform_graph: Input[Artifact],
    transformed_examples: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    worker_resources: dict,
    workers: int = 2,
    gpus_per_worker: int = 0,
    train_steps: int = 300,
    accelerator: str = "auto",
    seed: int = 42,
    checkpoint_dir: str = "",
    checkpoint_root: str = "",
    push_destination: str = "",
    run_id: str = "",
    namespace: str = "",
    worker_service_account: str = "",
    gcp_key_source: str = "",
    cpu_image: str = CPU_IMAGE,
    gpu_image: str = GPU_IMAGE,
    timeout_s: int = 4 * 3600,
    poll_s: int = 15,
):
    """Trains on several workers: launches a Kubeflow TFJob and waits for it.

    The replicas run MultiWorkerMirroredStrategy; worker 0 (the chief) writes the model
    straight to this task's model artifact, so the pipeline root must be gs://.

    Args:
        problem: The problem spec; its module_file, if any, may supply build_model.
        transform_graph: The TF Transform output (gs://).
        transformed_examples: Transformed train/eval TFRecord shards (gs://).
        worker_resources: Per replica: {"requests": {...}, "limits": {...}}.
        workers: Replicas of the TFJob (each one process, one TF_CONFIG task).
        gpus_per_worker: nvidia.com/gpu per replica; more than 0 runs the GPU image.
        train_steps: Optimizer steps (global batches).
        accelerator: auto, cpu or gpu, on every replica.
        seed: Random seed.
        checkpoint_dir: Durable folder (gs://) the chief keeps the training state in
            after every epoch; every replica resumes from it. Empty:
            <checkpoint_root>/<run_id>/train.
        checkpoint_root: Durable root for checkpoints; empty:
            <push_destination>/kfp_ct_checkpoints.
        push_destination: The serving model base.
        run_id: The pipeline run id: it names the TFJob and the checkpoint folder.
        namespace: Where the TFJob runs; empty: this pod's namespace.
        worker_service_account: The replicas' service account (workload identity);
            empty: the namespace's default.
        gcp_key_source: The name of a Kubernetes Secret holding key.json, mounted into
            every replica; empty: none (workload identity).
        cpu_image: The replicas' image without GPUs.
        gpu_image: The replicas' image with GPUs.
        timeout_s: How long to wait for the TFJob before deleting it.
        poll_s: Seconds between looks at the TFJob's status.

    Returns:
        model: SavedModel whose serving_default takes serialized raw tf.Examples.
        metrics: The chief's training and eval-split metrics, throughput, strategy.
    """
    import os
    import time

    from kfp_ct.components.common.artifacts import check_inputs, stamp_outputs
    from kfp_ct.components.train import tfjob

    started = time.perf_counter()
    check_inputs("train_tfjob", transform_graph=transform_graph,
                 transformed_examples=transformed_examples)
    resources = {k: dict(v) for k, v in worker_resources.items()}
    if gpus_per_worker:
        resources.setdefault("limits", {})["nvidia.com/gpu"] = str(gpus_per_worker)
    result = tfjob.launch(
        model_uri=model.uri, transform_graph_uri=transform_graph.uri,
        examples_uri=transformed_examples.uri, problem=problem, workers=workers,
        image=gpu_image if gpus_per_worker else cpu_image, resources=resources,
        train_steps=train_steps, accelerator=accelerator, seed=seed,
        checkpoint_dir=checkpoint_dir, checkpoint_root=checkpoint_root,
        push_destination=push_destination, run_id=run_id, namespace=namespace,
        service_account=worker_service_account, key_secret=gcp_key_source,
        timeout_s=timeout_s, poll_s=poll_s)
    # The chief wrote the model at model.uri; the local mount point must exist for the
    # KFP launcher, which uploads what is there (nothing) after this function.
    os.makedirs(model.path, exist_ok=True)
    for key, value in result.items():
        if isinstance(value, (int, float)):
            metrics.log_metric(key, value)
    model.metadata["strategy"] = result.get("strategy", "")
    model.metadata["framework"] = "tensorflow"
    stamp_outputs("train_tfjob", model=model)
    print(f"[kfp-ct] timing task=train_tfjob logic_s={time.perf_counter() - started:.2f}")
