"""Training on real penguins data: accuracy, serving signature, reproducibility, resume."""

import glob
import json
import os
import signal
import subprocess
import sys

import pytest

from kfp_ct.components.common import tfenv  # noqa: F401
from kfp_ct.components.common.errors import KfpCtError, ProblemSpecError
from kfp_ct.components.train.strategy import Plan, plan_strategy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBLEM = os.path.join(ROOT, "pipelines", "penguins", "problem.json")


@pytest.fixture(scope="module")
def transformed(penguins_transformed):
    """The folder holding graph/, examples/ and raw/ (conftest.py, made once a session)."""
    return penguins_transformed["root"]


@pytest.fixture(scope="module")
def trained(transformed, tmp_path_factory):
    from kfp_ct.components.train.logic import run_train

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


def test_local_shards_are_read_in_the_order_parallel_reads_give(transformed, tmp_path,
                                                                monkeypatch):
    """Local shards are read without tf.data's parallel interleave (a thread hand-off per
    record is slower than the read); gs:// and /gcs/ paths keep it. Either way the
    batches, and so the trained model, are the same."""
    import tensorflow as tf
    import tensorflow_transform as tft

    from kfp_ct.components.common.problem import load_problem
    from kfp_ct.components.train import logic

    train = glob.glob(str(transformed / "examples" / "train" / "*.tfrecord"))
    records = [r.numpy() for r in tf.data.TFRecordDataset(sorted(train))]
    files = []
    for k in range(3):  # three shards, so the interleave's order matters
        path = str(tmp_path / f"data-{k:05d}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for record in records[k::3]:
                writer.write(record)
        files.append(path)
    with open(PROBLEM) as fh:
        spec = load_problem(fh.read())
    tft_output = tft.TFTransformOutput(str(transformed / "graph"))

    def batches():
        ds = logic.make_dataset(files, spec, tft_output, 16, shuffle=True, seed=3,
                                repeat=False)
        return [(f["bill_length_mm"].numpy().tolist(), label.numpy().tolist())
                for f, label in ds]

    assert not logic._reads_over_network(files[0])
    assert logic._reads_over_network("gs://bucket/examples/train/data-00000.tfrecord")
    assert logic._reads_over_network("/gcs/bucket/examples/train/data-00000.tfrecord")
    sequential = batches()
    monkeypatch.setattr(logic, "_reads_over_network", lambda path: True)
    parallel = batches()
    assert sum(len(labels) for _, labels in sequential) == len(records)
    assert sequential == parallel


def test_cpu_training_with_a_seed_is_reproducible(transformed, tmp_path):
    from kfp_ct.components.train.logic import run_train

    runs = [run_train(str(transformed / "graph"), str(transformed / "examples"), PROBLEM,
                      str(tmp_path / f"m{i}"), train_steps=40, steps_per_epoch=20, seed=7)
            for i in range(2)]
    assert runs[0].metrics["eval_loss"] == runs[1].metrics["eval_loss"]


def test_many_steps_per_execution_train_the_same_model_as_one(transformed, tmp_path,
                                                              monkeypatch):
    """STEPS_PER_EXECUTION runs the same steps in the same order: the same weights, the
    same eval metrics, the same serving outputs as one step per call. Epochs of 35 steps:
    not a multiple of the 20 steps per call here."""
    import numpy as np
    import tensorflow as tf

    from kfp_ct.components.train import logic

    assert logic.STEPS_PER_EXECUTION > 1
    results, outputs = [], []
    records = tf.constant(_raw_eval_records(transformed))
    for steps_per_call in (20, 1):
        monkeypatch.setattr(logic, "STEPS_PER_EXECUTION", steps_per_call)
        model_dir = str(tmp_path / f"m{steps_per_call}")
        results.append(logic.run_train(str(transformed / "graph"), str(transformed / "examples"),
                                       PROBLEM, model_dir, train_steps=70, steps_per_epoch=35,
                                       seed=3))
        serve = tf.saved_model.load(model_dir).signatures["serving_default"]
        outputs.append(serve(examples=records)["scores"].numpy())
    metrics = [{k: v for k, v in r.metrics.items() if k.startswith("eval_")} for r in results]
    assert metrics[0] == metrics[1]
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_user_build_model_that_raises_is_reported(transformed, tmp_path):
    from kfp_ct.components.train.logic import run_train

    module = tmp_path / "user_module.py"
    module.write_text("from kfp_ct.components.transform.preprocessing import build_preprocessing_fn\n"
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
from kfp_ct.components.train.logic import run_train
r = run_train(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], train_steps=400,
              steps_per_epoch=20, checkpoint_dir=sys.argv[5])
print("RESULT", r.metrics["resumed_from_epoch"], flush=True)
"""


def test_killed_training_resumes_from_its_last_epoch(transformed, tmp_path):
    from kfp_ct.components.train.logic import run_train

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


_POD_SCRIPT = """
import sys
from kfp_ct.components.train.logic import run_train
r = run_train(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], train_steps=120,
              steps_per_epoch=20, checkpoint_root=sys.argv[5], run_id="run-42")
