"""The whole training pipeline under kfp.local on penguins: three runs into one destination.

1. first run: no production model; change thresholds skipped; blessed and pushed as 1.
2. second run: finds version 1 as baseline, decides by the change threshold, pushes 2.
   The first run starts its tasks cold, the second warm (pipelines/entrypoints/warm.py): the same
   metrics, gate decision and served predictions.
3. third run, as a user runs it (``kfp-ct run-local`` in its own process), trains a
   worse model (3 steps) under change-only thresholds: the better production model makes
   the gate reject it, nothing is pushed, and the command says so (exit 4) in a console a
   person can read, leaving nothing in the system temp directory.
"""

import json
import os
import subprocess
import sys

import pytest

from kfp_ct.components.common import exitcodes, registry
from kfp_ct.pipelines.entrypoints.local import LocalRun, run_local, training_report
from kfp_ct.pipelines.training import training_pipeline

pytestmark = pytest.mark.long  # three pipeline runs (about 3 min): `make test-long`

# The data parameter becomes a Dataset first (dsl.importer), then the six tasks.
TASKS = ["importer", "validate", "transform", "train", "evaluate", "gate", "push"]
# The failed-run notice (pipelines/notice.py): kfp.local runs the exit task after a body
# that succeeded too; it finds nothing to announce.
EXIT_TASK = "announce-failure"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHANGE_ONLY = json.dumps({"change": {"accuracy": {"absolute": -0.01}}})


def run_cli_process(dest: str, workdir: str, tmp: str, *extra: str):
    """``kfp-ct run-local`` as a process: (exit code, stdout, stderr, LocalRun-like)."""
    summary = os.path.join(workdir, "summary.json")
    proc = subprocess.run(
        [sys.executable, "-m", "kfp_ct.pipelines.entrypoints.cli", "run-local", "--destination",
         dest, "--workdir", workdir, "--summary-json", summary, *extra],
        cwd=ROOT, env=dict(os.environ, TMPDIR=tmp), capture_output=True, text=True,
        timeout=600)
    outcome = json.load(open(summary))
    run = LocalRun(run_dir=outcome["run_dir"], total_s=outcome["total_s"], tasks=[],
                   ok=outcome["ok"], error=outcome["error"], log_path=outcome["log"])
    return proc.returncode, proc.stdout, proc.stderr, run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    dest = str(root / "serving" / "penguins")
    workdir = str(root / "runs")
    # The first run starts every task cold (a new Python each), the second warm (forks of
    # one that imported the libraries once): same data and seed, so the same results.
    first = run_local(training_pipeline, {"push_destination": dest}, workdir=workdir,
                      warm=False)
    second = run_local(training_pipeline, {"push_destination": dest}, workdir=workdir,
                       warm=True)
    tmp = root / "systmp"
    tmp.mkdir()
    third = run_cli_process(dest, workdir, str(tmp), "--train-steps", "3",
                            "--thresholds", CHANGE_ONLY)
    return dest, first, second, third + (str(tmp),)


def test_every_task_of_every_run_succeeds(runs):
    _, first, second, (code, _, _, third, _) = runs
    assert third.ok, third.error
    for run in (first, second):
        assert run.ok, run.error
        assert [t.name for t in run.tasks] == TASKS + [EXIT_TASK]
        assert {t.status for t in run.tasks} == {"SUCCESS"}
        notice = run.notice()
        assert notice["announced"] is False and notice["delivery"] is None, notice
        assert run.exit_tasks == []  # kfp.local ran it, not kfp-ct's runner


def test_first_run_has_no_baseline_and_is_pushed_as_version_1(runs):
    dest, first, _, _ = runs
    evaluation = first.read_json("evaluate", "evaluation", "evaluation.json")
    assert evaluation["baseline"]["state"] == "none"
    assert evaluation["candidate"]["overall"]["accuracy"] >= 0.9
    # The gate's list of what a classification evaluation has is what evaluate emits.
    from kfp_ct.components.common.metrics import TASK_METRICS

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


def test_a_better_production_model_makes_the_gate_reject_a_worse_candidate(runs):
    dest, _, second, (code, out, err, third, tmp) = runs
    evaluation = third.read_json("evaluate", "evaluation", "evaluation.json")
    assert evaluation["baseline"]["state"] == "ok" and evaluation["baseline"]["version"] == 2
    candidate = evaluation["candidate"]["overall"]["accuracy"]
    production = evaluation["baseline"]["overall"]["accuracy"]
    assert candidate < production - 0.01  # 3 training steps: a worse model
    blessing = third.read_json("gate", "blessing", "blessing.json")
    assert blessing["blessed"] is False
    [change] = [c for c in blessing["checks"] if c["kind"] == "change"]
    assert change["verdict"] == "fail" and "regression" in change["reason"]
    pushed = third.read_json("push", "pushed", "push.json")
    assert pushed["pushed"] is False and "accuracy" in pushed["reason"]
    assert os.path.exists(third.artifact("push", "pushed", "NOT_PUSHED"))
    assert [v.version for v in registry.list_versions(dest)] == [1, 2]
    assert code == exitcodes.NOT_PUSHED, (out, err)
    assert "NOT BLESSED" in out and "Not pushed" in out


def test_the_console_shows_one_line_per_task_then_the_report(runs):
    """About 1,100 lines before; now one line per task and the report, the rest in the
    run folder's log; no temporary folder left in the system temp directory."""
    _, _, _, (code, out, err, third, tmp) = runs
    lines = out.splitlines()
    assert len(lines) < 40, out
    for task in TASKS:
        assert sum(line.startswith(f"  {task} ") for line in lines) == 1, out
    assert "RuntimeWarning" not in err and "Traceback" not in out + err
    assert err.strip() == "", err
    log = open(third.log_path).read()
    assert "Executing task" in log and "parameterValues" in log  # the executor's input
    assert len(log.splitlines()) > 300  # everything the tasks printed is kept
    assert os.path.getsize(third.task_log("train")) > 0
    assert os.listdir(tmp) == []


def test_warm_task_starts_give_the_same_metrics_decision_and_model_as_cold(runs):
    import numpy as np
    import tensorflow as tf

    dest, first, second, _ = runs
    assert os.path.exists(os.path.join(os.path.dirname(second.log_path), "logs", "warm.log"))
    assert not os.path.exists(os.path.join(os.path.dirname(first.log_path), "logs",
                                           "warm.log"))
    evaluation = second.read_json("evaluate", "evaluation", "evaluation.json")
    assert evaluation["candidate"]["overall"] == evaluation["baseline"]["overall"]
    cold_gate = first.read_json("gate", "blessing", "blessing.json")
    warm_gate = second.read_json("gate", "blessing", "blessing.json")
    assert cold_gate["blessed"] == warm_gate["blessed"] is True
    assert [c["verdict"] for c in cold_gate["checks"] if c["kind"] != "change"] == \
        [c["verdict"] for c in warm_gate["checks"] if c["kind"] != "change"]
    rows = [r.numpy() for r in tf.data.TFRecordDataset(
        second.artifact("transform", "raw_eval", "eval_raw.tfrecord"))]
    scores = [tf.saved_model.load(os.path.join(dest, v)).signatures["serving_default"](
        examples=tf.constant(rows))["scores"].numpy() for v in ("1", "2")]
    np.testing.assert_array_equal(scores[0], scores[1])


def test_pushed_version_serves_raw_examples_and_keeps_its_audit_files(runs):
    import tensorflow as tf

    from kfp_ct.components.push.canary import parse_prediction_log

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
