"""Training on several workers: TF_CONFIG planning, and real two-worker runs.

The runs start two worker processes (``python -m kfp_ct.components.train.worker``) on
127.0.0.1, each with its own TF_CONFIG as a TFJob gives it, train the penguins model
together under MultiWorkerMirroredStrategy, and hand the chief's model to push's
serving check (a fresh process that loads it and answers real requests).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from kfp_ct.components.common import tfenv  # noqa: F401
from kfp_ct.components.common.errors import KfpCtError
from kfp_ct.components.train.logic import shard_policy
from kfp_ct.components.train.strategy import ClusterSpec, Plan, parse_tf_config, plan_strategy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBLEM = os.path.join(ROOT, "pipelines", "penguins", "problem.json")
RUN_TIMEOUT_S = 400


# ------------------------------------------------------------------ pure decisions

def _cluster(text):
    return parse_tf_config(json.dumps(text))


TWO_WORKERS = {"cluster": {"worker": ["h0:1", "h1:2"]}, "task": {"type": "worker", "index": 1}}
CHIEF_AND_WORKER = {"cluster": {"chief": ["c:1"], "worker": ["w:2"]},
                    "task": {"type": "chief", "index": 0}}


@pytest.mark.parametrize("accelerator,gpus,cc,tf_config,expected", [
    ("auto", 0, None, None, Plan("default", "float32", 1)),
    # one task in the cluster (a TFJob of one replica): the one-machine plan
    ("auto", 0, None, {"cluster": {"worker": ["h:1"]}, "task": {"type": "worker"}},
     Plan("default", "float32", 1)),
    ("auto", 0, None, TWO_WORKERS,
     Plan("multi_worker", "float32", 2, workers=2, chief=False, task="worker:1")),
    ("auto", 0, None, {**TWO_WORKERS, "task": {"type": "worker", "index": 0}},
     Plan("multi_worker", "float32", 2, workers=2, chief=True, task="worker:0")),
    ("cpu", 0, None, CHIEF_AND_WORKER,
     Plan("multi_worker", "float32", 2, workers=2, chief=True, task="chief:0")),
    ("auto", 0, None,
     {"cluster": {"chief": ["c:1"], "worker": ["w:2", "w:3"]},
      "task": {"type": "worker", "index": 0}},  # worker 0 is not chief beside a chief
     Plan("multi_worker", "float32", 3, workers=3, chief=False, task="worker:0")),
    ("gpu", 4, (8, 0), TWO_WORKERS,
     Plan("multi_worker", "mixed_float16", 8, workers=2, chief=False, task="worker:1")),
    ("cpu", 4, (8, 0), TWO_WORKERS,  # GPUs present but CPU asked for
     Plan("multi_worker", "float32", 2, workers=2, chief=False, task="worker:1")),
])
def test_strategy_plan_follows_tf_config(accelerator, gpus, cc, tf_config, expected):
    cluster = _cluster(tf_config) if tf_config else None
    assert plan_strategy(accelerator, gpus, cc, None, cluster) == expected


def test_multi_worker_plan_describes_its_workers():
    plan = plan_strategy("auto", 0, None, None, _cluster(TWO_WORKERS))
    assert plan.describe() == "multi_worker x2 (float32) on 2 workers"
    assert Plan("default", "float32", 1).describe() == "default x1 (float32)"


def test_a_tpu_with_several_workers_is_refused():
    with pytest.raises(KfpCtError, match="names 2 workers and a TPU is addressed"):
        plan_strategy("auto", 0, None, "local", _cluster(TWO_WORKERS))


@pytest.mark.parametrize("text,message", [
    ("{not json", r"\$TF_CONFIG is not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', r'\$TF_CONFIG has no "cluster"'),
    ('{"cluster": {"ps": ["p:1"], "worker": ["w:1"]}, "task": {"type": "worker"}}',
     r"names task type 'ps'"),
    ('{"cluster": {"worker": "w:1"}, "task": {"type": "worker"}}',
     r"cluster.worker must be a non-empty list"),
    ('{"cluster": {"worker": ["w"]}, "task": {"type": "worker"}}',
     r'"host:port" strings'),
    ('{"cluster": {"worker": ["a:1", "b:2"]}}', r'has no "task"'),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
     r"task worker:2 is not in the cluster"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
     r"task chief:0 is not in the cluster"),
    ('{"cluster": {"chief": ["a:1", "b:1"]}, "task": {"type": "chief"}}',
     r"at most one chief"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": "1"}}',
     r"task.index must be a whole number"),
])
def test_a_malformed_tf_config_is_a_clear_error(text, message):
    with pytest.raises(KfpCtError, match=message):
        parse_tf_config(text)


def test_an_unset_tf_config_means_one_machine():
    assert parse_tf_config(None) is None and parse_tf_config("  ") is None
    spec = parse_tf_config(json.dumps(CHIEF_AND_WORKER))
    assert spec == ClusterSpec({"chief": ("c:1",), "worker": ("w:2",)}, "chief", 0)
    assert spec.workers == 2 and spec.is_chief


def test_a_bad_tf_config_fails_before_tensorflow_is_imported():
    probe = ("import os, sys\n"
             "os.environ['TF_CONFIG'] = '{\"cluster\": []}'\n"
             "from kfp_ct.components.train.strategy import make_strategy\n"
             "try:\n    make_strategy('auto')\n"
             "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
             "print('TF', 'tensorflow' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert "KfpCtError $TF_CONFIG has no \"cluster\"" in done.stdout, done.stderr[-2000:]
    assert "TF False" in done.stdout


@pytest.mark.parametrize("files,workers,policy", [
    (1, 2, "DATA"),   # penguins: one file per split; FILE would starve a worker
    (3, 2, "DATA"),   # uneven: one worker would read twice as much
    (4, 2, "FILE"),
    (8, 4, "FILE"),
    (2, 4, "DATA"),
])
def test_input_sharding_policy(files, workers, policy):
    assert shard_policy(files, workers) == policy


# ------------------------------------------------------------------ real workers

def _free_ports(n):
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tf_configs(n):
    hosts = [f"127.0.0.1:{p}" for p in _free_ports(n)]
    return [json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}})
            for i in range(n)]


@pytest.fixture(scope="module")
def transformed(penguins_transformed):
    """The folder holding graph/, examples/ and raw/ (conftest.py, made once a session)."""
    return penguins_transformed["root"]


class WorkerGroup:
    """Worker processes of one training, each on its own scratch disk (TMPDIR), as pods."""

    def __init__(self, tmp_path, name, args, workers=2, env=None):
        self.procs, self.logs = [], []
        for i, tf_config in enumerate(_tf_configs(workers)):
            disk = tmp_path / f"{name}-disk{i}"
            disk.mkdir()
            log = open(tmp_path / f"{name}-worker{i}.log", "w+")
            self.logs.append(log)
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "kfp_ct.components.train.worker", *args], cwd=ROOT,
                env={**os.environ, **(env or {}), "TF_CONFIG": tf_config,
                     "TMPDIR": str(disk), "TF_CPP_MIN_LOG_LEVEL": "2"},
                stdout=log, stderr=subprocess.STDOUT, text=True))

    def output(self, i):
        self.logs[i].flush()
        self.logs[i].seek(0)
        return self.logs[i].read()

    def wait(self, timeout=RUN_TIMEOUT_S):
        deadline = time.monotonic() + timeout
        try:
            for proc in self.procs:
                proc.wait(timeout=max(1, deadline - time.monotonic()))
        finally:
            self.kill()
        return [p.returncode for p in self.procs]

    def run(self, timeout=RUN_TIMEOUT_S):
        """Waits for every worker, then closes the group: (exit codes, each one's output)."""
        try:
            codes = self.wait(timeout)
            return codes, [self.output(i) for i in range(len(self.procs))]
        finally:
            self.close()

    def wait_for(self, i, text, timeout=RUN_TIMEOUT_S):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output(i):
                return True
            if self.procs[i].poll() is not None:
                return text in self.output(i)
            time.sleep(0.2)
        return False

    def kill(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)  # a preempted node: no clean-up
                proc.wait(timeout=30)

    def close(self):
        self.kill()
        for log in self.logs:
            log.close()


def _args(transformed, model, *extra):
    return ["--transform-graph", str(transformed / "graph"),
            "--examples", str(transformed / "examples"), "--problem", PROBLEM,
            "--model", model, *extra]


def _serving_check(model_dir, transformed):
    from kfp_ct.components.push import logic as push_logic

    raw = os.path.join(str(transformed / "raw"), push_logic.RAW_EVAL_FILE)
    return push_logic.run_canary_subprocess(model_dir, raw, 20)


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, names in os.walk(root) for f in names)


