"""Drift measures and their calibration: the math shared by push and the drift check.

A feature's training distribution is a :class:`Reference`: counts over *cells*.

- numeric: ``missing``, ``< min``, the training histogram's buckets, ``> max``. The
  buckets are TFDV's STANDARD histogram (equal width between the training min and max);
  a window value is counted in the training bucket it falls in, so both sides share one
  set of cells.
- categorical: ``missing``, each training value (TFDV's top values), ``(other)`` for the
  training mass outside the top values, then any value the window brings outside them.

What training had is a separate question from the cells: a categorical reference made
from the data also keeps its **vocabulary**, every distinct value training had (exact, up
to :data:`VOCABULARY_CAP` values), with a flag saying whether it is complete.
:meth:`Reference.training_had` answers from it, and answers "cannot know" where the
vocabulary was truncated or a reference predates it: a statement about the training data
must be true of the training data.

Measures are TFDV's comparators (what Vertex AI Model Monitoring uses too):
Jensen-Shannon divergence (log base 2, so 0..1) for numeric cells and L-infinity distance
(the largest change of any cell's share) for categorical ones. The missing share is one
more cell, so a column that empties out is drift too.

**Calibration.** A distance between two finite samples is never 0: with 10 fresh rows,
JSD is large even with no shift at all. :func:`null_distances` draws, ``resamples``
times, a training sample of the training size and a window of the window's size from
the *same* training distribution (multinomial over the cells) and measures each pair:
the spread of distances that sampling alone gives at this window size. The *no-drift
level* is its ``1 - alpha`` quantile, with ``alpha`` the false-alarm rate split over
every test of the window (Bonferroni), so the false-alarm rate holds for the window as a
whole, not per feature.

No TensorFlow, no kfp here: numpy only (pyarrow inside the functions that count Arrow batches).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Iterable

import numpy as np

NUMERIC = "numeric"
CATEGORICAL = "categorical"
JSD = "jensen_shannon_divergence"
LINF = "l_infinity"
MEASURE = {NUMERIC: JSD, CATEGORICAL: LINF}

MISSING = "(missing)"
OTHER = "(other)"
BELOW = "< min"
ABOVE = "> max"

DEFAULT_RESAMPLES = 4000
# Distinct values of a categorical column that the reference keeps as its vocabulary;
# beyond it the vocabulary is truncated (the most frequent values kept) and marked so.
VOCABULARY_CAP = 10_000
ROLE_FEATURE, ROLE_LABEL = "feature", "label"

# The drift check's decision record (written by the drift check, read by the trigger).
DRIFT_JSON = "drift.json"
DRIFT = "DRIFT"
NO_DRIFT = "NO_DRIFT"
INSUFFICIENT_DATA = "INSUFFICIENT_DATA"


@dataclasses.dataclass
class Reference:
    """A distribution over cells: training counts, the cell labels and how to fill them."""

    kind: str  # NUMERIC | CATEGORICAL
    counts: np.ndarray  # float counts per cell
    labels: list[str]
    edges: list[float] = dataclasses.field(default_factory=list)  # numeric bucket bounds
    values: list[str] = dataclasses.field(default_factory=list)  # categorical known values
    has_other: bool = False
    # Categorical: every distinct training value, most frequent first (None: not kept, as
    # in references made before it was); complete: no value was left out.
    vocabulary: list[str] | None = None
    vocabulary_complete: bool = False

    @property
    def rows(self) -> float:
        return float(self.counts.sum())

    def training_had(self, value: str) -> bool | None:
        """True: training had ``value``; False: it never had it (the vocabulary is
        complete); None: the reference cannot know (truncated or no vocabulary)."""
        if value in self.values:
            return True
        if self.vocabulary is not None and value in self._vocabulary_set:
            return True
        return False if self.vocabulary is not None and self.vocabulary_complete else None

    def kept_values(self) -> int:
        """How many training values the reference keeps (what "not among the N values
        kept from training" counts)."""
        return len(self.vocabulary) if self.vocabulary is not None else len(self.values)

    @functools.cached_property
    def _vocabulary_set(self) -> frozenset:  # references are not changed once made
        return frozenset(self.vocabulary or ())

    def to_json(self) -> dict:
        out = {"kind": self.kind, "counts": [float(c) for c in self.counts],
               "labels": list(self.labels), "edges": list(self.edges),
               "values": list(self.values), "has_other": self.has_other}
        if self.vocabulary is not None:
            out.update(vocabulary=list(self.vocabulary),
                       vocabulary_complete=bool(self.vocabulary_complete))
        return out

    @classmethod
    def from_json(cls, data: dict) -> "Reference":
        if not isinstance(data, dict) or data.get("kind") not in (NUMERIC, CATEGORICAL):
            raise ValueError(f"not a drift reference: {str(data)[:80]!r}")
        counts = np.asarray(data["counts"], dtype=np.float64)
        if counts.ndim != 1 or len(counts) != len(data["labels"]) or (counts < 0).any():
            raise ValueError("drift reference: counts and labels do not match")
        vocabulary = data.get("vocabulary")
        if vocabulary is not None and not isinstance(vocabulary, list):
            raise ValueError("drift reference: the vocabulary is not a list")
        return cls(kind=data["kind"], counts=counts, labels=list(data["labels"]),
                   edges=[float(e) for e in data.get("edges", [])],
                   values=[str(v) for v in data.get("values", [])],
                   has_other=bool(data.get("has_other", False)),
                   vocabulary=None if vocabulary is None else [str(v) for v in vocabulary],
                   vocabulary_complete=vocabulary is not None
                   and data.get("vocabulary_complete") is True)


# -------------------------------------------------------------------- references


def numeric_reference(edges: Iterable[float], bucket_counts: Iterable[float],
                      missing: float) -> Reference:
    """Cells: missing, below the first edge, each bucket, above the last edge."""
    edges = [float(e) for e in edges]
    counts = [float(c) for c in bucket_counts]
    if len(edges) != len(counts) + 1 or not counts:
        raise ValueError(f"numeric reference needs K buckets and K+1 edges, got "
                         f"{len(counts)} and {len(edges)}")
    labels = [MISSING, BELOW] + [f"[{_short(a)}, {_short(b)})"
                                 for a, b in zip(edges[:-1], edges[1:])] + [ABOVE]
    return Reference(NUMERIC, np.array([float(missing), 0.0, *counts, 0.0]), labels,
                     edges=edges)


def categorical_reference(values: Iterable[str], value_counts: Iterable[float],
                          missing: float, other: float = 0.0) -> Reference:
    """Cells: missing, each known value, and ``(other)`` when training had more values."""
    values = [str(v) for v in values]
    counts = [float(missing), *[float(c) for c in value_counts]]
    labels = [MISSING, *values]
    has_other = other > 0
    if has_other:
        counts.append(float(other))
        labels.append(OTHER)
    return Reference(CATEGORICAL, np.array(counts), labels, values=values, has_other=has_other)


def numeric_reference_from_values(values: np.ndarray, buckets: int = 10) -> Reference:
    """A reference with TFDV-style equal-width buckets between the values' min and max
    (a value that is not finite counts as missing)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if not len(finite):
        edges = [0.0, 1.0]
    elif finite.max() <= finite.min():
        edges = [float(finite.min())] * 2
    else:
        edges = [float(e) for e in np.linspace(finite.min(), finite.max(), buckets + 1)]
    counter = Counter(numeric_reference(edges, [0.0] * (len(edges) - 1), 0.0))
    counter.add_numeric(np.where(np.isfinite(values), values, np.nan))
    return counter.reference()


def _short(x: float) -> str:
    return f"{x:.4g}"


def _bucket_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """0: below edges[0]; i in 1..K: bucket i ([e_{i-1}, e_i), the last one closed); K+1: above."""
    idx = np.searchsorted(edges, values, side="right")
    idx[values == edges[-1]] = len(edges) - 1
    return idx


def _feature_name(f) -> str:
    return f.path.step[-1] if f.path.step else f.name


def _columns(spec) -> list[tuple[str, str, bool]]:
    """(column, role, numeric) for every feature and the label."""
    out = [(c, ROLE_FEATURE, c in spec.numeric) for c in spec.features]
    return out + [(spec.label, ROLE_LABEL, spec.task == "regression")]


def references_from_statistics(stats, spec) -> tuple[int, dict]:
    """(training rows, {column: (role, Reference)}) from TFDV statistics alone.

    Numeric cells are TFDV's STANDARD histogram buckets with TFDV's counts, which TFDV
    interpolates from a quantile sketch: close, not exact (on discrete values such as
    whole millimetres the interpolation is biased). :func:`exact_reference` fixes that.
    """
    from tensorflow_metadata.proto.v0 import statistics_pb2

    if not stats.datasets:
        raise ValueError("the statistics hold no dataset")
    dataset = stats.datasets[0]
    rows = int(dataset.num_examples)
    by_name = {_feature_name(f): f for f in dataset.features}
    refs = {}
    for column, role, numeric in _columns(spec):
        f = by_name.get(column)
        if f is None:
            raise ValueError(f"no statistics for column {column!r}")
        if numeric:
            if not f.HasField("num_stats"):
                raise ValueError(f"column {column!r} is numeric in the spec but its statistics "
                                 "are not numeric")
            ns = f.num_stats
            hist = next((h for h in ns.histograms
                         if h.type == statistics_pb2.Histogram.STANDARD), None)
            if hist is None or not hist.buckets:
                edges, counts = [ns.min, ns.max], [float(ns.common_stats.num_non_missing)]
            else:
                edges = [hist.buckets[0].low_value] + [b.high_value for b in hist.buckets]
                counts = [b.sample_count for b in hist.buckets]
            refs[column] = (role, numeric_reference(edges, counts, ns.common_stats.num_missing))
        else:
            if not f.HasField("string_stats"):
                raise ValueError(f"column {column!r} is categorical in the spec but its "
                                 "statistics are not string statistics")
            ss = f.string_stats
            counts = [v.frequency for v in ss.top_values]
            other = max(0.0, float(ss.common_stats.num_non_missing) - sum(counts))
            refs[column] = (role, categorical_reference(
                [v.value for v in ss.top_values], counts, float(ss.common_stats.num_missing),
                other))
    return rows, refs


def quantile_edges(stats, column: str) -> list[float]:
    """The distinct boundaries of TFDV's QUANTILES histogram of ``column`` (equal-mass
    cells), or [] when the statistics have none."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    for f in stats.datasets[0].features:
        if _feature_name(f) == column and f.HasField("num_stats"):
            for h in f.num_stats.histograms:
                if h.type == statistics_pb2.Histogram.QUANTILES and h.buckets:
                    edges = [h.buckets[0].low_value] + [b.high_value for b in h.buckets]
                    return sorted({float(e) for e in edges if math.isfinite(e)})
    return []


