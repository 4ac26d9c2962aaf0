"""Data validation (the roles of TFX StatisticsGen + SchemaGen + ExampleValidator).

Statistics are TFDV's, computed by its in-memory combiners over Arrow batches streamed
from the input: one pass, memory bounded by the batch size, no Beam start-up. With
`beam_args` the statistics, the data checks and the drift reference come from one Beam
pipeline (`tfdv.GenerateStatistics` on the runner given: Dataflow, Flink, Spark, the
DirectRunner's multi-processing mode) that reads the input with Beam's own sources, split
across workers (components/common/beam_io.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Iterable

from kfp_ct.components.common import tfenv  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)
from kfp_ct.components.common import data as data_lib
from kfp_ct.components.common import overlap, registry, report, storage
from kfp_ct.components.common.artifacts import ANOMALIES_FILE, ANOMALIES_JSON, SCHEMA_FILE, STATS_FILE
from kfp_ct.components.common.errors import InputDataError, SchemaError
from kfp_ct.components.common.problem import ProblemSpec, load_problem
from kfp_ct.components.validate.preflight import EvalSplitTooSmall, eval_split_error  # noqa: F401

NON_FINITE_KIND = "Non-finite values"


@dataclasses.dataclass
class ValidateResult:
    rows: int
    schema_source: str
    anomalies: list[dict]  # each: feature, kind, detail
    notes: list[str] = dataclasses.field(default_factory=list)  # not anomalies: never fail

    def summary(self) -> dict:
        out = {"rows": self.rows, "schema_source": self.schema_source,
               "anomaly_count": len(self.anomalies)}
        if self.notes:
            out["notes"] = list(self.notes)
        return out


class AnomaliesFound(InputDataError):
    """Strict mode: the data does not fit the schema."""


@dataclasses.dataclass
class _SplitTracker(data_lib.ColumnTracker):
    """A ColumnTracker that also counts the eval split's rows (the split is the one
    transform makes: ``eval_mask``, computed once a batch)."""

    eval_rows: int = 0

    def update(self, path, batch, *args, **kwargs) -> None:
        super().update(path, batch, *args, **kwargs)
        self.eval_rows += int(self.eval_mask(batch).sum())


def _eval_rows(batch, spec_json: str) -> int:
    """Beam Map body: the eval split's rows in one batch."""
    return int(data_lib.eval_mask(batch, load_problem(spec_json)).sum())


def check_eval_rows(data_path: str, spec: ProblemSpec, tracker, thresholds) -> None:
    """Refuses data whose eval split has fewer rows than the gate's ``min_examples``
    (``thresholds``: the training run's), before transform and training: the gate could
    not bless any model on so few rows. The preflight decides it first for local data
    whose eval split is settled in its first rows (preflight.check_eval_split)."""
    error = eval_split_error(data_path, spec, tracker.rows, tracker.eval_rows, thresholds)
    if error is not None:
        raise error


def _stats_in_memory(batches: Iterable, options):
    from tensorflow_data_validation.statistics import stats_impl
    from tfx_bsl.arrow import table_util

    generators = stats_impl.get_generators(options, in_memory=True)
    accumulators = None
    for batch in batches:
        partial = stats_impl.generate_partial_statistics_in_memory(
            table_util.CanonicalizeRecordBatch(batch), options, generators)
        accumulators = partial if accumulators is None else [
            g.merge_accumulators([a, p]) for g, a, p in zip(generators, accumulators, partial)]
    return stats_impl.extract_statistics_output(accumulators, generators)


def _batch_of(tracked):
    return tracked[1]


def _reference_cells(batch, stats, spec_json: str) -> dict:
    """Beam Map body: one batch's exact counts in the drift reference's numeric cells."""
    from kfp_ct.components.common import drift

    _, refs, counters = drift.reference_counters(stats, load_problem(spec_json))
    vocabularies = drift.vocabulary_counters(refs)
    rows = drift.count_reference_cells(counters, batch)
    drift.count_vocabularies(vocabularies, batch)
    return {"rows": rows, "cells": {c: k.counts.tolist() for c, k in counters.items()},
            "vocabularies": {c: v.to_json() for c, v in vocabularies.items()}}


