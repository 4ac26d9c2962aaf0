"""The in-process evaluation path gives what the TFMA path gives, on the same models and rows.

Each scenario runs ``run_evaluate`` twice on the same inputs: once without beam_args
(in process: no Beam, no TFMA) and once with the in-memory DirectRunner (real TFMA), and
compares evaluation.json and the HTML report. Counts, texts, key order and confusion
matrices must be equal, floats within 1e-6. Accuracy is equal bit for bit (both divide
two whole numbers in float32, as Keras does). Regression's mse/mae are TFMA's own float64
sums of per-row float32 errors; the in-process path adds the same values in the same row
order, so only float64 rounding could tell them apart (TFMA may merge Beam bundles in
another order): checked to a relative 1e-12.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import json  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

from kfp_ct.components.common import registry  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROBLEM = str(ROOT / "pipelines" / "penguins" / "problem.json")
REGRESSION = json.dumps({
    "label": "body_mass_g", "task": "regression",
    "numeric": ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "year"],
    "categorical": ["island", "sex"], "slices": ["island"]})
TFMA_ARGS = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]


# ------------------------------------------------------------------------ models


def _rule_classifier(path, classes, cut):
    """A real SavedModel: softmax over two classes by flipper length (missing: 0)."""
    import tensorflow as tf

    class Rule(tf.Module):
        def __init__(self):
            super().__init__()
            self.classes = tf.constant(classes)
            self.cut = tf.Variable(cut)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, examples):
            parsed = tf.io.parse_example(
                examples, {"flipper_length_mm": tf.io.VarLenFeature(tf.float32)})
            x = tf.sparse.reduce_sum(parsed["flipper_length_mm"], axis=1)
            logit = (x - self.cut) / 5.0
            scores = tf.nn.softmax(tf.stack([logit, -logit], axis=1))
            tiled = tf.tile(self.classes[None, :], [tf.shape(examples)[0], 1])
            return {"scores": scores, "classes": tiled}

    module = Rule()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return str(path)


def _linear_regressor(path, weights, bias):
    """A real SavedModel: body mass as a linear function of raw numeric features."""
    import tensorflow as tf

    class Linear(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = {k: tf.Variable(v) for k, v in weights.items()}
            self.b = tf.Variable(bias)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, examples):
            parsed = tf.io.parse_example(
                examples, {k: tf.io.VarLenFeature(tf.float32) for k in weights})
            y = self.b + tf.add_n([w * tf.sparse.reduce_sum(parsed[k], axis=1)
                                   for k, w in self.w.items()])
            return {"outputs": y[:, None]}

    module = Linear()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return str(path)


# -------------------------------------------------------------------------- data


def _examples(path):
    import tensorflow as tf

    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]


def _write(folder, examples):
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(folder / "eval_raw.tfrecord")) as writer:
        for example in examples:
            writer.write(example.SerializeToString())
    return str(folder)


def _set(example, name, value):
    feature = example.features.feature[name]
    feature.Clear()
    if isinstance(value, str):
        feature.bytes_list.value.append(value.encode())
    elif isinstance(value, int):
        feature.int64_list.value.append(value)
    else:
        feature.float_list.value.append(value)


@pytest.fixture(scope="module")
def penguins(penguins_model, tmp_path_factory):
    """The pipeline's own transform and a 100-step model (the candidate; conftest.py),
    and a folder of this module's own ("root") for the rows it writes."""
    return {**penguins_model, "root": tmp_path_factory.mktemp("penguins")}


@pytest.fixture(scope="module")
def classification_rows(penguins):
    """The penguins eval rows with an eval-only class ('Emperor', every 7th row) and the
    sex column missing in two ways: absent from the row (every 5th row) and present with
    no value (as the transform writes a missing value)."""
    examples = _examples(pathlib.Path(penguins["raw"]) / "eval_raw.tfrecord")
    for i, example in enumerate(examples):
        if i % 7 == 3:
            _set(example, "species", "Emperor")
        if i % 5 == 1:
            del example.features.feature["sex"]
    empty = sum(1 for e in examples if "sex" in e.features.feature
                and not e.features.feature["sex"].bytes_list.value)
    absent = sum(1 for e in examples if "sex" not in e.features.feature)
    assert empty and absent, (empty, absent)  # both kinds of missing are exercised
    return _write(penguins["root"] / "rows_cls", examples), len(examples), empty + absent


@pytest.fixture(scope="module")
def regression_rows(penguins):
    """Penguins eval rows with their body mass, an int64 ``year`` column and the
    float ``bill_depth_mm`` (missing in some rows): three kinds of slice values."""
    examples = [e for e in _examples(pathlib.Path(penguins["raw"]) / "eval_raw.tfrecord")
                if e.features.feature["body_mass_g"].float_list.value]
    for i, example in enumerate(examples):
        _set(example, "year", 2007 + i % 3)
        if i % 6 == 2:
            example.features.feature["bill_depth_mm"].float_list.Clear()
    return _write(penguins["root"] / "rows_reg", examples), len(examples)


# --------------------------------------------------------------------- comparing


def _run(model, rows, problem, dest, out, slices, beam_args):
    from kfp_ct.components.evaluate.logic import run_evaluate

    run_evaluate(model_dir=model, raw_eval_dir=rows, problem=problem, push_destination=dest,
                 output_dir=str(out / "evaluation"), report_path=str(out / "report.html"),
                 slices=slices, beam_args=beam_args)
    return (json.loads((out / "evaluation" / "evaluation.json").read_text()),
            (out / "report.html").read_text())


