"""Evaluate: the candidate against the production model on the raw eval rows.

The candidate SavedModel and, when the push destination serves one, the production
version are measured on the same raw eval rows (serialized ``tf.Example``s sent through
each model's ``serving_default`` signature), overall and per slice. The result is
``evaluation.json`` (read by the gate) and an HTML report.

Two paths, one result: without ``beam_args`` the models are measured in this process
(inprocess.py; no Beam or TFMA import, the default for local runs); with ``beam_args``
one TFMA run on that Beam runner does it (DirectRunner multi-processing, Dataflow,
Flink, Spark), and its output folder is kept under ``tfma/``. Both count the same rows,
slice them the same way and treat classes a model lacks the same way.

A production version whose files the registry finds damaged is recorded as baseline
state ``corrupt``, with the one command that recovers (``recovery``); one that loads but
does not answer is ``unusable``. Neither is mistaken for "no production model yet".

No kfp here.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import math
import os
import tempfile

from kfp_ct.components.common import metrics as metrics_lib
from kfp_ct.components.common import beam_io, registry, report, storage, tfenv  # noqa: F401
from kfp_ct.components.common.artifacts import EVALUATION_JSON, RAW_EVAL_FILE
from kfp_ct.components.common.errors import InputDataError, KfpCtError
from kfp_ct.components.common.problem import ProblemSpec, load_problem

TFMA_DIR = "tfma"
CANDIDATE = "candidate"
BASELINE = "baseline"
SIGNATURE = "serving_default"

BASELINE_NONE = "none"
BASELINE_OK = "ok"
BASELINE_UNUSABLE = "unusable"

PROBE_ROWS = 8
#: The TFMA path on one machine (what ran for every local run before the in-process
#: path; give it as beam_args to run TFMA on the Beam DirectRunner in this process).
DEFAULT_BEAM_ARGS = ("--runner=DirectRunner", "--direct_running_mode=in_memory")
#: KFP mounts a pod's artifact bucket here (``/gcs/BUCKET/...`` is ``gs://BUCKET/...``).
GCS_MOUNT, GCS_MOUNT_URI = "/gcs/", "gs://"
LABEL_ID_ROWS = "eval_rows_with_label_ids.tfrecord"


# TFMA metric class -> the name we report (what thresholds refer to).
# (The names, their direction and each task's set live in components/common/metrics.py.)
_CLASSIFICATION_METRICS = {
    "ExampleCount": metrics_lib.EXAMPLE_COUNT,
    "SparseCategoricalAccuracy": metrics_lib.ACCURACY,
}
_REGRESSION_METRICS = {
    "ExampleCount": metrics_lib.EXAMPLE_COUNT,
    "MeanSquaredError": metrics_lib.MSE,
    "MeanAbsoluteError": metrics_lib.MAE,
}
_CONFUSION_PLOT = "MultiClassConfusionMatrixPlot"


class EvaluationError(KfpCtError):
    """The candidate model, the eval rows or the slice request cannot be evaluated."""


@dataclasses.dataclass
class EvaluateResult:
    task: str
    label: str
    candidate: dict  # {"overall": {metric: value}, "slices": {"feature=value": {...}}}
    baseline: dict  # {"state", "version", "path", "detail", "overall"}
    confusion_matrix: dict | None  # {"labels": [...], "matrix": [[...]]} (rows: actual)
    # (+ "unseen_classes": {class: predicted counts} for eval classes the model lacks)
    naive: dict | None = None  # the no-skill predictor: {"metrics", "predictor"} (naive.py)
    notes: list = dataclasses.field(default_factory=list)  # e.g. eval-only classes

    def summary(self) -> dict:
        return dict(self.candidate["overall"])

    def to_dict(self) -> dict:
        doc = {"task": self.task, "label": self.label, "candidate": self.candidate,
               "baseline": self.baseline}
        if self.confusion_matrix is not None:
            doc["confusion_matrix"] = self.confusion_matrix
        if self.naive is not None:
            doc["naive"] = self.naive
        if self.notes:
            doc["notes"] = self.notes
        return doc


# --------------------------------------------------------------------- model probe


def _read_rows(path: str, n: int) -> list[bytes]:
    import tensorflow as tf

    return [r.numpy() for r in tf.data.TFRecordDataset(path).take(n)]


def probe_model(model_dir: str, spec: ProblemSpec, rows: list[bytes]) -> list[str] | None:
    """Loads the SavedModel and calls its serving signature on a few raw rows.

    Returns the class vocabulary (classification) or None (regression). Raises
    EvaluationError naming the path and what is wrong.
    """
    return _probe(model_dir, spec, rows)[0]


def _probe(model_dir: str, spec: ProblemSpec, rows: list[bytes]):
    """probe_model's checks; returns (classes or None, the loaded inprocess.Serving)."""
    import tensorflow as tf

    from kfp_ct.components.evaluate.inprocess import Serving

    where = f"model {model_dir}"
    if not os.path.isfile(os.path.join(model_dir, registry.SAVED_MODEL)):
        raise EvaluationError(f"{where}: no {registry.SAVED_MODEL} in it (not a SavedModel)")
    try:
        loaded = tf.saved_model.load(model_dir)
    except Exception as exc:  # corrupt protobuf, missing variables, unknown ops
        raise EvaluationError(
            f"{where}: the SavedModel does not load: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300] if str(exc) else ''}") from exc
    signatures = getattr(loaded, "signatures", {})
    if SIGNATURE not in signatures:
        raise EvaluationError(
            f"{where}: no {SIGNATURE!r} signature (found: {sorted(signatures) or 'none'}); "
            f"evaluation needs {SIGNATURE} taking serialized tf.Examples")
    fn = signatures[SIGNATURE]
    inputs = fn.structured_input_signature[1]
    if len(inputs) != 1 or next(iter(inputs.values())).dtype != tf.string:
        described = {k: f"{v.dtype.name}{v.shape}" for k, v in inputs.items()}
        raise EvaluationError(
            f"{where}: {SIGNATURE} must take one string input (serialized tf.Examples), "
            f"it takes {described}")
    serving = Serving(loaded=loaded, fn=fn, input_name=next(iter(inputs)))
    try:
        outputs = serving(rows)
    except Exception as exc:
        raise EvaluationError(
            f"{where}: {SIGNATURE} fails on raw eval rows: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300] if str(exc) else ''}") from exc
    expected = ("scores", "classes") if spec.task == "classification" else ("outputs",)
    missing = [k for k in expected if k not in outputs]
    if missing:
        raise EvaluationError(
            f"{where}: {SIGNATURE} returns {sorted(outputs)}, a {spec.task} model must "
            f"return {list(expected)}")
    if spec.task != "classification":
        return None, serving
    classes = outputs["classes"]
    if classes.ndim != 2 or classes.shape[0] == 0:
        raise EvaluationError(f"{where}: 'classes' has shape {classes.shape}, expected [N, C]")
    return [c.decode() if isinstance(c, bytes) else str(c) for c in classes[0]], serving


