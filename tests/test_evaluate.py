"""Evaluate on a real (small) penguins model: metrics, slices, baseline states.

These run the default path (no beam_args: in process); test_evaluate_inprocess.py
checks it against TFMA, test_evaluate_beam.py runs TFMA on Beam runners.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import json  # noqa: E402
import pathlib  # noqa: E402

import pytest  # noqa: E402

from kfp_ct.components.common import registry  # noqa: E402
from kfp_ct.components.common.errors import InputDataError, KfpCtError  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROBLEM = str(ROOT / "pipelines" / "penguins" / "problem.json")


@pytest.fixture(scope="module")
def penguins(penguins_model):
    """A transform run and a 100-step model (conftest.py, built once a session)."""
    return dict(penguins_model)


@pytest.fixture(scope="module")
def expected(penguins):
    """Accuracy and row count computed directly through the serving signature."""
    import numpy as np
    import tensorflow as tf

    rows = [r.numpy() for r in tf.data.TFRecordDataset(
        os.path.join(penguins["raw"], "eval_raw.tfrecord"))]
    labels = []
    for row in rows:
        example = tf.train.Example.FromString(row)
        labels.append(example.features.feature["species"].bytes_list.value[0].decode())
    serve = tf.saved_model.load(penguins["model"]).signatures["serving_default"]
    out = serve(examples=tf.constant(rows))
    scores, classes = out["scores"].numpy(), out["classes"].numpy()
    predicted = [classes[i][j].decode() for i, j in enumerate(np.argmax(scores, axis=1))]
    correct = sum(p == a for p, a in zip(predicted, labels))
    return {"rows": len(rows), "accuracy": correct / len(rows), "labels": labels}


def _evaluate(penguins, tmp_path, destination, slices=None):
    from kfp_ct.components.evaluate.logic import run_evaluate

    out, report = tmp_path / "evaluation", tmp_path / "report.html"
    result = run_evaluate(model_dir=penguins["model"], raw_eval_dir=penguins["raw"],
                          problem=PROBLEM, push_destination=destination,
                          output_dir=str(out), report_path=str(report), slices=slices)
    doc = json.loads((out / "evaluation.json").read_text())
    return result, doc, out, report


def test_first_run_has_no_baseline_and_true_metrics(penguins, expected, tmp_path):
    dest = str(tmp_path / "models")  # does not exist yet: first push
    result, doc, out, report = _evaluate(penguins, tmp_path, dest, slices=["island"])

    assert doc["task"] == "classification" and doc["label"] == "species"
    assert doc["baseline"] == {
        "state": "none", "version": None, "path": None, "overall": None,
        "detail": f"no production model at {dest}: first push"}
    overall = doc["candidate"]["overall"]
    assert 0.0 <= overall["accuracy"] <= 1.0
    assert overall["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-6)
    assert overall["example_count"] == expected["rows"]
    assert {"macro_precision", "macro_recall"} <= set(overall)
    assert result.summary() == overall

    slices = doc["candidate"]["slices"]
    assert sorted(slices) == ["island=Biscoe", "island=Dream", "island=Torgersen"]
    assert sum(s["example_count"] for s in slices.values()) == expected["rows"]

    cm = doc["confusion_matrix"]
    assert sorted(cm["labels"]) == ["Adelie", "Chinstrap", "Gentoo"]
    assert sum(map(sum, cm["matrix"])) == expected["rows"]
    for i, label in enumerate(cm["labels"]):  # rows are the actual class
        assert sum(cm["matrix"][i]) == expected["labels"].count(label)
    diagonal = sum(cm["matrix"][i][i] for i in range(len(cm["labels"])))
    assert diagonal / expected["rows"] == pytest.approx(expected["accuracy"], abs=1e-9)

    assert not (out / "tfma").exists()  # TFMA's folder: only on the Beam path
    html = report.read_text()
    assert "island=Dream" in html and "Confusion matrix" in html and "none" in html


def test_published_production_is_the_baseline(penguins, tmp_path):
    dest = str(tmp_path / "models")
    registry.publish(dest, penguins["model"], {"metrics": {}})
    _, doc, _, report = _evaluate(penguins, tmp_path, dest)

    baseline = doc["baseline"]
    assert baseline["state"] == "ok"
    assert baseline["version"] == 1 and baseline["path"] == os.path.join(dest, "1")
    assert baseline["overall"]["accuracy"] == doc["candidate"]["overall"]["accuracy"]
    assert baseline["overall"]["example_count"] == doc["candidate"]["overall"]["example_count"]
    # No slices asked: the spec's own (penguins: island); production is measured on
    # each too, so the report can draw them side by side.
    assert set(doc["candidate"]["slices"]) == {"island=Biscoe", "island=Dream",
                                               "island=Torgersen"}
    assert doc["baseline"]["slices"] == doc["candidate"]["slices"]
    labels = doc["baseline"]["confusion_matrix"]["labels"]
    assert labels == doc["confusion_matrix"]["labels"]
    assert doc["baseline"]["confusion_matrix"]["matrix"] == doc["confusion_matrix"]["matrix"]
    assert "+0.0000" in report.read_text()


def _garbage_pb_with_metadata(version_dir):
    (version_dir / "kfp_ct").mkdir(parents=True)
    (version_dir / "kfp_ct" / "metadata.json").write_text('{"metrics": {}, "version": 1}')
    (version_dir / "saved_model.pb").write_bytes(b"this is not a protobuf \x00\xff" * 8)


def _pb_without_metadata(version_dir):
    version_dir.mkdir(parents=True)
    (version_dir / "saved_model.pb").write_bytes(b"garbage")


@pytest.mark.parametrize("make,words", [
    (_garbage_pb_with_metadata, "does not parse as a SavedModel"),
    (_pb_without_metadata, "metadata.json is missing"),
], ids=["saved_model_does_not_parse", "audit_record_missing"])
def test_corrupt_production_is_its_own_state_with_the_recovery(penguins, tmp_path, make,
                                                               words):
    dest = tmp_path / "models"
    make(dest / "1")
    _, doc, _, _ = _evaluate(penguins, tmp_path, str(dest))

    baseline = doc["baseline"]
    assert baseline["state"] == "corrupt"
    assert baseline["version"] == 1 and baseline["overall"] is None
    assert "production version 1" in baseline["detail"]
    assert str(dest / "1") in baseline["detail"] and words in baseline["detail"], baseline
    assert "no loadable version" in baseline["recovery"]
    assert doc["candidate"]["overall"]["example_count"] > 0


def test_a_corrupt_production_is_said_before_the_candidate_is_touched(tmp_path, capsys):
    """Before: evaluate copied and loaded the candidate, and only then looked at
    production; nothing reached the console. Here the rows are empty, so evaluate stops
    at its first look at them: the warning must already be out."""
    from kfp_ct.components.evaluate.logic import run_evaluate

    dest = tmp_path / "models"
    _garbage_pb_with_metadata(dest / "1")
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "eval_raw.tfrecord").write_bytes(b"")
    with pytest.raises(InputDataError, match="holds no rows"):
        run_evaluate(model_dir=str(tmp_path / "no-model-here"), raw_eval_dir=str(raw),
                     problem=PROBLEM, push_destination=str(dest),
                     output_dir=str(tmp_path / "out"), report_path=str(tmp_path / "r.html"))
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"[kfp-ct] warning: production version 1 at {dest / '1'} is "
                           "corrupt: saved_model.pb does not parse as a SavedModel")
    assert "the gate will not bless a candidate" in line and "no loadable version" in line


def test_a_loadable_production_that_cannot_answer_is_unusable_not_absent(penguins, tmp_path):
    """The registry can load it (a real SavedModel, pushed with its manifest), but its
    signature takes no serialized tf.Examples: evaluate cannot measure it."""
    import tensorflow as tf

    from kfp_ct.components.common import registry

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def serve(self, x):
            return {"y": 2 * x}

    module = Doubler()
    model = str(tmp_path / "doubler")
    tf.saved_model.save(module, model, signatures={"serving_default": module.serve})
    dest = tmp_path / "models"
    registry.publish(str(dest), model, {"metrics": {}})
    _, doc, _, _ = _evaluate(penguins, tmp_path, str(dest))
    baseline = doc["baseline"]
    assert baseline["state"] == "unusable", baseline
    assert "production version 1" in baseline["detail"]
    assert doc["candidate"]["overall"]["example_count"] > 0


def test_unknown_slice_column_names_it(penguins, tmp_path):
    with pytest.raises(KfpCtError, match="'beak_colour'.*raw columns"):
        _evaluate(penguins, tmp_path, "", slices=["island", "beak_colour"])


def test_missing_eval_rows_name_the_file(penguins, tmp_path):
    from kfp_ct.components.evaluate.logic import run_evaluate

    with pytest.raises(InputDataError, match="eval_raw.tfrecord"):
        run_evaluate(penguins["model"], str(tmp_path / "nothing"), PROBLEM, "",
                     str(tmp_path / "out"), str(tmp_path / "r.html"))


def test_model_without_serving_signature_names_the_path(penguins, tmp_path):
    import tensorflow as tf

    from kfp_ct.components.evaluate.logic import run_evaluate

    module = tf.Module()
    module.v = tf.Variable(1.0)
    bare = str(tmp_path / "bare_model")
    tf.saved_model.save(module, bare)
    with pytest.raises(KfpCtError, match=f"{bare}.*serving_default"):
        run_evaluate(bare, penguins["raw"], PROBLEM, "", str(tmp_path / "out"),
                     str(tmp_path / "r.html"))
