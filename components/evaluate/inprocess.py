"""Evaluate in this process, without Beam: what the TFMA path measures, computed directly.

The default when no ``beam_args`` are given. Each model is loaded once (the probe's load
is reused), its ``serving_default`` signature is called on the raw serialized
``tf.Example`` eval rows in batches, and the same numbers TFMA's metrics give are
accumulated overall and per slice:

- ``example_count``: every row (TFMA's ``ExampleCount``, unweighted).
- ``accuracy``: ``argmax(scores) == label id``, the label id being the class's index in
  the model's ``classes`` and, for a class the model lacks, ``len(classes) + i`` (i: its
  place among the classes it lacks, sorted), as ``logic._write_label_ids`` gives TFMA.
  TFMA's value is a Keras ``SparseCategoricalAccuracy``, float32 ``total / count``: both
  are whole numbers, exact in float32, so dividing them in float32 gives the same bits.
- ``mse``, ``mae`` (regression): TFMA's own metrics (``mean_regression_error.py``, no
  Keras): per row ``d = label - prediction`` in float32, the error ``norm(d) ** 2``
  (norm in float32, squared in float64) or ``abs(d)``, summed in float64 row after row;
  a NaN error is left out of the sum and of the count. The same here, so the values
  agree to float64 rounding (TFMA's sum order within and across Beam's bundles).
- the confusion matrix (TFMA's ``MultiClassConfusionMatrixPlot`` at its default
  threshold 0.0): actual = label id, predicted = ``argmax(scores)`` unless that score is
  <= 0.0 (then no predicted class: the row is in no cell).

Slices follow TFMA's slicer on the raw features: a row belongs to one slice per distinct
value of the slice feature it holds; a row whose feature is absent or has no values is
in none of that feature's slices (still in the overall one). Slice names are
``logic._slice_name``'s: text as it is, numbers as TFMA's slice-key proto keeps them
(float32; a whole number without a decimal point).

No Beam and no TFMA are imported here.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kfp_ct.components.common import metrics as metrics_lib

BATCH_ROWS = 1024
#: TFMA's MultiClassConfusionMatrixPlot default threshold: a top score <= it predicts
#: no class.
CONFUSION_THRESHOLD = 0.0


@dataclasses.dataclass
class Serving:
    """A loaded SavedModel's serving signature (``loaded`` keeps its variables alive)."""
    loaded: object
    fn: object
    input_name: str

    def __call__(self, rows: list[bytes]) -> dict:
        import tensorflow as tf

        out = self.fn(**{self.input_name: tf.constant(rows, dtype=tf.string)})
        return {k: v.numpy() for k, v in out.items()}


class SliceValueError(ValueError):
    """A slice feature's value that TFMA cannot name either (text that is not UTF-8)."""


def slice_value_name(column: str, value) -> str:
    """``column=value`` as ``logic._slice_name`` names a TFMA slice key of that value."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exc:  # TFMA's slicer refuses it too
            raise SliceValueError(
                f"non-UTF-8 value {value!r} in slice column {column!r}") from exc
    elif isinstance(value, float):
        value = float(np.float32(value))  # TFMA's SingleSliceKey.float_value is a float32
        if value.is_integer():
            value = int(value)
    return f"{column}={value}"


def _values(example, name: str) -> list:
    feature = example.features.feature.get(name)
    if feature is None:
        return []
    kind = feature.WhichOneof("kind")
    return list(getattr(feature, kind).value) if kind else []


def row_slices(example, slices: list[str]) -> list[str]:
    """The slice names one parsed ``tf.Example`` belongs to, the overall one ("") first."""
    names = [""]
    for column in slices:
        names += [slice_value_name(column, v)
                  for v in sorted(set(_values(example, column)))]  # TFMA: np.unique
    return names


def label_ids(vocabulary: list[str], unseen: dict[str, int]) -> dict[str, int]:
    """Label text -> class id for a model: its own classes, then the ones it lacks."""
    return {**{c: i for i, c in enumerate(vocabulary)},
            **{c: len(vocabulary) + i for i, c in enumerate(sorted(unseen))}}


class _Tally:
    """One model's running sums for one slice."""

    def __init__(self, classes: int, rows: int):
        self.count = 0
        self.correct = 0
        self.squared = 0.0
        self.absolute = 0.0
        self.n_squared = self.n_absolute = 0  # rows whose error is not NaN
        self.matrix = np.zeros((rows, classes), dtype=np.int64) if classes else None

    def metrics(self, task: str) -> dict:
        out = {metrics_lib.EXAMPLE_COUNT: self.count}
        if not self.count:
            return out
        if task == "classification":  # Keras: float32 total / float32 count
            out[metrics_lib.ACCURACY] = float(np.float32(self.correct) / np.float32(self.count))
        else:
            out[metrics_lib.MSE] = (self.squared / self.n_squared if self.n_squared
                                    else float("nan"))
            out[metrics_lib.MAE] = (self.absolute / self.n_absolute if self.n_absolute
                                    else float("nan"))
        return out


class ModelFailed(Exception):
    """A model's signature failed on a batch of the eval rows."""