def _sum_cells(parts) -> dict:
    """Beam combine: the sum of _reference_cells results (associative)."""
    from kfp_ct.components.common import drift

    total = {"rows": 0, "cells": {}, "vocabularies": {}}
    for part in parts:
        total["rows"] += part["rows"]
        for column, counted in part.get("vocabularies", {}).items():
            mine = total["vocabularies"].get(column)
            total["vocabularies"][column] = counted if mine is None else \
                drift.Vocabulary.from_json(mine).merge(drift.Vocabulary.from_json(counted)).to_json()
        for column, counts in part["cells"].items():
            mine = total["cells"].get(column)
            total["cells"][column] = (list(counts) if mine is None
                                      else [a + b for a, b in zip(mine, counts)])
    return total


def _validate_with_beam(data_path: str, spec: ProblemSpec, options, beam_args: list[str],
                        count_eval_rows: bool = False):
    """(statistics, tracker, drift reference) from one Beam pipeline: the input read by
    Beam's sources across workers, every result written under the work location
    (components/common/beam_io.py) and read back here. ``count_eval_rows``: the tracker
    also holds the eval split's rows (``eval_rows``)."""
    import tempfile

    import apache_beam as beam
    import numpy as np
    import tensorflow_data_validation as tfdv
    from tfx_bsl.arrow import table_util

    from kfp_ct.components.common import beam_io, drift

    work = beam_io.work_location(beam_args, "validate")
    stats_path = storage.join(work, STATS_FILE)
    try:
        pipeline_options = beam_io.pipeline_options(beam_args)
        with beam_io.worker_errors(), beam.Pipeline(options=pipeline_options) as p:
            tracked = beam_io.read_tracked_batches(p, data_path, spec)
            batches = tracked | "Batches" >> beam.Map(_batch_of)
            stats = (batches
                     | "Canonicalize" >> beam.Map(table_util.CanonicalizeRecordBatch)
                     | "Statistics" >> tfdv.GenerateStatistics(options))
            _ = stats | "WriteStatistics" >> tfdv.WriteStatisticsToBinaryFile(stats_path)
            beam_io.write_json_text(beam_io.track(tracked, spec), work, "tracker.json",
                                    "WriteTracker")
            cells = (batches
                     | "ReferenceCells" >> beam.Map(_reference_cells,
                                                    beam.pvalue.AsSingleton(stats),
                                                    spec.to_json())
                     | "SumCells" >> beam.CombineGlobally(_sum_cells)
                     | "CellsJson" >> beam.Map(json.dumps))
            beam_io.write_json_text(cells, work, "reference_cells.json", "WriteCells")
            if count_eval_rows:
                beam_io.write_json_text(
                    batches | "EvalRows" >> beam.Map(_eval_rows, spec.to_json())
                    | "SumEvalRows" >> beam.CombineGlobally(sum)
                    | "EvalRowsJson" >> beam.Map(json.dumps), work, "eval_rows.json",
                    "WriteEvalRows")
        with tempfile.TemporaryDirectory() as tmp:
            stats = tfdv.load_stats_binary(storage.download(stats_path,
                                                            os.path.join(tmp, STATS_FILE)))
        tracker = beam_io.tracker_from(work, "tracker.json", spec)
        if count_eval_rows:
            tracker = _SplitTracker.from_json(spec, tracker.to_json())
            tracker.eval_rows = int(beam_io.read_json(work, "eval_rows.json"))
        summed = beam_io.read_json(work, "reference_cells.json")
    finally:
        beam_io.remove_work(work)
    rows, refs, counters = drift.reference_counters(stats, spec)
    for column, counter in counters.items():
        counter.counts = np.asarray(summed["cells"][column], dtype=np.float64)
    vocabularies = {c: drift.Vocabulary.from_json(v)
                    for c, v in summed.get("vocabularies", {}).items()}
    reference = drift.finish_reference(rows, refs, counters, summed["rows"], vocabularies)
    return stats, tracker, reference


