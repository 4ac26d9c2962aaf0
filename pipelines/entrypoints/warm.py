"""Warm task starts for local runs: each task forked from a process that has already
imported TensorFlow, TFDV, TFT and Beam, instead of importing them again (TFMA only
when a task needs it: local evaluation runs without it).

A local run spends about half its time importing the same libraries in every task
process (``import tensorflow_model_analysis`` alone is 6.5 s on 2 cores). Here one
*zygote* process imports them once, at the start of the run, and each task is a fork of
it. Nothing else changes: kfp.local still runs each task's own command
(``sh -c '... python3 -m kfp.dsl.executor_main ...'``) with the inputs and outputs it
defines; only the ``python3`` of that command is our launcher, which hands the call to
the zygote instead of starting a new interpreter.

Safety:

- No state passes from one task to the next: every task is a fresh fork of the zygote,
  which runs no task code itself (it only imports modules). Python's ``random`` reseeds
  in a fork by itself; NumPy's global generator is reseeded here, so a task draws what a
  new process would.
- A task that crashes (an exception, a signal, a segfault) ends with its own exit status,
  which kfp.local reports as that task's failure. A zygote that cannot be reached (it
  died, or failed to start) makes the launcher run the task cold, in a new interpreter,
  with a line in the task's log: the run goes on, slower.
- Ctrl-C reaches the forked tasks: they are descendants of the run (see
  ``kfp_ct.pipelines.entrypoints.local._stop_children``), and the launcher forwards SIGINT / SIGTERM.
- ``KFP_CT_WARM=0`` (or ``kfp-ct run-local --cold``) turns it off.

``kfp-ct run-local`` starts the zygote first thing (:func:`start_early`), so it imports
TensorFlow while the command builds the pipeline and checks its inputs; the run takes
that process over.

Linux and macOS (``os.fork``, Unix sockets). On a cluster nothing of this runs: each
task is its own pod.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Iterator, Optional

from kfp_ct.components.common import tfenv

#: Imported once by the zygote: what the tasks import (kfp's runtime mode, as a task
#: process has it), then our components' own modules.
#: What the zygote imports, in stages, in the order the tasks need them. A request is
#: forked as soon as the stages up to its task's are in (a task's key: the component
#: function it runs, or the module of a ``python -m`` check): validate runs on one core
#: while the next stages load on the other, and no task imports a library the zygote is
#: importing at the same time. A task of no stage waits for all of them.
STAGES: tuple[tuple[frozenset, tuple[str, ...]], ...] = (
    (frozenset({"validate"}), (
        "kfp_ct.components.common.tfenv",  # TF_USE_LEGACY_KERAS before TensorFlow is imported
        "kfp.dsl.executor_main", "tensorflow", "tensorflow_data_validation",
        "kfp_ct.components.validate.logic")),
    (frozenset({"transform"}), (
        "apache_beam", "tensorflow_transform", "tensorflow_transform.beam",
        "kfp_ct.components.transform.logic")),
    (frozenset({"train", "kfp_ct.components.push.canary"}), (
        "tf_keras", "kfp_ct.components.train.logic", "kfp_ct.components.push.canary")),
    # Evaluate runs in-process by default (no TFMA, no Beam); with beam_args the task
    # imports TFMA itself.
    (frozenset({"evaluate"}), ("kfp_ct.components.evaluate.logic", "kfp_ct.components.evaluate.inprocess")),
    (frozenset(), ("kfp_ct.components.gate.logic", "kfp_ct.components.push.logic")),
)
ENV_SWITCH = "KFP_CT_WARM"
ENV_LAUNCHER = tfenv.WARM_LAUNCHER_ENV  # names the launcher in a warm run's environment
_HEADER = 8  # bytes: the request's length


def enabled(default: bool = True) -> bool:
    """Warm starts unless ``$KFP_CT_WARM`` says 0 / false / off; only where fork exists."""
    value = os.environ.get(ENV_SWITCH, "").strip().lower()
    if value in ("0", "false", "off", "no"):
        return False
    if value in ("1", "true", "on", "yes"):
        return hasattr(os, "fork")
    return default and hasattr(os, "fork")


# ------------------------------------------------------------------------- launcher

_LAUNCHER = '''#!{python} -S
# kfp-ct warm launcher (pipelines/entrypoints/warm.py): hands "python -m MODULE ..." to the zygote.
import json, os, signal, socket, sys
SOCKET, PYTHON = {socket!r}, {python!r}
def cold(why):
    if why:
        sys.stderr.write("[kfp-ct] warm start unavailable (%s): starting cold\\n" % why)
        sys.stderr.flush()
    os.execv(PYTHON, [PYTHON] + sys.argv[1:])
args = sys.argv[1:]
if len(args) < 2 or args[0] != "-m":
    cold("")
try:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(SOCKET)
    body = json.dumps({{"argv": args, "env": dict(os.environ), "cwd": os.getcwd()}}).encode()
    socket.send_fds(conn, [len(body).to_bytes(8, "big")], [0, 1, 2])
    conn.sendall(body)
    reply = conn.makefile("rb")
    line = reply.readline()
    if not line:
        raise OSError("the zygote closed the connection")
except OSError as exc:
    cold(str(exc))
pid = int(line)
def forward(signum, frame):
    try:
        os.kill(pid, signum)
    except OSError:
        pass
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, forward)
line = reply.readline()
if not line:
    sys.stderr.write("[kfp-ct] the warm zygote went away while task pid %d ran\\n" % pid)
    sys.exit(1)
sys.exit(int(line))
'''


def _address(name: str) -> str:
    """A socket name as ``bind`` / ``connect`` take it: ``@name`` is Linux's abstract
    namespace (no file, no 108-byte path limit), anything else a path."""
    return "\0" + name[1:] if name.startswith("@") else name


def write_launcher(path: str, socket_path: str, python: str = sys.executable) -> str:
    """Writes the launcher script (an executable) at ``path``; returns ``path``."""
    with open(path, "w") as fh:
        fh.write(_LAUNCHER.format(python=python, socket=_address(socket_path)))
    os.chmod(path, 0o755)
    return path


# --------------------------------------------------------------------------- zygote


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = conn.recv(min(n - got, 1 << 20))
        if not chunk:
            raise OSError("request cut short")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _own_entries() -> set[str]:
    """The zygote's own sys.path entries that a task must not inherit: its start folder
    (``-m`` puts it first) and its PYTHONPATH."""
    return {sys.path[0]} | {p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}


#: The interpreter's own path (standard library, site-packages), without the zygote's
#: start folder and PYTHONPATH: what every new process has whatever its folder.
_BASE_PATH: list[str] | None = None


def task_sys_path(cwd: str, env: dict) -> list[str]:
    """sys.path as ``python -m MODULE`` started in ``cwd`` with ``env`` would have it: the
    folder first, then the task's PYTHONPATH, then the interpreter's own entries. A fork
    must not see the zygote's folder (a user's own ``components/`` package there would
    shadow or be shadowed) nor miss the task's."""
    base = _BASE_PATH if _BASE_PATH is not None else sys.path[1:]
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    return [cwd] + extra + [p for p in base if p not in extra and p != cwd]


