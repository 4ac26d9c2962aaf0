"""Runs a pipeline on this machine through kfp.local and reports what happened.

SubprocessRunner with use_venv=False: every task runs in a subprocess of this Python,
with the packages already installed (components set install_kfp_package=False), so no
task installs anything at run time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import re
import sys
import time
from typing import Any, Callable, Mapping, Optional

from components.common import report
from components.common import tfenv  # noqa: F401  (subprocesses inherit TF_USE_LEGACY_KERAS)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_START = re.compile(r"Executing task '?([\w-]+)'?")
_TASK_END = re.compile(r"Task '?([\w-]+)'? finished with status (\w+)")
_LOGIC = re.compile(r"\[kfp-ct\] timing task=([\w-]+) logic_s=([\d.]+)")
# The last line of a task's traceback when it raised one of our errors: its message.
_OUR_ERROR = re.compile(r"^\s*components\.[\w.]+\.(\w+): (.+)$", re.M)


@dataclasses.dataclass
class TaskTiming:
    name: str
    wall_s: float
    logic_s: float | None
    status: str

    @property
    def fixed_s(self) -> float | None:
        """Process start, imports and KFP executor overhead: wall minus the task's own work."""
        return None if self.logic_s is None else max(0.0, self.wall_s - self.logic_s)


@dataclasses.dataclass
class LocalRun:
    run_dir: str
    total_s: float
    tasks: list[TaskTiming]
    ok: bool
    error: str = ""
    failed_task: str = ""  # the task that failed (empty when ok)

    def artifact(self, task: str, output: str, *parts: str) -> str:
        return os.path.join(self.run_dir, task, output, *parts)

    def read_json(self, task: str, output: str, name: str):
        path = self.artifact(task, output, name)
        if not os.path.exists(path):
            return None
        with open(path) as fh:
            return json.load(fh)


# The last line of any traceback: "ValueError: message" (the exception and its text).
_ANY_ERROR = re.compile(r"^\s*(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*(?:Error|Exception|Exit|"
                        r"Interrupt|Failure|Warning)): (.+)$", re.M)

# on_task_event(event, task, status, when): event "start" or "end", status kfp.local's
# ("SUCCESS", "FAILURE") at the end and None at the start, when a time.time().
TaskEventCallback = Callable[[str, str, Optional[str], float], None]


class _Tee:
    """Passes stdout through and notes task starts / ends and the tasks' own timings.

    kfp.local logs "Executing task" / "finished with status" to sys.stdout (its logging
    context installs a stdout handler) and relays each task's output there too.

    Args:
        stream: Where the text goes on to.
        on_task_event: Called at every task start and end (see TaskEventCallback).
    """

    def __init__(self, stream, on_task_event: Optional[TaskEventCallback] = None):
        self.stream, self.logic, self.starts, self.ends = stream, {}, {}, {}
        self.errors: list[str] = []
        self.task_errors: dict[str, str] = {}  # task -> the last exception line it printed
        self.on_task_event = on_task_event
        self._current: Optional[str] = None

    def write(self, text):
        now = time.time()
        plain = _ANSI.sub("", text)
        for match in _LOGIC.finditer(plain):
            self.logic[match.group(1)] = float(match.group(2))
        self.errors += [m.group(2).strip() for m in _OUR_ERROR.finditer(plain)]
        if self._current is not None:
            for match in _ANY_ERROR.finditer(plain):
                self.task_errors[self._current] = f"{match.group(1)}: {match.group(2).strip()}"
        if match := _TASK_START.search(plain):
            if match.group(1) not in self.starts:
                self.starts[match.group(1)] = now
                self._current = match.group(1)
                self._event("start", match.group(1), None, now)
        elif match := _TASK_END.search(plain):
            self.ends[match.group(1)] = (now, match.group(2))
            self._current = None
            self._event("end", match.group(1), match.group(2), now)
        return self.stream.write(text)

    def _event(self, event: str, task: str, status: Optional[str], when: float) -> None:
        if self.on_task_event is not None:
            self.on_task_event(event, task, status, when)

    def flush(self):
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _run_traced(call: Callable[[], Any], root: str,
                on_task_event: Optional[TaskEventCallback] = None,
                any_task_error: bool = False) -> LocalRun:
    """Runs ``call()`` under kfp.local with pipeline root ``root``, watching stdout.

    Args:
        call: Starts the pipeline (kfp.local must run it in this thread).
        root: The pipeline root (created); kfp.local makes one folder per run in it.
        on_task_event: Called at every task start and end.
        any_task_error: Name the failing task's last exception line in the error when it
            raised none of our errors (without it, only our errors are named).

    Returns:
        What happened (LocalRun).
    """
    from kfp import local

    os.makedirs(root, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root,
               raise_on_error=True)
    tee = _Tee(sys.stdout, on_task_event)
    started = time.perf_counter()
    ok, error = True, ""
    try:
        with contextlib.redirect_stdout(tee):
            call()
    except RuntimeError as exc:  # kfp.local: a task failed; its log was printed above
        ok, error = False, str(exc)
        if tee.errors:  # the task's own message says what to fix
            error = f"{error}\n{tee.errors[-1]}"
        elif any_task_error and tee.task_errors:
            failed = [n for n, (_, status) in tee.ends.items() if status != "SUCCESS"]
            message = tee.task_errors.get(failed[-1] if failed else "") or next(
                reversed(tee.task_errors.values()))
            error = f"{error}\n{message}"
    total = time.perf_counter() - started
    runs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    tasks = []
    for name, start in sorted(tee.starts.items(), key=lambda kv: kv[1]):
        end, status = tee.ends.get(name, (time.time(), "UNFINISHED"))
        tasks.append(TaskTiming(name, end - start, tee.logic.get(name), status))
    failed_task = next((t.name for t in reversed(tasks) if t.status != "SUCCESS"), "")
    return LocalRun(run_dir=os.path.join(root, runs[-1]) if runs else root, total_s=total,
                    tasks=tasks, ok=ok, error=_ANSI.sub("", error),
                    failed_task="" if ok else failed_task)