def classification_batch(outputs: dict, ids: dict[str, int], labels: list[str]):
    scores = np.asarray(outputs["scores"], dtype=np.float32)
    if scores.ndim != 2 or scores.shape[0] != len(labels):
        raise ModelFailed(f"'scores' has shape {scores.shape}, expected [{len(labels)}, C]")
    actual = np.array([ids[v] for v in labels], dtype=np.int64)
    top = np.argmax(scores, axis=1)
    correct = top == actual
    predicted = np.where(scores[np.arange(len(top)), top] > CONFUSION_THRESHOLD, top, -1)
    return actual, predicted, correct


def regression_batch(outputs: dict, labels: np.ndarray):
    pred = np.asarray(outputs["outputs"], dtype=np.float32)
    if pred.ndim == 0 or pred.shape[0] != len(labels):
        raise ModelFailed(f"'outputs' has shape {pred.shape}, expected [{len(labels)}, 1]")
    diff = labels.reshape(-1, 1) - pred.reshape(len(labels), -1)  # float32
    norm = np.sqrt(np.sum(diff * diff, axis=1, dtype=np.float32))  # np.linalg.norm
    squared = norm.astype(np.float64) ** 2
    absolute = np.abs(diff).astype(np.float64)
    if absolute.shape[1] != 1:  # TFMA's abs error is one value per row
        raise ModelFailed(f"'outputs' has {absolute.shape[1]} values per row, expected 1")
    return squared, absolute[:, 0]


def _add(total: float, values: np.ndarray) -> tuple[float, int]:
    """``total`` plus the non-NaN ``values`` one after the other (TFMA's order), and how
    many were added."""
    values = values[~np.isnan(values)]
    if not len(values):
        return total, 0
    return float(np.cumsum(np.concatenate([[total], values]))[-1]), len(values)


def evaluate(path: str, task: str, label: str, slices: list[str],
             models: dict[str, Serving], vocabularies: dict[str, list[str] | None],
             unseen: dict[str, dict[str, int]]) -> tuple[dict, dict, dict]:
    """Measures every model on the rows of the TFRecord file ``path``.

    Returns ``(metrics, confusion, failed)``: metrics ``{model: {slice_name: {metric:
    value}}}`` and confusion ``{model: {slice_name: matrix}}`` (classification; rows:
    actual, one more per class the model lacks; columns: predicted), shaped as
    ``logic._read_metrics`` / ``logic._read_confusion`` read them from TFMA's output;
    ``failed``: ``{model: why}`` for each model whose signature failed on a batch (left
    out of the other two). Raises ValueError for a row without exactly one label value
    and SliceValueError for a slice value TFMA cannot name.
    """
    import tensorflow as tf

    classification = task == "classification"
    ids = {m: label_ids(vocabularies[m], unseen.get(m, {})) for m in models} \
        if classification else {}
    tallies: dict = {m: {} for m in models}
    failed: dict[str, str] = {}
    row = 0
    for batch in tf.data.TFRecordDataset(path).batch(BATCH_ROWS):
        rows = batch.numpy().tolist()
        examples = [tf.train.Example.FromString(r) for r in rows]
        labels = []
        for i, example in enumerate(examples):
            values = _values(example, label)
            if len(values) != 1:
                raise ValueError(f"eval row {row + i} has {len(values)} values for the "
                                 f"label {label!r}, expected 1")
            labels.append(values[0].decode("utf-8", errors="replace") if classification
                          else values[0])
        members: dict[str, list[int]] = {}
        for i, example in enumerate(examples):
            for name in row_slices(example, slices):
                members.setdefault(name, []).append(i)
        members = {k: np.array(v, dtype=np.int64) for k, v in members.items()}
        label_array = None if classification else np.array(labels, dtype=np.float32)
        for model, serve in list(models.items()):
            if model in failed:
                continue
            try:
                outputs = serve(rows)
                parts = (classification_batch(outputs, ids[model], labels) if classification
                         else regression_batch(outputs, label_array))
            except Exception as exc:  # noqa: BLE001 - what failed is reported, not hidden
                failed[model] = (f"rows {row}..{row + len(rows) - 1}: {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:300] if str(exc) else ''}")
                tallies.pop(model, None)
                continue
            n_classes = len(vocabularies[model]) if classification else 0
            n_rows = n_classes + len(unseen.get(model, {}))
            for name, idx in members.items():
                tally = tallies[model].get(name)
                if tally is None:
                    tally = tallies[model][name] = _Tally(n_classes, n_rows)
                tally.count += len(idx)
                if classification:
                    actual, predicted, correct = (p[idx] for p in parts)
                    tally.correct += int(correct.sum())
                    keep = predicted >= 0
                    np.add.at(tally.matrix, (actual[keep], predicted[keep]), 1)
                else:
                    squared, absolute = (p[idx] for p in parts)
                    tally.squared, n_squared = _add(tally.squared, squared)
                    tally.absolute, n_absolute = _add(tally.absolute, absolute)
                    tally.n_squared += n_squared
                    tally.n_absolute += n_absolute
        row += len(rows)
    metrics = {m: {name: t.metrics(task) for name, t in per_slice.items()}
               for m, per_slice in tallies.items()}
    confusion = ({m: {name: t.matrix.tolist() for name, t in per_slice.items()}
                  for m, per_slice in tallies.items()} if classification else {})
    return metrics, confusion, failed
