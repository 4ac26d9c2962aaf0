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
import shutil
import signal
import sys
import time
import warnings
from typing import Any, Callable, Collection, Mapping, Optional

from kfp_ct.components.common import report
from kfp_ct.components.common.artifacts import ANOMALIES_JSON, BLESSING_JSON, EVALUATION_JSON, PUSH_JSON
from kfp_ct.components.common.artifacts import NOTICE_JSON
from kfp_ct.components.common import tfenv  # noqa: F401  (subprocesses inherit TF_USE_LEGACY_KERAS)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_START = re.compile(r"Executing task '?([\w-]+)'?")
_TASK_END = re.compile(r"Task '?([\w-]+)'? finished with status (\w+)")
_LOGIC = re.compile(r"\[kfp-ct\] timing task=([\w-]+) logic_s=([\d.]+)")
# A task's word to the user that the console shows even when it shows only task lines
# (e.g. validate's "a class appears only in the eval split").
_WARNING = re.compile(r"\[kfp-ct\] warning: (.+)")
# The last line of a task's traceback when it raised one of our errors: its message.
_OUR_ERROR = re.compile(r"^\s*kfp_ct\.components\.[\w.]+\.(\w+): (.+)$", re.M)
# The task folder of the failed-run notice (components/notify: announce_failure).
NOTICE_TASK = "announce-failure"
# kfp.local's own log lines ("08:09:07.719 - INFO - ..."), left out of a log's tail.
_KFP_LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d+ - [A-Z]+ - ")


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
    interrupted: bool = False  # stopped by Ctrl-C (SIGINT)
    log_path: str = ""  # everything the tasks printed (kfp.local's log included)
    # model base -> what the registry says this run published (read once: `published`)
    published_in: dict = dataclasses.field(default_factory=dict, repr=False)
    # the exit tasks (dsl.ExitHandler) this runner ran after the failed body (kfp.local
    # runs them only after a body that succeeded): see _run_exit_tasks
    exit_tasks: list = dataclasses.field(default_factory=list)

    def task_log(self, task: str) -> str:
        """What one task printed (``<run folder>/logs/<task>.log``)."""
        return os.path.join(os.path.dirname(self.log_path), "logs", f"{task}.log")

    def artifact(self, task: str, output: str, *parts: str) -> str:
        return os.path.join(self.run_dir, task, output, *parts)

    def read_json(self, task: str, output: str, name: str):
        path = self.artifact(task, output, name)
        if not os.path.exists(path):
            return None
        with open(path) as fh:
            return json.load(fh)

    def notice(self) -> dict | None:
        """The failed-run notice's record (the exit task ``announce-failure``: the
        outcome it saw, whether it announced it, the delivery), or None when the
        pipeline has no such task or it did not run."""
        return self.read_json(NOTICE_TASK, "notice", NOTICE_JSON)


# The last line of any traceback: "ValueError: message" (the exception and its text).
_ANY_ERROR = re.compile(r"^\s*(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*(?:Error|Exception|Exit|"
                        r"Interrupt|Failure|Warning)): (.+)$", re.M)

# on_task_event(event, task, status, when): event "start" or "end", status kfp.local's
# ("SUCCESS", "FAILURE") at the end and None at the start, when a time.time().
TaskEventCallback = Callable[[str, str, Optional[str], float], None]