@pytest.mark.long
def test_two_workers_train_one_model_that_passes_the_serving_check(transformed, tmp_path):
    out = tmp_path / "out"
    model = str(out / "model")
    group = WorkerGroup(tmp_path, "run", _args(transformed, model, "--train-steps", "300"))
    codes, logs = group.run()
    assert codes == [0, 0], "\n=====\n".join(log[-3000:] for log in logs)
    assert "worker worker:0 of 2 (chief): global batch 64" in logs[0]
    assert "worker worker:1 of 2: global batch 64" in logs[1]
    assert "not the chief: the chief writes the model" in logs[1]
    # Only the chief's model and metrics are at the output location.
    assert sorted(os.listdir(out)) == ["model", "model.metrics.json"]
    metrics = json.loads((out / "model.metrics.json").read_text())
    assert metrics["strategy"] == "multi_worker x2 (float32) on 2 workers"
    assert (metrics["workers"], metrics["replicas"], metrics["batch_size"]) == (2, 2, 64)
    assert metrics["train_steps"] == 300 and metrics["steps_run_this_attempt"] == 300
    assert metrics["eval_accuracy"] >= 0.9
    check = _serving_check(model, transformed)
    assert check["ok"] is True and check["outputs"] == ["classes", "scores"]
    # The non-chief's temporary model and every worker's scratch are gone.
    for i in range(2):
        assert _files(tmp_path / f"run-disk{i}") == [], i