def _run_child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the task process, run its module, exit."""
    import runpy
    import traceback

    code = 1
    try:
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[:] = task_sys_path(request["cwd"], request["env"])
        import tempfile

        tempfile.tempdir = None  # the task's own TMPDIR
        if "numpy" in sys.modules:  # a new process draws fresh numbers; so does a fork
            sys.modules["numpy"].random.seed()
        # Logging as a new process starts it: no handler yet (a preloaded library that
        # logged at import gave the root logger one), so the task's basicConfig applies.
        import logging

        for handler in list(logging.root.handlers):
            logging.root.removeHandler(handler)
        logging.root.setLevel(logging.WARNING)
        module, rest = request["argv"][1], request["argv"][2:]
        sys.modules.pop(module, None)  # run as __main__, as `python -m` does
        sys.argv = [module] + rest
        code = 0
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 130
    except BaseException:  # the task's own error: its traceback, as a new process shows it
        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def task_key(argv: list[str]) -> str:
    """What a request runs: the component function (``--function_to_execute``), else
    the module (``-m MODULE``)."""
    if "--function_to_execute" in argv[:-1]:
        return argv[argv.index("--function_to_execute") + 1]
    return argv[1] if len(argv) > 1 else ""


class _Zygote:
    """The zygote's loop: accept requests, fork each task once what it needs is loaded,
    report each task's exit status."""

    def __init__(self, server: socket.socket, stages=STAGES):
        self.server = server
        self.stages = stages
        self.loaded = -1  # the last stage fully imported
        self.pending: list[tuple[socket.socket, dict, list[int]]] = []
        self.waiting: dict[int, socket.socket] = {}
        self.forked = 0

    def _stage_of(self, request: dict) -> int:
        key = task_key(request["argv"])
        return next((i for i, (keys, _) in enumerate(self.stages) if key in keys),
                    len(self.stages) - 1)

    def poll(self, timeout: float) -> None:
        """Takes the requests that arrived (waiting up to ``timeout`` for one), forks
        those whose stage is loaded, and reports the tasks that ended."""
        ready, _, _ = select.select([self.server], [], [], timeout)
        while ready:
            self._accept()
            ready, _, _ = select.select([self.server], [], [], 0)
        for item in [p for p in self.pending if self._stage_of(p[1]) <= self.loaded]:
            self.pending.remove(item)
            self._fork(*item)
        self._reap()

    def _accept(self) -> None:
        conn, _ = self.server.accept()
        try:
            head, fds, _, _ = socket.recv_fds(conn, _HEADER, 3)
            request = json.loads(_recv_exact(conn, int.from_bytes(head, "big")))
        except (OSError, ValueError) as exc:
            print(f"[kfp-ct] warm zygote: bad request: {exc}", flush=True)
            conn.close()
            return
        self.pending.append((conn, request, fds))

    def _fork(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self.server.close()
            for other in list(self.waiting.values()) + [p[0] for p in self.pending]:
                other.close()
            conn.close()
            _run_child(request, fds)
        self.forked += 1
        for fd in fds:
            os.close(fd)
        conn.sendall(f"{pid}\n".encode())
        self.waiting[pid] = conn

    def _reap(self) -> None:
        while self.waiting:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code  # killed by a signal: 128 + signal
            conn = self.waiting.pop(pid, None)
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.sendall(f"{code}\n".encode())
                conn.close()


def serve(socket_path: str, ready_path: str = "", stages=STAGES) -> None:
    """The zygote: binds ``socket_path`` (then creates ``ready_path``), imports the
    stages' modules one by one, forking each task asked for as soon as its stage is in,
    then serves until its parent (the run) goes away or it is told to stop (SIGTERM)."""
    import importlib

    global _BASE_PATH
    own = _own_entries()
    _BASE_PATH = [p for p in sys.path if p not in own]
    parent = os.getppid()
    os.environ["_KFP_RUNTIME"] = "true"  # kfp as a task imports it (no client)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(_address(socket_path))  # before the imports: launchers can connect now
    server.listen(64)
    if ready_path:
        open(ready_path, "w").close()
    stop: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run decides; its tasks get Ctrl-C
    loop = _Zygote(server, stages)
    started, failed, marks = time.perf_counter(), [], []
    for index, (_, modules) in enumerate(stages):
        for name in modules:
            loop.poll(0)
            if stop:
                break
            try:
                importlib.import_module(name)
            except Exception as exc:  # a task that needs it imports it itself, says why
                failed.append(f"{name}: {type(exc).__name__}: {exc}")
        loop.loaded = index
        marks.append(f"{time.perf_counter() - started:.1f}")
    loop.loaded = len(stages)
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 0
    print(f"[kfp-ct] warm zygote pid {os.getpid()}: stages loaded at {', '.join(marks)} s; "
          f"{loop.forked} task(s) forked meanwhile; {threads} OS threads (native ones "
          f"are not copied into a fork)"
          + (f"; not preloaded: {failed}" if failed else ""), flush=True)
    while not stop and os.getppid() == parent:
        loop.poll(0.05)
    server.close()


class _ZygoteProcess:
    """A started zygote process: its socket, the file it creates once it listens, its log."""

    def __init__(self, folder: str, log_path: str, modules: Optional[tuple[str, ...]] = None,
                 own_folder: bool = False):
        """``own_folder``: the folder (and the log in it) is this process's alone, removed
        by :meth:`stop`."""
        import uuid

        os.makedirs(folder, exist_ok=True)
        self.folder, self.log_path, self.modules = folder, log_path, modules
        self.own_folder = own_folder
        # Linux: an abstract socket (no file, no 108-byte path limit); elsewhere a file.
        self.socket_path = (f"@kfp-ct-warm-{uuid.uuid4().hex}"
                            if sys.platform.startswith("linux")
                            else os.path.join(folder, "zygote.sock"))
        self.ready_path = os.path.join(folder, "zygote.ready")
        # kfp_ct is installed: the zygote needs no path of ours; each task gets its own
        # (task_sys_path).
        with open(log_path, "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kfp_ct.pipelines.entrypoints.warm", self.socket_path,
                 self.ready_path] + ([",".join(modules)] if modules else []),
                stdout=log, stderr=subprocess.STDOUT)

    def wait_listening(self) -> None:
        deadline = time.time() + 10  # bound, not imported: a second or less
        while (not os.path.exists(self.ready_path) and self.proc.poll() is None
               and time.time() < deadline):
            time.sleep(0.01)

    def stop(self, log_to: str = "") -> None:
        """Stops the process (if still running); ``log_to``: where its log's lines go on
        (appended) before an own folder is removed."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for path in (self.ready_path, self.socket_path):
            if not path.startswith("@"):
                with contextlib.suppress(OSError):
                    os.remove(path)
        if log_to:
            with contextlib.suppress(OSError), open(self.log_path, "rb") as src, \
                    open(log_to, "ab") as dst:
                shutil.copyfileobj(src, dst)
        if self.own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)


_early: Optional[_ZygoteProcess] = None


def start_early(modules: Optional[tuple[str, ...]] = None) -> None:
    """Starts the zygote now, for the next run's :func:`zygote` (with the same
    ``modules``) to take over.

    ``kfp-ct run-local`` calls this first thing, so the zygote imports TensorFlow while
    the command imports kfp, builds the pipeline and checks its inputs (about 2 s on 2
    cores), instead of after. Its own folder and log are temporary until a run takes it
    over; one that no run takes over (the checks refused the inputs) is stopped at exit.
    """
    global _early
    if _early is not None or not enabled():
        return
    import atexit
    import tempfile

    folder = tempfile.mkdtemp(prefix="kfp-ct-warm-")
    _early = _ZygoteProcess(folder, os.path.join(folder, "warm.log"), modules,
                            own_folder=True)
    atexit.register(_stop_early)


def _stop_early() -> None:
    global _early
    if _early is not None:
        # No run took it over, so it forked no task: killed at once, not asked to stop
        # (it heeds SIGTERM only between imports, seconds away during TensorFlow's).
        _early.proc.kill()
        _early.stop()
        _early = None


def _take_early(modules: Optional[tuple[str, ...]]) -> Optional[_ZygoteProcess]:
    global _early
    if _early is None or _early.modules != modules:
        return None
    taken, _early = _early, None
    if taken.proc.poll() is not None:  # it died: start anew
        taken.stop()
        return None
    return taken


@contextlib.contextmanager
def zygote(folder: str, log_path: str, modules: Optional[tuple[str, ...]] = None
           ) -> Iterator[str]:
    """Starts a zygote for one run (or takes over the one :func:`start_early` started);
    yields the launcher to use as the tasks' Python.

    Args:
        folder: A private folder of the run (socket and launcher go there).
        log_path: Where the zygote's own lines go.
        modules: What it imports, as one stage (default: ``STAGES``).
    """
    os.makedirs(folder, exist_ok=True)
    early = _take_early(modules)
    proc = early or _ZygoteProcess(folder, log_path, modules)
    launcher = write_launcher(os.path.join(folder, "python3"), proc.socket_path)
    proc.wait_listening()
    try:
        yield launcher
    finally:
        # An early one's lines so far are in its own temporary log.
        proc.stop(log_to=log_path if early is not None else "")


@contextlib.contextmanager
def tasks_start_warm(folder: str, log_path: str) -> Iterator[Optional[str]]:
    """For the duration: kfp.local starts tasks through the launcher (it puts
    ``sys.executable`` in the task command), and ``$KFP_CT_WARM_PYTHON`` names it."""
    with zygote(folder, log_path) as launcher:
        saved, saved_env = sys.executable, os.environ.get(ENV_LAUNCHER)
        sys.executable = launcher
        os.environ[ENV_LAUNCHER] = launcher
        try:
            yield launcher
        finally:
            sys.executable = saved
            if saved_env is None:
                os.environ.pop(ENV_LAUNCHER, None)
            else:
                os.environ[ENV_LAUNCHER] = saved_env


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "",
          ((frozenset(), tuple(m for m in sys.argv[3].split(",") if m)),)
          if len(sys.argv) > 3 else STAGES)
