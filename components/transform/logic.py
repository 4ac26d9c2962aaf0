"""TF Transform over the validated data (the role of TFX Transform, with ExampleGen's split).

Without `beam_args` (the local default, measured faster on one machine), two passes over
the input, both streaming Arrow batches:

1. analyze: TFT's analysis graph over the train split only, fed RecordBatches (no
   per-row Python objects), run directly (components/transform/analyze_local.py), or,
   for operations that module does not run, as TFT's in-memory Beam pipeline
   (`tft_beam.AnalyzeDataset`).
2. transform: the saved transform graph applied in-process, batch by batch, and written
   as TFRecord files of `tf.Example`s by tfx_bsl's C++ encoder; the raw eval rows are
   written the same way (serialized raw `tf.Example`s, as TF Serving receives them).

In both passes reading runs a batch ahead in a thread, and in the second the transform
graph runs a batch ahead of the encoder (components/common/overlap.py): the same records
in the same order, on both cores.

With `beam_args` (a runner: Dataflow, Flink, Spark, the DirectRunner's multi-processing
mode), both passes are one Beam pipeline (`transform_with_beam`): Beam's sources read the
input across workers, `tft_beam.TransformDataset` transforms both splits, and the workers
write the graph, the sharded examples and the raw eval rows under the work location
(components/common/beam_io.py). The same examples as the in-process path, in another order.

Outputs are staged and moved into place only when everything succeeded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import shutil
import tempfile

from kfp_ct.components.common import tfenv  # noqa: F401
from kfp_ct.components.common import beam_io, overlap, storage
from kfp_ct.components.common import data as data_lib
from kfp_ct.components.common.artifacts import RAW_EVAL_FILE, SPLIT_FILE
from kfp_ct.components.common.errors import ProblemSpecError
from kfp_ct.components.common.problem import ProblemSpec, load_problem, user_function
from kfp_ct.components.transform.preprocessing import (build_preprocessing_fn, raw_feature_spec,
                                                with_finite_inputs)

TRAIN, EVAL = "train", "eval"
SHARD_ROWS = 250_000
DEFAULT_BEAM_ARGS = ("--runner=DirectRunner", "--direct_running_mode=in_memory")


@dataclasses.dataclass
class TransformResult:
    train_rows: int
    eval_rows: int
    transformed_features: list[str]

    def summary(self) -> dict:
        return {"train_rows": self.train_rows, "eval_rows": self.eval_rows,
                "transformed_features": self.transformed_features}


def tensor_adapter_config(spec: ProblemSpec):
    """How the canonicalized Arrow batches map to the raw feature spec's tensors."""
    import pyarrow as pa
    from tensorflow_transform.tf_metadata import schema_utils
    from tfx_bsl.tfxio import tensor_adapter, tensor_representation_util

    schema = schema_utils.schema_from_feature_spec(raw_feature_spec(spec))
    reps = tensor_representation_util.InferTensorRepresentationsFromSchema(schema)
    types = data_lib.arrow_types(spec)
    arrow_schema = pa.schema([(name, pa.list_(_list_value_type(types[name])))
                              for name in sorted(reps)])
    return tensor_adapter.TensorAdapterConfig(arrow_schema, reps)


def _list_value_type(typ):
    import pyarrow as pa

    return pa.binary() if pa.types.is_string(typ) else typ


def _project(batch, spec: ProblemSpec):
    """The batch's raw-feature columns, canonicalized to list arrays in schema order."""
    return data_lib.as_list_batch(batch, spec)


def _split_batches(data_path: str, spec: ProblemSpec, tracker=None):
    """Yields (raw projected batch, eval mask) for every input batch."""
    for batch in data_lib.iter_batches(data_path, spec, tracker=tracker):
        mask = tracker.eval_mask(batch) if tracker is not None else data_lib.eval_mask(batch, spec)
        yield _project(batch, spec), mask


def _train_batches(data_path: str, spec_json: str):
    """Beam FlatMap body: the train-split batches of one input path."""
    spec = load_problem(spec_json)
    for batch, is_eval in _split_batches(data_path, spec):
        train = batch.filter(_to_arrow_mask(~is_eval))
        if train.num_rows:
            yield train


