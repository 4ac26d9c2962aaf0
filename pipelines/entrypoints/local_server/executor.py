"""Executes the local endpoint's runs, one at a time, each in a worker subprocess.

One thread takes the oldest PENDING run, writes ``job.json`` into
``<state_dir>/runs/<run_id>/``, starts ``python -m kfp_ct.pipelines.entrypoints.local_server.worker``
there (cwd: the server's; environment inherited, unbuffered; stdout and stderr to
``log.txt``; its own process group, so that terminating it also ends the task it runs),
marks the run RUNNING, and while it runs copies the worker's ``status.json`` into the
run's ``run_details.task_details``. When the worker exits the run is SUCCEEDED, or FAILED with the
worker's error, or CANCELED when it was terminated.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Optional

from kfp_server_api import models as m

from kfp_ct.pipelines.entrypoints.local_server import worker as worker_mod
from kfp_ct.pipelines.entrypoints.local_server.store import Store

KILL_AFTER_S = 3.0
STOPPED_ERROR = "interrupted: the local server stopped"
RESTARTED_ERROR = "interrupted: the local server restarted"
_LOG_TAIL_LINES = 20
RETRY_FILE = "retry.json"  # the next attempt of a retried run: {"attempt", "folder", "reuse"}


def utcnow() -> dt.datetime:
    """Now, timezone-aware UTC."""
    return dt.datetime.now(dt.timezone.utc)


def _from_epoch(value: Optional[float]) -> Optional[dt.datetime]:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.timezone.utc)


def set_state(run: m.V2beta1Run, state: str, when: Optional[dt.datetime] = None,
              error: Optional[str] = None) -> m.V2beta1Run:
    """Moves a run (in memory) to ``state``, appending to its state history.

    Args:
        run: The run.
        state: A V2beta1RuntimeState value.
        when: The time of the change (default now).
        error: The error message of a FAILED (or CANCELED) run.

    Returns:
        The same run.
    """
    when = when or utcnow()
    status = m.GooglerpcStatus(code=13 if state == "FAILED" else 1, message=error,
                               details=[]) if error else None
    run.state = state
    run.state_history = list(run.state_history or []) + [
        m.V2beta1RuntimeStatus(update_time=when, state=state, error=status)]
    if status is not None:
        run.error = status
    if state in ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"):
        run.finished_at = when
    return run


def task_details(run_id: str, status: dict) -> list:
    """The worker's task list as V2beta1PipelineTaskDetail models."""
    out = []
    for i, task in enumerate(status.get("tasks") or []):
        start = _from_epoch(task.get("start"))
        out.append(m.V2beta1PipelineTaskDetail(
            run_id=run_id, task_id=f"{run_id}-{i}-{task['name']}", display_name=task["name"],
            create_time=start, start_time=start, end_time=_from_epoch(task.get("end")),
            state=task.get("state") or "RUNNING"))
    return out


