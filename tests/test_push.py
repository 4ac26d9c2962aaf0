"""kfp_ct.components.push: serving check, warmup requests and publish to the model base."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from kfp_ct.components.common import tfenv  # noqa: F401  (before TensorFlow loads)
from kfp_ct.components.common import registry, storage
from kfp_ct.components.common.errors import KfpCtError, StorageError
from kfp_ct.components.push import canary as canary_lib
from kfp_ct.components.push import logic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBLEM = os.path.join(ROOT, "pipelines", "penguins", "problem.json")
PADDING_BYTES = 256 << 20


# ----------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def trained(penguins_model):
    """A small real penguins run: raw eval rows and a SavedModel (100 steps; conftest.py)."""
    return {"model": penguins_model["model"], "raw": penguins_model["raw"]}


@pytest.fixture
def upstream(tmp_path):
    """Gate, evaluate and validate outputs as the pipeline would hand them over."""
    dirs = {n: tmp_path / n for n in ("blessing", "evaluation", "statistics", "schema")}
    for d in dirs.values():
        d.mkdir()
    (dirs["blessing"] / "BLESSED").write_text("")
    (dirs["blessing"] / "blessing.json").write_text(json.dumps({
        "blessed": True, "notes": ["first push: change checks skipped"],
        "checks": [{"kind": "value", "metric": "accuracy", "threshold": ">= 0.5",
                    "candidate": 0.97, "baseline": None, "verdict": "pass"}]}))
    write_evaluation(dirs["evaluation"], None)
    (dirs["statistics"] / "FeatureStats.pb").write_bytes(b"\x0a\x03stats")
    (dirs["schema"] / "schema.pbtxt").write_text('feature { name: "island" }\n')
    return {k: str(v) for k, v in dirs.items()}


def write_evaluation(directory, compared_with):
    """evaluation.json as evaluate writes it: the baseline names the production version
    the candidate was compared with (None: there was none, a first push)."""
    state = "none" if compared_with is None else "ok"
    baseline = {"state": state, "version": compared_with, "path": None, "overall": None,
                "detail": "first push" if compared_with is None else "production"}
    with open(os.path.join(str(directory), "evaluation.json"), "w") as fh:
        json.dump({"task": "classification", "baseline": baseline,
                   "candidate": {"overall": {"accuracy": 0.97, "loss": 0.1}}}, fh)


def push(trained, upstream, base, pushed_dir, **kw):
    args = dict(model_dir=trained["model"], blessing_dir=upstream["blessing"],
                push_destination=base, raw_eval_dir=trained["raw"], pushed_dir=str(pushed_dir),
                statistics_dir=upstream["statistics"], schema_dir=upstream["schema"],
                problem=PROBLEM, evaluation_dir=upstream["evaluation"],
                run_info={"run_id": "run-123", "task": "push"}, canary_rows=8)
    args.update(kw)
    return logic.run_push(**args)


def float_model(path):
    """A tiny SavedModel whose serving_default wants floats, not serialized examples."""
    import tensorflow as tf

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="examples")])
        def serve(self, examples):
            return {"outputs": examples * 2.0}

    m = Doubler()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    return str(path)


def numeric_dirs(base):
    return sorted(n for n in os.listdir(base) if n.isdigit()) if os.path.isdir(base) else []


# ------------------------------------------------------------------------- canary


def test_canary_process_answers_one_json_line(trained):
    raw = os.path.join(trained["raw"], logic.RAW_EVAL_FILE)
    proc = subprocess.run(
        [sys.executable, "-m", "kfp_ct.components.push.canary", trained["model"], raw, "5"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"] is True
    assert result["rows"] == 5 and result["requests"] == 1 + canary_lib.SINGLE_REQUESTS
    assert result["outputs"] == ["classes", "scores"]
    assert result["latency_ms_p50"] > 0


def test_canary_on_missing_model_fails_with_json(trained, tmp_path):
    raw = os.path.join(trained["raw"], logic.RAW_EVAL_FILE)
    proc = subprocess.run(
        [sys.executable, "-m", "kfp_ct.components.push.canary", str(tmp_path / "nope"), raw, "3"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode != 0
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"] is False and "cannot load SavedModel" in result["error"]


def test_warmup_file_parses_back_to_the_canary_records(trained, tmp_path):
    import tensorflow as tf

    records = canary_lib.read_records(os.path.join(trained["raw"], logic.RAW_EVAL_FILE), 4)
    path = canary_lib.write_warmup_requests(str(tmp_path), records, model_name="penguins")
    assert path == str(tmp_path / "assets.extra" / "tf_serving_warmup_requests")
    logs = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    assert len(logs) == 2  # the whole batch, then one row
    # First tag on the wire: field 6 (predict_log), wire type 2 (length-delimited).
    assert logs[0][0] == (6 << 3) | 2
    for data, expected in zip(logs, (records, records[:1])):
        request = canary_lib.parse_prediction_log(data).predict_log.request
        assert request.model_spec.name == "penguins"
        assert request.model_spec.signature_name == "serving_default"
        tensor = request.inputs["examples"]
        assert tensor.dtype == tf.string.as_datatype_enum
        assert [d.size for d in tensor.tensor_shape.dim] == [len(expected)]
        assert tf.make_ndarray(tensor).tolist() == expected


# --------------------------------------------------------------------------- push


def test_blessed_model_is_pushed_as_version_1_then_2(trained, upstream, tmp_path):
    import tensorflow as tf

    base = str(tmp_path / "serving" / "penguins")
    result = push(trained, upstream, base, tmp_path / "pushed")
    assert result.pushed and result.version == 1
    assert result.path == os.path.join(base, "1")
    record = json.loads((tmp_path / "pushed" / "push.json").read_text())
    assert record == {"pushed": True, "version": 1, "path": result.path, "destination": base}
    assert (tmp_path / "pushed" / "PUSHED").exists()
    assert not (tmp_path / "pushed" / "NOT_PUSHED").exists()
    assert result.summary()["version"] == 1

    # Version 1 loads and answers real rows.
    loaded = tf.saved_model.load(result.path)
    records = canary_lib.read_records(os.path.join(trained["raw"], logic.RAW_EVAL_FILE), 3)
    out = loaded.signatures["serving_default"](examples=tf.constant(records))
    assert out["scores"].shape[0] == 3

    # Audit files beside it.
    audit = os.path.join(result.path, registry.AUDIT_DIR)
    assert sorted(os.listdir(audit)) == sorted([
        "metadata.json", "manifest.json", "statistics.pb", "schema.pbtxt", "problem.json",
        "evaluation.json", "blessing.json", "prediction_profile.json", "serving_check.json",
        "calibration.json"])
    # The calibration of the model's confidence on its eval rows (the accuracy estimate's
    # basis): fitted on the profile's rows, whose mean it keeps exactly.
    calibration = json.load(open(os.path.join(audit, "calibration.json")))
    assert calibration["rows"] == json.load(open(os.path.join(audit, "prediction_profile.json")))["rows"]
    assert sorted(calibration["classes"]) == ["Adelie", "Chinstrap", "Gentoo"]
    y, n = np.array(calibration["y"]), np.array(calibration["n"])
    assert np.all(np.diff(y) >= 0) and 0 <= y.min() and y.max() <= 1
    assert float((y * n).sum() / n.sum()) == pytest.approx(calibration["accuracy"], abs=1e-5)
    assert "calibration" not in json.load(open(os.path.join(audit, "prediction_profile.json")))
    # The model's predictions on its eval rows: the baseline of prediction drift.
    profile = json.load(open(os.path.join(audit, "prediction_profile.json")))
    assert profile["reference"]["kind"] == "categorical"
    assert profile["rows"] == sum(profile["reference"]["counts"]) > 0
    assert set(profile["reference"]["values"]) <= {"Adelie", "Chinstrap", "Gentoo"}
    confidence = profile["confidence"]  # top class scores in ten cells of [0, 1]
    assert confidence["edges"] == [i / 10 for i in range(11)]
    assert sum(confidence["counts"]) == profile["rows"]
    meta = json.load(open(os.path.join(audit, "metadata.json")))
    assert meta["version"] == 1
    assert meta["metrics"] == {"accuracy": 0.97, "loss": 0.1}
    assert meta["blessing"]["blessed"] is True
    assert meta["blessing"]["checks"][0]["metric"] == "accuracy"
    assert json.loads(meta["problem"])["label"] == "species"
    assert meta["code_version"]["kfp_ct"]
    assert meta["parent_run"] == {"run_id": "run-123", "task": "push"}
    assert meta["source_model_dir"] == trained["model"]
    assert meta["created_at"] and meta["serving_check"]["ok"] is True
    assert open(os.path.join(audit, "statistics.pb"), "rb").read() == b"\x0a\x03stats"
    assert json.load(open(os.path.join(audit, "problem.json")))["task"] == "classification"

    # Warmup requests inside the version; the source model is left untouched.
    warmup = os.path.join(result.path, "assets.extra", "tf_serving_warmup_requests")
    logs = [r.numpy() for r in tf.data.TFRecordDataset(warmup)]
    tensor = canary_lib.parse_prediction_log(logs[0]).predict_log.request.inputs["examples"]
    rows = canary_lib.read_records(os.path.join(trained["raw"], logic.RAW_EVAL_FILE), 8)
    assert tf.make_ndarray(tensor).tolist() == canary_lib.strip_columns(rows, ["species"])
    assert meta["warmup_requests"] == {"rows": 8, "columns_left_out": ["species"]}
    assert not os.path.exists(os.path.join(trained["model"], "assets.extra"))

    write_evaluation(upstream["evaluation"], 1)  # the next candidate, compared with 1
    second = push(trained, upstream, base, tmp_path / "pushed2")
    assert second.version == 2
    assert registry.production(base).version == 2
    assert [v.state for v in registry.list_versions(base)] == ["complete", "complete"]


def test_serving_check_holds_the_warmup_rows_and_the_models_answer_to_them(
        trained, upstream, tmp_path):
    """kfp_ct/serving_check.json: what a rollout's judge sends to a canary (the warmup
    rows) and what the pushed model answered to them as one batch."""
    import base64

    import numpy as np
    import tensorflow as tf

    result = push(trained, upstream, str(tmp_path / "serving"), tmp_path / "pushed")
    path = os.path.join(result.path, registry.AUDIT_DIR, registry.SERVING_CHECK)
    check = json.load(open(path))
    assert sorted(check) == ["dtypes", "format", "input", "outputs", "requests_b64", "rows",
                             "signature"]
    assert (check["format"], check["signature"], check["input"]) == (
        1, "serving_default", "examples")
    requests = [base64.b64decode(r, validate=True) for r in check["requests_b64"]]
    assert check["rows"] == len(requests) == 8

    # Exactly the rows of the warmup file's batch request, in order; no label in any.
    warmup = os.path.join(result.path, "assets.extra", "tf_serving_warmup_requests")
    first_log = next(iter(tf.data.TFRecordDataset(warmup))).numpy()
    tensor = canary_lib.parse_prediction_log(first_log).predict_log.request.inputs["examples"]
    assert requests == tf.make_ndarray(tensor).tolist()
    for row in requests:
        features = set(tf.train.Example.FromString(row).features.feature)
        assert "species" not in features and "island" in features

    # The recorded outputs: the pushed SavedModel's answer to one batch of those bytes.
    answer = tf.saved_model.load(result.path).signatures["serving_default"](
        examples=tf.constant(requests, dtype=tf.string))
    assert check["dtypes"] == {"classes": "string", "scores": "float32"}
    assert sorted(check["outputs"]) == sorted(answer)
    for name, tensor in answer.items():
        value, recorded = tensor.numpy(), check["outputs"][name]
        assert check["dtypes"][name] == tensor.dtype.name
        assert len(recorded) == 8 and np.shape(recorded) == value.shape
        if tensor.dtype == tf.string:  # text, as TF Serving answers a name without _bytes
            assert recorded == [[v.decode("utf-8") for v in row] for row in value.tolist()]
        else:
            assert all(isinstance(v, float) for row in recorded for v in row)
            np.testing.assert_allclose(np.array(recorded), value, rtol=0, atol=1e-6)


def test_serving_check_values_are_encoded_as_tf_serving_rest_answers_them():
    import numpy as np

    words = np.array([[b"Adelie", "Gentoo".encode()], [b"\xff\xfe", "caf\u00e9".encode()]],
                     dtype=object)
    assert canary_lib.output_json("classes", words) == [
        ["Adelie", "Gentoo"], [{"b64": "//4="}, "caf\u00e9"]]  # not UTF-8: base64 anyway
    assert canary_lib.output_json("image_bytes", words[:1]) == [  # _bytes: always base64
        [{"b64": "QWRlbGll"}, {"b64": "R2VudG9v"}]]
    assert canary_lib.output_json("scores", np.array([[0.5, 0.25]], np.float32)) == [
        [0.5, 0.25]]
    ids = canary_lib.output_json("ids", np.array([3, 4], np.int64))
    assert ids == [3, 4] and all(type(v) is int for v in ids)
    assert canary_lib.output_json("ok", np.array([True, False])) == [True, False]


def test_not_blessed_is_not_pushed(trained, upstream, tmp_path):
    os.remove(os.path.join(upstream["blessing"], "BLESSED"))
    open(os.path.join(upstream["blessing"], "NOT_BLESSED"), "w").close()
    with open(os.path.join(upstream["blessing"], "blessing.json"), "w") as fh:
        json.dump({"blessed": False, "notes": [], "checks": [
            {"kind": "value", "metric": "accuracy", "verdict": "fail",
             "reason": "accuracy 0.41 is below min 0.9"}]}, fh)
    base = str(tmp_path / "serving")
    result = push(trained, upstream, base, tmp_path / "pushed")
    assert not result.pushed and result.version is None
    assert "NOT_BLESSED" in result.reason and "accuracy 0.41" in result.reason
    record = json.loads((tmp_path / "pushed" / "push.json").read_text())
    assert record["pushed"] is False and record["reason"] == result.reason
    assert (tmp_path / "pushed" / "NOT_PUSHED").exists()
    assert not (tmp_path / "pushed" / "PUSHED").exists()
    assert not os.path.exists(base)


def test_no_blessing_marker_is_treated_as_not_blessed(trained, upstream, tmp_path):
    os.remove(os.path.join(upstream["blessing"], "BLESSED"))
    base = str(tmp_path / "serving")
    result = push(trained, upstream, base, tmp_path / "pushed")
    assert not result.pushed and "no blessing marker" in result.reason
    assert (tmp_path / "pushed" / "NOT_PUSHED").exists()
    assert not os.path.exists(base)


def test_canary_failure_publishes_nothing(trained, upstream, tmp_path):
    model = float_model(tmp_path / "float_model")
    base = str(tmp_path / "serving")
    with pytest.raises(KfpCtError, match="Serving check failed.*serving_default failed"):
        push(trained, upstream, base, tmp_path / "pushed", model_dir=model)
    assert registry.list_versions(base) == []
    assert os.listdir(base) == []
    assert not (tmp_path / "pushed" / "PUSHED").exists()


def test_unwritable_destination_is_a_clear_error(trained, upstream, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    base = str(blocker / "serving")
    with pytest.raises(StorageError, match=str(base)):
        push(trained, upstream, base, tmp_path / "pushed")
    assert blocker.read_text() == "not a directory"
    assert not (tmp_path / "pushed" / "PUSHED").exists()


_KILLED_PUSH = textwrap.dedent("""
    import json, sys
    from kfp_ct.components.push.logic import run_push
    args = json.loads(sys.argv[1])
    run_push(**args)
    print("FINISHED", flush=True)