# ------------------------------------------------------------------------ labels
#
# A class in the eval rows that a model does not have (the label vocabulary is the
# training split's: the class was only in the eval split, or the production model was
# trained before it existed) can never be predicted: every such row is a wrong
# prediction. TFMA cannot take such a row as a text label (it looks the text up in the
# model's classes, gets -1 and fails on the batch), so when there are any, the rows go
# to TFMA with the label as each model's class id, a class it lacks getting an id past
# its last one (`_write_label_ids`): accuracy counts the row as wrong, the confusion
# matrix gets a row for the class, and macro recall counts it with recall 0.

LABEL_ID_FEATURE = "__kfp_ct_label_id_{model}"


def unseen_classes(counts: dict[str, int], classes: list[str]) -> dict[str, int]:
    """The eval rows' classes that ``classes`` (a model's) lacks -> their row counts."""
    known = set(classes)
    return {c: n for c, n in sorted(counts.items()) if c not in known}


def _write_label_ids(path: str, out: str, label: str, vocabularies: dict[str, list[str]],
                     unseen: dict[str, dict[str, int]]) -> dict[str, str]:
    """Copies the raw rows to ``out``, each with its label as every model's class id
    (LABEL_ID_FEATURE); a class the model lacks gets ``len(classes) + i`` (i: its place
    in ``sorted(unseen[model])``). Returns {model: label feature}."""
    import tensorflow as tf

    ids = {m: {**{c: i for i, c in enumerate(v)},
               **{c: len(v) + i for i, c in enumerate(sorted(unseen.get(m, {})))}}
           for m, v in vocabularies.items()}
    keys = {m: LABEL_ID_FEATURE.format(model=m) for m in vocabularies}
    with tf.io.TFRecordWriter(out) as writer:
        for record in tf.data.TFRecordDataset(path):
            example = tf.train.Example.FromString(record.numpy())
            values = example.features.feature[label].bytes_list.value
            value = values[0].decode("utf-8", errors="replace") if values else None
            for model, key in keys.items():
                if value is not None:
                    example.features.feature[key].int64_list.value.append(ids[model][value])
            writer.write(example.SerializeToString())
    return keys


