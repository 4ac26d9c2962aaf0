"""TF Transform's analyze pass on one machine, without a Beam pipeline.

``tft_beam.AnalyzeDataset`` traces the preprocessing_fn, builds TFT's analysis graph (a
DAG of TFT operations: apply a SavedModel to the data, accumulate combiners, merge,
order and write vocabularies, bind the results into the final SavedModel) and turns every
operation into Beam transforms. On one machine the Beam part is most of the pass: about
100 stages on the 16-feature table, each translated to protos, fused, set up and run,
with the data pickled between stages (measured: 40% of the pass on penguins, more on
wider tables).

Here the same analysis graph, built by TFT's own ``analysis_graph_builder``, is run
directly: the data is read once per phase (streamed batch by batch, memory flat in the
row count), and each operation is computed as TFT's Beam implementation computes it on
the in-memory runner:

- the SavedModels are written by TFT's own ``_create_v2_saved_model`` and applied by
  TFT's own ``_RunMetaGraphDoFn``;
- combiners (mean and variance, quantiles, ...) are TFT's own classes, called in the
  same order as Beam's lifted combine runs them on one bundle (create, add every batch,
  compact, merge), so the floating-point results are the same bits;
- vocabularies by frequency are exact integer counts, pruned, ordered and written with
  TFT's rules (top_k, frequency_threshold, ties by token, the empty-vocabulary dummy).

Only the operations and options listed in ``_SUPPORTED`` are run here. Any other (a
weighted or mutual-information vocabulary, a per-key combiner, a user-defined analyzer
PTransform, TFT's cache, a vocabulary stored as TFRecords) makes ``plan`` return
None before anything is written, and the caller runs TFT's Beam pipeline as before.
The transform graph written is the one TFT writes: ``transform_fn/`` (the SavedModel)
and ``transformed_metadata/`` (the schema, the asset map). tests/test_analyze_local.py
compares both paths' outputs on several preprocessing functions.
"""

from __future__ import annotations

import collections
import os
from typing import Callable, Iterable

from kfp_ct.components.transform import beamenv

FORCE_BEAM_ENV = "KFP_CT_ANALYZE_WITH_BEAM"


class _Unsupported(Exception):
    """An operation of the analysis graph this module does not run."""


class _Stream:
    """A per-batch value: what ``root`` (an ApplySavedModel's label, or None for the
    input data) yields for each batch, through ``keys`` (ExtractFromDict steps)."""

    def __init__(self, root, keys: tuple = ()):
        self.root, self.keys = root, keys

    def then(self, keys) -> "_Stream":
        return _Stream(self.root, self.keys + (keys,))

    def value(self, element):
        for keys in self.keys:
            element = _extract(element, keys)
        return element


def _extract(d, keys):
    return tuple(d[k] for k in keys) if isinstance(keys, tuple) else d[keys]


def enabled() -> bool:
    return os.environ.get(FORCE_BEAM_ENV, "").strip().lower() not in ("1", "true", "yes")


