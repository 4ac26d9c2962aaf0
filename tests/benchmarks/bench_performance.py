"""Model-performance monitoring: decision quality, estimation error, cost (not a test).

    .venv/bin/python -m tests.benchmarks.bench_performance [--windows 200] [--train-steps 40]
                                                           [--rows 100000] [--runs 3]

The production version: a real penguins model (transform + train of kfp-ct, on 5,000
generated rows), its metric and calibration measured on 5,000 generated eval rows
(tests/perf_base.py: the code push runs). Windows come from the same seeded generator
(kfp_ct.pipelines.entrypoints.synth), other seeds, each through the full drift check
(``run_drift_check``: reading, drift tests, scoring, both performance checks):

- realized-drop decisions: false alarms on unshifted labelled windows at 1,000 and
  5,000 rows; detection of a concept shift sized to cost 5 points of accuracy (the
  strength s with s * (a - (1 - a) / 2) = 0.05, a the model's accuracy);
- estimation error on covariate-shifted windows at 5,000 rows (feature and strength
  drawn per window, |strength| <= 3): |estimated - realized| accuracy, and the same for
  the naive estimate "accuracy unchanged since push";
- the drift check's wall time and peak memory (each run a fresh interpreter) on one
  100k-row labelled window, with and without its labels (drift only, as before).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

CLEAN_ENV = dict(os.environ)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROBLEM = os.path.join(ROOT, "pipelines", "penguins", "problem.json")
NUMERIC = ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g")


def train_model(work: str, steps: int) -> str:
    from kfp_ct.components.train.logic import run_train
    from kfp_ct.components.transform.logic import run_transform
    from kfp_ct.pipelines.entrypoints import synth

    data = os.path.join(work, "train", "part.csv")
    synth.write_penguins_like(data, 5000, seed=1)
    paths = {k: os.path.join(work, k) for k in ("graph", "examples", "raw")}
    run_transform(data, PROBLEM, paths["graph"], paths["examples"], paths["raw"])
    model = os.path.join(work, "trained")
    run_train(paths["graph"], paths["examples"], PROBLEM, model, train_steps=steps)
    return model


def window(work: str, rows: int, seed: int, **kw) -> str:
    from kfp_ct.pipelines.entrypoints import synth

    path = os.path.join(work, "windows", f"w{seed}.csv")
    synth.write_penguins_like(path, rows, seed=seed, **kw)
    return path


def decide(base: str, path: str) -> dict:
    from kfp_ct.components.drift import logic

    try:
        return logic.run_drift_check(base, labels_path=path, settings={"history": 0})
    finally:
        os.remove(path)


def _share(flags) -> str:
    return f"{100.0 * sum(flags) / max(len(flags), 1):.1f}%"


CHILD = """
import json, sys, time
started = time.perf_counter()
from kfp_ct.components.drift import logic
base, path, labelled = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
record = logic.run_drift_check(base, window_path=path, labels_path=path if labelled else "",
                               settings={"history": 0})
# VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's size when it forked
# (793 MiB here, the benchmark's own process, whatever the child did); VmHWM is this
# program's own peak.
peak_kib = next(int(line.split()[1]) for line in open("/proc/self/status")
                if line.startswith("VmHWM:"))
print(json.dumps({"wall_s": time.perf_counter() - started, "peak_mib": peak_kib / 1024,
                  "labels": record["window"]["rows"].get("labels", 0)}))
