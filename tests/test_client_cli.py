"""The kfp-ct CLI and Python client against the local KFP API endpoint, for real.

A `LocalServer` on 127.0.0.1 (stopped after) executes what the client creates through
kfp.local: the training pipeline really trains and pushes a model; a tiny pipeline (one
component that sleeps) makes schedules fire in seconds. Every bad input gets a message
and a non-zero exit, most of them before anything is sent.
"""


import json
import re
import socket
import time

import pytest
from kfp import compiler, dsl

from kfp_ct.components.common import registry
from kfp_ct.pipelines.entrypoints import rules
from kfp_ct.pipelines.entrypoints.client import Client
from kfp_ct.pipelines.entrypoints.local_server import LocalServer

TRAIN_STEPS = 60


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def nap(seconds: float, tag: str) -> str:
    """Sleeps, then returns its tag."""
    import time as _time

    _time.sleep(seconds)
    return tag


@dsl.pipeline(name="kfp-ct-tiny")
def tiny_pipeline(seconds: float = 0.5, tag: str = "t"):
    nap(seconds=seconds, tag=tag).set_caching_options(False)



@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = LocalServer(str(tmp_path_factory.mktemp("endpoint")), poll_s=0.2)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def tiny_package(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tiny") / "tiny.yaml")
    compiler.Compiler().compile(tiny_pipeline, package_path=path)
    return path


@pytest.fixture(scope="module")
def uploaded(server, tiny_package):
    client = Client(server.url)
    first = client.upload(package=tiny_package, version="v1")
    return client, first


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------- upload


def test_upload_then_a_new_version_and_the_same_build_is_reused(server, run_cli,
                                                                 tmp_path):
    code, out, err = run_cli("--endpoint", server.url, "--output", "json",
                             "upload", "training")
    assert code == 0, err
    first = json.loads(out)
    assert first["pipeline"] == "kfp-ct-training" and first["uploaded"] is True
    assert re.fullmatch(r"\d+\.\d+\.\d+-(g[0-9a-f]{8}(-dirty-[0-9a-f]{8})?|[0-9a-f]{8})",
                        first["version"]), first["version"]
    # The same build again: nothing sent, the version is reused.
    code, out, err = run_cli("--endpoint", server.url, "--output", "json",
                             "upload", "training")
    assert code == 0 and json.loads(out)["version_id"] == first["version_id"]
    assert "already there" in err
    # A new version of the same pipeline, named explicitly.
    code, out, err = run_cli("--endpoint", server.url, "upload", "training",
                             "--version", "hand-named")
    assert code == 0, err
    names = [v.version for v in Client(server.url).versions("training")]
    assert names[0] == "hand-named" and first["version"] in names and len(names) == 2
    code, out, _ = run_cli("--endpoint", server.url, "pipelines", "versions",
                           "training")
    assert code == 0 and "hand-named" in out and out.splitlines()[0].startswith("VERSION")


def test_upload_refuses_a_file_that_is_not_a_compiled_pipeline(server, run_cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("just: a mapping\n")
    code, out, err = run_cli("--endpoint", server.url, "upload", str(bad))
    assert code == 2 and "not a compiled KFP pipeline" in err and str(bad) in err


def test_a_taken_version_name_with_another_spec_is_refused(uploaded, tiny_package, tmp_path):
    client, _ = uploaded
    other = str(tmp_path / "other.yaml")
    compiler.Compiler().compile(tiny_pipeline, package_path=other,
                                pipeline_parameters={"seconds": 9.0})
    with pytest.raises(rules.KfpCtError, match="already has a version 'v1' with a different"):
        client.upload(package=other, version="v1")


# ---------------------------------------------------------------- real run


@pytest.mark.long
def test_run_and_wait_trains_and_pushes_a_version(server, run_cli, tmp_path):
    dest = str(tmp_path / "serving")
    code, _, err = run_cli("--endpoint", server.url, "upload", "training")
    assert code == 0, err
    started = time.monotonic()
    code, out, err = run_cli("--endpoint", server.url, "run", "training",
                             "-p", f"push_destination={dest}",
                             "-p", f"train_steps={TRAIN_STEPS}", "--wait", "--poll", "0.5")
    wall = time.monotonic() - started
    assert code == 0, err
    assert "SUCCEEDED" in out
    # Progress lines while it ran: tasks counted as they finished.
    # (7: the data importer and six steps; 8 once the exit handler's notice task started)
    assert re.search(r"RUNNING\s+tasks done \d/[78]", err), err
    assert [v.version for v in registry.list_versions(dest)] == [1]
    runs = Client(server.url).list_runs()
    done = [r for r in runs if r.state == "SUCCEEDED" and r.name.startswith("kfp-ct-training")]
    assert done, runs
    tasks = {t.name: t.state for t in done[0].tasks}
    assert set(tasks) >= {"validate", "transform", "train", "evaluate", "gate", "push"}
    assert set(tasks.values()) == {"SUCCEEDED"}
    code, out, _ = run_cli("--endpoint", server.url, "runs", "get", done[0].run_id)
    assert code == 0 and "push" in out
    print(f"run + wait of the training pipeline on the local endpoint: {wall:.1f} s")


def test_a_failed_run_exits_1_with_the_tasks_message(server, run_cli, uploaded):
    client, _ = uploaded
    run = client.run("kfp-ct-tiny", {"seconds": -1.0})  # time.sleep(-1) raises
    code, out, err = run_cli("--endpoint", server.url, "runs", "wait", run.run_id,
                             "--poll", "0.2", "--timeout", "120")
    assert code == 1
    assert "FAILED" in out and "must be non-negative" in err


def test_wait_times_out_with_exit_3(server, run_cli, uploaded):
    client, _ = uploaded
    run = client.run("kfp-ct-tiny", {"seconds": 30.0})
    code, out, err = run_cli("--endpoint", server.url, "runs", "wait", run.run_id,
                             "--poll", "0.2", "--timeout", "0.5")
    assert code == 3 and "still" in err
    server_client = Client(server.url)
    server_client._kfp().terminate_run(run.run_id)


# --------------------------------------------------------------- schedules


def _active(client, schedule_id):
    return [r for r in client.runs_of_schedule(schedule_id)
            if r.state in ("PENDING", "RUNNING")]


def test_interval_schedule_fires_respects_max_concurrency_disable_and_delete(
        server, run_cli, uploaded):
    client, _ = uploaded
    code, out, err = run_cli("--endpoint", server.url, "--output", "json",
                             "schedule", "create", "kfp-ct-tiny", "--name", "every-2s",
                             "--interval", "2", "--max-concurrency", "1",
                             "-p", "seconds=3.5", "-p", "tag=sched")
    assert code == 0, err
    made = json.loads(out)
    assert made["status"] == "ENABLED" and made["trigger"] == "every 2 s"
    sid = made["recurring_run_id"]
    most_active = 0
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        most_active = max(most_active, len(_active(client, sid)))
        if len([r for r in client.runs_of_schedule(sid) if r.state == "SUCCEEDED"]) >= 2:
            break
        time.sleep(0.3)
    runs = client.runs_of_schedule(sid)
    assert len([r for r in runs if r.state == "SUCCEEDED"]) >= 2, runs
    # Every 2 s, but each run takes 3.5 s: max_concurrency 1 holds the next one back.
    assert most_active == 1

    code, out, err = run_cli("--endpoint", server.url, "schedule", "disable",
                             "every-2s")
    assert code == 0 and "DISABLED" in out
    while _active(client, sid):
        time.sleep(0.3)
    count = len(client.runs_of_schedule(sid))
    time.sleep(5)
    assert len(client.runs_of_schedule(sid)) == count  # disabled: nothing new

    code, out, err = run_cli("--endpoint", server.url, "schedule", "list")
    assert code == 0 and "every-2s" in out and "DISABLED" in out
    code, out, err = run_cli("--endpoint", server.url, "schedule", "delete", sid)
    assert code == 0
    assert sid not in [s.recurring_run_id for s in client.schedules()]
    assert len([r for r in client.list_runs(limit=200) if r.recurring_run_id == sid]) \
        == count  # its runs stay


def test_max_concurrency_2_lets_two_runs_be_active(server, uploaded):
    client, _ = uploaded
    made = client.schedule("kfp-ct-tiny", "two-at-once", interval_s=1, max_concurrency=2,
                           params={"seconds": 4.0})
    most = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and most < 2:
        most = max(most, len(_active(client, made.recurring_run_id)))
        time.sleep(0.2)
    client.delete_schedule(made.recurring_run_id)
    assert most == 2
    for run in [r for r in client.list_runs(limit=200)
                if r.recurring_run_id == made.recurring_run_id and not r.done]:
        client._kfp().terminate_run(run.run_id)


def test_cron_schedule_fires_and_enable_resumes(server, uploaded):
    client, _ = uploaded
    made = client.schedule("kfp-ct-tiny", "cron-every-2s", cron="*/2 * * * * *",
                           params={"seconds": 0.1}, enabled=False)
    assert made.status == "DISABLED" and made.trigger == "cron */2 * * * * *"
    time.sleep(3)
    assert client.runs_of_schedule(made.recurring_run_id) == []
    client.enable_schedule("cron-every-2s")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not client.runs_of_schedule(made.recurring_run_id):
        time.sleep(0.3)
    fired = client.runs_of_schedule(made.recurring_run_id)
    client.delete_schedule(made.recurring_run_id)
    assert fired and fired[0].name.startswith("cron-every-2s-")


# -------------------------------------------------------------- bad input


@pytest.mark.parametrize("argv, message", [
    (["--cron", "0 3 * * *"], "use '0 0 3 * * *'"),
    (["--cron", "0 0 3 * * * *"], "has 7 fields"),
    (["--cron", "0 0 25 * * *"], "out of range"),
    (["--interval", "0"], "interval must be a whole number of seconds >= 1"),
    (["--interval", "60", "--max-concurrency", "0"], "max_concurrency must be from 1 to 10"),
    (["--interval", "60", "--max-concurrency", "11"], "max_concurrency must be from 1 to 10"),
    (["--interval", "60", "--cron", "0 0 3 * * *"], "exactly one of --cron"),
    ([], "exactly one of --cron"),
    (["--interval", "60", "--start-time", "2026-12-02T00:00:00Z",
      "--end-time", "2026-12-01T00:00:00Z"], "is not after start time"),
    (["--interval", "60", "--start-time", "tomorrow"], "not an RFC 3339 time"),
])
def test_bad_schedules_are_refused_before_anything_is_sent(server, run_cli, argv, message):
    before = len(server.requests)
    code, out, err = run_cli("--endpoint", server.url, "schedule", "create",
                             "training", "--name", "bad", *argv)
    assert code == 2 and message in err, err
    assert "Traceback" not in err
    assert len(server.requests) == before  # not even a healthz


@pytest.mark.parametrize("argv, message", [
    (["run", "no-such-pipeline"], "no pipeline named 'no-such-pipeline'; pipelines there:"),
    (["run", "kfp-ct-tiny", "-p", "nope=1"],
     "has no parameter nope; its parameters: seconds, tag"),
    (["run", "kfp-ct-tiny", "-p", "seconds=soon"], "parameter seconds of pipeline"),
    (["run", "kfp-ct-tiny", "-p", "seconds"], "expected NAME=VALUE"),
    (["run", "kfp-ct-tiny", "--version", "v9"], "has no version 'v9'; versions there"),
    (["schedule", "create", "kfp-ct-tiny", "--name", "x", "--interval", "60",
      "--version", "v9"], "has no version 'v9'"),
    (["schedule", "create", "kfp-ct-tiny", "--name", "x", "--interval", "60",
      "-p", "tag=1", "-p", "nope=2"], "has no parameter nope"),
    (["schedule", "disable", "no-such-schedule"], "no schedule 'no-such-schedule'"),
    (["runs", "get", "0000-no-such-run"], "HTTP 404"),
])
def test_bad_requests_name_the_problem(server, run_cli, uploaded, argv, message):
    code, out, err = run_cli("--endpoint", server.url, *argv)
    assert code == 2 and message in err, err
    assert "Traceback" not in err


def test_a_parameters_file_of_the_wrong_type(server, run_cli, uploaded, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("seconds: [1, 2]\n")
    code, out, err = run_cli("--endpoint", server.url, "run", "kfp-ct-tiny",
                             "-f", str(params))
    assert code == 2 and "parameter seconds of pipeline 'kfp-ct-tiny' version 'v1' must " \
                         "be a number, got [1, 2]" in err


def test_a_run_too_large_for_the_endpoint_is_refused_in_one_line(server, run_cli, uploaded,
                                                                 tmp_path):
    """A 5 MiB parameter: the endpoint's 413 (its 4 MiB JSON limit) reaches the user as
    one line. Before, the parameters file alone took about 6 s to read (PyYAML on JSON),
and kfp's "Experiment details: <link>" came first on stderr."""
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"tag": "x" * (5 << 20)}))
    started = time.monotonic()
    code, out, err = run_cli("--endpoint", server.url, "run", "kfp-ct-tiny",
                             "-f", str(params))
    assert time.monotonic() - started < 2
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "answered HTTP 413" in err and "a JSON body may be at most 4194304 bytes " \
                                          "(4 MiB)" in err