def exact_reference(batches, stats, spec) -> dict:
    """The drift reference of the training data: exact counts per cell.

    Numeric cells are bounded by the distinct boundaries of TFDV's QUANTILES histogram
    (about equal mass each, the best cells for a test), counted exactly in a second pass
    over ``batches`` (Arrow batches of the same data); categorical cells are TFDV's top
    values. The same pass counts each categorical column's vocabulary (every distinct
    value, up to :data:`VOCABULARY_CAP`), which TFDV's top values cannot give: they hold
    20 values. JSON-ready: validate keeps it beside the statistics and push keeps it beside
    the version.
    """
    rows, refs, counters = reference_counters(stats, spec)
    vocabularies = vocabulary_counters(refs)
    seen = 0
    for batch in batches:
        seen += count_reference_cells(counters, batch)
        count_vocabularies(vocabularies, batch)
    return finish_reference(rows, refs, counters, seen, vocabularies)


def reference_counters(stats, spec) -> tuple[int, dict, dict]:
    """(rows, {column: (role, Reference)}, {numeric column: empty Counter}): what
    :func:`exact_reference` fills; the Beam path fills the counters on its workers."""
    rows, refs = references_from_statistics(stats, spec)
    counters = {}
    for column, (role, ref) in refs.items():
        if ref.kind == NUMERIC:
            edges = quantile_edges(stats, column) or ref.edges
            if len(edges) == 1:
                edges = [edges[0], edges[0]]
            counters[column] = Counter(numeric_reference(edges, [0.0] * (len(edges) - 1), 0.0))
    return rows, refs, counters