def run_local(pipeline_func, arguments: dict, workdir: str = "local_outputs") -> LocalRun:
    """Runs `pipeline_func(**arguments)` under kfp.local in a fresh run folder of workdir."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    root = os.path.abspath(os.path.join(workdir, stamp))
    return _run_traced(lambda: pipeline_func(**arguments), root)


def run_local_spec(pipeline_spec, arguments: Mapping[str, Any], root: str,
                   on_task_event: Optional[TaskEventCallback] = None) -> LocalRun:
    """Runs an already-compiled pipeline under kfp.local, as `run_local` runs a function.

    Args:
        pipeline_spec: A ``pipeline_spec_pb2.PipelineSpec``, or its JSON dict (a
            compiled YAML's first document), or ``{"pipeline_spec": ..., "platform_spec":
            ...}`` as a KFP server stores a version with platform settings (kfp.local
            ignores platform settings).
        arguments: Runtime parameters; kfp.local applies the defaults of those left out.
        root: The pipeline root (an absolute local folder, created); the run's folder is
            made inside it.
        on_task_event: Called at every task start and end with ``(event, task, status,
            when)``: event "start" / "end", status None / "SUCCESS" / "FAILURE".

    Returns:
        What happened (LocalRun); on failure ``error`` names the failing task and its own
        last error line, ``failed_task`` the task.
    """
    from kfp.local import pipeline_orchestrator
    from kfp.pipeline_spec import pipeline_spec_pb2

    if isinstance(pipeline_spec, Mapping):
        from google.protobuf import json_format

        doc = pipeline_spec
        if isinstance(doc.get("pipeline_spec"), Mapping):
            doc = doc["pipeline_spec"]
        pipeline_spec = json_format.ParseDict(doc, pipeline_spec_pb2.PipelineSpec())
    return _run_traced(
        lambda: pipeline_orchestrator.run_local_pipeline(pipeline_spec, dict(arguments)),
        os.path.abspath(root), on_task_event, any_task_error=True)


def training_report(run: LocalRun) -> str:
    """The short report a person reads after the training pipeline."""
    lines = ["", "=" * 72, f"kfp-ct training pipeline: {'SUCCEEDED' if run.ok else 'FAILED'}"
             f" in {run.total_s:.1f} s", f"run folder: {run.run_dir}", "", "Steps (wall s; "
             "own work s, heavy imports included; fixed = process start + kfp executor):"]
    for t in run.tasks:
        own = "-" if t.logic_s is None else f"{t.logic_s:.1f}"
        fixed = "-" if t.fixed_s is None else f"{t.fixed_s:.1f}"
        lines.append(f"  {t.name:<10} {t.wall_s:6.1f}  own {own:>5}  fixed {fixed:>5}  {t.status}")
    anomalies = run.read_json("validate", "anomalies", "anomalies.json")
    if anomalies is not None:
        lines += ["", f"Data anomalies: {len(anomalies) or 'none'}"]
        lines += [f"  - {a['feature']}: {a['kind']}: {a['detail']}" for a in anomalies]
    evaluation = run.read_json("evaluate", "evaluation", "evaluation.json")
    if evaluation:
        base = evaluation["baseline"]
        lines += ["", "Evaluation (candidate vs production):"]
        cand = evaluation["candidate"]["overall"]
        prod = base.get("overall") or {}
        for metric in sorted(cand):
            other = prod.get(metric)
            lines.append(f"  {metric:<28} {report.fmt(cand[metric]):>10}   "
                         f"{report.fmt(other):>10}")
        lines.append(f"  baseline: {base['state']}"
                     + (f" (version {base['version']})" if base.get("version") else "")
                     + (f": {base['detail']}" if base.get("detail") else ""))
    blessing = run.read_json("gate", "blessing", "blessing.json")
    if blessing:
        lines += ["", f"Gate: {'BLESSED' if blessing['blessed'] else 'NOT BLESSED'}"]
        for check in blessing.get("checks", []):
            lines.append(f"  [{check['verdict']}] {check.get('kind', '')} "
                         f"{check.get('metric') or ''}: {check['reason']}")
        lines += [f"  note: {n}" for n in blessing.get("notes", [])]
    pushed = run.read_json("push", "pushed", "push.json")
    if pushed:
        lines += ["", ("Pushed: version {version} at {path}".format(**pushed)
                       if pushed.get("pushed") else f"Not pushed: {pushed.get('reason')}")]
    if not run.ok:
        lines += ["", f"Error: {run.error}"]
    lines.append("=" * 72)
    return "\n".join(lines)


def training_summary(run: LocalRun) -> dict:
    """The training run's outcome for machines (``run-local --summary-json``)."""
    pushed = run.read_json("push", "pushed", "push.json") or {}
    blessing = run.read_json("gate", "blessing", "blessing.json") or {}
    return {"ok": run.ok, "run_dir": run.run_dir, "total_s": round(run.total_s, 1),
            "error": run.error, "blessed": blessing.get("blessed"),
            "pushed": pushed.get("pushed"), "version": pushed.get("version"),
            "reason": pushed.get("reason", "")}