print("RESULT", r.metrics["resumed_from_epoch"], r.metrics["steps_run_this_attempt"], flush=True)
"""


def _pod(tmp_path, name: str) -> dict:
    """A fresh 'pod': its own empty scratch disk (TMPDIR), the test's environment else."""
    disk = tmp_path / name
    disk.mkdir()
    return {**os.environ, "TMPDIR": str(disk)}


def test_train_retried_in_a_new_pod_resumes_from_its_gcs_checkpoint(transformed, tmp_path,
                                                                    gcs_emulator):
    """A train task killed after epoch 3, retried in a new pod (empty disk, new model
    path), resumes from the checkpoint it kept under gs://; success removes it."""
    from kfp_ct.components.common import storage
    from kfp_ct.components.train.checkpoints import LATEST

    root = f"{gcs_emulator.new_bucket()}/pipeline-root/checkpoints"
    durable = f"{root}/run-42/train"
    common = [str(transformed / "graph"), str(transformed / "examples"), PROBLEM]
    proc = subprocess.Popen([sys.executable, "-c", _POD_SCRIPT, *common,
                             str(tmp_path / "pod1-model"), root], cwd=ROOT,
                            env=_pod(tmp_path, "pod1"), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    epochs_seen = 0
    for line in proc.stdout:
        if line.startswith("[train] epoch"):
            epochs_seen += 1
            if epochs_seen == 3:
                proc.send_signal(signal.SIGKILL)  # a preempted node: no clean-up at all
                break
    proc.wait(timeout=60)
    assert epochs_seen == 3, "training finished before it could be killed"
    assert storage.read_text(f"{durable}/{LATEST}").strip() == "epoch-000003"
    retry = subprocess.run([sys.executable, "-c", _POD_SCRIPT, *common,
                            str(tmp_path / "pod2-model"), root], cwd=ROOT,
                           env=_pod(tmp_path, "pod2"), capture_output=True, text=True,
                           timeout=600)
    assert retry.returncode == 0, retry.stderr[-3000:]
    assert f"durable checkpoints at {durable}: resuming from epoch-000003" in retry.stdout
    resumed, steps = retry.stdout.split("RESULT")[1].split()[:2]
    assert float(resumed) == 3 and float(steps) == 120 - 3 * 20
    assert (tmp_path / "pod2-model" / "saved_model.pb").exists()
    assert not storage.exists(f"{durable}/{LATEST}"), "a finished run's checkpoints remain"


def test_checkpoint_location_is_per_run_under_the_root_or_the_push_destination():
    from kfp_ct.components.train.checkpoints import durable_location

    assert durable_location("gs://b/root", "gs://b/serving", "job 7/a") == \
        "gs://b/root/job-7-a/train"
    assert durable_location("", "gs://b/serving/penguins", "r1") == \
        "gs://b/serving/penguins/kfp_ct_checkpoints/r1/train"
    assert durable_location("", "", "r1") == ""      # nowhere durable to name
    assert durable_location("gs://b/root", "", "") == ""  # no run id: runs would collide


def test_a_copy_that_latest_does_not_name_is_never_restored(tmp_path):
    from kfp_ct.components.train.checkpoints import DurableBackup

    local = tmp_path / "local"
    local.mkdir()
    (local / "checkpoint").write_text("epoch 1")
    mirror = DurableBackup(str(tmp_path / "durable"), str(local))
    mirror.save(1)
    # a second upload killed half-way: files of epoch 2 are there, LATEST not moved
    (tmp_path / "durable" / "epoch-000002").mkdir()
    (tmp_path / "durable" / "epoch-000002" / "partial").write_text("torn")
    fresh = DurableBackup(str(tmp_path / "durable"), str(tmp_path / "new-pod"))
    assert fresh.restore() == "epoch-000001"
    assert (tmp_path / "new-pod" / "checkpoint").read_text() == "epoch 1"


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


# ------------------------------------------------ label classes, non-finite numbers

@pytest.fixture(scope="module")
def eval_only_class(tmp_path_factory):
    """Penguins with a class ('Emperor') only in the eval split and a few non-finite
    masses, transformed and trained on."""
    from kfp_ct.components.train.logic import run_train
    from kfp_ct.components.transform.logic import run_transform
    from label_data import penguin_rows, with_class_in_split

    root = tmp_path_factory.mktemp("eval_only_class")
    header, rows = penguin_rows()
    for row, text in ((18, "inf"), (138, "NaN"), (251, "-inf")):  # not rows made Emperor
        rows[row][header.index("body_mass_g")] = text
    path, n = with_class_in_split(root / "emperor.csv", "Emperor", "eval", base=(header, rows))
    paths = {k: str(root / k) for k in ("graph", "examples", "raw", "model")}
    run_transform(path, PROBLEM, paths["graph"], paths["examples"], paths["raw"])
    result = run_train(paths["graph"], paths["examples"], PROBLEM, paths["model"],
                       train_steps=300)
    return paths, result, n


def test_class_only_in_eval_split_trains_and_is_left_out_of_train_metrics(eval_only_class):
    import numpy as np
    import tensorflow as tf
    import tensorflow_transform as tft

    paths, result, n = eval_only_class
    assert n == 6
    assert np.isfinite(result.metrics["eval_loss"])  # the inf masses were read as missing
    assert result.metrics["eval_accuracy"] >= 0.9
    tft_output = tft.TFTransformOutput(paths["graph"])
    vocabulary = [v.decode() if isinstance(v, bytes) else v
                  for v in tft_output.vocabulary_by_name("label_vocabulary")]
    assert sorted(vocabulary) == ["Adelie", "Chinstrap", "Gentoo"]  # the training split's
    records = [r.numpy() for r in tf.data.TFRecordDataset(
        sorted(glob.glob(os.path.join(paths["examples"], "eval", "*.tfrecord"))))]
    labels = tf.io.parse_example(records, tft_output.transformed_feature_spec())["species"]
    assert int((labels.numpy() == -1).sum()) == n  # no class id: never indexes the softmax


def test_class_only_in_eval_split_counts_as_wrong_in_evaluation(eval_only_class, tmp_path):
    import numpy as np
    import tensorflow as tf

    from kfp_ct.components.common import registry
    from kfp_ct.components.evaluate.logic import run_evaluate

    paths, _, n = eval_only_class
    rows = [r.numpy() for r in tf.data.TFRecordDataset(os.path.join(paths["raw"],
                                                                    "eval_raw.tfrecord"))]
    labels = [tf.train.Example.FromString(r).features.feature["species"].bytes_list.value[0]
              .decode() for r in rows]
    out = tf.saved_model.load(paths["model"]).signatures["serving_default"](
        examples=tf.constant(rows))
    classes, scores = out["classes"].numpy(), out["scores"].numpy()
    predicted = [classes[i][j].decode() for i, j in enumerate(np.argmax(scores, axis=1))]
    right = sum(p == a for p, a in zip(predicted, labels))
    assert labels.count("Emperor") == n and "Emperor" not in predicted

    dest = str(tmp_path / "models")  # the same model in production: it lacks the class too
    registry.publish(dest, paths["model"], {"metrics": {}})
    result = run_evaluate(paths["model"], paths["raw"], PROBLEM, dest, str(tmp_path / "ev"),
                          str(tmp_path / "report.html"))
    overall = result.candidate["overall"]
    assert overall["example_count"] == len(rows)
    assert overall["accuracy"] == pytest.approx(right / len(rows), abs=1e-6)
    assert result.baseline["state"] == "ok"
    assert result.baseline["overall"]["accuracy"] == pytest.approx(overall["accuracy"])
    assert result.notes == [
        f"class 'Emperor' appears only in the eval split: {n} row(s), counted as wrong",
        f"class 'Emperor' is not one of the production model's classes: {n} row(s), "
        "counted as wrong for it"]
    cm = result.confusion_matrix
    assert sum(map(sum, cm["matrix"])) == len(rows) - n
    assert list(cm["unseen_classes"]) == ["Emperor"] and sum(cm["unseen_classes"]["Emperor"]) == n
    diagonal = sum(cm["matrix"][i][i] for i in range(len(cm["labels"])))
    assert diagonal == right
    # macro recall: Emperor is a present class the model never gets right
    recalls = [cm["matrix"][i][i] / sum(cm["matrix"][i]) for i in range(3)] + [0.0]
    assert overall["macro_recall"] == pytest.approx(sum(recalls) / 4)
    doc = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert doc["notes"] == result.notes
    assert "appears only in the eval split" in (tmp_path / "report.html").read_text()


def test_macro_recall_counts_a_class_the_model_lacks_as_never_recalled():
    from kfp_ct.components.common.metrics import macro_precision_recall

    square = [[8, 2], [1, 9]]
    assert macro_precision_recall(square) == pytest.approx(
        {"macro_precision": (8 / 9 + 9 / 11) / 2, "macro_recall": (0.8 + 0.9) / 2})
    with_unseen = square + [[3, 1]]  # 4 rows of a class the model does not have
    assert macro_precision_recall(with_unseen) == pytest.approx(
        {"macro_precision": (8 / 12 + 9 / 12) / 2, "macro_recall": (0.8 + 0.9 + 0.0) / 3})


_NAN_LOSS_MODULE = """
import tensorflow as tf
from kfp_ct.components.train import model as model_lib


def preprocessing_fn(inputs):
    raise AssertionError("unused")


def build_model(spec, tft_output):
    model = model_lib.build_default_model(spec, tft_output)
    # a loss that is NaN on every batch, whatever the kernels do with NaN inputs
    model.compile(optimizer="adam", metrics=["accuracy"],
                  loss=lambda y, p: tf.math.log(-1.0 - tf.reduce_mean(p, axis=-1)))
    return model
"""


def test_model_with_a_nan_loss_is_refused_not_exported(transformed, tmp_path):
    from kfp_ct.components.common.errors import TrainingError
    from kfp_ct.components.train.logic import run_train

    module = tmp_path / "nan_loss_module.py"
    module.write_text(_NAN_LOSS_MODULE)
    spec = json.load(open(PROBLEM))
    spec["module_file"] = str(module)
    with pytest.raises(TrainingError, match=r"eval metrics are not finite.*not exported"):
        run_train(str(transformed / "graph"), str(transformed / "examples"), json.dumps(spec),
                  str(tmp_path / "model"), train_steps=5)
    assert not os.path.exists(tmp_path / "model")