"""Drift check: a window of fresh data (and/or serving request logs) against the data the
production model was trained on, decided with calibrated, window-size-aware levels.

Inputs:

- the **window**: CSV / Parquet, a file, folder or glob, local or gs://; and/or
- the **request log**: TFRecord files of TF Serving ``PredictionLog`` records (what
  request logging writes; the format of the warmup file push writes), so drift is
  measured on what the model was actually asked.

The **baseline** comes from the registry only: the production version's training
statistics (``kfp_ct/statistics.pb``), schema, problem spec and prediction profile.

For every feature (and the label, when the window has it, and the production model's
predictions) the distance between training and window (:mod:`kfp_ct.components.common.drift`)
is compared with the user's threshold *and* with the no-drift level at this window size;
drift is flagged only above both. Below ``min_rows`` rows the decision is
``INSUFFICIENT_DATA``, never drift.

Outputs: ``drift.json`` (the decision record, for machines and for the trigger), an
HTML report and its Markdown twin, and per-feature distances for ``dsl.Metrics``.

No kfp here. TensorFlow only when the production model scores the window.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
import re
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kfp_ct.components.common import data as data_lib
from kfp_ct.components.common import drift, performance, registry, storage
from kfp_ct.components.common.errors import InputDataError, KfpCtError, RegistryError
from kfp_ct.components.common.params import json_object
from kfp_ct.components.common.problem import ProblemSpec, load_problem

DRIFT_JSON = drift.DRIFT_JSON
DRIFT, NO_DRIFT, INSUFFICIENT_DATA = drift.DRIFT, drift.NO_DRIFT, drift.INSUFFICIENT_DATA

# Verdicts per tested feature.
V_DRIFT = "drift"
V_OK = "no drift"
V_BELOW_LEVEL = "within sampling noise"  # above the threshold, not above the no-drift level
V_FEW_ROWS = "insufficient data"
V_MISSING = "missing column"
V_TYPE = "type change"
V_ALL_MISSING = "all missing"  # every window value missing, where training had values: drift
BLOCKING = (V_MISSING, V_TYPE)  # anomalies that a retraining on this data would fail on
DRIFTED = (V_DRIFT, V_ALL_MISSING, *BLOCKING)  # verdicts that make a feature drifted

# Anomaly kinds about categorical values (each one a statement that is true of training).
A_NEW = "new values"  # the complete vocabulary says training never had them
A_NOT_KEPT = "values not kept from training"  # the reference cannot know: say only that
A_DOMAIN = "values outside the schema"  # training had them; the schema's domain lacks them
A_ALL_MISSING = V_ALL_MISSING

ROLE_FEATURE, ROLE_LABEL = drift.ROLE_FEATURE, drift.ROLE_LABEL
ROLE_PREDICTION = "prediction"
SOURCE_WINDOW, SOURCE_REQUESTS = "window", "requests"

DEFAULTS = {
    "numeric": 0.02,        # Jensen-Shannon divergence (log2)
    "categorical": 0.05,    # L-infinity distance
    "false_alarm_rate": 0.01,
    "min_rows": 100,
    "prediction_rows": 5000,
    "resamples": drift.DEFAULT_RESAMPLES,
}
# Model performance (components/common/performance.py) and what each finding does.
RETRAIN_REASONS = {"drift": DRIFT, "performance": performance.PERFORMANCE_DROP,
                   "estimated": performance.ESTIMATED_DROP}
DEFAULT_RETRAIN_ON = ("drift", "performance")  # an estimated drop retrains when asked
PERFORMANCE_KEYS = {"tolerance", "estimated_tolerance", "min_labels", "retrain_on",
                    "notify", "history"}
_SETTING_KEYS = set(DEFAULTS) | {"features"} | PERFORMANCE_KEYS
_FLOAT_RE = (r"^\s*[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|inf|infinity|nan)\s*$")


class NoBaselineError(RegistryError):
    """There is nothing trustworthy to compare the window with: no decision is taken."""


# ------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class Settings:
    numeric: float = DEFAULTS["numeric"]
    categorical: float = DEFAULTS["categorical"]
    false_alarm_rate: float = DEFAULTS["false_alarm_rate"]
    min_rows: int = DEFAULTS["min_rows"]
    prediction_rows: int = DEFAULTS["prediction_rows"]
    resamples: int = DEFAULTS["resamples"]
    features: dict = dataclasses.field(default_factory=dict)  # name -> threshold
    # Performance: a drop beyond ``tolerance`` (None: 0.02 of accuracy, 10% of rmse) and
    # beyond sampling; ``estimated_tolerance`` the same for the estimate (None: tolerance).
    tolerance: float | None = None
    estimated_tolerance: float | None = None
    min_labels: int = performance.DEFAULTS["min_labels"]
    retrain_on: tuple = DEFAULT_RETRAIN_ON  # findings that launch a retraining
    notify: dict = dataclasses.field(default_factory=dict)  # components/common/notify.py
    history: int = 20  # windows the report's trend shows

    def threshold(self, name: str, kind: str) -> float:
        if name in self.features:
            return float(self.features[name])
        return self.numeric if kind == drift.NUMERIC else self.categorical

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["retrain_on"] = list(self.retrain_on)
        return out


def parse_settings(text: str | dict | None) -> Settings:
    """Drift settings from JSON: thresholds per type and per feature, alpha, min rows.

    ``{"numeric": 0.02, "categorical": 0.05, "features": {"island": 0.1},
    "false_alarm_rate": 0.01, "min_rows": 100}``; every key is optional.
    """
    data = json_object(text, "drift settings")
    unknown = sorted(set(data) - _SETTING_KEYS)
    if unknown:
        raise KfpCtError(f"drift settings: unknown key(s) {unknown}; known: {sorted(_SETTING_KEYS)}")

    def number(key, value, lo, hi, integer=False):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
            math.isfinite(value) and lo <= value <= hi and (not integer or float(value).is_integer())
        if not ok:
            kind = "an integer" if integer else "a number"
            raise KfpCtError(f"drift settings: {key!r} must be {kind} in [{lo}, {hi}], got {value!r}")
        return int(value) if integer else float(value)

    out = {}
    for key in ("numeric", "categorical"):
        if key in data:
            out[key] = number(key, data[key], 0.0, 1.0)
    if "false_alarm_rate" in data:
        out["false_alarm_rate"] = number("false_alarm_rate", data["false_alarm_rate"], 1e-6, 0.5)
    if "min_rows" in data:
        out["min_rows"] = number("min_rows", data["min_rows"], 1, 10**9, integer=True)
    if "prediction_rows" in data:
        out["prediction_rows"] = number("prediction_rows", data["prediction_rows"], 0, 10**6,
                                        integer=True)
    if "resamples" in data:
        out["resamples"] = number("resamples", data["resamples"], 200, 10**6, integer=True)
    features = data.get("features", {})
    if not isinstance(features, dict):
        raise KfpCtError("drift settings: 'features' must be an object: feature -> threshold")
    out["features"] = {str(k): number(f"features.{k}", v, 0.0, 1.0) for k, v in features.items()}
    for key in ("tolerance", "estimated_tolerance"):
        if data.get(key) is not None:
            out[key] = number(key, data[key], 0.0, 10**9)
    if "min_labels" in data:
        out["min_labels"] = number("min_labels", data["min_labels"], 1, 10**9, integer=True)
    if "history" in data:
        out["history"] = number("history", data["history"], 0, 1000, integer=True)
    if "retrain_on" in data:
        reasons = data["retrain_on"]
        if isinstance(reasons, str):
            reasons = [reasons]
        if not isinstance(reasons, list) or not all(r in RETRAIN_REASONS for r in reasons):
            raise KfpCtError(f"drift settings: 'retrain_on' must be a list of "
                             f"{sorted(RETRAIN_REASONS)}, got {data['retrain_on']!r}")
        out["retrain_on"] = tuple(r for r in RETRAIN_REASONS if r in reasons)
    if data.get("notify"):
        from kfp_ct.components.common import notify

        notify.parse_config(data["notify"])  # a bad target fails here, before any task runs
        out["notify"] = dict(data["notify"])
    return Settings(**out)


# ------------------------------------------------------------------------- baseline


@dataclasses.dataclass
class Baseline:
    model_base: str
    version: registry.VersionInfo
    spec: ProblemSpec
    rows: int  # training rows the statistics cover
    references: dict  # name -> (role, Reference)
    domains: dict  # categorical name -> set of values the schema allows (may be empty)
    prediction: dict  # drift.PREDICTION / drift.CONFIDENCE -> Reference (empty: none kept)
    prediction_rows: int
    notes: list
    calibration: dict | None = None  # classification: top score -> P(right), from push
    no_calibration: str = ""  # why there is none (said where the estimate would be)


def load_baseline(model_base: str) -> Baseline:
    """The production version's training statistics and what goes with them.

    Raises:
        NoBaselineError: no production version, or its statistics / problem are missing
            or unreadable. No decision can be taken then.
    """
    from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

    if not (model_base or "").strip():
        raise NoBaselineError("model base is empty: give the TF Serving model base the "
                              "production model is pushed to")
    prod = registry.production(model_base)
    if prod is None:
        raise NoBaselineError(
            f"{model_base}: no production version (no complete model version under it), so "
            "there is no training data to compare the window with; no drift decision is "
            "taken. Train and push a model there first.")
    if prod.state != registry.COMPLETE:
        raise NoBaselineError(f"{model_base}: production version {prod.version} is "
                              f"{prod.state} ({prod.detail}); no drift decision is taken")
    stats_path = registry.audit_file(prod, registry.STATISTICS)
    problem_path = registry.audit_file(prod, registry.PROBLEM)
    for path, what in ((stats_path, "training statistics"), (problem_path, "problem spec")):
        if not storage.exists(path):
            raise NoBaselineError(
                f"{model_base}: production version {prod.version} has no {what} ({path}); "
                "no drift decision is taken. Push a model with this version of kfp-ct.")
    stats = statistics_pb2.DatasetFeatureStatisticsList()
    try:
        stats.ParseFromString(storage.read_bytes(stats_path))
    except Exception as exc:  # DecodeError and friends: a corrupt file
        raise NoBaselineError(f"{stats_path}: the training statistics of production version "
                              f"{prod.version} do not parse ({exc}); no drift decision is "
                              "taken") from None
    notes, domains = [], {}
    try:
        spec = load_problem(problem_path)
        rows, refs = drift.references_from_statistics(stats, spec)
    except (ValueError, KfpCtError) as exc:
        raise NoBaselineError(f"{stats_path}: unusable as a drift baseline for production "
                              f"version {prod.version}: {exc}; no drift decision is taken") from None
    if rows <= 0:
        raise NoBaselineError(f"{stats_path}: the training statistics cover no rows; no drift "
                              "decision is taken")
    exact_path = registry.audit_file(prod, registry.DRIFT_REFERENCE)
    if storage.exists(exact_path):
        try:
            rows, exact = drift.references_from_document(json.loads(storage.read_text(exact_path)))
            if set(exact) != set(refs):
                raise ValueError(f"it covers {sorted(exact)}, the problem {sorted(refs)}")
            refs = exact
        except (ValueError, KeyError, TypeError) as exc:
            raise NoBaselineError(f"{exact_path}: the drift reference of production version "
                                  f"{prod.version} is unusable ({exc}); no drift decision is "
                                  "taken") from None
    else:
        notes.append(f"production version {prod.version} keeps no exact drift reference "
                     f"({registry.DRIFT_REFERENCE}); numeric cells use TFDV's interpolated "
                     "histogram counts, which can over-alarm on large windows of discrete values")
    schema_path = registry.audit_file(prod, registry.SCHEMA)
    if storage.exists(schema_path):
        from google.protobuf import text_format

        schema = schema_pb2.Schema()
        try:
            text_format.Parse(storage.read_text(schema_path), schema)
        except text_format.ParseError as exc:
            notes.append(f"schema {schema_path} does not parse ({exc}); new categories are "
                         "judged from the training statistics only")
        else:
            named = {d.name: set(d.value) for d in schema.string_domain}
            for f in schema.feature:
                name = f.name
                if f.HasField("string_domain"):
                    domains[name] = set(f.string_domain.value)
                elif f.HasField("domain") and f.domain in named:
                    domains[name] = named[f.domain]
    prediction, prediction_rows = {}, 0
    profile_path = registry.audit_file(prod, registry.PREDICTION_PROFILE)
    if storage.exists(profile_path):
        try:
            profile = json.loads(storage.read_text(profile_path))
            prediction[drift.PREDICTION] = drift.Reference.from_json(profile["reference"])
            if "confidence" in profile:
                prediction[drift.CONFIDENCE] = drift.Reference.from_json(profile["confidence"])
            prediction_rows = int(profile["rows"])
        except (ValueError, KeyError, TypeError) as exc:
            notes.append(f"prediction profile {profile_path} is unusable ({exc}); prediction "
                         "drift is not measured")
            prediction = {}
    else:
        notes.append(f"production version {prod.version} keeps no prediction profile; "
                     "prediction drift is not measured")
    calibration, no_calibration = None, ""
    calibration_path = registry.audit_file(prod, registry.CALIBRATION)
    if spec.task != "classification":
        no_calibration = "performance is estimated for classification only"
    elif not storage.exists(calibration_path):
        no_calibration = (f"production version {prod.version} keeps no calibration "
                          f"({registry.CALIBRATION}; pushed before kfp-ct kept one): "
                          "accuracy is not estimated")
    else:
        try:
            calibration = performance.check_calibration(
                json.loads(storage.read_text(calibration_path)))
        except (ValueError, KeyError, TypeError) as exc:
            no_calibration = (f"calibration {calibration_path} is unusable ({exc}): accuracy "
                              "is not estimated")
    return Baseline(model_base=model_base, version=prod, spec=spec, rows=rows, references=refs,
                    domains=domains, prediction=prediction, prediction_rows=prediction_rows,
                    notes=notes, calibration=calibration, no_calibration=no_calibration)


# ------------------------------------------------------------------------- reading


@dataclasses.dataclass
class Scan:
    """What one source (window or request log) brought, per column."""

    source: str
    path: str
    files: list
    rows: int = 0
    counters: dict = dataclasses.field(default_factory=dict)  # column -> drift.Counter
    missing_columns: list = dataclasses.field(default_factory=list)
    type_errors: dict = dataclasses.field(default_factory=dict)  # column -> (count, example)
    sample: pa.Table | None = None  # rows kept for scoring (spec columns)
    serialized: list = dataclasses.field(default_factory=list)  # request log: sampled tf.Examples
    notes: list = dataclasses.field(default_factory=list)


def _fingerprint(files: list[str]) -> list[dict]:
    """Each file with its size and modification time (local) or generation (gs://)."""
    return [{"path": f, **storage.version_tag(f)} for f in files]


def _to_float(column: pa.Array, name: str, scan: Scan) -> np.ndarray:
    """A column as float64 with NaN for missing; text that is not a number is counted.

    Values go through float32 first, as training read them (``data.arrow_types``): a value
    on a cell boundary then lands in the same cell for the window as for training.
    """
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or \
            pa.types.is_decimal(column.type) or pa.types.is_boolean(column.type):
        single = column.cast(pa.float32())
    else:  # numbers as text read as training read them (data.py's reading rule)
        text = pc.utf8_trim_whitespace(
            data_lib.null_where_in(column.cast(pa.string()), data_lib.NUMERIC_NULL_VALUES))
        try:
            single = pc.cast(text, pa.float32())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            ok = pc.match_substring_regex(text, _FLOAT_RE, ignore_case=True)
            bad = pc.and_(pc.invert(ok.fill_null(True)), pc.is_valid(text))
            bad_values = text.filter(bad)
            count, example = scan.type_errors.get(name, (0, None))
            scan.type_errors[name] = (count + len(bad_values),
                                      example if example is not None else bad_values[0].as_py())
            cleaned = pc.if_else(bad, pa.scalar(None, pa.string()), text)
            single = pc.cast(cleaned, pa.float32())
    return single.to_numpy(zero_copy_only=False).astype(np.float64)


def _update(scan: Scan, batch: pa.RecordBatch | pa.Table, refs: dict) -> None:
    names = batch.schema.names
    for column, (_, ref) in refs.items():
        if column not in names:
            continue
        counter = scan.counters.setdefault(column, drift.Counter(ref))
        array = batch.column(names.index(column))
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if ref.kind == drift.NUMERIC:
            counter.add_numeric(_to_float(array, column, scan))
        else:
            text = array.cast(pa.string()) if not pa.types.is_string(array.type) else array
            # Null texts ("", "NA", "nan", ...) are missing, in Parquet as in CSV and as
            # in the training data (data.py's reading rule).
            text = data_lib.null_where_in(text, data_lib.NULL_VALUES)
            counts = pc.value_counts(text.drop_null())
            counter.add_value_counts(
                dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())),
                missing=text.null_count)
    scan.rows += batch.num_rows