def unseen_notes(unseen: dict[str, dict[str, int]]) -> list[str]:
    """What evaluation.json and the report say about classes a model lacks."""
    notes = [f"class {c!r} appears only in the eval split: {n} row(s), counted as wrong"
             for c, n in unseen.get(CANDIDATE, {}).items()]
    notes += [f"class {c!r} is not one of the production model's classes: {n} row(s), "
              f"counted as wrong for it" for c, n in unseen.get(BASELINE, {}).items()]
    return notes


# -------------------------------------------------------------------------- TFMA


def build_eval_config(spec: ProblemSpec, slices: list[str], with_baseline: bool,
                      label_keys: dict[str, str] | None = None):
    """``label_keys``: per model, the feature holding its label (default: the label)."""
    import tensorflow_model_analysis as tfma

    names = [CANDIDATE] + ([BASELINE] if with_baseline else [])
    model_specs = [tfma.ModelSpec(name=n, label_key=(label_keys or {}).get(n, spec.label),
                                  signature_name=SIGNATURE, is_baseline=(n == BASELINE))
                   for n in names]
    classes = _CLASSIFICATION_METRICS if spec.task == "classification" else _REGRESSION_METRICS
    metrics = [tfma.MetricConfig(class_name=c) for c in classes]
    if spec.task == "classification":
        metrics.append(tfma.MetricConfig(class_name=_CONFUSION_PLOT))
    slicing = [tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[f]) for f in slices]
    return tfma.EvalConfig(
        model_specs=model_specs,
        metrics_specs=[tfma.MetricsSpec(metrics=metrics, model_names=names)],
        slicing_specs=slicing)


def beam_location(path: str) -> str:
    """Where Beam workers find ``path``: KFP's ``/gcs/BUCKET/...`` mount of a cluster pod
    is ``gs://BUCKET/...`` for them (a Dataflow / Flink / Spark worker has no such mount);
    any other path is given as it is."""
    return GCS_MOUNT_URI + path[len(GCS_MOUNT):] if path.startswith(GCS_MOUNT) else path


def beam_options(beam_args) -> dict:
    """``PipelineOptions(beam_args).get_all_options()``: what the runner is given."""
    return beam_io.pipeline_options(list(beam_args)).get_all_options()


