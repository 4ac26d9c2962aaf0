"""Runs one run of the local endpoint: ``python -m kfp_ct.pipelines.entrypoints.local_server.worker``.

The executor starts it as a subprocess with the run folder::

    python -m kfp_ct.pipelines.entrypoints.local_server.worker --run-dir STATE/runs/RUN_ID

It reads ``job.json`` there (``run_id``, ``pipeline_spec``, ``parameters``,
``pipeline_root``, and for a retry ``retry``: ``{"folder", "reuse", "attempt"}``), runs
the compiled pipeline through kfp.local
(``kfp_ct.pipelines.entrypoints.local.run_local_spec``), and rewrites ``status.json`` atomically (a temporary
file, then ``os.replace``) at every task start and end and at the end::

    {"run_id": "<the server's run id>", "state": "RUNNING" | "SUCCEEDED" | "FAILED",
     "tasks": [{"name", "state", "start", "end"}], "error": "...", "run_dir": "...",
     "run_folder": "<pipeline root>/<kfp.local's run folder>", "retry": {...},
     "pid": 1234, "updated": <epoch s>, "notice": {...}}

``notice``: the record of the pipeline's failed-run notice (components/notify), when the
pipeline has one: after a failed body the runner runs that exit task itself.

Exit status 0 when the run succeeded, 1 when it failed, 2 when the job cannot be read.

It dies with its server (README "Crashes"): on Linux it asks the kernel for SIGTERM when
its parent ends (``PR_SET_PDEATHSIG``), then checks that the parent is still the server
named by ``--server-pid`` (it may have died before the request), and exits at once if not.
SIGTERM (that signal, or the executor ending it) stops the run as Ctrl-C does: the task
processes are ended, ``status.json`` gets ``"interrupted": true`` and its running tasks
CANCELED, and the worker exits with 143.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from typing import Any, Optional

JOB_FILE = "job.json"
STATUS_FILE = "status.json"
_TASK_STATE = {"SUCCESS": "SUCCEEDED", "FAILURE": "FAILED"}
_PR_SET_PDEATHSIG = 1
SIGTERM_EXIT = 128 + signal.SIGTERM


def die_with_parent(server_pid: Optional[int]) -> bool:
    """Asks Linux to send this process SIGTERM when its parent ends, then checks that the
    parent is still ``server_pid`` (it may have ended before the request took effect).

    Returns:
        False when the server is already gone (the caller exits); True otherwise,
        including where prctl is unavailable (the server's restart ends such a worker).
    """
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    return server_pid is None or os.getppid() == server_pid


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the stop below must finish
    raise KeyboardInterrupt  # run_local_spec stops the task processes, as on Ctrl-C


def write_json_atomically(path: str, data: Any) -> None:
    """Writes JSON to ``path`` through a temporary file and ``os.replace``."""
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1)
    os.replace(tmp, path)


class _Status:
    """The status file of one run, rewritten on every change."""

    def __init__(self, run_dir: str, run_id: str) -> None:
        self.path = os.path.join(run_dir, STATUS_FILE)
        self.data: dict = {"run_id": run_id, "state": "RUNNING", "tasks": [], "error": "",
                           "run_dir": "", "pid": os.getpid(), "updated": time.time()}
        self.write()

    def write(self) -> None:
        self.data["updated"] = time.time()
        write_json_atomically(self.path, self.data)

    def on_task_event(self, event: str, task: str, status: Optional[str],
                      when: float) -> None:
        tasks = self.data["tasks"]
        if event == "start":
            tasks.append({"name": task, "state": "RUNNING", "start": when, "end": None})
        else:
            entry = next((t for t in reversed(tasks) if t["name"] == task), None)
            if entry is None:
                entry = {"name": task, "start": when}
                tasks.append(entry)
            entry["end"] = when
            entry["state"] = _TASK_STATE.get(status or "", "FAILED")
        self.write()


def failure_message(run: Any) -> str:
    """The run's error for people: the failing task and its own last error line
    (``kfp_ct.pipelines.entrypoints.local`` words it so: "task 'nap' failed: ValueError: ...")."""
    return run.error or "the run failed (no task started; see log.txt)"


def main(argv: Optional[list] = None) -> int:
    """Entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="the run folder holding job.json")
    parser.add_argument("--server-pid", type=int, default=None,
                        help="the server that started it: exit if it is gone")
    args = parser.parse_args(argv)
    if not die_with_parent(args.server_pid):
        print(f"[kfp-ct] the local server (pid {args.server_pid}) is gone; not starting",
              flush=True)
        return SIGTERM_EXIT
    run_dir = os.path.abspath(args.run_dir)
    try:
        with open(os.path.join(run_dir, JOB_FILE)) as fh:
            job = json.load(fh)
        run_id, spec = job["run_id"], job["pipeline_spec"]
        parameters, root = job.get("parameters") or {}, job["pipeline_root"]
        retry = job.get("retry") or {}
    except (OSError, ValueError, KeyError) as exc:
        print(f"[kfp-ct] cannot read {os.path.join(run_dir, JOB_FILE)}: {exc}", flush=True)
        return 2
    status = _Status(run_dir, run_id)
    if retry:
        status.data["retry"] = retry
    signal.signal(signal.SIGTERM, _on_sigterm)  # before: SIGTERM ends it (no task yet)
    try:
        return _run(status, spec, parameters, root)
    except KeyboardInterrupt:  # SIGTERM outside the tasks (before or after them)
        _interrupted(status, "interrupted (SIGTERM) outside a task")
        return SIGTERM_EXIT


