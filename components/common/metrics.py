"""The metric names evaluate reports, the gate thresholds and versions show, with their
direction.

One place for them: evaluate names TFMA's metrics with these, the gate checks a
threshold's direction against ``HIGHER_IS_BETTER`` (a change threshold on ``mse`` that
calls higher better would bless a worse model as an improvement), and the registry shows
each version's ``MAIN_METRIC``.
"""

from __future__ import annotations

import math

EXAMPLE_COUNT = "example_count"
ACCURACY = "accuracy"
MACRO_PRECISION = "macro_precision"  # from the confusion matrix, classification only
MACRO_RECALL = "macro_recall"
MSE = "mse"
MAE = "mae"
RMSE = "rmse"

#: Direction of every quality metric evaluate emits (example_count has none).
HIGHER_IS_BETTER: dict[str, bool] = {ACCURACY: True, MACRO_PRECISION: True,
                                     MACRO_RECALL: True, MSE: False, MAE: False,
                                     RMSE: False}

#: The values each metric can take, (lowest, highest), inclusive: the gate refuses a
#: threshold outside them (one no model can meet, or one no model can fail).
RANGES: dict[str, tuple[float, float]] = {
    EXAMPLE_COUNT: (0.0, math.inf), ACCURACY: (0.0, 1.0), MACRO_PRECISION: (0.0, 1.0),
    MACRO_RECALL: (0.0, 1.0), MSE: (0.0, math.inf), MAE: (0.0, math.inf),
    RMSE: (0.0, math.inf)}

#: The overall metrics evaluate emits for each task.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": (EXAMPLE_COUNT, ACCURACY, MACRO_PRECISION, MACRO_RECALL),
    "regression": (EXAMPLE_COUNT, MSE, MAE, RMSE),
}

#: The one metric a person reads first for a task (``versions`` shows it).
MAIN_METRIC: dict[str, str] = {"classification": ACCURACY, "regression": RMSE}

#: The metrics evaluate also measures for the no-skill predictor (components/evaluate/
#: naive.py), which the gate's ``better_than_naive`` compares with.
NAIVE_METRICS: dict[str, tuple[str, ...]] = {
    "classification": (ACCURACY,),
    "regression": (MSE, MAE, RMSE),
}

#: Below this many eval rows the gate notes how uncertain its decision is.
FEW_EXAMPLES = 200


def direction_words(metric: str) -> str:
    """``"higher is better"`` / ``"lower is better"`` / ``"no known direction"``."""
    known = HIGHER_IS_BETTER.get(metric)
    if known is None:
        return "no known direction"
    return "higher is better" if known else "lower is better"


def known_directions() -> str:
    """E.g. ``accuracy (higher is better), mse (lower is better), ...``."""
    return ", ".join(f"{m} ({direction_words(m)})" for m in HIGHER_IS_BETTER)


def macro_precision_recall(matrix: list[list[int]]) -> dict:
    """Macro precision over predicted classes, macro recall over present classes.

    Rows past the columns are classes the model does not have (it can never predict
    them): their rows count against the precision of what was predicted, and their
    recall is 0.
    """
    n = len(matrix[0]) if matrix else 0
    precisions = [matrix[c][c] / col for c in range(n)
                  if (col := sum(row[c] for row in matrix))]
    recalls = [(matrix[c][c] if c < n else 0) / row
               for c in range(len(matrix)) if (row := sum(matrix[c]))]
    out = {}
    if precisions:
        out[MACRO_PRECISION] = sum(precisions) / len(precisions)
    if recalls:
        out[MACRO_RECALL] = sum(recalls) / len(recalls)
    return out
