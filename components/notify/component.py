"""KFP wrapper of the failed-run notice (the pipelines' exit task)."""

from kfp import dsl
from kfp.dsl import Artifact, Output

from kfp_ct.components.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def announce_failure(
    notice: Output[Artifact],
    notify: str = "",
    settings: str = "",
    pipeline: str = "",
    run_id: str = "",
    run_name: str = "",
    kfp_host: str = "",
    namespace: str = "",
    local_final_status: str = "",
):
    """Announces a failed run to the notification target: the failing task and the last
    lines of its log. The pipeline's exit task (dsl.ExitHandler): it runs whatever the
    body's outcome, sends nothing when the run did not fail, and never fails itself.

    Args:
        notify: The notification target, JSON (components/common/notify.py): {"url_env":
            "SLACK_WEBHOOK_URL"}, {"url_file": PATH} or {"url": URL}; empty: read the
            "notify" key of settings.
        settings: Settings JSON holding a "notify" key (the monitoring pipeline's drift
            settings); used when notify is empty.
        pipeline: The pipeline's name, shown in the notice.
        run_id: This run's id (on a cluster the task reads the run's tasks by it).
        run_name: This run's name, shown in the notice.
        kfp_host: KFP API address, on a cluster; empty: the in-cluster ml-pipeline service.
        namespace: Namespace of the run's pods and profile; empty: the pod's own.
        local_final_status: Set by kfp-ct's local runner, which runs this task after a
            failed body (kfp.local cannot): the failed task, its error and log lines.
            Leave it empty.

    Returns:
        notice: notice.json: the body's outcome as seen here, whether the failure was
            announced, and the delivery record (target, attempts, HTTP status, error;
            never the webhook URL or token).
    """
    from kfp_ct.components.common.artifacts import stamp_outputs
    from kfp_ct.components.notify.logic import announce, summary_line

    record = announce(notify_json=notify, settings_json=settings, pipeline=pipeline,
                      run_id=run_id, run_name=run_name, kfp_host=kfp_host,
                      namespace=namespace, local_final_status=local_final_status,
                      notice_dir=notice.path)
    delivery = record.get("delivery") or {}
    notice.metadata.update({"state": record["state"], "announced": record["announced"],
                            "delivered": bool(delivery.get("delivered")),
                            "target": delivery.get("target", "")})
    stamp_outputs("announce_failure", notice=notice)
    print(summary_line(record), flush=True)
