"""The whole training pipeline under kfp.local on penguins: three runs into one destination.

1. first run: no production model; change thresholds skipped; blessed and pushed as 1.
2. second run: finds version 1 as baseline, decides by the change threshold, pushes 2.
3. third run with an unreachable threshold: not blessed, recorded as not pushed.
"""

import json
import os

import pytest

from components.common import registry
from pipelines.local import run_local, training_report
from pipelines.training import training_pipeline

TASKS = ["validate", "transform", "train", "evaluate", "gate", "push"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    dest = str(root / "serving" / "penguins")
    workdir = str(root / "runs")
    first = run_local(training_pipeline, {"push_destination": dest}, workdir=workdir)
    second = run_local(training_pipeline, {"push_destination": dest}, workdir=workdir)
    strict = json.dumps({"value": {"accuracy": {"min": 1.01}}})
    third = run_local(training_pipeline, {"push_destination": dest, "thresholds": strict},
                      workdir=workdir)
    return dest, first, second, third


def test_every_task_of_every_run_succeeds(runs):
    _, *all_runs = runs
    for run in all_runs:
        assert run.ok, run.error
        assert [t.name for t in run.tasks] == TASKS
        assert {t.status for t in run.tasks} == {"SUCCESS"}


def test_first_run_has_no_baseline_and_is_pushed_as_version_1(runs):
    dest, first, _, _ = runs
    evaluation = first.read_json("evaluate", "evaluation", "evaluation.json")
    assert evaluation["baseline"]["state"] == "none"
    assert evaluation["candidate"]["overall"]["accuracy"] >= 0.9
    # The gate's list of what a classification evaluation has is what evaluate emits.
    from components.common.metrics import TASK_METRICS

    assert set(evaluation["candidate"]["overall"]) == set(TASK_METRICS["classification"])
    blessing = first.read_json("gate", "blessing", "blessing.json")
    assert blessing["blessed"] is True
    change = [c for c in blessing["checks"] if c["kind"] == "change"]
    assert change and all(c["verdict"] == "skipped" for c in change)
    pushed = first.read_json("push", "pushed", "push.json")
    assert pushed["pushed"] is True and pushed["version"] == 1
    assert pushed["path"] == os.path.join(dest, "1")


def test_second_run_is_compared_against_the_first(runs):
    _, _, second, _ = runs
    evaluation = second.read_json("evaluate", "evaluation", "evaluation.json")
    assert evaluation["baseline"]["state"] == "ok"
    assert evaluation["baseline"]["version"] == 1
    blessing = second.read_json("gate", "blessing", "blessing.json")
    change = [c for c in blessing["checks"] if c["kind"] == "change"]
    assert change and all(c["verdict"] == "pass" for c in change)
    assert change[0]["baseline"] == pytest.approx(evaluation["baseline"]["overall"]["accuracy"])
    assert second.read_json("push", "pushed", "push.json")["version"] == 2


def test_unreachable_threshold_is_not_blessed_and_recorded_as_not_pushed(runs):
    dest, _, _, third = runs
    blessing = third.read_json("gate", "blessing", "blessing.json")
    assert blessing["blessed"] is False
    pushed = third.read_json("push", "pushed", "push.json")
    assert pushed["pushed"] is False and "accuracy" in pushed["reason"]
    assert os.path.exists(third.artifact("push", "pushed", "NOT_PUSHED"))
    assert [v.version for v in registry.list_versions(dest)] == [1, 2]
    report = training_report(third)
    assert "NOT BLESSED" in report and "Not pushed" in report


def test_pushed_version_serves_raw_examples_and_keeps_its_audit_files(runs):
    import tensorflow as tf

    from components.push.canary import parse_prediction_log

    dest, first, _, _ = runs
    production = registry.production(dest)
    assert production.version == 2 and production.state == "complete"
    audit = os.path.join(production.path, "kfp_ct")
    for name in ("metadata.json", "statistics.pb", "schema.pbtxt", "problem.json",
                 "evaluation.json", "blessing.json"):
        assert os.path.getsize(os.path.join(audit, name)) > 0, name
    metadata = json.load(open(os.path.join(audit, "metadata.json")))
    assert metadata["metrics"]["accuracy"] >= 0.9
    assert metadata["key_metric"] == "accuracy"  # what `versions` shows
    assert metadata["parent_run"]["run_id"]
    warmup = os.path.join(production.path, "assets.extra", "tf_serving_warmup_requests")
    records = [r.numpy() for r in tf.data.TFRecordDataset(warmup)]
    from tensorflow.core.framework import tensor_pb2  # noqa: F401  (TensorProto)

    log = parse_prediction_log(records[0])
    request = log.predict_log.request
    assert request.model_spec.signature_name == "serving_default"
    examples = tf.make_ndarray(request.inputs["examples"])
    serve = tf.saved_model.load(production.path).signatures["serving_default"]
    out = serve(examples=tf.constant(list(examples)))
    assert out["scores"].shape[0] == len(examples) > 0


def test_report_shows_steps_metrics_decision_and_destination(runs):
    dest, first, _, _ = runs
    report = training_report(first)
    for task in TASKS:
        assert f"  {task}" in report
    assert "accuracy" in report and "BLESSED" in report
    assert f"Pushed: version 1 at {os.path.join(dest, '1')}" in report