def plan(config, preprocessing_fn) -> Callable[[Callable[[], Iterable], str], None] | None:
    """Traces ``preprocessing_fn`` and builds TFT's analysis graph. Returns None when the
    graph holds an operation not run here (nothing written), else ``run(read_batches,
    transform_graph_dir)``: the analyze pass over ``read_batches()`` (Arrow RecordBatches
    of the train split, re-read for each phase), writing the transform graph as
    ``WriteTransformFn`` does. Both must run inside the same ``tft_beam.Context``."""
    import tensorflow as tf
    from tensorflow_transform import annotators, graph_tools, impl_helper, nodes
    from tensorflow_transform.beam import analysis_graph_builder
    from tensorflow_transform.beam import common as beam_common
    from tensorflow_transform.beam import impl as beam_impl
    from tensorflow_transform.beam.context import Context
    from tfx_bsl.tfxio.tensor_adapter import TensorAdapter

    if Context.get_use_tf_compat_v1():
        return None
    specs = TensorAdapter(config).OriginalTypeSpecs()
    if not specs:
        raise ValueError("The input metadata is empty.")
    base_temp_dir = Context.create_base_temp_dir()
    graph, structured_inputs, structured_outputs = impl_helper.trace_preprocessing_function(
        preprocessing_fn, specs, False, base_temp_dir)
    # The same checks as AnalyzeDataset's, with its messages.
    if not isinstance(structured_outputs, dict):
        raise ValueError(
            "A `preprocessing_fn` must return a "
            "Dict[str, Union[tf.Tensor, tf.SparseTensor, tf.RaggedTensor]]. "
            f"Got: {structured_outputs}")
    if not structured_outputs:
        raise ValueError("The preprocessing function returned an empty dict")
    if graph.get_collection(tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES):
        raise ValueError(
            "The preprocessing function contained trainable variables "
            f"{graph.get_collection_ref(tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES)}")
    asset_map = annotators.get_asset_annotations(graph)
    annotators.clear_asset_annotations(graph)
    fingerprint = graph_tools.get_analyzers_fingerprint(graph, structured_inputs)
    extra_args = beam_common.ConstructBeamPipelineVisitor.ExtraArgs(
        base_temp_dir=base_temp_dir, tf_config=None, pipeline=None, flat_pcollection=None,
        pcollection_dict={}, graph=graph, input_signature=structured_inputs,
        input_specs=specs, input_tensor_adapter_config=config, use_tf_compat_v1=False,
        cache_pcoll_dict=None, preprocessing_fn=preprocessing_fn,
        analyzers_fingerprint=fingerprint, save_options=Context.get_save_options())
    transform_fn_future, _, side_effects = analysis_graph_builder.build(
        graph, structured_inputs, structured_outputs, [], cache_dict=None)
    runner = _Runner(extra_args)
    try:
        runner.plan([transform_fn_future, *side_effects])
    except _Unsupported as why:
        print(f"[kfp-ct] transform: analyzing with Beam ({why})", flush=True)
        return None

    def run(read_batches: Callable[[], Iterable], transform_graph_dir: str) -> None:
        runner.read_batches = read_batches
        traverser = nodes.Traverser(runner)
        saved_model_dir, = traverser.visit_value_node(transform_fn_future)
        for node in side_effects:
            traverser.visit_value_node(node)
        _write_transform_fn(saved_model_dir, asset_map, transform_graph_dir, beam_impl)

    return run


def _write_transform_fn(saved_model_dir, asset_map: dict, path: str, beam_impl) -> None:
    """What ``WriteTransformFn`` writes: the metadata the final SavedModel carries (and
    the asset map) under transformed_metadata/, the SavedModel under transform_fn/."""
    import json

    import tensorflow as tf
    import tensorflow_transform as tft
    from tensorflow_transform.beam.tft_beam_io import transform_fn_io
    from tensorflow_transform.tf_metadata import metadata_io

    metadata = beam_impl._infer_metadata_from_saved_model(saved_model_dir, False)
    metadata_path = os.path.join(path, tft.TFTransformOutput.TRANSFORMED_METADATA_DIR)
    metadata_io.write_metadata(metadata, metadata_path)
    if asset_map:
        with tf.io.gfile.GFile(
                os.path.join(metadata_path, tft.TFTransformOutput.ASSET_MAP), "w") as fh:
            fh.write(json.dumps(asset_map))
    transform_fn_io._copy_tree(saved_model_dir,
                               os.path.join(path, tft.TFTransformOutput.TRANSFORM_FN_DIR))


