"""A pushed version behind a KServe InferenceService (``serving.kserve.io/v1beta1``).

The exact objects and calls (pure parts first, then :class:`InferenceServices`, the API
through the ``kubernetes`` client that kfp already depends on, as components/train/tfjob.py
does for TFJobs). The ``kserve`` SDK is not used: what it would add here is typed models
of the same JSON and a ``wait_isvc_ready`` that polls one condition; the rollout needs
the revision names, the traffic split and the failing condition, which are plain fields
of the custom object either way.

What KServe expects at ``storageUri`` (read in kserve/kserve: the storage initializer,
``python/storage/kserve_storage/kserve_storage.py`` ``_download_gcs``, and the TF Serving
runtime, ``config/runtimes/kserve-tensorflow-serving.yaml``):

- the storage initializer copies every object under the URI's prefix into
  ``/mnt/models``, keeping paths *relative to the URI* (``<uri>/a/b`` lands at
  ``/mnt/models/a/b``);
- the runtime starts ``tensorflow_model_server --model_name=<isvc name>
  --model_base_path=/mnt/models``, which serves numbered version folders under it.

So the URI of a model base copies every version and every audit file, and the URI of one
version (``<base>/3``) lands ``saved_model.pb`` directly in ``/mnt/models``, where TF
Serving finds no version at all. A rollout therefore points KServe at a folder holding one
numbered folder: ``<base>/kfp_ct_serving/3/`` holding ``3/`` (the version's model files,
copied and checked against its manifest: registry.SERVING_DIR). One version is copied.

Canary: ``spec.predictor.canaryTrafficPercent`` (Serverless mode; KServe before 0.20 has no
canary in RawDeployment mode). With the annotation ``serving.kserve.io/enable-tag-routing``
the canary revision gets its own URL (traffic entry tagged ``latest``), which the judge
calls. No kfp and no TensorFlow here.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping

from kfp_ct.components.common.errors import KfpCtError
from kfp_ct.components.common.kube import NamespacedObjects

GROUP, VERSION, PLURAL, KIND = "serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService"
TAG_ROUTING = "serving.kserve.io/enable-tag-routing"
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
VERSION_ANNOTATION = "kfp-ct/version"          # the version the spec names
BASE_ANNOTATION = "kfp-ct/model-base"
ATTEMPT_ANNOTATION = "kfp-ct/rollout-attempt"  # on the predictor's pods: one per rollout
ISVC_LABEL = "serving.kserve.io/inferenceservice"  # on the predictor's pods
REVISION_LABEL = "serving.knative.dev/revision"
CONTAINER = "kserve-container"
INIT_CONTAINER = "storage-initializer"
MODEL_FORMAT = "tensorflow"
LOG_LINES = 20
RBAC_HINT = "the task's service account needs the Role in components/rollout/README.md"
# Condition reasons after which a revision will not become ready by waiting (Knative's
# RevisionMissing is not one: it is said while a new revision is still being created).
TERMINAL_REASONS = frozenset({"RevisionFailed", "ContainerMissing", "ModelLoadFailed",
                              "InvalidSpec", "ServerlessModeRejected"})


class RolloutError(KfpCtError):
    """The InferenceService cannot be read or changed, or it did not become ready."""


# ------------------------------------------------------------------ pure parts

def serving_uri(base: str, version: int) -> str:
    """The storageUri of ``version``: a folder holding one numbered folder (see above)."""
    from kfp_ct.components.common import registry, storage

    return storage.join(base, registry.SERVING_DIR, str(int(version)))


def manifest(name: str, namespace: str, storage_uri: str, version: int, base: str,
             service_account: str = "", runtime: str = "",
             resources: Mapping[str, Mapping[str, str]] | None = None) -> dict:
    """The InferenceService of a first deploy: ``version`` takes all traffic."""
    model: dict = {"modelFormat": {"name": MODEL_FORMAT}, "storageUri": storage_uri}
    if runtime:
        model["runtime"] = runtime
    if resources:
        model["resources"] = {k: dict(v) for k, v in sorted(resources.items()) if v}
    predictor: dict = {"model": model}
    if service_account:
        predictor["serviceAccountName"] = service_account
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/managed-by": "kfp-ct"},
                     "annotations": {TAG_ROUTING: "true", VERSION_ANNOTATION: str(version),
                                     BASE_ANNOTATION: base}},
        "spec": {"predictor": predictor},
    }


def canary_patch(storage_uri: str, version: int, percent: int, attempt: str,
                 service_account: str = "", runtime: str = "",
                 resources: Mapping | None = None) -> dict:
    """The merge patch that makes ``version`` a canary taking ``percent`` of the traffic.

    ``attempt`` (new for each rollout) goes into the predictor's pod annotations: a
    change of the pod template is what makes Knative create a revision, so a rollout of
    the same version after a failed one gets a fresh revision instead of the failed one."""
    model: dict = {"modelFormat": {"name": MODEL_FORMAT}, "storageUri": storage_uri}
    if runtime:
        model["runtime"] = runtime
    if resources:
        model["resources"] = {k: dict(v) for k, v in sorted(resources.items()) if v}
    predictor: dict = {"canaryTrafficPercent": int(percent), "model": model,
                       "annotations": {ATTEMPT_ANNOTATION: attempt}}
    if service_account:
        predictor["serviceAccountName"] = service_account
    return {"metadata": {"annotations": {TAG_ROUTING: "true",
                                         VERSION_ANNOTATION: str(version)}},
            "spec": {"predictor": predictor}}


PROMOTE_PATCH = {"spec": {"predictor": {"canaryTrafficPercent": None}}}  # merge patch: removed
ROLLBACK_PATCH = {"spec": {"predictor": {"canaryTrafficPercent": 0}}}


def predictor_status(isvc: Mapping) -> dict:
    return dict(((isvc.get("status") or {}).get("components") or {}).get("predictor") or {})


def served_version(isvc: Mapping | None) -> int | None:
    """The version the spec names (our annotation), None for one we did not write."""
    raw = ((isvc or {}).get("metadata") or {}).get("annotations", {}).get(VERSION_ANNOTATION)
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def storage_uri_of(isvc: Mapping | None) -> str:
    return str((((isvc or {}).get("spec") or {}).get("predictor") or {})
               .get("model", {}).get("storageUri", ""))


def conditions(isvc: Mapping) -> dict[str, dict]:
    return {c.get("type", ""): c for c in (isvc.get("status") or {}).get("conditions") or []}


def not_ready(isvc: Mapping) -> list[str]:
    """The conditions that are not True, as "Type: Reason: message" lines."""
    out = []
    for kind, cond in sorted(conditions(isvc).items()):
        if str(cond.get("status")) != "True":
            out.append(": ".join(p for p in (kind, cond.get("reason", ""),
                                              cond.get("message", "")) if p))
    return out


def failure(isvc: Mapping) -> str:
    """Why the new revision will not become ready by waiting, or ""."""
    model = (isvc.get("status") or {}).get("modelStatus") or {}
    info = model.get("lastFailureInfo") or {}
    if model.get("transitionStatus") == "BlockedByFailedLoad" or info:
        detail = ": ".join(p for p in (info.get("reason", ""), info.get("message", "")) if p)
        return f"the model failed to load ({detail or model.get('transitionStatus')})"
    for kind, cond in sorted(conditions(isvc).items()):
        if str(cond.get("status")) == "False" and cond.get("reason") in TERMINAL_REASONS:
            return f"{kind}: {cond.get('reason')}: {cond.get('message', '')}".rstrip(": ")
    return ""


def traffic(isvc: Mapping) -> list[dict]:
    return [dict(t) for t in predictor_status(isvc).get("traffic") or []]


def canary_entry(isvc: Mapping) -> dict:
    """The traffic entry of the latest revision (the canary while one is running)."""
    return next((t for t in traffic(isvc) if t.get("latestRevision")), {})


def ready_after(isvc: Mapping, generation: int, before: str) -> bool:
    """The spec of ``generation`` is served: observed, Ready, and its revision (a new
    one, not ``before``) is the latest ready one."""
    status = isvc.get("status") or {}
    pred = predictor_status(isvc)
    created = pred.get("latestCreatedRevision", "")
    return (int(status.get("observedGeneration") or 0) >= generation
            and str(conditions(isvc).get("Ready", {}).get("status")) == "True"
            and bool(created) and created != before
            and pred.get("latestReadyRevision") == created)


def latest_percent(isvc: Mapping) -> int | None:
    entry = canary_entry(isvc)
    return None if not entry else int(entry.get("percent") or 0)


def deployment_mode(isvc: Mapping) -> str:
    meta = (isvc.get("metadata") or {}).get("annotations") or {}
    return str(meta.get(DEPLOYMENT_MODE) or (isvc.get("status") or {}).get("deploymentMode")
               or "Serverless")


# ------------------------------------------------------------------ the API

class InferenceServices(NamespacedObjects):
    """InferenceServices of one namespace, and their pods' logs."""

    GROUP, VERSION, PLURAL, KIND = GROUP, VERSION, PLURAL, KIND
    ERROR = RolloutError
    HINTS = {401: f" ({RBAC_HINT})", 403: f" ({RBAC_HINT})"}
    CREATE_404_HINT = " (is KServe installed in this cluster?)"
    WHO = "the rollout task"

    def patch(self, name: str, body: Mapping, action: str = "patch") -> dict:
        """A merge patch (the client sends a dict body as application/merge-patch+json)."""
        with self._errors(action, name):
            return self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, dict(body))

    def pods(self, name: str, revision: str = "") -> list[dict]:
        return self.pods_by(name, f"{REVISION_LABEL}={revision}" if revision
                            else f"{ISVC_LABEL}={name}")

    def log_tail(self, pod: str, container: str, lines: int = LOG_LINES) -> str:
        return self.container_log(pod, container, lines)

    def pod_report(self, name: str, revision: str = "") -> str:
        """Each predictor pod's state and the last log lines of its containers that did
        not start or that ended: the storage initializer (a model it cannot copy) and the
        model server (a model it cannot load)."""
        pods = self.pods(name, revision)
        if not pods:
            return "no predictor pod found" + (f" for revision {revision}" if revision else "")
        parts = []
        for pod in sorted(pods, key=lambda p: p.get("metadata", {}).get("name", ""))[:2]:
            pname = pod.get("metadata", {}).get("name", "")
            status = pod.get("status") or {}
            parts.append(f"pod {pname}: {status.get('phase', '?')}")
            for kind, container in (("initContainerStatuses", INIT_CONTAINER),
                                    ("containerStatuses", CONTAINER)):
                for cs in status.get(kind) or []:
                    if cs.get("name") != container or cs.get("ready"):
                        continue
                    state = cs.get("state") or {}
                    why = (state.get("waiting") or state.get("terminated") or {})
                    reason = why.get("reason", "")
                    tail = self.log_tail(pname, container)
                    parts.append(f"  {container}: {reason or 'not ready'}; last log lines:\n"
                                 + "\n".join(f"  | {line}"
                                             for line in tail.splitlines()[-LOG_LINES:]))
        return "\n".join(parts)

    def wait(self, name: str, done: Callable[[dict], bool], what: str, timeout_s: float,
             poll_s: float, revision_of: Callable[[dict], str] = lambda isvc: "") -> dict:
        """Polls until ``done(isvc)``; raises RolloutError on a terminal failure or at
        ``timeout_s``, with the conditions that are not true and the pods' log tails."""
        started = time.monotonic()
        seen = None
        while True:
            isvc = self.get(name)
            if isvc is None:
                raise RolloutError(f"{self.where(name)} disappeared while waiting for {what} "
                                   "(deleted by someone else?)")
            if done(isvc):
                return isvc
            state = "; ".join(not_ready(isvc)) or "waiting"
            if state != seen:
                self.log(f"[rollout] {self.where(name)}: {state}")
                seen = state
            broken = failure(isvc)
            elapsed = time.monotonic() - started
            if broken or elapsed > timeout_s:
                why = broken or (f"not {what} within {timeout_s:.0f} s; conditions not true: "
                                 + ("; ".join(not_ready(isvc)) or "none"))
                raise RolloutError(f"{self.where(name)}: {why}\n"
                                   + self.pod_report(name, revision_of(isvc)))
            time.sleep(poll_s)
