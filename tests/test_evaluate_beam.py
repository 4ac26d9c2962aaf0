"""Evaluate's Beam path: TFMA on a Beam runner, rows and output in a bucket.

The DirectRunner in multi-processing mode (two worker processes) is the one runner that
runs here: it reads the raw eval rows from gs:// with Beam's own TFRecord source and
writes TFMA's output (and the rows rewritten with label ids, under --temp_location)
through Beam's GCS filesystem, which uses google-cloud-storage and so honours
STORAGE_EMULATOR_HOST (the gcs_emulator fixture). The models stay on local disk:
TensorFlow's own GCS filesystem, which loads a SavedModel from gs://, does not know the
emulator. Dataflow / Flink / Spark cannot run here: their documented beam_args are
checked by the pipeline options they produce.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import csv  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402

import pytest  # noqa: E402

from kfp_ct.components.common import registry, storage  # noqa: E402
from test_evaluate_inprocess import PROBLEM, _rule_classifier, _write, assert_same  # noqa: E402

MULTI_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                 "--direct_num_workers=2"]


def _penguin_examples():
    """Every bundled penguins row as a raw tf.Example ("NA": a feature with no value)."""
    import tensorflow as tf

    from kfp_ct.components.common import data

    with open(data.bundled_penguins_path(), newline="") as fh:
        rows = list(csv.DictReader(fh))
    examples = []
    for row in rows:
        example = tf.train.Example()
        for name in ("species", "island", "sex"):
            feature = example.features.feature[name].bytes_list
            if row[name] != "NA":
                feature.value.append(row[name].encode())
        for name in ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"):
            feature = example.features.feature[name].float_list
            if row[name] != "NA":
                feature.value.append(float(row[name]))
        examples.append(example)
    return examples


@pytest.mark.long
def test_multi_process_beam_with_rows_and_output_in_a_bucket_equals_in_process(
        gcs_emulator, gcs_upload_order, tmp_path):
    bucket = gcs_emulator.new_bucket()
    rows = _write(tmp_path / "raw", _penguin_examples())
    storage.upload_tree(rows, f"{bucket}/raw", last=())
    # Both models lack Chinstrap (an eval class): TFMA gets rows rewritten with label ids.
    candidate = _rule_classifier(tmp_path / "candidate", ["Adelie", "Gentoo"], 206.5)
    dest = str(tmp_path / "models")
    registry.publish(dest, _rule_classifier(tmp_path / "rule", ["Gentoo", "Adelie"], 200.5),
                     {"metrics": {}})

    from kfp_ct.components.evaluate.logic import run_evaluate

    local = run_evaluate(candidate, rows, PROBLEM, dest, str(tmp_path / "inprocess"),
                         str(tmp_path / "inprocess.html"), slices=["island", "sex"])
    beam_args = MULTI_PROCESS + [f"--temp_location={bucket}/beam-tmp"]
    beam = run_evaluate(candidate, f"{bucket}/raw", PROBLEM, dest, f"{bucket}/evaluation",
                        f"{bucket}/report.html", slices=["island", "sex"],
                        beam_args=beam_args)

    doc = json.loads(storage.read_text(f"{bucket}/evaluation/evaluation.json"))
    assert_same(doc, json.loads((tmp_path / "inprocess" / "evaluation.json").read_text()))
    assert beam.to_dict() == doc and local.summary() == beam.summary()
    assert storage.read_text(f"{bucket}/report.html") == \
        (tmp_path / "inprocess.html").read_text()
    # The scenario is the one meant: an eval class neither model has, the baseline used.
    assert doc["confusion_matrix"]["unseen_classes"].keys() == {"Chinstrap"}
    assert doc["baseline"]["state"] == "ok" and doc["candidate"]["slices"]
    # The rows with label ids went under --temp_location for the workers, and were
    # removed after the run; TFMA wrote its output in the bucket.
    assert [n for n in gcs_upload_order if n.startswith("beam-tmp/kfp-ct-evaluate-")
            and n.endswith("/eval_rows_with_label_ids.tfrecord")], gcs_upload_order
    tfma_files = storage.list_files(f"{bucket}/evaluation/tfma")
    assert any(name.startswith("metrics") for name in tfma_files), tfma_files
    assert any(name.startswith("plots") for name in tfma_files), tfma_files
    assert not storage.exists(f"{bucket}/beam-tmp") or not [
        f for f in storage.list_files(f"{bucket}/beam-tmp") if "kfp-ct-evaluate" in f]


@pytest.mark.parametrize("runner,expected", [
    ("dataflow", {"runner": "DataflowRunner", "project": "my-project",
                  "region": "europe-west4", "temp_location": "gs://my-bucket/beam-tmp",
                  "sdk_container_image": "IMAGE"}),
    ("flink", {"runner": "FlinkRunner", "flink_master": "flink-jobmanager.flink:8081",
               "environment_type": "EXTERNAL", "environment_config": "localhost:50000",
               "temp_location": "gs://my-bucket/beam-tmp"}),
    ("spark", {"runner": "SparkRunner",
               "spark_master_url": "spark://spark-master.spark:7077",
               "environment_type": "DOCKER", "environment_config": "IMAGE",
               "temp_location": "gs://my-bucket/beam-tmp"}),
    ("direct", {"runner": "DirectRunner", "direct_running_mode": "multi_processing",
                "direct_num_workers": 2}),
])
def test_documented_beam_args_give_the_runner_these_options(runner, expected):
    from kfp_ct.components.common.images import CPU_IMAGE
    from kfp_ct.components.common.beam_io import beam_args_examples
    from kfp_ct.components.evaluate.logic import beam_options

    options = beam_options(beam_args_examples()[runner])
    wanted = {k: (CPU_IMAGE if v == "IMAGE" else v) for k, v in expected.items()}
    assert {k: options.get(k) for k in wanted} == wanted
    # The other runners' settings are left at Beam's defaults (none typed for this one).
    defaults = beam_options([])
    others = {"project", "region", "temp_location", "flink_master", "spark_master_url",
              "environment_type", "environment_config", "sdk_container_image"} - set(wanted)
    assert {k: options.get(k) for k in others} == {k: defaults.get(k) for k in others}


def test_kfp_gcs_mount_paths_are_given_to_beam_workers_as_gs_uris():
    from kfp_ct.components.evaluate.logic import beam_location

    assert beam_location("/gcs/bucket/run/model") == "gs://bucket/run/model"
    assert beam_location("gs://bucket/x") == "gs://bucket/x"
    assert beam_location("/tmp/model") == "/tmp/model"