"""


def cost(base: str, path: str, labelled: bool) -> dict:
    env = {**CLEAN_ENV, "PYTHONPATH": os.pathsep.join(
        [os.path.dirname(ROOT), ROOT, CLEAN_ENV.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", CHILD, base, path, "1" if labelled else "0"],
                         capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3, help="timing runs (0: no timing)")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from perf_base import make_model_base

    from kfp_ct.pipelines.entrypoints import synth

    work = tempfile.mkdtemp(prefix="bench-performance-")
    started = time.perf_counter()
    made = make_model_base(os.path.join(work, "base"), train_model(work, args.train_steps),
                           stats_rows=5000, eval_rows=5000, seed=2)
    a = made.accuracy
    strength = 0.05 / (a - (1 - a) / 2)
    print(f"model: accuracy {a:.4f} on {made.eval_rows} eval rows; calibration "
          f"{len(made.calibration['x'])} steps; concept strength for 5 points {strength:.4f} "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    if args.windows <= 0:  # the cost figures only
        return _timing(args, made, work, strength, started)
    rows_out = []
    seed = 10_000
    for rows in (1000, 5000):
        flags = []
        for _ in range(args.windows):
            seed += 1
            r = decide(made.base, window(work, rows, seed))["performance"]["realized"]
            flags.append(r["decision"] == "PERFORMANCE_DROP")
        rows_out.append(("unshifted (false alarms)", rows, len(flags), _share(flags)))
        print(rows_out[-1], flush=True)
    for rows in (1000, 5000):
        flags, drops = [], []
        for _ in range(args.windows):
            seed += 1
            r = decide(made.base, window(work, rows, seed, shift="concept",
                                         strength=strength))["performance"]["realized"]
            flags.append(r["decision"] == "PERFORMANCE_DROP")
            drops.append(r["drop"])
        rows_out.append((f"concept shift, 5 points (measured drop {np.mean(drops):.3f})",
                         rows, len(flags), _share(flags)))
        print(rows_out[-1], flush=True)

    rng = np.random.default_rng(7)
    est_err, naive_err, realized_values = [], [], []
    for _ in range(args.windows):
        seed += 1
        feature = NUMERIC[rng.integers(len(NUMERIC))]
        s = float(rng.uniform(-3, 3))
        record = decide(made.base, window(work, 5000, seed, shift="covariate", strength=s,
                                          feature=feature))
        real = record["performance"]["realized"]["value"]
        est = record["performance"]["estimated"]["value"]
        est_err.append(abs(est - real))
        naive_err.append(abs(a - real))
        realized_values.append(real)
    within = lambda errs: _share([e <= 0.02 for e in errs])  # noqa: E731
    print(f"covariate windows: realized accuracy {min(realized_values):.3f}..."
          f"{max(realized_values):.3f}", flush=True)
    estimation = [("CBPE (calibrated confidence)", within(est_err), np.percentile(est_err, 95),
                   float(np.mean(est_err))),
                  ("naive: unchanged since push", within(naive_err),
                   np.percentile(naive_err, 95), float(np.mean(naive_err)))]

    print()
    print(f"Model: accuracy {a:.4f} on {made.eval_rows} eval rows at push; "
          f"{args.train_steps} training steps.")
    print()
    print("| window | rows | windows | PERFORMANCE_DROP |")
    print("|---|---|---|---|")
    for name, rows, n, share in rows_out:
        print(f"| {name} | {rows:,} | {n} | {share} |")
    print()
    print(f"Covariate-shifted windows, 5,000 rows, {args.windows} windows (realized accuracy "
          f"{min(realized_values):.3f} to {max(realized_values):.3f}):")
    print()
    print("| estimate | windows within 0.02 | p95 abs error | mean abs error |")
    print("|---|---|---|---|")
    for name, share, p95, mean in estimation:
        print(f"| {name} | {share} | {p95:.4f} | {mean:.4f} |")
    return _timing(args, made, work, strength, started)


def _timing(args, made, work: str, strength: float, started: float) -> int:
    big = window(work, args.rows, 99, shift="concept", strength=strength)
    timing = {}
    for labelled in (False, True) if args.runs > 0 else ():
        runs = [cost(made.base, big, labelled) for _ in range(args.runs)]
        timing[labelled] = {"wall_s": statistics.median(r["wall_s"] for r in runs),
                            "peak_mib": statistics.median(r["peak_mib"] for r in runs),
                            "labels": runs[0]["labels"]}
        print(labelled, timing[labelled], flush=True)
    print()
    if not timing:
        print(f"\n(total {time.perf_counter() - started:.0f} s)")
        return 0
    d, p = timing[False], timing[True]
    print(f"Drift check on {args.rows:,} rows (median of {args.runs}, fresh interpreter each):")
    print()
    print("| run | wall s | peak MiB |")
    print("|---|---|---|")
    print(f"| drift only (as before) | {d['wall_s']:.1f} | {d['peak_mib']:.0f} |")
    print(f"| with its {p['labels']:,} labels (realized + estimated) | {p['wall_s']:.1f} | "
          f"{p['peak_mib']:.0f} |")
    print(f"| ratio | {p['wall_s'] / d['wall_s']:.2f}x | {p['peak_mib'] / d['peak_mib']:.2f}x |")
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