class _Tee:
    """Takes kfp.local's stdout: keeps it all in the run's log, notes task starts / ends
    and the tasks' own timings, and shows either all of it (verbose) or one line per task.

    kfp.local logs "Executing task" / "finished with status" to sys.stdout (its logging
    context installs a stdout handler) and relays each task's output there too.

    Args:
        stream: The console.
        on_task_event: Called at every task start and end (see TaskEventCallback).
        log_dir: Where ``run.log`` (everything) and ``logs/<task>.log`` go; None: no logs.
        verbose: Pass everything on to the console; otherwise only one line per task.
    """

    def __init__(self, stream, on_task_event: Optional[TaskEventCallback] = None,
                 log_dir: Optional[str] = None, verbose: bool = True):
        self.stream, self.logic, self.starts, self.ends = stream, {}, {}, {}
        self.errors: list[str] = []
        self.task_errors: dict[str, str] = {}  # task -> the last exception line it printed
        self._pending_warnings: list[str] = []  # shown under the task's line when it ends
        self.on_task_event = on_task_event
        self.verbose = verbose
        self._current: Optional[str] = None
        self._log = self._task_log = None
        self.log_dir = log_dir
        if log_dir is not None:
            os.makedirs(os.path.join(log_dir, "logs"), exist_ok=True)
            self._log = open(os.path.join(log_dir, "run.log"), "w", encoding="utf-8")

    @property
    def log_path(self) -> str:
        return self._log.name if self._log is not None else ""

    def write(self, text):
        now = time.time()
        plain = _ANSI.sub("", text)
        self._pending_warnings += [m.group(1).strip() for m in _WARNING.finditer(plain)]
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
                self._open_task_log(match.group(1))
                self._event("start", match.group(1), None, now)
        if self._log is not None:
            self._log.write(plain)
            if self._task_log is not None:
                self._task_log.write(plain)
        if match := _TASK_END.search(plain):
            self.ends[match.group(1)] = (now, match.group(2))
            self._current = None
            self._close_task_log()
            self._event("end", match.group(1), match.group(2), now)
        if self.verbose:
            return self.stream.write(text)
        return len(text)

    def _open_task_log(self, task: str) -> None:
        self._close_task_log()
        if self.log_dir is not None:
            self._task_log = open(os.path.join(self.log_dir, "logs", f"{task}.log"), "w",
                                  encoding="utf-8")
        if not self.verbose:  # the start of the task's one line; its end completes it
            self.stream.write(f"  {task:<16}")
            self.stream.flush()

    def _close_task_log(self) -> None:
        if self._task_log is not None:
            self._task_log.close()
            self._task_log = None

    def progress_end(self, task: str, status: str, seconds: float) -> None:
        if not self.verbose:
            self.stream.write(f"{seconds:6.1f} s  {status}\n")
            for warning in self._pending_warnings:
                self.stream.write(f"    warning: {warning}\n")
            self.stream.flush()
        self._pending_warnings.clear()

    def _event(self, event: str, task: str, status: Optional[str], when: float) -> None:
        if event == "end":
            self.progress_end(task, status or "", when - self.starts.get(task, when))
        if self.on_task_event is not None:
            self.on_task_event(event, task, status, when)

    def close(self, interrupted_task: Optional[str] = None) -> None:
        if interrupted_task and not self.verbose and interrupted_task not in self.ends:
            self.stream.write("interrupted\n")
        self._close_task_log()
        if self._log is not None:
            self._log.close()

    def flush(self):
        self.stream.flush()
        if self._log is not None:
            self._log.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


# kfp.local warns, once per task, that our image is not a Python base image: it is (our
# components run in this very environment); the warning only hides what matters.
_KFP_IMAGE_WARNING = "You may be attemping to run a task that uses custom or non-Python"


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid``, deepest last (Linux /proc; [] elsewhere)."""
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []
    children: dict[int, list[int]] = {}
    for child in pids:
        try:
            with open(f"/proc/{child}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _ignores_sigint(pid: int) -> bool:
    """The process ignores SIGINT (/proc/<pid>/status SigIgn): our warm-start zygote,
    which leaves Ctrl-C to the run."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("SigIgn:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    except (OSError, ValueError, IndexError):
        pass
    return False


#: How long a task has, after Ctrl-C, to end by itself (its own clean-up runs) before it
#: is killed: short, so that Ctrl-C is answered within 2 s whatever the task is doing.
STOP_GRACE_S = 1.0


