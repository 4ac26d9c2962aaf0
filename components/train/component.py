"""KFP wrapper of train."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.common.images import CPU_IMAGE, GPU_IMAGE, TPU_IMAGE


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

    from components.train.logic import run_train

    started = time.perf_counter()
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
    print(f"[kfp-ct] timing task=train logic_s={time.perf_counter() - started:.2f}")


# The same component in the GPU image (CUDA libraries) and the TPU image (TensorFlow's
# TPU build), for the pipeline variants and for loading on their own.
train_gpu = dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)(train.python_func)
train_tpu = dsl.component(base_image=TPU_IMAGE, install_kfp_package=False)(train.python_func)
