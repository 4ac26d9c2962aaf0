"""Pieces the transform tests share (tests/ is on sys.path).

``USER_MODULE_HEAD``: how the tests' user modules start (imports and a helper densifying
a [batch, <=1] input). ``extended_module(problem, name, expression)``: a user module
whose preprocessing_fn is the spec's default one plus the output ``name``, computed by
``expression`` from the default ``outputs``. ``contents``: what a transform run wrote, in a form two runs can
be compared by: every file's content; a TFRecord file's as its parsed tf.Examples, in order (a
proto map's serialized order differs from process to process). The SavedModel's own
files are left out: what the graph computes is in the examples it wrote; its vocabulary
files (assets) and the transformed schema are compared byte for byte."""

from __future__ import annotations

import hashlib
import os

USER_MODULE_HEAD = '''
import tensorflow as tf
import tensorflow_transform as tft


def _dense(x, default):
    if isinstance(x, tf.SparseTensor):
        shaped = tf.SparseTensor(x.indices, x.values, tf.stack([x.dense_shape[0], 1]))
        return tf.sparse.to_dense(shaped, default_value=default)[:, 0]
    return tf.reshape(x, [-1])
'''


_EXTENDED_MODULE = """
import tensorflow as tf
from kfp_ct.components.common.problem import load_problem
from kfp_ct.components.transform.preprocessing import build_preprocessing_fn


def preprocessing_fn(inputs):
    outputs = build_preprocessing_fn(load_problem({problem!r}))(inputs)
    outputs[{name!r}] = {expression}
    return outputs
"""


def extended_module(problem: str, name: str, expression: str) -> str:
    return _EXTENDED_MODULE.format(problem=problem, name=name, expression=expression)


def contents(folder: str) -> dict:
    import tensorflow as tf

    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, folder)
            if "saved_model.pb" in rel or "variables" in rel or "fingerprint" in rel:
                continue
            if name.endswith(".tfrecord"):
                out[rel] = [tf.train.Example.FromString(r)
                            for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]
            else:
                with open(path, "rb") as fh:
                    out[rel] = hashlib.sha256(fh.read()).hexdigest()
    return out


def assert_same(one: dict, other: dict) -> None:
    assert sorted(one) == sorted(other)
    for key in one:
        assert one[key] == other[key], key
