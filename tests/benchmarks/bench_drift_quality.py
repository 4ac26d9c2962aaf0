"""Decision quality of the drift check against plain fixed TFDV thresholds (not a test).

    .venv/bin/python -m tests.benchmarks.bench_drift_quality [--windows 200] [--shifted 100]

Baseline: TFDV statistics of 10,000 generated penguins-like rows, kept beside a
production version (the same registry lookup the drift check always makes). Windows:
the same generator (kfp_ct.pipelines.entrypoints.synth), other seeds:

- false alarms: unshifted windows at 50, 500 and 5,000 rows (``--windows`` each);
- detection: each shift kind at its moderate strength, and at half of it, at 5,000 rows
  (``--shifted`` each).

"kfp-ct" alarms when the decision is DRIFT; it detects when the shifted feature is among
the drifted ones (default settings). "kfp-ct, level only" sets every threshold to 0, so
the no-drift level alone decides: its false-alarm rate checks the calibration itself
(it should stay at or under the 1% false-alarm rate). "TFDV fixed 0.1" is what a TFDV user gets with a drift comparator of
0.1 on every feature (JSD for numeric, L-infinity for categorical, as Vertex AI Model
Monitoring configures them) and TFDV's own schema checks: it alarms on any anomaly and
detects when the shifted feature has one. Statistics for TFDV come from
``tfdv.generate_statistics_from_dataframe`` of the same file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROBLEM = os.path.join(ROOT, "pipelines", "penguins", "problem.json")
BASE_ROWS = 10_000
FIXED = 0.1
# Which feature each shift moves (the label shift moves the label; measurements follow).
EXPECTED = {"numeric_mean": "body_mass_g", "category_mix": "island",
            "new_category": "island", "missing_column": "sex", "label": "species"}


def make_baseline(work: str):
    from tests.drift_base import make_stats_only_base

    made = make_stats_only_base(work, rows=BASE_ROWS, seed=12345, problem=PROBLEM)
    fixed = type(made.schema)()
    fixed.CopyFrom(made.schema)
    for feature in fixed.feature:
        if feature.type == 1:  # BYTES: categorical
            feature.drift_comparator.infinity_norm.threshold = FIXED
        else:
            feature.drift_comparator.jensen_shannon_divergence.threshold = FIXED
    return made.base, made.spec, made.stats, fixed


def tfdv_verdict(path: str, spec, base_stats, fixed_schema) -> set:
    """Features TFDV flags (any anomaly) on this window with fixed thresholds."""
    import pandas as pd
    import tensorflow_data_validation as tfdv

    frame = pd.read_csv(path, dtype={c: str for c in spec.categorical + (spec.label,)})
    frame = frame[[c for c in frame.columns if c in spec.features or c == spec.label]]
    stats = tfdv.generate_statistics_from_dataframe(frame)
    anomalies = tfdv.validate_statistics(stats, fixed_schema, previous_statistics=base_stats)
    return set(anomalies.anomaly_info)


def ours(path: str, baseline, settings) -> tuple[bool, set]:
    from kfp_ct.components.drift import logic

    scan = logic.scan_window(path, baseline, sample_rows=0)
    record = logic.decide([scan], baseline, settings)
    return record["decision"] == logic.DRIFT, set(record["drifted"])


def run(windows: int, shifted: int, work: str) -> dict:
    from kfp_ct.pipelines.entrypoints import synth
    from kfp_ct.components.drift import logic

    base, spec, base_stats, fixed = make_baseline(work)
    baseline = logic.load_baseline(base)
    settings = logic.Settings()
    level_only = logic.Settings(numeric=0.0, categorical=0.0)
    path = os.path.join(work, "window.csv")
    cases = [("none", None, n, windows) for n in (50, 500, 5000)]
    for kind in EXPECTED:
        moderate = synth.SHIFTS[kind][2]
        cases.append((kind, moderate, 5000, shifted))
        if moderate:
            cases.append((kind, moderate / 2, 5000, shifted))
    results = []
    seed = 0
    for kind, strength, rows, count in cases:
        tally = {"ours": 0, "level": 0, "tfdv": 0}
        started = time.perf_counter()
        for _ in range(count):
            seed += 1
            synth.write_penguins_like(path, rows, seed=100_000 + seed, shift=kind,
                                      strength=strength)
            alarm, drifted = ours(path, baseline, settings)
            level_alarm, level_drifted = ours(path, baseline, level_only)
            flagged = tfdv_verdict(path, spec, base_stats, fixed)
            if kind == "none":
                tally["ours"] += alarm
                tally["level"] += level_alarm
                tally["tfdv"] += bool(flagged)
            else:
                tally["ours"] += EXPECTED[kind] in drifted
                tally["level"] += EXPECTED[kind] in level_drifted
                tally["tfdv"] += EXPECTED[kind] in flagged
        row = {"shift": kind, "strength": strength, "rows": rows, "windows": count,
               "measure": "false alarms" if kind == "none" else "detected",
               "kfp_ct": round(tally["ours"] / count, 3),
               "kfp_ct_level_only": round(tally["level"] / count, 3),
               "tfdv_fixed_0.1": round(tally["tfdv"] / count, 3),
               "seconds": round(time.perf_counter() - started, 1)}
        print(json.dumps(row), flush=True)
        results.append(row)
    return {"baseline_rows": BASE_ROWS, "settings": settings.to_json(), "cases": results}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=200, help="unshifted windows per size")
    parser.add_argument("--shifted", type=int, default=100, help="windows per shift case")
    parser.add_argument("--out", default="", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kfp-ct-bench-drift-") as work:
        result = run(args.windows, args.shifted, work)
    print("\n| window | rows | measure | kfp-ct | kfp-ct, level only | TFDV fixed 0.1 |\n"
          "|---|---|---|---|---|---|")
    for r in result["cases"]:
        shift = r["shift"] + ("" if r["strength"] in (None, 0.0) else f" {r['strength']:g}")
        print(f"| {shift} | {r['rows']} | {r['measure']} ({r['windows']}) | "
              f"{100 * r['kfp_ct']:.1f}% | {100 * r['kfp_ct_level_only']:.1f}% | "
              f"{100 * r['tfdv_fixed_0.1']:.1f}% |")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
