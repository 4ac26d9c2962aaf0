"""Benchmark: the whole training pipeline under kfp.local on penguins (not a test).

    .venv/bin/python -m tests.benchmarks.bench_pipeline [--runs 2] [--cold]
        [--wide ROWS --train-steps 1000]

``--wide ROWS``: the mid-size job instead of penguins, the 16-feature table of
tests/benchmarks/wide.py (bucketized numerics, vocabularies up to 5,000 values) with
ROWS rows, batch 40.

Prints per-task wall time (and the part that is the task's own work), the total, and
the peak resident memory of the largest task process (ru_maxrss over children).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import sys
import tempfile


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--cold", action="store_true",
                        help="a new Python per task (default: warm, pipelines/entrypoints/warm.py)")
    parser.add_argument("--wide", type=int, default=0, metavar="ROWS",
                        help="the 16-feature table with ROWS rows instead of penguins")
    parser.add_argument("--train-steps", type=int, default=0, help="default: the pipeline's")
    args = parser.parse_args(argv)
    from kfp_ct.pipelines.entrypoints.local import run_local
    from kfp_ct.pipelines.training import training_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        dest = os.path.join(tmp, "serving", "penguins")
        params = {"push_destination": dest}
        if args.wide:
            from tests.benchmarks import wide

            params["data_path"] = wide.write_wide(os.path.join(tmp, "wide.csv"), args.wide)
            params["problem"] = wide.problem_json()
        if args.train_steps:
            params["train_steps"] = args.train_steps
        for i in range(args.runs):
            with contextlib.redirect_stdout(io.StringIO()):
                run = run_local(training_pipeline, params,
                                workdir=os.path.join(tmp, "runs"), warm=not args.cold)
            evaluation = run.read_json("evaluate", "evaluation", "evaluation.json") or {}
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
            print(json.dumps({
                "run": i + 1, "warm": not args.cold, "ok": run.ok,
                "total_s": round(run.total_s, 1),
                "tasks": {t.name: {"wall_s": round(t.wall_s, 1),
                                   "own_s": round(t.logic_s or 0.0, 1)} for t in run.tasks},
                "accuracy": evaluation.get("candidate", {}).get("overall", {}).get("accuracy"),
                "baseline": evaluation.get("baseline", {}).get("state"),
                "peak_task_rss_mib": round(peak, 1),
            }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
