"""KfpLauncher through the real kfp.Client 2.13 against a double of the v2beta1 API."""

import datetime as dt
import json
import logging
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from kfp_ct.components.common.errors import KfpCtError
from kfp_ct.components.retrain import kfp_launcher
from kfp_ct.components.retrain.kfp_launcher import TERMINAL_STATES, KfpLauncher
from kfp_api_double import kfp_api_double  # tests/ has no __init__: pytest puts it on sys.path

TOKEN = "sa-token-abc123"
PIPELINE = "kfp-ct-train"
IN_CLUSTER = ("ml-pipeline.kubeflow.svc.cluster.local", 8888)
UTC = dt.timezone.utc
PARAMS = {"data_uri": "gs://bucket/window-42", "epochs": 3, "learning_rate": 0.01,
          "warm_start": True}


@pytest.fixture(autouse=True)
def isolated_kfp(kfp_isolated, monkeypatch, tmp_path):
    """No kfp env vars or context files (conftest), no default token."""
    monkeypatch.setattr(kfp_launcher, "DEFAULT_TOKEN_PATH", str(tmp_path / "no-token"))


@pytest.fixture
def api():
    with kfp_api_double(token=TOKEN) as double:
        yield double


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")  # kubelet-projected files may end with a newline
    return str(path)


def _seed(api):
    """A decoy pipeline plus the training pipeline whose newest version is not last."""
    api.add_pipeline("other-pipeline", versions=["x"])
    pipeline_id, (newest, oldest, middle) = api.add_pipeline(PIPELINE, versions=[
        ("b-newest", dt.datetime(2025, 3, 1, tzinfo=UTC)),
        ("a-oldest", dt.datetime(2025, 1, 2, tzinfo=UTC)),
        ("c-middle", dt.datetime(2025, 2, 1, tzinfo=UTC))])
    return pipeline_id, {"b-newest": newest, "a-oldest": oldest, "c-middle": middle}


def _calls(api):
    return [(r.method, r.path) for r in api.requests]


def test_launch_latest_version_sends_the_exact_run(api, token_file):
    pipeline_id, versions = _seed(api)
    launcher = KfpLauncher(PIPELINE, host=api.url, token_path=token_file)

    result = launcher.launch(PARAMS, run_name="retrain-drift-1")

    assert result["pipeline_id"] == pipeline_id
    assert result["version_id"] == versions["b-newest"]
    assert result["host"] == api.url
    assert result["state"] == "PENDING"
    versions_path = f"/apis/v2beta1/pipelines/{pipeline_id}/versions"
    assert _calls(api) == [("GET", "/apis/v2beta1/healthz"),
                           ("GET", "/apis/v2beta1/pipelines"),
                           ("GET", versions_path),
                           ("GET", "/apis/v2beta1/experiments"),
                           ("POST", "/apis/v2beta1/experiments"),
                           ("POST", "/apis/v2beta1/runs")]
    by_path = {(r.method, r.path): r for r in api.requests}
    assert json.loads(by_path[("GET", "/apis/v2beta1/pipelines")].query["filter"]) == {
        "predicates": [{"operation": 1, "key": "display_name", "stringValue": PIPELINE}]}
    assert by_path[("GET", versions_path)].query["sort_by"] == "created_at desc"
    assert by_path[("POST", "/apis/v2beta1/experiments")].body == {
        "display_name": "kfp-ct-retraining", "namespace": ""}
    [experiment] = api.experiments_json()
    assert result["experiment_id"] == experiment["experiment_id"]
    assert by_path[("POST", "/apis/v2beta1/runs")].body == {
        "display_name": "retrain-drift-1",
        "experiment_id": experiment["experiment_id"],
        "pipeline_version_reference": {"pipeline_id": pipeline_id,
                                       "pipeline_version_id": versions["b-newest"]},
        "runtime_config": {"parameters": PARAMS},
    }
    assert {r.headers.get("authorization") for r in api.requests} == {f"Bearer {TOKEN}"}
    assert api.run_json(result["run_id"])["runtime_config"]["parameters"] == PARAMS

    # A second launch reuses the experiment.
    again = launcher.launch({"epochs": 1}, run_name="retrain-drift-2")
    assert again["experiment_id"] == result["experiment_id"]
    assert again["run_id"] != result["run_id"]
    assert len(api.requests_to("POST", "/apis/v2beta1/experiments")) == 1


