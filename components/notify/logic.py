"""The failed-run notice: the exit task of the training and monitoring pipelines.

The task runs after the pipeline's body whatever its outcome (KFP's ``dsl.ExitHandler``)
and announces a failed run to the notification target (components/common/notify.py)
with the failing task and the last lines of its log. How it learns the outcome depends
on where it runs; the compiled graph is the same everywhere:

* **kfp-ct's local runner** (``kfp-ct run-local`` / ``monitor-local`` and the local
  endpoint: pipelines/entrypoints/local.py). kfp.local 2.13 runs the exit task only after
  a body that succeeded (it stops at the first failed task). After a failed body the
  runner runs this same exit task itself and passes the outcome it saw (the failed task,
  its error, its log's last lines) as ``local_final_status``.
* **a cluster** (KFP backend 2.5 runs the exit task as an Argo exit hook).
  ``dsl.PipelineTaskFinalStatus`` is refused there ("task final status not supported
  yet", backend/src/v2/compiler/argocompiler/dag.go at 2.5.0), so the task reads its own
  run from the KFP API (the body's group, ``exit-handler-N``, and the failed tasks in
  ``run_details.task_details``) and the failed pod's log from the Kubernetes API
  (pods labelled ``pipeline/runid=<run id>``, container ``main``).
  (It knows it is on a cluster by ``$KFP_POD_NAME``, which the backend sets in every
  task pod, and a backend run id.)
* **plain kfp.local** (not our runner): the task runs only after a successful body, so
  it has nothing to announce.

Nothing here raises: a notice never fails the run. Whatever happened is returned (and
written to ``notice.json``).
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any, Callable, Optional

from kfp_ct.components.common import notify
from kfp_ct.components.common.artifacts import NOTICE_JSON
#: Set by the KFP backend in every task pod (the pod's name); kfp.local sets none.
IN_CLUSTER_ENV = "KFP_POD_NAME"
#: A KFP backend run id; kfp.local's is a short random number.
_RUN_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
#: The KFP compiler's name of the task group that ``dsl.ExitHandler`` wraps.
EXIT_GROUP_PREFIX = "exit-handler"
#: Argo / KFP nodes that are structure, not a task of the pipeline.
_STRUCTURAL = ("root", "root-driver", "driver", "executor")
_TERMINAL = ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")
CLUSTER_WAIT_S = 30.0
CLUSTER_POLL_S = 3.0


def on_cluster(run_id: str) -> bool:
    """Whether this task runs on a KFP backend: its pod has ``$KFP_POD_NAME`` and the
    run id is a backend's UUID (kfp.local inside a pod, e.g. a notebook's, inherits the
    variable but has a short numeric run id)."""
    return bool(os.environ.get(IN_CLUSTER_ENV)) and bool(_RUN_UUID.match(run_id or ""))


def target_of(notify_json: str, settings_json: str) -> tuple:
    """(NotifyConfig or None, error text): ``notify_json`` (the training pipeline's
    ``notify``), else the ``notify`` key of ``settings_json`` (the monitoring settings).
    A bad config is returned as an error, not raised."""
    try:
        if (notify_json or "").strip():
            return notify.parse_config(notify_json), ""
        if (settings_json or "").strip():
            settings = json.loads(settings_json)
            if isinstance(settings, dict) and settings.get("notify"):
                return notify.parse_config(settings["notify"]), ""
    except Exception as exc:  # noqa: BLE001  (recorded: a notice never fails the run)
        return None, str(exc)
    return None, ""


def local_outcome(text: str) -> dict:
    """The outcome kfp-ct's local runner passed (``local_final_status``)."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return {"state": "UNKNOWN", "where": "local",
                "note": f"local_final_status is not a JSON object: {text[:80]!r}"}
    return {"state": str(data.get("state") or "UNKNOWN"),
            "failed_task": str(data.get("failed_task") or ""),
            "error": str(data.get("error") or ""),
            "log_tail": [str(x) for x in data.get("log_tail") or []],
            "where": str(data.get("where") or "local")}


def _task_rows(run: Any) -> list:
    """(display name, state, pod names) of each task of a V2beta1Run (model or dict)."""
    def get(obj, key):
        return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)

    details = get(get(run, "run_details") or {}, "task_details") or []
    rows = []
    for task in details:
        pods = [get(c, "pod_name") for c in (get(task, "child_tasks") or [])]
        rows.append((str(get(task, "display_name") or ""), str(get(task, "state") or ""),
                     [p for p in pods if p]))
    return rows


