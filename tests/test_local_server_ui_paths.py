"""The local endpoint's answers to the REST calls of the Kubeflow Pipelines UI 2.5.0.

Over HTTP against a live LocalServer: list filters encoded as the UI encodes them (twice)
and as kfp.Client does (once), decoded as the real server decodes them; the v1beta1 paths
the UI calls, answered from the same records as v2beta1; a run's artifact read through
``...:read``. One real run (a tiny component writing an artifact) is shared by the tests.
"""

import base64
import gzip
import io
import json
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings

import kfp
import kfp_server_api
import pytest
import yaml
from kfp import compiler, dsl

from kfp_ct.pipelines.entrypoints import kfp_json
from kfp_ct.pipelines.entrypoints.local_server import LocalServer, artifacts

V1 = "/apis/v1beta1"
V2 = "/apis/v2beta1"


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def write(word: str, out: dsl.Output[dsl.Artifact]) -> str:
    """Writes the word into its artifact and returns it."""
    with open(out.path, "w") as fh:
        fh.write(word)
    return word


@dsl.pipeline(name="arty")
def arty(word: str = "hi"):
    write(word=word)


# ----------------------------------------------------------------------------- helpers


def ui_filter(filter_: dict) -> str:
    """The filter query value as the UI's browser sends it: ``encodeURIComponent(
    JSON.stringify(filter))`` in the page, then ``encodeURIComponent`` again in the
    generated client (``querystring.stringify``)."""
    def encode_uri_component(text: str) -> str:
        return urllib.parse.quote(text, safe="-_.!~*'()")

    return encode_uri_component(encode_uri_component(json.dumps(filter_,
                                                                separators=(",", ":"))))


def client_filter(filter_: dict) -> str:
    """As kfp.Client sends it: ``json.dumps`` then urlencode once (quote_plus)."""
    return urllib.parse.quote_plus(json.dumps(filter_))


def call(server, method, path, body=None, raw=None, content_type=None, token=None):
    """(status, JSON answer) of one request."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                        else None)
    request = urllib.request.Request(server.url + path, method=method, data=data)
    if content_type or body is not None:
        request.add_header("Content-Type", content_type or "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def get(server, path):
    status, answer = call(server, "GET", path)
    assert status == 200, (path, answer)
    return answer


def upload(server, package, name, pipeline_id=None, api=V2):
    boundary = "kfpctboundary"
    with open(package, "rb") as fh:
        data = fh.read()
    raw = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"uploadfile\"; "
           f"filename=\"p.yaml\"\r\nContent-Type: application/octet-stream\r\n\r\n"
           ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    path = (f"{api}/pipelines/upload_version?pipelineid={pipeline_id}&"
            if pipeline_id else f"{api}/pipelines/upload?")
    status, answer = call(server, "POST", path + urllib.parse.urlencode({"name": name}),
                          raw=raw, content_type=f"multipart/form-data; boundary={boundary}")
    assert status == 200, answer
    return answer


def names(answer, field="pipelines", key="display_name"):
    return sorted(item[key] for item in answer.get(field) or [])


def wait_done(server, run_id, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = get(server, f"{V2}/runs/{run_id}")
        if run["state"] in ("SUCCEEDED", "FAILED", "CANCELED"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish in {timeout} s")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A server with the pipeline "arty" (two versions), an experiment and one
    finished run of it."""
    folder = tmp_path_factory.mktemp("ui-paths")
    package = str(folder / "arty.yaml")
    compiler.Compiler().compile(arty, package)
    server = LocalServer(str(folder / "state")).start()
    try:
        pipeline = upload(server, package, "arty")
        pid = pipeline["pipeline_id"]
        first = get(server, f"{V2}/pipelines/{pid}/versions")["pipeline_versions"][0]
        second = upload(server, package, "arty-v2", pipeline_id=pid)
        experiment = call(server, "POST", f"{V2}/experiments",
                          {"display_name": "ui-exp"})[1]
        status, run = call(server, "POST", f"{V2}/runs", {
            "display_name": "arty run", "experiment_id": experiment["experiment_id"],
            "pipeline_version_reference": {"pipeline_id": pid, "pipeline_version_id":
                                           second["pipeline_version_id"]},
            "runtime_config": {"parameters": {"word": "hello artifact"}}})
        assert status == 200, run
        run = wait_done(server, run["run_id"])
        assert run["state"] == "SUCCEEDED", run
        with open(package) as fh:
            spec = next(yaml.safe_load_all(fh))
        yield {"server": server, "package": package, "spec": spec, "pipeline_id": pid,
               "first": first, "second": second, "experiment": experiment, "run": run}
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def isolated_kfp(kfp_isolated):
    """No kfp env vars or context files (conftest); no client warnings."""
    warnings.filterwarnings("ignore", category=FutureWarning)


