"""tests/tfserving_double.py: TF Serving's REST API over real SavedModels, answering as
the SavedModel itself does when called directly."""

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from kfp_ct.components.common import tfenv  # noqa: F401  (before TensorFlow loads)
from kfp_ct.components.push import canary as canary_lib
from tfserving_double import ModelServerDouble

HERE = os.path.dirname(os.path.abspath(__file__))
NAME = "penguins"


def call(url, body=None):
    """(status, parsed JSON or raw bytes) of a GET (no body) or POST."""
    data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def b64(rows):
    return [{"b64": base64.b64encode(r).decode()} for r in rows]


@pytest.fixture(scope="module")
def rows(penguins_model):
    """Three eval rows as serving gets them (no label)."""
    records = canary_lib.read_records(os.path.join(penguins_model["raw"], "eval_raw.tfrecord"), 3)
    return canary_lib.strip_columns(records, ["species"])


@pytest.fixture(scope="module")
def direct(penguins_model, rows):
    """serving_default's own answer to ``rows``, called in this process."""
    import tensorflow as tf

    fn = tf.saved_model.load(penguins_model["model"]).signatures["serving_default"]
    out = fn(examples=tf.constant(rows))
    return {"classes": [[v.decode() for v in r] for r in out["classes"].numpy().tolist()],
            "scores": out["scores"].numpy().tolist()}


@pytest.fixture(scope="module")
def server(penguins_model):
    double = ModelServerDouble(NAME, {1: penguins_model["model"], 2: penguins_model["model"]})
    double.labels = {"stable": 1, "canary": 2}
    with double:
        yield double


@pytest.fixture
def fresh(server):
    """The module's server with its fault injection reset after the test."""
    yield server
    server.fail_predict = server.tamper = None
    server.delay_s = 0.0


def same(got, want):
    assert got["classes"] == want["classes"]
    assert len(got["scores"]) == len(want["scores"])
    for g, w in zip(got["scores"], want["scores"]):
        assert g == pytest.approx(w, abs=1e-6)


def test_the_module_imports_without_tensorflow():
    code = "import sys, tfserving_double; assert 'tensorflow' not in sys.modules, 'tf imported'"
    subprocess.run([sys.executable, "-c", code], cwd=HERE, check=True, timeout=60)


def test_row_and_columnar_predict_answer_what_the_saved_model_answers(server, rows, direct):
    url = f"{server.url}/v1/models/{NAME}:predict"
    # Row format: a plain list of b64 values, or objects keyed by the input name.
    for instances in (b64(rows), [{"examples": v} for v in b64(rows)]):
        status, answer = call(url, {"signature_name": "serving_default", "instances": instances})
        assert status == 200, answer
        assert list(answer) == ["predictions"] and len(answer["predictions"]) == 3
        assert all(sorted(p) == ["classes", "scores"] for p in answer["predictions"])
        same({k: [p[k] for p in answer["predictions"]] for k in ("classes", "scores")}, direct)
    # Columnar: the input by name, or the bare list (one input).
    for inputs in ({"examples": b64(rows)}, b64(rows)):
        status, answer = call(url, {"signature_name": "serving_default", "inputs": inputs})
        assert status == 200, answer
        assert list(answer) == ["outputs"] and sorted(answer["outputs"]) == ["classes", "scores"]
        same(answer["outputs"], direct)
    assert [(m, p) for m, p, _ in server.requests[-4:]] == [
        ("POST", f"/v1/models/{NAME}:predict")] * 4
    assert server.requests[-1][2] == {"signature_name": "serving_default", "inputs": b64(rows)}