def _both(tmp_path, *args):
    inproc = _run(*args[:4], tmp_path / "inprocess", *args[4:], None)
    tfma = _run(*args[:4], tmp_path / "tfma", *args[4:], TFMA_ARGS)
    assert not (tmp_path / "inprocess" / "evaluation" / "tfma").exists()
    assert any((tmp_path / "tfma" / "evaluation" / "tfma").iterdir())
    return inproc, tfma


def assert_same(a, b, rel=0.0, where="evaluation"):
    """Equal structure, equal ints and texts; floats within 1e-6 (and ``rel``, if any)."""
    assert type(a) is type(b) or {type(a), type(b)} <= {int, float}, (where, a, b)
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), (where, sorted(a), sorted(b))
        assert list(a) == list(b), (where, "key order", list(a), list(b))
        for k in a:
            assert_same(a[k], b[k], rel, f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), (where, a, b)
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, rel, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, abs_tol=1e-6), (where, a, b)
        if rel:
            assert math.isclose(a, b, rel_tol=rel), (where, a, b)
    else:
        assert a == b, (where, a, b)


# ------------------------------------------------------------------------- tests


@pytest.mark.long
def test_classification_with_baseline_slices_and_an_eval_only_class_match_tfma(
        penguins, classification_rows, tmp_path):
    rows, n, sex_missing = classification_rows
    dest = str(tmp_path / "models")  # production lacks Chinstrap, in another class order
    registry.publish(dest, _rule_classifier(tmp_path / "rule", ["Gentoo", "Adelie"], 205.5),
                     {"metrics": {}})
    (doc, html), (tfma_doc, tfma_html) = _both(
        tmp_path, penguins["model"], rows, PROBLEM, dest, ["island", "sex"])

    assert_same(doc, tfma_doc)
    assert doc["candidate"]["overall"] == tfma_doc["candidate"]["overall"]  # bit for bit
    assert html == tfma_html
    # What was compared is the scenario asked for, not an empty one.
    overall = doc["candidate"]["overall"]
    assert overall["example_count"] == n
    slices = doc["candidate"]["slices"]
    assert sum(v["example_count"] for k, v in slices.items() if k.startswith("sex=")) \
        == n - sex_missing  # a row without sex is in no sex slice
    assert {"island=Biscoe", "sex=male", "sex=female"} <= set(slices), sorted(slices)
    assert list(doc["confusion_matrix"]["unseen_classes"]) == ["Emperor"]
    assert doc["baseline"]["state"] == "ok"
    assert doc["baseline"]["confusion_matrix"]["labels"] == ["Gentoo", "Adelie"]
    assert doc["baseline"]["overall"]["accuracy"] != overall["accuracy"]
    assert any("production model's classes" in note and "Chinstrap" in note
               for note in doc["notes"]), doc["notes"]


@pytest.mark.long
def test_regression_with_baseline_and_number_slices_matches_tfma(regression_rows, tmp_path):
    rows, n = regression_rows
    candidate = _linear_regressor(tmp_path / "candidate", {"flipper_length_mm": 50.0}, -5800.0)
    dest = str(tmp_path / "models")
    registry.publish(dest, _linear_regressor(
        tmp_path / "production", {"flipper_length_mm": 40.0, "bill_length_mm": 20.0}, -4900.0),
        {"metrics": {}})
    (doc, html), (tfma_doc, tfma_html) = _both(
        tmp_path, candidate, rows, REGRESSION, dest, ["island", "year", "bill_depth_mm"])

    assert_same(doc, tfma_doc, rel=1e-12)
    assert html == tfma_html
    overall = doc["candidate"]["overall"]
    assert overall["example_count"] == n and overall["rmse"] > 0
    slices = doc["candidate"]["slices"]
    assert {"year=2007", "year=2008", "year=2009"} <= set(slices)  # int64 values
    floats = [k for k in slices if k.startswith("bill_depth_mm=")]
    assert any("." in k for k in floats), floats  # float32 values, named as TFMA does
    assert sum(slices[k]["example_count"] for k in floats) < n  # the cleared rows
    assert doc["baseline"]["state"] == "ok" and doc["baseline"]["overall"]["mse"] != overall["mse"]


_NO_BEAM = """
import json, sys
from kfp_ct.components.evaluate.logic import run_evaluate
run_evaluate(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6])
print(json.dumps({m: m in sys.modules for m in
                  ("tensorflow", "tensorflow_model_analysis", "apache_beam")}))
"""


@pytest.mark.long
def test_the_in_process_path_imports_neither_tfma_nor_beam(regression_rows, tmp_path):
    rows, _ = regression_rows
    model = _linear_regressor(tmp_path / "candidate", {"flipper_length_mm": 50.0}, -5800.0)
    dest = str(tmp_path / "models")
    registry.publish(dest, model, {"metrics": {}})  # the baseline path is taken too
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", _NO_BEAM, model, rows, REGRESSION, dest,
         str(tmp_path / "out"), str(tmp_path / "report.html")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert imported == {"tensorflow": True, "tensorflow_model_analysis": False,
                        "apache_beam": False}
    doc = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert doc["baseline"]["state"] == "ok" and doc["candidate"]["overall"]["example_count"]
