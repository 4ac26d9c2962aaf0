"""The local endpoint's ML Metadata records, read as the Kubeflow UI reads them.

A real run of a small two-task pipeline (a Dataset passed on; Metrics,
ClassificationMetrics, HTML and Markdown written) through a live endpoint; its records in
the real ``ml-metadata`` store are read back over gRPC-web, with the protocol's own
framing, through the endpoint's HTTP port, and compared with what KFP backend 2.5.0's
driver and launcher write (``backend/src/v2/metadata/client.go``: context and execution
types, names, custom properties, events). Also: retry re-uses what succeeded, the login
cookie, the artifact and log paths the UI's server fetches, and a lineage query through
the standard ``ml_metadata`` API.
"""

import base64
import json
import os
import struct
import time
import urllib.error
import urllib.request

import pytest
from kfp import compiler, dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Output
from ml_metadata.proto import metadata_store_pb2 as mlmd
from ml_metadata.proto import metadata_store_service_pb2 as svc

from kfp_ct.pipelines.entrypoints.local_server import LocalServer, grpcweb, ui

TOKEN = "ui-token-123"


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def write_rows(rows: int, data: Output[Dataset]) -> int:
    """Writes a small CSV."""
    with open(data.path, "w") as fh:
        fh.write("a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(rows)))
    data.metadata["rows"] = rows
    return rows


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def use(data: Input[Dataset], marker: str, metrics: Output[Metrics], report: Output[HTML],
        notes: Output[Markdown], matrix: Output[ClassificationMetrics]) -> str:
    """Reads the CSV; fails while ``marker`` names a missing file."""
    import os

    if marker and not os.path.exists(marker):
        raise ValueError(f"no marker file {marker}")
    with open(data.path) as fh:
        rows = len(fh.read().splitlines()) - 1
    metrics.log_metric("accuracy", 0.9)
    metrics.log_metric("rows", rows)
    matrix.log_confusion_matrix(["a", "b"], [[3, 1], [0, 4]])
    with open(report.path, "w") as fh:
        fh.write("<html><body><h1>Report</h1></body></html>")
    with open(notes.path, "w") as fh:
        fh.write("# Notes\n\nall good")
    return "done"


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def bye() -> str:
    """The exit task."""
    return "bye"


@dsl.pipeline(name="two-step")
def two_step(rows: int = 5, marker: str = ""):
    with dsl.ExitHandler(bye(), name="body"):  # a sub-DAG, as in every kfp-ct pipeline
        # write-rows sorts after use in the compiled YAML: records must follow the run's order
        made = write_rows(rows=rows).set_display_name("make-data")  # taskInfo.name != key
        use(data=made.outputs["data"], marker=marker)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    path = tmp_path_factory.mktemp("pkg") / "two.yaml"
    compiler.Compiler().compile(two_step, str(path))
    return str(path)


@pytest.fixture
def server(tmp_path):
    started = LocalServer(str(tmp_path / "state"), token=TOKEN, poll_s=0.05).start()
    yield started
    started.stop()


# ---------------------------------------------------------------------- helpers


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _http(server, method, path, body=None, headers=None, token=TOKEN, cookie=None):
    request = urllib.request.Request(server.url + path, data=body, method=method,
                                     headers=dict(headers or {}))
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if cookie:
        request.add_header("Cookie", f"{ui.COOKIE}={cookie}")
    try:
        with _OPENER.open(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _api(server, method, path, payload=None):
    body = json.dumps(payload).encode() if payload is not None else None
    status, _, data = _http(server, method, "/apis/v2beta1" + path, body,
                            {"Content-Type": "application/json"})
    assert status == 200, (status, data[:500])
    return json.loads(data) if data else {}


def _upload(server, package):
    boundary = "----kfpct"
    with open(package, "rb") as fh:
        content = fh.read()
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"uploadfile\"; "
            f"filename=\"two.yaml\"\r\nContent-Type: application/x-yaml\r\n\r\n").encode() \
        + content + f"\r\n--{boundary}--\r\n".encode()
    status, _, data = _http(server, "POST", "/apis/v2beta1/pipelines/upload?name=two-step",
                            body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200, data
    pipeline = json.loads(data)
    versions = _api(server, "GET", f"/pipelines/{pipeline['pipeline_id']}/versions")
    return pipeline["pipeline_id"], versions["pipeline_versions"][0]["pipeline_version_id"]


def _run(server, pipeline_id, version_id, marker="", rows=5):
    run = _api(server, "POST", "/runs", {
        "display_name": "r", "pipeline_version_reference": {
            "pipeline_id": pipeline_id, "pipeline_version_id": version_id},
        "runtime_config": {"parameters": {"rows": rows, "marker": marker}}})
    return run["run_id"]


def _wait(server, run_id, states=("SUCCEEDED", "FAILED", "CANCELED"), timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = _api(server, "GET", f"/runs/{run_id}")
        if run["state"] in states:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} still {run['state']} after {timeout} s")


def grpc_web(server, method, request, response_cls, text=True, cookie=TOKEN):
    """One unary call, framed by hand as the UI's grpc-web client frames it."""
    framed = struct.pack(">BI", 0, len(request.SerializeToString())) + \
        request.SerializeToString()
    body = base64.b64encode(framed) if text else framed
    kind = "application/grpc-web-text" if text else "application/grpc-web+proto"
    status, headers, data = _http(server, "POST", f"/ml_metadata.MetadataStoreService/{method}",
                                  body, {"Content-Type": kind, "X-Grpc-Web": "1",
                                         "X-User-Agent": "grpc-web-javascript/0.1"},
                                  token=None, cookie=cookie)
    assert status == 200, data
    raw = base64.b64decode(data) if text else data
    assert headers["Content-Type"].startswith(kind.split("+")[0])
    message, trailer, at = None, {}, 0
    while at < len(raw):
        flags, size = struct.unpack(">BI", raw[at:at + 5])
        payload = raw[at + 5:at + 5 + size]
        at += 5 + size
        if flags & 0x80:
            trailer = dict(line.split(":", 1) for line in payload.decode().split("\r\n")
                           if line)
        else:
            message = response_cls.FromString(payload)
    return message, trailer


def _call(server, method, request, response_cls):
    message, trailer = grpc_web(server, method, request, response_cls)
    assert trailer.get("grpc-status") == "0", trailer
    return message


def _records(server, run_id):
    """The run's context, executions by task name, events and artifacts, read as the
    UI reads them (frontend/src/mlmd/MlmdUtils.ts at 2.5.0)."""
    context = _call(server, "GetContextByTypeAndName", svc.GetContextByTypeAndNameRequest(
        type_name="system.PipelineRun", context_name=run_id),
        svc.GetContextByTypeAndNameResponse).context
    executions = _call(server, "GetExecutionsByContext", svc.GetExecutionsByContextRequest(
        context_id=context.id), svc.GetExecutionsByContextResponse).executions
    events = _call(server, "GetEventsByExecutionIDs", svc.GetEventsByExecutionIDsRequest(
        execution_ids=[e.id for e in executions]), svc.GetEventsByExecutionIDsResponse).events
    artifacts = _call(server, "GetArtifactsByContext", svc.GetArtifactsByContextRequest(
        context_id=context.id), svc.GetArtifactsByContextResponse).artifacts
    types = {t.id: t.name for t in _call(server, "GetExecutionTypes",
                                         svc.GetExecutionTypesRequest(),
                                         svc.GetExecutionTypesResponse).execution_types}
    types.update({t.id: t.name for t in _call(server, "GetArtifactTypes",
                                              svc.GetArtifactTypesRequest(),
                                              svc.GetArtifactTypesResponse).artifact_types})
    by_task = {e.custom_properties["task_name"].string_value: e for e in executions}
    return context, by_task, events, {a.id: a for a in artifacts}, types


def _state(execution):
    return mlmd.Execution.State.Name(execution.last_known_state)


# ------------------------------------------------------------------------ tests


def test_a_run_is_recorded_as_the_kfp_launcher_records_it(server, package):
    pipeline_id, version_id = _upload(server, package)
    run_id = _run(server, pipeline_id, version_id)
    assert _wait(server, run_id)["state"] == "SUCCEEDED"
    context, by_task, events, artifacts, types = _records(server, run_id)

    assert context.name == run_id and types.get(context.type_id) is None  # a context type
    props = context.custom_properties
    assert set(props) == {"namespace", "resource_name", "pipeline_root", "store_session_info"}
    assert props["pipeline_root"].string_value.startswith(server.state_dir)
    parents = _call(server, "GetParentContextsByContext",
                    svc.GetParentContextsByContextRequest(context_id=context.id),
                    svc.GetParentContextsByContextResponse).contexts
    assert [p.name for p in parents] == ["two-step"]

    # task_name is the task's taskInfo.name, the label the UI matches graph nodes by
    assert set(by_task) == {"", "body", "make-data", "use", "bye"}
    root, body = by_task[""], by_task["body"]
    assert types[root.type_id] == "system.DAGExecution" and root.name == f"run/{run_id}"
    assert _state(root) == "COMPLETE" and _state(body) == "COMPLETE"
    assert root.custom_properties["total_dag_tasks"].int_value == 2  # body, bye
    assert "parent_dag_id" not in root.custom_properties
    assert types[body.type_id] == "system.DAGExecution"
    assert body.custom_properties["parent_dag_id"].int_value == root.id
    assert body.custom_properties["total_dag_tasks"].int_value == 2
    assert by_task["bye"].custom_properties["parent_dag_id"].int_value == root.id
    for name in ("make-data", "use"):
        execution = by_task[name]
        assert types[execution.type_id] == "system.ContainerExecution"
        assert _state(execution) == "COMPLETE"
        cp = execution.custom_properties
        assert {k for k in cp} >= {"display_name", "task_name", "parent_dag_id", "pod_name",
                                   "pod_uid", "namespace", "image", "inputs", "outputs"}
        assert cp["display_name"].string_value == name == cp["task_name"].string_value
        assert cp["parent_dag_id"].int_value == body.id
        assert cp["image"].string_value == "python:3.11"
    make_cp, use_cp = by_task["make-data"].custom_properties, by_task["use"].custom_properties
    assert make_cp["pod_name"].string_value == "write-rows"  # its log is served under it
    assert make_cp["inputs"].struct_value["rows"] == 5
    assert make_cp["outputs"].struct_value["Output"] == 5
    assert use_cp["outputs"].struct_value["Output"] == "done"

    # events: make's output "data" is the very artifact use read as "data"
    def named(execution, kind):
        return {e.path.steps[0].key: e.artifact_id for e in events
                if e.execution_id == execution.id and e.type == kind}
    made = named(by_task["make-data"], mlmd.Event.OUTPUT)
    assert made.keys() == {"data"} and named(by_task["make-data"], mlmd.Event.INPUT) == {}
    assert named(by_task["use"], mlmd.Event.INPUT) == {"data": made["data"]}
    outputs = named(by_task["use"], mlmd.Event.OUTPUT)
    assert outputs.keys() == {"metrics", "report", "notes", "matrix"}
    expected_types = {"data": "system.Dataset", "metrics": "system.Metrics",
                      "report": "system.HTML", "notes": "system.Markdown",
                      "matrix": "system.ClassificationMetrics"}
    for name, artifact_id in {**made, **outputs}.items():
        artifact = artifacts[artifact_id]
        assert types[artifact.type_id] == expected_types[name]
        assert artifact.state == mlmd.Artifact.LIVE
        assert artifact.custom_properties["display_name"].string_value == name
        assert artifact.uri.startswith(f"{server.url}{ui.ARTIFACTS_PREFIX}{run_id}/")
    # the artifact's metadata as custom properties, converted as the launcher converts
    metrics = artifacts[outputs["metrics"]].custom_properties
    assert metrics["accuracy"].double_value == 0.9 and metrics["rows"].double_value == 5
    # an object nested as the launcher nests it ({"struct": ...}), where the UI reads it
    matrix = artifacts[outputs["matrix"]].custom_properties["confusionMatrix"].struct_value
    assert [a["displayName"] for a in matrix["struct"]["annotationSpecs"]] == ["a", "b"]
    assert [list(r["row"]) for r in matrix["struct"]["rows"]] == [[3, 1], [0, 4]]
    assert artifacts[made["data"]].custom_properties["rows"].double_value == 5

    # one artifact per thing written: an input event names the producer's very artifact
    assert len({a.uri for a in artifacts.values()}) == len(artifacts) == 5
    # the UI's server fetches the HTML report at its URI, with the browser's cookie
    uri = artifacts[outputs["report"]].uri
    status, headers, data = _http(server, "GET", uri[len(server.url):], token=None,
                                  cookie=TOKEN)
    assert status == 200 and data == b"<html><body><h1>Report</h1></body></html>"
    assert headers["Content-Type"].startswith("text/html")
    assert _http(server, "GET", uri[len(server.url):], token=None)[0] == 401
    # ... and a task's log where it asks for a pod's log (pod_name is the task)
    status, _, log = _http(server, "GET", f"/apis/v1beta1/runs/{run_id}/nodes/"
                           f"{make_cp['pod_name'].string_value}/log", cookie=TOKEN,
                           token=None)
    assert status == 200 and b"Executing task" in log and b"write-rows" in log
    escape = _http(server, "GET", f"{ui.ARTIFACTS_PREFIX}{run_id}/..%2F..%2Ftoken",
                   cookie=TOKEN, token=None)
    assert escape[0] == 404 and TOKEN.encode() not in escape[2]


def test_retry_reruns_the_failed_task_and_reuses_what_succeeded(server, package, tmp_path):
    pipeline_id, version_id = _upload(server, package)
    marker = tmp_path / "marker"
    run_id = _run(server, pipeline_id, version_id, marker=str(marker))
    failed = _wait(server, run_id)
    assert failed["state"] == "FAILED" and "no marker file" in failed["error"]["message"]
    _, by_task, events, _, _ = _records(server, run_id)
    assert _state(by_task[""]) == "FAILED" and _state(by_task["use"]) == "FAILED"
    assert _state(by_task["make-data"]) == "COMPLETE"
    make_id = by_task["make-data"].id
    first_data = [e.artifact_id for e in events if e.execution_id == make_id]
    # retried while the marker is still missing: make is re-used, use fails again
    assert _http(server, "POST", f"/apis/v2beta1/runs/{run_id}:retry")[0] == 200
    assert _wait(server, run_id)["state"] == "FAILED"
    _, again, _, _, _ = _records(server, run_id)
    assert again["make-data"].id == make_id and _state(again["use"]) == "FAILED"
    marker.write_text("")
    assert _http(server, "POST", f"/apis/v2beta1/runs/{run_id}:retry")[0] == 200
    done = _wait(server, run_id)
    assert done["state"] == "SUCCEEDED", done
    states = [s["state"] for s in done["state_history"]]
    assert states[-3:] == ["PENDING", "RUNNING", "SUCCEEDED"] and "FAILED" in states
    # make was not run again: its record says re-used, its execution and output stay
    run_dir = os.path.join(server.state_dir, "runs", run_id)
    status_now = json.load(open(os.path.join(run_dir, "status.json")))
    folder = status_now["run_folder"]
    assert json.load(open(os.path.join(folder, "write-rows", "kfp_ct_task.json")))[
        "reused"] is True
    assert json.load(open(os.path.join(folder, "use", "kfp_ct_task.json")))["reused"] is False
    assert os.path.exists(os.path.join(run_dir, "status-attempt-1.json"))
    assert os.path.exists(os.path.join(run_dir, "status-attempt-2.json"))
    _, by_task, events, artifacts, _ = _records(server, run_id)
    assert by_task["make-data"].id == make_id and _state(by_task["make-data"]) == "COMPLETE"
    assert [e.artifact_id for e in events if e.execution_id == make_id] == first_data
    assert _state(by_task["use"]) == "COMPLETE" and _state(by_task[""]) == "COMPLETE"
    assert {e.path.steps[0].key for e in events if e.execution_id == by_task["use"].id
            and e.type == mlmd.Event.OUTPUT} == {"metrics", "report", "notes", "matrix"}
    # a run that succeeded cannot be retried (the backend: "Workflow must be Failed/Error")
    status, _, data = _http(server, "POST", f"/apis/v2beta1/runs/{run_id}:retry")
    assert status == 400 and b"must be Failed/Error" in data


def test_grpc_web_framing_and_errors(server):
    request = svc.GetArtifactTypesRequest()
    for text in (True, False):
        message, trailer = grpc_web(server, "GetArtifactTypes", request,
                                    svc.GetArtifactTypesResponse, text=text)
        assert trailer["grpc-status"] == "0" and message is not None
    # a write: this endpoint is its store's one writer
    put = svc.PutArtifactTypeRequest(artifact_type=mlmd.ArtifactType(name="x"))
    message, trailer = grpc_web(server, "PutArtifactType", put, svc.PutArtifactTypeResponse)
    assert message is None and trailer["grpc-status"] == str(grpcweb.PERMISSION_DENIED)
    message, trailer = grpc_web(server, "NoSuchMethod", request, svc.GetArtifactTypesResponse)
    assert trailer["grpc-status"] == str(grpcweb.UNIMPLEMENTED)
    message, trailer = grpc_web(server, "GetArtifactTypes", request,
                                svc.GetArtifactTypesResponse, cookie="wrong")
    assert message is None and trailer["grpc-status"] == str(grpcweb.UNAUTHENTICATED)
    # a frame that says more bytes than follow
    status, _, data = _http(server, "POST", "/ml_metadata.MetadataStoreService/GetArtifactTypes",
                            base64.b64encode(struct.pack(">BI", 0, 50) + b"abc"),
                            {"Content-Type": "application/grpc-web-text"})
    assert status == 200 and b"grpc-status:3" in base64.b64decode(data)
    # chunked base64 (each frame encoded on its own) decodes as one body
    framed = grpcweb.frame(request.SerializeToString())
    assert grpcweb.decode_text(base64.b64encode(framed[:3]) + base64.b64encode(framed[3:])) \
        == framed


def test_login_cookie(server):
    status, headers, _ = _http(server, "GET", "/login?token=wrong", token=None)
    assert status == 401 and "Set-Cookie" not in headers
    status, headers, _ = _http(server, "GET", f"/login?token={TOKEN}", token=None)
    assert status == 200
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"{ui.COOKIE}={TOKEN};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    # POST with the form (the token stays out of the URL and the history)
    status, headers, _ = _http(server, "POST", "/login", f"token={TOKEN}&next=http%3A%2F%2F"
                               "127.0.0.1%3A3000%2F".encode(), token=None,
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303 and headers["Location"] == "http://127.0.0.1:3000/"
    assert headers["Set-Cookie"].startswith(f"{ui.COOKIE}={TOKEN};")
    # the cookie opens the API as the bearer token does; a wrong one does not
    assert _http(server, "GET", "/apis/v2beta1/pipelines", token=None, cookie=TOKEN)[0] == 200
    assert _http(server, "GET", "/apis/v2beta1/pipelines", token=None, cookie="x")[0] == 401
    assert _http(server, "GET", "/apis/v2beta1/pipelines", token=None)[0] == 401
    # a page of another site cannot use it (SameSite aside): its Origin is refused
    status, _, data = _http(server, "GET", "/apis/v2beta1/pipelines", token=None,
                            cookie=TOKEN, headers={"Origin": "https://evil.example"})
    assert status == 401 and b"loopback" in data
    assert _http(server, "GET", "/apis/v2beta1/pipelines", token=None, cookie=TOKEN,
                 headers={"Origin": "http://127.0.0.1:3000"})[0] == 200
    # a next= off this machine is not followed
    assert ui.safe_next("https://evil.example/") == ""
    # the token never reaches the request log
    with open(os.path.join(server.state_dir, "requests.jsonl")) as fh:
        assert TOKEN not in fh.read()


def test_lineage_query(server, package):
    """The README's lineage query: what made an artifact, walked up through events."""
    from kfp_ct.pipelines.entrypoints.local_server.metadata import upstream

    pipeline_id, version_id = _upload(server, package)
    run_id = _run(server, pipeline_id, version_id, rows=7)
    assert _wait(server, run_id)["state"] == "SUCCEEDED"
    store = server.metadata.store
    with server.metadata.lock:
        report = [a for a in store.get_artifacts_by_type("system.HTML")
                  if f"/{run_id}/" in a.uri][0]
        chain = upstream(store, report.id)
    # the report was made by task use (image python:3.11) of run run_id, from the
    # Dataset that make wrote with rows=7
    steps = [(s["task"], s["run"], sorted(s["inputs"])) for s in chain]
    assert steps[0] == ("use", run_id, ["data"])
    assert steps[1] == ("make-data", run_id, [])
    assert chain[1]["parameters"]["rows"] == 7
    assert chain[0]["inputs"]["data"]["type"] == "system.Dataset"