def _run_tfma(spec, slices, data_location: str, models: dict[str, str], out: str,
              beam_args, label_keys: dict[str, str] | None = None):
    """One TFMA run: rows read by Beam's own TFRecord source from ``data_location``,
    metrics and plots written by Beam's sinks to ``out`` (local or gs://); ``models``:
    {name: a SavedModel path every worker can load}."""
    import apache_beam as beam
    import tensorflow_model_analysis as tfma
    from tfx_bsl.tfxio import tf_example_record

    config = build_eval_config(spec, slices, with_baseline=BASELINE in models,
                               label_keys=label_keys)
    shared = [tfma.default_eval_shared_model(eval_saved_model_path=path, eval_config=config,
                                             model_name=name, include_default_metrics=False)
              for name, path in models.items()]
    storage.remove_tree(out)  # a retry's earlier shards must not be read as this run's
    # tfma.run_model_analysis would do the same through tf.io.gfile (TensorFlow's own
    # filesystems) for the output folder: this keeps every read and write in Beam's.
    rows = tf_example_record.TFExampleRecord(
        file_pattern=data_location, raw_record_column_name=tfma.ARROW_INPUT_COLUMN,
        telemetry_descriptors=["kfp-ct-evaluate"])
    options = beam_io.pipeline_options(list(beam_args or DEFAULT_BEAM_ARGS))
    with beam.Pipeline(options=options) as p:
        _ = (p
             | "ReadEvalRows" >> rows.BeamSource()
             | "EvaluateAndWrite" >> tfma.ExtractEvaluateAndWriteResults(
                 eval_config=config, eval_shared_model=shared if len(shared) > 1 else shared[0],
                 output_path=out))


def _slice_name(slice_key) -> str:
    """A TFMA slice key's name: ``column=value`` (``inprocess.slice_value_name``)."""
    from kfp_ct.components.evaluate.inprocess import slice_value_name

    parts = []
    for key in slice_key.single_slice_keys:
        kind = key.WhichOneof("kind")
        value = getattr(key, kind) if kind else ""
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        parts.append(slice_value_name(key.column, value))
    return ",".join(parts)  # "" is the overall slice


def _model_of(name: str, models: list[str]) -> str | None:
    if name in models:
        return name
    return CANDIDATE if len(models) == 1 else None  # one model: keys may be unnamed


def _read_metrics(out: str, spec: ProblemSpec, models: list[str]) -> dict:
    """{model: {slice_name: {metric: value}}} for the metrics we configured."""
    import tensorflow_model_analysis as tfma

    wanted = set((_CLASSIFICATION_METRICS if spec.task == "classification"
                  else _REGRESSION_METRICS).values())
    rename = {"sparse_categorical_accuracy": metrics_lib.ACCURACY,
              "mean_squared_error": metrics_lib.MSE, "mean_absolute_error": metrics_lib.MAE}
    found: dict = {m: {} for m in models}
    for record in tfma.load_metrics(out):
        slice_name = _slice_name(record.slice_key)
        for kv in record.metric_keys_and_values:
            key = kv.key
            if key.is_diff or key.HasField("sub_key"):
                continue
            model = _model_of(key.model_name, models)
            name = rename.get(key.name, key.name)
            if model is None or name not in wanted or not kv.value.HasField("double_value"):
                continue
            value = float(kv.value.double_value.value)
            if name == metrics_lib.EXAMPLE_COUNT:
                value = int(round(value))
            found[model].setdefault(slice_name, {})[name] = value
    return found


def _with_rmse(found: dict) -> dict:
    """Adds rmse beside every mse; orders each slice's metrics by name (both paths)."""
    for per_slice in found.values():
        for name, metrics in per_slice.items():
            if metrics_lib.MSE in metrics:
                metrics[metrics_lib.RMSE] = math.sqrt(max(metrics[metrics_lib.MSE], 0.0))
            per_slice[name] = dict(sorted(metrics.items()))
    return found