def _sample_seed(files: list[dict]) -> int:
    """A seed drawn from the window's identity: the same window gives the same sample, and
    it shares no random stream with whatever seeded generator made the data (a window
    written with numpy seed 0 and sampled with seed 0 gave one species only)."""
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:8], "little")


class _Reservoir:
    """A uniform random sample of up to ``size`` rows of a stream (smallest random keys)."""

    def __init__(self, size: int, seed: int):
        self.size, self.rng = size, np.random.default_rng(seed)
        self.table: pa.Table | None = None
        self.keys = np.empty(0)

    def add(self, table: pa.Table) -> None:
        if self.size <= 0 or table.num_rows == 0:
            return
        keys = self.rng.random(table.num_rows)
        if self.table is not None:
            table = pa.concat_tables([self.table, table], promote=True)
            keys = np.concatenate([self.keys, keys])
        if len(keys) > self.size:
            keep = np.sort(np.argpartition(keys, self.size - 1)[:self.size])
            table, keys = table.take(pa.array(keep)), keys[keep]
        self.table, self.keys = table, keys


class _Restart(Exception):
    """A numeric column stopped parsing after the first block: reread the window as text."""


def _csv_batches(path: str, header: list[str], columns: dict,
                 typed: bool) -> Iterator[pa.RecordBatch]:
    """CSV batches of the wanted columns present in the file. ``typed``: numeric columns
    parse as float (fast path); when the first block does not parse, the file is read as
    text, so text in a numeric column is counted as a type change, not a crash."""
    import pyarrow.csv as pacsv

    present = [c for c in columns if c in header]

    def reader(as_float: bool):
        types = {c: (pa.float32() if as_float and columns[c] else pa.string()) for c in present}
        convert = pacsv.ConvertOptions(
            column_types=types, include_columns=present, null_values=data_lib.NULL_VALUES,
            strings_can_be_null=True, quoted_strings_can_be_null=True)
        return pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=4 << 20),
                              convert_options=convert)

    if not typed:
        yield from reader(as_float=False)
        return
    yielded = 0
    try:
        for batch in reader(as_float=True):
            yielded += 1
            yield batch
        return
    except pa.ArrowInvalid:
        if yielded:
            raise _Restart(path) from None
    yield from reader(as_float=False)