def monitoring_summary(run: LocalRun) -> dict:
    """The monitoring run's decision and launch, for machines (``--summary-json``)."""
    decision = run.read_json("drift-check", "decision", "drift.json") or {}
    launch = run.read_json("retrain-trigger", "launch", "launch.json")
    return {"ok": run.ok, "run_dir": run.run_dir, "total_s": round(run.total_s, 1),
            "error": run.error, "decision": decision.get("decision"),
            "drifted": decision.get("drifted", []), "reasons": decision.get("reasons", []),
            "anomalies": decision.get("anomalies", []), "launch": launch}


def monitoring_report(run: LocalRun) -> str:
    """The short report a person reads after the monitoring pipeline."""
    lines = ["", "=" * 72, f"kfp-ct monitoring pipeline: {'SUCCEEDED' if run.ok else 'FAILED'}"
             f" in {run.total_s:.1f} s", f"run folder: {run.run_dir}", "", "Steps (wall s):"]
    for t in run.tasks:
        lines.append(f"  {t.name:<16} {t.wall_s:6.1f}  {t.status}")
    decision = run.read_json("drift-check", "decision", "drift.json")
    if decision:
        rows = ", ".join(f"{k} {v} rows" for k, v in decision["window"]["rows"].items())
        lines += ["", f"Drift decision: {decision['decision']}  ({rows}; baseline: production "
                      f"version {decision['baseline']['version']}, "
                      f"{decision['baseline']['rows']} training rows)"]
        lines += [f"  - {r}" for r in decision["reasons"]]
        tested = [f for f in decision["features"] if f.get("distance") is not None]
        if tested:
            lines += ["", "  feature                  measure      distance  threshold  "
                          "no-drift level  verdict"]
            for f in sorted(tested, key=lambda f: (f["verdict"] != "drift", f["feature"])):
                name = f["feature"] + ("" if f["role"] != "label" else " (label)")
                if len(decision["window"]["rows"]) > 1:
                    name += f" [{f['source']}]"
                measure = "JSD" if f["kind"] == "numeric" else "L-inf"
                lines.append(f"  {name:<24} {measure:<10} {f['distance']:9.4f}  "
                             f"{f['threshold']:9.4f}  {report.fmt(f['no_drift_level']):>14}  "
                             f"{f['verdict']}")
        for a in decision.get("anomalies", []):
            lines.append(f"  anomaly: {a['feature']}: {a['kind']}: {a['detail']}")
        lines += [f"  note: {n}" for n in decision.get("notes", [])]
        report_path = run.artifact("drift-check", "report")
        lines.append(f"  report: {report_path}")
    launch = run.read_json("retrain-trigger", "launch", "launch.json")
    if launch:
        if launch.get("launched"):
            result = launch.get("result") or {}
            lines += ["", f"Retraining launched (launch {launch.get('seq')}) on "
                          f"{launch.get('training_data')}: {result.get('state', '')}"]
            if result.get("pushed"):
                lines.append(f"  pushed version {result.get('version')} (drift lineage in its "
                             "metadata)")
            elif result.get("state") in ("SUCCEEDED", "FAILED"):
                lines.append(f"  not pushed: {result.get('reason') or 'see the log'}")
            if result.get("log"):
                lines.append(f"  training log: {result['log']}")
        else:
            lines += ["", f"Nothing launched: {launch.get('reason')}"]
    if not run.ok:
        lines += ["", f"Error: {run.error}"]
    lines.append("=" * 72)
    return "\n".join(lines)
