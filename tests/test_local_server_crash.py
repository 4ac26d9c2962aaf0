"""The local endpoint after a crash (issue 22): what it shows is what happened.

A `kill -9` of the server takes its run's worker and task processes with it; a restart
ends a worker that survived anyway and settles every interrupted run from the run's own
record (status.json and the registry); SQLite keeps every answered request through a
SIGKILL at any moment. Real servers (`kfp-ct local-server` subprocesses), real workers
running test_local_server's tiny nap pipeline through kfp.local: no mocks, no
TensorFlow.
"""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest
import yaml
from kfp_server_api import models as m
from test_local_server import _until, fake_saved_model, package, run_folder  # noqa: F401
# (package: the tiny nap pipeline, a fixture)

from kfp_ct.pipelines.entrypoints.local_server import worker as worker_mod
from kfp_ct.pipelines.entrypoints.local_server.executor import (RESTARTED_ERROR, Executor,
                                                                 set_state, task_details)
from kfp_ct.pipelines.entrypoints.local_server.store import DB_NAME, Store

TOKEN = "crash-token"
KFP_CT = os.path.join(os.path.dirname(sys.executable), "kfp-ct")
API = "/apis/v2beta1"


@pytest.fixture(autouse=True)
def isolated_kfp(kfp_isolated):
    """No kfp env vars or context files (conftest)."""


@pytest.fixture
def servers(tmp_path):
    """Starts `kfp-ct local-server` subprocesses; any left is killed after the test. Their
    runtime files go to the test's folder, not the user's (a killed server leaves one)."""
    procs = []
    env = dict(os.environ, KFP_CT_RUNTIME_DIR=str(tmp_path / "runtime"))

    def start(state_dir):
        proc = subprocess.Popen([KFP_CT, "local-server", "--port", "0", "--state-dir",
                                 str(state_dir), "--token", TOKEN], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=env)
        procs.append(proc)
        line = proc.stdout.readline().strip()
        assert line.startswith("kfp-ct local endpoint on "), line
        return proc, line.split(" on ", 1)[1].split(" ", 1)[0]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _call(url, method="GET", body=None, content_type="application/json", timeout=10.0):
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"{}")


def _upload(url, package, name):
    boundary = uuid.uuid4().hex
    with open(package, "rb") as fh:
        data = fh.read()
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"uploadfile\"; "
            f"filename=\"tiny.yaml\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return _call(f"{url}{API}/pipelines/upload?name={name}", "POST", body,
                 f"multipart/form-data; boundary={boundary}")


def _alive(pid):
    """Alive and not a zombie (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _descendants(pid):
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, todo = [], [pid]
    while todo:
        pid = todo.pop()
        kids = [p for p, parent in parents.items() if parent == pid]
        found += kids
        todo += kids
    return found


def _status(run_dir):
    try:
        with open(os.path.join(run_dir, worker_mod.STATUS_FILE)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _nap_running(run_dir):
    """The worker's pid and its processes once the nap task's Python runs, else None."""
    status = _status(run_dir)
    if not status or not any(t["name"] == "nap" and t["state"] == "RUNNING"
                             for t in status["tasks"]):
        return None
    tree = _descendants(status["pid"])
    return (status["pid"], tree) if any(_is_task(p) for p in tree) else None


def _is_task(pid):
    """Whether the process is a kfp.local task's Python (the nap itself)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"kfp.dsl.executor_main" in fh.read().split(b"\0")
    except OSError:
        return False


def _long_run(url, package):
    """Uploads the tiny pipeline and starts a run whose nap task lasts 2 minutes."""
    pipeline = _upload(url, package, "tiny")
    version = _call(f"{url}{API}/pipelines/{pipeline['pipeline_id']}/versions"
                    )["pipeline_versions"][0]
    return _call(f"{url}{API}/runs", "POST", {
        "display_name": "long", "pipeline_version_reference": {
            "pipeline_id": pipeline["pipeline_id"],
            "pipeline_version_id": version["pipeline_version_id"]},
        "runtime_config": {"parameters": {"word": "w", "seconds": 120}}})["run_id"]


