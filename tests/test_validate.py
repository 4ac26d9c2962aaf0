"""kfp_ct.components.validate.logic.run_validate on the bundled penguins and on bad input."""

import csv
import json
import os
import re

import pytest

from kfp_ct.components.common import data
from kfp_ct.components.common.errors import InputDataError, LabelError, SchemaError
from kfp_ct.components.validate import logic as validate

HERE = os.path.dirname(os.path.abspath(__file__))
PENGUINS_SPEC = os.path.join(os.path.dirname(HERE), "pipelines", "penguins", "problem.json")
FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "island", "sex"]


def _outputs(root):
    root = str(root)
    return dict(statistics_dir=os.path.join(root, "stats"), schema_dir=os.path.join(root, "schema"),
                anomalies_dir=os.path.join(root, "anomalies"),
                report_path=os.path.join(root, "report", "report.html"))


def _assert_nothing_written(out):
    for key in ("statistics_dir", "schema_dir", "anomalies_dir"):
        assert not os.path.exists(out[key]), out[key]
    assert not os.path.exists(out["report_path"])


def _load_stats(out):
    from tensorflow_metadata.proto.v0 import statistics_pb2

    stats = statistics_pb2.DatasetFeatureStatisticsList()
    with open(os.path.join(out["statistics_dir"], validate.STATS_FILE), "rb") as fh:
        stats.ParseFromString(fh.read())
    return stats


def _load_schema_file(path):
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    with open(path) as fh:
        return text_format.Parse(fh.read(), schema_pb2.Schema())


def _feature_name(f):
    return f.path.step[-1] if f.path.step else f.name


@pytest.fixture(scope="module")
def penguins_run(tmp_path_factory):
    out = _outputs(tmp_path_factory.mktemp("validate_penguins"))
    result = validate.run_validate(data.BUNDLED_PENGUINS, PENGUINS_SPEC, **out)
    return result, out


@pytest.fixture(scope="module")
def inferred_schema(penguins_run):
    _, out = penguins_run
    return _load_schema_file(os.path.join(out["schema_dir"], validate.SCHEMA_FILE))


def _write_schema(schema, path):
    from google.protobuf import text_format

    path.write_text(text_format.MessageToString(schema))
    return str(path)


def test_penguins_result_has_all_rows_and_no_anomalies(penguins_run):
    result, _ = penguins_run
    assert result.rows == 344
    assert result.anomalies == []
    assert result.schema_source == "inferred from this data"
    assert result.summary() == {"rows": 344, "schema_source": "inferred from this data",
                                "anomaly_count": 0}


def test_penguins_statistics_cover_every_declared_column(penguins_run):
    _, out = penguins_run
    stats = _load_stats(out)
    assert len(stats.datasets) == 1
    dataset = stats.datasets[0]
    assert dataset.num_examples == 344
    by_name = {_feature_name(f): f for f in dataset.features}
    for name in FEATURES + ["species"]:
        assert name in by_name, name
    assert "year" not in by_name  # not declared: not read
    assert by_name["sex"].string_stats.common_stats.num_missing == 11
    assert by_name["species"].string_stats.unique == 3
    assert by_name["body_mass_g"].num_stats.min == pytest.approx(2700)
    assert by_name["body_mass_g"].num_stats.max == pytest.approx(6300)


def test_penguins_inferred_schema_lists_the_features(inferred_schema):
    names = {f.name for f in inferred_schema.feature}
    assert set(FEATURES) | {"species"} <= names
    domains = {d.name: set(d.value) for d in inferred_schema.string_domain}
    assert domains["island"] == {"Biscoe", "Dream", "Torgersen"}


def test_penguins_anomaly_files_say_none(penguins_run):
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    _, out = penguins_run
    with open(os.path.join(out["anomalies_dir"], validate.ANOMALIES_JSON)) as fh:
        assert json.load(fh) == []
    proto = anomalies_pb2.Anomalies()
    with open(os.path.join(out["anomalies_dir"], validate.ANOMALIES_FILE), "rb") as fh:
        proto.ParseFromString(fh.read())
    assert len(proto.anomaly_info) == 0


def test_penguins_report_names_each_feature_and_no_anomalies(penguins_run):
    _, out = penguins_run
    with open(out["report_path"]) as fh:
        html = fh.read()
    assert "<html" in html.lower()
    for name in FEATURES:
        assert name in html, name
    assert "No anomalies" in html
    assert "344 rows" in html


