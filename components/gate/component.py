"""KFP wrapper of gate."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Output

from kfp_ct.components.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def gate(
    thresholds: str,
    evaluation: Input[Artifact],
    blessing: Output[Artifact],
    report: Output[Markdown],
) -> bool:
    """Blesses or rejects the candidate against value and change thresholds, with reasons.

    Args:
        thresholds: JSON: {"value": {"accuracy": {"min": 0.9}}, "change": {"accuracy":
            {"absolute": -0.01}}}; empty: the task's defaults. The no-skill floor (beat
            the no-skill predictor on accuracy / rmse) is added to every run unless
            "no_skill_floor": false. Change thresholds are skipped, with a note, when
            there is no production model yet; when no check of the model ran, the
            candidate is not blessed.
        evaluation: The evaluate task's output.

    Returns:
        blessing: BLESSED or NOT_BLESSED marker plus blessing.json with every check.
        report: Markdown table of the checks, rendered by the Kubeflow UI.
        Output: True when blessed.
    """
    import time

    from kfp_ct.components.gate.logic import run_gate

    from kfp_ct.components.common.artifacts import check_inputs, stamp_outputs

    started = time.perf_counter()
    check_inputs("gate", evaluation=evaluation)
    decision = run_gate(evaluation_dir=evaluation.path, thresholds=thresholds,
                        blessing_dir=blessing.path, report_path=report.path)
    blessing.metadata["blessed"] = decision.blessed
    stamp_outputs("gate", blessing=blessing)
    print(f"[kfp-ct] timing task=gate logic_s={time.perf_counter() - started:.2f}")
    return decision.blessed
