"""Speed and memory of the drift check against bare TFDV (not a test).

    .venv/bin/python -m tests.benchmarks.bench_drift_speed 100000 1000000 [--model-base DEST]

Each measurement is its own process, measured from outside (wall time, peak RSS):

- ``drift check``: ``run_drift_check`` as the monitoring task runs it: the production
  version's statistics from the registry, one streaming pass over the window, the
  calibrated tests, prediction drift (the production model scores a 5,000-row sample),
  drift.json and both reports;
- ``drift check, no predictions``: the same with ``prediction_rows=0`` (no TensorFlow);
- ``bare TFDV``: ``tfdv.generate_statistics_from_csv`` on the same file, then
  ``tfdv.validate_statistics`` against the production schema with drift comparators
  and the production statistics as ``previous_statistics``.

Without ``--model-base``, a production model is trained first on 10,000 generated rows
with the local training pipeline (about a minute and a half).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from tests.benchmarks.bench_data import ROOT, measure

CHECK = (
    "import sys, json; from kfp_ct.components.drift.logic import run_drift_check as f; "
    "d = sys.argv[3]; r = f(sys.argv[1], window_path=sys.argv[2], decision_dir=d, "
    "report_html=d + '/r.html', report_md=d + '/r.md', settings=sys.argv[4]); "
    "print(json.dumps({'decision': r['decision'], 'drifted': r['drifted']}))")
BARE_TFDV = (
    "import sys; import tensorflow_data_validation as tfdv; "
    "from kfp_ct.components.common import registry; "
    "prod = registry.production(sys.argv[1]); "
    "base = tfdv.load_stats_binary(registry.audit_file(prod, registry.STATISTICS)); "
    "schema = tfdv.load_schema_text(registry.audit_file(prod, registry.SCHEMA)); "
    "[setattr(f.drift_comparator.infinity_norm, 'threshold', 0.1) if f.type == 1 else "
    " setattr(f.drift_comparator.jensen_shannon_divergence, 'threshold', 0.1) "
    " for f in schema.feature]; "
    "stats = tfdv.generate_statistics_from_csv(sys.argv[2], output_path=sys.argv[3] + '/s.pb'); "
    "a = tfdv.validate_statistics(stats, schema, previous_statistics=base); "
    "print(sorted(a.anomaly_info))")


def train_production(out: str) -> str:
    from kfp_ct.pipelines.entrypoints.synth import write_penguins_like

    data = os.path.join(out, "drift_base_10000.csv")
    if not os.path.exists(data):
        write_penguins_like(data, 10_000, seed=12345)
    base = os.path.join(out, "drift_serving")
    subprocess.run(["rm", "-rf", base], check=True)
    subprocess.run([sys.executable, "-m", "kfp_ct.pipelines.entrypoints.cli", "run-local", "--destination", base,
                    "--data", data, "--workdir", os.path.join(out, "drift_runs")], cwd=ROOT,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return base


def bench(rows: int, base: str, out: str) -> dict:
    from kfp_ct.pipelines.entrypoints.synth import write_penguins_like

    data = os.path.join(out, f"penguins_{rows}.csv")
    if not os.path.exists(data):
        write_penguins_like(data, rows, seed=0)
    result = {"rows": rows}
    runs = {
        "drift_check": [sys.executable, "-c", CHECK, base, data, "", ""],
        "drift_check_no_predictions": [sys.executable, "-c", CHECK, base, data, "",
                                       json.dumps({"prediction_rows": 0})],
        "bare_tfdv": [sys.executable, "-c", BARE_TFDV, base, data, ""],
    }
    for name, argv in runs.items():
        work = os.path.join(out, f"drift_{name}_{rows}")
        subprocess.run(["rm", "-rf", work], check=True)
        os.makedirs(work)
        argv[argv.index("")] = work
        wall, rss = measure(argv)
        result[name] = {"wall_s": round(wall, 2), "peak_rss_mib": round(rss, 1)}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=int, nargs="+")
    parser.add_argument("--model-base", default="", help="production model base to use")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench_out"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    base = args.model_base or train_production(args.out)
    for rows in args.rows:
        print(json.dumps(bench(rows, base, args.out)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