# ------------------------------------------------------------------------------ filters


def test_go_query_unescape_and_quote():
    assert kfp_json.query_unescape("a+b%20c%2b%7B") == "a b c+{"
    for bad, shown in (("%zz", '"%zz"'), ("ab%4", '"%4"'), ("%", '"%"'),
                       ('50%"}', '"%\\"}"')):
        with pytest.raises(kfp_json.QueryUnescapeError) as err:
            kfp_json.query_unescape(bad)
        assert str(err.value) == f"invalid URL escape {shown}"
    assert kfp_json.go_quote('a"b\\c\n\x01 é') == '"a\\"b\\\\c\\n\\x01 é"'
    # a filter encoded as the UI encodes it keeps its "+" (a number names the operation)
    encoded = urllib.parse.quote('{"predicates": [{"key": "name", "operation": 1, '
                                 '"string_value": "a+b"}]}', safe="")
    assert kfp_json.parse_api_filter(encoded)[0].string_value == "a+b"


def test_a_filter_encoded_twice_as_the_ui_does_lists_as_the_plain_filter(world):
    server = world["server"]
    for name in ("alpha one", "alpha+two", "beta"):
        upload(server, world["package"], name)
    by_substring = {"predicates": [{"key": "name", "operation": "IS_SUBSTRING",
                                    "string_value": "alpha"}]}
    from_ui = get(server, f"{V2}/pipelines?filter={ui_filter(by_substring)}")
    plain = get(server, f"{V2}/pipelines?filter={client_filter(by_substring)}")
    assert names(from_ui) == names(plain) == ["alpha one", "alpha+two"]
    # a space and a + in the value survive the UI's double encoding
    exact = {"predicates": [{"key": "name", "operation": "EQUALS", "string_value": "alpha+two"}]}
    assert names(get(server, f"{V2}/pipelines?filter={ui_filter(exact)}")) == ["alpha+two"]
    # RunList and ExperimentList add a storage_state predicate, sort and page
    not_archived = {"predicates": [{"key": "storage_state", "operation": "NOT_EQUALS",
                                    "string_value": "ARCHIVED"}]}
    runs = get(server, f"{V2}/runs?page_size=10&sort_by=created_at%20desc&"
                       f"filter={ui_filter(not_archived)}")
    assert [r["run_id"] for r in runs["runs"]] == [world["run"]["run_id"]]
    experiments = get(server, f"{V2}/experiments?filter={ui_filter(not_archived)}")
    assert "ui-exp" in names(experiments, "experiments")
    # ExperimentList sorts by its "Last 5 runs" column: last_run_created_at
    by_last_run = get(server, f"{V2}/experiments?sort_by=last_run_created_at%20desc")
    assert by_last_run["experiments"][0]["display_name"] == "ui-exp"
    # the v1beta1 filter (op, not operation), as CustomTable builds it for a v1 list
    v1_filter = {"predicates": [{"key": "name", "op": "IS_SUBSTRING", "string_value": "v2"}]}
    versions = get(server, f"{V1}/pipeline_versions?resource_key.type=PIPELINE&"
                           f"resource_key.id={world['pipeline_id']}&"
                           f"filter={ui_filter(v1_filter)}")
    assert names(versions, "versions", "name") == ["arty-v2"]


def test_a_kfp_client_filter_plus_is_a_space_as_on_the_real_server(world):
    server = world["server"]
    upload(server, world["package"], "gamma delta")
    upload(server, world["package"], "gamma+delta")
    client = kfp.Client(host=server.url)
    wanted = json.dumps({"predicates": [{"key": "name", "operation": "EQUALS",
                                         "string_value": "gamma+delta"}]})
    listed = client.list_pipelines(filter=wanted).pipelines or []
    assert [p.display_name for p in listed] == ["gamma delta"]


def test_our_clients_find_a_name_with_plus_and_percent(world):
    """kfp-ct's Client and the retraining launcher encode their name filters as the UI
    does (kfp_launcher.name_filter), so ``+`` and ``%`` survive the server's decoding."""
    from kfp_ct.components.retrain.kfp_launcher import name_filter

    server = world["server"]
    pid = upload(server, world["package"], "percent-and-plus")["pipeline_id"]
    upload(server, world["package"], "rc+1 at 50%", pipeline_id=pid)
    upload(server, world["package"], "rc 1 at 50", pipeline_id=pid)
    client = kfp.Client(host=server.url)
    listed = client.list_pipeline_versions(pid, filter=name_filter("rc+1 at 50%"))
    assert [v.display_name for v in listed.pipeline_versions] == ["rc+1 at 50%"]


