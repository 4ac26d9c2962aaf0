"""The retraining trigger: launch one training run when the drift check found drift.

The decision lives here, inside a component (kfp.local cannot run ``dsl.If``), and the
same code serves both ways of launching:

- ``local``: the training pipeline runs on this machine through kfp.local
  (``python -m kfp_ct.pipelines.entrypoints.cli run-local``, in a child process), and the trigger waits for
  it, so the monitoring run's outputs say what the retraining did.
- ``kfp``: a run of the uploaded training pipeline (by name; latest or pinned version) is
  created through ``kfp.Client`` from inside the pod
  (:class:`kfp_ct.components.retrain.kfp_launcher.KfpLauncher`); the trigger does not wait.

**Exactly once.** Launches are numbered records at the model base,
``<base>/kfp_ct_retraining/launch-<n>.json``, each written create-only (locally: hard
link of a finished file, which fails if the name exists; gs://: ``ifGenerationMatch=0``).
Before claiming number n+1, the trigger refuses when: the same window was already
launched, the last launch is still running, or the cooldown since the last launch has not
passed. Two triggers racing for the same number: one create succeeds, the other sees the
record and launches nothing. ``launch-<n>.result.json`` records what came of it.

No kfp at module level; TensorFlow never.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import socket
import subprocess
import sys
import time

from kfp_ct.components.common import exitcodes, history, registry, storage
from kfp_ct.components.common.drift import DRIFT, DRIFT_JSON
from kfp_ct.components.common.performance import (ESTIMATED_DROP, PERFORMANCE_DROP,
                                                    findings_of)
from kfp_ct.components.common.errors import InputDataError, KfpCtError
from kfp_ct.components.common.params import json_object
from kfp_ct.components.common.processes import pid_alive
from kfp_ct.components.retrain.kfp_launcher import TERMINAL_STATES

LAUNCH_JSON = "launch.json"
LAUNCHED = "LAUNCHED"
NOT_LAUNCHED = "NOT_LAUNCHED"

MODES = ("local", "kfp", "off")

_RECORD_RE = re.compile(r"launch-(\d+)\.json")
LOCAL_COMMAND = ("-m", "kfp_ct.pipelines.entrypoints.cli", "run-local")  # the local entry point, run as a process
LAUNCH_GRACE_S = 600  # a claim with no result yet is "being launched" for this long
FAILED_LAUNCH = "launch_failed"
TERMINAL = TERMINAL_STATES | {FAILED_LAUNCH}


class LaunchFailed(KfpCtError):
    """The retraining could not be started (recorded; the next monitoring run may retry)."""


@dataclasses.dataclass
class TriggerConfig:
    mode: str = "local"
    training_data: str = ""  # path, folder or glob of the training window
    training_partitions: int = 0  # > 0: only the newest N matches of training_data
    cooldown_hours: float = 0.0
    training_params: dict = dataclasses.field(default_factory=dict)
    # kfp mode
    pipeline_name: str = "kfp-ct-training"
    pipeline_version: str = ""
    experiment: str = "kfp-ct-retraining"
    host: str = ""
    namespace: str = ""
    # local mode
    workdir: str = ""
    stale_after_hours: float = 24.0  # a local launch on another host counts as running this long


def parse_params(text: str | dict) -> dict:
    """Extra training pipeline parameters (JSON object)."""
    return json_object(text, "training_params")


def check_config(cfg: TriggerConfig) -> None:
    if cfg.mode not in MODES:
        raise KfpCtError(f"retrain mode must be one of {MODES}, got {cfg.mode!r}")
    if cfg.cooldown_hours < 0 or cfg.training_partitions < 0:
        raise KfpCtError("cooldown_hours and training_partitions must not be negative")
    reserved = {"push_destination", "trigger"} & set(cfg.training_params)
    if reserved:
        raise KfpCtError(f"training_params: {sorted(reserved)} are set by the trigger itself")
    if cfg.mode == "kfp" and not cfg.pipeline_name:
        raise KfpCtError("retrain mode 'kfp' needs the name of the uploaded training pipeline")
    if cfg.mode == "kfp" and cfg.host:
        from kfp_ct.components.retrain.kfp_launcher import check_endpoint

        check_endpoint(cfg.host, "kfp_host")  # before the launch records are read


def training_window(data: str, partitions: int) -> str:
    """The training data to launch with: ``data`` itself, or its newest N matches
    (e.g. ``/data/date=*`` -> the last N date partitions), comma-separated."""
    data = (data or "").strip()
    if not data:
        raise InputDataError("no training data configured for retraining (training_data)")
    if partitions <= 0:
        return data
    if not any(c in data for c in "*?["):
        raise InputDataError(f"training_partitions={partitions} needs a glob in training_data "
                             f"(e.g. .../date=*), got {data!r}")
    matches = storage.glob_entries(data)
    if not matches:
        raise InputDataError(f"training data {data}: the pattern matches nothing")
    return ",".join(matches[-partitions:])


# ------------------------------------------------------------------------ records


def _records_dir(base: str) -> str:
    return storage.join(base, registry.RETRAIN_DIR)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _iso(t: datetime.datetime) -> str:
    return t.isoformat(timespec="seconds")


def _read(path: str) -> dict | None:
    try:
        data = json.loads(storage.read_text(path))
    except Exception:
        return None
    return data if isinstance(data, dict) else None


def list_launches(base: str) -> list[dict]:
    """Every launch record under the base, oldest first, each with its ``result`` (or None).

    A local launch whose process is gone without a result (the monitoring run was
    stopped while its retraining ran) gets the result the registry shows: the version
    it pushed, or none (see ``settled_result``)."""
    folder = _records_dir(base)
    if not storage.isdir(folder):
        return []
    out = []
    for name in storage.listdir(folder):
        match = _RECORD_RE.fullmatch(name)
        if not match:
            continue
        record = _read(storage.join(folder, name)) or {"unreadable": True}
        record["seq"] = int(match.group(1))
        record["result"] = _read(storage.join(folder, f"launch-{match.group(1)}.result.json"))
        if record["result"] is None and _local_launch_gone(record):
            record["result"] = settled_result(base, record["seq"])
        out.append(record)
    return sorted(out, key=lambda r: r["seq"])


def _local_launch_gone(record: dict) -> bool:
    return (record.get("mode") == "local" and record.get("host") == socket.gethostname()
            and bool(record.get("pid")) and not pid_alive(int(record["pid"])))


def settled_result(base: str, seq: int, why: str = "its process ended without a result"
                   ) -> dict:
    """The result of a local launch that ended without writing one, from the registry:
    SUCCEEDED with the version it pushed when one is there, else FAILED."""
    version = registry.pushed_by_launch(base, seq)
    if version is not None:
        return {"state": "SUCCEEDED", "pushed": True, "version": version.version,
                "path": version.path, "reason": f"{why}, after it pushed version "
                                                f"{version.version} (from the registry)"}
    return {"state": "FAILED", "pushed": False, "version": None,
            "reason": f"{why}; it pushed nothing (from the registry)"}


def launch_state(record: dict, cfg: TriggerConfig) -> str:
    """RUNNING, a terminal state, or FAILED for a local launch whose process is gone."""
    result = record.get("result") or {}
    state = result.get("state")
    if state in TERMINAL:
        return state
    if record.get("mode") == "kfp" and result.get("run_id"):
        launcher = _kfp_launcher(cfg)
        state = launcher.state(result["run_id"])
        return state if state in TERMINAL else "RUNNING"
    started = _parse_time(record.get("claimed_at"))
    age = (_now() - started).total_seconds() if started else float("inf")
    if record.get("mode") == "local":
        if record.get("host") == socket.gethostname() and record.get("pid"):
            return "RUNNING" if pid_alive(int(record["pid"])) else "FAILED"
        return "RUNNING" if age < cfg.stale_after_hours * 3600 else "FAILED"
    # kfp claim without a run id yet: being launched, unless it is old (the launch died).
    return "RUNNING" if age < LAUNCH_GRACE_S else FAILED_LAUNCH


def _parse_time(text) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(str(text))
    except ValueError:
        return None


def _kfp_launcher(cfg: TriggerConfig):
    from kfp_ct.components.retrain.kfp_launcher import KfpLauncher

    return KfpLauncher(pipeline_name=cfg.pipeline_name, pipeline_version=cfg.pipeline_version,
                       experiment=cfg.experiment, host=cfg.host, namespace=cfg.namespace)


def refusal(base: str, window_key: str, cfg: TriggerConfig) -> tuple[str, int]:
    """(why not to launch, or "", and the number the next launch would take)."""
    launches = list_launches(base)
    next_seq = (launches[-1]["seq"] + 1) if launches else 1
    for record in reversed(launches):
        if record.get("window_key") == window_key:
            state = launch_state(record, cfg)
            if state != FAILED_LAUNCH:
                run = (record.get("result") or {}).get("run_id") or "-"
                return (f"this window was already launched: launch {record['seq']} (run {run}, "
                        f"claimed {record.get('claimed_at')}, {state.lower()})"), next_seq
    live = [r for r in launches if launch_state(r, cfg) not in TERMINAL]
    if live:
        r = live[-1]
        return (f"retraining launch {r['seq']} (claimed {r.get('claimed_at')} by monitoring "
                f"run {r.get('monitor_run', {}).get('run_id') or '-'}) is still running"), next_seq
    if cfg.cooldown_hours > 0:
        done = [r for r in launches if launch_state(r, cfg) != FAILED_LAUNCH]
        if done:
            last = _parse_time(done[-1].get("claimed_at"))
            if last is not None:
                until = last + datetime.timedelta(hours=cfg.cooldown_hours)
                if _now() < until:
                    return (f"cooldown: launch {done[-1]['seq']} was claimed at {_iso(last)}; "
                            f"the next is allowed after {_iso(until)} "
                            f"(cooldown_hours={cfg.cooldown_hours:g})"), next_seq
    return "", next_seq


#: The trigger kind each finding gives a retrained version's lineage, strongest first.
TRIGGER_KINDS = ((PERFORMANCE_DROP, "performance"), (ESTIMATED_DROP, "estimated_performance"),
                 (DRIFT, "drift"))


def trigger_kind(reasons: list[str]) -> str:
    """The lineage's reason for a launch: the strongest finding that launched it."""
    return next(kind for finding, kind in TRIGGER_KINDS if finding in reasons)


