"""KFP wrapper of the retraining trigger."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from kfp_ct.components.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def retrain_trigger(
    model_base: str,
    decision: Input[Artifact],
    launch: Output[Artifact],
    training_data: str = "",
    training_partitions: int = 0,
    retrain_mode: str = "kfp",
    cooldown_hours: float = 0.0,
    training_params: str = "",
    training_pipeline: str = "kfp-ct-training",
    training_pipeline_version: str = "",
    experiment: str = "kfp-ct-retraining",
    kfp_host: str = "",
    namespace: str = "",
    run_id: str = "",
    run_name: str = "",
):
    """Launches one retraining when the drift check found drift; records why not otherwise.

    Exactly once per window, never while a launched retraining still runs, and not within
    the cooldown: launches are create-only records at the model base.

    Args:
        model_base: The TF Serving model base (the retrained model is pushed there).
        decision: The drift check's decision (drift.json).
        training_data: The training window: a path, folder or glob (local or gs://).
        training_partitions: > 0: train on the newest N matches of training_data only.
        retrain_mode: "kfp" (create a run of the uploaded training pipeline from this
            pod), "local" (run it through kfp.local and wait), "off" (record only).
        cooldown_hours: No new launch within this many hours of the last one.
        training_params: JSON object of extra training pipeline parameters.
        training_pipeline: Name of the uploaded training pipeline (kfp mode).
        training_pipeline_version: Version name to pin; empty: the latest version.
        experiment: Experiment the retraining run goes into (kfp mode).
        kfp_host: KFP API address; empty: the in-cluster ml-pipeline service.
        namespace: Kubeflow profile namespace of the experiment (multi-user).
        run_id: The monitoring run's id (lineage of the retrained version).
        run_name: The monitoring run's name.

    Returns:
        launch: launch.json (run id, window, drifted features, or why nothing was
            launched) and a LAUNCHED / NOT_LAUNCHED marker.
    """
    import time

    from kfp_ct.components.retrain.logic import TriggerConfig, parse_params, run_trigger

    from kfp_ct.components.common.artifacts import check_inputs, stamp_outputs

    started = time.perf_counter()
    check_inputs("retrain_trigger", decision=decision)
    cfg = TriggerConfig(
        mode=retrain_mode, training_data=training_data,
        training_partitions=training_partitions, cooldown_hours=cooldown_hours,
        training_params=parse_params(training_params), pipeline_name=training_pipeline,
        pipeline_version=training_pipeline_version, experiment=experiment, host=kfp_host,
        namespace=namespace)
    record = run_trigger(decision_dir=decision.path, model_base=model_base, cfg=cfg,
                         launch_dir=launch.path,
                         run_info={"run_id": run_id, "run_name": run_name})
    launch.metadata.update({"launched": record["launched"],
                            "run_id": str(record.get("run_id") or ""),
                            "reason": record.get("reason", "")})
    stamp_outputs("retrain_trigger", launch=launch)
    print(f"[kfp-ct] timing task=retrain-trigger logic_s={time.perf_counter() - started:.2f}")