def _file_batches(file: str, columns: dict, typed: bool) -> tuple[list[str], Iterator]:
    """(header, batches) for one local CSV or Parquet file."""
    import pyarrow.parquet as pq

    if data_lib.format_of(file) == "parquet":
        try:
            pf = pq.ParquetFile(file)
        except Exception as exc:
            raise InputDataError(f"{file}: not a readable Parquet file: {exc}") from None
        header = pf.schema_arrow.names
        present = [c for c in columns if c in header]
        return header, pf.iter_batches(batch_size=65_536, columns=present)
    header = data_lib.csv_header(file)
    return header, _csv_batches(file, header, columns, typed)


def scan_window(path: str, baseline: Baseline, sample_rows: int, typed: bool = True) -> Scan:
    """One streaming pass over the tabular window: counts per cell, anomalies, a sample."""
    spec = baseline.spec
    files = data_lib.resolve_inputs(path)
    scan = Scan(source=SOURCE_WINDOW, path=path, files=_fingerprint(files))
    columns = {c: ref.kind == drift.NUMERIC for c, (_, ref) in baseline.references.items()}
    reservoir = _Reservoir(sample_rows, _sample_seed(scan.files))
    headers = []
    for file in files:
        with data_lib.local_input(file) as local:
            header, batches = _file_batches(local, columns, typed)
            headers.append(set(header))
            before = scan.rows
            try:
                for batch in batches:
                    _update(scan, batch, baseline.references)
                    reservoir.add(pa.Table.from_batches([batch]))
            except _Restart:
                return scan_window(path, baseline, sample_rows, typed=False)
            except pa.ArrowInvalid as exc:
                raise InputDataError(f"{file}: cannot parse: {str(exc).splitlines()[0]}") from None
            if scan.rows == before:
                raise InputDataError(f"{file}: the window file has no data rows")
    # The label is optional in a window (it is often not known yet); features are not.
    scan.missing_columns = sorted(c for c in set(spec.features) - set.intersection(*headers))
    if not all(spec.label in h for h in headers):
        scan.counters.pop(spec.label, None)
    elif spec.label in scan.counters and _all_missing(scan.counters[spec.label]):
        # A label column with no value: rows not labelled yet, not a label that moved.
        scan.counters.pop(spec.label)
        scan.notes.append(f"the {scan.source}'s label column {spec.label!r} holds no value "
                          "(unlabelled rows): label drift is not measured")
    for column in scan.missing_columns:  # a column absent from some files: not comparable
        scan.counters.pop(column, None)
    scan.sample = reservoir.table
    return scan


