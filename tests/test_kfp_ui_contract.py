"""The requests the official Kubeflow Pipelines UI 2.5.0 made, replayed against the endpoint.

``tests/data/kfp_ui_2_5_requests.json`` holds every distinct request the real UI (its
React app and its Node server, unmodified, in headless Chromium) made to ``kfp-ct
local-server`` on every page of a session: pipelines, their graphs, runs, experiments, a
run's graph with its task states, inputs, outputs, logs and reports, artifacts,
executions, recurring runs, the create-run form, Retry, and deletes. Each keeps its method,
path, query string (the list filters as the UI sends them, URL-encoded twice) and, for the
ML Metadata calls, the gRPC request; ids are replaced by their role (``{run}``,
``{pipeline}``...). Recorded with them: the status and the answer's top-level fields the UI
got then, when every page drew correctly.

Here each is sent again, with the ids of a small real world (a two-task pipeline with an
exit handler, a run that succeeded, one that failed, an experiment, a recurring run, and
a pipeline and a run to delete), through real gRPC-web framing for the metadata calls,
and must get the same status and at least the same fields.
"""

import base64
import json
import os
import pathlib
import struct
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from google.protobuf import json_format
from kfp import compiler
from ml_metadata.proto import metadata_store_service_pb2 as svc

from kfp_ct.pipelines.entrypoints.local_server import LocalServer, ui

from test_ui_metadata import two_step  # tests/ is on sys.path

DATA = pathlib.Path(__file__).parent / "data" / "kfp_ui_2_5_requests.json"
TOKEN = "contract-token"
SERVICE = svc.DESCRIPTOR.services_by_name["MetadataStoreService"]
# present only when there is a next page: the recorded session had more items than here
OPTIONAL = {"next_page_token"}


def _send(server, method, path, body=None, content_type=None):
    request = urllib.request.Request(server.url + path, data=body, method=method)
    request.add_header("Cookie", f"{ui.COOKIE}={TOKEN}")  # as the UI's server forwards it
    request.add_header("Origin", "http://127.0.0.1:3000")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _json(server, method, path, payload=None):
    body = json.dumps(payload).encode() if payload is not None else None
    status, data = _send(server, method, path, body, "application/json")
    assert status == 200, (path, data[:300])
    return json.loads(data or b"{}")


def _upload(server, package, name):
    boundary = "b0undary"
    raw = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"uploadfile\"; "
           f"filename=\"p.yaml\"\r\n\r\n").encode() + pathlib.Path(package).read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    status, data = _send(server, "POST", f"/apis/v2beta1/pipelines/upload?name={name}", raw,
                         f"multipart/form-data; boundary={boundary}")
    assert status == 200, data
    pid = json.loads(data)["pipeline_id"]
    version = _json(server, "GET", f"/apis/v2beta1/pipelines/{pid}/versions")
    return pid, version["pipeline_versions"][0]["pipeline_version_id"]


def _run(server, pid, vid, experiment, marker):
    run = _json(server, "POST", "/apis/v2beta1/runs", {
        "display_name": "contract", "experiment_id": experiment,
        "pipeline_version_reference": {"pipeline_id": pid, "pipeline_version_id": vid},
        "runtime_config": {"parameters": {"marker": marker}}})
    deadline = time.time() + 90
    while time.time() < deadline:
        got = _json(server, "GET", f"/apis/v2beta1/runs/{run['run_id']}")
        if got["state"] in ("SUCCEEDED", "FAILED"):
            return got
        time.sleep(0.1)
    raise AssertionError("the run did not finish")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("contract")
    package = str(folder / "two.yaml")
    compiler.Compiler().compile(two_step, package)
    server = LocalServer(str(folder / "state"), token=TOKEN, poll_s=0.05).start()
    try:
        pid, vid = _upload(server, package, "two-step")
        experiment = _json(server, "POST", "/apis/v2beta1/experiments",
                           {"display_name": "contract"})["experiment_id"]
        ok = _run(server, pid, vid, experiment, "")
        failed = _run(server, pid, vid, experiment, str(folder / "missing"))
        scratch = _run(server, pid, vid, experiment, str(folder / "missing"))
        assert (ok["state"], failed["state"]) == ("SUCCEEDED", "FAILED")
        recurring = _json(server, "POST", "/apis/v2beta1/recurringruns", {
            "display_name": "nightly", "experiment_id": experiment,
            "pipeline_version_reference": {"pipeline_id": pid, "pipeline_version_id": vid},
            "trigger": {"cron_schedule": {"cron": "0 0 3 * * *"}}, "max_concurrency": "1",
            "mode": "ENABLE"})
        scratch_pid, scratch_vid = _upload(server, package, "scratch")
        status = json.loads((pathlib.Path(server.state_dir) / "runs" / ok["run_id"] /
                             "status.json").read_text())
        outputs = os.path.join(server.state_dir, "runs", ok["run_id"], "outputs")
        data_file = os.path.join(status["run_folder"], "write-rows", "data")
        ids = {"{run}": ok["run_id"], "{failed_run}": failed["run_id"],
               "{pipeline}": pid, "{version}": vid, "{experiment}": experiment,
               "{recurring_run}": recurring["recurring_run_id"],
               "{scratch_pipeline}": scratch_pid, "{scratch_version}": scratch_vid,
               "{scratch_run}": scratch["run_id"], "{node}": "write-rows",
               "{artifact_path}": os.path.relpath(data_file, outputs)}
        yield server, ids
    finally:
        server.stop()