class _Runner:
    """Runs TFT's analysis graph (a nodes.Visitor). Materialized values are lists (a
    PCollection's elements); per-batch values are _Stream objects. Each ApplySavedModel
    reads the data once: the first accumulator of its outputs to be visited runs that
    pass for every accumulator of them (``_pass``)."""

    def __init__(self, extra_args):
        self.extra_args, self.read_batches = extra_args, None
        self.appliers = {}  # ApplySavedModel label -> batch -> its outputs (numpy)
        self.folds = {}  # ApplySavedModel label -> [(accumulator op, its input _Stream)]
        self.results = {}  # accumulator label -> its output (a list)

    # ----------------------------------------------------------------- planning

    def plan(self, roots) -> None:
        """Raises _Unsupported for any operation (or option) not run here, and finds the
        accumulators fed by each ApplySavedModel."""
        streams = {}  # id(op) -> _Stream of its outputs (per-batch operations only)
        for op in _topological(roots):
            definition = op.operation_def
            name = type(definition).__name__
            check = _SUPPORTED.get(name)
            if check is None:
                raise _Unsupported(f"operation {name}")
            check(definition)
            inputs = [streams.get(id(v.parent_operation)) for v in op.inputs]
            if name == "ExtractInputForSavedModel":
                streams[id(op)] = _Stream(None)
            elif name == "ApplySavedModel":
                if inputs[0] is not None or inputs[1] is None or inputs[1].root is not None:
                    raise _Unsupported("ApplySavedModel on derived values")
                streams[id(op)] = _Stream(definition.label)
                self.folds[definition.label] = []
            elif name == "ExtractFromDict" and inputs[0] is not None:
                streams[id(op)] = inputs[0].then(definition.keys)
            elif name in _FOLDS:
                if inputs[0] is None or inputs[0].root is None:
                    raise _Unsupported(f"{name} on materialized values")
                self.folds[inputs[0].root].append((definition, inputs[0]))
            elif any(s is not None for s in inputs):
                raise _Unsupported(f"{name} reading per-batch values")

    # ------------------------------------------------------------------ running

    def validate_value(self, value) -> None:
        assert isinstance(value, (list, _Stream)), value

    def visit(self, operation_def, input_values):
        name = type(operation_def).__name__
        return getattr(self, "_" + name)(operation_def, *input_values)

    def _ExtractInputForSavedModel(self, op):
        return (_Stream(None),)

    def _ApplySavedModel(self, op, saved_model_dir, stream):
        import numpy as np
        import tensorflow as tf
        from apache_beam.utils import shared
        from tensorflow_transform.beam import impl as beam_impl
        from tensorflow_transform.beam.context import Context

        path, = saved_model_dir
        dofn = beam_impl._RunMetaGraphDoFn(
            None, use_tf_compat_v1=False,
            input_tensor_adapter_config=self.extra_args.input_tensor_adapter_config,
            shared_graph_state_handle=shared.Shared(),
            passthrough_keys=Context.get_passthrough_keys())
        dofn.setup()

        def apply(batch):
            outputs, = dofn.process(batch, path)
            return {k: np.asarray(v) if isinstance(v, tf.Tensor) else v
                    for k, v in outputs.items()}

        self.appliers[op.label] = apply
        return (_Stream(op.label),)

    def _pass(self, root) -> None:
        """Reads the data once, applies ``root``'s SavedModel to each batch and feeds
        every accumulator of its outputs."""
        apply = self.appliers[root]
        folds = [(op, stream, _FOLDS[type(op).__name__](op))
                 for op, stream in self.folds[root]]
        for batch in self.read_batches():
            outputs = apply(batch)
            for _, stream, fold in folds:
                fold.add(stream.value(outputs))
        for op, _, fold in folds:
            self.results[op.label] = fold.result()

    def _accumulate(self, op, stream):
        if op.label not in self.results:
            self._pass(stream.root)
        return (self.results.pop(op.label),)

    _PackedCombineAccumulate = _accumulate
    _CacheableCombineAccumulate = _accumulate
    _VocabularyAccumulate = _accumulate

    def _ExtractFromDict(self, op, values):
        if isinstance(values, _Stream):
            return (values.then(op.keys),)
        return ([_extract(d, op.keys) for d in values],)

    def _AddKey(self, op, values):
        return ([(op.key, v) for v in values],)

    def _Flatten(self, op, *values):
        return ([v for pcoll in values for v in pcoll],)

    def _PackedCombineMerge(self, op, values):
        from tensorflow_transform.beam import analyzer_impls

        return (_Combine.over(analyzer_impls._PackedCombinerWrapper(
            op.combiners, is_combining_accumulators=True), values),)

    def _CacheableCombineMerge(self, op, values):
        from tensorflow_transform.beam import analyzer_impls

        return (_Combine.over(analyzer_impls._CombinerWrapper(
            op.combiner, is_combining_accumulators=True), values),)

    def _ExtractPackedCombineMergeOutputs(self, op, values):
        outs = [[] for _ in range(op.num_outputs)]
        for outputs in values:
            if len(outputs) != op.num_outputs:
                raise ValueError(f"Analyzer has {op.num_outputs} outputs but its "
                                 f"implementation produced {len(outputs)} values")
            for i, output in enumerate(outputs):
                outs[i].append(output)
        return tuple(outs)

    _ExtractCombineMergeOutputs = _ExtractPackedCombineMergeOutputs

    def _VocabularyMerge(self, op, token_counts):
        totals = collections.Counter()
        for token, count in token_counts:
            totals[token] += count
        return ([(count, token) for token, count in totals.items()],)

    def _VocabularyCount(self, op, counts):
        import numpy as np

        return ([np.int64(np.maximum(len(counts), 1))],)

    def _VocabularyPrune(self, op, counts):
        import heapq

        import tensorflow as tf
        from tensorflow_transform.beam import analyzer_impls

        if op.top_k is not None and op.top_k < 0:
            raise ValueError(f"top_k for VocabularyImpl should be >= 0 or None, got {op.top_k}.")
        if op.frequency_threshold is not None and op.frequency_threshold < 0:
            raise ValueError("frequency_threshold for VocabularyImpl should be >= 0 or None, "
                             f"got {op.frequency_threshold}.")
        kept = counts
        if op.frequency_threshold > 0 or op.informativeness_threshold > float("-inf"):
            # A frequency count's informativeness is +inf (TFT's filter_by_thresholds).
            kept = [c for c in kept if c[0] >= op.frequency_threshold
                    and float("inf") >= op.informativeness_threshold]
        if op.input_dtype != tf.string.name:
            kept = [(c, tf.compat.as_bytes(tf.compat.as_str_any(t))) for c, t in kept]
        if op.top_k is not None:
            # Beam's Top.Of: the largest (count, token) pairs, largest first.
            kept = analyzer_impls.maybe_add_empty_vocabulary_dummy(
                heapq.nlargest(op.top_k, kept), op.input_dtype)
        return (list(kept),)

    def _VocabularyOrderAndWrite(self, op, counts):
        import hashlib

        import numpy as np
        from tensorflow_transform.beam import analyzer_impls

        if op.input_is_sorted:
            ordered = counts
        else:
            ordered = list(counts)
            if op.fingerprint_shuffle:
                ordered.sort(key=lambda kv: hashlib.sha1(kv[1]).digest())
            else:
                ordered.sort(reverse=True)  # largest count first, ties by token
            ordered = analyzer_impls.maybe_add_empty_vocabulary_dummy(ordered, op.input_dtype)
        if op.store_frequency:
            lines = [analyzer_impls._count_and_token_to_bytes(c, t) for c, t in ordered]
        else:
            lines = [t for _, t in ordered]
        path = os.path.join(self.extra_args.base_temp_dir, op.vocab_filename)
        _write_lines(path, lines)
        return ([np.array(path)],)

    def _CreateTensorBinding(self, op, values):
        from tensorflow_transform.beam import impl as beam_impl

        return ([beam_impl._TensorBinding(v, op.tensor_name, op.dtype_enum,
                                          op.is_asset_filepath) for v in values],)

    def _CreateSavedModel(self, op, *bindings):
        from tensorflow_transform.beam import impl as beam_impl

        impl = beam_impl._CreateSavedModelImplV2(op, self.extra_args)
        replacements = None
        if bindings:
            singletons = [_singleton(b, op.label) for b in bindings]
            replacements = beam_impl._get_tensor_replacement_map(None, *singletons)
        path = beam_impl._create_v2_saved_model(
            replacements, impl._base_temp_dir, impl._preprocessing_fn, impl._input_signature,
            impl._analyzers_fingerprint, impl._maybe_get_output_tensor_names_dict(),
            impl._save_options)
        return ([path],)