def _interrupted(status: "_Status", error: str) -> None:
    """Records a stop by SIGTERM: its running tasks CANCELED, ``interrupted`` true."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for task in status.data["tasks"]:
        if task.get("state") == "RUNNING":
            task.update(state="CANCELED", end=time.time())
    status.data.update(state="FAILED", error=error, interrupted=True)
    status.write()
    sys.stdout.flush()


def _attempt(retry: dict, spec: Any) -> tuple:
    """(kfp.local's run folder name, the tasks whose outputs are re-used) of this attempt.

    A first attempt gets a new folder, named as kfp.local names one; a retry
    (``retry``: ``{"folder", "reuse"}`` from the run's earlier attempt) runs in the
    earlier folder and re-uses the tasks that succeeded there, except the exit tasks
    (``dsl.ExitHandler``), which report this attempt's outcome.
    """
    from google.protobuf import json_format
    from kfp.local import executor_input_utils
    from kfp.pipeline_spec import pipeline_spec_pb2

    from kfp_ct.pipelines.entrypoints.local import exit_task_names

    doc = spec.get("pipeline_spec") if isinstance(spec.get("pipeline_spec"), dict) else spec
    parsed = json_format.ParseDict(doc, pipeline_spec_pb2.PipelineSpec(),
                                   ignore_unknown_fields=True)
    if retry.get("folder"):
        exits = {parsed.root.dag.tasks[name].component_ref.name.removeprefix("comp-")
                 for name in exit_task_names(parsed)}
        return retry["folder"], set(retry.get("reuse") or ()) - exits
    return executor_input_utils.get_local_pipeline_resource_name(
        parsed.pipeline_info.name), set()


def _run(status: "_Status", spec: Any, parameters: dict, root: str) -> int:
    print(f"[kfp-ct] local endpoint run {status.data['run_id']}: pipeline root {root}",
          flush=True)
    from kfp_ct.pipelines.entrypoints.local import run_local_spec

    try:
        folder, reuse = _attempt(status.data.get("retry") or {}, spec)
        status.data["run_folder"] = os.path.join(root, folder)
        status.write()
        run = run_local_spec(spec, parameters, root, on_task_event=status.on_task_event,
                             where="local endpoint", reuse_folder=folder, reuse=reuse)
    except Exception as exc:  # the spec or kfp.local refused before any task ran
        import traceback

        traceback.print_exc()
        status.data.update(state="FAILED", error=f"{type(exc).__name__}: {exc}")
        status.write()
        return 1
    status.data["run_dir"] = run.run_dir
    notice = run.notice()  # the failed-run notice's record (components/notify), if any
    if notice is not None:
        status.data["notice"] = notice
    if run.interrupted:
        _interrupted(status, run.error.replace("Ctrl-C", "SIGTERM"))
        return SIGTERM_EXIT
    if run.ok:
        status.data["state"] = "SUCCEEDED"
    else:
        status.data.update(state="FAILED", error=failure_message(run))
    status.write()
    sys.stdout.flush()
    return 0 if run.ok else 1


if __name__ == "__main__":
    sys.exit(main())
