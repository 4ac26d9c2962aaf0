"""The rollout: a pushed version served as a canary, judged, then promoted or rolled back.

Two targets, one sequence (components/rollout/README.md):

- ``kserve``: a KServe InferenceService (kserve.py). First deploy: create it, wait until
  Ready, judge it; a failed first deploy is deleted (nothing served before, and a model
  that answers wrongly must not be served). Later: patch in the version as a canary
  revision with ``canary_percent`` of the traffic, wait until that revision is Ready,
  judge it at its own URL, optionally soak and judge again; pass: promote (the canary
  takes all traffic); fail, time out or SIGTERM: the canary's traffic goes to 0 and the
  previous revision keeps serving.
- ``tfserving``: a TF Serving server reading a model config file (labels.py): the
  ``canary`` label moves to the version, the judge calls ``/labels/canary``; pass: the
  ``stable`` label moves too; fail: ``canary`` goes back to ``stable``.

Every step is recorded in the registry (registry.record_rollout), so ``kfp-ct versions``
shows which version is served where, and the outcome in the task's artifact
(``rollout.json``, a ROLLED_OUT or NOT_ROLLED_OUT marker). A version push did not push
is not rolled out (the reason is recorded). No kfp here; TensorFlow only when judging a
version pushed before serving checks were recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Callable, Mapping

from kfp_ct.components.common import registry, storage
from kfp_ct.components.common.artifacts import NOT_ROLLED_OUT, ROLLED_OUT, ROLLOUT_JSON
from kfp_ct.components.common.errors import KfpCtError
from kfp_ct.components.common.kube import namespace_of
from kfp_ct.components.common.processes import sigterm_raises
from kfp_ct.components.rollout import judge as judging
from kfp_ct.components.rollout import kserve
from kfp_ct.components.rollout import labels

TARGETS = ("kserve", "tfserving")
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
MAX_NAME = 45  # KServe's limit on an InferenceService name (its webhook refuses longer)


class Interrupted(BaseException):
    """SIGTERM arrived (the task's deadline, a cancelled run). A BaseException, as
    KeyboardInterrupt is: the ``except Exception`` of a storage or HTTP call on the way
    must not turn it into that call's own error."""


@dataclasses.dataclass
class RolloutResult:
    rolled_out: bool
    state: str  # "promoted", "rolled_back", "removed", "unchanged", "skipped"
    target: str
    version: int | None
    previous: int | None
    reason: str
    verdict: dict | None = None
    storage_uri: str = ""
    records: list[int] = dataclasses.field(default_factory=list)

    def summary(self) -> dict:
        out = {"rolled_out": self.rolled_out, "state": self.state, "target": self.target,
               "reason": self.reason}
        for key in ("version", "previous"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.storage_uri:
            out["storage_uri"] = self.storage_uri
        return out


@dataclasses.dataclass(frozen=True)
class Policy:
    canary_percent: int = 10
    ready_timeout_s: float = 900
    soak_s: float = 0
    poll_s: float = 10

    def check(self) -> None:
        if not 1 <= int(self.canary_percent) <= 99:
            raise KfpCtError(f"canary_percent must be 1..99, got {self.canary_percent}: the "
                             "canary takes that share of the traffic while it is judged")
        for name in ("ready_timeout_s", "poll_s"):
            if not getattr(self, name) > 0:
                raise KfpCtError(f"{name} must be above 0, got {getattr(self, name)}")
        if self.soak_s < 0:
            raise KfpCtError(f"soak_s must be 0 or more, got {self.soak_s}")


def check_name(name: str) -> str:
    if not name or len(name) > MAX_NAME or not _DNS_1035.fullmatch(name):
        raise KfpCtError(f"InferenceService name {name!r} is not usable: lower-case letters, "
                         f"digits and '-', starting with a letter, at most {MAX_NAME} "
                         "characters (KServe's rule)")
    return name


def _pushed(meta: Mapping) -> tuple[int, str, str] | None:
    """(version, version URI, model base) of what push published; None if nothing."""
    if not meta.get("pushed"):
        return None
    try:
        version = int(meta["version"])
        return version, str(meta["uri"]), str(meta["destination"])
    except (KeyError, TypeError, ValueError):
        raise KfpCtError("the pushed model says it was pushed but names no version, uri and "
                         f"destination in its metadata: {dict(meta)}") from None


# ------------------------------------------------------------------------ KServe

def rollout_kserve(meta: Mapping, name: str, namespace: str = "", policy: Policy = Policy(),
                   service_account: str = "", runtime: str = "",
                   resources: Mapping | None = None, canary_url: str = "", client=None,
                   judge: Callable[..., judging.Verdict] = judging.judge,
                   log: Callable[[str], None] = print) -> RolloutResult:
    """Serves the pushed version through the InferenceService ``name`` (see the module)."""
    policy.check()
    pushed = _pushed(meta)
    ns = namespace_of(namespace, what="the InferenceService") if pushed or namespace else namespace
    target = f"kserve:{ns}/{name}"
    if pushed is None:
        return RolloutResult(False, "skipped", target, None, None,
                             f"push pushed nothing: {meta.get('reason') or 'no reason given'}")
    check_name(name)
    version, version_path, base = pushed
    if not storage.is_gcs(base):
        raise KfpCtError(f"KServe cannot read the model base {base}: its storage initializer "
                         "copies from object storage (gs://), and this base is a local folder; "
                         "push to a gs:// model base for a KServe rollout")
    # Something to judge with, read once, before anything changes.
    judge = functools.partial(judge, exp=judging.expected(version_path))
    uri = registry.serving_copy(base, version)
    log(f"[rollout] version {version}: storageUri {uri} (one version, checked against its "
        "manifest)")
    svc = kserve.InferenceServices(ns, client=client, log=log)
    current = svc.get(name)

    def record(state: str, reason: str, previous: int | None, percent: int) -> int:
        return registry.record_rollout(base, {"target": target, "version": version,
                                              "state": state, "previous": previous,
                                              "percent": percent, "reason": reason,
                                              "storage_uri": uri})

    def result(ok: bool, state: str, reason: str, previous, verdict=None, seqs=()):
        log(f"[rollout] {'ROLLED OUT' if ok else 'NOT ROLLED OUT'}: {reason}")
        return RolloutResult(ok, state, target, version, previous, reason,
                             verdict.to_json() if verdict else None, uri, list(seqs))

    if current is None:
        return _first_deploy(svc, name, ns, version, base, uri, version_path, policy,
                             service_account, runtime, resources, canary_url, judge, record,
                             result, log)
    previous = kserve.served_version(current)
    spec = (current.get("spec") or {}).get("predictor") or {}
    if (kserve.storage_uri_of(current) == uri and spec.get("canaryTrafficPercent") is None
            and str(kserve.conditions(current).get("Ready", {}).get("status")) == "True"):
        return result(True, "unchanged", f"{svc.where(name)} already serves version {version} "
                      "with all traffic", previous)
    mode = kserve.deployment_mode(current)
    if mode != "Serverless":
        raise KfpCtError(f"{svc.where(name)} runs in {mode} mode: a canary revision "
                         "(canaryTrafficPercent) needs Serverless mode in KServe before 0.20")
    before = kserve.predictor_status(current).get("latestReadyRevision", "")
    seqs: list[int] = []
    settled = started = False
    with sigterm_raises(Interrupted):
        try:
            # From here on the spec may name the canary (even if the answer to the patch
            # never arrives): whatever stops the rollout looks and undoes it.
            started = True
            patched = svc.patch(name, kserve.canary_patch(uri, version, policy.canary_percent,
                                                          uuid.uuid4().hex[:12], service_account,
                                                          runtime, resources))
            seqs.append(record("canary", f"canary revision with {policy.canary_percent}% of "
                               "the traffic", previous, policy.canary_percent))
            generation = int((patched.get("metadata") or {}).get("generation") or 0)
            log(f"[rollout] {svc.where(name)}: version {version} as a canary "
                f"({policy.canary_percent}%), replacing version {previous} a bit at a time")
            try:
                isvc = svc.wait(name, lambda i: kserve.ready_after(i, generation, before),
                                "Ready", policy.ready_timeout_s, policy.poll_s,
                                lambda i: kserve.predictor_status(i)
                                .get("latestCreatedRevision", ""))
            except kserve.RolloutError as exc:
                reason = f"the canary did not become ready: {exc}"
                seqs.append(_undo(svc, name, policy, record, reason, previous))
                settled = True
                return result(False, "rolled_back", reason, previous, seqs=seqs)
            url = canary_url or kserve.canary_entry(isvc).get("url", "")
            if not url:
                reason = ("the canary revision has no URL of its own (tag routing is off: "
                          f"annotation {kserve.TAG_ROUTING}); set canary_url")
                seqs.append(_undo(svc, name, policy, record, reason, previous))
                settled = True
                return result(False, "rolled_back", reason, previous, seqs=seqs)
            verdict = _judge_and_soak(svc, name, url, version_path, policy, judge, log)
            if not verdict.passed:
                seqs.append(_undo(svc, name, policy, record, verdict.reason, previous))
                settled = True
                return result(False, "rolled_back", verdict.reason, previous, verdict, seqs)
            svc.patch(name, kserve.PROMOTE_PATCH, action="promote the canary of")
            svc.wait(name, lambda i: kserve.latest_percent(i) in (100, None)
                     and len([t for t in kserve.traffic(i) if t.get("percent")]) <= 1,
                     "serving the canary with all traffic", policy.ready_timeout_s, policy.poll_s)
            reason = f"promoted version {version} to all traffic: {verdict.reason}"
            seqs.append(record("promoted", reason, previous, 100))
            settled = True
            return result(True, "promoted", reason, previous, verdict, seqs)
        except Interrupted:
            reason = "interrupted (SIGTERM: the task's deadline or a cancelled run)"
            undone = None if settled else _undo_if_canary(svc, name, version, policy, record,
                                                          reason, previous)
            settled = True
            done = ("the canary's traffic was set to 0" if undone is not None else
                    f"{svc.where(name)} had no canary of version {version} taking traffic "
                    "to take back")
            raise KfpCtError(f"rollout of version {version} {reason}; {done}") from None
        finally:
            if started and not settled:  # an error while the canary may take traffic
                with contextlib.suppress(Exception):
                    _undo_if_canary(svc, name, version, policy, record,
                                    "the rollout failed midway", previous)


def _undo_if_canary(svc, name, version, policy, record, reason, previous) -> int | None:
    """:func:`_undo`, when the spec names ``version`` as a canary taking traffic (what
    an interrupted rollout may or may not have got to); None when it does not."""
    isvc = svc.get(name) or {}
    percent = ((isvc.get("spec") or {}).get("predictor") or {}).get("canaryTrafficPercent")
    if kserve.served_version(isvc) != version or not percent:
        return None
    return _undo(svc, name, policy, record, reason, previous)


def _undo(svc, name, policy, record, reason, previous) -> int:
    """The canary's traffic to 0: the previous revision serves everything again."""
    svc.patch(name, kserve.ROLLBACK_PATCH, action="roll back the canary of")
    svc.wait(name, lambda i: not kserve.latest_percent(i), "rolled back (canary at 0%)",
             min(policy.ready_timeout_s, 300), policy.poll_s)
    return record("rolled_back", reason, previous, 0)


def _judge_and_soak(svc, name, url, version_path, policy, judge, log) -> judging.Verdict:
    verdict = judge(url, name, version_path, log=log)
    if not verdict.passed or not policy.soak_s:
        return verdict
    log(f"[rollout] soaking {policy.soak_s:.0f} s with the canary taking traffic")
    deadline = time.monotonic() + policy.soak_s
    while time.monotonic() < deadline:
        time.sleep(min(policy.poll_s, max(0.0, deadline - time.monotonic())))
        isvc = svc.get(name) or {}
        if str(kserve.conditions(isvc).get("Ready", {}).get("status")) != "True":
            return judging.Verdict(False, verdict.requests, "the canary stopped being ready "
                                   "during the soak: " + ("; ".join(kserve.not_ready(isvc))
                                                          or "deleted"), verdict.checked)
    again = judge(url, name, version_path, log=log)
    if again.passed:
        again.reason = f"{again.reason} (before and after a {policy.soak_s:.0f} s soak)"
    return again


def _first_deploy(svc, name, ns, version, base, uri, version_path, policy, service_account,
                  runtime, resources, canary_url, judge, record, result, log):
    created = svc.create(kserve.manifest(name, ns, uri, version, base, service_account,
                                         runtime, resources))
    generation = int((created.get("metadata") or {}).get("generation") or 1)
    log(f"[rollout] created {svc.where(name)} serving version {version}")
    try:
        with sigterm_raises(Interrupted):
            isvc = svc.wait(name, lambda i: kserve.ready_after(i, generation, ""), "Ready",
                            policy.ready_timeout_s, policy.poll_s,
                            lambda i: kserve.predictor_status(i).get("latestCreatedRevision", ""))
            url = (canary_url or kserve.canary_entry(isvc).get("url")
                   or kserve.predictor_status(isvc).get("url")
                   or (isvc.get("status") or {}).get("url", ""))
            verdict = (_judge_and_soak(svc, name, url, version_path, policy, judge, log) if url
                       else judging.Verdict(False, 0, f"{svc.where(name)} is Ready but has no "
                                            "URL; set canary_url", "outputs"))
    except (kserve.RolloutError, Interrupted) as exc:
        why = (f"did not become ready: {exc}" if isinstance(exc, kserve.RolloutError)
               else "interrupted (SIGTERM)")
        svc.delete(name)
        reason = (f"first deploy of version {version} {why}; {svc.where(name)} was deleted "
                  "(nothing served before it)")
        return result(False, "removed", reason, None, seqs=[record("removed", reason, None, 0)])
    if not verdict.passed:
        svc.delete(name)
        reason = (f"first deploy of version {version}: {verdict.reason}; {svc.where(name)} "
                  "was deleted (nothing served before it, and a model that answers wrongly "
                  "is not left serving)")
        return result(False, "removed", reason, None, verdict,
                      [record("removed", reason, None, 0)])
    reason = f"first deploy: version {version} serves all traffic: {verdict.reason}"
    return result(True, "promoted", reason, None, verdict, [record("promoted", reason, None, 100)])


# ------------------------------------------------------------------ TF Serving

def _get_json(target: str, timeout_s: float = 10) -> tuple[dict | None, str]:
    try:
        with urllib.request.urlopen(target, timeout=timeout_s) as resp:
            return json.loads(resp.read() or b"{}"), ""
    except urllib.error.HTTPError as exc:
        return None, f"HTTP {exc.code} {exc.read()[:200].decode('utf-8', 'replace')}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, str(getattr(exc, "reason", exc))


def model_status(url: str, model: str, where: str, timeout_s: float = 10) -> tuple[str, str]:
    """(version, state) that ``where`` of ``model`` names on a TF Serving server, or ("",
    why). ``versions/3``: that version's status. ``labels/canary``: the version the label
    resolves to for requests, read from the model metadata (TF Serving's status call does
    not resolve labels; its metadata call resolves them as predict does)."""
    base = f"{url.rstrip('/')}/v1/models/{model}/{where}"
    if where.startswith("labels/"):
        body, why = _get_json(base + "/metadata", timeout_s)
        if body is None:
            return "", why
        return str((body.get("model_spec") or {}).get("version", "")), "AVAILABLE"
    body, why = _get_json(base, timeout_s)
    if body is None:
        return "", why
    status = (body.get("model_version_status") or [{}])[0]
    return str(status.get("version", "")), str(status.get("state", ""))


def _await_version(url: str, model: str, where: str, version: int, deadline: float,
                   poll_s: float) -> str:
    """"" once ``where`` resolves to ``version`` AVAILABLE; else, at the deadline, what
    it resolved to last."""
    while True:
        got, state = model_status(url, model, where)
        if got == str(version) and state == "AVAILABLE":
            return ""
        if time.monotonic() > deadline:
            return f"{got or '-'} {state}".strip()
        time.sleep(poll_s)


def rollout_tfserving(meta: Mapping, name: str, tfserving_url: str, config_path: str = "",
                      policy: Policy = Policy(),
                      judge: Callable[..., judging.Verdict] = judging.judge,
                      log: Callable[[str], None] = print) -> RolloutResult:
    """Serves the pushed version through TF Serving version labels (see the module)."""
    policy.check()
    pushed = _pushed(meta)
    base = str(meta.get("destination") or "")
    path = config_path or (labels.default_path(base) if base else "")
    target = f"tfserving:{path}"
    if pushed is None:
        return RolloutResult(False, "skipped", target, None, None,
                             f"push pushed nothing: {meta.get('reason') or 'no reason given'}")
    version, version_path, base = pushed
    name = name or os.path.basename(base.rstrip("/"))
    if not tfserving_url:
        raise KfpCtError("a tfserving rollout needs tfserving_url (the server's REST address, "
                         "e.g. http://tf-serving:8501): the canary is judged there")
    judge = functools.partial(judge, exp=judging.expected(version_path))
    before = labels.read(path)
    if before is not None and before.name != name:
        raise KfpCtError(f"{path} configures model {before.name!r}, not {name!r}")
    earlier = [v.version for v in registry.list_versions(base)
               if v.state == registry.COMPLETE and v.version < version]
    previous = before.stable if before is not None else (earlier[-1] if earlier else None)
    if before is not None and before.stable == version and before.canary in (None, version):
        return RolloutResult(True, "unchanged", target, version, previous,
                             f"version {version} is already the stable version in {path}")

    def record(state: str, reason: str, percent: int) -> int:
        return registry.record_rollout(base, {"target": target, "version": version,
                                              "state": state, "previous": previous,
                                              "percent": percent, "reason": reason})

    deadline = time.monotonic() + policy.ready_timeout_s
    hint = (f"is it started with --model_config_file={path} "
            "--model_config_file_poll_wait_seconds=30 "
            "--allow_version_labels_for_unavailable_models?")
    seqs: list[int] = []
    if before is not None and version not in before.versions:
        # TF Serving moves a label only onto a version it has loaded (labels.py): load the
        # version first, then move the canary label onto it.
        labels.stage(path, version)
        log(f"[rollout] {path}: loading version {version} beside stable {previous}")
        last = _await_version(tfserving_url, name, f"versions/{version}", version,
                              deadline, policy.poll_s)
        if last:
            labels.unstage(path, version)
            reason = (f"TF Serving at {tfserving_url} did not load version {version} within "
                      f"{policy.ready_timeout_s:.0f} s (last: {last}); {hint}")
            seqs.append(record("rolled_back", reason, 0))
            log(f"[rollout] NOT ROLLED OUT: {reason}")
            return RolloutResult(False, "rolled_back", target, version, previous, reason,
                                 records=seqs)
    labels.set_canary(path, name, base, version,
                      stable_if_new=previous if previous is not None else version)
    seqs.append(record("canary", f"label canary -> {version} in {path}", 0))
    log(f"[rollout] {path}: canary -> version {version} (stable: {previous})")

    def undo(reason: str) -> RolloutResult:
        if previous is None:
            reason += (f"; no earlier version to fall back to: {path} still names version "
                       f"{version}, stop the server or push a fixed version")
        else:
            labels.rollback(path)
        seqs.append(record("rolled_back", reason, 0))
        log(f"[rollout] NOT ROLLED OUT: {reason}")
        return RolloutResult(False, "rolled_back", target, version, previous, reason,
                             records=seqs)

    last = _await_version(tfserving_url, name, f"labels/{labels.CANARY}", version, deadline,
                          policy.poll_s)
    if last:
        return undo(f"TF Serving at {tfserving_url} did not serve version {version} under "
                    f"the canary label within {policy.ready_timeout_s:.0f} s (last: {last}); "
                    f"{hint}")
    verdict = judge(tfserving_url, name, version_path, label="canary", log=log)
    if verdict.passed and policy.soak_s:
        time.sleep(policy.soak_s)
        verdict = judge(tfserving_url, name, version_path, label="canary", log=log)
    if not verdict.passed:
        result = undo(verdict.reason)
        result.verdict = verdict.to_json()
        return result
    labels.promote(path)
    reason = f"label stable -> {version} in {path}: {verdict.reason}"
    seqs.append(record("promoted", reason, 100))
    log(f"[rollout] ROLLED OUT: {reason}")
    return RolloutResult(True, "promoted", target, version, previous, reason,
                         verdict.to_json(), records=seqs)


# ------------------------------------------------------------------ the task

def write_outcome(out_dir: str, result: RolloutResult) -> None:
    """rollout.json and the marker (ROLLED_OUT / NOT_ROLLED_OUT holding the reason)."""
    os.makedirs(out_dir, exist_ok=True)
    record: dict[str, Any] = dataclasses.asdict(result)
    with open(os.path.join(out_dir, ROLLOUT_JSON), "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=1, sort_keys=True)
    marker = ROLLED_OUT if result.rolled_out else NOT_ROLLED_OUT
    with open(os.path.join(out_dir, marker), "w", encoding="utf-8") as fh:
        fh.write(result.reason + "\n")


def run_rollout(pushed_meta: Mapping, out_dir: str, target: str = "kserve", name: str = "",
                namespace: str = "", policy: Policy = Policy(), service_account: str = "",
                runtime: str = "", resources: Mapping | None = None, canary_url: str = "",
                tfserving_url: str = "", model_config_path: str = "", client=None,
                log: Callable[[str], None] = print) -> RolloutResult:
    """The rollout task: one target, its outcome written to ``out_dir``."""
    if target not in TARGETS:
        raise KfpCtError(f"unknown rollout target {target!r}; targets: {', '.join(TARGETS)}")
    if target == "kserve":
        if not name:
            base = str(pushed_meta.get("destination") or "")
            name = os.path.basename(base.rstrip("/")).lower().replace("_", "-")
        result = rollout_kserve(pushed_meta, name, namespace, policy, service_account,
                                runtime, resources, canary_url, client=client, log=log)
    else:
        result = rollout_tfserving(pushed_meta, name, tfserving_url, model_config_path,
                                   policy, log=log)
    write_outcome(out_dir, result)
    return result
