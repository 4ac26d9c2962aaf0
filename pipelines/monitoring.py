"""The monitoring pipeline: drift check -> retraining trigger.

A window of fresh data (and/or the serving request log) is compared with the data the
production model was trained on (found in the registry at ``model_base``). When drift is
found, the trigger launches one training run on the configured training window, locally
through kfp.local or on the cluster through the KFP API, exactly once per window. The
launch decision lives inside the trigger component (kfp.local cannot run ``dsl.If``), so
this one compiled graph runs the same way locally and on a cluster.
"""

# No `from __future__ import annotations` here: kfp reads the pipeline signature at runtime.

from kfp import dsl

from kfp_ct.components.drift.component import drift_check
from kfp_ct.components.retrain.component import retrain_trigger
from kfp_ct.pipelines import cluster
from kfp_ct.pipelines.notice import failure_notice
from kfp_ct.pipelines.training import import_dataset



def make_monitoring_pipeline(settings: cluster.Settings = cluster.DEFAULT):
    """The monitoring pipeline; ``settings``: pipelines/cluster.py."""

    @dsl.pipeline(
        name="kfp-ct-monitoring",
        description="Check fresh data (or the serving request log) for drift against the "
                    "production model's training data, and the model's performance (on "
                    "labels when they arrived, estimated before), and launch one retraining "
                    "when it moved or got worse.")
    def monitoring_pipeline(
        model_base: str,
        window_path: str = "",
        request_log_path: str = "",
        drift_settings: str = "",
        labels_path: str = "",
        label_key: str = "",
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
    ):
        # A failed run is announced (components/notify): the body runs inside the exit
        # handler, the notice after it, to the "notify" key of drift_settings.
        with failure_notice("kfp-ct-monitoring", settings, drift_settings=drift_settings,
                            kfp_host=kfp_host, namespace=namespace):
            # The window enters as a Dataset (the run's lineage shows its URI); see
            # pipelines/CLUSTER.md for what KFP's importer accepts on a cluster.
            window = import_dataset(window_path)
            # Labels are optional: a path (an importer would refuse "" on a cluster).
            checked = drift_check(model_base=model_base, window=window.output,
                                  labels_path=labels_path, label_key=label_key,
                                  request_log_path=request_log_path, settings=drift_settings,
                                  run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                                  run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
            # Reads fresh data and production state under unchanged names: never cached.
            cluster.configure(checked, "drift_check", settings)
            triggered = retrain_trigger(
                model_base=model_base, decision=checked.outputs["decision"],
                training_data=training_data, training_partitions=training_partitions,
                retrain_mode=retrain_mode, cooldown_hours=cooldown_hours,
                training_params=training_params, training_pipeline=training_pipeline,
                training_pipeline_version=training_pipeline_version, experiment=experiment,
                kfp_host=kfp_host, namespace=namespace,
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
            # Its decision depends on the launch records at the model base: never cached.
            # A retry after a claimed launch finds the claim and launches nothing more.
            cluster.configure(triggered, "retrain_trigger", settings)

    return monitoring_pipeline


monitoring_pipeline = make_monitoring_pipeline()