def _read_confusion(out: str, models: list[str], sizes: dict[str, int],
                    unseen_rows: dict[str, int] | None = None) -> dict:
    """{model: {slice_name: matrix (rows actual, cols predicted)}}.

    ``unseen_rows``: per model, how many classes it does not have (ids ``n``, ``n + 1``,
    ... in the rows given to TFMA, see _write_label_ids): the matrix gets that many rows
    more than columns, one per such class.
    """
    import tensorflow_model_analysis as tfma

    found: dict = {m: {} for m in models}
    for record in tfma.load_plots(out):
        slice_name = _slice_name(record.slice_key)
        for kv in record.plot_keys_and_values:
            model = _model_of(kv.key.model_name, models)
            if model is None or not kv.value.HasField("multi_class_confusion_matrix_at_thresholds"):
                continue
            n = sizes[model]
            rows = n + (unseen_rows or {}).get(model, 0)
            matrix = [[0] * n for _ in range(rows)]
            matrices = kv.value.multi_class_confusion_matrix_at_thresholds.matrices
            for entry in (matrices[0].entries if matrices else []):
                a, p = entry.actual_class_id, entry.predicted_class_id
                if 0 <= a < rows and 0 <= p < n:
                    matrix[a][p] += int(round(entry.num_weighted_examples))
            found[model][slice_name] = matrix
    return found


# --------------------------------------------------------------------------- main


def _split_slices(per_slice: dict) -> tuple[dict, dict]:
    overall = per_slice.get("", {})
    slices = {k: v for k, v in sorted(per_slice.items()) if k}
    return overall, slices


def _baseline_record(state: str, info, detail: str, overall=None) -> dict:
    return {"state": state, "version": info.version if info else None,
            "path": info.path if info else None, "detail": detail, "overall": overall}


def _measure_in_process(spec, slices, data_path, data_uri, model_dir, servings, classes,
                        unseen):
    """The default path: no Beam, no TFMA (inprocess.py). -> (metrics, confusion,
    why the baseline failed or None)."""
    from kfp_ct.components.evaluate import inprocess

    try:
        metrics, confusion, failed = inprocess.evaluate(
            data_path, spec.task, spec.label, slices, servings, classes, unseen)
    except ValueError as exc:  # a row without its label, a slice value TFMA cannot name
        raise EvaluationError(f"cannot evaluate the rows {data_uri}: {exc}") from exc
    if CANDIDATE in failed:
        raise EvaluationError(f"model {model_dir} fails on the eval rows {data_uri}: "
                              f"{failed[CANDIDATE]}")
    return metrics, confusion, failed.get(BASELINE)


def _label_id_rows(data_path: str, spec, classes, unseen, work: str, scratch: str) -> tuple:
    """Writes the rows with every model's label ids (_write_label_ids) where the Beam
    workers read them: ``scratch`` (local or gs://). -> (their location, label keys)."""
    local = os.path.join(work, "label-ids")
    os.makedirs(local, exist_ok=True)
    keys = _write_label_ids(data_path, os.path.join(local, LABEL_ID_ROWS), spec.label,
                            classes, unseen)
    if scratch != local:
        storage.upload_tree(local, scratch, last=())
    return storage.join(scratch, LABEL_ID_ROWS), keys