class _Combine:
    """A Beam CombineGlobally on one bundle, call for call as the in-memory runner makes
    them (lifted: precombine, group, merge, extract; with a hot-key fanout, a second
    lifted combine of the precombined accumulator), so a floating-point combiner gives
    the same bits. No input gives the combiner's default (Beam's ``apply([])``)."""

    def __init__(self, combine_fn, fanout: bool):
        self.fn, self.fanout = combine_fn, fanout
        self.accumulator, self.seen = combine_fn.create_accumulator(), False

    @classmethod
    def over(cls, combine_fn, elements: list) -> list:
        """CombineGlobally (no fanout) of a materialized PCollection."""
        fold = cls(combine_fn, fanout=False)
        for element in elements:
            fold.add(element)
        return fold.result()

    def add(self, element) -> None:
        self.accumulator, self.seen = self.fn.add_input(self.accumulator, element), True

    def result(self) -> list:
        fn = self.fn
        if not self.seen:
            return [fn.extract_output(fn.create_accumulator())]
        accumulator = fn.merge_accumulators([fn.compact(self.accumulator)])
        if self.fanout:  # PostCombineFn: a fresh accumulator merged with the precombined one
            post = fn.merge_accumulators([fn.create_accumulator(), accumulator])
            accumulator = fn.merge_accumulators([fn.compact(post)])
        return [fn.extract_output(accumulator)]


