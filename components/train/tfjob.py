"""Training on several workers on a cluster: a TFJob of the Kubeflow Training Operator (v1).

The train task of the "multiworker" pipeline variant is a small launcher: it builds a
TFJob (apiVersion ``kubeflow.org/v1``, kind ``TFJob``) whose replicas each run the
worker entry point (components/train/worker.py), submits it, waits for it, and reads the
chief's metrics. The operator gives every replica its ``TF_CONFIG``; training is
MultiWorkerMirroredStrategy (strategy.py); the chief writes the model straight to the
model artifact's URI, which is why that URI must be ``gs://`` (every replica runs in a
pod of its own and sees nothing of the launcher's disk).

- Replicas: ``Worker`` x N (worker 0 is the chief), container ``tensorflow`` (the name
  the operator looks for), ``restartPolicy: OnFailure`` (a failed or preempted replica
  is restarted and resumes from the durable checkpoints), resources per replica.
- The TFJob belongs to the launcher pod (``ownerReferences``, from the downward API
  env ``KFP_CT_POD_NAME`` / ``KFP_CT_POD_UID``), so it is deleted with that pod; the
  launcher also deletes it on SIGTERM (the pod's deadline, a cancelled run) and when
  its own wait times out. A failed TFJob is kept for inspection (and replaced by the
  next attempt of the task, which has the same name).
- Waiting: ``status.conditions`` (Created, Running, Restarting, Succeeded, Failed);
  Failed raises :class:`TFJobError` quoting the failing replica's reason and the last
  lines of its log.
- RBAC the launcher's service account needs (pipelines/CLUSTER.md): ``tfjobs`` create/get/list/watch/
  delete in ``kubeflow.org``; ``pods`` get/list; ``pods/log`` get.

No kfp and no TensorFlow here; the ``kubernetes`` client is imported when used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from typing import Callable, Mapping, Sequence

from kfp_ct.components.common import storage
from kfp_ct.components.common.processes import sigterm_raises
from kfp_ct.components.common.kube import (  # noqa: F401  (tfjob.api_client in tests)
    SA_NAMESPACE_FILE,
    NamespacedObjects,
    api_client,
    namespace_of,
)
from kfp_ct.components.common.errors import KfpCtError, TrainingError
from kfp_ct.components.train.worker import METRICS_SUFFIX

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "tfjobs", "TFJob"
CONTAINER = "tensorflow"
REPLICA = "Worker"
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
POD_NAME_ENV, POD_UID_ENV = "KFP_CT_POD_NAME", "KFP_CT_POD_UID"
# What the KFP v2 backend itself sets in a task's container, used when ours are absent.
KFP_POD_NAME_ENV, KFP_POD_UID_ENV = "KFP_POD_NAME", "KFP_POD_UID"
WORKER_MODULE = "kfp_ct.components.train.worker"
LOG_LINES = 20
FINAL = ("Succeeded", "Failed")
_NAME_RE = re.compile(r"[^a-z0-9-]+")


class TFJobError(TrainingError):
    """The TFJob failed, timed out, or could not be submitted; the message says which."""


class Terminated(BaseException):
    """SIGTERM arrived while waiting (the pod is being stopped); a BaseException, so no
    ``except Exception`` on the way takes it for another error (processes.sigterm_raises)."""


# ------------------------------------------------------------------ pure parts

def job_name(run_id: str, prefix: str = "kfp-ct-train") -> str:
    """A TFJob name for this run: the same for every retry of the task (a retry replaces
    the previous attempt's TFJob), a valid DNS label with room for the operator's
    ``-worker-<i>`` suffixes."""
    digest = hashlib.sha256((run_id or "").encode()).hexdigest()[:10]
    readable = _NAME_RE.sub("-", (run_id or "").lower()).strip("-")[:20].strip("-")
    return "-".join(p for p in (prefix, readable, digest) if p)


def check_gcs(uris: Mapping[str, str]) -> None:
    """Every URI the replicas read or write must be gs://.

    Raises:
        KfpCtError: naming the artifact, its URI and the pipeline root to use.
    """
    bad = {name: uri for name, uri in uris.items() if not storage.is_gcs(uri)}
    if bad:
        listed = ", ".join(f"{name} = {uri!r}" for name, uri in sorted(bad.items()))
        raise KfpCtError(
            f"multi-worker training needs gs:// artifacts, got {listed}: the TFJob's "
            "replicas run in pods of their own and read and write the artifacts "
            "directly. Run the pipeline with a gs:// pipeline root (kfp.Client("
            "...).create_run_from_pipeline_package(..., pipeline_root='gs://BUCKET/"
            "pipeline-root'), or the default pipeline root of the KFP deployment).")


def worker_args(transform_graph: str, examples: str, problem: str, model: str,
                train_steps: int, accelerator: str, seed: int, checkpoint_dir: str = "",
                checkpoint_root: str = "", push_destination: str = "",
                run_id: str = "") -> list[str]:
    """The command line of every replica (components/train/worker.py)."""
    args = ["python", "-m", WORKER_MODULE, "--transform-graph", transform_graph,
            "--examples", examples, "--problem", problem, "--model", model,
            "--train-steps", str(train_steps), "--accelerator", accelerator,
            "--seed", str(seed)]
    for flag, value in (("--checkpoint-dir", checkpoint_dir),
                        ("--checkpoint-root", checkpoint_root),
                        ("--push-destination", push_destination), ("--run-id", run_id)):
        if value:
            args += [flag, value]
    return args


def owner_reference(environ: Mapping[str, str] | None = None) -> dict | None:
    """The launcher pod as the TFJob's owner, when the downward API named it."""
    env = os.environ if environ is None else environ
    name = env.get(POD_NAME_ENV) or env.get(KFP_POD_NAME_ENV, "")
    uid = env.get(POD_UID_ENV) or env.get(KFP_POD_UID_ENV, "")
    if not (name and uid):
        return None
    return {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid,
            "controller": False, "blockOwnerDeletion": False}


def build_manifest(name: str, namespace: str, image: str, command: Sequence[str],
                   workers: int, resources: Mapping[str, Mapping[str, str]],
                   owner: Mapping[str, str] | None = None,
                   env: Mapping[str, str] | None = None, service_account: str = "",
                   key_secret: str = "", key_mount: str = "/var/secrets/kfp-ct-gcp",
                   backoff_limit: int = 3, active_deadline_s: int = 0,
                   labels: Mapping[str, str] | None = None) -> dict:
    """The TFJob: ``workers`` replicas of ``command`` in ``image``.

    Args:
        resources: per replica, ``{"requests": {...}, "limits": {...}}`` (Kubernetes
            quantities, e.g. ``nvidia.com/gpu`` in limits).
        owner: an ownerReference (owner_reference()); None: no owner.
        key_secret: a Secret with ``key.json`` mounted at ``key_mount`` and named in
            GOOGLE_APPLICATION_CREDENTIALS; empty: workload identity.
        backoff_limit: restarts of failed replicas before the TFJob is Failed.
        active_deadline_s: the TFJob's own deadline; 0: none.
    """
    if workers < 1:
        raise KfpCtError(f"a TFJob needs at least 1 worker, got {workers}")
    environment = dict(env or {})
    container = {"name": CONTAINER, "image": image, "command": list(command),
                 "resources": {k: dict(v) for k, v in sorted(resources.items()) if v}}
    pod_spec: dict = {"containers": [container]}
    if key_secret:
        environment["GOOGLE_APPLICATION_CREDENTIALS"] = f"{key_mount}/key.json"
        container["volumeMounts"] = [{"name": "gcp-key", "mountPath": key_mount,
                                      "readOnly": True}]
        pod_spec["volumes"] = [{"name": "gcp-key", "secret": {"secretName": key_secret}}]
    if environment:
        container["env"] = [{"name": k, "value": v} for k, v in sorted(environment.items())]
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    metadata: dict = {"name": name, "namespace": namespace,
                      "labels": {"app.kubernetes.io/part-of": "kfp-ct", **(labels or {})}}
    if owner:
        metadata["ownerReferences"] = [dict(owner)]
    run_policy: dict = {"cleanPodPolicy": "Running", "backoffLimit": backoff_limit}
    if active_deadline_s:
        run_policy["activeDeadlineSeconds"] = active_deadline_s
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": metadata,
        "spec": {"runPolicy": run_policy, "tfReplicaSpecs": {REPLICA: {
            "replicas": workers, "restartPolicy": "OnFailure",
            "template": {"spec": pod_spec}}}},
    }