def _pipeline_task(name: str) -> bool:
    return bool(name) and name not in _STRUCTURAL and not name.startswith(
        EXIT_GROUP_PREFIX) and not name.endswith("-driver") and not name.startswith(
        "exit-hook")


def cluster_outcome(run_id: str, kfp_host: str = "", namespace: str = "",
                    get_run: Optional[Callable[[str], Any]] = None,
                    failed_pod_log: Optional[Callable[[str, str], tuple]] = None,
                    wait_s: float = CLUSTER_WAIT_S, poll_s: float = CLUSTER_POLL_S,
                    sleep: Callable[[float], None] = time.sleep) -> dict:
    """The outcome of the body of run ``run_id``, from the KFP API, on a cluster.

    Waits (up to ``wait_s``) until the API reports the body's group (``exit-handler-N``)
    finished: the persistence agent copies the workflow's state a moment after it
    changes.

    Args:
        run_id: This run's id.
        kfp_host, namespace: The KFP API (""; the in-cluster service, the pod's namespace).
        get_run: ``run_id -> V2beta1Run`` (default: kfp.Client through KfpConnection).
        failed_pod_log: ``(run_id, task) -> (pod, lines)`` (default: the Kubernetes API).
        wait_s, poll_s, sleep: How long and how often to ask.
    """
    out: dict = {"state": "UNKNOWN", "failed_task": "", "error": "", "log_tail": [],
                 "where": "cluster"}
    get_run = get_run or _kfp_get_run(kfp_host, namespace)
    deadline = time.monotonic() + wait_s
    rows: list = []
    while True:
        try:
            rows = _task_rows(get_run(run_id))
        except Exception as exc:  # noqa: BLE001
            out["note"] = f"cannot read run {run_id} from the KFP API: {exc}"
            return out
        groups = [state for name, state, _ in rows if name.startswith(EXIT_GROUP_PREFIX)]
        if groups and all(state in _TERMINAL for state in groups):
            break
        if time.monotonic() + poll_s > deadline:
            break
        sleep(poll_s)
    failed = [name for name, state, _ in rows if state == "FAILED" and _pipeline_task(name)]
    groups = [state for name, state, _ in rows if name.startswith(EXIT_GROUP_PREFIX)]
    if failed or "FAILED" in groups:
        out["state"] = "FAILED"
    elif groups and all(state in _TERMINAL for state in groups):
        out["state"] = "SUCCEEDED" if "SUCCEEDED" in groups else groups[0]
        return out
    else:
        out["note"] = (f"the KFP API did not report the body of run {run_id} finished "
                       f"within {wait_s:g} s; nothing failed by then")
        return out
    out["failed_task"] = failed[-1] if failed else ""
    try:
        pod, lines = (failed_pod_log or _pod_log_tail(namespace))(run_id, out["failed_task"])
        out["log_tail"] = lines
        out["pod"] = pod
    except Exception as exc:  # noqa: BLE001
        out["log_tail"] = [f"(no log: {exc}; kubectl logs -l pipeline/runid={run_id} "
                           f"-c main --tail={notify.LOG_TAIL_LINES})"]
    return out


def _kfp_get_run(kfp_host: str, namespace: str) -> Callable[[str], Any]:
    def get_run(run_id: str) -> Any:
        from kfp_ct.components.retrain.kfp_launcher import KfpConnection

        conn = KfpConnection(host=kfp_host, namespace=namespace)
        client = conn.connect()
        return conn.call(f"read run {run_id}", lambda: client.get_run(run_id))
    return get_run


def _pod_log_tail(namespace: str) -> Callable[[str, str], tuple]:
    """``(run_id, task) -> (pod, last lines)``: the newest Failed pod of the run (KFP
    labels each pod ``pipeline/runid``), preferring one whose Argo node names the task."""
    def read(run_id: str, task: str) -> tuple:
        from kfp_ct.components.common import kube

        ns = kube.namespace_of(namespace, what="the failed run's pods")
        from kubernetes import client as k8s

        core = k8s.CoreV1Api(kube.api_client(who="the failed-run notice"))
        pods = core.list_namespaced_pod(ns, label_selector=f"pipeline/runid={run_id}").items
        failed = [p for p in pods if (p.status and p.status.phase == "Failed")]
        if not failed:
            raise RuntimeError(f"no Failed pod labelled pipeline/runid={run_id} in {ns}")

        def node(p) -> str:
            return ((p.metadata.annotations or {}).get("workflows.argoproj.io/node-name")
                    or "")
        named = [p for p in failed if task and f".{task}" in node(p)]
        pod = (named or failed)[-1].metadata.name
        text = core.read_namespaced_pod_log(pod, ns, container="main",
                                            tail_lines=notify.LOG_TAIL_LINES)
        return pod, str(text or "").splitlines()
    return read