def _stop_children(grace_s: float = STOP_GRACE_S) -> None:
    """Ends every process this one started (a task still running after Ctrl-C).

    A Ctrl-C at a terminal reaches the task too (same process group), but a SIGINT sent to
    this process alone does not, and a task is a shell running Python: without this the
    task would go on, and could push. SIGINT first (the task's own clean-up runs), SIGKILL
    after ``grace_s``; a process that ignores SIGINT (the warm-start zygote, which holds
    nothing of the run) at once. A push killed mid-way leaves no version: publishing is
    one rename (components/common/registry.py). Linux: processes are found in /proc;
    elsewhere only the terminal's Ctrl-C stops them.
    """
    tree = _descendants(os.getpid())
    for pid in reversed(tree):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL if _ignores_sigint(pid) else signal.SIGINT)
    deadline = time.monotonic() + grace_s
    while True:
        for pid in tree:  # reap our own children so they do not linger as zombies
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        if not any(_alive(p) for p in tree) or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    for pid in tree + _descendants(os.getpid()):  # and what forked meanwhile
        if _alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    for pid in tree:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)


@contextlib.contextmanager
def _private_tmp(root: str):
    """Points the tasks' temporary files (kfp.local's `mktemp -d` per task, Beam's and
    Python's temp folders) into the run folder, and removes them at the end: nothing is
    left in the system temp directory."""
    import tempfile

    tmp = os.path.join(root, "tmp")
    os.makedirs(tmp, exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("TMPDIR", "TMP", "TEMP")}
    os.environ.update(TMPDIR=tmp, TMP=tmp, TEMP=tmp)
    tempfile.tempdir = None
    try:
        yield tmp
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        tempfile.tempdir = None
        shutil.rmtree(tmp, ignore_errors=True)


def _run_traced(call: Callable[[], Any], root: str,
                on_task_event: Optional[TaskEventCallback] = None,
                verbose: bool = True, warm: bool = False, spec: Any = None,
                arguments: Optional[Mapping[str, Any]] = None,
                where: str = "local", reuse_folder: Optional[str] = None,
                reuse: Collection[str] = ()) -> LocalRun:
    """Runs ``call()`` under kfp.local with pipeline root ``root``, watching stdout.

    Args:
        call: Starts the pipeline (kfp.local must run it in this thread).
        root: The pipeline root (created); kfp.local makes one folder per run in it. The
            full log goes to ``root/run.log`` and ``root/logs/<task>.log``.
        on_task_event: Called at every task start and end.
        verbose: Show everything the tasks print; otherwise one line per task.
        warm: Start each task as a fork of a process that has imported the heavy
            libraries once (pipelines/entrypoints/warm.py); False: a new interpreter per task.
        spec, arguments: The compiled pipeline (a PipelineSpec) and its arguments: when
            the body fails, its exit tasks (``dsl.ExitHandler``) run after it, as on a
            cluster (_run_exit_tasks); None: none are run.
        where: Where the run is, for the exit tasks ("local", "local endpoint").
        reuse_folder, reuse: Run again in the run folder of an earlier attempt, re-using
            the outputs of the named tasks that succeeded there (task_records.recording;
            every task writes its record, ``kfp_ct_task.json``, either way).

    Returns:
        What happened (LocalRun); on failure ``error`` names the failing task and its own
        message (the project's error text when it raised one, else its last exception
        line). Ctrl-C stops the run (``interrupted``) instead of raising.
    """
    from kfp_ct.pipelines.entrypoints import task_records
    from kfp import local

    os.makedirs(root, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root,
               raise_on_error=True)
    tee = _Tee(sys.stdout, on_task_event, log_dir=root, verbose=verbose)
    started = time.perf_counter()
    ok, error, interrupted = True, "", False
    body_failure: Optional[tuple] = None  # (failed task, its message) before exit tasks ran
    exit_tasks: list = []
    try:
        with contextlib.redirect_stdout(tee), _private_tmp(root) as tmp, \
                warnings.catch_warnings(), _task_starts(warm, tmp, root), \
                task_records.recording(reuse_folder, reuse):
            warnings.filterwarnings("ignore", message=_KFP_IMAGE_WARNING, category=RuntimeWarning)
            try:
                call()
            except RuntimeError as exc:  # kfp.local: a task failed; its log is in the log
                ok, error = False, str(exc)
            except KeyboardInterrupt:  # the task is stopped before its temp files go
                ok, interrupted = False, True
                _stop_after_ctrl_c()
            if not ok and not interrupted and spec is not None:
                body_failure = _body_failure(tee)
                exit_tasks = _run_exit_tasks_safely(spec, arguments or {}, root, tee,
                                                    body_failure, _ANSI.sub("", error), where)
    finally:
        tee.close(interrupted_task=tee._current)
    total = time.perf_counter() - started
    runs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                  and d not in ("logs", "tmp"))
    tasks = []
    for name, start in sorted(tee.starts.items(), key=lambda kv: kv[1]):
        end, status = tee.ends.get(name, (time.time(),
                                          "INTERRUPTED" if interrupted else "UNFINISHED"))
        tasks.append(TaskTiming(name, end - start, tee.logic.get(name), status))
    failed_task = next((t.name for t in reversed(tasks) if t.status != "SUCCESS"), "")
    if body_failure is not None:  # the exit tasks ran after it: the body's failure counts
        failed_task = body_failure[0]
    if interrupted:
        error = (f"interrupted (Ctrl-C) during task '{failed_task}'" if failed_task
                 else "interrupted (Ctrl-C)")
    elif not ok:
        message = (body_failure[1] if body_failure is not None else
                   tee.errors[-1] if tee.errors else tee.task_errors.get(failed_task, ""))
        if failed_task:
            error = f"task '{failed_task}' failed" + (f": {message}" if message else
                                                      f" ({_ANSI.sub('', error)})")
        elif message:
            error = f"{_ANSI.sub('', error)}\n{message}"
    return LocalRun(run_dir=os.path.join(root, runs[-1]) if runs else root, total_s=total,
                    tasks=tasks, ok=ok, error=_ANSI.sub("", error),
                    failed_task="" if ok else failed_task, interrupted=interrupted,
                    log_path=tee.log_path, exit_tasks=exit_tasks)