def count_reference_cells(counters: dict, batch) -> int:
    """Adds one batch to the numeric counters; returns its row count."""
    for column, counter in counters.items():
        array = batch.column(batch.schema.get_field_index(column))
        counter.add_numeric(array.cast("double").to_numpy(zero_copy_only=False))
    return batch.num_rows


def vocabulary_counters(refs: dict) -> dict:
    """{categorical column: empty Vocabulary} for :func:`count_vocabularies` to fill."""
    return {c: Vocabulary() for c, (_, ref) in refs.items() if ref.kind == CATEGORICAL}


def count_vocabularies(vocabularies: dict, batch) -> None:
    """Adds one batch's categorical values to ``vocabularies`` (column -> Vocabulary)."""
    for column, vocabulary in vocabularies.items():
        vocabulary.add(batch.column(batch.schema.get_field_index(column)))


def finish_reference(rows: int, refs: dict, counters: dict, seen: int,
                     vocabularies: dict | None = None) -> dict:
    """The JSON-ready reference document from filled counters (exact_reference).

    A categorical column keeps its vocabulary only when ``vocabularies`` counted every
    row; without one, the drift check says what the reference cannot know as such.
    """
    if seen != rows:
        raise ValueError(f"the data holds {seen} rows, its statistics {rows}")
    columns = {}
    for column, (role, ref) in refs.items():
        if column in counters:
            ref = counters[column].reference()
        vocabulary = (vocabularies or {}).get(column)
        if vocabulary is not None and vocabulary.rows == seen:
            values, complete = vocabulary.kept()
            ref = dataclasses.replace(ref, vocabulary=values, vocabulary_complete=complete)
        columns[column] = {"role": role, "reference": ref.to_json()}
    return {"rows": rows, "cells": "numeric: exact counts between TFDV's quantile boundaries; "
                                   "categorical: TFDV's top values, and the vocabulary of "
                                   f"every value training had (up to {VOCABULARY_CAP})",
            "columns": columns}


