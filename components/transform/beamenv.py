"""A faster Beam set-up for the local in-memory runs (transform's analyze pass).

TF Transform's analyze pass is a Beam pipeline of about 100 small stages on the
16-feature table (54 on penguins), and on one machine most of its time is Beam's own
bookkeeping, repeated for every transform applied and every bundle run. :func:`install`
memoizes the pure parts of it, measured with a sampling profiler on the 15k-row table:

- **Signatures** (``decorators.get_signature``): Beam looks up the signature of every DoFn
  method again for every bundle, about 170,000 ``inspect.signature`` calls. A signature
  depends only on the function: memoized for plain functions and bound methods (keyed by
  the underlying function, so no DoFn is kept alive); anything else (partials, callable
  objects, builtins) goes through uncached.
- **State and timer specs** (``userstate.get_dofn_specs``, 7% of the pass): a walk over
  ``dir(dofn)`` for every ParDo at construction, translation and bundle set-up. The specs
  come from the class's methods, so they are memoized by DoFn class, for instances that
  hold no bound methods of their own (those are looked up as before). Each caller gets
  its own copy of the sets.
- **Option views** (``PipelineOptions.view_as``, 8%): every ``apply`` builds an argparse
  parser and parses the flags again to look at a few options. A view only reads and
  writes the options' shared dictionary, so one view per options object and class is
  kept and handed out again: what it reads and writes is the same dictionary.
- **Cache weights** (``statecache.get_deep_size``, 3%): the worker's side-input cache
  weighs every value it loads with ``objsize``, which first lists the globals of every
  loaded module (thousands, with TensorFlow in the process) to leave them out. The weight
  only decides when the cache evicts; it is computed here without that listing.
- **Vocabulary counts** (TF Transform's ``VocabularyAccumulate`` by frequency, a quarter
  of the pass on 1M rows of the 16-feature table): TFT flattens every batch into one
  Beam element per token and counts them with ``Count.PerElement``, so each token of each
  vocabulary goes through Beam's per-element machinery (5.6 million on that table). Here
  each batch is counted at once (``collections.Counter``) and the per-batch counts are
  summed per token: the same (token, count) pairs, as TFT's merge step sums them anyway.
  Weighted and mutual-information vocabularies go through TFT's own code.

What a pipeline computes does not change (tests/test_beamenv.py checks each memo against
Beam's own answer, and the transform outputs with and without them). Only this process
is affected; remote workers run Beam as it is.
"""

from __future__ import annotations

import types
import typing
import weakref

_MEMO_SIZE = 8192
_installed = False


def install() -> None:
    """Installs the memos above in this process (idempotent)."""
    global _installed
    if _installed:
        return
    from apache_beam.transforms import core, ptransform, util
    from apache_beam.typehints import decorators

    original = decorators.get_signature
    memo: dict = {}

    def get_signature(func):
        if type(func) is types.FunctionType:
            key = (func, False)
        elif type(func) is types.MethodType and type(func.__func__) is types.FunctionType:
            key = (func.__func__, True)  # a bound method's signature does not depend on self
        else:
            return original(func)
        try:
            return memo[key]
        except KeyError:
            signature = original(func)
            if len(memo) < _MEMO_SIZE:
                memo[key] = signature
            return signature

    get_signature.__wrapped__ = original
    for module in (decorators, core, ptransform, util):
        if getattr(module, "get_signature", None) is original:
            module.get_signature = get_signature
    _memoize_dofn_specs()
    _memoize_views()
    _light_cache_weights()
    _count_vocabulary_per_batch()
    _installed = True


def _memoize_dofn_specs() -> None:
    from apache_beam.transforms import userstate

    original = userstate.get_dofn_specs
    memo: dict = {}

    def get_dofn_specs(dofn):
        own = getattr(dofn, "__dict__", None)
        if own is None or any(isinstance(v, types.MethodType) for v in own.values()):
            return original(dofn)  # instance-level methods: dir() differs per instance
        key = type(dofn)
        try:
            states, timers = memo[key]
        except KeyError:
            states, timers = original(dofn)
            if len(memo) < _MEMO_SIZE:
                memo[key] = (frozenset(states), frozenset(timers))
            return states, timers
        return set(states), set(timers)

    get_dofn_specs.__wrapped__ = original
    userstate.get_dofn_specs = get_dofn_specs  # its callers look it up on the module


def _memoize_views() -> None:
    from apache_beam.options.pipeline_options import PipelineOptions

    original = PipelineOptions.view_as
    views: dict = {}  # id(options) -> (weak reference to it, {class: view})

    def view_as(self, cls):
        entry = views.get(id(self))
        if entry is None or entry[0]() is not self:
            try:
                ref = weakref.ref(self, lambda _, key=id(self): views.pop(key, None))
            except TypeError:  # not weak-referenceable
                return original(self, cls)
            entry = views[id(self)] = (ref, {})
        view = entry[1].get(cls)
        if view is None or view._all_options is not self._all_options:
            view = entry[1][cls] = original(self, cls)
        return view

    view_as.__wrapped__ = original
    PipelineOptions.view_as = view_as


def _light_cache_weights() -> None:
    import objsize
    from apache_beam.runners.worker import statecache

    original = statecache.get_deep_size

    def get_deep_size(*objs):
        return objsize.get_deep_size(
            *objs, get_size_func=statecache._size_func,
            get_referents_func=statecache._get_referents_func,
            filter_func=statecache._filter_func, exclude_modules_globals=False)

    get_deep_size.__wrapped__ = original
    statecache.get_deep_size = get_deep_size


def token_counts(batch_values):
    """One vocabulary analyzer batch (a 1-tuple holding the batch's token array) -> a
    Counter of its tokens; also the direct analyze pass's count
    (components/transform/analyze_local.py)."""
    import collections

    batch_value, = batch_values
    return collections.Counter(batch_value.tolist())


def _count_batch(batch_values):
    """Beam FlatMap body: one batch -> its (token, count) pairs."""
    return token_counts(batch_values).items()


def _count_vocabulary_per_batch() -> None:
    import apache_beam as beam
    from tensorflow_transform import analyzer_nodes, analyzers
    from tensorflow_transform.beam import analyzer_impls
    from tensorflow_transform.beam import common as tft_common

    registered = tft_common._PTRANSFORM_BY_OPERATION_DEF_SUBCLASS[
        analyzer_nodes.VocabularyAccumulate]
    tag = registered._GENERAL_ENVIRONMENT_TAG
    original = registered._ptransform_by_tag[tag]
    if original is not analyzer_impls._VocabularyAccumulateImpl:
        return  # already replaced, or not the implementation this was written for
    frequency = analyzers._VocabOrderingType.FREQUENCY

    class VocabularyAccumulatePerBatch(original):
        def expand(self, inputs):
            if self._vocab_ordering_type != frequency:
                return super().expand(inputs)
            pcoll, = inputs
            return (pcoll
                    | "CountTokensPerBatch" >> beam.FlatMap(_count_batch)
                    | "CountPerToken" >> beam.CombinePerKey(sum)
                    .with_input_types(typing.Any).with_output_types(typing.Any))

    registered._ptransform_by_tag[tag] = VocabularyAccumulatePerBatch