def claim(base: str, seq: int, record: dict) -> bool:
    path = storage.join(_records_dir(base), f"launch-{seq}.json")
    return storage.create_only(path, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())


def _write_result(base: str, seq: int, result: dict) -> None:
    path = storage.join(_records_dir(base), f"launch-{seq}.result.json")
    storage.write_text(path, json.dumps(result, indent=1, sort_keys=True) + "\n")


# ------------------------------------------------------------------------ launching


def _problem_of_production(base: str) -> str:
    prod = registry.production(base)
    if prod is None or prod.state != registry.COMPLETE:
        return ""
    path = registry.audit_file(prod, registry.PROBLEM)
    return storage.read_text(path) if storage.exists(path) else ""


def launch_local(base: str, data: str, trigger: dict, cfg: TriggerConfig, out_dir: str,
                 seq: int) -> dict:
    """Runs the training pipeline through kfp.local in a child process; waits for it."""
    params = dict(cfg.training_params)
    params.setdefault("problem", _problem_of_production(base) or None)
    params = {k: v for k, v in params.items() if v is not None}
    summary = os.path.join(out_dir, "training_summary.json")
    log = os.path.join(out_dir, "training.log")
    workdir = cfg.workdir or os.path.join(out_dir, "runs")
    cmd = [sys.executable, *LOCAL_COMMAND, "--destination", base, "--data", data,
           "--trigger", json.dumps(trigger, sort_keys=True), "--workdir", workdir,
           "--summary-json", summary, "--params", json.dumps(params, sort_keys=True),
           "--verbose"]  # training.log keeps everything the tasks print
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    # The task process runs with kfp's runtime-only import mode; the child compiles and
    # runs a whole pipeline, so it needs kfp's authoring API back.
    env.pop("_KFP_RUNTIME", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    started = time.perf_counter()
    with open(log, "w") as fh:
        try:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=root)
        except KeyboardInterrupt:  # the monitoring run was stopped: say what is true
            _write_result(base, seq, {**settled_result(base, seq, "interrupted (Ctrl-C)"),
                                      "log": log})
            raise
    outcome = _read(summary) or {}
    # What was pushed is the registry's word (the launch's number is in the version's
    # trigger), not the child's: it holds even when the child could not write its summary.
    version = registry.pushed_by_launch(base, seq)
    # Not blessed is a run that did its job (exit 4): SUCCEEDED, with pushed false.
    state = ("SUCCEEDED" if version is not None or (
        proc.returncode in exitcodes.RUN_COMPLETED and outcome.get("ok")) else "FAILED")
    result = {"state": state, "run_id": outcome.get("run_dir") or f"local-launch-{seq}",
              "exit_code": proc.returncode, "wall_s": round(time.perf_counter() - started, 1),
              "log": log, "pushed": version is not None,
              "version": version.version if version else None,
              "blessed": outcome.get("blessed"), "reason": outcome.get("reason") or
              outcome.get("error") or ""}
    return result