def _fill(text, ids):
    for key, value in ids.items():
        text = text.replace(key, value)
    return text


def _metadata_ids(server, run_id):
    """The ids a metadata request of the recorded session named, for this world's run."""
    with server.metadata.lock:
        store = server.metadata.store
        context = store.get_context_by_type_and_name("system.PipelineRun", run_id)
        executions = store.get_executions_by_context(context.id)
        artifacts = store.get_artifacts_by_context(context.id)
        types = store.get_artifact_types()
    return {"contextId": str(context.id), "executionIds": [str(e.id) for e in executions],
            "executionId": str(executions[0].id),
            "artifactIds": [str(a.id) for a in artifacts],
            "artifactId": str(artifacts[0].id), "typeIds": [str(t.id) for t in types]}


def _metadata_call(server, entry, ids, numbers):
    method = entry["path"].rsplit("/", 1)[1]
    found = SERVICE.methods_by_name[method]
    request = json.loads(_fill(json.dumps(entry["grpc_request"]), ids))
    for key, value in list(request.items()):  # numeric ids: this world's
        if value in ("{%s}" % key,):
            request[key] = numbers[key]
    message = json_format.ParseDict(request, getattr(svc, found.input_type.name)())
    payload = message.SerializeToString()
    framed = struct.pack(">BI", 0, len(payload)) + payload  # as grpc-web's client frames it
    status, data = _send(server, "POST", entry["path"], framed, "application/grpc-web+proto")
    assert status == 200, data[:300]
    response, trailer, at = None, "", 0
    while at < len(data):
        flags, size = struct.unpack(">BI", data[at:at + 5])
        chunk = data[at + 5:at + 5 + size]
        at += 5 + size
        if flags & 0x80:
            trailer = chunk.decode()
        else:
            response = getattr(svc, found.output_type.name).FromString(chunk)
    assert "grpc-status:0" in trailer, (method, trailer)
    return sorted(f.name for f, _ in response.ListFields()) if response is not None else []


def test_every_request_of_the_ui_is_answered_as_it_was(world):
    server, ids = world
    recorded = json.loads(DATA.read_text())["requests"]
    numbers = _metadata_ids(server, ids["{run}"])
    assert len(recorded) > 40
    seen_paths = set()
    order = {"GET": 0, "POST": 1, "DELETE": 2}  # reads first; deletes last
    for entry in sorted(recorded, key=lambda e: order.get(e["method"], 1)):
        path = _fill(entry["path"], ids)
        seen_paths.add(entry["path"].split("?")[0].split("/")[2] if "/apis/" in entry["path"]
                       else entry["path"].split("/")[1])
        if "grpc_request" in entry:
            keys = _metadata_call(server, entry, ids, numbers)
            assert set(entry["answer_keys"]) - OPTIONAL <= set(keys), (entry["path"], keys)
            continue
        query = {k: _fill(v, ids) for k, v in entry["query"].items()}
        url = path + ("?" + urllib.parse.urlencode(query) if query else "")
        status, data = _send(server, entry["method"], url,
                             b"" if entry["method"] == "POST" else None)
        assert status == entry["status"], (entry["method"], url, status, data[:300])
        if entry.get("answer_keys") is not None and status == 200:
            answer = json.loads(data or b"{}")
            missing = set(entry["answer_keys"]) - OPTIONAL - set(answer)
            assert not missing, (entry["method"], url, missing)
        elif path.startswith(ui.ARTIFACTS_PREFIX) or path.endswith("/log"):
            assert data, url
    # the session touched every back end the UI has: v1beta1, v2beta1, metadata, artifacts
    assert {"v1beta1", "v2beta1", "ml_metadata.MetadataStoreService", "artifacts"} <= \
        seen_paths, seen_paths


def test_the_recorded_filters_are_encoded_twice_as_the_ui_sends_them():
    """The data is what the UI really sent: its list filters arrive percent-encoded even
    after the HTTP layer decodes them once (a JSON object would start with "{")."""
    recorded = json.loads(DATA.read_text())["requests"]
    filters = [e["query"]["filter"] for e in recorded if e["query"].get("filter")]
    assert filters and all(f.startswith("%7B") for f in filters)
    assert all(json.loads(urllib.parse.unquote(f)) is not None for f in filters)
