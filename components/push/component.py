"""KFP wrapper of push."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from kfp_ct.components.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def push(
    problem: str,
    push_destination: str,
    model: Input[Model],
    blessing: Input[Artifact],
    raw_eval: Input[Dataset],
    statistics: Input[Artifact],
    schema: Input[Artifact],
    evaluation: Input[Artifact],
    pushed: Output[Model],
    run_id: str = "",
    run_name: str = "",
    trigger: str = "",
):
    """Pushes a blessed model to the TF Serving model base after a serving check.

    A model that is not blessed is recorded as not pushed (NOT_PUSHED, with the reason).
    Before pushing, the SavedModel is loaded in a fresh process and answers canary
    requests built from real eval rows; warmup requests are written beside it.

    Args:
        problem: The problem spec, kept with the version.
        push_destination: The model base, local path or gs://; versions are <base>/<n>/.
        model: The candidate SavedModel.
        blessing: The gate's decision.
        raw_eval: Raw eval rows for the canary and warmup requests.
        statistics: Training data statistics, kept with the version (drift checks).
        schema: The schema, kept with the version (validation of later data).
        evaluation: The evaluation, kept with the version (audit).
        run_id: The pipeline run id, kept as the version's parent run.
        run_name: The pipeline run name.
        trigger: Why this training ran (JSON; set by the drift trigger), kept in the
            version's metadata.

    Returns:
        pushed: The pushed model (system.Model). Its metadata: "uri", the published
            version <base>/<N> to serve (local or gs://); "version"; "key_metric" and
            "key_metric_value"; "blessed"; "pushed"; "reason" when nothing was pushed (then
            there is no "uri"). Its own folder holds push's record: push.json and a PUSHED
            / NOT_PUSHED marker. (KFP 2.5's launcher refuses an output URI outside the
            run's folder, so the version is named in the metadata, not as the artifact's
            URI; see components/push/README.md.)
    """
    import json
    import time

    from kfp_ct.components.push.logic import run_push

    from kfp_ct.components.common.artifacts import check_inputs, stamp_outputs

    started = time.perf_counter()
    check_inputs("push", model=model, blessing=blessing, raw_eval=raw_eval,
                 statistics=statistics, schema=schema, evaluation=evaluation)
    result = run_push(
        model_dir=model.path, blessing_dir=blessing.path, push_destination=push_destination,
        raw_eval_dir=raw_eval.path, pushed_dir=pushed.path, statistics_dir=statistics.path,
        schema_dir=schema.path, problem=problem, evaluation_dir=evaluation.path,
        run_info={"run_id": run_id, "run_name": run_name}, trigger=trigger)
    pushed.metadata.update(json.loads(json.dumps(result.summary(), default=str)))
    stamp_outputs("push", pushed=pushed)
    print(f"[kfp-ct] timing task=push logic_s={time.perf_counter() - started:.2f}")