@pytest.mark.long
def test_two_workers_read_and_write_gcs_through_the_emulator(transformed, tmp_path,
                                                             gcs_emulator):
    from kfp_ct.components.common import storage

    bucket = gcs_emulator.new_bucket()
    graph, examples = f"{bucket}/in/graph", f"{bucket}/in/examples"
    storage.upload_tree(str(transformed / "graph"), graph)
    storage.upload_tree(str(transformed / "examples"), examples)
    model = f"{bucket}/pipeline-root/run-1/train/model"
    durable = f"{bucket}/checkpoints/run-1/train"
    args = ["--transform-graph", graph, "--examples", examples, "--problem", PROBLEM,
            "--model", model, "--train-steps", "120", "--steps-per-epoch", "40",
            "--checkpoint-dir", durable]
    group = WorkerGroup(tmp_path, "gcs", args)
    codes, logs = group.run()
    assert codes == [0, 0], "\n=====\n".join(log[-3000:] for log in logs)
    for log in logs:
        assert f"downloading {graph} ->" in log
        assert f"durable checkpoints at {durable}: none yet, starting fresh" in log
    assert f"checkpoint after epoch 3 kept at {durable}" in logs[0]
    assert "checkpoint after epoch" not in logs[1]  # only the chief mirrors
    written = storage.list_files(f"{bucket}/pipeline-root")
    assert "run-1/train/model.metrics.json" in written
    assert "run-1/train/model/saved_model.pb" in written
    assert all(k.startswith("run-1/train/model") for k in written), sorted(written)
    assert not storage.exists(f"{durable}/LATEST"), "a finished run's checkpoints remain"
    metrics = json.loads(storage.read_text(f"{model}.metrics.json"))
    assert metrics["workers"] == 2 and metrics["train_steps"] == 120
    local = storage.download(model, str(tmp_path / "downloaded"))
    assert _serving_check(local, transformed)["ok"] is True


@pytest.mark.long
def test_a_killed_worker_group_resumes_from_the_chiefs_durable_checkpoint(transformed,
                                                                           tmp_path):
    from kfp_ct.components.train.checkpoints import LATEST

    durable = tmp_path / "durable"
    model = str(tmp_path / "out" / "model")
    args = _args(transformed, model, "--train-steps", "200", "--steps-per-epoch", "20",
                 "--checkpoint-dir", str(durable))
    first = WorkerGroup(tmp_path, "first", args)
    try:
        reached = first.wait_for(0, f"checkpoint after epoch 3 kept at {durable}")
        first.kill()  # the whole group preempted after epoch 3
        early = [first.output(0), first.output(1)]
    finally:
        first.close()
    assert reached, "the chief never kept epoch 3:\n" + early[0][-3000:]
    assert not os.path.exists(model), "the killed group wrote a model"
    kept = (durable / LATEST).read_text().strip()
    assert kept >= "epoch-000003"
    again = WorkerGroup(tmp_path, "again", args)
    codes, logs = again.run()
    assert codes == [0, 0], "\n=====\n".join(log[-3000:] for log in logs)
    for log in logs:  # every worker restored the chief's copy
        assert f"durable checkpoints at {durable}: resuming from {kept}" in log
    metrics = json.loads((tmp_path / "out" / "model.metrics.json").read_text())
    epochs_kept = int(kept.split("-")[1])
    assert metrics["resumed_from_epoch"] == epochs_kept
    assert metrics["steps_run_this_attempt"] == 200 - epochs_kept * 20
    assert not (durable / LATEST).exists()
    assert _serving_check(model, transformed)["ok"] is True