def _measure_with_tfma(spec, slices, data_path, data_uri, model_dir, locations, classes,
                       unseen, work, tfma_out, beam_args):
    """The Beam path: TFMA on the runner beam_args name. ``locations``: {model: the
    SavedModel path the workers load}. -> (metrics, confusion, why the baseline failed
    or None); the candidate alone is measured when the pair fails."""
    import uuid

    rows, label_keys, scratch = beam_location(data_uri), None, None
    if unseen:
        # Where the rewritten rows go: under --temp_location when given, else beside the
        # TFMA output when that is in a bucket, else this machine's temporary folder
        # (a runner on this machine: the DirectRunner).
        temp = beam_options(beam_args).get("temp_location")
        name = f"kfp-ct-evaluate-{uuid.uuid4().hex[:12]}"
        parent = os.path.dirname(tfma_out.rstrip("/")) if not storage.is_gcs(tfma_out) \
            else tfma_out.rstrip("/").rsplit("/", 1)[0]
        scratch = (storage.join(beam_location(temp), name) if temp
                   else storage.join(parent, "." + name) if storage.is_gcs(tfma_out)
                   else os.path.join(work, "label-ids"))
        rows, label_keys = _label_id_rows(data_path, spec, classes,
                                          unseen, work, scratch)
    models, failure = dict(locations), None
    try:
        try:
            _run_tfma(spec, slices, rows, models, tfma_out, beam_args, label_keys)
        except Exception as exc:
            if BASELINE not in models:
                raise EvaluationError(
                    f"TFMA failed on model {model_dir} with rows {data_uri}: "
                    f"{type(exc).__name__}: {exc}") from exc
            # The pair failed: measure the candidate alone; the baseline is unusable.
            models.pop(BASELINE)
            failure = f"fails in TFMA: {type(exc).__name__}: {str(exc)[:300]}"
            try:
                _run_tfma(spec, slices, rows, models, tfma_out, beam_args, label_keys)
            except Exception as exc2:
                raise EvaluationError(
                    f"TFMA failed on model {model_dir} with rows {data_uri}: "
                    f"{type(exc2).__name__}: {exc2}") from exc2
    finally:
        if scratch and storage.is_gcs(scratch):
            storage.remove_tree(scratch)
    names = list(models)
    with storage.local_copy(tfma_out) as local_tfma:  # TFMA's readers use tf.io.gfile
        metrics = _read_metrics(local_tfma, spec, names)
        confusion = {}
        if spec.task == "classification":
            confusion = _read_confusion(local_tfma, names, {m: len(classes[m]) for m in names},
                                        {m: len(unseen.get(m, {})) for m in names})
    if not metrics[CANDIDATE].get(""):
        raise EvaluationError(f"TFMA wrote no overall metrics for {model_dir} in {tfma_out}")
    return metrics, confusion, failure