def test_an_unreachable_host_fails_fast_and_names_it(run_cli):
    port = _closed_port()
    started = time.monotonic()
    code, out, err = run_cli("--endpoint", f"http://127.0.0.1:{port}", "runs", "list")
    elapsed = time.monotonic() - started
    assert code == 2 and f"127.0.0.1:{port}" in err and "not reachable" in err
    assert elapsed < 3, elapsed


def test_a_host_that_never_answers_fails_within_the_timeout(run_cli):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)  # accepts the connection, never answers
    try:
        started = time.monotonic()
        code, out, err = run_cli("--endpoint",
                                 f"http://127.0.0.1:{listener.getsockname()[1]}",
                                 "--timeout", "1.5", "runs", "list")
        elapsed = time.monotonic() - started
    finally:
        listener.close()
    assert code == 2 and "not reachable (timeout 1.5 s)" in err
    assert elapsed < 3, elapsed


BAD_ENDPOINTS = [
    ("ftp://x", "its scheme is ftp://"),
    ("file:///x", "its scheme is file://"),
    ("localhost:8888", "no http:// or https:// in front (http://localhost:8888?)"),
    ("http//x", "no http:// or https:// in front;"),
    ("http://", "names no host"),
    ("http://127.0.0.1:88a", "port '88a' is not a number"),
]


