"""Labelled rows for the realized-performance check: a labelled window, or served rows
joined to a labels file on a key column.

Two shapes, as labels arrive in practice:

- **A labelled window**: rows with their features and the label, read by the same rules
  as any window (CSV / Parquet, file, folder or glob, local or gs://; the null texts of
  ``data.py``). Rows whose label is missing are not labelled yet: counted, left out.
- **A join**: the serving request log (or the window) holds a key column the client sent
  with each request; a labels file holds that key and the label. The join's findings are
  each named in the record, with counts and example keys: served rows with no label yet,
  labels for rows never served (left out), rows with no key, a key served more than once
  (its first request is scored), a key labelled twice (the same label: kept once;
  different labels: refused, since the truth is unknown).

What comes out is what the production model is asked (serialized ``tf.Example``\\ s of the
features only) and each row's label.

No kfp here; TensorFlow only to read request-log TFRecords.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kfp_ct.components.common import data as data_lib
from kfp_ct.components.common.errors import InputDataError
from kfp_ct.components.common.problem import ProblemSpec

SHOWN_KEYS = 5  # example keys named per finding


@dataclasses.dataclass
class Labelled:
    """Labelled rows ready to score."""

    kind: str  # "labelled window" | "request log + labels" | "window + labels"
    path: str  # the labelled window, or the labels file
    key: str  # the join key ("" for a labelled window)
    files: list  # fingerprints of every file read (the window key covers them)
    examples: list  # serialized tf.Examples, features only
    labels: list  # one label per example (text for classification, float for regression)
    unlabelled: int = 0  # rows read that carry no label yet
    join: dict = dataclasses.field(default_factory=dict)
    notes: list = dataclasses.field(default_factory=list)


def _keys(values, shown: int = SHOWN_KEYS) -> list:
    return [str(v) for v in values[:shown]]


def _read_table(path: str, wanted: dict, what: str, required: list[str]) -> tuple[pa.Table, list]:
    """The wanted columns of every file at ``path`` (name -> float32 or string type)."""
    from kfp_ct.components.drift.logic import _fingerprint, _file_batches

    files = data_lib.resolve_inputs(path)
    tables = []
    for file in files:
        with data_lib.local_input(file) as local:
            header, batches = _file_batches(local, {c: False for c in wanted}, typed=False)
            missing = [c for c in required if c not in header]
            if missing:
                raise InputDataError(f"{file}: the {what} has no column(s) {missing} "
                                     f"(its columns: {header})")
            try:
                table = pa.Table.from_batches(list(batches))
            except pa.ArrowInvalid as exc:
                raise InputDataError(f"{file}: cannot parse: {str(exc).splitlines()[0]}") from None
        if table.num_rows == 0:
            raise InputDataError(f"{file}: the {what} file has no data rows")
        tables.append(pa.table([_as_text(table.column(c)) for c in wanted if c in header],
                               names=[c for c in wanted if c in header]))
    table = pa.concat_tables(tables, promote=True)
    return table, _fingerprint(files)


def _as_text(column) -> pa.ChunkedArray:
    """Values as text with the null texts of data.py as missing (keys and class labels)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    text = column.cast(pa.string()) if not pa.types.is_string(column.type) else column
    return data_lib.null_where_in(pc.utf8_trim_whitespace(text), data_lib.NULL_VALUES)


def _label_values(column, spec: ProblemSpec, where: str) -> list:
    text = _as_text(column)
    if spec.task == "classification":
        return text.to_pylist()
    out = []
    for i, v in enumerate(text.to_pylist()):
        if v is None:
            out.append(None)
            continue
        try:
            out.append(float(v))
        except ValueError:
            raise InputDataError(f"{where}: label {spec.label!r} of row {i + 1} is {v!r}, "
                                 "not a number (a regression label)") from None
    return out


