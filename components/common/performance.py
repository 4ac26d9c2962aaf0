"""Model performance on a monitoring window: measured when labels arrive, estimated before.

**Realized.** The production model's answers on labelled rows give the task's main metric
and its companions, computed by evaluate's own code (``evaluate/inprocess.py``'s per-batch
functions, :func:`metrics.macro_precision_recall`) under evaluate's names
(:mod:`kfp_ct.components.common.metrics`). Each comes with an interval for this window
size: Wilson's score interval for accuracy, a normal interval for the mean squared error
(RMSE by the delta method). The version's value at push (its eval rows, in its
metadata) is the baseline. A **drop** is decided as drift is: worse than the baseline by
more than the user's tolerance *and* by more than sampling explains at these two sizes
(one-sided, at the false-alarm rate: the pooled binomial variance of both proportions for
accuracy). Below ``min_labels`` labelled rows the decision is ``INSUFFICIENT_LABELS``.

**Estimated** (classification; confidence-based performance estimation, as NannyML's
CBPE). At push the model's top score on its eval rows is calibrated against whether it
was right (isotonic regression, pool-adjacent-violators; :func:`fit_calibration`), and
the calibration is kept beside the version (``calibration.json``). A window's expected
accuracy is the mean calibrated confidence of its rows. It assumes that the relation
between features and label is unchanged (only the inputs moved: covariate shift); a
concept shift is invisible to it. Its interval adds the window's Bernoulli variance to
the calibration's own uncertainty.

No TensorFlow and no kfp here: outputs come in as numpy arrays.
"""

from __future__ import annotations

import dataclasses
import math
import statistics

import numpy as np

from kfp_ct.components.common import metrics as metrics_lib
from kfp_ct.components.common.drift import DRIFT

PERFORMANCE_DROP = "PERFORMANCE_DROP"
ESTIMATED_DROP = "ESTIMATED_DROP"
NO_DROP = "NO_DROP"
INSUFFICIENT_LABELS = "INSUFFICIENT_LABELS"
INSUFFICIENT_DATA = "INSUFFICIENT_DATA"
NOT_ESTIMATED = "NOT_ESTIMATED"

CALIBRATION_FORMAT = 1
INTERVAL = 0.95  # the interval shown beside each value (two-sided)
#: What the estimate takes for granted, said wherever it is shown.
ASSUMPTION = ("the relation between features and label is unchanged (only the inputs "
              "moved); a change in what the label means (concept shift) does not show in "
              "the estimate: labels show it")

DEFAULTS = {
    "tolerance": None,        # None: 0.02 for accuracy (points), 0.1 of the baseline for rmse
    "min_labels": 200,
    "estimated_tolerance": None,  # None: the same as tolerance
}
_UNIT_TOLERANCE = 0.02
_RELATIVE_TOLERANCE = 0.10


def _z(p: float) -> float:
    return statistics.NormalDist().inv_cdf(p)


def wilson(correct: int, n: int, level: float = INTERVAL) -> tuple[float, float]:
    """Wilson's score interval for a proportion ``correct / n``."""
    if n <= 0:
        return (0.0, 1.0)
    z = _z(0.5 + level / 2)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


# ------------------------------------------------------------------------ realized