def test_versions_labels_and_unknown_names(server, rows, direct):
    base = f"{server.url}/v1/models/{NAME}"
    ok = {"error_code": "OK", "error_message": ""}
    status, answer = call(base)
    assert status == 200 and answer == {"model_version_status": [
        {"version": "2", "state": "AVAILABLE", "status": ok},
        {"version": "1", "state": "AVAILABLE", "status": ok}]}
    assert call(f"{base}/versions/1") == (200, {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": ok}]})
    # TF Serving's model status does not resolve a label: every version, as the bare path.
    assert call(f"{base}/labels/stable") == (200, answer)
    # Predict and metadata do: the label names its version.
    for label, version in (("stable", "1"), ("canary", "2")):
        status, meta = call(f"{base}/labels/{label}/metadata")
        assert status == 200 and meta["model_spec"] == {"name": NAME, "signature_name": "",
                                                        "version": version}
        sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert list(sig["inputs"]) == ["examples"] and sig["inputs"]["examples"]["dtype"] == \
            "DT_STRING"
        status, answer = call(f"{base}/labels/{label}:predict", {"inputs": b64(rows)})
        assert status == 200, answer
        same(answer["outputs"], direct)
    assert call(f"{base}/metadata")[1]["model_spec"]["version"] == "2"  # the newest

    assert call(f"{base}/versions/7") == (
        404, {"error": f"Could not find version 7 of model {NAME}"})
    assert call(f"{base}/versions/7:predict", {"inputs": b64(rows)}) == (
        404, {"error": f"Servable not found for request: Specific({NAME}, 7)"})
    assert call(f"{server.url}/v1/models/nope") == (
        404, {"error": "Could not find any versions of model nope"})
    assert call(f"{server.url}/v1/models/nope:predict", {"inputs": b64(rows)}) == (
        404, {"error": "Servable not found for request: Latest(nope)"})
    assert call(f"{base}/labels/blue:predict", {"inputs": b64(rows)}) == (
        400, {"error": "Unrecognized servable version label: blue"})


def test_malformed_requests_are_400(server, rows):
    url = f"{server.url}/v1/models/{NAME}:predict"
    status, answer = call(url, b"{not json")
    assert status == 400 and answer["error"].startswith("JSON Parse error: ")
    assert call(url, {"signature_name": "serving_default"}) == (
        400, {"error": "Missing 'inputs' or 'instances' key"})
    status, answer = call(url, {"instances": []})
    assert status == 400 and "No values in 'instances' array" in answer["error"]
    status, answer = call(url, {"inputs": {"features": b64(rows)}})
    assert (status, answer) == (400, {"error": "Missing named input: examples in 'inputs' object."})
    status, answer = call(url, {"signature_name": "other", "inputs": b64(rows)})
    assert (status, answer) == (
        400, {"error": 'Serving signature name: "other" not found in signature def'})
    status, answer = call(url, {"instances": [1.5]})
    assert status == 400 and "is not of expected type: string" in answer["error"]


def test_fail_predict_tamper_and_delay(fresh, rows, direct):
    base = f"{fresh.url}/v1/models/{NAME}"
    fresh.fail_predict = (503, "Servable is loading")
    mark = len(fresh.requests)
    assert call(f"{base}/labels/canary:predict", {"inputs": b64(rows)}) == (
        503, {"error": "Servable is loading"})
    assert call(base)[0] == 200  # status is not a predict
    assert [(m, p) for m, p, _ in fresh.requests[mark:]] == [
        ("POST", f"/v1/models/{NAME}/labels/canary:predict"), ("GET", f"/v1/models/{NAME}")]

    fresh.fail_predict = None
    seen = []

    def swap(answer):
        seen.append(answer)
        answer["outputs"]["scores"] = [list(reversed(s)) for s in answer["outputs"]["scores"]]
        return answer

    fresh.tamper, fresh.delay_s = swap, 0.2
    status, answer = call(f"{base}:predict", {"inputs": b64(rows)})
    assert status == 200 and len(seen) == 1
    assert answer["outputs"]["classes"] == direct["classes"]
    for got, want in zip(answer["outputs"]["scores"], direct["scores"]):
        assert got[::-1] == pytest.approx(want, abs=1e-6)
    assert fresh.requests[-1][1] == f"/v1/models/{NAME}:predict"


def test_string_outputs_one_output_and_bytes_names(tmp_path):
    """A model of our own: text outputs as the raw bytes (even not UTF-8), ``_bytes``
    outputs in base64, and a signature with one output answered bare."""
    import tensorflow as tf

    class Echo(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def both(self, examples):
            return {"text": examples, "text_bytes": examples,
                    "size": tf.strings.length(examples, unit="BYTE")}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def one(self, examples):
            return {"size": tf.cast(tf.strings.length(examples), tf.float32) / 4.0}

    module = Echo()
    path = str(tmp_path / "echo")
    tf.saved_model.save(module, path, signatures={"serving_default": module.both,
                                                  "one": module.one})
    values = [b"caf\xc3\xa9", b"\xff\x00"]
    with ModelServerDouble("echo", {5: path}) as server:
        url = f"{server.url}/v1/models/echo:predict"
        status, answer = call(url, {"instances": b64(values[:1])})
        assert (status, answer) == (200, {"predictions": [
            {"size": 5, "text": "caf\u00e9", "text_bytes": {"b64": "Y2Fmw6k="}}]})
        status, raw = call(url, {"inputs": b64(values)})  # not UTF-8: raw bytes, not JSON
        assert status == 200 and isinstance(raw, bytes) and b'"\xff\\u0000"' in raw
        assert b'"text_bytes": [{"b64": "Y2Fmw6k="}, {"b64": "/wA="}]' in raw
        status, answer = call(url, {"signature_name": "one", "instances": b64(values)})
        assert (status, answer) == (200, {"predictions": [1.25, 0.5]})
        status, answer = call(url, {"signature_name": "one", "inputs": ["abcdef"]})
        assert (status, answer) == (200, {"outputs": [1.5]})
        status, answer = call(url, {"instances": ["caf\u00e9"]})  # a JSON string is sent as is
        assert answer["predictions"][0]["size"] == 5
