"""KFP wrapper of evaluate."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from kfp_ct.components.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate(
    problem: str,
    push_destination: str,
    model: Input[Model],
    raw_eval: Input[Dataset],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    report: Output[HTML],
    slices: list = [],
    beam_args: list = [],
):
    """Evaluates the candidate on raw eval rows, against the production model.

    In-process by default; with ``beam_args`` (a runner and its options) TFMA runs as a
    Beam pipeline on that runner.

    Args:
        problem: The problem spec (label, task).
        push_destination: The serving model base; its newest version is the baseline.
        model: The candidate SavedModel.
        raw_eval: Raw eval rows (serialized tf.Examples) sent through the serving signature.
        slices: Raw feature names to slice metrics by.
        beam_args: Beam pipeline options for TFMA; empty: in-process.

    Returns:
        evaluation: evaluation.json (candidate, baseline, slices); on the Beam path also
            TFMA's output (tfma/).
        metrics: Candidate overall metrics for the UI.
        confusion: Confusion matrix (classification).
        report: HTML comparison of candidate and baseline.
    """
    import time

    from kfp_ct.components.evaluate.logic import run_evaluate

    from kfp_ct.components.common.artifacts import check_inputs, stamp_outputs

    started = time.perf_counter()
    check_inputs("evaluate", model=model, raw_eval=raw_eval)
    result = run_evaluate(
        model_dir=model.path, raw_eval_dir=raw_eval.path, problem=problem,
        push_destination=push_destination, output_dir=evaluation.path,
        report_path=report.path, slices=list(slices), beam_args=list(beam_args))
    doc = result.to_dict()
    for key, value in doc["candidate"]["overall"].items():
        if isinstance(value, (int, float)):
            metrics.log_metric(key, value)
    baseline = doc["baseline"]
    evaluation.metadata["baseline_state"] = baseline["state"]
    evaluation.metadata["baseline_version"] = baseline.get("version")
    stamp_outputs("evaluate", evaluation=evaluation)
    matrix = doc.get("confusion_matrix")
    if matrix:
        confusion.log_confusion_matrix(matrix["labels"], matrix["matrix"])
    print(f"[kfp-ct] timing task=evaluate logic_s={time.perf_counter() - started:.2f}")
