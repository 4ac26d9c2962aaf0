"""The drift check: calibrated per-feature decisions on generated windows with controlled
shifts, against real TFDV statistics kept beside a production version."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from kfp_ct.components.common import drift, registry
from kfp_ct.pipelines.entrypoints import synth
from kfp_ct.components.common.errors import InputDataError, KfpCtError
from kfp_ct.components.drift import logic

import browser  # tests/browser.py (tests/ is on sys.path)


def window(tmp_path, rows, shift="none", seed=100, name=None, **kw):
    path = tmp_path / (name or f"w_{shift}_{rows}_{seed}.csv")
    synth.write_penguins_like(path, rows, seed=seed, shift=shift, **kw)
    return str(path)


def check(drift_base, path, tmp_path=None, **kw):
    out = {}
    if tmp_path is not None:
        out = dict(decision_dir=str(tmp_path / "decision"), report_html=str(tmp_path / "r.html"),
                   report_md=str(tmp_path / "r.md"))
    return logic.run_drift_check(drift_base.base, window_path=path, **out, **kw)


# ------------------------------------------------------------------------- measures


def test_jsd_is_base2_jensen_shannon_and_linf_is_the_largest_share_change():
    from scipy.spatial.distance import jensenshannon

    rng = np.random.default_rng(0)
    for _ in range(20):
        p, q = rng.random(8), rng.random(8)
        q[rng.integers(8)] = 0.0
        assert drift.jsd(p, q) == pytest.approx(jensenshannon(p, q, base=2) ** 2, abs=1e-12)
        assert drift.linf(p, q) == pytest.approx(np.abs(p / p.sum() - q / q.sum()).max())
    assert drift.jsd(np.array([1.0, 0]), np.array([0, 1.0])) == pytest.approx(1.0)


def test_sampling_noise_shrinks_with_window_size_and_explains_tiny_window_alarms():
    # TFDV issue 216: JSD 0.43 between 1,000 reference rows and 10 fresh rows of the same data.
    train = np.array([0, 0, 40, 120, 260, 300, 180, 70, 25, 5, 0], dtype=float)
    levels = [drift.no_drift_level(drift.null_distances(drift.NUMERIC, train, 1000, n), 0.01)
              for n in (10, 100, 1000, 10000)]
    assert levels == sorted(levels, reverse=True)
    assert levels[0] > 0.1  # a fixed 0.1 threshold alarms on 10 unshifted rows
    assert levels[-1] < 0.01


def test_numeric_cells_follow_the_training_buckets():
    ref = drift.numeric_reference([0.0, 1.0, 2.0], [3, 5], missing=2)
    counter = drift.Counter(ref)
    counter.add_numeric(np.array([-1.0, 0.0, 0.5, 1.0, 2.0, 2.5, np.nan]))
    assert ref.labels[:2] == [drift.MISSING, drift.BELOW] and ref.labels[-1] == drift.ABOVE
    # missing, below, [0,1), [1,2] (last bucket closed), above
    assert counter.counts.tolist() == [1, 1, 2, 2, 1]


def test_the_exact_reference_counts_every_training_row_in_equal_mass_cells(drift_base):
    prod = registry.production(drift_base.base)
    doc = json.loads(open(registry.audit_file(prod, registry.DRIFT_REFERENCE)).read())
    assert doc["rows"] == drift_base.rows
    for column, entry in doc["columns"].items():
        ref = drift.Reference.from_json(entry["reference"])
        assert ref.rows == pytest.approx(drift_base.rows), column
        if ref.kind == drift.NUMERIC:
            buckets = ref.counts[2:-1]
            assert ref.counts[1] == ref.counts[-1] == 0  # nothing outside training's range
            assert buckets.min() > 0.4 * buckets.mean(), (column, buckets)  # about equal mass


def test_without_the_exact_reference_tfdv_histograms_serve_with_a_note(drift_base, tmp_path):
    base = tmp_path / "old"
    shutil.copytree(drift_base.base, base)
    (base / "1" / registry.AUDIT_DIR / registry.DRIFT_REFERENCE).unlink()
    record = logic.run_drift_check(str(base), window_path=window(tmp_path, 800, seed=13,
                                                                  shift="numeric_mean"))
    assert record["drifted"] == ["body_mass_g"]
    assert any("interpolated" in n for n in record["notes"])


# ------------------------------------------------------------------------- decisions


@pytest.mark.parametrize("rows", [500, 3000])
def test_unshifted_windows_show_no_drift(drift_base, tmp_path, rows):
    for seed in (1, 2, 3):
        record = check(drift_base, window(tmp_path, rows, seed=seed))
        assert record["decision"] == logic.NO_DRIFT, record["reasons"]
        assert record["drifted"] == []


def test_a_tiny_unshifted_window_is_insufficient_data_never_drift(drift_base, tmp_path):
    record = check(drift_base, window(tmp_path, 30, seed=5))
    assert record["decision"] == logic.INSUFFICIENT_DATA
    assert "too few rows" in record["reasons"][0]
    # The raw distances a fixed threshold would have alarmed on:
    assert max(f["distance"] for f in record["features"]) > 0.1
    assert {f["verdict"] for f in record["features"]} == {logic.V_FEW_ROWS}


def test_a_small_window_below_the_noise_level_is_not_drift_even_above_the_threshold(
        drift_base, tmp_path):
    # 120 rows: categorical distances of a few percent are noise, not drift.
    record = check(drift_base, window(tmp_path, 120, seed=9),
                   settings={"categorical": 0.01, "numeric": 0.005})
    assert record["decision"] == logic.NO_DRIFT, record["reasons"]
    assert any(f["verdict"] == logic.V_BELOW_LEVEL for f in record["features"])


SHIFT_CASES = {
    "numeric_mean": (["body_mass_g"], None),
    "category_mix": (["island"], None),
    "new_category": (["island"], "new values"),
    "missing_column": (["sex"], logic.V_MISSING),
    "label": (["species"], None),
}


@pytest.mark.parametrize("shift", sorted(SHIFT_CASES))
def test_each_shift_kind_is_found_on_the_right_feature_and_named_in_the_report(
        drift_base, tmp_path, shift):
    expected, anomaly = SHIFT_CASES[shift]
    record = check(drift_base, window(tmp_path, 3000, shift=shift, seed=21), tmp_path)
    assert record["decision"] == logic.DRIFT
    for feature in expected:
        assert feature in record["drifted"]
    if shift in ("numeric_mean", "category_mix", "new_category"):
        assert record["drifted"] == expected  # nothing else flagged
    if anomaly:
        assert any(a["feature"] == expected[0] and a["kind"] == anomaly
                   for a in record["anomalies"])
    html = (tmp_path / "r.html").read_text()
    md = (tmp_path / "r.md").read_text()
    assert html.index("Decision: DRIFT") < html.index("<h3>Features</h3>")
    for feature in expected:
        assert feature in record["reasons"][0] or any(feature in r for r in record["reasons"])
        assert feature in md and feature in html
    assert html.count("<svg") >= 6  # a picture per tested feature
    saved = json.loads((tmp_path / "decision" / logic.DRIFT_JSON).read_text())
    assert saved["decision"] == logic.DRIFT and saved["drifted"] == record["drifted"]


def test_label_drift_is_measured_only_when_the_window_has_the_label(drift_base, tmp_path):
    path = window(tmp_path, 1000, seed=4, shift="missing_column", feature="species")
    record = check(drift_base, path)
    assert record["decision"] == logic.NO_DRIFT
    assert "species" not in {f["feature"] for f in record["features"]}
    assert not record["anomalies"]


def test_a_regression_label_drifts_by_jensen_shannon(tmp_path):
    from drift_base import make_stats_only_base

    problem = tmp_path / "regression.json"
    problem.write_text(json.dumps({
        "label": "body_mass_g", "task": "regression",
        "numeric": ["bill_length_mm", "bill_depth_mm", "flipper_length_mm"],
        "categorical": ["island", "sex"]}))
    base = make_stats_only_base(tmp_path / "base", rows=4000, problem=str(problem))
    calm = check(base, window(tmp_path, 2000, seed=3))
    assert calm["decision"] == logic.NO_DRIFT, calm["reasons"]
    moved = check(base, window(tmp_path, 2000, seed=4, shift="numeric_mean"))
    label = next(f for f in moved["features"] if f["feature"] == "body_mass_g")
    assert label["role"] == "label" and label["measure"] == drift.JSD
    assert moved["drifted"] == ["body_mass_g"] and "label body_mass_g" in moved["reasons"][0]


def test_missing_column_and_type_change_block_retraining(drift_base, tmp_path):
    import pandas as pd

    path = window(tmp_path, 1000, seed=6)
    frame = pd.read_csv(path)
    frame["body_mass_g"] = frame["body_mass_g"].astype(object)
    frame.loc[::7, "body_mass_g"] = "heavy"
    frame.to_csv(path, index=False)
    record = check(drift_base, path)
    assert record["decision"] == logic.DRIFT
    assert record["blocking"] == ["body_mass_g"]
    change = [a for a in record["anomalies"] if a["kind"] == logic.V_TYPE]
    assert change and "'heavy'" in change[0]["detail"]


def test_parquet_windows_and_folders_read_like_csv(drift_base, tmp_path):
    folder = tmp_path / "date=2026-11-23"
    synth.write_penguins_like(folder / "a.parquet", 800, seed=31, fmt="parquet",
                              shift="category_mix")
    synth.write_penguins_like(folder / "b.parquet", 800, seed=32, fmt="parquet",
                              shift="category_mix")
    record = check(drift_base, str(folder) + "/")
    assert record["window"]["rows"] == {"window": 1600}
    assert record["drifted"] == ["island"]
    assert len(record["window"]["files"]["window"]) == 2


def test_per_feature_thresholds_are_user_settings(drift_base, tmp_path):
    path = window(tmp_path, 3000, shift="category_mix", seed=41)
    assert check(drift_base, path)["drifted"] == ["island"]
    relaxed = check(drift_base, path, settings={"features": {"island": 0.5}})
    assert relaxed["decision"] == logic.NO_DRIFT
    island = next(f for f in relaxed["features"] if f["feature"] == "island")
    assert island["threshold"] == 0.5


def test_window_key_changes_with_the_files_and_not_between_checks(drift_base, tmp_path):
    path = window(tmp_path, 500, seed=51)
    first, again = check(drift_base, path), check(drift_base, path)
    assert first["window"]["key"] == again["window"]["key"]
    other = check(drift_base, window(tmp_path, 500, seed=52))
    assert other["window"]["key"] != first["window"]["key"]


def test_metrics_hold_each_distance(drift_base, tmp_path):
    record = check(drift_base, window(tmp_path, 500, seed=61))
    metrics = logic.metrics(record)
    assert metrics["body_mass_g.jsd"] == pytest.approx(
        next(f["distance"] for f in record["features"] if f["feature"] == "body_mass_g"), abs=1e-6)
    assert "island.linf" in metrics and metrics["drifted_features"] == 0


# ----------------------------------------------------------------------- bad input


def test_bad_windows_are_named_and_nothing_is_written(drift_base, tmp_path):
    cases = {
        str(tmp_path / "nothing-*.csv"): "matches no file",
        str(tmp_path / "absent.csv"): "no such file or folder",
    }
    header_only = tmp_path / "header.csv"
    synth.write_penguins_like(header_only, 0)
    cases[str(header_only)] = "no data rows"
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    cases[str(empty_dir)] = "holds no .csv or .parquet"
    for path, message in cases.items():
        out = tmp_path / "out"
        with pytest.raises(InputDataError, match=message) as info:
            check(drift_base, path, out)
        assert os.path.basename(path.rstrip("/*")).split("-")[0] in str(info.value)
        assert not (out / "decision").exists() and not (out / "r.html").exists()


def test_no_production_version_means_no_decision(tmp_path):
    with pytest.raises(logic.NoBaselineError, match="no production version"):
        logic.run_drift_check(str(tmp_path / "nowhere"), window_path=window(tmp_path, 200))


def test_corrupt_or_missing_statistics_mean_no_decision(drift_base, tmp_path):
    base = tmp_path / "copy"
    shutil.copytree(drift_base.base, base)
    stats = base / "1" / registry.AUDIT_DIR / registry.STATISTICS
    stats.write_bytes(b"\x0b\xff not a statistics proto")
    with pytest.raises(logic.NoBaselineError, match="do not parse"):
        logic.run_drift_check(str(base), window_path=window(tmp_path, 200))
    stats.unlink()
    with pytest.raises(logic.NoBaselineError, match="no training statistics"):
        logic.run_drift_check(str(base), window_path=window(tmp_path, 200))


@pytest.mark.parametrize("settings, message", [
    ("{not json", "not valid JSON"),
    ('{"numeric": 2}', "'numeric' must be a number in"),
    ('{"threshold": 0.1}', "unknown key"),
    ('{"min_rows": 0}', "'min_rows' must be an integer"),
    ('{"features": {"island": "high"}}', "features.island"),
    ('{"features": {"wingspan": 0.1}}', "wingspan"),
])
def test_bad_settings_are_named(drift_base, tmp_path, settings, message):
    with pytest.raises(KfpCtError, match=message):
        check(drift_base, window(tmp_path, 200, seed=71), settings=settings)


def test_no_window_and_no_request_log_is_a_usage_error(drift_base):
    with pytest.raises(InputDataError, match="give a window"):
        logic.run_drift_check(drift_base.base)


# ---------------------------------------------------------------- request logs


def _request_log(tmp_path, rows, shift="none", seed=81) -> str:
    import pyarrow.csv as pacsv
    import tensorflow as tf
    from tfx_bsl.coders import example_coder

    from kfp_ct.components.common import data as data_lib
    from kfp_ct.components.common.prediction_log import prediction_log_bytes
    from kfp_ct.components.common.problem import load_problem

    spec = load_problem(os.path.join(os.path.dirname(__file__), "..", "pipelines", "penguins",
                                     "problem.json"))
    table = pacsv.read_csv(window(tmp_path, rows, shift=shift, seed=seed),
                           convert_options=pacsv.ConvertOptions(column_types={
                               c: "string" for c in spec.categorical}))
    columns = [c for c in spec.features if c in table.schema.names]
    batch = table.select(columns).combine_chunks().to_batches()[0]
    examples = example_coder.RecordBatchToExamples(data_lib.as_list_batch(batch, spec, columns))
    path = str(tmp_path / "requests" / "log-00000.tfrecord")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for start in range(0, len(examples), 50):  # 50 rows per logged request
            writer.write(prediction_log_bytes(examples[start:start + 50], "penguins"))
    return path


def test_request_log_is_measured_like_a_window(drift_base, tmp_path):
    calm = logic.run_drift_check(drift_base.base,
                                 request_log_path=_request_log(tmp_path / "a", 1500))
    assert calm["decision"] == logic.NO_DRIFT, calm["reasons"]
    assert calm["window"]["rows"] == {"requests": 1500}
    assert "species" not in {f["feature"] for f in calm["features"]}  # requests carry no label
    moved = logic.run_drift_check(drift_base.base, request_log_path=_request_log(
        tmp_path / "b", 1500, shift="numeric_mean", seed=82))
    assert moved["drifted"] == ["body_mass_g"]


def test_window_and_request_log_together_are_tested_side_by_side(drift_base, tmp_path):
    record = logic.run_drift_check(
        drift_base.base, window_path=window(tmp_path, 1500, seed=91),
        request_log_path=_request_log(tmp_path, 1500, shift="category_mix", seed=92))
    assert record["decision"] == logic.DRIFT
    sources = {(f["feature"], f["source"]): f["verdict"] for f in record["features"]}
    assert sources[("island", "requests")] == logic.V_DRIFT
    assert sources[("island", "window")] == logic.V_OK


def test_a_file_that_is_not_a_request_log_is_named(drift_base, tmp_path):
    bad = tmp_path / "log.tfrecord"
    bad.write_bytes(b"this is not a TFRecord file at all")
    with pytest.raises(InputDataError, match="log.tfrecord"):
        logic.run_drift_check(drift_base.base, request_log_path=str(bad))


def test_gs_window_and_gs_model_base_through_the_storage_emulator(drift_base, tmp_path,
                                                                  gcs_emulator):
    from kfp_ct.components.common import storage

    bucket = gcs_emulator.new_bucket()
    base = storage.join(bucket, "serving", "penguins")
    storage.copy_tree(drift_base.base, base, last=())
    for day, shift in (("2026-11-23", "none"), ("2026-11-24", "category_mix")):
        local = window(tmp_path, 1200, shift=shift, seed=17, name=f"{day}.csv")
        storage.write_bytes(storage.join(bucket, "data", f"date={day}", "part.csv"),
                            open(local, "rb").read())
    calm = logic.run_drift_check(base, window_path=storage.join(bucket, "data", "date=2026-11-23"))
    moved = logic.run_drift_check(base, window_path=storage.join(bucket, "data/date=2026-11-24/*.csv"))
    assert calm["decision"] == logic.NO_DRIFT and moved["drifted"] == ["island"]
    files = moved["window"]["files"]["window"]
    assert files[0]["path"].startswith("gs://") and files[0]["generation"]
    assert calm["window"]["key"] != moved["window"]["key"]


def test_the_prediction_sample_is_uniform_even_for_data_made_with_seed_0(drift_base, tmp_path):
    # A sample drawn with numpy seed 0 from data generated with numpy seed 0 once picked
    # the rows whose species draw was smallest: one species only.
    baseline = logic.load_baseline(drift_base.base)
    scan = logic.scan_window(window(tmp_path, 20000, seed=0), baseline, 2000)
    species = scan.counters["species"]
    full = dict(zip(species.ref.labels, species.counts / species.counts.sum()))
    values = scan.sample.column("species").to_pylist()
    for name in ("Adelie", "Chinstrap", "Gentoo"):
        assert abs(values.count(name) / len(values) - full[name]) < 0.05, name


# ------------------------------------------------------------- the report, drawn

_TRAIN_RGB, _WINDOW_RGB = (0x5B, 0x8D, 0xEF), (0xF2, 0x8E, 0x2B)  # kfp_ct.components.drift.render


def test_the_drift_report_draws_in_a_real_browser(drift_base, tmp_path):
    import numpy as np

    check(drift_base, window(tmp_path, 3000, shift="numeric_mean", seed=23), tmp_path)
    png = str(tmp_path / "report.png")
    browser.screenshot(str(tmp_path / "r.html"), png, tmp_path)
    image = browser.pixels(png)

    # Bars of both colours for every tested feature: thousands of pixels each.
    assert browser.count(image, _TRAIN_RGB) > 5000 and browser.count(image, _WINDOW_RGB) > 5000
    # The decision line comes first, in the report's red: near the top of the page.
    red = np.argwhere(browser.near(image, (0xB0, 0x00, 0x20), 30))
    assert len(red) and red[:, 0].min() < 100


def test_a_parquet_window_reads_missing_texts_as_the_training_data_does(drift_base, tmp_path):
    """The reading rule (components/common/data.py): "NA", "nan", "" in a Parquet text
    column are missing, as in CSV and in training, not new categories; numbers stored as
    text read as numbers. The same table as CSV and as Parquet gives the same counts."""
    import pandas as pd

    csv_path = window(tmp_path, 1200, seed=61)
    frame = pd.read_csv(csv_path, keep_default_na=False, dtype=str)
    frame.loc[frame.index[:40], "sex"] = "nan"
    frame.loc[frame.index[40:80], "sex"] = "NA"
    frame.loc[frame.index[80:90], "island"] = ""
    frame.loc[frame.index[90:100], "body_mass_g"] = "NA"
    frame.to_csv(csv_path, index=False)
    parquet_path = tmp_path / "w.parquet"
    frame.to_parquet(parquet_path)  # every column stored as text
    as_csv, as_parquet = check(drift_base, csv_path), check(drift_base, str(parquet_path))
    for record in (as_csv, as_parquet):  # no "new value 'nan'" for a missing value
        assert not [a for a in record["anomalies"] if a["feature"] in ("sex", "island",
                                                                        "body_mass_g")], \
            record["anomalies"]

    def verdicts(record):
        return [(f["feature"], f.get("distance"), f["verdict"]) for f in record["features"]]

    assert verdicts(as_csv) == verdicts(as_parquet)


# ------------------------------------------- statements about the training data

COLONIES = [f"colony-{i:02d}" for i in range(60)]  # more values than TFDV's top 20


def _with_colony(seed):
    """table -> table with a "colony" column: 60 values, the first rows one of each (so
    training has every value), the rest drawn with ever rarer weights."""
    def edit(table):
        import pyarrow as pa

        weights = 1.0 / np.arange(1, len(COLONIES) + 1) ** 1.5
        drawn = np.random.default_rng(seed).choice(len(COLONIES), size=table.num_rows,
                                                   p=weights / weights.sum())
        drawn[:len(COLONIES)] = np.arange(len(COLONIES))
        return table.append_column("colony", pa.array([COLONIES[i] for i in drawn]))
    return edit


def _colony_base(root):
    from drift_base import PENGUINS_PROBLEM_PATH, make_stats_only_base

    problem = json.loads(open(PENGUINS_PROBLEM_PATH).read())
    problem["categorical"] = problem["categorical"] + ["colony"]
    path = root / "problem.json"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(problem))
    return make_stats_only_base(root / "base", rows=3000, problem=str(path),
                                edit=_with_colony(seed=5))


def _rarest_training_colony(base) -> str:
    import pandas as pd

    counts = pd.read_csv(base.data)["colony"].value_counts()
    return str(counts.index[-1])


def _colony_window(tmp_path, values: dict) -> str:
    """600 penguins-like rows with colonies from training's mix, ``values`` (value -> rows)
    put in place of the first ones."""
    import pandas as pd

    path = window(tmp_path, 600, seed=77, name="colony_window.csv")
    frame = pd.read_csv(path)
    frame["colony"] = _with_colony(seed=78)(
        __import__("pyarrow").table({"n": np.zeros(len(frame))})).column("colony").to_pylist()
    start = 0
    for value, rows in values.items():
        frame.loc[frame.index[start:start + rows], "colony"] = value
        start += rows
    frame.to_csv(path, index=False)
    return path


def _statements(record, tmp_path) -> str:
    """Everything the check says: the decision record and both rendered reports."""
    return "\n".join([json.dumps(record), (tmp_path / "r.html").read_text(),
                      (tmp_path / "r.md").read_text()])


@pytest.fixture(scope="module")
def colony_base(tmp_path_factory):
    return _colony_base(tmp_path_factory.mktemp("colony_base"))


def test_a_rare_training_value_outside_the_top_values_is_not_called_new(colony_base, tmp_path):
    rare = _rarest_training_colony(colony_base)
    ref = json.loads(open(registry.audit_file(registry.production(colony_base.base),
                                              registry.DRIFT_REFERENCE)).read())
    assert rare not in ref["columns"]["colony"]["reference"]["values"]  # beyond the top 20
    record = check(colony_base, _colony_window(tmp_path, {rare: 30}), tmp_path)
    said = _statements(record, tmp_path)
    assert "never had" not in said, [a for a in record["anomalies"] if "never" in a["detail"]]
    assert "not among" not in said  # the reference knows training had it
    about = [a for a in record["anomalies"] if a["feature"] == "colony"]
    assert all("training had them" in a["detail"] for a in about), about


def test_a_value_training_never_had_is_named_as_such(colony_base, tmp_path):
    rare = _rarest_training_colony(colony_base)
    record = check(colony_base, _colony_window(tmp_path, {"colony-new": 20, rare: 30}), tmp_path)
    new = [a for a in record["anomalies"] if a["feature"] == "colony"
           and a["kind"] == "new values"]
    assert len(new) == 1 and new[0]["detail"].startswith("1 value(s) training never had: "
                                                         "'colony-new' (3.3%)"), new
    assert rare not in new[0]["detail"]
    said = _statements(record, tmp_path)
    assert "1 value(s) training never had: 'colony-new'" in said


def test_a_truncated_vocabulary_says_not_among_the_values_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(drift, "VOCABULARY_CAP", 30, raising=False)
    base = _colony_base(tmp_path / "capped")
    doc = json.loads(open(registry.audit_file(registry.production(base.base),
                                              registry.DRIFT_REFERENCE)).read())
    colony = doc["columns"]["colony"]["reference"]
    assert len(colony.get("vocabulary", ())) == 30 and colony.get("vocabulary_complete") is False
    assert doc["columns"]["island"]["reference"].get("vocabulary_complete") is True
    rare = _rarest_training_colony(base)
    assert rare not in colony["vocabulary"]
    record = check(base, _colony_window(tmp_path, {"colony-new": 20, rare: 30}), tmp_path)
    said = _statements(record, tmp_path)
    assert "never had" not in said
    about = [a["detail"] for a in record["anomalies"] if a["feature"] == "colony"
             and a["kind"] == "values not kept from training"]
    assert len(about) == 1 and " value(s) not among the 30 values kept from training: " in \
        about[0] and "'colony-new'" in about[0] and repr(rare) in about[0], about
    assert "not among the 30 values kept from training" in said


def test_the_vocabulary_is_exact_up_to_its_cap_and_says_when_it_is_not():
    import pyarrow as pa

    def counted(cap, *batches):
        parts = []
        for batch in batches:
            part = drift.Vocabulary(cap)
            part.add(pa.array(batch))
            parts.append(drift.Vocabulary.from_json(json.loads(json.dumps(part.to_json()))))
        whole = drift.Vocabulary(cap)
        for batch in batches:
            whole.add(pa.array(batch))
        merged = parts[0]
        for part in parts[1:]:
            merged.merge(part)
        assert merged.kept() == whole.kept() and merged.rows == whole.rows
        return whole.kept()

    assert counted(3, ["b", "a", None], ["a", "c"]) == (["a", "b", "c"], True)  # nulls: missing
    assert counted(2, ["b", "a", None], ["a", "c"]) == (["a", "b"], False)
    values, complete = counted(2, [f"v{i}" for i in range(9)] + ["v8"])  # pruned past 2 x cap
    assert values[0] == "v8" and len(values) == 2 and not complete


def test_a_reference_without_a_vocabulary_never_claims_a_value_is_new(drift_base, tmp_path):
    base = tmp_path / "old"
    shutil.copytree(drift_base.base, base)
    path = base / "1" / registry.AUDIT_DIR / registry.DRIFT_REFERENCE
    doc = json.loads(path.read_text())
    for entry in doc["columns"].values():  # as versions pushed before the vocabulary wrote it
        entry["reference"].pop("vocabulary", None)
        entry["reference"].pop("vocabulary_complete", None)
    path.write_text(json.dumps(doc))
    record = logic.run_drift_check(str(base), window_path=window(tmp_path, 1000, seed=21,
                                                                  shift="new_category"))
    island = [a["detail"] for a in record["anomalies"] if a["feature"] == "island"]
    assert island and "not among the 3 values kept from training" in island[0], island
    assert "never had" not in json.dumps(record)


def test_a_feature_whose_window_values_are_all_missing_is_reported_all_missing(
        drift_base, tmp_path):
    import pandas as pd

    path = window(tmp_path, 1000, seed=27)
    frame = pd.read_csv(path)
    frame["sex"] = None
    frame["body_mass_g"] = None
    frame.to_csv(path, index=False)
    record = check(drift_base, path, tmp_path)
    assert record["decision"] == logic.DRIFT
    assert {"sex", "body_mass_g"} <= set(record["drifted"])
    verdicts = {f["feature"]: f["verdict"] for f in record["features"]}
    assert verdicts["sex"] == verdicts["body_mass_g"] == "all missing"
    reasons = [r for r in record["reasons"] if r.startswith("sex: ")]
    assert reasons and reasons[0].startswith("sex: all missing (training: ") and \
        "% missing)" in reasons[0], record["reasons"]
    assert [a["kind"] for a in record["anomalies"] if a["feature"] == "sex"] == ["all missing"]
    html, md = (tmp_path / "r.html").read_text(), (tmp_path / "r.md").read_text()
    for text in (html, md):
        assert "sex: all missing (training: " in text and "**all missing**" in md


def test_an_empty_label_column_is_unlabeled_data_not_label_drift(drift_base, tmp_path):
    import pandas as pd

    path = window(tmp_path, 1000, seed=28)
    frame = pd.read_csv(path)
    frame["species"] = None  # labels not known yet
    frame.to_csv(path, index=False)
    record = check(drift_base, path)
    assert record["decision"] == logic.NO_DRIFT, record["reasons"]
    assert "species" not in {f["feature"] for f in record["features"]}
    assert any("label" in n and "species" in n for n in record["notes"]), record["notes"]
