"""Data validation (the roles of TFX StatisticsGen + SchemaGen + ExampleValidator).

Statistics are TFDV's, computed by its in-memory combiners over Arrow batches streamed
from the input: one pass, memory bounded by the batch size, no Beam start-up. With
`beam_args` the same statistics come from `tfdv.GenerateStatistics` on a Beam runner
(Dataflow, Flink, Spark) for data one machine cannot read in time.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Iterable

from components.common import tfenv  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)
from components.common import data as data_lib
from components.common import registry, report, storage
from components.common.errors import InputDataError, SchemaError
from components.common.problem import ProblemSpec, load_problem

STATS_FILE = "FeatureStats.pb"
SCHEMA_FILE = "schema.pbtxt"
ANOMALIES_FILE = "SchemaDiff.pb"
ANOMALIES_JSON = "anomalies.json"
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


def _stats_with_beam(data_path: str, spec: ProblemSpec, options, beam_args: list[str], tmp: str):
    import apache_beam as beam
    import tensorflow_data_validation as tfdv
    from apache_beam.options.pipeline_options import PipelineOptions
    from tfx_bsl.arrow import table_util

    files = data_lib.resolve_inputs(data_path)
    out = os.path.join(tmp, "stats.pb")
    spec_json = spec.to_json()

    def read(file):
        from components.common.problem import parse_problem
        local_spec = parse_problem(json.loads(spec_json))
        for batch in data_lib.iter_batches(file, local_spec):
            yield table_util.CanonicalizeRecordBatch(batch)

    with beam.Pipeline(options=PipelineOptions(beam_args)) as p:
        _ = (p | beam.Create(files) | beam.FlatMap(read)
             | tfdv.GenerateStatistics(options)
             | tfdv.WriteStatisticsToBinaryFile(out))
    return tfdv.load_stats_binary(out)


def compute_statistics(data_path: str, spec: ProblemSpec, schema=None,
                       beam_args: list[str] | None = None):
    """TFDV statistics of the spec's columns, plus the data checks that need a full pass."""
    import tempfile

    import tensorflow_data_validation as tfdv

    options = tfdv.StatsOptions(schema=schema, num_top_values=20, num_rank_histogram_buckets=20)
    tracker = data_lib.ColumnTracker(spec)
    if beam_args:
        with tempfile.TemporaryDirectory() as tmp:
            # The Beam path reads in workers; a cheap local pass still checks labels and nulls.
            for _ in data_lib.iter_batches(data_path, spec, tracker=tracker):
                pass
            return _stats_with_beam(data_path, spec, options, beam_args, tmp), tracker
    stats = _stats_in_memory(data_lib.iter_batches(data_path, spec, tracker=tracker), options)
    return stats, tracker


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
    from components.validate import render

    features = render.features_table(stats)
    return report.page("Data validation", f"<p>{rows} rows.</p>", verdict,
                       "<h3>Features</h3>", features)


def run_validate(data_path: str, problem: str, statistics_dir: str, schema_dir: str,
                 anomalies_dir: str, report_path: str, schema_path: str = "",
                 push_destination: str = "", strict: bool = False,
                 beam_args: list[str] | None = None) -> ValidateResult:
    """Computes statistics, settles the schema, finds anomalies and writes the report.

    Schema source, first that applies: the curated `schema_path`; the schema kept with
    the production version at `push_destination`; inferred from this data (first run).
    Anomalies: TFDV's against the schema, plus non-finite numbers (which every component
    reads as missing). Notes (never an error, strict or not): label classes only in the
    eval split. Raises InputDataError for unusable data (always; LabelError for a label
    that cannot be learned from) and AnomaliesFound in strict mode.
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
    stats, tracker = compute_statistics(data_path, spec, schema=schema, beam_args=beam_args)
    tracker.check(data_path)
    if schema is None:
        schema = tfdv.infer_schema(stats)
    anomalies_proto = tfdv.validate_statistics(stats, schema)
    _add_data_anomalies(anomalies_proto, tracker)
    anomalies = _anomaly_list(anomalies_proto)
    notes = _label_notes(tracker)
    if strict and anomalies:
        lines = "\n".join(f"  - {a['feature']}: {a['kind']}: {a['detail']}" for a in anomalies)
        raise AnomaliesFound(
            f"{data_path}: {len(anomalies)} anomalies against the schema ({source}):\n{lines}")
    for d in (statistics_dir, schema_dir, anomalies_dir, os.path.dirname(report_path) or "."):
        os.makedirs(d, exist_ok=True)
    # The drift baseline: exact training counts per cell, one more cheap pass.
    from components.common import drift

    reference = drift.exact_reference(data_lib.iter_batches(data_path, spec), stats, spec)
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