def test_a_bad_percent_escape_is_a_400_naming_the_filter(world):
    server = world["server"]
    bad = {"predicates": [{"key": "name", "operation": "EQUALS", "string_value": "50%"}]}
    status, answer = call(server, "GET", f"{V2}/pipelines?filter={client_filter(bad)}")
    assert status == 400 and answer["code"] == 3
    sent = json.dumps(bad)
    assert answer["message"] == (
        f"Failed to list pipelines due invalid list options: pageToken: , pageSize: 0, "
        f"sortBy: , filter: {sent}: Invalid input error: failed to parse valid filter from "
        f"{kfp_json.go_quote(sent)}: invalid URL escape \"%\\\"}}\"")
    assert answer["error"] == answer["message"]
    # the same through kfp.Client, and on runs (other words before it)
    client = kfp.Client(host=server.url)
    with pytest.raises(kfp_server_api.ApiException) as err:
        client.list_runs(filter=sent)
    assert err.value.status == 400
    message = json.loads(err.value.body)["message"]
    assert message.startswith("Failed to create list options: Invalid input error: failed "
                              "to parse valid filter from ") and "invalid URL escape" in message
    status, answer = call(server, "GET", f"{V2}/experiments?filter=%257Bnot-json")
    assert status == 400 and "failed to parse valid filter from \"%7Bnot-json\"" in \
        answer["message"]


# ------------------------------------------------------------------------ v1beta1 paths


def test_v1_pipeline_version_and_templates_reflect_the_v2_records(world):
    server, pid = world["server"], world["pipeline_id"]
    first, second = world["first"], world["second"]
    pipeline = get(server, f"{V1}/pipelines/{pid}")
    assert set(pipeline) == {"id", "created_at", "name", "default_version"}
    assert pipeline["id"] == pid and pipeline["name"] == "arty"
    assert pipeline["created_at"].endswith("Z") and "." not in pipeline["created_at"]
    default = pipeline["default_version"]  # the latest version
    assert set(default) == {"id", "name", "created_at", "resource_references"}
    assert default["id"] == second["pipeline_version_id"] and default["name"] == "arty-v2"
    assert default["resource_references"] == [
        {"key": {"type": "PIPELINE", "id": pid}, "relationship": "OWNER"}]

    version = get(server, f"{V1}/pipeline_versions/{first['pipeline_version_id']}")
    assert version["id"] == first["pipeline_version_id"] and version["name"] == "arty"

    page = get(server, f"{V1}/pipeline_versions?resource_key.type=PIPELINE&"
                       f"resource_key.id={pid}&page_size=1&sort_by=created_at%20desc")
    assert set(page) == {"versions", "next_page_token", "total_size"}
    assert page["total_size"] == 2 and [v["name"] for v in page["versions"]] == ["arty-v2"]
    rest = get(server, f"{V1}/pipeline_versions?resource_key.type=PIPELINE&"
                       f"resource_key.id={pid}&page_size=1&sort_by=created_at%20desc&"
                       f"page_token={page['next_page_token']}")
    assert [v["name"] for v in rest["versions"]] == ["arty"] and "next_page_token" not in rest

    for path in (f"{V1}/pipeline_versions/{first['pipeline_version_id']}/templates",
                 f"{V1}/pipelines/{pid}/templates"):
        answer = get(server, path)
        assert set(answer) == {"template"}
        assert yaml.safe_load(answer["template"]) == world["spec"]

    assert call(server, "GET", f"{V1}/pipeline_versions?page_size=5")[0] == 400
    status, answer = call(server, "GET", f"{V1}/pipeline_versions?resource_key.type=PIPELINE&"
                                         "resource_key.id=nope")
    assert status == 404 and answer["message"].endswith(
        "ResourceNotFoundError: Pipeline nope not found")
    status, answer = call(server, "GET", f"{V1}/pipelines/nope")
    assert (status, answer["message"]) == (404, (
        "Failed to get a pipeline (v1beta1) nope. Check error stack: Failed to get a pipeline "
        "with id nope: ResourceNotFoundError: Pipeline nope not found"))
    for path in (f"{V1}/pipeline_versions/nope", f"{V1}/pipeline_versions/nope/templates",
                 f"{V1}/pipelines/nope/templates"):
        assert call(server, "GET", path)[0] == 404

    everything = get(server, f"{V1}/pipelines?page_size=100")
    assert pid in [p["id"] for p in everything["pipelines"]]