def _to_arrow_mask(mask):
    import pyarrow as pa

    return pa.array(mask, type=pa.bool_())


def resolve_preprocessing_fn(spec: ProblemSpec):
    """The user's preprocessing_fn (seeing non-finite numbers as missing, as the default
    one does, and checked to output the label) or the default one built from the spec."""
    fn = user_function(spec, "preprocessing_fn", required=True) if spec.module_file else None
    return with_label_output(with_finite_inputs(fn, spec), spec) if fn \
        else build_preprocessing_fn(spec)


def with_label_output(preprocessing_fn, spec: ProblemSpec):
    """``preprocessing_fn`` that refuses, when TFT first traces it (the analyze pass,
    before anything is written), to return no label while it was given one: training
    would fail later on a KeyError. At serving time no label comes in, and none is
    expected out."""

    def checked(inputs):
        outputs = preprocessing_fn(inputs)
        if spec.label in inputs and (not isinstance(outputs, dict) or spec.label not in outputs):
            returned = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
            raise ProblemSpecError(
                f"user module {spec.module_file}: preprocessing_fn's outputs lack the label "
                f"{spec.label!r}; it returned: {returned}")
        return outputs

    return checked


@contextlib.contextmanager
def _tracing_errors(spec: ProblemSpec):
    """A user preprocessing_fn that fails while TFT traces it: a ProblemSpecError naming
    the module."""
    try:
        yield
    except (KeyError, TypeError, ValueError) as exc:
        if spec.module_file:
            raise ProblemSpecError(
                f"preprocessing_fn of {spec.module_file} failed while tracing: "
                f"{type(exc).__name__}: {exc}") from exc
        raise


def _analyze_dataset(batches, config, preprocessing_fn, spec: ProblemSpec):
    """TFT's AnalyzeDataset over the train rows."""
    import tensorflow_transform.beam as tft_beam

    with _tracing_errors(spec):
        return (batches, config) | "Analyze" >> tft_beam.AnalyzeDataset(preprocessing_fn)


def analyze(data_path: str, spec: ProblemSpec, transform_graph_dir: str,
            beam_args: list[str] | None, tmp: str) -> None:
    """The analyze pass of the in-process path: TFT's analysis graph run directly
    (components/transform/analyze_local.py) when it holds only the operations run
    there, else TFT's Beam pipeline on the in-memory runner."""
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from kfp_ct.components.transform import beamenv
    from kfp_ct.components.transform import analyze_local

    preprocessing_fn = resolve_preprocessing_fn(spec)
    config = tensor_adapter_config(spec)
    spec_json = spec.to_json()
    with tft_beam.Context(temp_dir=os.path.join(tmp, "tft_tmp")):
        if not beam_args and analyze_local.enabled():
            with _tracing_errors(spec):
                run = analyze_local.plan(config, preprocessing_fn)
            if run is not None:
                run(lambda: overlap.prefetched(_train_batches(data_path, spec_json)),
                    transform_graph_dir)
                return
        beamenv.install()  # this process's in-memory runner only: no effect on results
        options = PipelineOptions(list(beam_args or DEFAULT_BEAM_ARGS))
        with beam.Pipeline(options=options) as p:
            batches = (p | "Inputs" >> beam.Create([data_path])
                       | "ReadTrainSplit" >> beam.FlatMap(_train_batches, spec_json))
            transform_fn = _analyze_dataset(batches, config, preprocessing_fn, spec)
            _ = transform_fn | "Write" >> tft_beam.WriteTransformFn(transform_graph_dir)


