"""Training on real penguins data: accuracy, serving signature, reproducibility, resume."""

import json
import os
import signal
import subprocess
import sys

import pytest

from components.common import tfenv  # noqa: F401
from components.common.errors import KfpCtError, ProblemSpecError
from components.train.strategy import Plan, plan_strategy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBLEM = os.path.join(ROOT, "pipelines", "penguins", "problem.json")


@pytest.fixture(scope="module")
def transformed(tmp_path_factory):
    from components.transform.logic import run_transform

    root = tmp_path_factory.mktemp("transformed")
    run_transform("bundled:penguins", PROBLEM, str(root / "graph"), str(root / "examples"),
                  str(root / "raw"))
    return root


@pytest.fixture(scope="module")
def trained(transformed, tmp_path_factory):
    from components.train.logic import run_train

    model_dir = str(tmp_path_factory.mktemp("model") / "model")
    result = run_train(str(transformed / "graph"), str(transformed / "examples"), PROBLEM,
                       model_dir, train_steps=300)
    return model_dir, result


def _raw_eval_records(transformed):
    import tensorflow as tf

    path = str(transformed / "raw" / "eval_raw.tfrecord")
    return [r.numpy() for r in tf.data.TFRecordDataset(path)]


def test_penguins_model_is_accurate_on_the_eval_split(trained):
    _, result = trained
    assert result.metrics["eval_accuracy"] >= 0.9
    assert result.metrics["strategy"] == "default x1 (float32)"
    assert result.metrics["examples_per_second"] > 0


def test_serving_signature_takes_raw_serialized_examples(trained, transformed):
    import numpy as np
    import tensorflow as tf

    model_dir, result = trained
    records = _raw_eval_records(transformed)
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    out = serve(examples=tf.constant(records))
    scores, classes = out["scores"].numpy(), out["classes"].numpy()
    assert scores.shape == (len(records), 3)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-4)
    assert sorted(c.decode() for c in classes[0]) == ["Adelie", "Chinstrap", "Gentoo"]
    # The label is not needed at serving, and the same rows give the same accuracy.
    labels = [tf.train.Example.FromString(r).features.feature["species"].bytes_list.value[0]
              for r in records]
    predicted = classes[np.arange(len(records)), scores.argmax(axis=1)]
    accuracy = float(np.mean(predicted == np.array(labels)))
    assert accuracy == pytest.approx(result.metrics["eval_accuracy"], abs=1e-6)


def test_cpu_training_with_a_seed_is_reproducible(transformed, tmp_path):
    from components.train.logic import run_train

    runs = [run_train(str(transformed / "graph"), str(transformed / "examples"), PROBLEM,
                      str(tmp_path / f"m{i}"), train_steps=40, steps_per_epoch=20, seed=7)
            for i in range(2)]
    assert runs[0].metrics["eval_loss"] == runs[1].metrics["eval_loss"]


def test_user_build_model_that_raises_is_reported(transformed, tmp_path):
    from components.train.logic import run_train

    module = tmp_path / "user_module.py"
    module.write_text("from components.transform.preprocessing import build_preprocessing_fn\n"
                      "def preprocessing_fn(inputs):\n    raise AssertionError('unused')\n"
                      "def build_model(spec, tft_output):\n"
                      "    raise RuntimeError('no GPU budget today')\n")
    spec = json.load(open(PROBLEM))
    spec["module_file"] = str(module)
    with pytest.raises(ProblemSpecError, match=r"build_model of .*user_module.py raised "
                                               r"RuntimeError: no GPU budget today"):
        run_train(str(transformed / "graph"), str(transformed / "examples"), json.dumps(spec),
                  str(tmp_path / "model"), train_steps=5)
    assert not os.path.exists(tmp_path / "model")


_TRAIN_SCRIPT = """
import sys
from components.train.logic import run_train
r = run_train(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], train_steps=400,
              steps_per_epoch=20, checkpoint_dir=sys.argv[5])
print("RESULT", r.metrics["resumed_from_epoch"], flush=True)
"""


def test_killed_training_resumes_from_its_last_epoch(transformed, tmp_path):
    from components.train.logic import run_train

    args = [str(transformed / "graph"), str(transformed / "examples"), PROBLEM,
            str(tmp_path / "model"), str(tmp_path / "backup")]
    proc = subprocess.Popen([sys.executable, "-c", _TRAIN_SCRIPT, *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    epochs_seen = 0
    for line in proc.stdout:
        if line.startswith("[train] epoch"):
            epochs_seen += 1
            if epochs_seen == 3:
                proc.send_signal(signal.SIGKILL)  # no clean-up, like a preempted node
                break
    proc.wait(timeout=60)
    assert epochs_seen == 3, "training finished before it could be killed"
    assert not os.path.exists(tmp_path / "model" / "saved_model.pb")
    result = run_train(*args[:4], train_steps=400, steps_per_epoch=20, checkpoint_dir=args[4])
    assert result.metrics["resumed_from_epoch"] >= 3
    assert result.metrics["steps_run_this_attempt"] <= 400 - 3 * 20
    assert os.path.exists(tmp_path / "model" / "saved_model.pb")


@pytest.mark.parametrize("accelerator,gpus,cc,tpu,expected", [
    ("auto", 0, None, None, Plan("default", "float32", 1)),
    ("cpu", 2, (8, 0), None, Plan("default", "float32", 1)),
    ("auto", 1, (8, 0), None, Plan("one_gpu", "mixed_float16", 1)),
    ("auto", 1, (6, 1), None, Plan("one_gpu", "float32", 1)),       # Pascal: no fast fp16
    ("gpu", 4, (9, 0), None, Plan("mirrored", "mixed_float16", 4)),
    ("auto", 2, (7, 0), "local", Plan("tpu", "mixed_bfloat16", 0)),  # a TPU wins on auto
    ("tpu", 0, None, "my-tpu", Plan("tpu", "mixed_bfloat16", 0)),
])
def test_strategy_follows_the_hardware(accelerator, gpus, cc, tpu, expected):
    assert plan_strategy(accelerator, gpus, cc, tpu) == expected


@pytest.mark.parametrize("accelerator,gpus,tpu,message", [
    ("gpu", 0, None, "no GPU"),
    ("tpu", 1, None, "no TPU is addressed"),
    ("quantum", 0, None, "accelerator must be one of"),
])
def test_unavailable_accelerator_is_a_clear_error(accelerator, gpus, tpu, message):
    with pytest.raises(KfpCtError, match=message):
        plan_strategy(accelerator, gpus, None, tpu)
