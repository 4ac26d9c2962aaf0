"""KFP wrapper of transform."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from kfp_ct.components.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def transform(
    data: Input[Dataset],
    problem: str,
    schema: Input[Artifact],
    transform_graph: Output[Artifact],
    transformed_examples: Output[Dataset],
    raw_eval: Output[Dataset],
    beam_args: list = [],
):
    """Splits the data (stable hash), analyzes the train split with TF Transform, transforms both.

    Args:
        data: The same data window validate read (a Dataset: file, folder, glob, gs://,
            bundled:penguins).
        problem: The problem spec (inline JSON or path); its module_file, if any,
            supplies preprocessing_fn.
        schema: The validated schema (orders this task after validation; kept for lineage).
        beam_args: Beam pipeline options for the analyze pass (DirectRunner by default).

    Returns:
        transform_graph: The TF Transform output (transform_fn/, transformed_metadata/).
        transformed_examples: train/ and eval/ TFRecord shards of transformed tf.Examples.
        raw_eval: The raw eval rows as serialized tf.Examples (for evaluation and canaries).
    """
    import time

    from kfp_ct.components.transform.logic import run_transform

    from kfp_ct.components.common.artifacts import check_inputs, data_location, stamp_outputs

    started = time.perf_counter()
    check_inputs("transform", data=data, schema=schema)
    result = run_transform(
        data_path=data_location(data), problem=problem,
        transform_graph_dir=transform_graph.path, examples_dir=transformed_examples.path,
        raw_eval_dir=raw_eval.path, beam_args=list(beam_args) or None)
    for artifact in (transform_graph, transformed_examples, raw_eval):
        artifact.metadata.update(result.summary())
    stamp_outputs("transform", transform_graph=transform_graph,
                  transformed_examples=transformed_examples, raw_eval=raw_eval)
    print(f"[kfp-ct] timing task=transform logic_s={time.perf_counter() - started:.2f}")