def run_evaluate(model_dir: str, raw_eval_dir: str, problem: str, push_destination: str,
                 output_dir: str, report_path: str, slices: list[str] | None = None,
                 beam_args: list[str] | None = None) -> EvaluateResult:
    """Evaluates the candidate (and the production baseline) on the raw eval rows.

    Two paths give the same evaluation.json and report. Without ``beam_args``, in this
    process (inprocess.py: each model loaded once, its signature called on batches of
    rows; no Beam, no TFMA imported). With ``beam_args``, TFMA on that Beam runner: the
    workers read the rows from ``raw_eval_dir`` and load the models from where they
    are (``model_dir``, the production version's path; KFP's ``/gcs/`` mount is given
    to them as ``gs://``), TFMA writes to ``output_dir``/tfma through Beam's
    filesystems.

    Args:
        model_dir: The candidate SavedModel (serving_default over serialized tf.Examples).
        raw_eval_dir: Folder holding eval_raw.tfrecord (raw rows with the label).
        problem: The problem spec, inline JSON or a path.
        push_destination: The serving model base; "" means no baseline is looked up.
        output_dir: Receives evaluation.json and, on the Beam path, TFMA's output (tfma/).
        report_path: Where the HTML report is written.
        slices: Raw column names; metrics are also computed per value of each. Empty:
            the problem spec's ``slices``.
        beam_args: Beam pipeline options: run TFMA on that runner. Empty: in-process.
    """
    spec = load_problem(problem)
    slices = list(dict.fromkeys(slices or spec.slices))  # empty: the spec's own
    unknown = [s for s in slices if s not in spec.required_columns]
    if unknown:
        raise EvaluationError(
            f"cannot slice by {unknown}: not a raw column of the problem; raw columns: "
            f"{list(spec.required_columns)}")
    data_uri = storage.join(raw_eval_dir, RAW_EVAL_FILE)
    if not storage.exists(data_uri):
        raise InputDataError(
            f"no raw eval rows at {data_uri}: expected the transform step's {RAW_EVAL_FILE}")
    beam_args = list(beam_args or [])
    # Production first (one listing, two small reads): a corrupt one is said at once, not
    # after the candidate is loaded and measured.
    info = registry.production(push_destination) if push_destination else None
    if info is not None and info.state == registry.CORRUPT:
        print(f"[kfp-ct] warning: production version {info.version} at {info.path} is "
              f"corrupt: {info.detail}; the gate will not bless a candidate that cannot be "
              f"compared with it; {registry.recovery(push_destination, info)}", flush=True)

    with contextlib.ExitStack() as stack:
        work = stack.enter_context(tempfile.TemporaryDirectory(prefix="kfp-ct-evaluate-"))
        data_path = stack.enter_context(storage.local_copy(data_uri))
        rows = _read_rows(data_path, PROBE_ROWS)
        if not rows:
            raise InputDataError(f"{data_uri} holds no rows: nothing to evaluate")
        candidate_dir = stack.enter_context(storage.local_copy(model_dir))
        classes, servings = {}, {}
        classes[CANDIDATE], servings[CANDIDATE] = _probe(candidate_dir, spec, rows)

        # Where the Beam workers load each model from: where it is, not this pod's copy.
        locations = {CANDIDATE: beam_location(model_dir)}
        if not push_destination:
            baseline = _baseline_record(BASELINE_NONE, None, "no push destination given")
        elif info is None:
            baseline = _baseline_record(
                BASELINE_NONE, None, f"no production model at {push_destination}: first push")
        elif info.state == registry.CORRUPT:
            # TF Serving serves it (the newest) but cannot load it: its own state, with the
            # one command that brings back a loadable production model.
            baseline = _baseline_record(
                registry.CORRUPT, info,
                f"production version {info.version} at {info.path} is corrupt: "
                f"{info.detail}")
            baseline["recovery"] = registry.recovery(push_destination, info)
        elif info.state != registry.COMPLETE:
            baseline = _baseline_record(
                BASELINE_UNUSABLE, info,
                f"production version {info.version} at {info.path} is {info.state}: "
                f"{info.detail}")
        else:
            try:
                baseline_dir = stack.enter_context(storage.local_copy(info.path))
                classes[BASELINE], servings[BASELINE] = _probe(baseline_dir, spec, rows)
                locations[BASELINE] = beam_location(info.path)
                baseline = _baseline_record(BASELINE_OK, info, f"production version "
                                            f"{info.version} at {info.path}")
            except KfpCtError as exc:
                baseline = _baseline_record(
                    BASELINE_UNUSABLE, info,
                    f"production version {info.version} at {info.path} cannot be "
                    f"evaluated: {exc}")

        # Classes a model lacks (eval-only classes): counted as wrong, see _write_label_ids.
        from kfp_ct.components.evaluate import naive as naive_lib

        labels = naive_lib.label_values([data_path], spec.label, spec.task)  # one pass
        unseen = {}
        if spec.task == "classification":
            counts = collections.Counter(labels)
            unseen = {m: u for m in servings if (u := unseen_classes(counts, classes[m]))}

        local_out = output_dir
        if storage.is_gcs(output_dir):
            local_out = os.path.join(work, "out")
        os.makedirs(local_out, exist_ok=True)
        if beam_args:
            servings = {}  # the workers load their own
            metrics, confusion, failure = _measure_with_tfma(
                spec, slices, data_path, data_uri, model_dir, locations, classes, unseen,
                work, storage.join(beam_location(output_dir), TFMA_DIR), beam_args)
        else:
            print("[kfp-ct] evaluate: in process (no beam_args)")
            metrics, confusion, failure = _measure_in_process(
                spec, slices, data_path, data_uri, model_dir, servings, classes, unseen)
        if failure is not None:
            baseline = _baseline_record(
                BASELINE_UNUSABLE, info,
                f"production version {info.version} at {info.path} {failure}")

        names = list(metrics)
        confusion_doc = None
        if spec.task == "classification":
            for model in names:
                for slice_name, matrix in confusion[model].items():
                    metrics[model].setdefault(slice_name, {}).update(
                        metrics_lib.macro_precision_recall(matrix))
            if "" in confusion[CANDIDATE]:
                n = len(classes[CANDIDATE])
                confusion_doc = {"labels": classes[CANDIDATE],
                                 "matrix": confusion[CANDIDATE][""][:n]}
                if unseen.get(CANDIDATE):
                    confusion_doc["unseen_classes"] = dict(zip(
                        sorted(unseen[CANDIDATE]), confusion[CANDIDATE][""][n:]))
        metrics = _with_rmse(metrics)
        overall, by_slice = _split_slices(metrics[CANDIDATE])
        if not overall:
            raise EvaluationError(f"no overall metrics for {model_dir}")
        if BASELINE in names:
            baseline["overall"], baseline["slices"] = _split_slices(metrics[BASELINE])
            if spec.task == "classification" and "" in confusion[BASELINE]:
                baseline["confusion_matrix"] = {  # square: rows of classes it lacks cut off
                    "labels": classes[BASELINE],
                    "matrix": confusion[BASELINE][""][:len(classes[BASELINE])]}

        naive = naive_lib.naive_metrics(labels, spec.task)
        result = EvaluateResult(task=spec.task, label=spec.label,
                                candidate={"overall": overall, "slices": by_slice},
                                baseline=baseline, confusion_matrix=confusion_doc,
                                naive=naive, notes=unseen_notes(
                                    {m: u for m, u in unseen.items() if m in names}))
        with open(os.path.join(local_out, EVALUATION_JSON), "w") as fh:
            json.dump(result.to_dict(), fh, indent=2, sort_keys=True)
        if local_out != output_dir:
            storage.upload_tree(local_out, output_dir, last=(EVALUATION_JSON,))
    storage.write_text(report_path,
                       report.with_notes(render_report(result, model_dir), result.notes))
    return result


