"""The local KFP v2beta1 endpoint through the real kfp.Client 2.13, with real runs.

Runs execute a tiny lightweight component (sleeps, then returns or raises) through
kfp.local in the endpoint's worker subprocesses: no mocks, no TensorFlow.
"""

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings

import kfp
import kfp_server_api
import pytest
import yaml
from kfp import compiler, dsl
from kfp_server_api import models as m

from kfp_ct.pipelines.entrypoints.local_server import LocalServer, LocalServerError
from kfp_ct.pipelines.entrypoints.local_server import scheduler as sched
from kfp_ct.pipelines.entrypoints.local_server.executor import set_state
from kfp_ct.pipelines.entrypoints.local_server.store import Store

TOKEN = "s3cret-token"
UTC = dt.timezone.utc
ACTIVE = ("PENDING", "RUNNING")


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def nap(seconds: float, word: str, fail: bool) -> str:
    """Sleeps, then returns the word in capitals, or raises when asked to."""
    import time

    time.sleep(seconds)
    if fail:
        raise ValueError(f"asked to fail on {word!r}")
    return word.upper()


@dsl.pipeline(name="tiny")
def tiny(word: str, seconds: float = 0.2, fail: bool = False):
    nap(seconds=seconds, word=word, fail=fail)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """The tiny pipeline compiled to IR YAML."""
    path = tmp_path_factory.mktemp("pkg") / "tiny.yaml"
    compiler.Compiler().compile(tiny, str(path))
    return str(path)


@pytest.fixture(autouse=True)
def isolated_kfp(kfp_isolated):
    """No kfp env vars or context files (conftest); no client warnings."""
    warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture
def start_server():
    """Starts LocalServers; every one is stopped after the test."""
    started = []

    def start(state_dir, **kwargs):
        server = LocalServer(str(state_dir), **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _client(server, token=None):
    return kfp.Client(host=server.url, existing_token=token)


def _until(check, timeout=20.0, every=0.1, what="the condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _status(call):
    with pytest.raises(kfp_server_api.ApiException) as err:
        call()
    return err.value.status, json.loads(err.value.body)


def _setup(client, package):
    pipeline = client.upload_pipeline(package, pipeline_name="tiny")
    version = client.list_pipeline_versions(pipeline.pipeline_id).pipeline_versions[0]
    experiment = client.create_experiment("exp")
    return pipeline, version, experiment


def _runs_of(client, recurring_run_id):
    runs = client.list_runs(page_size=100).runs or []
    return [r for r in runs if r.recurring_run_id == recurring_run_id]


# ----------------------------------------------------------------------------- tests


def test_upload_versions_and_duplicate_names(start_server, tmp_path, package):
    server = start_server(tmp_path / "state")
    client = _client(server)
    assert server.host == "127.0.0.1" and server.url.startswith("http://127.0.0.1:")

    pipeline = client.upload_pipeline(package, pipeline_name="tiny", description="small")
    assert client.get_pipeline_id("tiny") == pipeline.pipeline_id  # filter key display_name
    second = client.upload_pipeline_version(package, "v2", pipeline_id=pipeline.pipeline_id)
    by_name = client.upload_pipeline_version(package, "v3", pipeline_name="tiny")
    versions = client.list_pipeline_versions(pipeline.pipeline_id).pipeline_versions
    assert [v.display_name for v in versions] == ["tiny", "v2", "v3"]
    assert by_name.pipeline_id == pipeline.pipeline_id
    with open(package) as fh:
        assert second.pipeline_spec == yaml.safe_load(fh)
    got = client.get_pipeline_version(pipeline.pipeline_id, second.pipeline_version_id)
    assert got.display_name == "v2" and got.pipeline_spec["pipelineInfo"]["name"] == "tiny"
    page = client.list_pipeline_versions(pipeline.pipeline_id, page_size=2, sort_by="name desc")
    assert [v.display_name for v in page.pipeline_versions] == ["v3", "v2"]
    assert page.next_page_token and page.total_size == 3
    name_filter = json.dumps({"predicates": [{"operation": 1, "key": "name",
                                              "stringValue": "tiny"}]})
    assert [p.pipeline_id for p in client.list_pipelines(filter=name_filter).pipelines] == [
        pipeline.pipeline_id]

    status, body = _status(lambda: client.upload_pipeline(package, pipeline_name="tiny"))
    assert status == 409 and body["code"] == 6 and "tiny" in body["message"]
    assert set(body) == {"error", "code", "message", "details"}
    status, body = _status(lambda: client.upload_pipeline_version(
        package, "v2", pipeline_id=pipeline.pipeline_id))
    assert status == 409 and body["code"] == 6 and "'v2'" in body["message"]
    status, body = _status(lambda: client.delete_pipeline(pipeline.pipeline_id))
    assert status == 400 and "existing pipeline versions" in body["message"]

    # Not compiled IR: 400 naming the problem.
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipelineInfo: {name: x}\nroot: {}\nnotAField: 1\n")
    status, body = _status(lambda: client.upload_pipeline(str(bad), pipeline_name="bad"))
    assert status == 400 and "notAField" in body["message"] and "PipelineSpec" in body["message"]
    # A platform spec (second YAML document) is kept beside the pipeline spec.
    with_platform = tmp_path / "with-platform.yaml"
    with open(package) as fh:
        with_platform.write_text(fh.read() + "---\nplatforms:\n  kubernetes:\n"
                                 "    deploymentSpec:\n      executors: {}\n")
    version = client.upload_pipeline_version(str(with_platform), "with-platform",
                                             pipeline_id=pipeline.pipeline_id)
    assert set(version.pipeline_spec) == {"pipeline_spec", "platform_spec"}

    client.delete_pipeline_version(pipeline.pipeline_id, by_name.pipeline_version_id)
    status, _ = _status(lambda: client.get_pipeline_version(pipeline.pipeline_id,
                                                            by_name.pipeline_version_id))
    assert status == 404

    assert client.get_pipeline(pipeline.pipeline_id).description == "small"
    empty = client._pipelines_api.pipeline_service_create_pipeline(
        body=m.V2beta1Pipeline(display_name="no-versions"))
    assert [p.display_name for p in client.list_pipelines(sort_by="created_at desc")
            .pipelines] == ["no-versions", "tiny"]
    client.delete_pipeline(empty.pipeline_id)
    status, _ = _status(lambda: client.get_pipeline(empty.pipeline_id))
    assert status == 404
    experiment = client.create_experiment("exp")
    assert {e.display_name for e in client.list_experiments().experiments} == {"Default", "exp"}
    client.delete_experiment(experiment.experiment_id)
    assert [e.display_name for e in client.list_experiments().experiments] == ["Default"]

    uploads = [r for r in server.requests if r.path == "/apis/v2beta1/pipelines/upload"]
    assert uploads[0].query["name"] == "tiny"
    assert uploads[0].body == {"multipart": [{"name": "uploadfile", "filename": "tiny.yaml",
                                              "size": os.path.getsize(package)}]}
    with open(tmp_path / "state" / "requests.jsonl") as fh:
        logged = [json.loads(line) for line in fh]
    assert len(logged) == len(server.requests)
    assert "pipelineInfo" not in json.dumps(logged[1:])  # file contents are not recorded


def test_runs_execute_succeed_fail_and_terminate(start_server, tmp_path, package):
    server = start_server(tmp_path / "state")
    client = _client(server)
    pipeline, version, experiment = _setup(client, package)
    run = client.run_pipeline(experiment.experiment_id, "ok", pipeline_id=pipeline.pipeline_id,
                              version_id=version.pipeline_version_id,
                              params={"word": "hi", "seconds": 1.5})
    assert run.state == "PENDING"

    def running_task():
        got = client.get_run(run.run_id)
        tasks = (got.run_details and got.run_details.task_details) or []
        return got.state == "RUNNING" and [t for t in tasks if t.state == "RUNNING"]

    [task] = _until(running_task, what="a RUNNING task while the run runs")
    assert task.display_name == "nap" and task.start_time and not task.end_time
    done = client.wait_for_run_completion(run.run_id, timeout=60, sleep_duration=0.2)
    assert done.state == "SUCCEEDED" and done.finished_at and done.error is None
    [task] = done.run_details.task_details
    assert task.state == "SUCCEEDED" and task.end_time >= task.start_time
    assert [s.state for s in done.state_history] == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert done.runtime_config.parameters == {"word": "hi", "seconds": 1.5}
    run_dir = tmp_path / "state" / "runs" / run.run_id
    status = json.loads((run_dir / "status.json").read_text())
    assert status["run_id"] == run.run_id and status["state"] == "SUCCEEDED"
    assert status["run_dir"].startswith(str(run_dir / "outputs"))
    assert (run_dir / "log.txt").stat().st_size > 0
    outputs = [os.path.join(d, f) for d, _, files in os.walk(run_dir / "outputs")
               for f in files if f == "executor_output.json"]
    assert [json.load(open(p))["parameterValues"] for p in outputs] == [{"Output": "HI"}]

    failed = client.run_pipeline(experiment.experiment_id, "boom",
                                 pipeline_id=pipeline.pipeline_id,
                                 version_id=version.pipeline_version_id,
                                 params={"word": "bad", "fail": True})
    failed = client.wait_for_run_completion(failed.run_id, timeout=60, sleep_duration=0.2)
    assert failed.state == "FAILED"
    assert failed.error.message == "task 'nap' failed: ValueError: asked to fail on 'bad'"
    assert failed.run_details.task_details[0].state == "FAILED"

    slow = client.run_pipeline(experiment.experiment_id, "slow",
                               pipeline_id=pipeline.pipeline_id,
                               version_id=version.pipeline_version_id,
                               params={"word": "z", "seconds": 30})
    _until(lambda: client.get_run(slow.run_id).state == "RUNNING", what="RUNNING")
    started = time.time()
    client.terminate_run(slow.run_id)
    _until(lambda: client.get_run(slow.run_id).state == "CANCELED", what="CANCELED")
    assert time.time() - started < 10

    listed = client.list_runs(experiment_id=experiment.experiment_id, sort_by="created_at")
    assert [r.display_name for r in listed.runs] == ["ok", "boom", "slow"]
    state_filter = json.dumps({"predicates": [{"operation": 1, "key": "state",
                                               "stringValue": "FAILED"}]})
    assert [r.display_name for r in client.list_runs(filter=state_filter).runs] == ["boom"]
    client.delete_run(failed.run_id)
    status_code, _ = _status(lambda: client.get_run(failed.run_id))
    assert status_code == 404


def test_parameters_versions_and_schedule_rules_are_checked(start_server, tmp_path, package):
    server = start_server(tmp_path / "state")
    client = _client(server)
    pipeline, version, experiment = _setup(client, package)
    ids = {"pipeline_id": pipeline.pipeline_id, "version_id": version.pipeline_version_id}

    def run(params, **kw):
        return lambda: client.run_pipeline(experiment.experiment_id, "r", params=params,
                                           **(kw or ids))

    status, body = _status(run({"word": "a", "colour": "red"}))
    assert status == 400 and body["code"] == 3 and "colour" in body["message"]
    status, body = _status(run({"word": "a", "seconds": "slow"}))
    assert status == 400 and "seconds" in body["message"] and "a number" in body["message"]
    status, body = _status(run({"seconds": 1.0}))
    assert status == 400 and "word" in body["message"]
    status, body = _status(run({"word": "a", "colour": "red"}, pipeline_package_path=package))
    assert status == 400 and "colour" in body["message"]  # an inline spec is checked too
    status, body = _status(run({"word": "a"}, pipeline_id=pipeline.pipeline_id,
                               version_id="no-such-version"))
    assert status == 404 and body["code"] == 5 and "no-such-version" in body["message"]
    status, body = _status(lambda: client.run_pipeline("no-such-exp", "r", params={"word": "a"},
                                                       **ids))
    assert status == 404 and "no-such-exp" in body["message"]
    assert client.list_runs().runs is None  # nothing was created

    def recurring(**kw):
        args = dict(experiment_id=experiment.experiment_id, job_name="rr",
                    params={"word": "a"}, **ids)
        args.update(kw)
        return lambda: client.create_recurring_run(**args)

    status, body = _status(recurring(cron_expression="0 3 * * *"))
    assert status == 400 and "six" in body["message"] and "'0 0 3 * * *'" in body["message"]
    for bad in (0, 11):
        status, body = _status(recurring(interval_second=60, max_concurrency=bad))
        assert status == 400 and "max_concurrency" in body["message"] and str(bad) in \
            body["message"]
    status, body = _status(recurring(interval_second=60, version_id="gone"))
    assert status == 404 and "gone" in body["message"]
    status, body = _status(recurring(interval_second=60, params={"word": 3}))
    assert status == 400 and "word" in body["message"]
    status, body = _status(recurring(interval_second=60, start_time="2026-01-02T00:00:00Z",
                                     end_time="2026-01-01T00:00:00Z"))
    assert status == 400 and "end time" in body["message"]
    assert client.list_recurring_runs().recurring_runs is None

    # What kfp 2.13 sends: max_concurrency and interval_second as JSON numbers.
    ok = client.create_recurring_run(experiment.experiment_id, "daily", cron_expression=
                                     "0 0 3 * * *", params={"word": "a"}, enabled=False, **ids)
    assert ok.status == "DISABLED" and ok.max_concurrency == "1"
    assert ok.trigger.cron_schedule.cron == "0 0 3 * * *"
    [sent] = [r.body for r in server.requests if r.method == "POST" and
              r.path == "/apis/v2beta1/recurringruns"][-1:]
    assert sent["max_concurrency"] == 1 and sent["mode"] == "DISABLE"


def test_recurring_run_fires_within_max_concurrency_and_obeys_enable_disable_delete(
        start_server, tmp_path, package):
    server = start_server(tmp_path / "state", poll_s=0.1)
    client = _client(server)
    pipeline, version, experiment = _setup(client, package)
    rr = client.create_recurring_run(experiment.experiment_id, "every2", interval_second=2,
                                     max_concurrency=1, params={"word": "tick", "seconds": 2.5},
                                     pipeline_id=pipeline.pipeline_id,
                                     version_id=version.pipeline_version_id)
    assert rr.status == "ENABLED" and rr.trigger.periodic_schedule.interval_second == "2"
    rid = rr.recurring_run_id

    most_active = 0

    def two_runs():
        nonlocal most_active
        runs = _runs_of(client, rid)
        most_active = max(most_active, sum(r.state in ACTIVE for r in runs))
        return len(runs) >= 2 and runs

    runs = _until(two_runs, timeout=25, what="two runs of the recurring run")
    assert most_active == 1  # the second slot waited for the first run to end
    first = runs[0]
    assert first.display_name == "every2-" + first.scheduled_at.astimezone(UTC).strftime(
        "%Y%m%d%H%M%S")
    assert first.experiment_id == experiment.experiment_id
    assert first.pipeline_version_reference.pipeline_version_id == version.pipeline_version_id
    assert client.get_run(first.run_id).state == "SUCCEEDED"

    client.disable_recurring_run(rid)
    assert client.get_recurring_run(rid).status == "DISABLED"
    count = len(_runs_of(client, rid))
    time.sleep(2.5)
    assert len(_runs_of(client, rid)) == count

    client.enable_recurring_run(rid)
    assert client.get_recurring_run(rid).status == "ENABLED"
    _until(lambda: len(_runs_of(client, rid)) > count, timeout=25, what="a run after enable")
    listed = client.list_recurring_runs(experiment_id=experiment.experiment_id)
    assert [r.recurring_run_id for r in listed.recurring_runs] == [rid]

    client.delete_recurring_run(rid)
    status, _ = _status(lambda: client.get_recurring_run(rid))
    assert status == 404
    count = len(_runs_of(client, rid))
    time.sleep(2.2)
    assert len(_runs_of(client, rid)) == count >= 3  # its runs stay; no new ones


def test_due_slots_catchup_no_catchup_cron_and_window():
    t0 = dt.datetime(2026, 1, 1, tzinfo=UTC)
    periodic = m.V2beta1RecurringRun(trigger=m.V2beta1Trigger(
        periodic_schedule=m.V2beta1PeriodicSchedule(interval_second="10")))
    now = t0 + dt.timedelta(seconds=35)
    assert sched.due_slots(periodic, None, t0.timestamp(), now, latest_only=False) == [
        t0 + dt.timedelta(seconds=s) for s in (10, 20, 30)]
    # More than one interval behind without catch-up: the backend fires once, at "now".
    assert sched.due_slots(periodic, None, t0.timestamp(), now, latest_only=True) == [now]
    last = (t0 + dt.timedelta(seconds=30)).timestamp()
    assert sched.due_slots(periodic, last, t0.timestamp(), now, latest_only=False) == []
    cron = m.V2beta1RecurringRun(trigger=m.V2beta1Trigger(cron_schedule=m.V2beta1CronSchedule(
        cron="0 0 3 * * *", end_time=t0 + dt.timedelta(days=2))))
    later = t0 + dt.timedelta(days=5)
    assert sched.due_slots(cron, None, t0.timestamp(), later, latest_only=False) == [
        t0.replace(hour=3), t0.replace(day=2, hour=3)]  # none after end_time
    assert sched.due_slots(cron, None, t0.timestamp(), later, latest_only=True) == [
        t0.replace(day=2, hour=3)]
    start = m.V2beta1RecurringRun(trigger=m.V2beta1Trigger(
        periodic_schedule=m.V2beta1PeriodicSchedule(interval_second="10",
                                                    start_time=t0 + dt.timedelta(hours=1))))
    assert sched.due_slots(start, None, t0.timestamp(), now, latest_only=False) == []


def test_auth_errors_and_routes(start_server, tmp_path):
    server = start_server(tmp_path / "state", token=TOKEN)
    assert _client(server, token=TOKEN).list_pipelines().pipelines is None
    status, body = _status(lambda: _client(server, token="wrong").list_pipelines())
    assert status == 401 and body["code"] == 16 and "not valid" in body["message"]
    status, body = _status(lambda: _client(server).list_experiments())
    assert status == 401 and "Authorization" in body["message"]

    def raw(method, path, headers=None):
        request = urllib.request.Request(server.url + path, method=method,
                                         headers=headers or {})
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    assert raw("GET", "/apis/v2beta1/healthz") == (200, {"multi_user": False})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, body = raw("GET", "/apis/v2beta1/nothing-here", auth)
    assert status == 404 and body["code"] == 5
    status, body = raw("PATCH", "/apis/v2beta1/runs", auth)
    assert status == 405 and "GET, POST" in body["message"]
    status, body = raw("POST", "/apis/v2beta1/experiments", auth)
    assert status == 400 and "no body" in body["message"]

    with open(tmp_path / "state" / "requests.jsonl") as fh:
        text = fh.read()
    assert TOKEN not in text and "wrong" not in text
    logged = [json.loads(line) for line in text.splitlines()]
    assert {r["headers"].get("authorization") for r in logged} == {None, "Bearer ***"}
    assert [r.headers.get("authorization") for r in server.requests] == [
        r["headers"].get("authorization") for r in logged]

    with pytest.raises(LocalServerError, match="loopback"):
        LocalServer(str(tmp_path / "other"), host="0.0.0.0")


def _raw_exchange(server, head: bytes, body: bytes = b"") -> tuple[int, dict]:
    """Sends ``head`` (and ``body``) on a fresh socket; the answer's status and JSON."""
    import socket

    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(head + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


@pytest.mark.parametrize("path,length,limit", [
    ("/apis/v2beta1/pipelines/upload", 1 << 30, "32 MiB"),  # 1 GiB announced
    ("/apis/v2beta1/experiments", 5 << 20, "4 MiB"),
], ids=["upload", "json"])
def test_an_oversized_body_is_refused_with_413_before_it_is_read(start_server, tmp_path,
                                                                 path, length, limit):
    """Before: the handler read Content-Length bytes whatever their number (a 1 GiB upload
    held that much memory); here nothing of the body is sent, and the answer comes at once
    (a server that waited for the body would time the socket out)."""
    server = start_server(tmp_path / "state")
    started = time.monotonic()
    status, body = _raw_exchange(server, (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n").encode())
    assert time.monotonic() - started < 2
    assert status == 413 and body["code"] == 8
    assert f"({limit})" in body["message"] and f"Content-Length {length}" in body["message"]
    assert _client(server).list_experiments() is not None  # and it serves on


def test_the_upload_limit_is_a_setting(start_server, tmp_path):
    """`kfp-ct local-server --max-upload-mb N`: the limit the 413 names is the one set."""
    server = start_server(tmp_path / "state", max_upload_bytes=1 << 20)
    status, body = _raw_exchange(server, (
        f"POST /apis/v2beta1/pipelines/upload HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {2 << 20}\r\n\r\n").encode())
    assert status == 413 and "(1 MiB)" in body["message"]
    with pytest.raises(Exception, match="at least 1 MiB"):
        LocalServer(str(tmp_path / "other"), max_upload_bytes=1000)


def test_a_chunked_body_over_the_limit_is_refused_with_413(start_server, tmp_path):
    """A chunk announced past the limit is refused before its bytes are read."""
    server = start_server(tmp_path / "state")
    status, body = _raw_exchange(server, (
        b"POST /apis/v2beta1/experiments HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % (5 << 20)))
    assert status == 413 and "(4 MiB)" in body["message"] and "chunked" in body["message"]


def test_restart_keeps_state_and_settles_interrupted_runs(start_server, tmp_path, package):
    state = tmp_path / "state"
    first = start_server(state)
    client = _client(first)
    pipeline, version, experiment = _setup(client, package)
    ids = {"pipeline_id": pipeline.pipeline_id, "version_id": version.pipeline_version_id}
    rr = client.create_recurring_run(experiment.experiment_id, "nightly",
                                     cron_expression="0 0 3 * * *", params={"word": "n"},
                                     **ids)
    slow = client.run_pipeline(experiment.experiment_id, "slow", params={"word": "s",
                                                                         "seconds": 30}, **ids)
    queued = client.run_pipeline(experiment.experiment_id, "queued", params={"word": "q"},
                                 **ids)
    _until(lambda: client.get_run(slow.run_id).state == "RUNNING", what="RUNNING")
    started = time.time()
    first.stop()
    assert time.time() - started < 10

    # A run left RUNNING by a crash (written as a crashed server would have left it).
    store = Store(str(state))
    schedule = store.schedule_of(rr.recurring_run_id)
    crashed = store.get("run", queued.run_id)
    assert crashed.state == "PENDING"
    ghost = m.V2beta1Run(**{k: getattr(crashed, k) for k in crashed.openapi_types})
    ghost.run_id, ghost.display_name = "ghost-run", "ghost"
    store.add_run(set_state(ghost, "RUNNING"), store.run_spec(queued.run_id))
    store.close()

    second = start_server(state)
    client = _client(second)
    assert client.get_pipeline_id("tiny") == pipeline.pipeline_id
    assert [v.display_name for v in client.list_pipeline_versions(
        pipeline.pipeline_id).pipeline_versions] == ["tiny"]
    assert client.get_experiment(experiment_name="exp").experiment_id == \
        experiment.experiment_id
    again = client.get_recurring_run(rr.recurring_run_id)
    assert again.status == "ENABLED" and again.trigger.cron_schedule.cron == "0 0 3 * * *"
    assert second.store.schedule_of(rr.recurring_run_id) == schedule
    stopped = client.get_run(slow.run_id)
    assert stopped.state == "FAILED"
    assert stopped.error.message == "interrupted: the local server stopped"
    ghost = client.get_run("ghost-run")
    assert ghost.state == "FAILED"
    assert ghost.error.message == "interrupted: the local server restarted"
    resumed = client.wait_for_run_completion(queued.run_id, timeout=60, sleep_duration=0.2)
    assert resumed.state == "SUCCEEDED"


def test_serve_prints_its_address_and_stops_on_sigterm(tmp_path, monkeypatch):
    monkeypatch.setenv("KFP_CT_RUNTIME_DIR", str(tmp_path / "runtime"))
    code = ("from kfp_ct.pipelines.entrypoints.local_server import serve; "
            f"serve({str(tmp_path / 'state')!r}, 0, None)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("kfp-ct local endpoint on http://127.0.0.1:")
        assert f"(state: {tmp_path / 'state'}) token: " in line
        assert line.endswith(f"(also in {tmp_path / 'state' / 'token'})")
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        with urllib.request.urlopen(url + "/apis/v2beta1/healthz") as response:
            assert json.loads(response.read()) == {"multi_user": False}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def fake_saved_model(folder) -> str:
    """A folder shaped like a SavedModel (dummy bytes): enough for a registry publish."""
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"pb")
    (folder / "variables" / "variables.index").write_bytes(b"index")
    return str(folder)


def run_folder(executor, root, base, model: str, run_id: str, published: bool) -> str:
    """The run folder of an endpoint run that pushes to ``base``, as its worker leaves it
    (job.json; the kfp.local run folder under its pipeline root), with the version its
    push published in the registry when ``published``. Returns the run folder."""
    from kfp_ct.components.common import registry
    from kfp_ct.pipelines.entrypoints.local_server import worker as worker_mod

    run_name = f"kfp-ct-training-{run_id}"
    (root / run_id / run_name).mkdir(parents=True)
    if published:
        registry.publish(str(base), model, {"parent_run": {"run_name": run_name}})
    run_dir = executor.run_dir(run_id)
    os.makedirs(run_dir)
    worker_mod.write_json_atomically(os.path.join(run_dir, worker_mod.JOB_FILE), {
        "run_id": run_id, "pipeline_spec": {}, "pipeline_root": str(root / run_id),
        "parameters": {"push_destination": str(base)}})
    return run_dir


@pytest.mark.parametrize("how", ["terminated", "server stopped", "worker failed"])
def test_a_run_stopped_after_its_push_published_says_so_from_the_registry(tmp_path, how):
    """The endpoint's run state on an interrupted run is the registry's word: a run whose
    push had published is not FAILED (terminated: CANCELED, naming the version), and its
    push task is SUCCEEDED; one whose push had not, stays as it was (issue 21)."""
    from kfp_server_api import models as m

    from kfp_ct.pipelines.entrypoints.local_server import worker as worker_mod
    from kfp_ct.pipelines.entrypoints.local_server.executor import Executor, task_details
    from kfp_ct.pipelines.entrypoints.local_server.store import Store

    store = Store(str(tmp_path / "state"))
    executor = Executor(store, str(tmp_path / "state"))
    base, root = tmp_path / "serving", tmp_path / "root"
    model = fake_saved_model(tmp_path / "model")
    outcomes = {}
    for run_id, pushed in (("r-pushed", True), ("r-not", False)):
        run_dir = run_folder(executor, root, base, model, run_id, published=pushed)
        status = {"state": "RUNNING", "error": "", "tasks": [
            {"name": "gate", "state": "SUCCEEDED", "start": 1.0, "end": 2.0},
            {"name": "push", "state": "RUNNING", "start": 2.0, "end": None}]}
        if how == "worker failed":
            status.update(state="FAILED", error="task 'push' failed: OSError: disk")
        worker_mod.write_json_atomically(os.path.join(run_dir, "status.json"), status)
        run = m.V2beta1Run(run_id=run_id, display_name=run_id, state="RUNNING",
                           experiment_id="e1",
                           run_details=m.V2beta1RunDetails(
                               task_details=task_details(run_id, status)))
        store.add_run(run, {})
        if how == "terminated":
            executor._terminated.add(run_id)
        elif how == "server stopped":
            executor._stopping.set()
        executor._finish(run_id, -15, os.path.join(run_dir, "status.json"),
                         os.path.join(run_dir, "log.txt"))
        executor._stopping.clear()
        executor._terminated.clear()
        outcomes[run_id] = store.get("run", run_id)
    pushed, not_pushed = outcomes["r-pushed"], outcomes["r-not"]
    push_task = [t for t in pushed.run_details.task_details if t.display_name == "push"][0]
    assert push_task.state == "SUCCEEDED"
    assert f"it had pushed version 1 ({base}/1)" in pushed.error.message
    assert pushed.state == ("CANCELED" if how == "terminated" else "SUCCEEDED")
    assert not_pushed.state == ("CANCELED" if how == "terminated" else "FAILED")
    assert "pushed" not in (not_pushed.error.message or "")
    store.close()


# ------------------------------------------------------- the token by default (issue 22)

KFP_CT = os.path.join(os.path.dirname(sys.executable), "kfp-ct")
LINE_WITH_TOKEN = re.compile(r"^kfp-ct local endpoint on (http://127\.0\.0\.1:\d+) "
                             r"\(state: (.+)\) token: (\S+) \(also in (.+)\)$")


def _local_server(tmp_path, *flags):
    """``kfp-ct local-server --port 0`` as a user starts it: (process, its start-up line)."""
    proc = subprocess.Popen([KFP_CT, "local-server", "--port", "0", "--state-dir",
                             str(tmp_path / "state"), *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=str(tmp_path))
    line = proc.stdout.readline().strip()
    if not line.startswith("kfp-ct local endpoint on "):
        proc.kill()
        raise AssertionError(line + proc.stdout.read())
    return proc, line


def _stop(proc):
    proc.send_signal(signal.SIGINT)
    try:
        assert proc.wait(timeout=15) == 0, proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _get(url, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _mode(path):
    return os.stat(path).st_mode & 0o777


def test_local_server_requires_a_token_by_default_and_keeps_it_owner_only(tmp_path,
                                                                          monkeypatch):
    """No --token: a new one is made, printed once with the URL, kept 0600 in the state
    folder and in a 0600 runtime file that is gone after the server stops; a call
    without it or with a wrong one gets 401 naming the token file; healthz stays open.
    Before issue 22 the server served everyone (200) and printed no token."""
    runtime_dir = tmp_path / "runtime"
    monkeypatch.setenv("KFP_CT_RUNTIME_DIR", str(runtime_dir))
    monkeypatch.delenv("KFP_CT_LOCAL_TOKEN", raising=False)
    proc, line = _local_server(tmp_path)
    try:
        match = LINE_WITH_TOKEN.match(line)
        assert match, line
        url, state, token, token_file = match.groups()
        assert state == str(tmp_path / "state") and token_file == os.path.join(state, "token")
        assert len(token) >= 40  # token_urlsafe(32)
        with open(token_file) as fh:
            assert fh.read().strip() == token
        assert _mode(token_file) == 0o600
        assert _get(url + "/apis/v2beta1/healthz") == (200, {"multi_user": False})
        status, body = _get(url + "/apis/v2beta1/pipelines")
        assert status == 401 and body["code"] == 16 and token_file in body["message"]
        status, body = _get(url + "/apis/v2beta1/pipelines", token="wrong-" + token)
        assert status == 401 and "not valid" in body["message"]
        assert _get(url + "/apis/v2beta1/pipelines", token=token)[0] == 200
        [runtime_file] = runtime_dir.glob("server-*.json")
        assert _mode(runtime_file) == 0o600 and _mode(runtime_dir) == 0o700
        info = json.loads(runtime_file.read_text())
        assert info == {"url": url, "host": "127.0.0.1", "port": int(url.rsplit(":", 1)[1]),
                        "pid": proc.pid, "token": token, "state_dir": state}
    finally:
        _stop(proc)
    assert list(runtime_dir.glob("server-*.json")) == []


def test_local_server_with_an_explicit_token_uses_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KFP_CT_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("KFP_CT_LOCAL_TOKEN", "from-the-environment")
    proc, line = _local_server(tmp_path)
    try:
        url, _, token, token_file = LINE_WITH_TOKEN.match(line).groups()
        assert token == "from-the-environment"
        assert _get(url + "/apis/v2beta1/pipelines", token=token)[0] == 200
        assert _get(url + "/apis/v2beta1/pipelines")[0] == 401
    finally:
        _stop(proc)


def test_local_server_no_token_serves_without_auth_and_warns(tmp_path, monkeypatch):
    """--no-token: no auth, and the start-up line says what that means. Before issue 22
    the option did not exist (click: no such option)."""
    import getpass

    monkeypatch.setenv("KFP_CT_RUNTIME_DIR", str(tmp_path / "runtime"))
    proc, line = _local_server(tmp_path, "--no-token")
    try:
        assert line.endswith(f"(state: {tmp_path / 'state'}) WARNING: no token: any local "
                             f"account can run code as {getpass.getuser()} through this "
                             "endpoint"), line
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        assert _get(url + "/apis/v2beta1/pipelines")[0] == 200
        assert not (tmp_path / "state" / "token").exists()
    finally:
        _stop(proc)


def test_the_token_file_is_never_readable_by_others(tmp_path, start_server):
    """Even with a permissive umask, the token file is created 0600."""
    old = os.umask(0)
    try:
        start_server(tmp_path / "state", token=TOKEN)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "state" / "token") == 0o600


def test_find_token_reads_only_a_live_servers_file_on_that_loopback_port(tmp_path,
                                                                          monkeypatch):
    from kfp_ct.pipelines.entrypoints.local_server import runtime

    monkeypatch.setenv("KFP_CT_RUNTIME_DIR", str(tmp_path / "rt"))
    path = runtime.write_runtime_file("http://127.0.0.1:4321", 4321, "tok",
                                      str(tmp_path / "nostate"))
    assert runtime.find_token("http://127.0.0.1:4321") == ("tok", path)
    assert runtime.find_token("http://localhost:4321/") == ("tok", path)
    assert runtime.find_token("http://127.0.0.1:4322") is None
    assert runtime.find_token("http://example.com:4321") is None
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    info = json.loads(open(path).read())
    info["pid"] = int(dead)
    with open(path, "w") as fh:
        json.dump(info, fh)
    assert runtime.find_token("http://127.0.0.1:4321") is None
    stale = tmp_path / "rt" / f"server-{dead}.json"
    os.replace(path, stale)
    runtime.write_runtime_file("http://127.0.0.1:4323", 4323, "t2", str(tmp_path))
    assert not stale.exists()  # a killed server's file is swept by the next start
    assert runtime.find_token("http://127.0.0.1:4323") == ("t2", path)