def announce(notify_json: str = "", settings_json: str = "", pipeline: str = "",
             run_id: str = "", run_name: str = "", kfp_host: str = "", namespace: str = "",
             local_final_status: str = "", notice_dir: str = "",
             outcome_of_cluster: Callable[..., dict] = cluster_outcome) -> dict:
    """Announces the run's failure when it failed; records what happened. Never raises.

    Args:
        notify_json: The target JSON (training's ``notify``); "" reads ``settings_json``.
        settings_json: Settings JSON with a ``notify`` key (monitoring's settings).
        pipeline: The pipeline's name; run_id / run_name: this run's.
        kfp_host, namespace: The KFP API, on a cluster ("": in-cluster, own namespace).
        local_final_status: Set by kfp-ct's local runner when the body failed.
        notice_dir: Where ``notice.json`` goes ("" : not written).
        outcome_of_cluster: Reads the outcome on a cluster (tests pass a double).

    Returns:
        ``{"state", "failed_task", "where", "announced", "delivery", "note"}``: the body's
        outcome as seen here, whether a notice was sent, and its delivery record.
    """
    cfg, config_error = target_of(notify_json, settings_json)
    try:
        if (local_final_status or "").strip():
            outcome = local_outcome(local_final_status)
        elif cfg is None:  # nothing to announce to: do not ask anyone about the run
            outcome = {"state": "UNKNOWN", "where": "", "note": "not looked up"}
        elif on_cluster(run_id):
            outcome = outcome_of_cluster(run_id, kfp_host=kfp_host, namespace=namespace)
        else:
            outcome = {"state": "SUCCEEDED", "where": "local",
                       "note": "kfp.local runs the exit task only after the body succeeded"}
    except Exception as exc:  # noqa: BLE001
        outcome = {"state": "UNKNOWN", "where": "", "note": f"outcome unknown: {exc}"}
    record: dict = {"state": outcome.get("state", "UNKNOWN"),
                    "failed_task": outcome.get("failed_task", ""),
                    "where": outcome.get("where", ""), "announced": False,
                    "delivery": None, "note": outcome.get("note", "")}
    if outcome.get("pod"):
        record["pod"] = outcome["pod"]
    if config_error:
        record["note"] = f"no notice: bad notification target: {config_error}"
    elif cfg is None:
        record["note"] = "no notification target configured"
    elif record["state"] == "FAILED":
        record["delivery"] = notify.announce_failed_run(
            cfg, pipeline, run_id, run_name, record["failed_task"],
            outcome.get("log_tail") or [], error=outcome.get("error", ""),
            where=record["where"])
        record["announced"] = bool(record["delivery"].get("delivered"))
    if notice_dir:
        try:
            os.makedirs(notice_dir, exist_ok=True)
            with open(os.path.join(notice_dir, NOTICE_JSON), "w") as fh:
                json.dump(record, fh, indent=1, sort_keys=True)
        except OSError as exc:
            record["note"] = (record["note"] + f"; notice.json not written: {exc}").lstrip("; ")
    return record


def summary_line(record: dict) -> str:
    """One line for the task's log."""
    delivery = record.get("delivery") or {}
    if delivery:
        if delivery.get("delivered"):
            return (f"[kfp-ct] failed run announced to {delivery.get('target')} "
                    f"(task {record.get('failed_task') or '?'}, "
                    f"{delivery.get('attempts')} attempt(s))")
        return (f"[kfp-ct] warning: the failed-run notice to {delivery.get('target')} was not "
                f"delivered: {delivery.get('error') or delivery.get('skipped')}")
    return f"[kfp-ct] run {record.get('state', 'UNKNOWN').lower()}; no notice sent" + (
        f" ({record['note']})" if record.get("note") else "")