def test_v1_delete_of_versions_and_pipelines_is_seen_through_v2(world):
    server = world["server"]
    pipeline = upload(server, world["package"], "to-delete", api=V1)  # v1 upload shape
    assert set(pipeline) == {"id", "created_at", "name", "default_version"}
    pid = pipeline["id"]
    extra = upload(server, world["package"], "to-delete-v2", pipeline_id=pid, api=V1)
    assert set(extra) == {"id", "name", "created_at", "resource_references"}
    status, answer = call(server, "DELETE", f"{V1}/pipelines/{pid}")
    assert status == 400 and "as it has existing pipeline versions" in answer["message"]
    for version in (extra["id"], pipeline["default_version"]["id"]):
        assert call(server, "DELETE", f"{V1}/pipeline_versions/{version}") == (200, {})
    assert get(server, f"{V2}/pipelines/{pid}/versions") == {"total_size": 0}
    status, answer = call(server, "GET", f"{V1}/pipelines/{pid}")  # no version: 404
    assert status == 404 and "latest pipeline version" in answer["message"]
    assert call(server, "DELETE", f"{V1}/pipelines/{pid}") == (200, {})
    assert call(server, "GET", f"{V2}/pipelines/{pid}")[0] == 404
    assert call(server, "DELETE", f"{V1}/pipelines/{pid}")[0] == 404


def test_v1_run_detail_is_the_v2_run_with_its_spec_as_pipeline_manifest(world):
    server, run = world["server"], world["run"]
    detail = get(server, f"{V1}/runs/{run['run_id']}")
    assert set(detail) == {"run", "pipeline_runtime"} and detail["pipeline_runtime"] == {}
    v1_run = detail["run"]
    assert {"id", "name", "pipeline_spec", "resource_references", "service_account",
            "created_at", "scheduled_at", "finished_at", "status"} == set(v1_run)
    assert v1_run["id"] == run["run_id"] and v1_run["name"] == "arty run"
    assert v1_run["status"] == "Succeeded"
    assert v1_run["finished_at"] != "1970-01-01T00:00:00Z"
    spec = v1_run["pipeline_spec"]
    assert spec["pipeline_id"] == world["pipeline_id"] and spec["pipeline_name"] == "arty-v2"
    assert yaml.safe_load(spec["pipeline_manifest"]) == world["spec"]  # the UI: "a v2 run"
    assert spec["runtime_config"] == {"parameters": {"word": "hello artifact"}}
    assert v1_run["resource_references"] == [
        {"key": {"type": "EXPERIMENT", "id": world["experiment"]["experiment_id"]},
         "relationship": "OWNER"},
        {"key": {"type": "PIPELINE_VERSION", "id": world["second"]["pipeline_version_id"]},
         "relationship": "CREATOR"}]
    status, answer = call(server, "GET", f"{V1}/runs/nope")
    assert (status, answer["message"]) == (404, (
        "Failed to get a v1beta1 run: Failed to fetch run nope: ResourceNotFoundError: Run "
        "nope not found"))


def test_v1_delete_run_removes_it_from_the_v2_list(world):
    server = world["server"]
    status, run = call(server, "POST", f"{V2}/runs", {
        "display_name": "short-lived", "pipeline_version_reference": {
            "pipeline_id": world["pipeline_id"],
            "pipeline_version_id": world["first"]["pipeline_version_id"]},
        "runtime_config": {"parameters": {"word": "x"}}})
    assert status == 200, run
    assert call(server, "DELETE", f"{V1}/runs/{run['run_id']}") == (200, {})
    assert call(server, "GET", f"{V2}/runs/{run['run_id']}")[0] == 404
    assert run["run_id"] not in [r["run_id"] for r in get(server, f"{V2}/runs")["runs"]]
    status, answer = call(server, "DELETE", f"{V1}/runs/{run['run_id']}")
    assert status == 404 and answer["message"].startswith("Failed to delete a v1beta1 run")