class _ShardedWriter:
    """Writes TFRecord shards of at most SHARD_ROWS records, so readers can interleave."""

    def __init__(self, folder: str, prefix: str):
        self.folder, self.prefix = folder, prefix
        self.rows, self.in_shard, self.shard, self.writer = 0, 0, 0, None
        os.makedirs(folder, exist_ok=True)

    def write(self, records) -> None:
        import tensorflow as tf

        records = list(records)
        done = 0
        while done < len(records):
            if self.writer is None or self.in_shard >= SHARD_ROWS:
                self.close()
                path = os.path.join(self.folder, f"{self.prefix}-{self.shard:05d}.tfrecord")
                self.writer, self.in_shard = tf.io.TFRecordWriter(path), 0
                self.shard += 1
            part = records[done:done + SHARD_ROWS - self.in_shard]
            write = self.writer.write
            for record in part:
                write(record)
            self.in_shard += len(part)
            self.rows += len(part)
            done += len(part)

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def check_finite(name: str, values, spec: ProblemSpec) -> None:
    """Refuses a transformed float feature holding NaN or infinity, before any model
    trains on it: training does not reliably notice (on some CPUs the fused
    MatMul+BiasAdd+Relu kernel of a tf.function reads NaN as 0, so the loss stays finite
    and the model learns from garbage)."""
    import numpy as np

    bad = ~np.isfinite(values)
    if bad.any():
        source = (f"preprocessing_fn of {spec.module_file}" if spec.module_file
                  else "the default preprocessing_fn")
        raise ProblemSpecError(
            f"{source} gave the transformed feature {name!r} values that are not finite "
            f"(NaN or infinity): {int(bad.sum())} of {bad.size} values in a batch of the "
            f"input; map them to numbers in the preprocessing_fn (for example "
            f"tf.where(tf.math.is_finite(x), x, 0.0)) so that no model trains on them")


def _outputs_to_record_batch(outputs: dict, spec: ProblemSpec):
    """Dense or sparse transformed tensors -> an Arrow batch of list arrays (one row each)."""
    import numpy as np
    import pyarrow as pa
    import tensorflow as tf

    arrays, names = [], []
    for name in sorted(outputs):
        t = outputs[name]
        if isinstance(t, tf.SparseTensor):
            rows = t.indices[:, 0].numpy()
            n = int(t.dense_shape[0])
            offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(np.int32)
            values = t.values.numpy()
        else:
            values = t.numpy()
            n = values.shape[0]
            values = values.reshape(n, -1)
            width = values.shape[1]
            offsets = (np.arange(n + 1) * width).astype(np.int32)
            values = values.reshape(-1)
        if values.dtype == object:
            flat = pa.array(values.tolist(), type=pa.binary())
        elif np.issubdtype(values.dtype, np.integer):
            flat = pa.array(values.astype(np.int64))
        else:
            values = values.astype(np.float32)
            check_finite(name, values, spec)
            flat = pa.array(values)
        arrays.append(pa.ListArray.from_arrays(pa.array(offsets), flat))
        names.append(name)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _transformed_batches(data_path: str, spec: ProblemSpec, tracker, layer, adapter):
    """Yields (transformed batch, raw projected batch, eval mask) for every input batch:
    reading runs a batch ahead of the transform graph, and the graph a batch ahead of the
    caller (common/overlap.py), in input order."""
    def transformed():
        for batch, is_eval in overlap.prefetched(_split_batches(data_path, spec, tracker)):
            yield (_outputs_to_record_batch(layer(adapter.ToBatchTensors(batch)), spec), batch,
                   is_eval)
    yield from overlap.prefetched(transformed())


def transform_and_write(data_path: str, spec: ProblemSpec, transform_graph_dir: str,
                        examples_dir: str, raw_eval_dir: str) -> TransformResult:
    import tensorflow as tf
    import tensorflow_transform as tft
    from tfx_bsl.coders import example_coder
    from tfx_bsl.tfxio import tensor_adapter

    tft_output = tft.TFTransformOutput(transform_graph_dir)
    layer = tft_output.transform_features_layer()
    adapter = tensor_adapter.TensorAdapter(tensor_adapter_config(spec))
    writers = {TRAIN: _ShardedWriter(os.path.join(examples_dir, TRAIN), "data"),
               EVAL: _ShardedWriter(os.path.join(examples_dir, EVAL), "data")}
    os.makedirs(raw_eval_dir, exist_ok=True)
    raw_writer = tf.io.TFRecordWriter(os.path.join(raw_eval_dir, RAW_EVAL_FILE))
    tracker = data_lib.ColumnTracker(spec)
    try:
        for transformed, batch, is_eval in _transformed_batches(data_path, spec, tracker,
                                                                  layer, adapter):
            encoded = example_coder.RecordBatchToExamples(transformed)
            # Only the eval rows are kept raw: encode those alone (the encoder is most
            # of this pass's time).
            if is_eval.any():
                for record in example_coder.RecordBatchToExamples(
                        batch.filter(_to_arrow_mask(is_eval))):
                    raw_writer.write(record)
            held_out = is_eval.tolist()
            writers[TRAIN].write(itertools.compress(encoded, [not e for e in held_out]))
            writers[EVAL].write(itertools.compress(encoded, held_out))
    finally:
        for w in writers.values():
            w.close()
        raw_writer.close()
    tracker.check(data_path)
    _check_splits(data_path, spec, tracker.rows, writers[TRAIN].rows, writers[EVAL].rows)
    return TransformResult(train_rows=writers[TRAIN].rows, eval_rows=writers[EVAL].rows,
                           transformed_features=sorted(tft_output.transformed_feature_spec()))