def notices(decision: dict, record: dict) -> list[tuple[str, dict]]:
    """(event, what to say) for each thing worth telling about this window: what it
    showed, and what became of the launch (components/common/notify.py's EVENTS)."""
    perf = decision.get("performance") or {}
    findings = findings_of(decision)
    common = {"model_base": (decision.get("baseline") or {}).get("model_base"),
              "version": (decision.get("baseline") or {}).get("version")}
    out = []
    if DRIFT in findings:
        out.append(("drift", {**common, "drifted": decision.get("drifted", []),
                              "reasons": [r for r in decision.get("reasons", [])
                                          if r not in [(perf.get(p) or {}).get("reason")
                                                       for p in ("realized", "estimated")]]}))
    for finding, event, part in ((PERFORMANCE_DROP, "performance_drop", "realized"),
                                 (ESTIMATED_DROP, "estimated_drop", "estimated")):
        if finding in findings:
            p = perf.get(part) or {}
            out.append((event, {**common, "metric": p.get("metric"), "value": p.get("value"),
                                "baseline": p.get("baseline"), "tolerance": p.get("tolerance"),
                                "reasons": [p.get("reason")]}))
    result = record.get("result") or {}
    if record.get("launched"):
        run = record.get("run_id") or result.get("run_id")
        if result.get("state") == "FAILED":
            out.append(("launch_failed", {**common, "launched_run": run,
                                          "reason": result.get("reason") or "the run failed"}))
        else:
            out.append(("launched", {**common, "launched_run": run,
                                     "reasons": [f"launch {record.get('seq')} for "
                                                 f"{', '.join(record.get('launch_reasons', []))}"]}))
            if result.get("blessed") is False:
                out.append(("not_blessed", {**common, "launched_run": run,
                                            "reason": result.get("reason") or "not blessed"}))
    elif record.get("launch_error"):
        out.append(("launch_failed", {**common, "reason": record["reason"]}))
    return out