def replica_resources(cpu_request: str, cpu_limit: str, memory_request: str,
                      memory_limit: str, scratch: str = "", gpus: int = 0) -> dict:
    """Requests and limits of one replica (``nvidia.com/gpu`` when ``gpus``)."""
    requests = {"cpu": cpu_request, "memory": memory_request}
    limits = {"cpu": cpu_limit, "memory": memory_limit}
    if scratch:
        limits["ephemeral-storage"] = scratch
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    return {"requests": requests, "limits": limits}


def job_state(tfjob: Mapping) -> tuple[str, Mapping]:
    """(state, its condition): Succeeded or Failed once either is true, else the newest
    true condition (Created, Running, Restarting); ("", {}) before the operator saw it."""
    conditions = [c for c in (tfjob.get("status") or {}).get("conditions") or []
                  if str(c.get("status")) == "True"]
    for final in FINAL:
        for cond in conditions:
            if cond.get("type") == final:
                return final, cond
    return (conditions[-1].get("type", ""), conditions[-1]) if conditions else ("", {})


def failing_replicas(pods: Sequence[Mapping]) -> list[dict]:
    """The replicas whose ``tensorflow`` container ended in error (now or before its last
    restart): [{"pod", "reason", "exit_code", "previous"}], by pod name."""
    found = []
    for pod in sorted(pods, key=lambda p: p.get("metadata", {}).get("name", "")):
        name = pod.get("metadata", {}).get("name", "")
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") != CONTAINER:
                continue
            for key, previous in (("state", False), ("lastState", True)):
                ended = (status.get(key) or {}).get("terminated") or {}
                if ended and ended.get("exitCode", 0) != 0:
                    found.append({"pod": name, "reason": ended.get("reason") or "Error",
                                  "exit_code": ended.get("exitCode"), "previous": previous,
                                  "message": ended.get("message", "")})
                    break
        if not found or found[-1]["pod"] != name:
            if (pod.get("status") or {}).get("phase") == "Failed":
                found.append({"pod": name, "previous": False, "exit_code": None,
                              "reason": (pod.get("status") or {}).get("reason") or "Failed",
                              "message": (pod.get("status") or {}).get("message", "")})
    return found