def _spec(package):
    with open(package) as fh:
        return yaml.safe_load(fh)


# ----------------------------------------------------------------------------- tests


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG, /proc")
def test_a_kill_9_of_the_server_ends_its_worker_and_the_restart_says_so(
        servers, tmp_path, package):
    """Before issue 22 the worker went on after a kill -9 (and could push) while the
    restarted server said FAILED with the task RUNNING."""
    state = tmp_path / "state"
    proc, url = servers(state)
    run = {"run_id": _long_run(url, package)}
    run_dir = str(state / "runs" / run["run_id"])
    worker, tree = _until(lambda: _nap_running(run_dir), 30, 0.05, "the nap task to run")

    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = time.time()
    _until(lambda: not any(_alive(p) for p in [worker, *tree]), 5, 0.05,
           f"the worker {worker} and its tasks {tree} to end after the server's kill -9")
    print(f"worker and {len(tree)} task processes gone {time.time() - killed:.2f} s "
          "after the kill")
    assert _status(run_dir)["interrupted"] is True

    _, url = servers(state)
    after = _call(f"{url}{API}/runs/{run['run_id']}")
    assert after["state"] == "FAILED"
    assert after["error"]["message"] == RESTARTED_ERROR
    tasks = {t["display_name"]: t["state"] for t in after["run_details"]["task_details"]}
    assert tasks == {"nap": "CANCELED"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_a_worker_killed_outright_leaves_no_task_behind(servers, tmp_path, package):
    """A SIGKILL (or OOM kill) of the worker alone: the executor ends what is left of its
    process group. Before issue 22 its task went on, orphaned, and could push."""
    state = tmp_path / "state"
    _, url = servers(state)
    run_id = _long_run(url, package)
    run_dir = str(state / "runs" / run_id)
    worker, tree = _until(lambda: _nap_running(run_dir), 30, 0.05, "the nap task to run")
    os.kill(worker, signal.SIGKILL)
    _until(lambda: not any(_alive(p) for p in tree), 5, 0.05,
           f"the tasks {tree} of the killed worker to end")
    after = _until(lambda: (lambda r: r if r["state"] != "RUNNING" else None)(
        _call(f"{url}{API}/runs/{run_id}")), 10, 0.1, "the run to settle")
    assert after["state"] == "FAILED" and "exited with status -9" in after["error"]["message"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_a_worker_alive_at_restart_is_ended_before_its_run_is_settled(tmp_path, package):
    """A worker whose server died without PR_SET_PDEATHSIG taking effect (or one whose
    parent is not the server) is found by the pid in its status.json and ended by the
    restart; before issue 22 it went on running while its run said FAILED."""
    state = str(tmp_path / "state")
    store = Store(state)
    executor = Executor(store, state)
    run = m.V2beta1Run(run_id="orphan", display_name="orphan", experiment_id="e1",
                       state="PENDING")
    store.add_run(set_state(run, "RUNNING"), _spec(package))
    run_dir = executor.run_dir("orphan")
    os.makedirs(run_dir)
    worker_mod.write_json_atomically(os.path.join(run_dir, worker_mod.JOB_FILE), {
        "run_id": "orphan", "pipeline_spec": _spec(package),
        "parameters": {"word": "w", "seconds": 120},
        "pipeline_root": os.path.join(run_dir, "outputs")})
    with open(os.path.join(run_dir, "log.txt"), "ab") as log:
        orphan = subprocess.Popen(  # parented by this test: PDEATHSIG never fires
            [sys.executable, "-m", "kfp_ct.pipelines.entrypoints.local_server.worker",
             "--run-dir", run_dir], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        worker, tree = _until(lambda: _nap_running(run_dir), 30, 0.05, "the nap task to run")
        assert worker == orphan.pid
        started = time.time()
        executor.recover()
        print(f"recover ended the worker in {time.time() - started:.2f} s")
        assert not any(_alive(p) for p in [worker, *tree])
        after = store.get("run", "orphan")
        assert after.state == "FAILED" and after.error.message == RESTARTED_ERROR
        assert [(t.display_name, t.state) for t in after.run_details.task_details] == [
            ("nap", "CANCELED")]
    finally:
        if orphan.poll() is None:
            os.killpg(orphan.pid, signal.SIGKILL)
        orphan.wait()
        store.close()


def test_a_restart_settles_each_interrupted_run_from_its_record_and_the_registry(tmp_path):
    """Before issue 22 every RUNNING run became FAILED at restart, also one whose push had
    published (its model is serving) and one whose worker had finished."""
    from kfp_ct.components.common import registry

    state = str(tmp_path / "state")
    store = Store(state)
    executor = Executor(store, state)
    base, root = tmp_path / "serving", tmp_path / "root"
    model = fake_saved_model(tmp_path / "model")
    running = [{"name": "gate", "state": "SUCCEEDED", "start": 1.0, "end": 2.0},
               {"name": "push", "state": "RUNNING", "start": 2.0, "end": None}]
    records = {
        "pushed": {"state": "RUNNING", "tasks": running},
        "not-pushed": {"state": "RUNNING", "tasks": running},
        "finished": {"state": "SUCCEEDED", "tasks": [dict(running[0])]},
        "failed": {"state": "FAILED", "error": "task 'gate' failed: ValueError: worse",
                   "tasks": [dict(running[0], state="FAILED")]},
        "no-record": None,
    }
    for run_id, status in records.items():
        run_dir = run_folder(executor, root, base, model, run_id, published=run_id == "pushed")
        run = m.V2beta1Run(run_id=run_id, display_name=run_id, experiment_id="e1",
                           state="PENDING")
        if status is not None:
            status = dict(status, pid=2 ** 22 + 7, error=status.get("error", ""))
            worker_mod.write_json_atomically(os.path.join(run_dir, "status.json"), status)
            run.run_details = m.V2beta1RunDetails(task_details=task_details(run_id, status))
        store.add_run(set_state(run, "RUNNING"), {})
    store.add_run(m.V2beta1Run(run_id="queued", display_name="queued", experiment_id="e1",
                               state="PENDING"), {})

    executor.recover()

    got = {run_id: store.get("run", run_id) for run_id in [*records, "queued"]}
    tasks = {k: {t.display_name: t.state for t in (r.run_details.task_details or [])}
             for k, r in got.items() if r.run_details}
    assert got["pushed"].state == "SUCCEEDED"
    assert got["pushed"].error.message == (f"it had pushed version 1 ({base}/1) before it "
                                           f"stopped; then {RESTARTED_ERROR}")
    assert tasks["pushed"] == {"gate": "SUCCEEDED", "push": "SUCCEEDED"}
    assert got["not-pushed"].state == "FAILED"
    assert got["not-pushed"].error.message == RESTARTED_ERROR
    assert tasks["not-pushed"] == {"gate": "SUCCEEDED", "push": "CANCELED"}
    assert got["finished"].state == "SUCCEEDED" and tasks["finished"] == {"gate": "SUCCEEDED"}
    assert got["failed"].state == "FAILED"
    assert got["failed"].error.message == "task 'gate' failed: ValueError: worse"
    assert got["no-record"].state == "FAILED"
    assert got["no-record"].error.message == RESTARTED_ERROR
    assert got["queued"].state == "PENDING"
    store.close()


def test_a_crash_inside_a_locked_block_keeps_all_of_its_writes_or_none(tmp_path):
    """`with store.lock:` is one transaction: an upload's pipeline and first version are
    written together. Before issue 22 each statement committed alone, so a kill between
    them left a pipeline without its version (and a retried upload answered 409)."""
    state = str(tmp_path / "state")
    code = (
        "import os, sys\n"
        "from kfp_server_api import models as m\n"
        "from kfp_ct.pipelines.entrypoints.local_server.store import Store\n"
        "store = Store(sys.argv[1])\n"
        "with store.lock:\n"
        "    store.add_pipeline(m.V2beta1Pipeline(pipeline_id='p1', display_name='tiny'))\n"
        "    os.kill(os.getpid(), 9)\n")
    proc = subprocess.run([sys.executable, "-c", code, state])
    assert proc.returncode == -signal.SIGKILL
    store = Store(state)
    try:
        assert store.get("pipeline", "p1") is None
        assert store._exec("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        store.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG, /proc")
def test_sqlite_keeps_every_answered_request_through_kill_9_at_any_moment(
        servers, tmp_path, package):
    """16 SIGKILLs at seeded random moments while a client uploads pipelines, creates
    experiments, runs and recurring runs (and runs execute): after each, the database is
    intact and holds every request answered 2xx before the kill; no worker outlives it."""
    state = tmp_path / "state"
    rng = random.Random(22)
    accepted = {"pipelines": [], "experiments": [], "runs": [], "recurring_runs": []}
    refs = []  # (pipeline_id, pipeline_version_id) accepted so far
    kills, answered = 16, 0

    def client(url, stop, n):
        nonlocal answered
        step = 0
        while not stop.is_set():
            step += 1
            try:
                kind = ["pipelines", "experiments", "runs", "recurring_runs"][step % 4]
                if kind == "pipelines" or not refs:
                    got = _upload(url, package, f"p-{n}-{step}")
                    version = _call(f"{url}{API}/pipelines/{got['pipeline_id']}/versions"
                                    )["pipeline_versions"][0]
                    accepted["pipelines"].append(got["pipeline_id"])
                    refs.append((got["pipeline_id"], version["pipeline_version_id"]))
                elif kind == "experiments":
                    got = _call(f"{url}{API}/experiments", "POST",
                                {"display_name": f"e-{n}-{step}"})
                    accepted[kind].append(got["experiment_id"])
                else:
                    pipeline_id, version_id = rng.choice(refs)
                    body = {"display_name": f"r-{n}-{step}", "pipeline_version_reference": {
                                "pipeline_id": pipeline_id, "pipeline_version_id": version_id},
                            "runtime_config": {"parameters": {"word": "w", "seconds": 0.3}}}
                    if kind == "runs":
                        got = _call(f"{url}{API}/runs", "POST", body)
                        accepted[kind].append(got["run_id"])
                    else:
                        body.update(trigger={"cron_schedule": {"cron": "0 0 3 * * *"}},
                                    max_concurrency="1", mode="ENABLE")
                        got = _call(f"{url}{API}/recurringruns", "POST", body)
                        accepted[kind].append(got["recurring_run_id"])
                answered += 1
            except (urllib.error.URLError, OSError, ValueError, KeyError):
                return  # the server is gone (or was killed mid-answer): not accepted

    started = time.time()
    workers = set()
    for n in range(kills):
        proc, url = servers(state)
        stop = threading.Event()
        thread = threading.Thread(target=client, args=(url, stop, n), daemon=True)
        thread.start()
        time.sleep(rng.uniform(0.05, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stop.set()
        thread.join(15)
        db = sqlite3.connect(str(state / DB_NAME))
        try:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            for table, ids in accepted.items():
                have = {row[0] for row in db.execute(f"SELECT id FROM {table}")}
                assert not set(ids) - have, f"kill {n}: answered {table} lost"
            have = {row[0] for row in db.execute(
                "SELECT pipeline_id FROM versions")}
            pipelines = {row[0] for row in db.execute("SELECT id FROM pipelines")}
            assert pipelines <= have, f"kill {n}: a pipeline without its uploaded version"
        finally:
            db.close()
        for run_id in os.listdir(state / "runs"):
            status = _status(str(state / "runs" / run_id))
            if status:
                workers.add(status["pid"])
    _, url = servers(state)  # and the restarted server answers them all
    for kind, ids in accepted.items():
        path = {"recurring_runs": "recurringruns"}.get(kind, kind)
        for item_id in ids:
            _call(f"{url}{API}/{path}/{item_id}")
    print(f"{kills} kills, {answered} requests answered 2xx, all kept; integrity ok; "
          f"{time.time() - started:.1f} s")
    assert answered >= kills and all(accepted.values())
    _until(lambda: not any(_alive(p) for p in workers - {None}), 5, 0.05,
           "the killed servers' workers to be gone")