def _narrowed_island_schema(inferred_schema):
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = schema_pb2.Schema()
    schema.CopyFrom(inferred_schema)
    for domain in schema.string_domain:
        if domain.name == "island":
            kept = [v for v in domain.value if v != "Torgersen"]
            del domain.value[:]
            domain.value.extend(kept)
    return schema


def _sex_always_present_schema(inferred_schema):
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = schema_pb2.Schema()
    schema.CopyFrom(inferred_schema)
    for feature in schema.feature:
        if feature.name == "sex":
            feature.presence.min_fraction = 1.0
    return schema


def test_curated_schema_with_narrowed_domain_reports_the_anomaly(inferred_schema, tmp_path):
    schema_file = _write_schema(_narrowed_island_schema(inferred_schema), tmp_path / "curated.pbtxt")
    out = _outputs(tmp_path / "out")
    result = validate.run_validate(data.BUNDLED_PENGUINS, PENGUINS_SPEC, schema_path=schema_file,
                                   **out)
    assert result.rows == 344
    assert result.schema_source == f"curated file {schema_file}"
    features = {a["feature"] for a in result.anomalies}
    assert features == {"island"}
    assert any("Torgersen" in a["detail"] for a in result.anomalies), result.anomalies
    # listed in the anomalies file and in the report
    with open(os.path.join(out["anomalies_dir"], validate.ANOMALIES_JSON)) as fh:
        assert json.load(fh) == result.anomalies
    with open(out["report_path"]) as fh:
        html = fh.read()
    assert "No anomalies" not in html
    assert "1 anomaly" in html
    assert result.anomalies[0]["kind"] in html
    # the curated schema is passed on as the schema, unchanged
    written = _load_schema_file(os.path.join(out["schema_dir"], validate.SCHEMA_FILE))
    island = {d.name: list(d.value) for d in written.string_domain}["island"]
    assert "Torgersen" not in island


def test_curated_schema_requiring_sex_reports_missing_values(inferred_schema, tmp_path):
    schema_file = _write_schema(_sex_always_present_schema(inferred_schema),
                                tmp_path / "curated.pbtxt")
    out = _outputs(tmp_path / "out")
    result = validate.run_validate(data.BUNDLED_PENGUINS, PENGUINS_SPEC, schema_path=schema_file,
                                   **out)
    assert [a["feature"] for a in result.anomalies] == ["sex"]
    assert result.anomalies[0]["kind"]
    with open(out["report_path"]) as fh:
        assert "sex" in fh.read()


def test_strict_mode_raises_listing_feature_and_kind_and_writes_nothing(inferred_schema, tmp_path):
    schema = _narrowed_island_schema(inferred_schema)
    for feature in schema.feature:
        if feature.name == "sex":
            feature.presence.min_fraction = 1.0
    schema_file = _write_schema(schema, tmp_path / "curated.pbtxt")
    out = _outputs(tmp_path / "out")
    with pytest.raises(validate.AnomaliesFound) as info:
        validate.run_validate(data.BUNDLED_PENGUINS, PENGUINS_SPEC, schema_path=schema_file,
                              strict=True, **out)
    assert isinstance(info.value, InputDataError)
    message = str(info.value)
    assert "2 anomalies" in message
    assert "island" in message and "sex" in message
    # each listed line is "feature: kind: detail"
    lines = [line.strip() for line in message.splitlines() if line.strip().startswith("- ")]
    assert len(lines) == 2
    assert all(line.count(": ") >= 2 for line in lines), lines
    _assert_nothing_written(out)


def test_strict_mode_without_anomalies_writes_outputs(tmp_path, penguins_run):
    _, first = penguins_run
    out = _outputs(tmp_path / "out")
    result = validate.run_validate(data.BUNDLED_PENGUINS, PENGUINS_SPEC, strict=True,
                                   schema_path=os.path.join(first["schema_dir"], validate.SCHEMA_FILE),
                                   **out)
    assert result.anomalies == []
    assert os.path.exists(os.path.join(out["statistics_dir"], validate.STATS_FILE))


def test_schema_file_that_does_not_parse_names_the_file(tmp_path):
    bad = tmp_path / "broken_schema.pbtxt"
    bad.write_text('feature { name: "island" type: NOT_A_TYPE }\n')
    out = _outputs(tmp_path / "out")
    with pytest.raises(SchemaError) as info:
        validate.run_validate(data.BUNDLED_PENGUINS, PENGUINS_SPEC, schema_path=str(bad), **out)
    assert str(bad) in str(info.value)
    assert "does not parse" in str(info.value)
    _assert_nothing_written(out)