def _split_tracked(tracked, spec_json: str):
    """Beam ParDo body: a tracked batch -> its projected train rows (main output) and
    eval rows (tagged "eval"), as TFT's analyzer and the example encoder take them."""
    import apache_beam as beam

    _, batch, _ = tracked
    spec = load_problem(spec_json)
    is_eval = data_lib.eval_mask(batch, spec)
    projected = _project(batch, spec)
    train = projected.filter(_to_arrow_mask(~is_eval))
    held_out = projected.filter(_to_arrow_mask(is_eval))
    if train.num_rows:
        yield train
    if held_out.num_rows:
        yield beam.pvalue.TaggedOutput(EVAL, held_out)


def _encode_transformed(element, spec_json: str):
    """Beam FlatMap body: TransformDataset's (record batch, passthrough) -> tf.Examples
    encoded as the in-process path encodes them (float32 values, int64 ids), refused as
    there when a float feature is not finite."""
    from tfx_bsl.coders import example_coder

    batch, _ = element
    yield from example_coder.RecordBatchToExamples(
        _as_example_batch(batch, load_problem(spec_json)))


def _as_example_batch(batch, spec: ProblemSpec):
    """TFT's output record batch with the value types the in-process path writes."""
    import pyarrow as pa

    arrays = []
    for name in batch.schema.names:
        column = batch.column(batch.schema.get_field_index(name))
        if pa.types.is_large_list(column.type) or pa.types.is_list(column.type):
            values = column.flatten()
            if pa.types.is_floating(values.type):
                values = values.cast(pa.float32())
                check_finite(name, values.to_numpy(zero_copy_only=False), spec)
            elif pa.types.is_integer(values.type):
                values = values.cast(pa.int64())
            elif pa.types.is_large_binary(values.type) or pa.types.is_large_string(values.type):
                values = values.cast(pa.binary())
            column = pa.ListArray.from_arrays(column.offsets.cast(pa.int32()), values)
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _encode_raw(batch):
    from tfx_bsl.coders import example_coder

    yield from example_coder.RecordBatchToExamples(batch)


def _rows(batch) -> int:
    return batch.num_rows