def compute_statistics(data_path: str, spec: ProblemSpec, schema=None,
                       beam_args: list[str] | None = None, count_eval_rows: bool = False):
    """TFDV statistics of the spec's columns, the data checks that need a full pass, and
    the drift reference: (stats, tracker, reference).

    In-process by default (one pass for the statistics and the checks, one more for the
    reference's exact counts); with ``beam_args``, one Beam pipeline does all three.
    ``count_eval_rows``: the tracker also counts the eval split's rows (``eval_rows``).
    """
    import tensorflow_data_validation as tfdv

    from kfp_ct.components.common import beam_io, drift

    options = tfdv.StatsOptions(schema=schema, num_top_values=20, num_rank_histogram_buckets=20)
    if beam_io.uses_beam(beam_args):
        return _validate_with_beam(data_path, spec, options, list(beam_args),
                                   count_eval_rows)
    tracker = (_SplitTracker if count_eval_rows else data_lib.ColumnTracker)(spec)
    # Reading and the checks run a batch ahead of the statistics, on the second core.
    stats = _stats_in_memory(
        overlap.prefetched(data_lib.iter_batches(data_path, spec, tracker=tracker)), options)
    reference = drift.exact_reference(overlap.prefetched(data_lib.iter_batches(data_path, spec)),
                                      stats, spec)
    return stats, tracker, reference


def load_schema(path: str):
    """Reads a schema.pbtxt (local or gs://); SchemaError names the file on failure."""
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    try:
        text = storage.read_text(path)
    except Exception as exc:
        raise SchemaError(f"schema file {path}: cannot be read: {exc}") from None
    schema = schema_pb2.Schema()
    try:
        text_format.Parse(text, schema)
    except text_format.ParseError as exc:
        raise SchemaError(f"schema file {path}: does not parse as a TFMD Schema: {exc}") from None
    if not schema.feature:
        raise SchemaError(f"schema file {path}: declares no feature")
    return schema