def _typed_features(table: pa.Table, spec: ProblemSpec, where: str) -> pa.Table:
    """Feature columns in training's types (numbers as float32, as data.py reads them)."""
    types = data_lib.arrow_types(spec)
    columns = []
    for name in spec.features:
        column = table.column(name)
        target = types.get(name)
        if target is not None and not pa.types.is_string(target):
            text = _as_text(column)
            try:
                column = pc.cast(data_lib.null_where_in(text, data_lib.NUMERIC_NULL_VALUES),
                                 target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                bad = next(v for v in text.to_pylist() if v is not None and not _number(v))
                raise InputDataError(f"{where}: column {name!r} holds {bad!r}, not a number "
                                     "(training declared it numeric)") from None
        else:
            column = _as_text(column)
        columns.append(column)
    return pa.table(columns, names=list(spec.features))


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _examples(table: pa.Table, spec: ProblemSpec) -> list[bytes]:
    from tfx_bsl.coders import example_coder

    out = []
    for batch in table.combine_chunks().to_batches(max_chunksize=65_536):
        out += example_coder.RecordBatchToExamples(
            data_lib.as_list_batch(batch, spec, list(spec.features)))
    return out


def read_labelled_window(path: str, spec: ProblemSpec) -> Labelled:
    """Rows with features and label; rows without a label are counted, not scored."""
    wanted = {c: True for c in (*spec.features, spec.label)}
    table, files = _read_table(path, wanted, "labelled window", [*spec.features, spec.label])
    labels = _label_values(table.column(spec.label), spec, path)
    has = np.array([v is not None for v in labels], dtype=bool)
    table = table.filter(pa.array(has))
    out = Labelled(kind="labelled window", path=path, key="", files=files,
                   examples=_examples(_typed_features(table, spec, path), spec),
                   labels=[v for v in labels if v is not None], unlabelled=int((~has).sum()))
    if out.unlabelled:
        out.notes.append(f"{out.unlabelled} row(s) of the labelled window carry no label "
                         f"({spec.label!r} missing): not labelled yet, left out")
    return out


def _served_requests(path: str, key: str) -> tuple[list[bytes], list, list]:
    """(serialized tf.Examples, their key values as text or None, file fingerprints)."""
    from tfx_bsl.coders import example_coder

    from kfp_ct.components.drift.logic import (_fingerprint, _resolve_logs, _scalar_columns,
                                                logged_examples)

    files = _resolve_logs(path)
    decoder = example_coder.ExamplesToRecordBatchDecoder()
    examples, keys = [], []
    for file in files:
        found = logged_examples(file)
        if not found:
            continue
        table = _scalar_columns(decoder.DecodeBatch(found))
        if key not in table.schema.names:
            raise InputDataError(
                f"{file}: the requests carry no feature {key!r}, the key the labels are joined "
                "on: send it with each request (the model ignores features it does not use)")
        examples += found
        keys += _as_text(table.column(key)).to_pylist()
    if not examples:
        raise InputDataError(f"request log {path}: holds no predict requests with tf.Examples")
    return examples, keys, _fingerprint(files)


def join_labels(labels_path: str, key: str, spec: ProblemSpec, request_log: str = "",
                window: str = "") -> Labelled:
    """Served rows (the request log, else the window) joined to ``labels_path`` on ``key``.

    Raises:
        InputDataError: a file lacks the key or label column, or a key is labelled twice
            with different labels.
    """
    if key in (spec.label, *spec.features):
        raise InputDataError(f"label key {key!r} is a column the model uses; the key must "
                             "identify a row, not describe it")
    label_table, label_files = _read_table(labels_path, {key: False, spec.label: False},
                                           "labels file", [key, spec.label])
    label_keys = _as_text(label_table.column(key)).to_pylist()
    label_values = _label_values(label_table.column(spec.label), spec, labels_path)
    if request_log:
        served_examples, served_keys, served_files = _served_requests(request_log, key)
        kind, served_what = "request log + labels", "request log"
        table = None
    else:
        wanted = {c: True for c in (key, *spec.features)}
        table, served_files = _read_table(window, wanted, "window", [key, *spec.features])
        served_keys = _as_text(table.column(key)).to_pylist()
        served_examples = None
        kind, served_what = "window + labels", "window"
    notes, join = [], {"served": len(served_keys), "labels": len(label_keys)}

    # Labels: rows without a key or a label; keys labelled twice.
    no_key = [i for i, k in enumerate(label_keys) if k is None]
    no_label = [i for i, (k, v) in enumerate(zip(label_keys, label_values))
                if k is not None and v is None]
    truth: dict = {}
    repeated: dict = {}
    for k, v in zip(label_keys, label_values):
        if k is None or v is None:
            continue
        if k in truth:
            if truth[k] != v:
                raise InputDataError(
                    f"{labels_path}: key {k!r} is labelled twice with different labels "
                    f"({truth[k]!r} and {v!r}); the truth is unknown: fix the labels file")
            repeated[k] = repeated.get(k, 1) + 1
        else:
            truth[k] = v
    if no_key:
        join["labels_without_key"] = {"count": len(no_key), "rows": [i + 1 for i in no_key[:SHOWN_KEYS]]}
        notes.append(f"labels file: {len(no_key)} row(s) have no {key!r} (e.g. data rows "
                     f"{join['labels_without_key']['rows']}): they cannot be joined, left out")
    if no_label:
        join["labels_without_label"] = {"count": len(no_label)}
        notes.append(f"labels file: {len(no_label)} row(s) have a key but no {spec.label!r}: "
                     "left out")
    if repeated:
        join["labels_repeated"] = {"count": len(repeated), "keys": _keys(sorted(repeated))}
        notes.append(f"labels file: {len(repeated)} key(s) are labelled more than once with "
                     f"the same label (e.g. {join['labels_repeated']['keys']}): kept once")

    # Served rows: no key; a key served twice; no label yet.
    first: dict = {}
    served_twice: dict = {}
    served_no_key = 0
    for i, k in enumerate(served_keys):
        if k is None:
            served_no_key += 1
        elif k in first:
            served_twice[k] = served_twice.get(k, 1) + 1
        else:
            first[k] = i
    if served_no_key:
        join["served_without_key"] = {"count": served_no_key}
        notes.append(f"{served_what}: {served_no_key} row(s) carry no {key!r}: they cannot be "
                     "joined to a label, left out")
    if served_twice:
        join["served_repeated"] = {"count": len(served_twice), "keys": _keys(sorted(served_twice))}
        notes.append(f"{served_what}: {len(served_twice)} key(s) were served more than once "
                     f"(e.g. {join['served_repeated']['keys']}): the first request of each is "
                     "scored")
    matched = [k for k in first if k in truth]
    unlabelled = [k for k in first if k not in truth]
    never_served = sorted(k for k in truth if k not in first)
    join.update(matched=len(matched), served_without_label=len(unlabelled))
    if unlabelled:
        notes.append(f"{len(unlabelled)} served row(s) have no label yet (e.g. "
                     f"{_keys(unlabelled)}): left out until their labels arrive")
    if never_served:
        join["labels_never_served"] = {"count": len(never_served), "keys": _keys(never_served)}
        notes.append(f"labels file: {len(never_served)} label(s) are for keys the "
                     f"{served_what} never served (e.g. {join['labels_never_served']['keys']}): "
                     "left out")
    rows = [first[k] for k in matched]
    if served_examples is not None:
        examples = [served_examples[i] for i in rows]
    else:
        features = _typed_features(table.take(pa.array(rows, type=pa.int64())), spec, window)
        examples = _examples(features, spec)
    return Labelled(kind=kind, path=labels_path, key=key, files=served_files + label_files,
                    examples=examples, labels=[truth[k] for k in matched],
                    unlabelled=len(unlabelled), join=join, notes=notes)
