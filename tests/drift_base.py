"""A production version for drift tests and benchmarks: real TFDV statistics and the
exact drift reference of generated penguins-like rows, published beside a placeholder
model (no prediction profile). Used by tests/conftest.py and the drift benchmarks."""

from __future__ import annotations

import dataclasses
import json
import os

PENGUINS_PROBLEM_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                     "pipelines", "penguins", "problem.json")


@dataclasses.dataclass
class DriftBase:
    """A model base whose production version keeps real TFDV statistics of generated
    penguins-like rows (the model file is a placeholder: no prediction profile)."""

    base: str
    data: str  # the rows the statistics describe
    rows: int
    stats: object = None  # the TFDV statistics
    schema: object = None  # the schema inferred from them
    spec: object = None  # the problem spec


def make_stats_only_base(root, rows: int = 5000, seed: int = 11,
                         problem: str = PENGUINS_PROBLEM_PATH, edit=None) -> DriftBase:
    """``edit``: table -> table, applied to the generated rows before validate reads them
    (for example a column the problem adds)."""
    import tensorflow_data_validation as tfdv

    from kfp_ct.components.common import registry
    from kfp_ct.pipelines.entrypoints import synth
    from kfp_ct.components.common.problem import load_problem
    from kfp_ct.components.validate.logic import compute_statistics

    root = str(root)
    data = os.path.join(root, "base.csv")
    synth.write_penguins_like(data, rows, seed=seed)
    spec = load_problem(problem)
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(data)
    if table.column(spec.label).null_count:  # training needs a label on every row
        table = table.filter(pc.is_valid(table.column(spec.label)))
        pacsv.write_csv(table, data)
    if edit is not None:
        table = edit(table)
        pacsv.write_csv(table, data)
    rows = table.num_rows
    stats, _, reference = compute_statistics(data, spec)
    schema = tfdv.infer_schema(stats)
    model = os.path.join(root, "model")
    os.makedirs(model, exist_ok=True)
    with open(os.path.join(model, registry.SAVED_MODEL), "wb") as fh:
        fh.write(b"placeholder: the drift tests never load this model")
    from google.protobuf import text_format

    base = os.path.join(root, "serving")
    registry.publish(base, model, {"metrics": {}}, {
        registry.STATISTICS: stats.SerializeToString(),
        registry.SCHEMA: text_format.MessageToString(schema),
        registry.PROBLEM: spec.to_json(),
        registry.DRIFT_REFERENCE: json.dumps(reference),
    })
    return DriftBase(base=base, data=data, rows=rows, stats=stats, schema=schema, spec=spec)


def write_daily_partitions(data) -> None:
    """Three daily partitions of 1,500 penguins-like rows under ``data``: 2026-11-22 and
    -23 unshifted (seeds 1, 2), -24 with the island mix shifted (seed 3). The monitoring
    end-to-end tests train on the first and check the others."""
    from kfp_ct.pipelines.entrypoints import synth

    synth.write_penguins_like(data / "date=2026-11-22" / "part.csv", 1500, seed=1)
    synth.write_penguins_like(data / "date=2026-11-23" / "part.csv", 1500, seed=2)
    synth.write_penguins_like(data / "date=2026-11-24" / "part.csv", 1500, seed=3,
                              shift="category_mix")