class Executor:
    """Runs PENDING runs one at a time (see the module docstring).

    Args:
        store: The endpoint's state.
        state_dir: The state folder; runs live in ``<state_dir>/runs/<run_id>/``.
        poll_s: How often to look for work and at the worker's status file.
        default_root: The pipeline root of a run: ``default_root(run_id)``.
        metadata: Where each run is recorded as it runs (``metadata.Metadata``, ML
            Metadata); None: not recorded.
    """

    def __init__(self, store: Store, state_dir: str, poll_s: float = 0.25,
                 default_root: Optional[Callable[[str], str]] = None,
                 metadata: Any = None) -> None:
        self.store = store
        self.metadata = metadata  # local_server.metadata.Metadata, or None
        self.state_dir = os.path.abspath(state_dir)
        self.poll_s = min(poll_s, 0.25)
        self.default_root = default_root or (lambda rid: os.path.join(self.run_dir(rid),
                                                                      "outputs"))
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._proc: Optional[subprocess.Popen] = None
        self._current: Optional[str] = None
        self._terminated: set = set()
        self._thread: Optional[threading.Thread] = None

    def run_dir(self, run_id: str) -> str:
        """The folder of one run."""
        return os.path.join(self.state_dir, "runs", run_id)

    # ---------------------------------------------------------------- lifecycle

    def recover(self) -> None:
        """After a crash, each run left PENDING or RUNNING is settled from its own record.

        A worker still alive (its pid in ``status.json``) is ended first, so that nothing
        pushes after the restart unnoticed. A RUNNING run is then what its ``status.json``
        and the registry say (``_finish``): SUCCEEDED when its push published or the
        worker had finished it, FAILED with the worker's own error when it had failed by
        itself, else FAILED "interrupted: the local server restarted" with its running
        tasks CANCELED. PENDING runs stay queued (they never started).
        """
        with self.store.lock:
            for run in self.store.list("run", "state IN (?, ?)", ("PENDING", "RUNNING")):
                run_dir = self.run_dir(run.run_id)
                status_path = os.path.join(run_dir, worker_mod.STATUS_FILE)
                end_orphan_worker(run_dir, self._read_status(status_path))
                if run.state == "RUNNING":
                    status = self._read_status(status_path) or {}
                    code = 0 if status.get("state") == "SUCCEEDED" else -int(signal.SIGTERM)
                    self._finish(run.run_id, code, status_path,
                                 os.path.join(run_dir, "log.txt"), restarted=True)

    def start(self) -> None:
        """Starts the executor thread."""
        self._thread = threading.Thread(target=self._loop, name="kfp-ct-executor",
                                        daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Looks for PENDING runs now (a run was created)."""
        self._wake.set()

    def stop(self) -> None:
        """Stops taking runs; a running worker is ended and its run FAILED (stopped)."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            proc = self._proc
        if proc is not None:
            _end_process(proc)
        if self._thread is not None:
            self._thread.join(timeout=KILL_AFTER_S + 10)
            self._thread = None

    def terminate(self, run_id: str) -> bool:
        """Ends a run: a PENDING one is CANCELED at once, a RUNNING one's worker killed.

        Returns:
            Whether the run was PENDING or RUNNING.
        """
        with self.store.lock:
            run = self.store.get("run", run_id)
            if run is None or run.state not in ("PENDING", "RUNNING"):
                return False
            if run.state == "PENDING":
                self.store.save_run(set_state(run, "CANCELED",
                                              error="terminated before it started"))
                return True
        with self._lock:
            self._terminated.add(run_id)
            proc = self._proc if self._current == run_id else None
        if proc is not None:
            threading.Thread(target=_end_process, args=(proc,), daemon=True).start()
        return True

    def retry(self, run_id: str) -> Optional[str]:
        """Queues a FAILED or CANCELED run again, as the backend retries its workflow.

        The next attempt runs in the same kfp.local run folder and re-uses the outputs of
        the tasks that succeeded (``task_records``); the failed and not-run tasks run, and
        the exit tasks run again. The earlier attempt's ``status.json`` is kept as
        ``status-attempt-<n>.json``.

        Returns:
            None when queued, else the run's state (it cannot be retried).
        """
        with self.store.lock:
            run = self.store.get("run", run_id)
            if run is None or run.state not in ("FAILED", "CANCELED"):
                return run.state if run is not None else "missing"
            run_dir = self.run_dir(run_id)
            status = self._read_status(os.path.join(run_dir, worker_mod.STATUS_FILE)) or {}
            previous = self._read_status(os.path.join(run_dir, RETRY_FILE)) or {}
            attempt = int(previous.get("attempt") or 1) + 1
            folder = os.path.basename(status.get("run_folder") or "")
            reuse = sorted({t["name"] for t in status.get("tasks") or []
                            if t.get("state") == "SUCCEEDED" and t.get("name")})
            if os.path.exists(os.path.join(run_dir, worker_mod.STATUS_FILE)):
                os.replace(os.path.join(run_dir, worker_mod.STATUS_FILE),
                           os.path.join(run_dir, f"status-attempt-{attempt - 1}.json"))
            worker_mod.write_json_atomically(os.path.join(run_dir, RETRY_FILE), {
                "attempt": attempt, "folder": folder, "reuse": reuse if folder else []})
            set_state(run, "PENDING")
            run.finished_at = None
            run.error = None
            self.store.save_run(run)
        self.wake()
        return None

    # --------------------------------------------------------------------- loop

    def _loop(self) -> None:
        while not self._stopping.is_set():
            run = self.store.next_pending_run()
            if run is None:
                self._wake.wait(self.poll_s)
                self._wake.clear()
                continue
            try:
                self._execute(run)
            except Exception as exc:  # keep the executor alive; the run says why
                with self.store.lock:
                    again = self.store.get("run", run.run_id)
                    if again is not None and again.state in ("PENDING", "RUNNING"):
                        self.store.save_run(set_state(
                            again, "FAILED", error=f"the local server could not run it: "
                                                   f"{type(exc).__name__}: {exc}"))

    def _execute(self, run: m.V2beta1Run) -> None:
        run_id = run.run_id
        run_dir = self.run_dir(run_id)
        os.makedirs(run_dir, exist_ok=True)
        config = run.runtime_config or m.V2beta1RuntimeConfig()
        root = config.pipeline_root or ""
        if root.startswith("file://"):
            root = root[len("file://"):]
        note = ""
        if not root or "://" in root or not os.path.isabs(root):
            if root:
                note = (f"[kfp-ct] pipeline_root {config.pipeline_root!r} is not an absolute "
                        "local folder; using the run folder's outputs/ instead\n")
            root = self.default_root(run_id)
        job = {"run_id": run_id, "pipeline_spec": self.store.run_spec(run_id),
               "parameters": config.parameters or {}, "pipeline_root": root}
        retry = self._read_status(os.path.join(run_dir, RETRY_FILE))
        if retry and retry.get("folder"):
            job["retry"] = retry
        worker_mod.write_json_atomically(os.path.join(run_dir, worker_mod.JOB_FILE), job)
        status_path = os.path.join(run_dir, worker_mod.STATUS_FILE)
        if os.path.exists(status_path):  # a resumed run starts afresh
            os.remove(status_path)
        log_path = os.path.join(run_dir, "log.txt")
        with self.store.lock, self._lock:
            current = self.store.get("run", run_id)
            if current is None or current.state != "PENDING" or self._stopping.is_set():
                return  # deleted, terminated or stopping meanwhile
            with open(log_path, "ab") as log:
                if note:
                    log.write(note.encode())
                    log.flush()
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "kfp_ct.pipelines.entrypoints.local_server.worker",
                     "--run-dir", run_dir, "--server-pid", str(os.getpid())],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True,  # its own group: ending it ends its tasks
                    env=dict(os.environ, PYTHONUNBUFFERED="1"))  # log.txt as it happens
            self._current = run_id
            self.store.save_run(set_state(current, "RUNNING"))
        proc = self._proc
        seen: Any = None
        try:
            while proc.poll() is None:
                seen = self._sync(run_id, status_path, seen)
                time.sleep(self.poll_s)
            try:  # a worker killed outright (SIGKILL, OOM) leaves its tasks in its group
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self._finish(run_id, proc.returncode, status_path, log_path)
        finally:
            with self._lock:
                self._proc, self._current = None, None
                self._terminated.discard(run_id)

    def _read_status(self, path: str) -> Optional[dict]:
        try:
            with open(path) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return None

    def _sync(self, run_id: str, status_path: str, seen: Any) -> Any:
        """Copies the worker's task list into the stored run when it changed."""
        status = self._read_status(status_path)
        if status is None or status.get("tasks") == seen:
            return seen
        with self.store.lock:
            run = self.store.get("run", run_id)
            if run is not None and run.state == "RUNNING":
                run.run_details = m.V2beta1RunDetails(task_details=task_details(run_id,
                                                                                status))
                self.store.save_run(run)
        self._record(run_id, status, "RUNNING", status.get("tasks") or [])
        return status.get("tasks")

    def _record(self, run_id: str, status: dict, state: str, tasks: list) -> None:
        """Brings the run's ML Metadata records up to date; a failure to record is told
        on the server's stderr and never stops the run."""
        if self.metadata is None or not status.get("run_folder"):
            return
        try:
            with open(os.path.join(self.run_dir(run_id), worker_mod.JOB_FILE)) as fh:
                job = json.load(fh)
            self.metadata.record(run_id, job["pipeline_spec"], job.get("parameters") or {},
                                 job["pipeline_root"],
                                 os.path.basename(status["run_folder"]), state, tasks)
        except Exception as exc:  # noqa: BLE001 (a bug or a full disk: say so, go on)
            print(f"[kfp-ct] the run {run_id} could not be recorded in ML Metadata: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    def _finish(self, run_id: str, returncode: int, status_path: str, log_path: str,
                restarted: bool = False) -> None:
        status = self._read_status(status_path) or {}
        with self._lock:
            terminated = run_id in self._terminated
        # stopped by the server (stop, or a crash that a restart settles), not by itself
        stopped = self._stopping.is_set() or (restarted and (
            status.get("state") not in ("SUCCEEDED", "FAILED") or status.get("interrupted")))
        stop_error = RESTARTED_ERROR if restarted else STOPPED_ERROR
        with self.store.lock:
            run = self.store.get("run", run_id)
            if run is None:  # deleted while it ran
                return
            if status.get("tasks") is not None:
                details = task_details(run_id, status)
                if terminated or stopped:
                    for task in details:
                        if task.state == "RUNNING":
                            task.state, task.end_time = "CANCELED", utcnow()
                run.run_details = m.V2beta1RunDetails(task_details=details)
            succeeded = returncode == 0 and status.get("state") == "SUCCEEDED"
            pushed = [] if succeeded else published_by(self.run_dir(run_id))
            what = ""
            if pushed:  # the registry's word: what the run left, whatever stopped it
                names = ", ".join(f"version {v.version} ({v.path})" for v in pushed)
                what = f"it had pushed {names} before it stopped"
                for task in (run.run_details.task_details if run.run_details else []) or []:
                    if task.display_name == "push" and task.state != "SUCCEEDED":
                        task.state = "SUCCEEDED"
            if terminated:
                set_state(run, "CANCELED", error="terminated" + (f"; {what}" if pushed else ""))
            elif pushed:  # its work is done: a failure after the publish is bookkeeping
                then = (stop_error if stopped
                        else status.get("error") or f"the worker exited with {returncode}")
                set_state(run, "SUCCEEDED")
                run.error = m.GooglerpcStatus(code=0, message=f"{what}; then {then}",
                                              details=[])
            elif stopped:
                set_state(run, "FAILED", error=stop_error)
            elif succeeded:
                set_state(run, "SUCCEEDED")
            else:
                error = status.get("error") or (
                    f"the worker exited with status {returncode}: {_log_tail(log_path)}")
                set_state(run, "FAILED", error=error)
            self.store.save_run(run)
            details = (run.run_details.task_details if run.run_details else None) or []
            final_state = run.state
        self._record(run_id, status, final_state,
                     [{"name": t.display_name, "state": t.state,
                       "start": t.start_time.timestamp() if t.start_time else None}
                      for t in details])