def transform_with_beam(data_path: str, spec: ProblemSpec, staged: dict,
                        beam_args: list[str]) -> TransformResult:
    """Analyze and transform as one Beam pipeline: the input read by Beam's sources
    across workers, the transform graph, the transformed examples (sharded by the runner)
    and the raw eval rows written by the workers under the work location
    (components/common/beam_io.py), then copied into the staged outputs."""
    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam

    from kfp_ct.components.common import beam_io

    preprocessing_fn = resolve_preprocessing_fn(spec)
    beam_io.ship_by_value(preprocessing_fn)
    config = tensor_adapter_config(spec)
    work = beam_io.work_location(beam_args, "transform")
    tf_work = beam_io.tf_work_location(work)
    graph = storage.join(tf_work, "transform_graph")
    try:
        with tft_beam.Context(temp_dir=storage.join(tf_work, "tft_tmp")):
            options = beam_io.pipeline_options(beam_args)
            with beam_io.worker_errors(), beam.Pipeline(options=options) as p:
                tracked = beam_io.read_tracked_batches(p, data_path, spec)
                split = tracked | "Split" >> beam.ParDo(_split_tracked, spec.to_json()).with_outputs(
                    EVAL, main=TRAIN)
                transform_fn = _analyze_dataset(split[TRAIN], config, preprocessing_fn, spec)
                _ = transform_fn | "WriteGraph" >> tft_beam.WriteTransformFn(graph)
                counts = []
                for name in (TRAIN, EVAL):
                    rows = split[name]
                    transformed, _ = (((rows, config), transform_fn)
                                      | f"Transform{name}" >> tft_beam.TransformDataset(
                                          output_record_batches=True))
                    _ = (transformed
                         | f"Encode{name}" >> beam.FlatMap(_encode_transformed, spec.to_json())
                         | f"Write{name}" >> beam.io.WriteToTFRecord(
                             storage.join(work, "examples", name, "data"),
                             file_name_suffix=".tfrecord"))
                    counts.append(rows | f"Rows{name}" >> beam.Map(_rows)
                                  | f"Sum{name}" >> beam.CombineGlobally(sum)
                                  | f"Key{name}" >> beam.Map(lambda n, k=name: (k, n)))
                _ = (split[EVAL]
                     | "EncodeRaw" >> beam.FlatMap(_encode_raw)
                     | "WriteRaw" >> beam.io.WriteToTFRecord(
                         storage.join(work, "raw", RAW_EVAL_FILE), num_shards=1,
                         shard_name_template=""))
                beam_io.write_json_text(
                    counts | "Counts" >> beam.Flatten()
                    | "CountsDict" >> beam.combiners.ToDict()
                    | "CountsJson" >> beam.Map(json.dumps), work, "rows.json", "WriteCounts")
                beam_io.write_json_text(beam_io.track(tracked, spec), work, "tracker.json",
                                        "WriteTracker")
        tracker = beam_io.tracker_from(work, "tracker.json", spec)
        rows = beam_io.read_json(work, "rows.json")
        storage.download(graph, staged["graph"])
        storage.download(storage.join(work, "examples"), staged["examples"])
        storage.download(storage.join(work, "raw"), staged["raw"])
    finally:
        beam_io.remove_work(work)
        if tf_work != work:
            beam_io.remove_work(tf_work)
    tracker.check(data_path)
    _check_splits(data_path, spec, tracker.rows, rows.get(TRAIN, 0), rows.get(EVAL, 0))
    features = sorted(tft.TFTransformOutput(staged["graph"]).transformed_feature_spec())
    return TransformResult(train_rows=rows[TRAIN], eval_rows=rows[EVAL],
                           transformed_features=features)


def _check_splits(data_path: str, spec: ProblemSpec, total: int, train: int, held_out: int):
    if train == 0 or held_out == 0:
        empty = TRAIN if train == 0 else EVAL
        raise data_lib.InputDataError(
            f"{data_path}: the {empty} split is empty ({total} rows, eval_percent="
            f"{spec.eval_percent}); give more rows or another eval_percent")


def run_transform(data_path: str, problem: str, transform_graph_dir: str, examples_dir: str,
                  raw_eval_dir: str, beam_args: list[str] | None = None) -> TransformResult:
    """Analyzes the train split, transforms both splits and writes the outputs.

    All outputs are written to a staging folder first and moved into the artifact
    folders only when both passes succeeded: a failure leaves no half-written output.
    """
    spec = load_problem(problem)
    finals = {"graph": transform_graph_dir, "examples": examples_dir, "raw": raw_eval_dir}
    parent = os.path.dirname(os.path.abspath(transform_graph_dir))
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".transform-staging-") as tmp:
        staged = {k: os.path.join(tmp, k) for k in finals}
        if beam_io.uses_beam(beam_args):
            result = transform_with_beam(data_path, spec, staged, list(beam_args))
        else:
            analyze(data_path, spec, staged["graph"], None, tmp)
            result = transform_and_write(data_path, spec, staged["graph"], staged["examples"],
                                         staged["raw"])
        with open(os.path.join(staged["examples"], SPLIT_FILE), "w") as fh:
            json.dump(result.summary(), fh, indent=1)
        for key, final in finals.items():
            if os.path.isdir(final):
                shutil.rmtree(final)
            shutil.move(staged[key], final)
    return result