class Vocabulary:
    """The distinct values of a categorical column, counted exactly while there are at
    most ``cap`` of them. Memory stays bounded: past twice the cap, only the ``cap`` most
    frequent so far are tracked on, and the vocabulary is incomplete."""

    def __init__(self, cap: int | None = None):
        self.cap = int(VOCABULARY_CAP if cap is None else cap)
        self.counts: dict[str, int] = {}
        self.rows = 0
        self.truncated = False

    def add(self, array) -> None:
        """One column of one batch (Arrow; nulls are missing and are not values)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        self.rows += len(array)
        if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
            array = array.cast(pa.string())
        found = pc.value_counts(array.drop_null())
        counts = self.counts
        for value, n in zip(found.field("values").to_pylist(), found.field("counts").to_pylist()):
            counts[value] = counts.get(value, 0) + n
        if len(counts) > 2 * self.cap:
            self._prune()

    def merge(self, other: "Vocabulary") -> "Vocabulary":
        """Adds ``other``'s counts (a combine step; exact, so associative, until a prune)."""
        for value, n in other.counts.items():
            self.counts[value] = self.counts.get(value, 0) + n
        self.rows += other.rows
        self.truncated = self.truncated or other.truncated
        if len(self.counts) > 2 * self.cap:
            self._prune()
        return self

    def to_json(self) -> dict:
        return {"counts": dict(self.counts), "rows": self.rows, "truncated": self.truncated,
                "cap": self.cap}

    @classmethod
    def from_json(cls, data: dict) -> "Vocabulary":
        out = cls(data.get("cap"))
        out.counts = {str(v): int(n) for v, n in data["counts"].items()}
        out.rows, out.truncated = int(data["rows"]), bool(data["truncated"])
        return out

    def _prune(self) -> None:
        keep = sorted(self.counts, key=lambda v: (-self.counts[v], v))[:self.cap]
        self.counts = {v: self.counts[v] for v in keep}
        self.truncated = True

    def kept(self) -> tuple[list[str], bool]:
        """(values, most frequent first, at most ``cap``; complete)."""
        values = sorted(self.counts, key=lambda v: (-self.counts[v], v))
        return values[:self.cap], not self.truncated and len(values) <= self.cap