def test_missing_schema_file_names_the_file(tmp_path):
    missing = str(tmp_path / "absent_schema.pbtxt")
    with pytest.raises(SchemaError) as info:
        validate.load_schema(missing)
    assert missing in str(info.value)


def test_empty_schema_file_is_rejected(tmp_path):
    empty = tmp_path / "empty_schema.pbtxt"
    empty.write_text("# nothing here\n")
    with pytest.raises(SchemaError, match="declares no feature"):
        validate.load_schema(str(empty))


def test_data_without_label_raises_and_writes_nothing(tmp_path):
    with open(data.bundled_penguins_path(), newline="") as fh:
        rows = list(csv.reader(fh))
    bad = tmp_path / "no_species.csv"
    with open(bad, "w", newline="") as fh:
        csv.writer(fh).writerows([r[1:] for r in rows])  # drop the species column
    out = _outputs(tmp_path / "out")
    with pytest.raises(InputDataError) as info:
        validate.run_validate(str(bad), PENGUINS_SPEC, **out)
    assert "'species' (label)" in str(info.value)
    assert str(bad) in str(info.value)
    _assert_nothing_written(out)


def test_data_with_empty_labels_raises_and_writes_nothing(tmp_path):
    with open(data.bundled_penguins_path()) as fh:
        lines = fh.read().splitlines()
    lines[9] = "," + lines[9].split(",", 1)[1]  # line 10: no species
    bad = tmp_path / "empty_species.csv"
    bad.write_text("\n".join(lines) + "\n")
    out = _outputs(tmp_path / "out")
    with pytest.raises(InputDataError, match=r"1 row\(s\) have an empty label.*line 10"):
        validate.run_validate(str(bad), PENGUINS_SPEC, **out)
    _assert_nothing_written(out)


def test_statistics_on_a_beam_runner_equal_the_streaming_pass(tmp_path):
    from tensorflow_metadata.proto.v0 import statistics_pb2

    from kfp_ct.components.validate.logic import run_validate

    counts = {}
    for mode, beam_args in (("stream", None), ("beam", ["--runner=DirectRunner"])):
        out = tmp_path / mode
        result = run_validate("bundled:penguins", PENGUINS_SPEC, str(out / "s"),
                              str(out / "sc"), str(out / "a"), str(out / "r.html"),
                              beam_args=beam_args)
        stats = statistics_pb2.DatasetFeatureStatisticsList()
        stats.ParseFromString((out / "s" / "FeatureStats.pb").read_bytes())
        features = {f.path.step[0]: f for f in stats.datasets[0].features}
        counts[mode] = (result.rows, stats.datasets[0].num_examples,
                        round(features["body_mass_g"].num_stats.mean, 3),
                        features["island"].string_stats.unique)
    # The mean against one computed here from the file's text, not against itself.
    with open(data.bundled_penguins_path(), newline="") as fh:
        masses = [float(r["body_mass_g"]) for r in csv.DictReader(fh) if r["body_mass_g"] != "NA"]
    assert len(masses) == 342
    assert counts["stream"] == counts["beam"] == (344, 344, round(sum(masses) / 342, 3), 3)


# ------------------------------------------------ non-finite numbers, CSV vs Parquet

