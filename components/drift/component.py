"""KFP wrapper of the drift check: artifacts in, plain function call, artifacts out."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Output

from kfp_ct.components.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def drift_check(
    model_base: str,
    window: Input[Dataset],
    decision: Output[Artifact],
    report: Output[HTML],
    report_md: Output[Markdown],
    metrics: Output[Metrics],
    request_log_path: str = "",
    labels_path: str = "",
    label_key: str = "",
    settings: str = "",
    run_id: str = "",
    run_name: str = "",
):
    """Measures drift of fresh data against the production model's training data.

    Per feature: Jensen-Shannon divergence (numeric) or L-infinity distance (categorical)
    between the training statistics kept beside the production version and the window;
    drift only above both the threshold and the no-drift level that sampling alone gives
    at this window size (false-alarm rate controlled over all features). Also schema
    anomalies, label drift when the window has the label, and prediction drift.

    Args:
        model_base: The TF Serving model base the production model is pushed to.
        window: Fresh data, a Dataset whose URI is a CSV or Parquet file, folder or glob,
            local or gs://; an empty URI: no window (the request log alone).
        request_log_path: TF Serving request log: PredictionLog TFRecord file(s).
        labels_path: Labelled rows (empty: none), read like the window. With
            ``label_key`` empty: a labelled window (features and label; also the drift
            window when there is no other); with it: a labels file (key and label) joined
            on that key to the request log, else to the window. A path, not a Dataset:
            KFP's importer refuses an empty URI on a cluster, and labels are optional.
        label_key: The column that joins ``labels_path`` to the served rows.
        settings: JSON: thresholds per type ("numeric", "categorical") and per feature
            ("features"), "false_alarm_rate", "min_rows"; performance: "tolerance",
            "estimated_tolerance", "min_labels", "retrain_on" (of "drift",
            "performance", "estimated"), "notify" (a webhook), "history" (trend windows).
        run_id: The monitoring run's id, kept in the decision record.
        run_name: The monitoring run's name.

    Returns:
        decision: drift.json: DRIFT / NO_DRIFT / INSUFFICIENT_DATA, reasons, every test;
            the performance checks (PERFORMANCE_DROP, ESTIMATED_DROP) and the findings
            that launch a retraining.
        report: HTML report (decision first, a row and a picture per feature).
        report_md: The same report in Markdown.
        metrics: Per-feature distances.
    """
    import os
    import time

    from kfp_ct.components.drift.logic import DRIFT_JSON, metrics as flat_metrics, run_drift_check

    from kfp_ct.components.common.artifacts import check_inputs, data_location, stamp_outputs

    started = time.perf_counter()
    check_inputs("drift_check", window=window)
    record = run_drift_check(
        model_base=model_base, window_path=data_location(window),
        request_log_path=request_log_path, labels_path=labels_path,
        label_key=label_key,
        settings=settings, decision_dir=decision.path, report_html=report.path,
        report_md=report_md.path, run_info={"run_id": run_id, "run_name": run_name})
    for name, value in flat_metrics(record).items():
        metrics.log_metric(name, value)
    decision.metadata.update({"decision": record["decision"], "drifted": record["drifted"],
                              "findings": record["findings"],
                              "file": os.path.join(decision.path, DRIFT_JSON)})
    stamp_outputs("drift_check", decision=decision)
    print(f"[kfp-ct] timing task=drift-check logic_s={time.perf_counter() - started:.2f}")