def scan_requests(path: str, baseline: Baseline, sample_rows: int) -> Scan:
    """The tf.Examples inside TF Serving PredictionLog TFRecords, as a source like the window."""
    from tfx_bsl.coders import example_coder

    files = _resolve_logs(path)
    scan = Scan(source=SOURCE_REQUESTS, path=path, files=_fingerprint(files))
    decoder = example_coder.ExamplesToRecordBatchDecoder()
    reservoir = _Reservoir(sample_rows, _sample_seed(scan.files))
    seen_columns: set = set()
    for file in files:
        examples = logged_examples(file)
        if not examples:
            continue
        batch = decoder.DecodeBatch(examples)
        seen_columns |= set(batch.schema.names)
        _update(scan, _scalar_columns(batch), baseline.references)
        reservoir.add(pa.table({"example": pa.array(examples, type=pa.binary())}))
    if scan.rows == 0:
        raise InputDataError(f"request log {path}: holds no predict requests with "
                             "tf.Examples (nothing to measure)")
    scan.missing_columns = sorted(c for c in baseline.spec.features if c not in seen_columns)
    scan.counters.pop(baseline.spec.label, None)  # requests carry no labels
    scan.serialized = [] if reservoir.table is None else \
        reservoir.table.column("example").to_pylist()
    return scan