# ------------------------------------------------------------------ the API

class TFJobs(NamespacedObjects):
    """TFJobs of one namespace, and their pods' logs, through the kubernetes client."""

    GROUP, VERSION, PLURAL, KIND = GROUP, VERSION, PLURAL, KIND
    ERROR = TFJobError
    HINTS = {403: " (the launcher's service account needs the RBAC in pipelines/CLUSTER.md "
                  "of kfp-ct)"}
    CREATE_404_HINT = " (is the Kubeflow Training Operator installed?)"
    WHO = "the TFJob launcher"

    def delete(self, name: str, body=None) -> bool:
        """Deletes the TFJob and (in the background) its pods; False when it was gone."""
        from kubernetes import client as k8s

        return super().delete(name, body or k8s.V1DeleteOptions(propagation_policy="Background"))

    def create(self, manifest: Mapping, replace_timeout_s: float = 300,
               poll_s: float = 2) -> dict:
        """Submits the TFJob; one left by an earlier attempt of the task (same name) is
        deleted first (training resumes from the durable checkpoints)."""
        from kubernetes.client.exceptions import ApiException

        name = manifest["metadata"]["name"]
        try:
            return self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, dict(manifest))
        except ApiException as exc:
            if exc.status != 409:
                with self._errors("create", name):
                    raise
        self.log(f"[tfjob] {self.where(name)} exists (an earlier attempt): replacing it")
        self.delete(name)
        deadline = time.monotonic() + replace_timeout_s
        while self.get(name) is not None:
            if time.monotonic() > deadline:
                raise TFJobError(f"{self.where(name)} from an earlier attempt was not gone "
                                 f"{replace_timeout_s:.0f} s after deleting it")
            time.sleep(poll_s)
        with self._errors("create", name):
            return self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, dict(manifest))

    def pods(self, name: str) -> list[dict]:
        return self.pods_by(name, f"{JOB_NAME_LABEL}={name}")

    def log_tail(self, pod: str, previous: bool, lines: int = LOG_LINES) -> str:
        return self.container_log(pod, CONTAINER, lines, previous)

    def failure_report(self, name: str, condition: Mapping) -> str:
        """Why the TFJob failed: its condition, then each failing replica's reason and
        the last lines of its log."""
        text = (f"{self.where(name)} failed: {condition.get('reason', 'Failed')}: "
                f"{condition.get('message', '')}".rstrip(": "))
        replicas = failing_replicas(self.pods(name))
        if not replicas:
            return text + " (no failed replica found; its pods may have been deleted)"
        for rep in replicas[:2]:
            code = "" if rep["exit_code"] is None else f", exit code {rep['exit_code']}"
            when = " before its last restart" if rep["previous"] else ""
            tail = self.log_tail(rep["pod"], rep["previous"])
            text += (f"\nreplica {rep['pod']}: {rep['reason']}{code}{when}; last log lines:\n"
                     + "\n".join(f"  | {line}" for line in tail.splitlines()[-LOG_LINES:]))
        return text