def _stop_after_ctrl_c() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a 2nd Ctrl-C too
    try:
        _stop_children()
    finally:
        signal.signal(signal.SIGINT, previous)


def _body_failure(tee: "_Tee") -> tuple:
    """(the failed task, its own message) from what kfp.local printed so far."""
    order = sorted(tee.starts.items(), key=lambda kv: kv[1])
    failed = next((name for name, _ in reversed(order)
                   if tee.ends.get(name, (0.0, "UNFINISHED"))[1] != "SUCCESS"), "")
    return failed, tee.errors[-1] if tee.errors else tee.task_errors.get(failed, "")


def log_tail(log_file: str, lines: int = 20) -> list:
    """The last ``lines`` lines a task printed (``logs/<task>.log``), without kfp.local's
    log lines, the KFP executor's own (its input JSON included) and their indentation."""
    try:
        with open(log_file, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return []
    kept, in_input = [], False
    for line in _ANSI.sub("", text).splitlines():
        if _KFP_LOG_LINE.match(line):
            continue
        line = line[4:] if line.startswith("    ") else line
        if in_input:  # the executor input, a JSON object ending with "}" in column 0
            in_input = line.rstrip() != "}"
            continue
        if line.startswith("[KFP Executor"):
            in_input = line.rstrip().endswith("Got executor_input:")
            continue
        if line.strip() and not set(line.strip()) <= {"-"}:
            kept.append(line.rstrip())
    return kept[-lines:]


def exit_task_names(spec: Any) -> list:
    """The tasks of a compiled pipeline that ``dsl.ExitHandler`` runs after its group,
    whatever the group's outcome (trigger strategy ALL_UPSTREAM_TASKS_COMPLETED)."""
    from kfp.pipeline_spec import pipeline_spec_pb2

    done = pipeline_spec_pb2.PipelineTaskSpec.TriggerPolicy.TriggerStrategy \
        .ALL_UPSTREAM_TASKS_COMPLETED
    return [name for name, task in spec.root.dag.tasks.items()
            if task.trigger_policy.strategy == done]


def _run_exit_tasks_safely(spec: Any, arguments: Mapping[str, Any], root: str, tee: "_Tee",
                           body_failure: tuple, error: str, where: str) -> list:
    """_run_exit_tasks; a Ctrl-C stops them (the run's failure stays its story), and
    anything they raise is printed, never raised: the body's failure is what counts."""
    try:
        return _run_exit_tasks(spec, arguments, root, tee, body_failure, error, where)
    except KeyboardInterrupt:
        _stop_after_ctrl_c()
    except Exception as exc:  # noqa: BLE001
        print(f"[kfp-ct] warning: the exit tasks could not run: {type(exc).__name__}: {exc}",
              flush=True)
    return []


def _run_exit_tasks(spec: Any, arguments: Mapping[str, Any], root: str, tee: "_Tee",
                    body_failure: tuple, error: str, where: str) -> list:
    """Runs the pipeline's exit tasks after its body failed, as a KFP backend does.

    kfp.local 2.13 runs an exit task (``dsl.ExitHandler``) only after a body that
    succeeded: it stops at the first failed task. This runs each exit task of ``spec``
    then, in the same run folder and through the same kfp.local runner (so its task
    events and logs are the run's), with its inputs resolved as kfp.local would. A task
    with a ``local_final_status`` input (components/notify: announce_failure) gets the
    outcome seen here as JSON: ``{"state": "FAILED", "failed_task", "error",
    "log_tail", "where"}``. An exit task that takes ``dsl.PipelineTaskFinalStatus`` is
    left out (kfp.local cannot run one after a successful body either).

    Returns:
        The exit tasks run.
    """
    from kfp.local import (config, dag_orchestrator, executor_input_utils, io,
                           placeholder_utils, task_dispatcher, utils)

    names = exit_task_names(spec)
    if not names:
        return []
    failed_task, message = body_failure
    tail = log_tail(os.path.join(root, "logs", f"{failed_task}.log")) if failed_task else []
    outcome = json.dumps({"state": "FAILED", "failed_task": failed_task,
                          "error": message or error, "log_tail": tail, "where": where})
    # kfp.local's SubprocessRunner(use_venv=False) replaces every "python3" in the task's
    # command, its executor input (our parameter values) included, with sys.executable:
    # a traceback's ".../lib/python3.11/..." would reach the notice as ".../bin/python.11".
    # The same JSON with that "3" escaped is untouched and reads back the same.
    outcome = outcome.replace("python3", "python\\u0033")
    folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                     and d not in ("logs", "tmp"))
    run_folder = folders[-1] if folders else \
        executor_input_utils.get_local_pipeline_resource_name(spec.pipeline_info.name)
    given = dag_orchestrator.join_user_inputs_and_defaults(
        dag_arguments=dict(arguments), dag_inputs_spec=spec.root.input_definitions)
    store = io.IOStore()
    for key, value in given.items():
        store.put_parent_input(key, value)
    executors = {name: utils.struct_to_executor_spec(executor) for name, executor in
                 spec.deployment_spec["executors"].items()}
    ran = []
    for name in names:
        task = spec.root.dag.tasks[name]
        if task.component_ref.name.removeprefix("comp-") in tee.starts:
            continue  # kfp.local ran it (the body succeeded; the exit task itself failed)
        component = spec.components[task.component_ref.name]
        try:
            task_args = dag_orchestrator.make_task_arguments(task.inputs, store)
        except (NotImplementedError, ValueError) as exc:
            print(f"[kfp-ct] exit task '{name}' not run here: {exc}", flush=True)
            continue
        if "local_final_status" in component.input_definitions.parameters:
            task_args["local_final_status"] = outcome
        task_dispatcher.run_single_task_implementation(
            pipeline_resource_name=run_folder, component_name=task.component_ref.name,
            component_spec=component, executor_spec=executors[component.executor_label],
            arguments=task_args, pipeline_root=root,
            runner=config.LocalExecutionConfig.instance.runner, raise_on_error=False,
            block_input_artifact=False, unique_pipeline_id=placeholder_utils.make_random_id())
        ran.append(name)
    return ran


