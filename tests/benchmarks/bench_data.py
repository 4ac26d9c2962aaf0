"""Benchmark of the data half: validate and transform at any row count (not a test).

    .venv/bin/python -m tests.benchmarks.bench_data 100000 1000000 [--out bench_out]
        [--table penguins|wide] [--beam-args "--runner=DirectRunner ..." | --beam]

Each step runs in its own process (as under kfp.local), measured from outside: wall
time and peak resident memory (ru_maxrss of that process, which on the Beam path leaves
out the worker processes). Data (seeded, written once per row count and reused):
penguins-like rows from kfp_ct.pipelines.entrypoints.synth (7 columns), or the 16-feature table of
tests/benchmarks/wide.py. ``--beam`` runs the Beam path with the DirectRunner's
multi-processing mode and 2 workers instead of the in-process path.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROBLEM = os.path.join(ROOT, "pipelines", "penguins", "problem.json")

STEPS = {
    "validate": (
        "from kfp_ct.components.validate.logic import run_validate as f; import sys, json; "
        "d=sys.argv[2]; f(sys.argv[1], sys.argv[3], d+'/stats', d+'/schema', d+'/anom', "
        "d+'/report.html', beam_args=json.loads(sys.argv[4]))"),
    "transform": (
        "from kfp_ct.components.transform.logic import run_transform as f; import sys, json; "
        "d=sys.argv[2]; f(sys.argv[1], sys.argv[3], d+'/graph', d+'/examples', d+'/raw', "
        "beam_args=json.loads(sys.argv[4]))"),
}
MULTI_PROCESSING = ("--runner=DirectRunner --direct_running_mode=multi_processing "
                    "--direct_num_workers=2")


def measure(argv: list[str]) -> tuple[float, float]:
    """Runs argv; returns (wall seconds, peak RSS MiB of that process)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{argv[:3]} failed:\n{proc.stderr.read().decode()[-3000:]}")
    return wall, usage.ru_maxrss / 1024.0


def bench(rows: int, out: str, table: str = "penguins", beam_args: list[str] = ()) -> dict:
    data = os.path.join(out, f"{table}_{rows}.csv")
    if table == "wide":
        from tests.benchmarks import wide

        wide.write_wide(data, rows, seed=0)
        problem = wide.problem_json()
    else:
        from kfp_ct.pipelines.entrypoints.synth import write_penguins_like

        if not os.path.exists(data):
            write_penguins_like(data, rows, seed=0)
        problem = PROBLEM
    result = {"rows": rows, "table": table, "path": "beam" if beam_args else "in-process"}
    if beam_args:
        result["beam_args"] = list(beam_args)
    for step, code in STEPS.items():
        work = os.path.join(out, f"{step}_{rows}")
        subprocess.run(["rm", "-rf", work], check=True)
        wall, rss = measure([sys.executable, "-c", code, data, work, problem,
                             json.dumps(list(beam_args))])
        result[step] = {"wall_s": round(wall, 2), "peak_rss_mib": round(rss, 1)}
    # What a step costs before it touches data: the same imports on no work.
    imports = {"validate": "import kfp_ct.components.validate.logic, tensorflow_data_validation",
               "transform": "import kfp_ct.components.transform.logic, tensorflow_transform.beam"}
    for step, code in imports.items():
        wall, _ = measure([sys.executable, "-c", code])
        result[step]["import_s"] = round(wall, 2)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=int, nargs="+")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench_out"))
    parser.add_argument("--table", choices=("penguins", "wide"), default="penguins")
    parser.add_argument("--beam-args", default="", help="run the Beam path with these options")
    parser.add_argument("--beam", action="store_true",
                        help=f"the Beam path with {MULTI_PROCESSING}")
    args = parser.parse_args(argv)
    beam_args = (args.beam_args or (MULTI_PROCESSING if args.beam else "")).split()
    os.makedirs(args.out, exist_ok=True)
    for rows in args.rows:
        print(json.dumps(bench(rows, args.out, args.table, beam_args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
