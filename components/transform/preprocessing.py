"""The default `preprocessing_fn`, built from a declarative ProblemSpec.

Inputs arrive as SparseTensors of shape [batch, 1] (a missing value is an absent entry),
exactly as `tf.io.parse_example` with `VarLenFeature`s gives them at serving time, so the
same graph serves raw `tf.Example`s. Outputs are dense, one value per row:

- numeric: z-score (mean/variance over present values; a missing value becomes 0, the
  mean), after an optional log1p / clip; or bucket ids with `{"buckets": n}`. A value
  that is not finite (inf, -inf, NaN) is missing (`finite_inputs`): the same rule as the
  reader's (components/common/data.py), here for what serving parses from tf.Examples.
- categorical: vocabulary ids (`top_k`, `oov_buckets` options; missing is its own value "").
- label: vocabulary ids for classification (vocabulary file `LABEL_VOCABULARY`), the raw
  value for regression.
"""

from __future__ import annotations

from kfp_ct.components.common.problem import ProblemSpec

LABEL_VOCABULARY = "label_vocabulary"


def vocabulary_name(feature: str) -> str:
    return f"vocabulary_{feature}"


def raw_feature_spec(spec: ProblemSpec, with_label: bool = True) -> dict:
    """The raw feature spec: what serving parses from a tf.Example (label optional)."""
    import tensorflow as tf

    out = {c: tf.io.VarLenFeature(tf.float32) for c in spec.numeric}
    out.update({c: tf.io.VarLenFeature(tf.string) for c in spec.categorical})
    if with_label:
        dtype = tf.float32 if spec.task == "regression" else tf.string
        out[spec.label] = tf.io.VarLenFeature(dtype)
    return out


def _dense(x, default):
    """[batch, <=1] SparseTensor -> [batch] dense tensor, `default` where absent."""
    import tensorflow as tf

    if not isinstance(x, tf.SparseTensor):
        return tf.reshape(x, [-1])
    shaped = tf.SparseTensor(x.indices, x.values, tf.stack([x.dense_shape[0], 1]))
    return tf.sparse.to_dense(shaped, default_value=default)[:, 0]


def numeric_columns(spec: ProblemSpec) -> tuple[str, ...]:
    return spec.numeric + ((spec.label,) if spec.task == "regression" else ())


def finite_inputs(inputs: dict, spec: ProblemSpec) -> dict:
    """The raw inputs with every non-finite numeric value (inf, -inf, NaN) made absent,
    i.e. missing: training data is read that way already, and a raw tf.Example at serving
    time may carry such a value. Runs first in every preprocessing_fn, the user's too."""
    import tensorflow as tf

    out = dict(inputs)
    for name in numeric_columns(spec):
        x = out.get(name)
        if isinstance(x, tf.SparseTensor) and x.values.dtype.is_floating:
            out[name] = tf.sparse.retain(x, tf.math.is_finite(x.values))
    return out


def with_finite_inputs(preprocessing_fn, spec: ProblemSpec):
    """``preprocessing_fn`` that sees non-finite numeric values as missing."""

    def wrapped(inputs):
        return preprocessing_fn(finite_inputs(inputs, spec))

    return wrapped


def build_preprocessing_fn(spec: ProblemSpec):
    """Returns preprocessing_fn(inputs) -> outputs for the spec's features and label."""

    def preprocessing_fn(inputs):
        import tensorflow as tf
        import tensorflow_transform as tft

        inputs = finite_inputs(inputs, spec)
        outputs = {}
        for name in spec.numeric:
            opts = spec.options.get(name, {})
            x = inputs[name]
            values = x.values
            if opts.get("log"):
                values = tf.math.log1p(tf.maximum(values, 0.0))
            if "clip_min" in opts or "clip_max" in opts:
                values = tf.clip_by_value(values, float(opts.get("clip_min", -3.4e38)),
                                          float(opts.get("clip_max", 3.4e38)))
            x = tf.SparseTensor(x.indices, values, x.dense_shape)
            if "buckets" in opts:
                dense = _dense(x, float("nan"))
                ids = tft.bucketize(tf.where(tf.math.is_nan(dense), tf.zeros_like(dense), dense),
                                    int(opts["buckets"]))
                # Missing values get their own id, one past the last bucket.
                outputs[name] = tf.where(tf.math.is_nan(dense),
                                         tf.fill(tf.shape(ids), tf.cast(int(opts["buckets"]), ids.dtype)), ids)
            else:
                outputs[name] = _dense(tft.scale_to_z_score(x), 0.0)
        for name in spec.categorical:
            opts = spec.options.get(name, {})
            outputs[name] = tft.compute_and_apply_vocabulary(
                _dense(inputs[name], ""), top_k=opts.get("top_k"),
                num_oov_buckets=int(opts.get("oov_buckets", 1)), vocab_filename=vocabulary_name(name))
        if spec.label in inputs:
            label = inputs[spec.label]
            if spec.task == "classification":
                outputs[spec.label] = tft.compute_and_apply_vocabulary(
                    _dense(label, ""), vocab_filename=LABEL_VOCABULARY)
            else:
                outputs[spec.label] = _dense(label, float("nan"))
        return outputs

    return preprocessing_fn
