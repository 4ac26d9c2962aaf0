"""The no-skill predictor's metrics on the eval rows: what a model must beat to be useful.

Classification: always predicting the eval rows' most frequent class (its accuracy is
that class's share). Regression: always predicting the eval labels' mean (rmse, mse) or
median (mae). Both know the eval labels, which makes them a slightly stronger bar than
a predictor fitted on the training rows.

The gate's ``better_than_naive`` value threshold reads these (components/gate/logic.py);
the task defaults use it, so a problem compiled from the same YAML as penguins gets a
floor that fits its own data, with no accuracy number typed for penguins.
"""

from __future__ import annotations

import collections
import math

from kfp_ct.components.common import metrics as metrics_lib


def label_values(files: list[str], label: str, task: str) -> list:
    """The label of every raw eval row (serialized tf.Examples), missing ones left out."""
    import tensorflow as tf

    dtype = tf.string if task == "classification" else tf.float32
    spec = {label: tf.io.VarLenFeature(dtype)}
    values: list = []
    for batch in tf.data.TFRecordDataset(files).batch(8192):
        parsed = tf.io.parse_example(batch, spec)[label]
        values.extend(parsed.values.numpy().tolist())
    if task == "classification":
        return [v.decode("utf-8", errors="replace") for v in values]
    return [float(v) for v in values if math.isfinite(v)]


def naive_metrics(labels: list, task: str) -> dict:
    """``{"metrics": {name: value}, "predictor": words}``; empty metrics for no labels."""
    if not labels:
        return {"metrics": {}, "predictor": "no labelled eval rows"}
    n = len(labels)
    if task == "classification":
        value, count = collections.Counter(labels).most_common(1)[0]
        return {"metrics": {metrics_lib.ACCURACY: count / n},
                "predictor": f"always {value!r}, the most frequent class of the {n} eval rows"}
    mean = sum(labels) / n
    mse = sum((y - mean) ** 2 for y in labels) / n
    ordered = sorted(labels)
    median = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
    mae = sum(abs(y - median) for y in labels) / n
    return {"metrics": {metrics_lib.MSE: mse, metrics_lib.RMSE: math.sqrt(mse),
                        metrics_lib.MAE: mae},
            "predictor": f"always the eval labels' mean {mean:.6g} (rmse, mse) or median "
                         f"{median:.6g} (mae), over {n} rows"}
