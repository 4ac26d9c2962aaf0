"""components.validate.logic.run_validate on the bundled penguins and on bad input."""

import json
import os

import pytest

from components.common import data
from components.common.errors import InputDataError, SchemaError
from components.validate import logic as validate

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
    import csv

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

    from components.validate.logic import run_validate

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
    assert counts["stream"] == counts["beam"] == (344, 344, counts["stream"][2], 3)