def _task_starts(warm: bool, tmp: str, root: str):
    if not warm:
        return contextlib.nullcontext()
    from kfp_ct.pipelines.entrypoints import warm as warm_lib

    return warm_lib.tasks_start_warm(os.path.join(tmp, "warm"),
                                     os.path.join(root, "logs", "warm.log"))


def run_local(pipeline_func, arguments: dict, workdir: str = "local_outputs",
              verbose: bool = True, warm: Optional[bool] = None) -> LocalRun:
    """Runs `pipeline_func(**arguments)` under kfp.local in a fresh run folder of workdir.

    verbose=False shows one line per task instead of all the tasks print (the log keeps
    it). warm: tasks start as forks of a process that imported the heavy libraries once
    (pipelines/entrypoints/warm.py); None: unless ``$KFP_CT_WARM=0``.
    """
    from kfp_ct.pipelines.entrypoints import warm as warm_lib

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    root = os.path.abspath(os.path.join(workdir, stamp))
    return _run_traced(lambda: pipeline_func(**arguments), root, verbose=verbose,
                       warm=warm_lib.enabled() if warm is None else warm,
                       spec=getattr(pipeline_func, "pipeline_spec", None),
                       arguments=arguments)


def run_local_spec(pipeline_spec, arguments: Mapping[str, Any], root: str,
                   on_task_event: Optional[TaskEventCallback] = None,
                   where: str = "local", reuse_folder: Optional[str] = None,
                   reuse: Collection[str] = ()) -> LocalRun:
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
        where: Where the run is ("local", "local endpoint"): told to the exit tasks
            that run after a failed body (see ``_run_exit_tasks``).
        reuse_folder, reuse: A retry: run in the earlier attempt's run folder (its name
            under ``root``), re-using the outputs of the named tasks that succeeded there.

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
        os.path.abspath(root), on_task_event, spec=pipeline_spec, arguments=arguments,
        where=where, reuse_folder=reuse_folder, reuse=reuse)