@pytest.mark.parametrize("endpoint,words", BAD_ENDPOINTS)
def test_an_endpoint_that_is_not_an_http_url_is_refused_in_one_line(run_cli, endpoint,
                                                                     words):
    """Before: kfp.Client made ftp://x into https://ftp://x and failed on a name lookup
    after the healthz timeout; localhost:8888 had http:// put in front silently."""
    started = time.monotonic()
    code, out, err = run_cli("--endpoint", endpoint, "runs", "list")
    assert code == 2 and out == ""
    assert err.splitlines() == [err.rstrip("\n")], err
    assert err.startswith(f"error: --endpoint {endpoint!r} is not a KFP API URL: ")
    assert words in err and "http://127.0.0.1:8888" in err
    assert time.monotonic() - started < 0.5  # no connection tried


def test_a_bad_endpoint_from_the_environment_is_named_as_such(run_cli, monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_ENDPOINT", "ftp://x")
    code, out, err = run_cli("runs", "list")
    assert code == 2 and err.startswith("error: $KF_PIPELINES_ENDPOINT 'ftp://x' is not")
    code, out, err = run_cli("versions", "/nonexistent")  # needs no endpoint: not checked
    assert "KF_PIPELINES_ENDPOINT" not in err


@pytest.mark.parametrize("endpoint,words", BAD_ENDPOINTS)
def test_the_python_client_and_the_launcher_refuse_the_same_endpoints(endpoint, words):
    from kfp_ct.components.common.errors import KfpCtError
    from kfp_ct.components.retrain.kfp_launcher import KfpLauncher

    with pytest.raises(KfpCtError, match="is not a KFP API URL") as info:
        Client(endpoint)
    assert str(info.value).startswith(f"host {endpoint!r}") and words in str(info.value)
    with pytest.raises(KfpCtError, match="is not a KFP API URL"):
        KfpLauncher("kfp-ct-training", host=endpoint)


def test_no_endpoint_says_how_to_give_one(run_cli, monkeypatch):
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, out, err = run_cli("runs", "list")
    assert code == 2 and "--endpoint" in err and "KF_PIPELINES_ENDPOINT" in err


def test_refused_auth_names_the_auth_tried(tmp_path, run_cli, monkeypatch):
    with LocalServer(str(tmp_path / "secured"), token="right-token") as secured:
        code, out, err = run_cli("--endpoint", secured.url, "--existing-token",
                                 "wrong-token", "runs", "list")
        assert code == 2 and "HTTP 401" in err
        assert "auth tried: bearer token from --existing-token" in err
        monkeypatch.setenv("KFP_CT_TOKEN", "also-wrong")
        code, out, err = run_cli("--endpoint", secured.url, "runs", "list")
        assert code == 2 and "auth tried: bearer token from $KFP_CT_TOKEN" in err
        monkeypatch.delenv("KFP_CT_TOKEN")
        code, out, err = run_cli("--endpoint", secured.url, "runs", "list")
        assert code == 2 and "auth tried: no credentials" in err
        code, out, err = run_cli("--endpoint", secured.url, "--existing-token",
                                 "right-token", "runs", "list")
        assert code == 0, err
        token_file = tmp_path / "sa-token"
        token_file.write_text("right-token")
        code, out, err = run_cli("--endpoint", secured.url, "--sa-token-path",
                                 str(token_file), "runs", "list")
        assert code == 0, err


def test_the_client_and_the_cli_find_a_local_servers_token_by_themselves(
        tmp_path, run_cli, monkeypatch):
    """`kfp-ct local-server` requires a token by default (issue 22); the Python client and
    `kfp-ct --endpoint` given no token read it from the server's runtime file (found by
    port), and an explicit token still wins. Before issue 22 the server printed no token
    and wrote no runtime file (the line did not match)."""
    import os
    import signal
    import subprocess
    import sys

    monkeypatch.setenv("KFP_CT_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.delenv("KFP_CT_TOKEN", raising=False)
    monkeypatch.delenv("KFP_CT_LOCAL_TOKEN", raising=False)
    kfp_ct = os.path.join(os.path.dirname(sys.executable), "kfp-ct")
    proc = subprocess.Popen([kfp_ct, "local-server", "--port", "0", "--state-dir",
                             str(tmp_path / "state")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=str(tmp_path))
    try:
        line = proc.stdout.readline()
        match = re.search(r" on (http://127\.0\.0\.1:\d+) .* token: (\S+) ", line)
        assert match, line
        url, token = match.groups()
        assert Client(url).pipelines() == []
        assert Client(url.replace("127.0.0.1", "localhost")).pipelines() == []
        # the retrain trigger's launcher (kfp_host=http://127.0.0.1:PORT) finds it too
        from kfp_ct.components.retrain.kfp_launcher import KfpConnection

        launcher = KfpConnection(host=url)
        launcher.connect().list_pipelines()
        assert launcher.auth.startswith("bearer token from the local endpoint's token (")
        code, out, err = run_cli("--endpoint", url, "pipelines", "list")
        assert code == 0, err
        code, out, err = run_cli("--endpoint", url, "--existing-token", "wrong", "pipelines",
                                 "list")
        assert code == 2 and "HTTP 401" in err and str(tmp_path / "state" / "token") in err
        code, out, err = run_cli("--endpoint", url, "--existing-token", token, "pipelines",
                                 "list")
        assert code == 0, err
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert list((tmp_path / "runtime").iterdir()) == []
    # the server is gone: its port no longer finds a token (no stale runtime file)
    from kfp_ct.pipelines.entrypoints.local_server.runtime import find_token

    assert find_token(url) is None


# ------------------------------------------------ what goes over the wire


def test_requests_are_what_kfp_sends_to_a_real_server(server, uploaded):
    """The endpoint records each request; each matches an operation of the server's API
    (kfp_server_api, generated from the v2beta1 swagger), and the run bodies are exactly
    kfp_server_api's own serialization of the models kfp.Client builds."""
    import inspect

    import kfp_server_api
    from kfp_server_api import api as apis

    operations = []
    for _, cls in inspect.getmembers(apis, inspect.isclass):
        source = inspect.getsource(cls)
        for path, method in re.findall(r"'(/apis/v2beta1/[^']+)', '(\w+)'", source):
            operations.append((method, re.compile(
                "^" + re.sub(r"\{\w+\}", r"[^/]+", path.replace(":", r"\:")) + "$")))
    client, first = uploaded
    mark = len(server.requests)
    run = client.run("kfp-ct-tiny", {"seconds": 0.1, "tag": "wire"}, run_name="wire-run",
                     experiment="wire")
    sched = client.schedule("kfp-ct-tiny", "wire-schedule", cron="0 0 3 * * *",
                            params={"tag": "w"}, experiment="wire", max_concurrency=3)
    client.delete_schedule(sched.recurring_run_id)
    sent = server.requests[mark:]
    for req in sent:
        assert any(m == req.method and rx.match(req.path) for m, rx in operations), req
        assert req.headers.get("user-agent", "").startswith("OpenAPI-Generator/")
        if req.body is not None:
            assert req.headers["content-type"] == "application/json"
    serialize = kfp_server_api.ApiClient().sanitize_for_serialization
    experiment_id = [r for r in sent if r.method == "POST"
                     and r.path == "/apis/v2beta1/experiments"][0]
    created = [r for r in sent if r.path == "/apis/v2beta1/runs" and r.method == "POST"]
    assert len(created) == 1
    exp_id = created[0].body["experiment_id"]
    # kfp.Client fills an empty namespace from its context file (~/.config/kfp).
    namespace = client._kfp().get_user_namespace()
    assert experiment_id.body == serialize(kfp_server_api.V2beta1Experiment(
        display_name="wire", namespace=namespace))
    assert created[0].body == serialize(kfp_server_api.V2beta1Run(
        experiment_id=exp_id, display_name="wire-run",
        pipeline_version_reference=kfp_server_api.V2beta1PipelineVersionReference(
            pipeline_id=first.pipeline_id, pipeline_version_id=first.version_id),
        runtime_config=kfp_server_api.V2beta1RuntimeConfig(
            parameters={"seconds": 0.1, "tag": "wire"})))
    recurring = [r for r in sent if r.path == "/apis/v2beta1/recurringruns"
                 and r.method == "POST"]
    assert recurring[0].body == serialize(kfp_server_api.V2beta1RecurringRun(
        experiment_id=exp_id, display_name="wire-schedule", mode="ENABLE",
        pipeline_version_reference=kfp_server_api.V2beta1PipelineVersionReference(
            pipeline_id=first.pipeline_id, pipeline_version_id=first.version_id),
        runtime_config=kfp_server_api.V2beta1RuntimeConfig(parameters={"tag": "w"}),
        no_catchup=True, max_concurrency=3,
        trigger=kfp_server_api.V2beta1Trigger(cron_schedule=kfp_server_api.V2beta1CronSchedule(
            cron="0 0 3 * * *"))))
    deleted = [r for r in sent if r.method == "DELETE"]
    assert deleted[0].path == f"/apis/v2beta1/recurringruns/{sched.recurring_run_id}"
    assert client.get_run(run.run_id).run_id == run.run_id


def _timed_out_after(seconds):
    from kfp import kubernetes

    @dsl.pipeline(name="kfp-ct-tiny-timeout")
    def timed(tag: str = "t"):
        kubernetes.set_timeout(nap(seconds=0.1, tag=tag), seconds)

    return timed


def test_a_change_in_platform_settings_alone_is_another_version(server, tmp_path):
    client = Client(server.url)
    first, second = str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")
    compiler.Compiler().compile(_timed_out_after(60), package_path=first)
    compiler.Compiler().compile(_timed_out_after(120), package_path=second)
    made = client.upload(package=first, version="v1")
    assert client.upload(package=first, version="v1").version_id == made.version_id
    with pytest.raises(rules.KfpCtError, match="already has a version 'v1' with a different"):
        client.upload(package=second, version="v1")
