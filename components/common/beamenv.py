"""A faster Beam set-up for the local in-memory runs (transform's analyze pass).

Beam's Python runner looks up the signature of every DoFn method again for every
bundle (``userstate.get_dofn_specs`` -> ``get_function_args_defaults`` ->
``inspect.signature``): on penguins TF Transform's analyze pass runs 54 bundles and calls
``inspect.signature`` about 85,000 times, a few seconds of a 10 s task. A signature
depends only on the function, so :func:`install` memoizes Beam's ``get_signature`` for
plain functions and bound methods (keyed by the underlying function, so no DoFn is kept
alive); anything else (partials, callable objects, builtins) goes through uncached.

What a pipeline computes does not change: the memo returns the same
``inspect.Signature`` (an immutable value) that the lookup would. Only this process is
affected; remote workers run Beam as it is.
"""

from __future__ import annotations

import types

_MEMO_SIZE = 8192
_installed = False


def install() -> None:
    """Memoizes Beam's signature lookup in this process (idempotent)."""
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
    _installed = True