# ------------------------------------------------------------------------- report


_fmt = report.fmt


def render_report(result: EvaluateResult, model_dir: str = "") -> str:
    base = result.baseline
    base_overall = base.get("overall") or {}
    rows = []
    for name, value in result.candidate["overall"].items():
        other = base_overall.get(name)
        delta = (value - other) if isinstance(other, (int, float)) else None
        rows.append([name, _fmt(value), _fmt(other),
                     (f"{delta:+.4f}" if isinstance(delta, float) else _fmt(delta))])
    state_css = {"ok": "ok", "unusable": "bad", "corrupt": "bad"}.get(base["state"], "")
    sections = [
        f"<p>Task: {report.esc(result.task)}; label: {report.esc(result.label)}; "
        f"candidate: {report.esc(model_dir)}</p>",
        f"<p>Baseline: <span class='{state_css}'>{report.esc(base['state'])}</span>"
        f" &mdash; {report.esc(base['detail'])}</p>",
        "<h3>Overall</h3>",
        report.table(["metric", "candidate", "baseline", "delta"], rows),
    ]
    slices = result.candidate["slices"]
    if slices:
        names = sorted({m for v in slices.values() for m in v})
        sections += ["<h3>Slices (candidate)</h3>",
                     report.table(["slice"] + names,
                                  [[k] + [_fmt(v.get(m)) for m in names]
                                   for k, v in slices.items()])]
    from kfp_ct.components.evaluate import render

    sections += render.pictures(result)  # per-slice bars, confusion-matrix heatmaps
    return report.page("Evaluation: candidate vs production", *sections)