def test_v1_experiments_jobs_and_healthz(world):
    server, experiment = world["server"], world["experiment"]
    got = get(server, f"{V1}/experiments/{experiment['experiment_id']}")
    assert got == {"id": experiment["experiment_id"], "name": "ui-exp",
                   "created_at": got["created_at"],
                   "resource_references": [{"key": {"type": "NAMESPACE"},
                                            "relationship": "OWNER"}],
                   "storage_state": "STORAGESTATE_AVAILABLE"}
    listed = get(server, f"{V1}/experiments?filter=" + ui_filter(
        {"predicates": [{"key": "name", "op": "EQUALS", "string_value": "ui-exp"}]}))
    assert [e["id"] for e in listed["experiments"]] == [experiment["experiment_id"]]
    assert call(server, "GET", f"{V1}/experiments/nope")[0] == 404

    status, recurring = call(server, "POST", f"{V2}/recurringruns", {
        "display_name": "nightly", "mode": "DISABLE", "max_concurrency": 2,
        "experiment_id": experiment["experiment_id"],
        "trigger": {"cron_schedule": {"cron": "0 0 3 * * *"}},
        "pipeline_version_reference": {"pipeline_id": world["pipeline_id"],
                                       "pipeline_version_id":
                                           world["first"]["pipeline_version_id"]},
        "runtime_config": {"parameters": {"word": "night"}}})
    assert status == 200, recurring
    job = get(server, f"{V1}/jobs/{recurring['recurring_run_id']}")
    assert job["id"] == recurring["recurring_run_id"] and job["name"] == "nightly"
    assert job["status"] == "DISABLED" and "enabled" not in job
    assert job["max_concurrency"] == "2"
    assert job["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert yaml.safe_load(job["pipeline_spec"]["pipeline_manifest"]) == world["spec"]
    assert job["pipeline_spec"]["runtime_config"] == {"parameters": {"word": "night"}}
    assert [r["key"]["type"] for r in job["resource_references"]] == [
        "EXPERIMENT", "PIPELINE", "PIPELINE_VERSION"]
    assert call(server, "GET", f"{V1}/jobs/nope")[0] == 404

    assert get(server, f"{V1}/healthz") == {"commit_sha": "unknown", "tag_name": "unknown",
                                            "multi_user": False}
    status, answer = call(server, "POST", f"{V1}/pipelines", {"url": {"pipeline_url": "x"}})
    assert status == 501


def test_v1_paths_need_the_token_but_healthz(tmp_path):
    server = LocalServer(str(tmp_path / "state"), token="t0ken").start()
    try:
        assert call(server, "GET", f"{V1}/healthz")[0] == 200
        assert call(server, "GET", f"{V1}/pipelines/x")[0] == 401
        assert call(server, "GET", f"{V1}/pipelines/x", token="t0ken")[0] == 404
        assert call(server, "GET", f"{V1}/nothing-here", token="t0ken")[0] == 404
    finally:
        server.stop()


# -------------------------------------------------------------------- artifact :read


def _unpacked(answer):
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(answer["data"])),
                      mode="r:gz") as tar:
        return {member.name: tar.extractfile(member).read() for member in tar
                if member.isfile()}


def test_read_artifact_returns_the_file_a_finished_run_wrote(world):
    server, run = world["server"], world["run"]
    run_id = run["run_id"]
    [task] = run["run_details"]["task_details"]
    assert task["display_name"] == "write"
    for node in ("write", task["task_id"]):
        for api in (V2, V1):
            answer = get(server, f"{api}/runs/{run_id}/nodes/{node}/artifacts/out:read")
            assert set(answer) == {"data"}
            assert gzip.decompress(base64.b64decode(answer["data"]))  # a gzip'd tar
            assert _unpacked(answer) == {"out": b"hello artifact"}

    path = artifacts.artifact_file(server.state_dir, run_id, "write", "out")
    with open(path) as fh:
        assert fh.read() == "hello artifact"
    assert artifacts.artifact_file(server.state_dir, run_id, "..", "out") is None
    assert artifacts.artifact_file(server.state_dir, run_id, "write",
                                   "executor_output.json") is None

    status, answer = call(server, "GET", f"{V2}/runs/nope/nodes/write/artifacts/out:read")
    assert (status, answer["message"]) == (404, (
        "failed to read artifact 'run_id:\"nope\" node_id:\"write\" artifact_name:\"out\"': "
        "ResourceNotFoundError: Run nope not found"))
    for node, name in (("nope", "out"), ("write", "nope"), ("write", "..")):
        status, answer = call(server, "GET",
                              f"{V2}/runs/{run_id}/nodes/{node}/artifacts/{name}:read")
        assert status == 404 and answer["message"].endswith(
            f"ResourceNotFoundError: artifact runs/{run_id}/nodes/{node}/artifacts/{name} "
            "not found")