def logged_examples(file: str) -> list[bytes]:
    """The serialized tf.Examples of every predict request in one request-log file."""
    import tensorflow as tf

    from kfp_ct.components.common.prediction_log import parse_prediction_log, serialized_examples

    with data_lib.local_input(file) as local:
        try:
            records = [r.numpy() for r in tf.data.TFRecordDataset(local)]
        except tf.errors.OpError as exc:
            raise InputDataError(f"{file}: not a TFRecord file of PredictionLog records "
                                 f"({exc.message.splitlines()[0]})") from None
    examples = []
    for i, record in enumerate(records):
        try:
            examples += serialized_examples(parse_prediction_log(record))
        except Exception as exc:  # DecodeError: not a PredictionLog
            raise InputDataError(f"{file}: record {i} is not a PredictionLog ({exc})") from None
    return examples


def _resolve_logs(path: str) -> list[str]:
    if not path or not path.strip():
        raise InputDataError("request log path is empty")
    return data_lib.expand_paths(
        path.strip(), "request log",
        lambda folder, n: not n.startswith((".", "_"))
        and not storage.isdir(storage.join(folder, n)), "no file")


def _scalar_columns(batch: pa.RecordBatch) -> pa.Table:
    """List columns (one value per tf.Example feature) -> their first value, null if none."""
    arrays, names = [], []
    for name, column in zip(batch.schema.names, batch.columns):
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            offsets = column.offsets.to_numpy()
            values = column.flatten()
            has = offsets[1:] > offsets[:-1]
            idx = pa.array(np.where(has, offsets[:-1], 0)[:len(column)], type=pa.int64())
            picked = values.take(idx) if len(values) else pa.nulls(len(column), values.type)
            picked = pc.if_else(pa.array(has & np.asarray(column.is_valid())), picked,
                                pa.scalar(None, picked.type))
            if pa.types.is_binary(picked.type) or pa.types.is_large_binary(picked.type):
                picked = picked.cast(pa.string())
            column = picked
        arrays.append(column)
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


# ---------------------------------------------------------------------- predictions


def _examples_from_sample(table: pa.Table, spec: ProblemSpec) -> list[bytes]:
    from tfx_bsl.coders import example_coder

    columns = [c for c in spec.features if c in table.schema.names]
    batch = table.select(columns).combine_chunks().to_batches()
    out = []
    for b in batch:
        out += example_coder.RecordBatchToExamples(data_lib.as_list_batch(b, spec, columns))
    return out


def score(version: registry.VersionInfo, examples: dict[str, list[bytes]],
          labelled=None, task: str = "classification"
          ) -> tuple[dict[str, tuple[str, np.ndarray, np.ndarray | None]],
                     performance.Tally | None]:
    """The production model's predictions for serialized tf.Examples, per source: (kind,
    predicted values, top class scores or None for regression); and, with ``labelled``
    (:class:`kfp_ct.components.drift.labelled.Labelled`), its metrics on those rows. The
    model is fetched and loaded once for all of them."""
    from kfp_ct.components.common import tfenv  # noqa: F401  (before TensorFlow loads)
    import tensorflow as tf

    from kfp_ct.components.common.prediction_log import INPUT_KEY, SIGNATURE

    with storage.local_copy(version.path) as local:
        try:
            fn = tf.saved_model.load(local).signatures[SIGNATURE]
        except Exception as exc:
            raise RegistryError(f"{version.path}: production version {version.version} does "
                                f"not load for scoring ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''})") from None

        def outputs(records: list[bytes]):
            for start in range(0, len(records), 1024):
                chunk = tf.constant(records[start:start + 1024], dtype=tf.string)
                yield {k: v.numpy() for k, v in fn(**{INPUT_KEY: chunk}).items()}

        predictions = {source: drift.collect_predictions(outputs(records))
                       for source, records in examples.items()}
        tally = None
        if labelled is not None:
            tally = performance.Tally(task)
            for start, batch in zip(range(0, len(labelled.examples), 1024),
                                    outputs(labelled.examples)):
                tally.add(batch, labelled.labels[start:start + 1024])
        return predictions, tally


def _counter(ref: drift.Reference, values: np.ndarray) -> drift.Counter:
    counter = drift.Counter(ref)
    if ref.kind == drift.NUMERIC:
        counter.add_numeric(np.asarray(values, dtype=np.float64))
    else:
        names, counts = np.unique(np.asarray(values, dtype=str), return_counts=True)
        counter.add_value_counts(dict(zip(names.tolist(), counts.tolist())), missing=0)
    return counter


# ------------------------------------------------------------------------- deciding


def _all_missing(counter: drift.Counter) -> bool:
    """Every window value of the column is missing (and there is at least one row)."""
    return counter.rows > 0 and counter.counts[0] >= counter.rows


def _emptied(scan: Scan, column: str) -> bool:
    """The window's column holds no value at all (text in a numeric column is a type
    change, not missing values)."""
    return _all_missing(scan.counters[column]) and column not in scan.type_errors


def _share(x: float) -> str:
    """A share as a percentage that never rounds a non-zero share to 0 or a partial one to 100."""
    pct = 100.0 * x
    if pct == 0 or pct == 100:
        return f"{pct:.0f}%"
    if pct < 0.1:
        return "<0.1%"
    if pct > 99.9:
        return ">99.9%"
    return f"{pct:.1f}%"


def _missing_share(counts: np.ndarray) -> float:
    """The missing cell's share of a reference's counts (1 when it counts nothing)."""
    total = float(np.sum(counts))
    return float(counts[0]) / total if total else 1.0


def _all_missing_text(r: dict) -> str:
    return f"all missing (training: {_share(r['train_missing_share'])} missing)"