def references_from_document(doc: dict) -> tuple[int, dict]:
    """(rows, {column: (role, Reference)}) from an :func:`exact_reference` document."""
    return int(doc["rows"]), {c: (v["role"], Reference.from_json(v["reference"]))
                              for c, v in doc["columns"].items()}


# -------------------------------------------------------------------- window counts


class Counter:
    """Fills a reference's cells from streamed window values; values outside the cells get
    cells of their own (or the ``(other)`` cell, when training had one)."""

    def __init__(self, ref: Reference):
        self.ref = ref
        self.counts = np.zeros(len(ref.labels), dtype=np.float64)
        # Categorical window values outside the reference's cells. Whether training had
        # them is the reference's to say (Reference.training_had), not this dict's.
        self.new: dict[str, float] = {}
        self._index = {v: i + 1 for i, v in enumerate(ref.values)}

    def add_numeric(self, values: np.ndarray) -> None:
        """``values``: float array, NaN for missing; inf / -inf count as missing too (the
        rule training data is read with, components/common/data.py)."""
        values = np.asarray(values, dtype=np.float64)
        missing = ~np.isfinite(values)
        self.counts[0] += float(missing.sum())
        present = values[~missing]
        if present.size:
            idx = _bucket_index(present, np.asarray(self.ref.edges))
            self.counts[1:] += np.bincount(idx, minlength=len(self.ref.labels) - 1)

    def add_value_counts(self, counts: dict, missing: float) -> None:
        """``counts``: value -> count for one batch; ``missing``: null count."""
        self.counts[0] += float(missing)
        other = len(self.ref.labels) - 1 if self.ref.has_other else None
        for value, n in counts.items():
            i = self._index.get(value)
            if i is not None:
                self.counts[i] += n
            elif other is not None:
                self.counts[other] += n
                self.new[value] = self.new.get(value, 0.0) + n
            else:
                self.new[value] = self.new.get(value, 0.0) + n

    @property
    def rows(self) -> float:
        return float(self.counts.sum() + (0 if self.ref.has_other else sum(self.new.values())))

    def reference(self) -> Reference:
        """What was counted, as a reference over the same cells (numeric)."""
        return dataclasses.replace(self.ref, counts=self.counts.copy())

    def aligned(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(training counts, window counts, labels) over the union of cells."""
        ref = self.ref
        if ref.kind == NUMERIC or ref.has_other or not self.new:
            return ref.counts.copy(), self.counts.copy(), list(ref.labels)
        new = sorted(self.new, key=lambda v: (-self.new[v], v))
        return (np.concatenate([ref.counts, np.zeros(len(new))]),
                np.concatenate([self.counts, [self.new[v] for v in new]]),
                list(ref.labels) + new)


# ----------------------------------------------------------------------- distances


def _normalize(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=-1, keepdims=True)
    return np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)


def jsd(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence, log base 2 (0 = same, 1 = disjoint), along the last axis."""
    p, q = _normalize(p), _normalize(q)
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=-1)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum(axis=-1)
    return np.clip(0.5 * (kl_p + kl_q), 0.0, 1.0)