def test_launch_pinned_version_with_token_path_from_env(api, token_file, monkeypatch):
    pipeline_id, versions = _seed(api)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", token_file)
    launcher = KfpLauncher(PIPELINE, pipeline_version="a-oldest", host=api.url,
                           experiment="drift-retrain")

    result = launcher.launch(PARAMS, run_name="pinned-run")

    assert result["version_id"] == versions["a-oldest"]
    [versions_call] = api.requests_to("GET", f"/apis/v2beta1/pipelines/{pipeline_id}/versions")
    # URL-encoded once more, as the Kubeflow UI sends it: the server decodes it again
    filter_json = urllib.parse.unquote(versions_call.query["filter"])
    assert json.loads(filter_json)["predicates"][0]["stringValue"] == "a-oldest"
    [create] = api.requests_to("POST", "/apis/v2beta1/runs")
    assert create.body["pipeline_version_reference"] == {
        "pipeline_id": pipeline_id, "pipeline_version_id": versions["a-oldest"]}
    assert create.body["runtime_config"] == {"parameters": PARAMS}
    assert create.body["display_name"] == "pinned-run"
    assert create.headers["authorization"] == f"Bearer {TOKEN}"
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in api.requests)
    assert api.experiments_json()[0]["display_name"] == "drift-retrain"


def test_state_follows_the_server(api, token_file):
    _seed(api)
    launcher = KfpLauncher(PIPELINE, host=api.url, token_path=token_file)
    run_id = launcher.launch(PARAMS, run_name="r")["run_id"]

    assert launcher.state(run_id) == "PENDING"
    api.set_run_state(run_id, "RUNNING")
    assert launcher.state(run_id) == "RUNNING"
    api.set_run_state(run_id, "SUCCEEDED")
    assert launcher.state(run_id) == "SUCCEEDED" and "SUCCEEDED" in TERMINAL_STATES
    assert launcher.state("no-such-run") == "UNKNOWN"
    # A fresh launcher (as after a pod restart) reads the same state.
    assert KfpLauncher(PIPELINE, host=api.url, token_path=token_file).state(run_id) == \
        "SUCCEEDED"


def test_unknown_pipeline_names_it_the_host_and_what_exists(api, token_file):
    _seed(api)
    launcher = KfpLauncher("no-such-pipeline", host=api.url, token_path=token_file)
    with pytest.raises(KfpCtError) as err:
        launcher.launch(PARAMS, run_name="r")
    message = str(err.value)
    assert "'no-such-pipeline'" in message and api.url in message
    assert f"'{PIPELINE}'" in message and "'other-pipeline'" in message
    assert not api.requests_to("POST", "/apis/v2beta1/runs")


def test_unknown_version_names_it_and_lists_versions(api, token_file):
    _seed(api)
    launcher = KfpLauncher(PIPELINE, pipeline_version="v9", host=api.url,
                           token_path=token_file)
    with pytest.raises(KfpCtError) as err:
        launcher.launch(PARAMS, run_name="r")
    message = str(err.value)
    assert "'v9'" in message and f"'{PIPELINE}'" in message and api.url in message
    assert "'b-newest', 'c-middle', 'a-oldest'" in message  # newest first
    assert not api.requests_to("POST", "/apis/v2beta1/runs")


def test_wrong_token_names_the_auth_tried(api, tmp_path):
    _seed(api)
    bad = tmp_path / "bad-token"
    bad.write_text("not-the-token")
    with pytest.raises(KfpCtError) as err:
        KfpLauncher(PIPELINE, host=api.url, token_path=str(bad)).launch(PARAMS, "r")
    message = str(err.value)
    assert "401" in message and api.url in message and f"'{PIPELINE}'" in message
    assert f"service-account token from {bad}" in message


def test_missing_token_says_no_credentials(api):
    _seed(api)
    with pytest.raises(KfpCtError) as err:
        KfpLauncher(PIPELINE, host=api.url).launch(PARAMS, "r")
    assert "401" in str(err.value) and "auth tried: no credentials" in str(err.value)
    assert api.requests[-1].headers.get("authorization") is None


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_host_fails_fast_naming_it():
    host = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(KfpCtError) as err:
        KfpLauncher(PIPELINE, host=host).launch(PARAMS, "r")
    assert time.monotonic() - started < 3
    assert host in str(err.value) and f"'{PIPELINE}'" in str(err.value)


def test_silent_host_is_bounded_by_healthz_timeout():
    with socket.socket() as listener:  # accepts TCP (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        host = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(KfpCtError) as err:
            KfpLauncher(PIPELINE, host=host, healthz_timeout_s=0.5).launch(PARAMS, "r")
        assert time.monotonic() - started < 3
    assert host in str(err.value) and "timeout 0.5 s" in str(err.value)