def published(run: LocalRun, base: str) -> list | None:
    """The versions under model base ``base`` that this run published (its push, or a
    retraining it launched), as the registry says at the end of the run; None when the
    registry cannot be read. Every outcome line of a local run is derived from this, not
    from which task was running when the run stopped."""
    from kfp_ct.components.common import registry
    from kfp_ct.components.common.errors import KfpCtError

    if not base:
        return []
    if base not in run.published_in:  # the summary, the report and the Ctrl-C line ask
        try:
            found = registry.pushed_by_run(base, os.path.basename(run.run_dir.rstrip("/")))
        except (KfpCtError, OSError):
            found = None
        run.published_in[base] = found
    return run.published_in[base]


def outcome_line(run: LocalRun, base: str, versions: list | None = None) -> str:
    """One true sentence on what the run left at ``base``: the versions it published and
    production now, or that it published none (from the registry)."""
    from kfp_ct.components.common import registry
    from kfp_ct.components.common.errors import KfpCtError

    versions = published(run, base) if versions is None else versions
    if versions is None:
        return f"the model base {base} could not be read to tell what this run pushed"
    try:
        production = registry.production_version(base)
    except (KfpCtError, OSError):
        production = None
    now = (f"production is version {production}" if production is not None
           else "there is no production model")
    if not versions:
        return f"nothing pushed by this run ({now})"
    names = ", ".join(f"version {v.version} ({v.path})" for v in versions)
    return f"this run pushed {names}; {now}"


