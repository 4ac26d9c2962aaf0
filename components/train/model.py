"""The default Keras model built from the spec, and the serving export.

User-module contract (optional): `build_model(spec, tf_transform_output) -> tf_keras.Model`,
compiled, taking the dict of transformed features (each shaped [batch, 1] for scalar
features) and returning class probabilities ([batch, n_classes]) for classification or
one value ([batch, 1]) for regression. It is called inside the distribution strategy's
scope, so its variables are placed correctly on GPUs / TPUs.
"""

from __future__ import annotations

from kfp_ct.components.common import tfenv  # noqa: F401
from kfp_ct.components.common.problem import ProblemSpec
from kfp_ct.components.transform.preprocessing import LABEL_VOCABULARY, raw_feature_spec

DEFAULT_HIDDEN = (32, 16)
DEFAULT_LR = 0.01
SERVING_INPUT = "examples"


def categorical_sizes(tft_output) -> dict[str, int]:
    """Transformed int features with an int domain (vocabularies, buckets): their size."""
    sizes = {}
    for feature in tft_output.transformed_metadata.schema.feature:
        if feature.HasField("int_domain") and feature.int_domain.max > 0:
            sizes[feature.name] = int(feature.int_domain.max) + 1
    return sizes


def feature_names(spec: ProblemSpec, tft_output) -> list[str]:
    return sorted(n for n in tft_output.transformed_feature_spec() if n != spec.label)


def num_classes(tft_output) -> int:
    return tft_output.vocabulary_size_by_name(LABEL_VOCABULARY)


def build_default_model(spec: ProblemSpec, tft_output):
    import tf_keras as keras

    sizes = categorical_sizes(tft_output)
    spec_by_name = tft_output.transformed_feature_spec()
    inputs, parts = {}, []
    for name in feature_names(spec, tft_output):
        if name in sizes:
            inputs[name] = keras.Input(shape=(1,), name=name, dtype=spec_by_name[name].dtype)
            parts.append(keras.layers.CategoryEncoding(
                num_tokens=sizes[name], output_mode="one_hot", name=f"{name}_onehot")(inputs[name]))
        else:  # as_model_inputs casts these to float32
            inputs[name] = keras.Input(shape=(1,), name=name, dtype="float32")
            parts.append(inputs[name])
    x = keras.layers.Concatenate(name="features")(parts) if len(parts) > 1 else parts[0]
    for i, units in enumerate(spec.model.get("hidden_units", DEFAULT_HIDDEN)):
        x = keras.layers.Dense(int(units), activation="relu", name=f"hidden_{i}")(x)
        if spec.model.get("dropout"):
            x = keras.layers.Dropout(float(spec.model["dropout"]))(x)
    lr = float(spec.model.get("learning_rate", DEFAULT_LR))
    if spec.task == "classification":
        out = keras.layers.Dense(num_classes(tft_output), activation="softmax",
                                 dtype="float32", name="probabilities")(x)
        model = keras.Model(inputs, out)
        model.compile(optimizer=keras.optimizers.Adam(lr),
                      loss="sparse_categorical_crossentropy",
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    else:
        out = keras.layers.Dense(1, dtype="float32", name="prediction")(x)
        model = keras.Model(inputs, out)
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse",
                      metrics=[keras.metrics.RootMeanSquaredError(name="rmse")])
    return model


def as_model_inputs(features: dict, categorical: frozenset | set = frozenset()) -> dict:
    """Rank-1 tensors ([batch]) become [batch, 1]; non-categorical ints become float32."""
    import tensorflow as tf

    out = {}
    for name, value in features.items():
        if value.shape.rank == 1:
            value = tf.expand_dims(value, -1)
        if value.dtype.is_integer and name not in categorical:
            value = tf.cast(value, tf.float32)
        out[name] = value
    return out


def export_serving_model(model, spec: ProblemSpec, tft_output, export_dir: str) -> None:
    """Saves a SavedModel whose `serving_default` takes serialized raw tf.Examples.

    The TF Transform graph is embedded (no separate preprocessing at serving time).
    Classification returns `scores` [batch, n_classes] and `classes` [batch, n_classes]
    (the label vocabulary, as TF Serving's classify API and TFMA expect); regression
    returns `outputs` [batch, 1].
    """
    import tensorflow as tf

    model.tft_layer = tft_output.transform_features_layer()
    parse_spec = raw_feature_spec(spec, with_label=False)
    names = feature_names(spec, tft_output)
    categorical = set(categorical_sizes(tft_output))
    classes = None
    if spec.task == "classification":
        classes = tf.constant(tft_output.vocabulary_by_name(LABEL_VOCABULARY))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=SERVING_INPUT)])
    def serve(examples):
        raw = tf.io.parse_example(examples, parse_spec)
        transformed = model.tft_layer(raw)
        outputs = model(as_model_inputs({n: transformed[n] for n in names}, categorical))
        outputs = tf.cast(outputs, tf.float32)
        if classes is None:
            return {"outputs": outputs}
        batch = tf.shape(outputs)[0]
        return {"scores": outputs, "classes": tf.tile(tf.expand_dims(classes, 0), [batch, 1])}

    model.save(export_dir, save_format="tf", signatures={"serving_default": serve})