def published_by(run_dir: str) -> list:
    """The versions a run of the endpoint published, from the registry its parameters
    name (``push_destination``, or ``model_base`` for a monitoring run's retraining)
    and the kfp.local run folders under its pipeline root; [] when none or unreadable."""
    from kfp_ct.components.common import registry
    from kfp_ct.components.common.errors import KfpCtError

    try:
        with open(os.path.join(run_dir, worker_mod.JOB_FILE)) as fh:
            job = json.load(fh)
        params = job.get("parameters") or {}
        base = params.get("push_destination") or params.get("model_base")
        root = job["pipeline_root"]
        names = [d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                 and d not in ("logs", "tmp")]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if not isinstance(base, str) or not base:
        return []
    found = []
    try:
        for name in names:
            found += registry.pushed_by_run(base, name)
    except (KfpCtError, OSError):
        return []
    return found


def _is_worker_of(pid: int, run_dir: str) -> bool:
    """Whether ``pid`` is alive (not a zombie) and is the worker of this run folder."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            args = fh.read().decode(errors="replace").split("\0")
    except (OSError, IndexError):
        return False
    return "kfp_ct.pipelines.entrypoints.local_server.worker" in args and run_dir in args


def _group_alive(pgid: int) -> bool:
    """Whether a process of process group ``pgid`` is alive and not a zombie (/proc)."""
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return False
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[0] != "Z" and fields[2] == str(pgid):
            return True
    return False


def end_orphan_worker(run_dir: str, status: Optional[dict]) -> bool:
    """Ends a worker that outlived its server (no PR_SET_PDEATHSIG, or it raced): its
    process group gets SIGTERM (the worker stops its tasks and records it), SIGKILL after
    ``KILL_AFTER_S``; it returns once no process of that group is left. Found by the pid
    in its ``status.json``; Linux (/proc) only.

    Returns:
        Whether there was one.
    """
    pid = (status or {}).get("pid")
    if not isinstance(pid, int) or not _is_worker_of(pid, run_dir):
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                return True
        deadline = time.monotonic() + KILL_AFTER_S
        while time.monotonic() < deadline:
            # Done when the worker and every process of its group (its tasks) are gone:
            # the worker can exit a moment before a task it stopped does.
            if not _is_worker_of(pid, run_dir) and not _group_alive(pid):
                return True
            time.sleep(0.05)
    return True


def _log_tail(path: str) -> str:
    try:
        with open(path, errors="replace") as fh:
            lines = [line.rstrip() for line in fh if line.strip()]
    except OSError:
        return "(no log)"
    return " | ".join(lines[-_LOG_TAIL_LINES:]) or "(empty log)"


def _end_process(proc: subprocess.Popen) -> None:
    """SIGTERM to the worker's process group, SIGKILL after a few seconds."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    try:
        proc.wait(timeout=KILL_AFTER_S)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(timeout=KILL_AFTER_S)