def _penguin_table_rows():
    with open(data.bundled_penguins_path(), newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


# (1-based data row, column, text): CSV writes the text, Parquet the value it stands for.
_ODD_CELLS = [(6, "body_mass_g", "inf"), (99, "body_mass_g", "-Infinity"),
              (199, "body_mass_g", "NaN"), (49, "bill_depth_mm", "nan"),
              (10, "island", "nan"), (11, "island", "NaN"), (14, "sex", "None")]


def _odd_penguins(tmp_path):
    """The same table as a CSV file and as a Parquet file (doubles, text, nulls)."""
    header, rows = _penguin_table_rows()
    for row, column, text in _ODD_CELLS:
        rows[row - 1][header.index(column)] = text
    csv_path = tmp_path / "odd.csv"
    with open(csv_path, "w", newline="") as fh:
        csv.writer(fh).writerows([header] + rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    numeric = {"bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year"}
    columns = {}
    for i, name in enumerate(header):
        cells = [r[i] for r in rows]
        if name in numeric:  # "NA" is null; "inf", "nan" ... are the float values
            columns[name] = pa.array([None if c == "NA" else float(c) for c in cells],
                                     pa.float64())
        else:  # text as it is: the reader treats the null texts alike in both formats
            columns[name] = pa.array(cells, pa.string())
    parquet_path = tmp_path / "odd.parquet"
    pq.write_table(pa.table(columns), parquet_path)
    return str(csv_path), str(parquet_path)


def _stats_by_name(out):
    return {_feature_name(f): f for f in _load_stats(out).datasets[0].features}


def test_non_finite_numbers_are_anomalies_naming_column_count_and_line(tmp_path):
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    csv_path, _ = _odd_penguins(tmp_path)
    out = _outputs(tmp_path / "out")
    result = validate.run_validate(csv_path, PENGUINS_SPEC, **out)
    odd = {a["feature"]: a for a in result.anomalies}
    assert set(odd) == {"body_mass_g", "bill_depth_mm"}
    mass = odd["body_mass_g"]
    assert mass["kind"] == validate.NON_FINITE_KIND
    assert "3 value(s)" in mass["detail"] and f"{csv_path} line 7" in mass["detail"]
    assert "2 inf/-inf, 1 NaN" in mass["detail"] and "missing" in mass["detail"]
    assert f"{csv_path} line 50" in odd["bill_depth_mm"]["detail"]
    with open(os.path.join(out["anomalies_dir"], validate.ANOMALIES_JSON)) as fh:
        assert json.load(fh) == result.anomalies
    proto = anomalies_pb2.Anomalies()
    with open(os.path.join(out["anomalies_dir"], validate.ANOMALIES_FILE), "rb") as fh:
        proto.ParseFromString(fh.read())
    assert [r.type for r in proto.anomaly_info["body_mass_g"].reason] == [
        anomalies_pb2.AnomalyInfo.FLOAT_TYPE_HAS_INF]
    assert [r.type for r in proto.anomaly_info["bill_depth_mm"].reason] == [
        anomalies_pb2.AnomalyInfo.FLOAT_TYPE_HAS_NAN]
    # Statistics see them as missing: finite, the mean of the other values.
    header, rows = _penguin_table_rows()
    i = header.index("body_mass_g")
    skip = {r for r, c, _ in _ODD_CELLS if c == "body_mass_g"}
    kept = [float(r[i]) for n, r in enumerate(rows, 1) if r[i] != "NA" and n not in skip]
    stats = _stats_by_name(out)["body_mass_g"].num_stats
    assert stats.common_stats.num_missing == 2 + 3
    assert stats.mean == pytest.approx(sum(kept) / len(kept))
    assert stats.max == pytest.approx(max(kept))
    # The drift baseline counts them as missing too.
    from kfp_ct.components.common import registry

    with open(os.path.join(out["statistics_dir"], registry.DRIFT_REFERENCE)) as fh:
        reference = json.load(fh)["columns"]["body_mass_g"]["reference"]
    assert reference["counts"][0] == 5 and sum(reference["counts"]) == 344
    with open(out["report_path"]) as fh:
        html = fh.read()
    assert validate.NON_FINITE_KIND in html and "2 anomalies" in html


def test_strict_mode_fails_on_non_finite_numbers_and_writes_nothing(tmp_path):
    csv_path, _ = _odd_penguins(tmp_path)
    out = _outputs(tmp_path / "out")
    with pytest.raises(validate.AnomaliesFound) as info:
        validate.run_validate(csv_path, PENGUINS_SPEC, strict=True, **out)
    message = str(info.value)
    assert "2 anomalies" in message
    assert f"body_mass_g: {validate.NON_FINITE_KIND}: 3 value(s)" in message
    assert "bill_depth_mm" in message and f"{csv_path} line 7" in message
    _assert_nothing_written(out)


def test_csv_and_parquet_of_the_same_table_give_identical_statistics(tmp_path):
    csv_path, parquet_path = _odd_penguins(tmp_path)
    results, stats = {}, {}
    for name, path in (("csv", csv_path), ("parquet", parquet_path)):
        out = _outputs(tmp_path / name)
        results[name] = validate.run_validate(path, PENGUINS_SPEC, **out)
        stats[name] = _load_stats(out).datasets[0]
    assert stats["csv"] == stats["parquet"]
    by_name = {_feature_name(f): f for f in stats["csv"].features}
    assert by_name["island"].string_stats.common_stats.num_missing == 2  # "nan", "NaN"
    assert by_name["sex"].string_stats.common_stats.num_missing == 12  # 11 NA + "None"
    assert "nan" not in {v.value for v in by_name["island"].string_stats.top_values}

    # The same anomalies; only where the first one is differs: CSV line 7 is Parquet row 6.
    def where_left_out(result):
        return [(a["feature"], a["kind"], a["detail"].split("first:")[0])
                for a in result.anomalies]

    assert where_left_out(results["csv"]) == where_left_out(results["parquet"])
    assert len(results["csv"].anomalies) == 2
    mass = {a["feature"]: a["detail"] for a in results["parquet"].anomalies}["body_mass_g"]
    assert f"first: {parquet_path} row 6 (value inf)" in mass


# ------------------------------------------------------------------------ labels

def _regression_spec(label="body_mass_g"):
    with open(PENGUINS_SPEC) as fh:
        spec = json.load(fh)
    spec.update(label=label, task="regression",
                numeric=[c for c in spec["numeric"] if c != label],
                categorical=spec["categorical"] + ["species"])
    return json.dumps(spec)


def _write_penguins(path, *changes):
    header, rows = _penguin_table_rows()
    for n, row in enumerate(rows, 1):
        for change in changes:
            change(n, dict(zip(header, row)), row, header)
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([header] + rows)
    return str(path)


def _set(column, value, when=lambda n, r: True):
    def change(n, record, row, header):
        if when(n, record):
            row[header.index(column)] = value
    return change


@pytest.mark.parametrize("change,problem,words", [
    (_set("species", "Adelie"), PENGUINS_SPEC,
     [r"classification label 'species' has a single class, 'Adelie', in all 344 rows"]),
    (_set("species", "", lambda n, r: n in (3, 70)), PENGUINS_SPEC,
     [r"2 row\(s\) have an empty label 'species'", r"line 4"]),
    (_set("body_mass_g", "Infinity", lambda n, r: n == 9), "regression",
     [r"regression label 'body_mass_g' is not a finite number in 1 row\(s\)", r"line 10"]),
    (_set("body_mass_g", "nan", lambda n, r: n == 9), "regression",
     [r"regression label 'body_mass_g' is not a finite number"]),
    (_set("body_mass_g", "heavy", lambda n, r: n == 9), "regression",
     [r"the label 'body_mass_g' is declared numeric but holds the value 'heavy'"]),
], ids=["single_class", "empty_class_label", "regression_inf", "regression_nan",
        "regression_text"])
def test_label_that_cannot_be_learned_is_refused_before_anything_is_written(
        tmp_path, change, problem, words):
    changes = [change]
    if problem == "regression":  # the two penguins without a mass would have no label
        changes.insert(0, _set("body_mass_g", "4000", lambda n, r: r["body_mass_g"] == "NA"))
        problem = _regression_spec()
    path = _write_penguins(tmp_path / "labels.csv", *changes)
    out = _outputs(tmp_path / "out")
    with pytest.raises(LabelError) as info:
        validate.run_validate(path, problem, **out)
    for pattern in words:
        assert re.search(pattern, str(info.value)), (pattern, str(info.value))
    assert path in str(info.value)
    _assert_nothing_written(out)


def test_class_only_in_the_eval_split_is_a_note_not_an_anomaly(tmp_path):
    from label_data import with_class_in_split

    path, n = with_class_in_split(tmp_path / "emperor.csv", "Emperor", "eval")
    out = _outputs(tmp_path / "out")
    result = validate.run_validate(path, PENGUINS_SPEC, strict=True, **out)  # strict passes
    assert result.anomalies == []
    assert result.notes == [
        f"label 'species': class 'Emperor' appears only in the eval split: {n} row(s); the "
        "label vocabulary comes from the training split, so evaluation counts them as wrong"]
    assert result.summary()["notes"] == result.notes
    with open(out["report_path"]) as fh:
        assert "appears only in the eval split" in fh.read()


def test_single_class_in_the_training_split_is_refused_at_validation(tmp_path):
    from label_data import penguin_rows, with_class_in_split

    header, rows = penguin_rows()
    path, n = with_class_in_split(tmp_path / "gentoo.csv", "Gentoo", "eval", rows=5, every=3,
                                  base=(header, [r for r in rows if r[0] == "Adelie"]))
    out = _outputs(tmp_path / "out")
    with pytest.raises(LabelError, match=rf"training split of the classification label "
                                         rf"'species' holds a single class, 'Adelie'.*"
                                         rf"'Gentoo': {n}"):
        validate.run_validate(path, PENGUINS_SPEC, **out)
    _assert_nothing_written(out)


# ------------------------------------------- what the training run is told before training


def _small_penguins(tmp_path):
    """Every third penguin with a body mass: 114 rows of the three species."""
    from label_data import penguin_rows, write_csv

    header, rows = penguin_rows()
    mass = header.index("body_mass_g")
    return write_csv(tmp_path / "small.csv", header,
                     [r for r in rows[::3] if r[mass] not in ("", "NA")])


@pytest.mark.parametrize("thresholds,need,which", [
    ("", 50, "the gate's default min_examples for classification"),
    ('{"min_examples": 40}', 40, "the thresholds' min_examples"),
])
def test_an_eval_split_under_min_examples_is_refused_before_training(tmp_path, thresholds,
                                                                     need, which):
    """Before: 114 rows gave an eval split of about 24; transform and training ran, and
    only the gate said "too few to decide on" (not blessed, exit 4)."""
    from label_data import eval_flags

    path = _small_penguins(tmp_path)
    held_out = int(eval_flags(path).sum())
    assert held_out < 40
    out = _outputs(tmp_path / "out")
    with pytest.raises(validate.EvalSplitTooSmall) as info:
        validate.run_validate(path, PENGUINS_SPEC, training_thresholds=thresholds, **out)
    assert str(info.value) == (
        f"{path}: the eval split would hold {held_out} of 114 rows (eval_percent 20), fewer "
        f"than {which}, {need}: no model trained on it could be blessed; give more data, "
        f"a larger eval_percent in the problem spec, or a lower min_examples in the "
        f"thresholds")
    _assert_nothing_written(out)


def test_enough_eval_rows_or_no_minimum_pass(tmp_path):
    path = _small_penguins(tmp_path)
    for thresholds in ('{"min_examples": 5}', "{}"):  # {}: no checks at all
        validate.run_validate(path, PENGUINS_SPEC, training_thresholds=thresholds,
                              **_outputs(tmp_path / "out"))
    validate.run_validate(path, PENGUINS_SPEC, **_outputs(tmp_path / "out"))  # not a run's


def test_the_regression_eval_split_is_counted_the_same(tmp_path):
    from label_data import eval_flags

    path = _small_penguins(tmp_path)
    spec = json.dumps({"label": "body_mass_g", "task": "regression",
                       "numeric": ["bill_length_mm"], "categorical": ["island"]})
    with pytest.raises(validate.EvalSplitTooSmall) as info:
        validate.run_validate(path, spec, training_thresholds="", **_outputs(tmp_path / "o"))
    from kfp_ct.components.common.problem import load_problem

    held_out = int(eval_flags(path, load_problem(spec)).sum())  # the spec's columns hashed
    assert f"would hold {held_out} of 114 rows" in str(info.value)
    assert "default min_examples for regression, 50" in str(info.value)


def test_a_class_only_in_the_eval_split_is_a_console_warning(tmp_path, capsys):
    """Before: only a note in the report and the artifact metadata; run-local's console
    (which shows `[kfp-ct] warning:` lines) said nothing."""
    from label_data import with_class_in_split

    path, n = with_class_in_split(tmp_path / "emperor.csv", "Emperor", "eval")
    result = validate.run_validate(path, PENGUINS_SPEC, **_outputs(tmp_path / "out"))
    (line,) = [x for x in capsys.readouterr().out.splitlines() if "warning" in x]
    assert line == (f"[kfp-ct] warning: {path}: label 'species': class 'Emperor' appears "
                    f"only in the eval split: {n} row(s); the label vocabulary comes from "
                    f"the training split, so evaluation counts them as wrong")
    assert result.notes == [line.split(f"{path}: ", 1)[1]]


def test_the_beam_path_counts_the_same_eval_rows(tmp_path):
    spec = validate.load_problem(PENGUINS_SPEC)
    path = _small_penguins(tmp_path)
    _, local, _ = validate.compute_statistics(path, spec, count_eval_rows=True)
    _, beam, _ = validate.compute_statistics(
        path, spec, count_eval_rows=True,
        beam_args=["--runner=DirectRunner", "--direct_running_mode=in_memory", "--no_auth"])
    assert beam.eval_rows == local.eval_rows > 0