def notice_line(run: LocalRun) -> str:
    """One line on the failed-run notice of a failed run ("" when none was due): sent
    to where, or why not."""
    notice = run.notice()
    if run.ok or not notice:
        return ""
    delivery = notice.get("delivery") or {}
    if not delivery:
        return f"failed-run notice: not sent ({notice.get('note') or 'no target'})"
    if delivery.get("delivered"):
        return (f"failed-run notice: sent to {delivery.get('target')} "
                f"({delivery.get('attempts')} attempt(s))")
    return (f"failed-run notice: NOT delivered to {delivery.get('target')}: "
            f"{delivery.get('error') or delivery.get('skipped')}")


def _head(kind: str, run: LocalRun) -> list[str]:
    lines = ["", "=" * 72, f"kfp-ct {kind} pipeline: {'SUCCEEDED' if run.ok else 'FAILED'}"
             f" in {run.total_s:.1f} s", f"run folder: {run.run_dir}"]
    if run.log_path:
        lines.append(f"full log: {run.log_path} (per task: "
                     f"{os.path.join(os.path.dirname(run.log_path), 'logs')}/)")
    return lines


def training_report(run: LocalRun, steps: bool = True, base: str = "") -> str:
    """The short report a person reads after the training pipeline.

    steps=False leaves out the table of task times (the console showed them as they ran).
    base: the push destination; what was pushed is then read from its registry.
    """
    lines = _head("training", run)
    if steps:
        lines += ["", "Steps (wall s; own work s, heavy imports included; fixed = process "
                      "start + kfp executor):"]
    for t in run.tasks if steps else []:
        own = "-" if t.logic_s is None else f"{t.logic_s:.1f}"
        fixed = "-" if t.fixed_s is None else f"{t.fixed_s:.1f}"
        lines.append(f"  {t.name:<10} {t.wall_s:6.1f}  own {own:>5}  fixed {fixed:>5}  {t.status}")
    anomalies = run.read_json("validate", "anomalies", ANOMALIES_JSON)
    if anomalies is not None:
        lines += ["", f"Data anomalies: {len(anomalies) or 'none'}"]
        lines += [f"  - {a['feature']}: {a['kind']}: {a['detail']}" for a in anomalies]
    evaluation = run.read_json("evaluate", "evaluation", EVALUATION_JSON)
    if evaluation:
        baseline = evaluation["baseline"]
        lines += ["", "Evaluation (candidate vs production):"]
        cand = evaluation["candidate"]["overall"]
        prod = baseline.get("overall") or {}
        for metric in sorted(cand):
            other = prod.get(metric)
            lines.append(f"  {metric:<28} {report.fmt(cand[metric]):>10}   "
                         f"{report.fmt(other):>10}")
        lines.append(f"  baseline: {baseline['state']}"
                     + (f" (version {baseline['version']})" if baseline.get("version") else "")
                     + (f": {baseline['detail']}" if baseline.get("detail") else ""))
    blessing = run.read_json("gate", "blessing", BLESSING_JSON)
    if blessing:
        lines += ["", f"Gate: {'BLESSED' if blessing['blessed'] else 'NOT BLESSED'}"]
        for check in blessing.get("checks", []):
            lines.append(f"  [{check['verdict']}] {check.get('kind', '')} "
                         f"{check.get('metric') or ''}: {check['reason']}")
        lines += [f"  note: {n}" for n in blessing.get("notes", [])]
    pushed = run.read_json("push", "pushed", PUSH_JSON) or {}
    versions = published(run, base) if base else None
    if versions:
        lines += ["", "Pushed: " + ", ".join(f"version {v.version} at {v.path}"
                                             for v in versions)]
    elif pushed.get("reason") and not pushed.get("pushed"):
        lines += ["", f"Not pushed: {pushed['reason']}"]
    elif base:
        lines += ["", f"Not pushed: {outcome_line(run, base, versions)}"]
    elif pushed.get("pushed"):
        lines += ["", "Pushed: version {version} at {path}".format(**pushed)]
    if not run.ok:
        lines += ["", f"Error: {run.error}"] + ([notice_line(run)] if notice_line(run) else [])
    lines.append("=" * 72)
    return "\n".join(lines)