@dataclasses.dataclass
class Tally:
    """Running sums over scored batches, as evaluate's in-process path keeps them."""

    task: str
    classes: list | None = None
    count: int = 0
    correct: int = 0
    squared: list = dataclasses.field(default_factory=list)
    absolute: list = dataclasses.field(default_factory=list)
    matrix: np.ndarray | None = None
    unseen: dict = dataclasses.field(default_factory=dict)
    top_scores: list = dataclasses.field(default_factory=list)
    predicted: list = dataclasses.field(default_factory=list)  # class names

    def add(self, outputs: dict, labels: list) -> None:
        """One batch: the serving signature's outputs (numpy) and the rows' labels."""
        from kfp_ct.components.evaluate import inprocess

        if self.task == "classification":
            classes = [c.decode() if isinstance(c, bytes) else str(c)
                       for c in np.asarray(outputs["classes"])[0]]
            if self.classes is None:
                self.classes = classes
            texts = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                     for v in labels]
            for t in texts:
                if t not in self.classes and t not in self.unseen:
                    self.unseen[t] = len(self.unseen)
            ids = inprocess.label_ids(self.classes, self.unseen)
            actual, predicted, correct = inprocess.classification_batch(outputs, ids, texts)
            self.correct += int(correct.sum())
            size = len(self.classes) + len(self.unseen)
            matrix = np.zeros((size, len(self.classes)), dtype=np.int64)
            if self.matrix is not None:
                matrix[:self.matrix.shape[0]] = self.matrix
            keep = predicted >= 0
            np.add.at(matrix, (actual[keep], predicted[keep]), 1)
            self.matrix = matrix
            top = np.asarray(outputs["scores"], dtype=np.float64)
            self.top_scores.append(top.max(axis=1))
            self.predicted.append(np.asarray(self.classes, dtype=object)[top.argmax(axis=1)])
        else:
            squared, absolute = inprocess.regression_batch(
                outputs, np.asarray(labels, dtype=np.float32))
            self.squared.append(squared)
            self.absolute.append(absolute)
        self.count += len(labels)

    def metrics(self) -> dict:
        """The metrics under evaluate's names, each with its interval when it has one:
        ``{name: value}``, ``{name: (low, high)}``."""
        out, intervals = {metrics_lib.EXAMPLE_COUNT: self.count}, {}
        if not self.count:
            return {"values": out, "intervals": intervals}
        if self.task == "classification":
            out[metrics_lib.ACCURACY] = self.correct / self.count
            intervals[metrics_lib.ACCURACY] = wilson(self.correct, self.count)
            out.update(metrics_lib.macro_precision_recall(self.matrix.tolist()))
        else:
            sq = np.concatenate(self.squared)
            ab = np.concatenate(self.absolute)
            sq, ab = sq[~np.isnan(sq)], ab[~np.isnan(ab)]
            if len(sq):
                mse = float(sq.mean())
                out[metrics_lib.MSE] = mse
                out[metrics_lib.RMSE] = math.sqrt(mse)
                out[metrics_lib.MAE] = float(ab.mean())
                se = float(sq.std(ddof=1) / math.sqrt(len(sq))) if len(sq) > 1 else math.inf
                z = _z(0.5 + INTERVAL / 2)
                intervals[metrics_lib.MSE] = (max(0.0, mse - z * se), mse + z * se)
                intervals[metrics_lib.RMSE] = tuple(math.sqrt(v) for v in intervals[metrics_lib.MSE])
        return {"values": out, "intervals": intervals}


@dataclasses.dataclass(frozen=True)
class Baseline:
    """The version's metric at push: its value and how many eval rows it was measured on."""

    metric: str
    value: float | None
    rows: int
    version: int | None = None


def baseline_of(metadata: dict | None, task: str, version: int | None = None) -> Baseline:
    metric = metrics_lib.MAIN_METRIC[task]
    found = (metadata or {}).get("metrics") or {}
    value = found.get(metric)
    rows = found.get(metrics_lib.EXAMPLE_COUNT) or 0
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    return Baseline(metric, float(value) if ok else None, int(rows), version)


def tolerance_for(metric: str, baseline: float | None, given: float | None) -> float:
    """The user's tolerance, or the default: 2 points of a unit metric, 10% of an error."""
    if given is not None:
        return float(given)
    if metric in (metrics_lib.ACCURACY, metrics_lib.MACRO_PRECISION, metrics_lib.MACRO_RECALL):
        return _UNIT_TOLERANCE
    return _RELATIVE_TOLERANCE * abs(baseline or 0.0)


def beyond(drop: float, tolerance: float, noise: float) -> bool:
    """The rule of every drop, as of drift: worse by more than the user's tolerance *and*
    by more than sampling explains."""
    return drop > tolerance and drop > noise


def _worse_by(metric: str, baseline: float, value: float) -> float:
    """How much worse ``value`` is than ``baseline`` (positive: worse)."""
    return (baseline - value) if metrics_lib.HIGHER_IS_BETTER.get(metric, True) else (value - baseline)