def _route_in_cluster_name_to(api, monkeypatch):
    """Sends connections for ml-pipeline.kubeflow.svc.cluster.local:8888 to the double."""
    import urllib3.util.connection

    real = urllib3.util.connection.create_connection

    def create_connection(address, *args, **kwargs):
        if tuple(address) == IN_CLUSTER:
            address = ("127.0.0.1", api.port)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)


def test_in_cluster_default_uses_kfp_service_address_and_token(api, token_file, monkeypatch):
    # kfp.Client() decides "in a pod" by kubernetes.config.load_incluster_config()
    # succeeding; outside a pod, make it succeed and route the service DNS name to the
    # double, so the real address and token kfp picks by itself are exercised.
    import kubernetes.config

    monkeypatch.setattr(kubernetes.config, "load_incluster_config", lambda: None)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", token_file)
    _route_in_cluster_name_to(api, monkeypatch)
    pipeline_id, versions = _seed(api)

    result = KfpLauncher(PIPELINE).launch(PARAMS, "in-cluster-run")

    assert result["host"] == "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
    assert result["version_id"] == versions["b-newest"]
    assert {r.headers["host"] for r in api.requests} == {"%s:%d" % IN_CLUSTER}
    assert {r.headers.get("authorization") for r in api.requests} == {f"Bearer {TOKEN}"}


def test_in_cluster_default_without_token_names_no_credentials(api, monkeypatch):
    import kubernetes.config

    monkeypatch.setattr(kubernetes.config, "load_incluster_config", lambda: None)
    _route_in_cluster_name_to(api, monkeypatch)
    _seed(api)
    with pytest.raises(KfpCtError) as err:
        KfpLauncher(PIPELINE).launch(PARAMS, "r")
    message = str(err.value)
    assert "ml-pipeline.kubeflow.svc.cluster.local:8888" in message
    assert "401" in message and "no credentials" in message


def test_endpoint_env_var_is_an_explicit_host_with_token(api, token_file, monkeypatch):
    # kfp.Client takes $KF_PIPELINES_ENDPOINT as an explicit host and then loads no
    # token; the launcher adds the service-account token as for host=.
    monkeypatch.setenv("KF_PIPELINES_ENDPOINT", api.url)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", token_file)
    _seed(api)
    result = KfpLauncher(PIPELINE).launch(PARAMS, "env-run")
    assert result["host"] == api.url
    assert {r.headers.get("authorization") for r in api.requests} == {f"Bearer {TOKEN}"}


def test_multi_user_experiment_goes_to_the_namespace(token_file):
    with kfp_api_double(token=TOKEN, multi_user=True) as api:
        _seed(api)
        launcher = KfpLauncher(PIPELINE, host=api.url, token_path=token_file,
                               namespace="team-a")
        launcher.launch(PARAMS, "ns-run")
        [listing] = api.requests_to("GET", "/apis/v2beta1/experiments")
        assert listing.query["namespace"] == "team-a"
        assert api.experiments_json()[0]["namespace"] == "team-a"


def test_multi_user_pod_namespace_is_used_and_not_persisted(token_file, tmp_path):
    # With namespace="" kfp.Client reads the pod's namespace in multi-user mode; kfp
    # would also write ~/.config/kfp/context.json, which the launcher prevents.
    (tmp_path / "sa-namespace").write_text("team-b")
    with kfp_api_double(token=TOKEN, multi_user=True) as api:
        _seed(api)
        KfpLauncher(PIPELINE, host=api.url, token_path=token_file).launch(PARAMS, "r")
        assert api.experiments_json()[0]["namespace"] == "team-b"
    assert not (tmp_path / "kfp" / "context.json").exists()


def test_cached_version_logs_a_warning(api, token_file, caplog):
    spec = {"root": {"dag": {"tasks": {"train": {"cachingOptions": {"enableCache": True}},
                                       "push": {"cachingOptions": {}}}}}}
    api.add_pipeline(PIPELINE, versions=["v1"], pipeline_spec=spec)
    with caplog.at_level(logging.WARNING, logger=kfp_launcher.__name__):
        KfpLauncher(PIPELINE, host=api.url, token_path=token_file).launch(PARAMS, "r")
    assert "caches tasks train" in caplog.text