def training_summary(run: LocalRun, base: str = "") -> dict:
    """The training run's outcome for machines (``run-local --summary-json``); with the
    push destination ``base``, what was pushed is the registry's word."""
    pushed = run.read_json("push", "pushed", PUSH_JSON) or {}
    blessing = run.read_json("gate", "blessing", BLESSING_JSON) or {}
    summary = {"ok": run.ok, "run_dir": run.run_dir, "total_s": round(run.total_s, 1),
               "error": run.error, "failed_task": run.failed_task,
               "interrupted": run.interrupted, "log": run.log_path,
               "blessed": blessing.get("blessed"),
               "pushed": pushed.get("pushed"), "version": pushed.get("version"),
               "reason": pushed.get("reason", ""), "notice": run.notice()}
    versions = published(run, base) if base else None
    if versions is not None:
        newest = versions[-1] if versions else None
        summary.update(pushed=newest is not None,
                       version=newest.version if newest else None,
                       path=newest.path if newest else None)
    return summary


def monitoring_summary(run: LocalRun) -> dict:
    """The monitoring run's decision and launch, for machines (``--summary-json``)."""
    decision = run.read_json("drift-check", "decision", "drift.json") or {}
    launch = run.read_json("retrain-trigger", "launch", "launch.json")
    return {"ok": run.ok, "run_dir": run.run_dir, "total_s": round(run.total_s, 1),
            "error": run.error, "decision": decision.get("decision"),
            "drifted": decision.get("drifted", []), "reasons": decision.get("reasons", []),
            "anomalies": decision.get("anomalies", []), "findings": decision.get("findings", []),
            "performance": decision.get("performance") or {}, "launch": launch,
            "notice": run.notice()}


def monitoring_report(run: LocalRun, steps: bool = True) -> str:
    """The short report a person reads after the monitoring pipeline."""
    lines = _head("monitoring", run) + (["", "Steps (wall s):"] if steps else [])
    for t in run.tasks if steps else []:
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
        perf = decision.get("performance") or {}
        for part, title in (("realized", "Realized performance"),
                            ("estimated", "Estimated performance")):
            p = perf.get(part)
            if p:
                lines += ["", f"{title}: {p['decision']}"]
                if p.get("value") is not None:
                    lines.append(f"  {p['metric']} {p['value']:.4f} [{p['low']:.4f}, "
                                 f"{p['high']:.4f}] on {p['rows']} rows; at push: "
                                 f"{report.fmt(p.get('baseline'))}")
                if part == "realized" and (p.get("estimated") or {}).get("value") is not None:
                    e = p["estimated"]
                    lines.append(f"  estimated on the same rows before their labels: "
                                 f"{e['value']:.4f} [{e['low']:.4f}, {e['high']:.4f}]")
                if part == "estimated" and p.get("assumes"):
                    lines.append(f"  assumes: {p['assumes']}")
        if decision.get("findings"):
            lines.append(f"Findings: {', '.join(decision['findings'])}; retraining on: "
                         f"{', '.join(decision.get('launch_reasons') or []) or 'none of them'}")
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
                kind = (launch.get("trigger") or {}).get("kind") or "drift"
                lines.append(f"  pushed version {result.get('version')} (its lineage names "
                             f"the reason: {kind})")
            elif result.get("state") in ("SUCCEEDED", "FAILED"):
                lines.append(f"  not pushed: {result.get('reason') or 'see the log'}")
            if result.get("log"):
                lines.append(f"  training log: {result['log']}")
        else:
            lines += ["", f"Nothing launched: {launch.get('reason')}"]
    if not run.ok:
        lines += ["", f"Error: {run.error}"] + ([notice_line(run)] if notice_line(run) else [])
    lines.append("=" * 72)
    return "\n".join(lines)