def _add_data_anomalies(anomalies, tracker: data_lib.ColumnTracker) -> None:
    """Adds what the reader found and TFDV cannot see (it gets those values as missing):
    non-finite numbers, one ERROR reason per column, to the TFDV Anomalies proto."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    for column, found in sorted(tracker.nonfinite.items()):
        info = anomalies.anomaly_info[column]
        info.severity = anomalies_pb2.AnomalyInfo.ERROR
        reason = info.reason.add()
        reason.type = (anomalies_pb2.AnomalyInfo.FLOAT_TYPE_HAS_INF if found.inf
                       else anomalies_pb2.AnomalyInfo.FLOAT_TYPE_HAS_NAN)
        reason.short_description = NON_FINITE_KIND
        reason.description = found.describe()
        if not info.description:
            info.short_description, info.description = reason.short_description, reason.description


def _label_notes(tracker: data_lib.ColumnTracker) -> list[str]:
    return [f"label {tracker.spec.label!r}: class {value!r} appears only in the eval split: "
            f"{n} row(s); the label vocabulary comes from the training split, so evaluation "
            f"counts them as wrong" for value, n in tracker.eval_only_classes().items()]


def _anomaly_list(anomalies) -> list[dict]:
    out = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        kinds = [r.short_description for r in info.reason] or [info.short_description]
        details = [r.description for r in info.reason] or [info.description]
        for kind, detail in zip(kinds, details):
            out.append({"feature": feature, "kind": kind, "detail": detail})
    if anomalies.HasField("dataset_anomaly_info"):
        for r in anomalies.dataset_anomaly_info.reason:
            out.append({"feature": "(dataset)", "kind": r.short_description, "detail": r.description})
    return out


def render_report(stats, anomalies: list[dict], rows: int, schema_source: str) -> str:
    verdict = (f"<p class='ok'>No anomalies against the schema ({report.esc(schema_source)}).</p>"
               if not anomalies else
               f"<p class='bad'>{len(anomalies)} anomal{'y' if len(anomalies) == 1 else 'ies'} "
               f"against the schema ({report.esc(schema_source)}).</p>"
               + report.table(["feature", "kind", "detail"],
                              [[a["feature"], a["kind"], a["detail"]] for a in anomalies]))
    from kfp_ct.components.validate import render

    features = render.features_table(stats)
    return report.page("Data validation", f"<p>{rows} rows.</p>", verdict,
                       "<h3>Features</h3>", features)


def run_validate(data_path: str, problem: str, statistics_dir: str, schema_dir: str,
                 anomalies_dir: str, report_path: str, schema_path: str = "",
                 push_destination: str = "", strict: bool = False,
                 beam_args: list[str] | None = None,
                 training_thresholds: str | None = None) -> ValidateResult:
    """Computes statistics, settles the schema, finds anomalies and writes the report.

    Schema source, first that applies: the curated `schema_path`; the schema kept with
    the production version at `push_destination`; inferred from this data (first run).
    Anomalies: TFDV's against the schema, plus non-finite numbers (which every component
    reads as missing). Notes (never an error, strict or not): label classes only in the
    eval split, also printed as ``[kfp-ct] warning:`` lines for the console. Raises
    InputDataError for unusable data (always; LabelError for a label that cannot be
    learned from), AnomaliesFound in strict mode, and, given ``training_thresholds`` (the
    gate thresholds of the training run this task starts), EvalSplitTooSmall when the
    eval split has fewer rows than their ``min_examples``.
    """
    import tensorflow_data_validation as tfdv

    spec = load_problem(problem)
    schema, source = None, "inferred from this data"
    if schema_path:
        schema, source = load_schema(schema_path), f"curated file {schema_path}"
    elif push_destination:
        prod = registry.production(push_destination)
        if prod is not None and prod.state == "complete":
            kept = registry.audit_file(prod, registry.SCHEMA)
            if storage.exists(kept):
                schema = load_schema(kept)
                source = f"kept with production version {prod.version} ({push_destination})"
    stats, tracker, reference = compute_statistics(
        data_path, spec, schema=schema, beam_args=beam_args,
        count_eval_rows=training_thresholds is not None)
    tracker.check(data_path)
    if training_thresholds is not None:
        check_eval_rows(data_path, spec, tracker, training_thresholds)
    if schema is None:
        schema = tfdv.infer_schema(stats)
    anomalies_proto = tfdv.validate_statistics(stats, schema)
    _add_data_anomalies(anomalies_proto, tracker)
    anomalies = _anomaly_list(anomalies_proto)
    notes = _label_notes(tracker)
    for note in notes:  # the console shows these lines (pipelines/entrypoints/local.py)
        print(f"[kfp-ct] warning: {data_path}: {note}", flush=True)
    if strict and anomalies:
        lines = "\n".join(f"  - {a['feature']}: {a['kind']}: {a['detail']}" for a in anomalies)
        raise AnomaliesFound(
            f"{data_path}: {len(anomalies)} anomalies against the schema ({source}):\n{lines}")
    for d in (statistics_dir, schema_dir, anomalies_dir, os.path.dirname(report_path) or "."):
        os.makedirs(d, exist_ok=True)
    storage.write_bytes(os.path.join(statistics_dir, STATS_FILE), stats.SerializeToString())
    storage.write_text(os.path.join(statistics_dir, registry.DRIFT_REFERENCE),
                       json.dumps(reference, indent=1, sort_keys=True))
    tfdv.write_schema_text(schema, os.path.join(schema_dir, SCHEMA_FILE))
    storage.write_bytes(os.path.join(anomalies_dir, ANOMALIES_FILE),
                        anomalies_proto.SerializeToString())
    storage.write_text(os.path.join(anomalies_dir, ANOMALIES_JSON), json.dumps(anomalies, indent=1))
    storage.write_text(report_path, report.with_notes(
        render_report(stats, anomalies, tracker.rows, source), notes))
    return ValidateResult(rows=tracker.rows, schema_source=source, anomalies=anomalies,
                          notes=notes)