def linf(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """L-infinity distance of the two distributions (largest change of a cell's share)."""
    return np.abs(_normalize(p) - _normalize(q)).max(axis=-1)


def distance(kind: str, train: np.ndarray, window: np.ndarray) -> float:
    return float((jsd if kind == NUMERIC else linf)(train, window))


def null_distances(kind: str, train: np.ndarray, train_rows: int, window_rows: int,
                   resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Distances between a training sample and a window drawn from the same distribution.

    Both are multinomial draws over the training shares (``train`` counts): one of
    ``train_rows`` rows, one of ``window_rows`` rows, ``resamples`` times.
    """
    p = _normalize(train)
    rng = np.random.default_rng(seed)
    a = rng.multinomial(max(int(round(train_rows)), 1), p, size=resamples)
    b = rng.multinomial(max(int(window_rows), 1), p, size=resamples)
    return (jsd if kind == NUMERIC else linf)(a, b)


def no_drift_level(null: np.ndarray, alpha: float) -> float:
    """The ``1 - alpha`` quantile of the null distances (higher, conservative interpolation)."""
    return float(np.quantile(null, 1.0 - alpha, method="higher"))


def p_value(null: np.ndarray, observed: float) -> float:
    """Share of null distances at least as large as the observed one (+1 smoothing)."""
    return float((1 + np.count_nonzero(null >= observed - 1e-12)) / (len(null) + 1))


def bonferroni(alpha: float, tests: int) -> float:
    return alpha / max(int(tests), 1)


# ---------------------------------------------------------------------- predictions


def predicted_values(outputs: dict) -> tuple[str, np.ndarray]:
    """What the model predicted, from its ``serving_default`` outputs (numpy arrays).

    Classification (``scores`` + ``classes``): the predicted class of each row.
    Regression (``outputs``): the predicted value of each row.
    """
    if "scores" in outputs and "classes" in outputs:
        scores = np.asarray(outputs["scores"])
        classes = np.asarray(outputs["classes"])
        best = scores.argmax(axis=-1)
        picked = classes[np.arange(len(best)), best]
        return CATEGORICAL, np.array([v.decode() if isinstance(v, bytes) else str(v)
                                      for v in picked], dtype=object)
    if "outputs" in outputs:
        return NUMERIC, np.asarray(outputs["outputs"], dtype=np.float64).reshape(-1)
    raise ValueError(f"cannot tell the prediction from outputs {sorted(outputs)} "
                     "(expected scores + classes, or outputs)")


PREDICTION = "(prediction)"  # the predicted class (or value) of each row
CONFIDENCE = "(confidence)"  # classification: the top class score of each row
CONFIDENCE_EDGES = [i / 10 for i in range(11)]  # scores live in [0, 1]


def top_scores(outputs: dict) -> np.ndarray | None:
    """Classification: each row's highest class score (the model's confidence); None for
    regression."""
    if "scores" not in outputs:
        return None
    return np.asarray(outputs["scores"], dtype=np.float64).max(axis=-1)


def collect_predictions(outputs) -> tuple[str, np.ndarray, np.ndarray | None]:
    """(kind, predicted values, top scores or None) over ``outputs``: the serving
    signature's outputs (dicts of numpy arrays), one per batch of rows."""
    kinds, values, scores = set(), [], []
    for batch in outputs:
        kind, predicted = predicted_values(batch)
        kinds.add(kind)
        values.append(predicted)
        top = top_scores(batch)
        if top is not None:
            scores.append(top)
    if len(kinds) != 1:
        raise ValueError(f"expected predictions of one kind, got {sorted(kinds) or 'none'}")
    return kinds.pop(), np.concatenate(values), np.concatenate(scores) if scores else None


def confidence_reference(scores: np.ndarray) -> Reference:
    """Top scores counted in ten equal cells of [0, 1] (the same cells for every model)."""
    counter = Counter(numeric_reference(CONFIDENCE_EDGES, [0.0] * 10, 0.0))
    counter.add_numeric(np.asarray(scores, dtype=np.float64))
    return counter.reference()


def prediction_reference(kind: str, values: np.ndarray) -> Reference:
    """The reference of a model's predictions (push keeps it beside each version)."""
    if kind == NUMERIC:
        return numeric_reference_from_values(values)
    names, counts = np.unique(np.asarray(values, dtype=str), return_counts=True)
    return categorical_reference(list(names), counts, missing=0.0)
