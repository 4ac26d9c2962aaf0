"""The data half (validate -> transform) under kfp.local on penguins: real tasks, real files."""

import json
import os

import pytest

from kfp_ct.pipelines.entrypoints.local import run_local


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from kfp_ct.pipelines.data import data_pipeline

    return run_local(data_pipeline, {}, workdir=str(tmp_path_factory.mktemp("runs")))


def test_data_pipeline_runs_both_tasks_in_order(run):
    assert run.ok, run.error
    assert [t.name for t in run.tasks] == ["importer", "validate", "transform"]
    assert all(t.status == "SUCCESS" for t in run.tasks)
    # Each task reported the time of its own work, so its fixed cost is known (the
    # importer runs none: kfp.local records the data's URI as a Dataset in-process).
    assert all(t.logic_s is not None and 0 < t.logic_s < t.wall_s for t in run.tasks[1:])
    assert run.tasks[0].logic_s is None


def test_validate_artifacts_hold_statistics_schema_and_report(run):
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

    stats = statistics_pb2.DatasetFeatureStatisticsList()
    with open(run.artifact("validate", "statistics", "FeatureStats.pb"), "rb") as fh:
        stats.ParseFromString(fh.read())
    assert stats.datasets[0].num_examples == 344
    schema = schema_pb2.Schema()
    with open(run.artifact("validate", "schema", "schema.pbtxt")) as fh:
        text_format.Parse(fh.read(), schema)
    assert {f.name for f in schema.feature} >= {"species", "island", "bill_length_mm", "sex"}
    assert run.read_json("validate", "anomalies", "anomalies.json") == []
    with open(run.artifact("validate", "report")) as fh:
        report = fh.read()
    assert "flipper_length_mm" in report and "No anomalies" in report


def test_transform_artifacts_split_all_rows_and_load_as_a_transform_graph(run):
    import tensorflow_transform as tft

    split = run.read_json("transform", "transformed_examples", "split.json")
    assert split["train_rows"] + split["eval_rows"] == 344
    assert 0.1 < split["eval_rows"] / 344 < 0.3
    output = tft.TFTransformOutput(run.artifact("transform", "transform_graph"))
    assert sorted(output.vocabulary_by_name("label_vocabulary")) == [
        b"Adelie", b"Chinstrap", b"Gentoo"]
    assert os.path.getsize(run.artifact("transform", "raw_eval", "eval_raw.tfrecord")) > 0
    executor_output = json.load(open(os.path.join(run.run_dir, "transform",
                                                  "executor_output.json")))
    assert "artifacts" in executor_output