def _fmt(metric: str, x: float) -> str:
    return f"{x:.4f}" if metric != metrics_lib.EXAMPLE_COUNT else str(int(x))


def realized_check(tally: Tally, baseline: Baseline, false_alarm_rate: float,
                   min_labels: int, tolerance: float | None) -> dict:
    """The realized-performance decision of one labelled window (no I/O)."""
    measured = tally.metrics()
    values, intervals = measured["values"], measured["intervals"]
    metric = baseline.metric
    value = values.get(metric)
    low, high = intervals.get(metric, (None, None))
    out = {"metric": metric, "value": value, "low": low, "high": high, "rows": tally.count,
           "baseline": baseline.value, "baseline_rows": baseline.rows,
           "baseline_version": baseline.version, "interval": INTERVAL,
           "companions": {k: v for k, v in values.items() if k != metric},
           "companion_intervals": {k: list(v) for k, v in intervals.items() if k != metric},
           "false_alarm_rate": false_alarm_rate, "min_labels": min_labels}
    if tally.count < min_labels or value is None:
        out.update(decision=INSUFFICIENT_LABELS, tolerance=None, drop=None, noise=None,
                   reason=f"{tally.count} labelled row(s), fewer than min_labels={min_labels}: "
                          "no performance decision (never a drop)")
        return out
    if baseline.value is None:
        out.update(decision=NO_DROP, tolerance=None, drop=None, noise=None,
                   reason=f"{metric} {value:.4f} on {tally.count} labelled rows; version "
                          f"{baseline.version} kept no {metric} from push, so no drop can be "
                          "decided")
        return out
    tol = tolerance_for(metric, baseline.value, tolerance)
    drop = _worse_by(metric, baseline.value, value)
    z = _z(1 - false_alarm_rate)
    if metric == metrics_lib.ACCURACY:
        m = max(baseline.rows, 1)
        # Both proportions measure the same accuracy when nothing changed: their pooled
        # value (with two pseudo-counts each way, so a perfect eval score still has a
        # variance) gives the difference's standard error.
        pooled = (baseline.value * m + tally.correct + 2) / (m + tally.count + 4)
        se = math.sqrt(pooled * (1 - pooled) * (1 / m + 1 / tally.count))
    else:
        # Error metrics: the window's own standard error (the eval rows' is not kept).
        se = ((high - low) / (2 * _z(0.5 + INTERVAL / 2))) if high is not None else math.inf
    noise = z * se
    worse = "below" if metrics_lib.HIGHER_IS_BETTER.get(metric, True) else "above"
    base = (f"{metric} {value:.4f} [{low:.4f}, {high:.4f}] on {tally.count} labelled rows, "
            f"{abs(drop):.4f} {worse if drop > 0 else 'better than'} the {baseline.value:.4f} "
            f"version {baseline.version} had on its {baseline.rows} eval rows at push")
    if beyond(drop, tol, noise):
        decision = PERFORMANCE_DROP
        reason = (f"{base}: a drop beyond the tolerance {tol:.4g} and beyond what sampling "
                  f"explains at these sizes ({noise:.4f})")
    else:
        decision = NO_DROP
        why = ("within the tolerance" if drop <= tol else "within sampling noise")
        reason = f"{base}: {why} (tolerance {tol:.4g}, sampling {noise:.4f})"
    out.update(decision=decision, tolerance=tol, drop=drop, noise=noise, reason=reason)
    return out


# ------------------------------------------------------------------------ calibration


