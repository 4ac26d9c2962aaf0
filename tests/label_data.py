"""Penguins-like CSV files whose label classes fall where a test needs them.

The train/eval split hashes each row (components/common/data.eval_mask), so a row's split
is known only once it is written: these helpers write candidate rows, read them back
through the real reader, and keep the ones that landed in the wanted split.
"""

import csv
import os

import numpy as np
import pyarrow as pa

from kfp_ct.components.common import data
from kfp_ct.components.common.problem import load_problem

HERE = os.path.dirname(os.path.abspath(__file__))
PENGUINS_SPEC = os.path.join(os.path.dirname(HERE), "pipelines", "penguins", "problem.json")


def penguin_rows() -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the bundled penguins CSV, as text."""
    with open(data.bundled_penguins_path(), newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def write_csv(path, header, rows) -> str:
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([header] + rows)
    return str(path)


def eval_flags(path, spec=None) -> np.ndarray:
    """True for each row of the file that lands in the eval split."""
    spec = spec or load_problem(PENGUINS_SPEC)
    table = pa.Table.from_batches(list(data.iter_batches(str(path), spec))).combine_chunks()
    return data.eval_mask(table.to_batches()[0], spec)


def with_class_in_split(path, new_class: str, split: str, rows: int = 6, every: int = 5,
                        base=None) -> tuple[str, int]:
    """Writes ``base`` rows (default: penguins) where up to ``rows`` of them hold the label
    ``new_class``, each of them in ``split`` ("eval" or "train"). Returns (path, count)."""
    header, body = base if base is not None else penguin_rows()
    body = [list(r) for r in body]
    changed = list(range(0, len(body), every))
    for i in changed:
        body[i][0] = new_class
    write_csv(path, header, body)
    flags = eval_flags(path)
    kept = [i for i in changed if bool(flags[i]) == (split == "eval")][:rows]
    drop = set(changed) - set(kept)
    write_csv(path, header, [r for i, r in enumerate(body) if i not in drop])
    return str(path), len(kept)