def _test(name: str, role: str, source: str, counter: drift.Counter, train_rows: float,
          settings: Settings, alpha: float, seed: int, emptied: bool = False) -> dict:
    ref = counter.ref
    train, window, labels = counter.aligned()
    rows = int(window.sum())
    d = drift.distance(ref.kind, train, window)
    threshold = settings.threshold(name, ref.kind)
    entry = {"feature": name, "role": role, "source": source, "kind": ref.kind,
             "measure": drift.MEASURE[ref.kind], "distance": d, "threshold": threshold,
             "rows": rows, "cells": [{"label": lab, "train": float(t), "window": float(w)}
                                     for lab, t, w in zip(labels, train, window)]}
    if emptied:
        entry["train_missing_share"] = _missing_share(train)
    if rows < settings.min_rows:
        entry.update(no_drift_level=None, p_value=None, verdict=V_FEW_ROWS)
        return entry
    null = drift.null_distances(ref.kind, train, train_rows, rows, settings.resamples, seed)
    level = drift.no_drift_level(null, alpha)
    pval = drift.p_value(null, d)
    if d > threshold and d > level:
        # An emptied column is drift with a reason of its own, not only a large distance.
        verdict = V_ALL_MISSING if "train_missing_share" in entry else V_DRIFT
    elif d > threshold:
        verdict = V_BELOW_LEVEL
    else:
        verdict = V_OK
    entry.update(no_drift_level=level, p_value=pval, verdict=verdict)
    return entry


def _anomalies(scan: Scan, baseline: Baseline) -> list[dict]:
    out = []
    for column in scan.missing_columns:
        out.append({"source": scan.source, "feature": column, "kind": V_MISSING,
                    "detail": f"the {scan.source} has no column {column!r}"})
    for column, (count, example) in sorted(scan.type_errors.items()):
        out.append({"source": scan.source, "feature": column, "kind": V_TYPE,
                    "detail": f"{count} value(s) are not numbers (e.g. {example!r}); "
                              "training declared it numeric"})
    for column, counter in sorted(scan.counters.items()):
        if _emptied(scan, column):
            share = _share(_missing_share(counter.ref.counts))
            out.append({"source": scan.source, "feature": column, "kind": A_ALL_MISSING,
                        "detail": f"every one of the {int(counter.rows)} rows is missing "
                                  f"(training: {share} missing)"})
        if counter.ref.kind == drift.CATEGORICAL:
            out += _value_anomalies(scan.source, column, counter, baseline.domains.get(column))
    return out


def _value_anomalies(source: str, column: str, counter: drift.Counter,
                     domain: set | None) -> list[dict]:
    """Window values the schema's domain does not allow (every value when there is no
    domain), each stated as what the reference knows of training: never had it (complete
    vocabulary), had it (outside the domain only), or not among the values it kept."""
    ref = counter.ref
    seen = dict(counter.new)
    seen.update({v: counter.counts[i + 1] for i, v in enumerate(ref.values)
                 if counter.counts[i + 1] > 0})
    found = {A_NEW: {}, A_NOT_KEPT: {}, A_DOMAIN: {}}
    for value, n in seen.items():
        if domain and value in domain:
            continue
        had = ref.training_had(value)
        if had is None:
            found[A_NOT_KEPT][value] = n
        elif not had:
            found[A_NEW][value] = n
        elif domain:
            found[A_DOMAIN][value] = n
    total = max(counter.rows, 1)
    out = []
    for kind, values in found.items():
        if not values:
            continue
        shown = ", ".join(f"{v!r} ({100.0 * n / total:.1f}%)"
                          for v, n in sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))[:5])
        if kind == A_NEW:
            detail = f"{len(values)} value(s) training never had: {shown}"
        elif kind == A_DOMAIN:
            detail = (f"{len(values)} value(s) the schema's domain does not list (training had "
                      f"them): {shown}")
        else:
            why = ("training had more distinct values than the reference keeps"
                   if ref.vocabulary is not None else
                   "this version's drift reference keeps no full list of training's values")
            detail = (f"{len(values)} value(s) not among the {ref.kept_values()} values kept "
                      f"from training: {shown} ({why})")
        out.append({"source": source, "feature": column, "kind": kind, "detail": detail})
    return out


def decide(scans: list[Scan], baseline: Baseline, settings: Settings,
           predictions: dict | None = None) -> dict:
    """Per-feature tests and the window's decision (no I/O)."""
    predictions = predictions or {}
    plan = []  # (name, role, source, counter, train_rows, emptied)
    for scan in scans:
        for column in sorted(scan.counters):
            role = baseline.references[column][0]
            plan.append((column, role, scan.source, scan.counters[column], baseline.rows,
                         _emptied(scan, column)))
        for name, counter in sorted(predictions.get(scan.source, {}).items()):
            plan.append((name, ROLE_PREDICTION, scan.source, counter, baseline.prediction_rows,
                         False))
    tests = max(len(plan), 1)
    alpha = drift.bonferroni(settings.false_alarm_rate, tests)
    results = [_test(name, role, source, counter, train_rows, settings, alpha, seed=i,
                     emptied=emptied)
               for i, (name, role, source, counter, train_rows, emptied) in enumerate(plan)]
    anomalies = [a for scan in scans for a in _anomalies(scan, baseline)]
    for a in anomalies:
        if a["kind"] in BLOCKING:
            results.append({"feature": a["feature"], "role": ROLE_FEATURE, "source": a["source"],
                            "kind": "", "measure": "", "distance": None, "threshold": None,
                            "no_drift_level": None, "p_value": None, "rows": 0, "cells": [],
                            "verdict": a["kind"]})
    drifted = sorted({r["feature"] for r in results if r["verdict"] in DRIFTED})
    blocking = sorted({a["feature"] for a in anomalies if a["kind"] in BLOCKING})
    enough = [s for s in scans if s.rows >= settings.min_rows]
    reasons = []
    if drifted:
        decision = DRIFT
        for r in results:
            if r["verdict"] in (V_DRIFT, V_ALL_MISSING):
                where = "" if len(scans) == 1 else f" in the {r['source']}"
                what = {"label": "label ", "prediction": ""}.get(r["role"], "")
                empty = f"{_all_missing_text(r)}; " if r["verdict"] == V_ALL_MISSING else ""
                reasons.append(
                    f"{what}{r['feature']}{where}: {empty}{r['measure']} {r['distance']:.4f} "
                    f"above the threshold {r['threshold']:.4g} and the no-drift level "
                    f"{r['no_drift_level']:.4f} at {r['rows']} rows")
        reasons += [f"{a['feature']}: {a['kind']}: {a['detail']}" for a in anomalies
                    if a["kind"] in BLOCKING]
    elif not enough:
        decision = INSUFFICIENT_DATA
        rows = ", ".join(f"{s.source} {s.rows}" for s in scans)
        reasons.append(f"too few rows to decide ({rows}; min_rows is {settings.min_rows}): "
                       "no drift decision, nothing is launched")
    else:
        decision = NO_DRIFT
        noisy = [r for r in results if r["verdict"] == V_BELOW_LEVEL]
        reasons.append("no feature moved beyond both its threshold and the no-drift level")
        reasons += [f"{r['feature']}: {r['measure']} {r['distance']:.4f} is above the threshold "
                    f"{r['threshold']:.4g} but within sampling noise at {r['rows']} rows (level "
                    f"{r['no_drift_level']:.4f})" for r in noisy]
    return {"decision": decision, "reasons": reasons, "drifted": drifted, "blocking": blocking,
            "anomalies": anomalies, "features": results, "tests": tests,
            "alpha_per_test": alpha}