""")


def test_push_killed_midway_leaves_production_alone(trained, upstream, tmp_path):
    base = str(tmp_path / "serving")
    assert push(trained, upstream, base, tmp_path / "pushed1").version == 1

    big = tmp_path / "big_model"
    shutil.copytree(trained["model"], big)
    chunk = b"\x01" * (8 << 20)
    with open(big / "variables" / "padding.bin", "wb") as fh:
        for _ in range(PADDING_BYTES // len(chunk)):
            fh.write(chunk)
    child_tmp = tmp_path / "child_tmp"
    child_tmp.mkdir()
    args = dict(model_dir=str(big), blessing_dir=upstream["blessing"], push_destination=base,
                raw_eval_dir=trained["raw"], pushed_dir=str(tmp_path / "pushed2"),
                canary_rows=4)
    env = dict(os.environ, TMPDIR=str(child_tmp))
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_PUSH, json.dumps(args)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        # Kill once the publish has started writing inside the base.
        while not any(n.startswith(".tmp-") for n in os.listdir(base)):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "publish never started"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert b"FINISHED" not in proc.stdout.read()

    # Nothing half-written is visible as a version; production is still version 1.
    assert numeric_dirs(base) == ["1"]
    for name in numeric_dirs(base):
        assert os.path.exists(os.path.join(base, name, "saved_model.pb"))
    prod = registry.production(base)
    assert prod.version == 1 and prod.state == registry.COMPLETE
    assert not (tmp_path / "pushed2" / "PUSHED").exists()

    # The next push works and takes the next number.
    write_evaluation(upstream["evaluation"], 1)
    again = push(trained, upstream, base, tmp_path / "pushed3")
    assert again.version == 2
    assert registry.production(base).version == 2


def test_push_to_gcs_through_the_emulator(trained, upstream, tmp_path, gcs_emulator):
    base = storage.join(gcs_emulator.new_bucket(), "serving/penguins")
    pushed = storage.join(gcs_emulator.new_bucket(), "artifacts/pushed")
    result = push(trained, upstream, base, pushed)
    assert result.pushed and result.version == 1
    assert result.path == storage.join(base, "1")
    assert storage.exists(storage.join(base, "1", "saved_model.pb"))
    assert storage.exists(storage.join(base, "1", "assets.extra", "tf_serving_warmup_requests"))
    assert storage.exists(storage.join(base, "1", "kfp_ct", "statistics.pb"))
    versions = registry.list_versions(base)
    assert [(v.version, v.state) for v in versions] == [(1, registry.COMPLETE)]
    assert versions[0].metadata["parent_run"]["run_id"] == "run-123"
    assert json.loads(storage.read_text(storage.join(pushed, "push.json")))["version"] == 1
    assert storage.exists(storage.join(pushed, "PUSHED"))


# ------------------------------------------------- production moved since evaluation


def test_push_refuses_when_production_moved_since_evaluation(trained, upstream, tmp_path,
                                                             monkeypatch):
    def no_canary(*args, **kwargs):
        raise AssertionError("the serving check must not run for a stale comparison")

    base = str(tmp_path / "serving")
    registry.publish(base, trained["model"], {"metrics": {}})  # appeared after evaluate
    monkeypatch.setattr(logic, "run_canary_subprocess", no_canary)
    result = push(trained, upstream, base, tmp_path / "pushed")  # evaluated as a first push
    assert not result.pushed
    assert "compared with no production model (first push)" in result.reason
    assert "production is version 1 now" in result.reason
    assert "must be evaluated again, against version 1" in result.reason
    record = json.loads((tmp_path / "pushed" / "push.json").read_text())
    assert record["pushed"] is False and record["reason"] == result.reason
    assert (record["compared_with"], record["production"]) == (None, 1)
    assert (tmp_path / "pushed" / "NOT_PUSHED").exists()

    registry.publish(base, trained["model"], {"metrics": {}})  # another push landed: 2
    write_evaluation(upstream["evaluation"], 1)
    result = push(trained, upstream, base, tmp_path / "pushed2")
    assert not result.pushed and "compared with production version 1" in result.reason
    assert "production is version 2 now" in result.reason
    assert [v.version for v in registry.list_versions(base)] == [1, 2]


def test_push_refuses_when_another_push_lands_during_its_serving_check(trained, upstream,
                                                                       tmp_path, monkeypatch):
    base = str(tmp_path / "serving")
    real = logic.run_canary_subprocess

    def canary_while_another_push_lands(*args, **kwargs):
        out = real(*args, **kwargs)
        registry.publish(base, trained["model"], {"metrics": {}, "by": "the other push"})
        return out

    monkeypatch.setattr(logic, "run_canary_subprocess", canary_while_another_push_lands)
    result = push(trained, upstream, base, tmp_path / "pushed")
    assert not result.pushed and "production is version 1 now" in result.reason
    assert (tmp_path / "pushed" / "NOT_PUSHED").exists()
    assert [(v.version, v.metadata["by"]) for v in registry.list_versions(base)] == [
        (1, "the other push")]


# -------------------------------------------------------------- corrupt production


def test_a_real_model_pushed_before_manifests_is_complete(trained, tmp_path):
    base = str(tmp_path / "serving")
    info = registry.publish(base, trained["model"], {})
    os.remove(os.path.join(info.path, "kfp_ct", "manifest.json"))
    assert registry.production(base).state == registry.COMPLETE


def test_corrupt_production_blocks_the_push_and_names_the_rollback_that_recovers(
        trained, upstream, tmp_path, run_cli):
    import shlex

    import tensorflow as tf

    from kfp_ct.components.evaluate.logic import run_evaluate
    from kfp_ct.components.gate.logic import run_gate

    base = str(tmp_path / "serving" / "penguins")
    assert push(trained, upstream, base, tmp_path / "p1").version == 1
    write_evaluation(upstream["evaluation"], 1)
    assert push(trained, upstream, base, tmp_path / "p2").version == 2
    shutil.rmtree(os.path.join(base, "2", "variables"))  # what the user did

    code, out, _ = run_cli("versions", base)
    assert code == 0
    row2 = [line for line in out.splitlines() if line.lstrip("* ").startswith("2 ")][0]
    assert row2.startswith("*") and "corrupt" in row2 and "variables/ is missing" in row2

    evaluation = tmp_path / "evaluation"
    run_evaluate(model_dir=trained["model"], raw_eval_dir=trained["raw"], problem=PROBLEM,
                 push_destination=base, output_dir=str(evaluation),
                 report_path=str(tmp_path / "report.html"))
    baseline = json.loads((evaluation / "evaluation.json").read_text())["baseline"]
    assert baseline["state"] == "corrupt" and baseline["version"] == 2
    assert "variables/ is missing" in baseline["detail"]
    command = baseline["recovery"].split("recover with: ", 1)[1]
    assert command.startswith(f"kfp-ct rollback {base} 1 --reason ")

    blessing = tmp_path / "blessing"
    decision = run_gate(str(evaluation), '{"value": {"accuracy": {"min": 0.1}}}',
                        str(blessing), str(tmp_path / "gate.md"))
    assert not decision.blessed
    (failed,) = [c for c in decision.checks if c["verdict"] == "fail"]
    assert failed["kind"] == "baseline" and command in failed["reason"]
    result = push(trained, {**upstream, "blessing": str(blessing)}, base, tmp_path / "p3")
    assert not result.pushed and command in result.reason
    assert [v.version for v in registry.list_versions(base)] == [1, 2]

    code, out, err = run_cli("rollback", base, 2)  # the broken one: refused
    assert code == 2 and "the newest loadable version is 1" in err
    code, out, err = run_cli(*shlex.split(command)[1:])  # the one that recovers
    assert code == 0, err
    prod = registry.production(base)
    assert (prod.version, prod.state, prod.metadata["rollback_of"]) == (3, "complete", 1)
    tf.saved_model.load(prod.path)


def test_warmup_requests_carry_no_label_nor_sensitive_column_and_the_module_is_kept(
        trained, upstream, tmp_path):
    """Privacy and audit: the eval rows kept beside a version lose the label and what the
    spec marks sensitive (the serving check sends them so, too: serving never gets a
    label); the user module is archived with its SHA-256."""
    import hashlib

    import tensorflow as tf

    module = tmp_path / "my_module.py"
    module.write_text("# the user's module: preprocessing_fn and build_model live here\n")
    problem = json.load(open(PROBLEM))
    problem.update(sensitive=["sex"], module_file=str(module))
    base = str(tmp_path / "serving")
    result = push(trained, upstream, base, tmp_path / "pushed", problem=json.dumps(problem))
    assert result.pushed and result.canary["ok"] is True
    warmup = os.path.join(result.path, "assets.extra", "tf_serving_warmup_requests")
    for log in tf.data.TFRecordDataset(warmup):
        tensor = canary_lib.parse_prediction_log(log.numpy()).predict_log.request.inputs[
            "examples"]
        for row in tf.make_ndarray(tensor).tolist():
            features = set(tf.train.Example.FromString(row).features.feature)
            assert "species" not in features and "sex" not in features
            assert {"island", "body_mass_g"} <= features
    audit = os.path.join(result.path, registry.AUDIT_DIR)
    meta = json.load(open(os.path.join(audit, "metadata.json")))
    kept = open(os.path.join(audit, registry.USER_MODULE), "rb").read()
    assert kept == module.read_bytes()
    assert meta["user_module"] == {"path": str(module),
                                   "sha256": hashlib.sha256(kept).hexdigest(),
                                   "kept_as": "kfp_ct/user_module.py"}
    assert sorted(meta["warmup_requests"]["columns_left_out"]) == ["sex", "species"]


def test_a_sensitive_column_must_be_a_column_of_the_spec():
    from kfp_ct.components.common.errors import ProblemSpecError
    from kfp_ct.components.common.problem import load_problem

    problem = json.load(open(PROBLEM))
    problem["sensitive"] = ["ssn"]
    with pytest.raises(ProblemSpecError, match=r"'sensitive' names \['ssn'\], not column"):
        load_problem(json.dumps(problem))
