"""Model-performance monitoring: realized accuracy on labelled generator windows, the
accuracy estimated before labels (CBPE), the join of served rows and a labels file, and
what each finding launches. A real penguins SavedModel scores every window."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from kfp_ct.components.common import performance
from kfp_ct.components.common.errors import InputDataError, KfpCtError
from kfp_ct.components.drift import logic
from kfp_ct.components.retrain import logic as retrain
from kfp_ct.pipelines.entrypoints import synth

from perf_base import make_model_base  # tests/ is on sys.path


@pytest.fixture(scope="module")
def perf(penguins_model, tmp_path_factory):
    return make_model_base(tmp_path_factory.mktemp("perf"), penguins_model["model"])


def gen(tmp_path, rows, shift="none", strength=None, seed=50, name=None, **kw):
    path = tmp_path / (name or f"{shift}_{strength}_{rows}_{seed}.csv")
    synth.write_penguins_like(path, rows, seed=seed, shift=shift, strength=strength, **kw)
    return str(path)


def check(perf, tmp_path, **kw):
    return logic.run_drift_check(perf.base, decision_dir=str(tmp_path / "decision"),
                                 report_html=str(tmp_path / "r.html"),
                                 report_md=str(tmp_path / "r.md"), **kw)


# --------------------------------------------------------------------- statistics


def test_wilson_interval_covers_the_proportion_and_narrows_with_rows():
    low, high = performance.wilson(90, 100)
    assert low < 0.9 < high
    assert performance.wilson(900, 1000)[1] - performance.wilson(900, 1000)[0] < high - low
    assert performance.wilson(100, 100)[1] == 1.0 and performance.wilson(100, 100)[0] < 1.0


def test_isotonic_fit_is_monotone_and_keeps_the_mean():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.3, 1.0, 5000)
    right = rng.random(5000) < scores  # calibrated by construction
    doc = performance.fit_calibration(scores, right, ["a", "b"])
    y, n = np.array(doc["y"]), np.array(doc["n"])
    assert np.all(np.diff(y) > 0) and np.all(np.diff(doc["x"]) > 0)
    assert (y * n).sum() / n.sum() == pytest.approx(right.mean(), abs=1e-6)
    # On the rows it was fitted on, the fit's mean is their accuracy exactly, overall and
    # per class (interpolating between steps was 2 points low on a real model).
    assert performance.calibrated(doc, scores).mean() == pytest.approx(right.mean(), abs=1e-9)
    predicted = np.where(scores > 0.6, "a", "b")
    per_class = performance.fit_calibration(scores, right, ["a", "b"], predicted=predicted)
    assert performance.calibrated(per_class, scores, predicted).mean() == pytest.approx(
        right.mean(), abs=1e-9)
    # A calibrated model's estimate on fresh rows is its accuracy there.
    fresh = rng.uniform(0.3, 1.0, 20000)
    est = performance.calibrated(doc, fresh).mean()
    assert est == pytest.approx(fresh.mean(), abs=0.015)
    performance.check_calibration(doc)
    with pytest.raises(ValueError, match="non-decreasing"):
        performance.check_calibration({**doc, "y": doc["y"][::-1]})


def test_a_calibration_per_predicted_class_follows_each_class():
    # Class "a" is right 95% of the time at any score, class "b" 60%: one overall fit
    # misjudges a window that names "b" more often; the per-class fit does not.
    rng = np.random.default_rng(1)
    scores = rng.uniform(0.5, 1.0, 4000)
    predicted = np.where(np.arange(4000) % 2 == 0, "a", "b")
    right = rng.random(4000) < np.where(predicted == "a", 0.95, 0.6)
    doc = performance.fit_calibration(scores, right, ["a", "b"], predicted=predicted)
    assert set(doc["per_class"]) == {"a", "b"}
    window = rng.uniform(0.5, 1.0, 3000)
    mostly_b = np.where(np.arange(3000) % 10 == 0, "a", "b")
    expected = 0.1 * 0.95 + 0.9 * 0.6
    assert performance.calibrated(doc, window, mostly_b).mean() == pytest.approx(expected,
                                                                                abs=0.02)
    assert abs(performance.calibrated(doc, window).mean() - expected) > 0.1
    with pytest.raises(ValueError, match="class 'a'"):
        performance.check_calibration({**doc, "per_class": {"a": {"x": [0.5], "y": [1.5]}}})


def _tally(correct: int, rows: int) -> performance.Tally:
    t = performance.Tally("classification")
    labels = ["a"] * rows
    scores = np.zeros((rows, 2), dtype=np.float32)
    scores[:correct, 0] = 0.9
    scores[correct:, 1] = 0.9
    t.add({"scores": scores, "classes": np.array([[b"a", b"b"]] * rows)}, labels)
    return t


def test_a_drop_must_pass_both_the_tolerance_and_sampling_noise():
    base = performance.Baseline("accuracy", 0.95, 1000, 1)
    drop = performance.realized_check(_tally(4500, 5000), base, 0.01, 200, None)
    assert drop["decision"] == performance.PERFORMANCE_DROP and drop["drop"] == pytest.approx(0.05)
    assert drop["low"] < 0.9 < drop["high"]
    small = performance.realized_check(_tally(930, 1000), base, 0.01, 200, None)
    assert small["decision"] == performance.NO_DROP and "within the tolerance" in small["reason"]
    # 20 rows at 85%: beyond the tolerance, within what 20 rows can show by chance.
    noisy = performance.realized_check(_tally(17, 20), base, 0.01, 10, None)
    assert noisy["decision"] == performance.NO_DROP and "sampling noise" in noisy["reason"]
    few = performance.realized_check(_tally(10, 100), base, 0.01, 200, None)
    assert few["decision"] == performance.INSUFFICIENT_LABELS and "never a drop" in few["reason"]
    # Companions come from evaluate's code under evaluate's names.
    assert set(drop["companions"]) == {"example_count", "macro_precision", "macro_recall"}


# ------------------------------------------------------------------- decisions


def test_an_unshifted_labelled_window_shows_no_drop_realized_or_estimated(perf, tmp_path):
    record = check(perf, tmp_path, labels_path=gen(tmp_path, 3000))
    realized, estimated = record["performance"]["realized"], record["performance"]["estimated"]
    assert realized["decision"] == estimated["decision"] == performance.NO_DROP
    assert record["findings"] == [] and record["launch_reasons"] == []
    assert realized["baseline"] == pytest.approx(perf.accuracy)
    assert realized["low"] <= realized["value"] <= realized["high"]
    assert abs(estimated["value"] - realized["value"]) < 0.02
    # Both side by side for the labelled rows, and the assumption said.
    assert realized["estimated"]["value"] == pytest.approx(estimated["value"], abs=1e-9)
    html = open(tmp_path / "r.html").read()
    assert "Model performance" in html and "estimated on the labelled rows" in html
    assert "only the inputs moved" in html
    assert "| realized (labels) | NO_DROP | accuracy |" in open(tmp_path / "r.md").read()


def test_a_concept_shift_is_a_realized_drop_the_estimate_cannot_see(perf, tmp_path):
    record = check(perf, tmp_path, labels_path=gen(tmp_path, 3000, "concept", 0.1))
    realized, estimated = record["performance"]["realized"], record["performance"]["estimated"]
    assert realized["decision"] == performance.PERFORMANCE_DROP
    assert 0.07 < realized["drop"] < 0.13
    assert estimated["decision"] == performance.NO_DROP  # features did not move
    assert record["decision"] == "NO_DRIFT"  # nor did the data, by the drift measures
    assert record["findings"] == record["launch_reasons"] == [performance.PERFORMANCE_DROP]
    assert any("a drop beyond the tolerance" in r for r in record["reasons"])


def test_too_few_labels_is_never_a_drop(perf, tmp_path):
    record = check(perf, tmp_path, labels_path=gen(tmp_path, 150, "concept", 0.5))
    realized = record["performance"]["realized"]
    assert realized["decision"] == performance.INSUFFICIENT_LABELS
    assert realized["value"] < 0.7  # measured, and shown, but not decided on
    assert performance.PERFORMANCE_DROP not in record["findings"]


def test_an_estimated_drop_retrains_only_when_the_settings_say_so(perf, tmp_path):
    window = gen(tmp_path, 3000, "covariate", -3.0, feature="body_mass_g")
    settings = {"estimated_tolerance": 0.005}
    record = check(perf, tmp_path, window_path=window, settings=settings)
    estimated = record["performance"]["estimated"]
    assert estimated["decision"] == performance.ESTIMATED_DROP, estimated["reason"]
    assert record["performance"]["realized"] is None  # no labels given
    assert performance.ESTIMATED_DROP in record["findings"]
    assert performance.ESTIMATED_DROP not in record["launch_reasons"]
    record = check(perf, tmp_path, window_path=window,
                   settings={**settings, "retrain_on": ["estimated"]})
    assert record["launch_reasons"] == [performance.ESTIMATED_DROP]  # drift is not retrained on
    assert retrain.trigger_kind(record["launch_reasons"]) == "estimated_performance"


def test_a_version_without_a_calibration_says_why_nothing_is_estimated(drift_base, tmp_path):
    record = logic.run_drift_check(drift_base.base, window_path=gen(tmp_path, 500))
    estimated = record["performance"]["estimated"]
    assert estimated["decision"] == performance.NOT_ESTIMATED
    assert "keeps no calibration" in estimated["reason"]


def test_performance_settings_are_checked():
    with pytest.raises(KfpCtError, match="retrain_on"):
        logic.parse_settings({"retrain_on": ["drift", "vibes"]})
    with pytest.raises(KfpCtError, match="min_labels"):
        logic.parse_settings({"min_labels": 0})
    assert logic.parse_settings({}).retrain_on == ("drift", "performance")


def test_the_lineage_names_the_strongest_reason():
    assert retrain.trigger_kind(["DRIFT", "PERFORMANCE_DROP"]) == "performance"
    assert retrain.trigger_kind(["DRIFT"]) == "drift"


# ------------------------------------------------------------------------ joins


def _split(tmp_path, rows, shift="none", strength=None, seed=70, fmt="csv"):
    features = tmp_path / f"features.{fmt}"
    labels = tmp_path / f"labels.{fmt}"
    synth.write_penguins_like(features, rows, seed=seed, shift=shift, strength=strength,
                              fmt=fmt, key_column="ride_id", labels_path=labels)
    return str(features), str(labels)


def _rewrite_csv(path, edit):
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types={"ride_id": "string"}))
    pacsv.write_csv(edit(table), path)


def test_a_window_joined_to_its_labels_measures_what_inline_labels_measure(perf, tmp_path):
    features, labels = _split(tmp_path, 2000, "concept", 0.1)
    joined = check(perf, tmp_path, window_path=features, labels_path=labels,
                   label_key="ride_id")
    inline = check(perf, tmp_path / "inline",
                   labels_path=gen(tmp_path, 2000, "concept", 0.1, seed=70))
    a, b = joined["performance"]["realized"], inline["performance"]["realized"]
    assert a["value"] == b["value"] and a["rows"] == b["rows"] == 2000
    assert a["decision"] == performance.PERFORMANCE_DROP
    assert a["join"]["matched"] == 2000 and a["kind"] == "window + labels"


def _edit_labels(table):
    import pyarrow as pa

    keys = table.column("ride_id").to_pylist()
    species = table.column("species").to_pylist()
    keys[0] = None                        # a label with no key
    rows = list(zip(keys, species))[:500]  # rows 500.. not labelled yet
    rows.append((keys[1], species[1]))    # labelled twice, the same label
    rows.append(("70-999999", "Adelie"))  # a label for a row never served
    return pa.table({"ride_id": [k for k, _ in rows], "species": [s for _, s in rows]})


def _edit_served(table):
    import pyarrow as pa

    keys = table.column("ride_id").to_pylist()
    keys[2] = keys[3]  # a key served twice
    keys[4] = None     # a served row without a key
    return table.set_column(0, "ride_id", pa.array(keys, pa.string()))


@pytest.mark.parametrize("served", ["window", "request log"])
def test_join_findings_are_each_named(perf, tmp_path, served):
    features, labels = _split(tmp_path, 600)
    _rewrite_csv(labels, _edit_labels)
    _rewrite_csv(features, _edit_served)
    source = ({"window_path": features} if served == "window" else
              {"request_log_path": _request_log(tmp_path, features, "ride_id")})
    record = check(perf, tmp_path, labels_path=labels, label_key="ride_id", **source)
    realized = record["performance"]["realized"]
    assert realized["kind"] == f"{served} + labels"
    join = realized["join"]
    assert join["labels_without_key"]["count"] == 1
    assert join["labels_repeated"] == {"count": 1, "keys": ["70-1"]}
    # 70-2 and 70-4 were overwritten in the served rows: their labels were never served.
    assert join["labels_never_served"] == {"count": 3, "keys": ["70-2", "70-4", "70-999999"]}
    assert join["served_repeated"] == {"count": 1, "keys": ["70-3"]}
    assert join["served_without_key"]["count"] == 1
    assert join["served_without_label"] == 101  # rows 500..599, and 70-0 (its label has no key)
    assert join["matched"] == realized["rows"] == 497
    notes = " ".join(record["notes"])
    for said in ("no 'ride_id'", "more than once with the same label", "never served",
                 "served more than once", "no label yet"):
        assert said in notes, said


def test_a_key_labelled_twice_with_different_labels_is_refused(perf, tmp_path):
    import pyarrow as pa

    features, labels = _split(tmp_path, 300)

    def conflict(table):
        keys = table.column("ride_id").to_pylist() + ["70-5"]
        species = table.column("species").to_pylist()
        other = next(s for s in ("Adelie", "Gentoo") if s != species[5])
        return pa.table({"ride_id": keys, "species": species + [other]})

    _rewrite_csv(labels, conflict)
    with pytest.raises(InputDataError, match=r"key '70-5' is labelled twice with different"):
        check(perf, tmp_path, window_path=features, labels_path=labels, label_key="ride_id")
    assert not os.path.exists(tmp_path / "decision" / "drift.json")  # nothing half-written


def test_a_missing_key_column_is_named_with_its_file(perf, tmp_path):
    features, labels = _split(tmp_path, 300)
    with pytest.raises(InputDataError, match=r"labels.csv: the labels file has no column\(s\) "
                                             r"\['trip'\]"):
        check(perf, tmp_path, window_path=features, labels_path=labels, label_key="trip")
    with pytest.raises(InputDataError, match="is a column the model uses"):
        check(perf, tmp_path, window_path=features, labels_path=labels, label_key="island")
    with pytest.raises(InputDataError, match="without a labels file"):
        check(perf, tmp_path, window_path=features, label_key="ride_id")


def _request_log(tmp_path, features_csv, key) -> str:
    import pyarrow.csv as pacsv
    import tensorflow as tf
    from tfx_bsl.coders import example_coder

    from kfp_ct.components.common import data as data_lib
    from kfp_ct.components.common.prediction_log import prediction_log_bytes
    from drift_base import PENGUINS_PROBLEM_PATH
    from kfp_ct.components.common.problem import load_problem

    spec = load_problem(PENGUINS_PROBLEM_PATH)
    table = pacsv.read_csv(features_csv, convert_options=pacsv.ConvertOptions(
        column_types={key: "string", **{c: "string" for c in spec.categorical}}))
    columns = [key, *spec.features]  # the key travels with each request as a feature
    batch = table.select(columns).combine_chunks().to_batches()[0]
    examples = example_coder.RecordBatchToExamples(data_lib.as_list_batch(batch, spec, columns))
    path = str(tmp_path / "requests" / "log-00000.tfrecord")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for start in range(0, len(examples), 50):
            writer.write(prediction_log_bytes(examples[start:start + 50], "penguins"))
    return path


def test_the_request_log_joined_to_labels_measures_the_served_rows(perf, tmp_path):
    features, labels = _split(tmp_path, 1000, "concept", 0.15)
    log = _request_log(tmp_path, features, "ride_id")
    record = check(perf, tmp_path, request_log_path=log, labels_path=labels,
                   label_key="ride_id")
    realized = record["performance"]["realized"]
    assert realized["kind"] == "request log + labels" and realized["rows"] == 1000
    assert realized["decision"] == performance.PERFORMANCE_DROP
    inline = check(perf, tmp_path / "inline",
                   labels_path=gen(tmp_path, 1000, "concept", 0.15, seed=70))
    assert realized["value"] == inline["performance"]["realized"]["value"]
    # A log whose requests lack the key: named, with the file.
    bare = _request_log(tmp_path / "bare", gen(tmp_path, 100, name="bare.csv",
                                                key_column="other"), "other")
    with pytest.raises(InputDataError, match="carry no feature 'ride_id'"):
        check(perf, tmp_path, request_log_path=bare, labels_path=labels, label_key="ride_id")


def test_the_decision_record_names_the_findings_in_json(perf, tmp_path):
    check(perf, tmp_path, labels_path=gen(tmp_path, 1000, "concept", 0.2))
    doc = json.loads((tmp_path / "decision" / "drift.json").read_text())
    assert doc["findings"] == ["PERFORMANCE_DROP"] and doc["window"]["rows"]["labels"] == 1000
    assert logic.metrics(doc)["realized.accuracy"] == pytest.approx(
        doc["performance"]["realized"]["value"], abs=1e-6)


def test_labels_that_arrive_later_are_shown_beside_the_earlier_estimate(perf, tmp_path):
    from kfp_ct.components.common import history

    features, labels = _split(tmp_path, 1000, "covariate", 1.0)
    first = check(perf, tmp_path / "before", window_path=features)
    assert first["performance"]["realized"] is None
    history.append(perf.base, history.summary(first, {"launched": False}))
    later = check(perf, tmp_path / "after", window_path=features, labels_path=labels,
                  label_key="ride_id")
    before = later["performance"]["realized"]["estimated_before"]
    assert before["value"] == pytest.approx(first["performance"]["estimated"]["value"])
    assert abs(before["value"] - later["performance"]["realized"]["value"]) < 0.02
    assert "estimated before the labels" in (tmp_path / "after" / "r.html").read_text()
    assert later["window"]["key"] != first["window"]["key"]  # labels make a new window


def test_regression_is_judged_on_rmse_with_a_relative_default_tolerance():
    rng = np.random.default_rng(3)
    labels = rng.normal(10, 2, 4000).astype(np.float32)

    def tally(noise):
        t = performance.Tally("regression")
        predictions = (labels + rng.normal(0, noise, len(labels))).reshape(-1, 1)
        t.add({"outputs": predictions.astype(np.float32)}, labels.tolist())
        return t

    base = performance.Baseline("rmse", 1.0, 800, 3)
    same = performance.realized_check(tally(1.0), base, 0.01, 200, None)
    assert same["decision"] == performance.NO_DROP and same["value"] == pytest.approx(1.0, abs=0.05)
    assert same["tolerance"] == pytest.approx(0.1)  # 10% of the baseline's rmse
    assert same["low"] < same["value"] < same["high"]
    assert set(same["companions"]) == {"example_count", "mse", "mae"}
    worse = performance.realized_check(tally(1.3), base, 0.01, 200, None)
    assert worse["decision"] == performance.PERFORMANCE_DROP and "above" in worse["reason"]