# ---------------------------------------------------------------------------- run


def window_key(scans: list[Scan]) -> str:
    """Identifies the window: its files (path, size, mtime) and the request-log files."""
    return _key_of([[s.source, s.files] for s in scans])


def _key_of(doc: list) -> str:
    """The window key of its sources' file lists (labels, when given, are one of them: a
    window whose labels arrived later is a new window to decide on)."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:24]


def read_labels(labels_path: str, label_key: str, baseline: Baseline, window_path: str = "",
                request_log_path: str = ""):
    """The labelled rows (:mod:`kfp_ct.components.drift.labelled`), or None without labels."""
    from kfp_ct.components.drift import labelled

    labels_path, label_key = (labels_path or "").strip(), (label_key or "").strip()
    if not labels_path:
        if label_key:
            raise InputDataError(f"label key {label_key!r} given without a labels file")
        return None
    if not label_key:
        return labelled.read_labelled_window(labels_path, baseline.spec)
    if not (request_log_path or "").strip() and not (window_path or "").strip():
        raise InputDataError(f"labels {labels_path} are joined on {label_key!r} to the served "
                             "rows: give the request log (or the window) they belong to")
    return labelled.join_labels(labels_path, label_key, baseline.spec,
                                request_log=(request_log_path or "").strip(),
                                window=(window_path or "").strip())


def _performance(settings: Settings, baseline: Baseline, tally, labelled_rows,
                 scores_by_source: dict) -> dict:
    """The realized and estimated checks of the window (no I/O)."""
    version = baseline.version
    base = performance.baseline_of(version.metadata, baseline.spec.task, version.version)
    realized = None
    if tally is not None:
        realized = performance.realized_check(tally, base, settings.false_alarm_rate,
                                              settings.min_labels, settings.tolerance)
        realized.update(kind=labelled_rows.kind, path=labelled_rows.path, key=labelled_rows.key,
                        unlabelled=labelled_rows.unlabelled, join=labelled_rows.join)
    estimated = None
    if baseline.spec.task == "classification":
        source = next((s for s in (SOURCE_WINDOW, SOURCE_REQUESTS) if s in scores_by_source),
                      None)
        scores, predicted = scores_by_source[source] if source else (None, None)
        why = baseline.no_calibration or ("no window rows were scored (prediction drift is "
                                          "not measured on this window)")
        tol = settings.estimated_tolerance if settings.estimated_tolerance is not None \
            else settings.tolerance
        estimated = performance.estimated_check(
            baseline.calibration, scores, base, settings.false_alarm_rate, settings.min_rows,
            tol, why_not=why, predicted=predicted)
        estimated["source"] = source
        if tally is not None and baseline.calibration is not None and tally.top_scores:
            # The same estimate on the labelled rows: beside what their labels say.
            on_labelled = performance.estimated_check(
                baseline.calibration, np.concatenate(tally.top_scores), base,
                settings.false_alarm_rate, 1, tol, predicted=np.concatenate(tally.predicted))
            realized["estimated"] = {k: on_labelled[k] for k in ("value", "low", "high")}
    return {"realized": realized, "estimated": estimated}


def estimate_before(past: list, window: dict) -> dict | None:
    """The latest estimate a monitoring run made for the same served rows (the same window
    and request log) before their labels were given, from the history."""
    for old in reversed(past or []):
        w = old.get("window") or {}
        if w.get("labels") or (w.get("path") or "", w.get("request_log") or "") != (
                window.get("path") or "", window.get("request_log") or ""):
            continue
        est = (old.get("performance") or {}).get("estimated") or {}
        if est.get("value") is not None:
            return {"value": est["value"], "low": est.get("low"), "high": est.get("high"),
                    "checked_at": old.get("checked_at"), "seq": old.get("seq")}
    return None


def run_drift_check(model_base: str, window_path: str = "", request_log_path: str = "",
                    settings: str | dict | Settings | None = None, decision_dir: str = "",
                    report_html: str = "", report_md: str = "",
                    run_info: dict | None = None, labels_path: str = "",
                    label_key: str = "") -> dict:
    """Measures drift of the window against production's training data, and the model's
    performance (realized on labelled rows, estimated on the window), and decides.

    ``labels_path`` alone: a labelled window (features and label); with ``label_key``: a
    labels file joined on that key to the request log (else the window). A labelled
    window with no window and no request log is also the window drift is measured on.

    Returns the decision record (also written to ``<decision_dir>/drift.json``).

    Raises:
        InputDataError: the window / request log / labels are missing, match nothing or
            are empty, or the labels cannot be joined.
        NoBaselineError: no production version or no usable statistics (no decision).
        KfpCtError: bad settings.
    """
    settings = settings if isinstance(settings, Settings) else parse_settings(settings)
    if not (window_path or "").strip() and not (request_log_path or "").strip():
        if (labels_path or "").strip() and not (label_key or "").strip():
            window_path = labels_path  # the labelled window is the window
        else:
            raise InputDataError("give a window (data path), a request log or a labelled "
                                 "window")
    baseline = load_baseline(model_base)
    unknown = sorted(set(settings.features) - set(baseline.references)
                     - {drift.PREDICTION, drift.CONFIDENCE})
    if unknown:
        raise KfpCtError(f"drift settings: threshold(s) for {unknown}, which the production "
                         f"model does not use; its columns: {sorted(baseline.references)}")
    scans = []
    if (window_path or "").strip():
        scans.append(scan_window(window_path, baseline, settings.prediction_rows))
    if (request_log_path or "").strip():
        scans.append(scan_requests(request_log_path, baseline, settings.prediction_rows))

    predictions, examples = {}, {}
    notes = list(baseline.notes) + [n for scan in scans for n in scan.notes]
    if baseline.prediction and settings.prediction_rows > 0:
        for scan in scans:
            if scan.rows < settings.min_rows:
                continue
            if scan.missing_columns or scan.type_errors:
                notes.append(f"prediction drift on the {scan.source} is not measured: the "
                             "model cannot be asked about rows that lack its columns")
                continue
            rows = scan.serialized if scan.source == SOURCE_REQUESTS else \
                _examples_from_sample(scan.sample, baseline.spec)
            if rows:
                examples[scan.source] = rows
    labelled_rows = read_labels(labels_path, label_key, baseline, window_path,
                                request_log_path)
    if labelled_rows is not None:
        notes += labelled_rows.notes
    scored, tally = ({}, None)
    if examples or labelled_rows is not None:
        scored, tally = score(baseline.version, examples, labelled_rows, baseline.spec.task)
    scores_by_source = {source: (scores, values)
                        for source, (_, values, scores) in scored.items() if scores is not None}
    expected = baseline.prediction.get(drift.PREDICTION)
    for source, (kind, values, scores) in scored.items():
        if kind != expected.kind:
            notes.append(f"prediction drift not measured: the model now predicts {kind} "
                         f"values, its profile holds {expected.kind} ones")
            continue
        predictions[source] = {drift.PREDICTION: _counter(expected, values)}
        if scores is not None and drift.CONFIDENCE in baseline.prediction:
            predictions[source][drift.CONFIDENCE] = _counter(
                baseline.prediction[drift.CONFIDENCE], scores)

    record = decide(scans, baseline, settings, predictions)
    record["performance"] = _performance(settings, baseline, tally, labelled_rows,
                                         scores_by_source)
    record["findings"] = performance.findings_of(record)
    record["retrain_on"] = list(settings.retrain_on)
    record["launch_reasons"] = [f for f in record["findings"]
                                if f in {RETRAIN_REASONS[r] for r in settings.retrain_on}]
    record["reasons"] += [record["performance"][p]["reason"] for p in ("realized", "estimated")
                          if (record["performance"][p] or {}).get("reason")]
    key_scans = [[s.source, s.files] for s in scans]
    rows = {s.source: s.rows for s in scans}
    if labelled_rows is not None:
        key_scans.append(["labels", labelled_rows.files])
        rows["labels"] = len(labelled_rows.labels)
    record.update({
        "window": {"path": window_path, "request_log": request_log_path,
                   "labels": labels_path, "label_key": label_key,
                   "key": _key_of(key_scans),
                   "rows": rows,
                   "files": {s.source: s.files for s in scans}},
        "baseline": {"model_base": model_base, "version": baseline.version.version,
                     "path": baseline.version.path, "rows": baseline.rows,
                     "prediction_rows": baseline.prediction_rows},
        "settings": settings.to_json(),
        "notes": notes,
        "monitor_run": dict(run_info or {}),
        "checked_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    })
    if decision_dir:
        os.makedirs(decision_dir, exist_ok=True)
        storage.write_text(os.path.join(decision_dir, DRIFT_JSON),
                           json.dumps(record, indent=1, sort_keys=True) + "\n")
    from kfp_ct.components.common import history
    from kfp_ct.components.drift import render

    past = None
    if (report_html or report_md) and settings.history > 0:
        past = history.read(model_base, last=settings.history)
    realized = record["performance"]["realized"]
    if realized is not None and label_key:
        # The same served rows checked before their labels arrived: that estimate, beside.
        earlier = estimate_before(past if past is not None else history.read(model_base),
                                  record["window"])
        if earlier:
            realized["estimated_before"] = earlier
    for path, draw in ((report_html, render.html), (report_md, render.markdown)):
        if path:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            storage.write_text(path, draw(record, history=past))
    return record


def metrics(record: dict) -> dict:
    """Flat name -> value for ``dsl.Metrics``: each tested distance, and counts."""
    out = {"drifted_features": float(len(record["drifted"]))}
    for r in record["features"]:
        if r.get("distance") is None:
            continue
        prefix = "" if r["source"] == SOURCE_WINDOW else f"{r['source']}."
        name = re.sub(r"[^A-Za-z0-9_.()-]", "_", f"{prefix}{r['feature']}")
        out[f"{name}.{'jsd' if r['kind'] == drift.NUMERIC else 'linf'}"] = round(r["distance"], 6)
    perf = record.get("performance") or {}
    for part in ("realized", "estimated"):
        r = perf.get(part) or {}
        if r.get("value") is not None:
            out[f"{part}.{r['metric']}"] = round(r["value"], 6)
    return out
