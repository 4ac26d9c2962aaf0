"""The failed-run notice around a pipeline's body: ``with failure_notice(...):``.

A ``dsl.ExitHandler`` whose exit task is components/notify's ``announce_failure``: on a
cluster KFP runs it after the body whatever the outcome; kfp.local 2.13 runs it only
after a body that succeeded, and kfp-ct's local runner (pipelines/entrypoints/local.py)
runs it after a failed one. So the one compiled graph announces a failed run in all
three places (components/notify/README.md).

The body's tasks move into the handler's group (task and component ``exit-handler-1`` in
the compiled YAML); the exit task (``announce-failure``) stays in the root DAG.
"""

# No `from __future__ import annotations` here: kfp reads signatures at runtime.

from kfp import dsl

from kfp_ct.components.notify.component import announce_failure
from kfp_ct.pipelines import cluster


def failure_notice(pipeline: str, settings: cluster.Settings = cluster.DEFAULT, notify="",
                   drift_settings="", kfp_host="", namespace="") -> dsl.ExitHandler:
    """The exit handler to put a pipeline's body in (call it inside the pipeline).

    Args:
        pipeline: The pipeline's name, shown in the notice.
        settings: Cluster settings (resources and timeout of ``announce_failure``).
        notify: The notification target JSON (the training pipeline's ``notify``).
        drift_settings: Settings JSON with a ``notify`` key (the monitoring pipeline's).
        kfp_host, namespace: Where the task reads its run on a cluster ("": in-cluster,
            the pod's own namespace).
    """
    notice = announce_failure(notify=notify, settings=drift_settings, pipeline=pipeline,
                              run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                              run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                              kfp_host=kfp_host, namespace=namespace)
    # No display names of our own here: the Kubeflow UI 2.5 matches a run's graph to its ML
    # Metadata by task name in one place and by display name in another, so a group or a
    # task shown under another name loses its state there (the group cannot be opened, the
    # notice artifact stays grey), on a cluster as on the local endpoint.
    # Uncached (cluster.UNCACHED), no retries: it retries its delivery itself.
    cluster.configure(notice, "announce_failure", settings)
    return dsl.ExitHandler(notice)