def test_a_parameter_is_sent_only_to_a_version_that_declares_it(api, token_file):
    """The monitoring's notice target goes to the retraining only when the uploaded
    version has a `notify` parameter: an older version would refuse the run."""
    declares = {"root": {"inputDefinitions": {"parameters": {
        "notify": {"parameterType": "STRING", "isOptional": True}}}}}
    api.add_pipeline(PIPELINE, versions=["v1"], pipeline_spec=declares)
    launcher = KfpLauncher(PIPELINE, host=api.url, token_path=token_file)
    run = launcher.launch(PARAMS, "r", if_declared={"notify": '{"url": "http://x"}'})
    sent = api.run_json(run["run_id"])["runtime_config"]["parameters"]
    assert sent == {**PARAMS, "notify": '{"url": "http://x"}'}
    api.add_pipeline("older", versions=["v0"], pipeline_spec={"root": {}})
    older = KfpLauncher("older", host=api.url, token_path=token_file)
    run = older.launch(PARAMS, "r2", if_declared={"notify": '{"url": "http://x"}'})
    assert api.run_json(run["run_id"])["runtime_config"]["parameters"] == PARAMS


# ------------------------------------------------------------- the double itself


def _http(url, method="GET", body=None, token=TOKEN):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_double_validates_like_the_server(api):
    pipeline_id, [version_id] = api.add_pipeline("p", versions=["v1"])
    runs = f"{api.url}/apis/v2beta1/runs"
    ref = {"pipeline_id": pipeline_id, "pipeline_version_id": version_id}

    status, body = _http(f"{api.url}/apis/v2beta1/pipelines", token=None)
    assert status == 401 and body["code"] == 16 and body["error"] == body["message"]
    assert _http(f"{api.url}/apis/v2beta1/healthz", token=None) == (200, {"multi_user": False})
    status, body = _http(runs, "POST", {"display_name": "r", "pipeline_version_reference": {
        "pipeline_id": pipeline_id, "pipeline_version_id": "nope"}})
    assert status == 404 and body["code"] == 5 and "nope" in body["message"]
    status, body = _http(runs, "POST", {"display_name": "r", "pipeline_version_reference": ref,
                                        "runtime_config": {"parameters": [1, 2]}})
    assert status == 400 and "parameters" in body["message"]
    status, body = _http(runs, "POST", {"display_name": "r", "pipeline_version_reference": ref,
                                        "bogus": 1})
    assert status == 400 and "bogus" in body["message"]
    status, body = _http(runs, "POST", {"display_name": "r", "pipeline_version_reference": ref})
    assert status == 200 and body["state"] == "PENDING" and body["experiment_id"]
    assert _http(f"{api.url}/apis/v2beta1/runs/{body['run_id']}")[1]["run_id"] == \
        body["run_id"]
    assert _http(f"{api.url}/apis/v2beta1/nothing-here")[0] == 404
    with pytest.raises(ValueError):
        api.set_run_state(body["run_id"], "DONE")


def test_double_pages_and_stops(token_file):
    with kfp_api_double() as api:
        pipeline_id, ids = api.add_pipeline("p", versions=[f"v{i}" for i in range(5)])
        url = f"{api.url}/apis/v2beta1/pipelines/{pipeline_id}/versions"
        _, first = _http(url + "?page_size=2&sort_by=created_at%20desc", token=None)
        assert [v["display_name"] for v in first["pipeline_versions"]] == ["v4", "v3"]
        assert first["total_size"] == 5
        _, second = _http(f"{url}?page_size=2&sort_by=created_at%20desc&page_token="
                          f"{first['next_page_token']}", token=None)
        assert [v["display_name"] for v in second["pipeline_versions"]] == ["v2", "v1"]
        port = api.port
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_launch_works_in_kfps_task_runtime_mode(api, token_file, tmp_path):
    """In a pod the trigger runs as a KFP task, where `_KFP_RUNTIME=true` makes
    `kfp/__init__` leave `kfp.Client` out: the launcher must not depend on it."""
    import os
    import subprocess
    import sys

    pipeline_id, versions = _seed(api)
    script = ("import json, sys\n"
              "from kfp_ct.components.retrain.kfp_launcher import KfpLauncher\n"
              "import kfp\n"
              "assert not hasattr(kfp, 'Client')\n"
              f"r = KfpLauncher({PIPELINE!r}, host={api.url!r}, token_path={token_file!r})"
              ".launch({'epochs': 1}, run_name='in-a-task')\n"
              "print(json.dumps(r))\n")
    env = {**os.environ, "_KFP_RUNTIME": "true", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["version_id"] == versions["b-newest"] and result["state"] == "PENDING"
