"""Benchmark: two-worker training (MultiWorkerMirroredStrategy) vs one worker, here.

    .venv/bin/python -m tests.benchmarks.bench_multiworker [--steps 600] [--out DIR]

Both runs start the worker entry point (``python -m kfp_ct.components.train.worker``) as a
TFJob would, on the same transformed penguins, per-replica batch and step count; the
two workers talk over gRPC on 127.0.0.1. Reported per run:

- examples/s in the training loop (global examples: the chief's ``examples_per_second``,
  measured by the Keras epochs, so start-up and the first trace of the step count);
- wall seconds of the slowest worker process, from its start to its exit;
- the share of that wall time outside training (interpreter start, imports, strategy
  and gRPC set-up, dataset and model building, evaluation, export), and the bare cost of
  the imports alone (a process that only imports what a worker imports).

Both workers share this machine's cores, so this measures the overhead of the
collective all-reduce and the duplicated input pipeline, not a speed-up: on a cluster
each worker has its own node.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROBLEM = os.path.join(ROOT, "pipelines", "penguins", "problem.json")
IMPORTS = ("import kfp_ct.components.common.tfenv, tensorflow, tensorflow_transform, tf_keras, "
           "kfp_ct.components.train.logic")


def _ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _run(workers: int, data: str, out: str, steps: int) -> dict:
    model = os.path.join(out, f"model-{workers}w")
    args = [sys.executable, "-m", "kfp_ct.components.train.worker",
            "--transform-graph", os.path.join(data, "graph"),
            "--examples", os.path.join(data, "examples"), "--problem", PROBLEM,
            "--model", model, "--train-steps", str(steps)]
    hosts = [f"127.0.0.1:{p}" for p in _ports(workers)]
    procs, started = [], time.perf_counter()
    for i in range(workers):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        if workers > 1:
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": hosts},
                                           "task": {"type": "worker", "index": i}})
        log = open(os.path.join(out, f"worker-{workers}w-{i}.log"), "w")
        procs.append((subprocess.Popen(args, cwd=ROOT, env=env, stdout=log,
                                       stderr=subprocess.STDOUT), log))
    walls = []
    for proc, log in procs:
        code = proc.wait(timeout=1200)
        walls.append(time.perf_counter() - started)
        log.close()
        if code != 0:
            raise SystemExit(f"a worker of the {workers}-worker run exited with {code}: "
                             f"see {log.name}")
    metrics = json.load(open(model + ".metrics.json"))
    wall = max(walls)
    train_s = metrics["steps_run_this_attempt"] * metrics["batch_size"] / \
        metrics["examples_per_second"]
    return {"workers": workers, "global_batch": int(metrics["batch_size"]),
            "steps": int(metrics["steps_run_this_attempt"]),
            "examples_per_s": round(metrics["examples_per_second"], 1),
            "train_loop_s": round(train_s, 2), "wall_s": round(wall, 2),
            "outside_training_share": round(1 - train_s / wall, 3),
            "eval_accuracy": round(metrics["eval_accuracy"], 4)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="kfp-ct-bench-mw-")
    data = os.path.join(out, "data")
    if not os.path.isdir(os.path.join(data, "examples")):
        subprocess.run([sys.executable, "-c",
                        "import sys; from kfp_ct.components.transform.logic import run_transform; "
                        "run_transform('bundled:penguins', sys.argv[1], sys.argv[2] + '/graph',"
                        " sys.argv[2] + '/examples', sys.argv[2] + '/raw')", PROBLEM, data],
                       cwd=ROOT, check=True, capture_output=True, timeout=600)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", IMPORTS], cwd=ROOT, check=True, timeout=300,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    imports_s = time.perf_counter() - started
    runs = [_run(1, data, out, args.steps), _run(2, data, out, args.steps)]
    one, two = runs
    report = {"cpu_cores": os.cpu_count(), "imports_only_s": round(imports_s, 2),
              "runs": runs,
              "two_vs_one_examples_per_s": round(two["examples_per_s"] / one["examples_per_s"],
                                                 3),
              "imports_share_of_wall": {str(r["workers"]): round(imports_s / r["wall_s"], 3)
                                        for r in runs}}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