def notify_outcome(decision: dict, record: dict, model_base: str, run_info: dict) -> list[dict]:
    """Sends each notice to the settings' webhook; the delivery records (never raises)."""
    from kfp_ct.components.common import notify

    target = (decision.get("settings") or {}).get("notify")
    if not target:
        return []
    out = []
    for event, said in notices(decision, record):
        said = {**said, "run_id": run_info.get("run_id"), "run_name": run_info.get("run_name")}
        doc = {"model_base": model_base, "window": decision.get("window", {}).get("path")
               or decision.get("window", {}).get("request_log"),
               "window_key": decision.get("window", {}).get("key"),
               "findings": decision.get("findings", []),
               "performance": decision.get("performance"), "drifted": decision.get("drifted"),
               "launch": {k: record.get(k) for k in ("launched", "seq", "run_id", "reason")},
               "monitor_run": run_info}
        delivery = notify.send(target, event, notify.event_text(event, said), doc)
        print(f"[kfp-ct] notify: {event}: "
              + ("delivered" if delivery.get("delivered") else
                 f"not delivered ({delivery.get('skipped') or delivery.get('error')})"))
        out.append(delivery)
    return out


def run_trigger(decision_dir: str, model_base: str, cfg: TriggerConfig, launch_dir: str,
                run_info: dict | None = None) -> dict:
    """Reads the drift decision and launches one retraining, or records why not.

    Returns the launch record (also ``<launch_dir>/launch.json`` plus a LAUNCHED /
    NOT_LAUNCHED marker).
    """
    check_config(cfg)
    os.makedirs(launch_dir, exist_ok=True)
    decision = _read(os.path.join(decision_dir, DRIFT_JSON))
    if decision is None:
        raise KfpCtError(f"no drift decision at {os.path.join(decision_dir, DRIFT_JSON)}")
    run_info = dict(run_info or {})
    out = {"launched": False, "mode": cfg.mode, "decision": decision["decision"],
           "window": decision["window"].get("path") or decision["window"].get("request_log"),
           "window_key": decision["window"]["key"], "drifted": decision["drifted"]}

    def finish(record: dict) -> dict:
        # Told (never fails the run), then remembered (the history's record says what
        # was told), then written: launch.json holds all of it.
        record["notifications"] = notify_outcome(decision, record, model_base, run_info)
        try:
            record["history_seq"] = history.append(
                model_base, history.summary(decision, record, record["notifications"]))
        except KfpCtError as exc:  # the decision and launch stand; the record says so
            record["history_error"] = str(exc)
            print(f"[kfp-ct] retrain: the monitoring history was not written: {exc}")
        storage.write_text(os.path.join(launch_dir, LAUNCH_JSON),
                           json.dumps(record, indent=1, sort_keys=True) + "\n")
        marker = LAUNCHED if record["launched"] else NOT_LAUNCHED
        storage.write_text(os.path.join(launch_dir, marker),
                           (record.get("reason") or str(record.get("run_id", ""))) + "\n")
        print(f"[kfp-ct] retrain: {marker.lower().replace('_', ' ')}: "
              f"{record.get('reason') or record.get('run_id')}")
        return record

    # What launches: the findings the settings retrain on (records from before the
    # performance checks: drift alone).
    reasons = decision.get("launch_reasons")
    if reasons is None:
        reasons = findings_of(decision)
    out["findings"] = findings_of(decision)
    out["launch_reasons"] = reasons
    if not reasons:
        found = [f for f in out["findings"] if f not in reasons]
        if found:
            return finish({**out, "reason": (
                f"found {', '.join(found)}, which the settings do not retrain on (retrain_on="
                f"{decision.get('retrain_on')}): recorded only")})
        perf = [(decision.get("performance") or {}).get(p) or {} for p in ("realized", "estimated")]
        said = [f"{p.get('metric')}: {p['decision']}" for p in perf if p.get("decision")]
        return finish({**out, "reason": f"decision is {decision['decision']}"
                                        + (f" ({'; '.join(said)})" if said else "") + ": "
                                        + "; ".join(decision.get("reasons", [])[:1])})
    if decision.get("blocking"):
        return finish({**out, "reason": (
            f"the window has anomalies a retraining would fail on "
            f"({', '.join(decision['blocking'])}: missing column or type change); fix the data "
            "upstream, then monitor again")})
    if cfg.mode == "off":
        return finish({**out, "reason": "retraining is off (retrain_mode=off): drift recorded only"})
    data = training_window(cfg.training_data, cfg.training_partitions)
    why, seq = refusal(model_base, decision["window"]["key"], cfg)
    if why:
        return finish({**out, "reason": why})
    kind = trigger_kind(reasons)
    trigger = {"kind": kind, "reasons": reasons, "monitor_run": run_info,
               "window": out["window"], "window_key": out["window_key"],
               "drifted": decision["drifted"], "checked_at": decision.get("checked_at"),
               "launch": seq, "production_version": decision["baseline"]["version"]}
    perf = decision.get("performance") or {}
    for part in ("realized", "estimated"):
        p = perf.get(part) or {}
        if p.get("value") is not None:
            trigger[part] = {k: p.get(k) for k in ("metric", "value", "low", "high",
                                                    "baseline", "rows", "decision")}
    record = {"mode": cfg.mode, "window_key": out["window_key"], "window": out["window"],
              "training_data": data, "drifted": decision["drifted"], "reasons": reasons,
              "monitor_run": run_info,
              "claimed_at": _iso(_now()), "host": socket.gethostname(), "pid": os.getpid()}
    if not claim(model_base, seq, record):
        other = _read(storage.join(_records_dir(model_base), f"launch-{seq}.json")) or {}
        return finish({**out, "reason": (
            f"another monitoring run (run {other.get('monitor_run', {}).get('run_id') or '-'}) "
            f"claimed launch {seq} at {other.get('claimed_at')} first: nothing more launched")})
    out.update(seq=seq, training_data=data, trigger=trigger)
    # The monitoring's notice target hears of a retraining that fails too, unless the
    # training params name one of their own.
    target = (decision.get("settings") or {}).get("notify")
    told = {"notify": json.dumps(target, sort_keys=True)} if target else {}
    try:
        if cfg.mode == "local":
            local_cfg = dataclasses.replace(cfg, training_params={**told, **cfg.training_params})
            result = launch_local(model_base, data, trigger, local_cfg, launch_dir, seq)
        else:
            params = {**cfg.training_params, "push_destination": model_base,
                      "data_path": data, "trigger": json.dumps(trigger, sort_keys=True)}
            result = _kfp_launcher(cfg).launch(params, run_name=f"retrain-{kind}-{seq}",
                                               if_declared=told)
    except Exception as exc:  # recorded, so that the next monitoring run may retry
        _write_result(model_base, seq, {"state": FAILED_LAUNCH, "error": str(exc)})
        finish({**out, "reason": f"launch {seq} failed: {exc}", "launch_error": str(exc)})
        raise LaunchFailed(f"retraining launch {seq} failed: {exc}") from None
    _write_result(model_base, seq, result)
    return finish({**out, "launched": True, "run_id": result.get("run_id"), "result": result})