def run_tfjob(jobs: TFJobs, manifest: Mapping, timeout_s: float, poll_s: float = 15,
              log: Callable[[str], None] = print) -> dict:
    """Submits the TFJob and waits until it succeeds; returns its last state.

    Raises:
        TFJobError: it failed (with the failing replica's reason and log tail), or it
            did not finish within ``timeout_s`` (it is deleted).
        Terminated: SIGTERM arrived (it is deleted).
    """
    name = manifest["metadata"]["name"]
    where = f"TFJob {jobs.namespace}/{name}"
    started = time.monotonic()
    created = finished = False
    with sigterm_raises(Terminated):
        try:
            jobs.create(manifest)
            created = True
            replicas = manifest["spec"]["tfReplicaSpecs"][REPLICA]["replicas"]
            log(f"[tfjob] submitted {where}: {replicas} worker(s)")
            seen = None
            while True:
                current = jobs.get(name)
                if current is None:
                    raise TFJobError(f"{where} disappeared while it was being waited for "
                                     "(deleted by someone else?)")
                state, condition = job_state(current)
                if state != seen:
                    log(f"[tfjob] {where}: {state or 'submitted'}"
                        + (f" ({condition.get('reason')})" if condition.get("reason") else ""))
                    seen = state
                if state == "Succeeded":
                    finished = True
                    return current
                if state == "Failed":
                    finished = True  # kept, for whoever looks into it
                    raise TFJobError(jobs.failure_report(name, condition))
                if time.monotonic() - started > timeout_s:
                    raise TFJobError(f"{where} did not finish within {timeout_s:.0f} s "
                                     f"(last state: {state or 'submitted'}); it was deleted")
                time.sleep(poll_s)
        finally:
            if created and not finished:
                with contextlib.suppress(Exception):
                    if jobs.delete(name):
                        log(f"[tfjob] deleted {where}")


def launch(model_uri: str, transform_graph_uri: str, examples_uri: str, problem: str,
           workers: int, image: str, resources: Mapping, train_steps: int = 300,
           accelerator: str = "auto", seed: int = 42, checkpoint_dir: str = "",
           checkpoint_root: str = "", push_destination: str = "", run_id: str = "",
           namespace: str = "", service_account: str = "", key_secret: str = "",
           timeout_s: float = 4 * 3600, poll_s: float = 15, client=None,
           environ: Mapping[str, str] | None = None,
           log: Callable[[str], None] = print) -> dict:
    """Trains on ``workers`` replicas of a TFJob; returns the chief's metrics.

    Raises:
        KfpCtError: a non-gs:// artifact, no namespace; TFJobError: the TFJob failed or
            timed out, or the chief left no metrics.
    """
    check_gcs({"model": model_uri, "transform_graph": transform_graph_uri,
               "transformed_examples": examples_uri})
    for name, value in (("checkpoint_dir", checkpoint_dir),
                        ("checkpoint_root", checkpoint_root)):
        if value and not storage.is_gcs(value):
            raise KfpCtError(f"{name} {value!r} is not gs://: the replicas of a TFJob share "
                             "nothing but object storage")
    ns = namespace_of(namespace)
    command = worker_args(transform_graph_uri, examples_uri, problem, model_uri, train_steps,
                          accelerator, seed, checkpoint_dir, checkpoint_root, push_destination,
                          run_id)
    manifest = build_manifest(job_name(run_id), ns, image, command, workers, resources,
                              owner=owner_reference(environ), service_account=service_account,
                              key_secret=key_secret, env={"TF_CPP_MIN_LOG_LEVEL": "2"})
    jobs = TFJobs(ns, client=client, log=log)
    run_tfjob(jobs, manifest, timeout_s=timeout_s, poll_s=poll_s, log=log)
    metrics_uri = model_uri.rstrip("/") + METRICS_SUFFIX
    try:
        return json.loads(storage.read_text(metrics_uri))
    except (KfpCtError, ValueError) as exc:
        raise TFJobError(f"TFJob {ns}/{manifest['metadata']['name']} succeeded but the chief "
                         f"left no readable metrics at {metrics_uri}: {exc}") from None