class _Counts:
    """VocabularyAccumulate by frequency: each token's count (exact integers)."""

    def __init__(self, op):
        self.counts = collections.Counter()

    def add(self, batch_values) -> None:
        self.counts.update(beamenv.token_counts(batch_values))

    def result(self) -> list:
        return list(self.counts.items())


def _packed_accumulate(op) -> _Combine:
    import math

    from tensorflow_transform.beam import analyzer_impls

    fanout = max(analyzer_impls._DEFAULT_COMBINE_GLOBALLY_FANOUT,
                 int(math.ceil(math.sqrt(len(op.combiners)))))
    return _Combine(analyzer_impls._PackedCombinerWrapper(
        op.combiners, is_combining_accumulators=False), fanout=fanout > 1)


def _accumulate(op) -> _Combine:
    from tensorflow_transform.beam import analyzer_impls

    return _Combine(analyzer_impls._CombinerWrapper(op.combiner, is_combining_accumulators=False),
                    fanout=analyzer_impls._DEFAULT_COMBINE_GLOBALLY_FANOUT > 1)


_FOLDS = {"PackedCombineAccumulate": _packed_accumulate, "CacheableCombineAccumulate": _accumulate,
          "VocabularyAccumulate": _Counts}


def _topological(roots) -> list:
    """The operations that produce ``roots`` (value nodes), each after the ones
    producing its inputs."""
    done, out = set(), []
    stack = [(value.parent_operation, False) for value in roots]
    while stack:
        op, expanded = stack.pop()
        if id(op) in done:
            continue
        if expanded:
            done.add(id(op))
            out.append(op)
            continue
        stack.append((op, True))
        stack.extend((value.parent_operation, False) for value in op.inputs
                     if id(value.parent_operation) not in done)
    return out


def _singleton(values: list, label: str):
    if len(values) != 1:
        raise ValueError(f"{label}: expected one value, got {len(values)}")
    return values[0]


def _write_lines(path: str, lines: list) -> None:
    """What Beam's WriteToText(path, shard_name_template='') writes: each element's
    bytes and a newline, written whole or not at all."""
    import tensorflow as tf

    data = b"".join((line if isinstance(line, bytes) else str(line).encode()) + b"\n"
                    for line in lines)
    tmp = f"{path}.kfp-ct-tmp"
    with tf.io.gfile.GFile(tmp, "wb") as fh:
        fh.write(data)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def _frequency_only(op) -> None:
    from tensorflow_transform import analyzers

    if op.vocab_ordering_type != analyzers._VocabOrderingType.FREQUENCY:
        raise _Unsupported(f"{type(op).__name__} by {op.vocab_ordering_type}")


def _prune_check(op) -> None:
    if op.key_fn is not None:
        raise _Unsupported("a vocabulary with a key_fn (coverage)")


def _write_check(op) -> None:
    if op.file_format != "text":
        raise _Unsupported(f"a vocabulary stored as {op.file_format}")


def _flattened_dataset(op) -> None:
    if not op.dataset_key.is_flattened_dataset_key():
        raise _Unsupported("a dataset key other than the flattened dataset")


def _any(op) -> None:
    return None


_SUPPORTED = {
    "ExtractInputForSavedModel": _flattened_dataset,
    "ApplySavedModel": _any,
    "ExtractFromDict": _any,
    "PackedCombineAccumulate": _any,
    "PackedCombineMerge": _any,
    "CacheableCombineAccumulate": _any,
    "CacheableCombineMerge": _any,
    "AddKey": _any,
    "Flatten": _any,
    "ExtractPackedCombineMergeOutputs": _any,
    "ExtractCombineMergeOutputs": _any,
    "VocabularyAccumulate": _frequency_only,
    "VocabularyMerge": _frequency_only,
    "VocabularyCount": _any,
    "VocabularyPrune": _prune_check,
    "VocabularyOrderAndWrite": _write_check,
    "CreateTensorBinding": _any,
    "CreateSavedModel": _any,
}
