"""A production version for performance-monitoring tests and benchmarks: a real penguins
SavedModel beside real TFDV statistics of generated rows, with the metric it had on
generated eval rows and the calibration push fits on them (the same code push runs)."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from drift_base import PENGUINS_PROBLEM_PATH  # tests/ is on sys.path


@dataclasses.dataclass
class PerfBase:
    base: str
    accuracy: float  # on the eval rows, kept in the version's metadata
    eval_rows: int
    calibration: dict


def labelled_examples(path: str, spec) -> tuple[list[bytes], list[str]]:
    """Serialized tf.Examples of a generated CSV's features, and its labels (rows with a
    label only)."""
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    from tfx_bsl.coders import example_coder

    from kfp_ct.components.common import data as data_lib

    table = pacsv.read_csv(path)
    table = table.filter(pc.is_valid(table.column(spec.label)))
    examples = []
    for batch in table.select(list(spec.features)).to_batches():
        examples += example_coder.RecordBatchToExamples(
            data_lib.as_list_batch(batch, spec, list(spec.features)))
    return examples, [str(v) for v in table.column(spec.label).to_pylist()]


def make_model_base(root, model_dir: str, stats_rows: int = 3000, eval_rows: int = 4000,
                    seed: int = 11) -> PerfBase:
    import tensorflow as tf
    import tensorflow_data_validation as tfdv
    from google.protobuf import text_format

    from kfp_ct.components.common import performance, registry, storage
    from kfp_ct.components.common.problem import load_problem
    from kfp_ct.components.push.canary import prediction_profile
    from kfp_ct.components.validate.logic import compute_statistics
    from kfp_ct.pipelines.entrypoints import synth

    root = str(root)
    spec = load_problem(PENGUINS_PROBLEM_PATH)
    data = os.path.join(root, "train.csv")
    synth.write_penguins_like(data, stats_rows, seed=seed)
    stats, _, reference = compute_statistics(data, spec)
    schema = tfdv.infer_schema(stats)
    eval_csv = os.path.join(root, "eval.csv")
    synth.write_penguins_like(eval_csv, eval_rows, seed=seed + 1)
    examples, labels = labelled_examples(eval_csv, spec)
    fn = tf.saved_model.load(model_dir).signatures["serving_default"]

    def call(batch, where):
        return fn(examples=tf.constant(batch, dtype=tf.string))

    profile = prediction_profile(call, examples, labels)
    calibration = profile.pop("calibration")
    tally = performance.Tally("classification")
    for start in range(0, len(examples), 1024):
        out = {k: v.numpy() for k, v in call(examples[start:start + 1024], "").items()}
        tally.add(out, labels[start:start + 1024])
    accuracy = tally.metrics()["values"]["accuracy"]
    base = os.path.join(root, "serving")
    local_model = os.path.join(root, "model")
    storage.download(model_dir, local_model)
    registry.publish(base, local_model, {
        "metrics": {"accuracy": accuracy, "example_count": tally.count},
        "key_metric": "accuracy"}, {
        registry.STATISTICS: stats.SerializeToString(),
        registry.SCHEMA: text_format.MessageToString(schema),
        registry.PROBLEM: spec.to_json(),
        registry.DRIFT_REFERENCE: json.dumps(reference),
        registry.PREDICTION_PROFILE: json.dumps(profile),
        registry.CALIBRATION: json.dumps(calibration),
    })
    assert np.isclose(calibration["accuracy"], accuracy)
    return PerfBase(base=base, accuracy=accuracy, eval_rows=tally.count,
                    calibration=calibration)
