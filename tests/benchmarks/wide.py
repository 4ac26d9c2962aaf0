"""A wider synthetic table for the benchmarks (not a test): 16 features, 3 classes.

10 numeric columns (4 of them bucketized, 1% missing in each) and 6 categorical ones with
vocabularies from 3 to 5,000 values (the largest kept to its top 1,000), and a label the
features predict (a linear score of 4 numerics and 2 categoricals, plus noise), so
training has something to learn. Seeded: the same rows for the same (rows, seed).

    .venv/bin/python -m tests.benchmarks.wide OUT.csv ROWS
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

NUMERIC = [f"num_{i}" for i in range(10)]
VOCABULARIES = {"cat_0": 20, "cat_1": 200, "cat_2": 1000, "cat_3": 5000, "cat_4": 50,
                "cat_5": 3}
CLASSES = ("low", "mid", "high")
CHUNK = 100_000

PROBLEM = {
    "label": "label",
    "task": "classification",
    "numeric": NUMERIC,
    "categorical": list(VOCABULARIES),
    "key": None,
    "eval_percent": 20,
    "options": {**{n: {"buckets": 10} for n in NUMERIC[:4]},
                "cat_3": {"top_k": 1000, "oov_buckets": 1}},
    "model": {"hidden_units": [64, 32], "learning_rate": 0.005, "batch_size": 40},
    "slices": ["cat_5"],
}


def problem_json() -> str:
    return json.dumps(PROBLEM, sort_keys=True)


def _chunk(rng: np.random.Generator, n: int):
    import pyarrow as pa

    columns, score = {}, np.zeros(n)
    for i, name in enumerate(NUMERIC):
        values = rng.normal(loc=i * 3.0, scale=1.0 + i, size=n)
        if i < 4:
            score += (values - i * 3.0) / (1.0 + i) * (1.0 if i % 2 == 0 else -0.7)
        missing = rng.random(n) < 0.01
        columns[name] = pa.array(np.where(missing, np.nan, values).astype(np.float32),
                                 from_pandas=True)
    for name, size in VOCABULARIES.items():
        # Zipf-like frequencies: a few common values, a long tail.
        weights = 1.0 / np.arange(1, size + 1)
        ids = rng.choice(size, size=n, p=weights / weights.sum())
        if name in ("cat_0", "cat_5"):
            score += (ids % 3 - 1) * 0.8
        columns[name] = pa.array([f"{name}_v{k}" for k in ids])
    score += rng.normal(scale=0.6, size=n)
    cuts = np.quantile(score, [1 / 3, 2 / 3])
    columns["label"] = pa.array(np.array(CLASSES)[np.searchsorted(cuts, score)])
    return pa.table(columns)


def write_wide(path: str, rows: int, seed: int = 0) -> str:
    """Writes ``rows`` rows to the CSV ``path`` (kept when it exists); returns the path."""
    import pyarrow.csv as pacsv

    if os.path.exists(path):
        return path
    rng = np.random.default_rng(seed)
    tmp = path + ".partial"
    with open(tmp, "wb") as sink:
        writer = None
        for start in range(0, rows, CHUNK):
            table = _chunk(rng, min(CHUNK, rows - start))
            if writer is None:
                writer = pacsv.CSVWriter(sink, table.schema)
            writer.write_table(table)
        writer.close()
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    print(write_wide(sys.argv[1], int(sys.argv[2])))