def isotonic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pool-adjacent-violators: the non-decreasing step fit of ``y`` on ``x``.

    Returns (the largest x of each block, fitted y per block, rows per block)."""
    order = np.argsort(x, kind="stable")
    xs, ys = np.asarray(x, dtype=np.float64)[order], np.asarray(y, dtype=np.float64)[order]
    # Equal x values form one block first (a step function cannot split them).
    uniq, start = np.unique(xs, return_index=True)
    counts = np.diff(np.append(start, len(xs)))
    sums_y = np.add.reduceat(ys, start)
    blocks = [[float(sy), int(c), float(u)] for sy, c, u in zip(sums_y, counts, uniq)]
    stack: list[list[float]] = []
    for b in blocks:
        stack.append(b)
        while len(stack) > 1 and stack[-2][0] / stack[-2][1] > stack[-1][0] / stack[-1][1]:
            sy, c, upper = stack.pop()
            stack[-1][0] += sy
            stack[-1][1] += c
            stack[-1][2] = upper
    sy = np.array([s[0] for s in stack])
    n = np.array([s[1] for s in stack], dtype=np.float64)
    return np.array([s[2] for s in stack]), sy / n, n


MIN_CLASS_ROWS = 100  # eval rows a predicted class needs for a calibration of its own


def _steps(scores: np.ndarray, correct: np.ndarray) -> dict:
    """The isotonic fit as a step function: ``x`` the largest score of each step, ``y``
    its chance of being right, ``n`` its rows. A score maps to the first step whose ``x``
    it does not exceed (the last step past the end): on the rows it was fitted on, the
    mean of the fit is their accuracy exactly (interpolating between steps was not: it
    pulled rows below a step's right end toward the step before)."""
    x, y, n = isotonic(scores, correct)
    # Neighbouring blocks with the same fitted value are one step: merged, the file stays
    # small (a model right on almost every row has long runs of 1.0).
    last = np.concatenate([np.diff(y) > 0, [True]])
    groups = np.concatenate([[0], np.cumsum(last)[:-1]])
    n_merged = np.bincount(groups, weights=n)
    return {"x": x[last].tolist(), "y": y[last].tolist(),
            "n": [int(v) for v in n_merged.tolist()]}


def _lookup(steps: dict, scores: np.ndarray) -> np.ndarray:
    upper = np.asarray(steps["x"], dtype=np.float64)
    index = np.minimum(np.searchsorted(upper, scores, side="left"), len(upper) - 1)
    return np.asarray(steps["y"], dtype=np.float64)[index]


def fit_calibration(top_scores: np.ndarray, correct: np.ndarray, classes: list[str],
                    predicted: np.ndarray | None = None) -> dict:
    """The calibration kept beside a version (JSON-ready): top score -> P(right), overall
    and, with ``predicted``, per predicted class (NannyML calibrates one-vs-rest per class:
    the same score means a different chance of being right for each class the model
    names, and a covariate shift changes the mix of classes)."""
    top_scores = np.asarray(top_scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if len(top_scores) == 0:
        raise ValueError("no scored rows to calibrate on")
    doc = {"format": CALIBRATION_FORMAT, "method": "isotonic (pool-adjacent-violators) of "
           "the top class score against being right, on the eval rows at push, overall and "
           f"per predicted class with at least {MIN_CLASS_ROWS} rows",
           "rows": int(len(correct)), "accuracy": float(correct.mean()),
           "classes": list(classes), **_steps(top_scores, correct), "per_class": {}}
    if predicted is not None:
        predicted = np.asarray(predicted, dtype=str)
        for name in sorted(set(predicted.tolist())):
            mask = predicted == name
            if mask.sum() >= MIN_CLASS_ROWS:
                doc["per_class"][name] = _steps(top_scores[mask], correct[mask])
    return doc


def check_calibration(doc: dict) -> dict:
    """The calibration document, checked (ValueError names what is wrong)."""
    if not isinstance(doc, dict) or doc.get("format") != CALIBRATION_FORMAT:
        raise ValueError(f"not a calibration of format {CALIBRATION_FORMAT}")
    per_class = doc.get("per_class") or {}
    if not isinstance(per_class, dict):
        raise ValueError("per_class must be an object: class -> steps")
    for where, steps in [("overall", doc), *((f"class {k!r}", v) for k, v in per_class.items())]:
        x, y = steps.get("x"), steps.get("y")
        if not isinstance(x, list) or not isinstance(y, list) or len(x) != len(y) or not x:
            raise ValueError(f"{where}: x and y must be lists of the same, non-zero length")
        if any(b < a for a, b in zip(y, y[1:])) or any(b <= a for a, b in zip(x, x[1:])):
            raise ValueError(f"{where}: the calibration is not non-decreasing")
        if not all(0.0 <= v <= 1.0 for v in y):
            raise ValueError(f"{where}: calibrated values must lie in [0, 1]")
    int(doc["rows"])
    float(doc["accuracy"])
    return doc


def calibrated(doc: dict, top_scores: np.ndarray, predicted: np.ndarray | None = None
               ) -> np.ndarray:
    """P(right) of each row: the step of its top score in the fit of its predicted class
    (else the overall one)."""
    scores = np.asarray(top_scores, dtype=np.float64)
    out = _lookup(doc, scores)
    if predicted is not None:
        predicted = np.asarray(predicted, dtype=str)
        for name, steps in (doc.get("per_class") or {}).items():
            mask = predicted == name
            if mask.any():
                out[mask] = _lookup(steps, scores[mask])
    return out


def estimated_check(doc: dict | None, top_scores: np.ndarray | None, baseline: Baseline,
                    false_alarm_rate: float, min_rows: int, tolerance: float | None,
                    why_not: str = "", predicted: np.ndarray | None = None) -> dict:
    """The estimated-accuracy decision of a window (no labels needed; no I/O)."""
    out = {"metric": metrics_lib.ACCURACY, "value": None, "low": None, "high": None,
           "rows": 0 if top_scores is None else int(len(top_scores)),
           "baseline": baseline.value, "baseline_version": baseline.version,
           "interval": INTERVAL, "assumes": ASSUMPTION, "method": "CBPE"}
    if doc is None or top_scores is None:
        out.update(decision=NOT_ESTIMATED, reason=why_not or "not estimated")
        return out
    n = len(top_scores)
    if n < min_rows:
        out.update(decision=INSUFFICIENT_DATA,
                   reason=f"{n} scored row(s), fewer than min_rows={min_rows}: no estimate")
        return out
    c = calibrated(doc, top_scores, predicted)
    value = float(c.mean())
    m = max(int(doc["rows"]), 1)
    base_value = baseline.value if baseline.value is not None else float(doc["accuracy"])
    # The window's rows are Bernoulli(c_i); the calibration itself is known to about the
    # binomial error of its eval rows (two pseudo-counts keep it above 0 at 100%).
    p_cal = (float(doc["accuracy"]) * m + 2) / (m + 4)
    se = math.sqrt(float(np.sum(c * (1 - c))) / (n * n) + p_cal * (1 - p_cal) / m)
    z2 = _z(0.5 + INTERVAL / 2)
    low, high = max(0.0, value - z2 * se), min(1.0, value + z2 * se)
    tol = tolerance_for(metrics_lib.ACCURACY, base_value, tolerance)
    drop = base_value - value
    noise = _z(1 - false_alarm_rate) * se
    base = (f"estimated accuracy {value:.4f} [{low:.4f}, {high:.4f}] on {n} rows, against "
            f"{base_value:.4f} at push")
    if beyond(drop, tol, noise):
        decision = ESTIMATED_DROP
        reason = (f"{base}: an expected drop of {drop:.4f}, beyond the tolerance {tol:.4g} "
                  f"and the estimate's uncertainty ({noise:.4f})")
    else:
        decision = NO_DROP
        reason = f"{base}: no expected drop beyond the tolerance {tol:.4g} and uncertainty {noise:.4f}"
    out.update(value=value, low=low, high=high, decision=decision, tolerance=tol, drop=drop,
               noise=noise, reason=reason, baseline=base_value)
    return out


def findings_of(record: dict) -> list[str]:
    """What a decision record (``drift.json``) shows: DRIFT, PERFORMANCE_DROP,
    ESTIMATED_DROP, in that order. Its ``findings`` when it has them; derived from its
    decisions otherwise (a record written before the performance checks: DRIFT or none)."""
    if isinstance(record.get("findings"), list):
        return list(record["findings"])
    perf = record.get("performance") or {}
    out = [DRIFT] if record.get("decision") == DRIFT else []
    for part, kind in (("realized", PERFORMANCE_DROP), ("estimated", ESTIMATED_DROP)):
        if (perf.get(part) or {}).get("decision") == kind:
            out.append(kind)
    return out
