"""A regression problem through the training pipeline with the compiled defaults.

The same pipeline function that is compiled to YAML, with no thresholds and no slices
given: the defaults must fit a regression problem whose spec has no `island` (the
penguins slice) and whose metrics are errors (lower is better). Two runs into one
destination: the first is gated against the no-skill predictor and pushed, the second is
compared with it and pushed as version 2. Slow (two pipeline runs): `make test-long`.
"""

import json
import os

import pytest

from kfp_ct.components.common import registry
from kfp_ct.pipelines.entrypoints.local import run_local
from kfp_ct.pipelines.training import training_pipeline

pytestmark = pytest.mark.long

PROBLEM = json.dumps({
    "label": "body_mass_g", "task": "regression",
    "numeric": ["bill_length_mm", "bill_depth_mm", "flipper_length_mm"],
    "categorical": ["sex", "species"],
})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import pandas as pd

    from kfp_ct.components.common.data import bundled_penguins_path

    root = tmp_path_factory.mktemp("regression")
    data = root / "penguins_mass.csv"
    # A regression label must be a number in every row: the two penguins without any
    # measurement are left out (validate refuses empty labels, naming the rows).
    pd.read_csv(bundled_penguins_path()).dropna(subset=["body_mass_g"]).to_csv(data,
                                                                               index=False)
    dest = str(root / "serving" / "mass")
    arguments = {"push_destination": dest, "data_path": str(data), "problem": PROBLEM}
    first = run_local(training_pipeline, arguments, workdir=str(root / "runs"))
    second = run_local(training_pipeline, arguments, workdir=str(root / "runs"))
    return dest, first, second


def test_the_first_regression_run_is_gated_against_the_no_skill_predictor(runs):
    dest, first, _ = runs
    assert first.ok, first.error
    evaluation = first.read_json("evaluate", "evaluation", "evaluation.json")
    assert evaluation["task"] == "regression" and evaluation["candidate"]["slices"] == {}
    rmse = evaluation["candidate"]["overall"]["rmse"]
    naive = evaluation["naive"]["metrics"]["rmse"]
    assert 0 < rmse < naive  # the model learned something the mean does not know
    blessing = first.read_json("gate", "blessing", "blessing.json")
    assert blessing["blessed"] is True
    kinds = {c["kind"]: c for c in blessing["checks"]}
    assert kinds["value"]["metric"] == "rmse" and kinds["value"]["verdict"] == "pass"
    assert "beats the no-skill predictor" in kinds["value"]["reason"]
    assert kinds["examples"]["verdict"] == "pass"
    assert kinds["change"]["verdict"] == "skipped"
    assert first.read_json("push", "pushed", "push.json")["version"] == 1


def test_the_second_regression_run_is_compared_with_production_and_pushed(runs):
    dest, first, second = runs
    assert second.ok, second.error
    evaluation = second.read_json("evaluate", "evaluation", "evaluation.json")
    assert evaluation["baseline"]["state"] == "ok" and evaluation["baseline"]["version"] == 1
    blessing = second.read_json("gate", "blessing", "blessing.json")
    [change] = [c for c in blessing["checks"] if c["kind"] == "change"]
    assert change["metric"] == "rmse" and change["verdict"] == "pass"
    assert change["threshold"].startswith("lower is better")
    assert second.read_json("push", "pushed", "push.json")["version"] == 2
    production = registry.production(dest)
    assert production.version == 2 and production.state == registry.COMPLETE
    assert "rmse=" in registry.describe(dest)  # versions shows the task's main metric


def test_the_pushed_regression_model_serves_raw_rows_without_the_label(runs):
    import tensorflow as tf

    dest, _, second = runs
    warmup = os.path.join(dest, "2", "assets.extra", "tf_serving_warmup_requests")
    assert os.path.getsize(warmup) > 0
    rows = [r.numpy() for r in tf.data.TFRecordDataset(
        second.artifact("transform", "raw_eval", "eval_raw.tfrecord"))][:5]
    from kfp_ct.components.push.canary import strip_columns

    serve = tf.saved_model.load(os.path.join(dest, "2")).signatures["serving_default"]
    out = serve(examples=tf.constant(strip_columns(rows, ["body_mass_g"])))["outputs"]
    assert out.shape == (5, 1)
    assert all(2000 < float(v) < 7000 for v in out.numpy()[:, 0])  # grams, not z-scores
