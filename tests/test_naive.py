"""The no-skill predictor that the gate's default floor compares with."""

import math

import pytest

from kfp_ct.components.evaluate.naive import label_values, naive_metrics


def test_classification_naive_accuracy_is_the_most_frequent_class_share():
    result = naive_metrics(["a"] * 6 + ["b"] * 3 + ["c"], "classification")
    assert result["metrics"] == {"accuracy": pytest.approx(0.6)}
    assert "'a'" in result["predictor"] and "10 eval rows" in result["predictor"]


def test_regression_naive_is_the_mean_for_squared_errors_and_the_median_for_mae():
    labels = [1.0, 2.0, 3.0, 10.0]
    result = naive_metrics(labels, "regression")["metrics"]
    mean = 4.0
    mse = sum((y - mean) ** 2 for y in labels) / 4
    assert result["mse"] == pytest.approx(mse)
    assert result["rmse"] == pytest.approx(math.sqrt(mse))
    assert result["mae"] == pytest.approx((1.5 + 0.5 + 0.5 + 7.5) / 4)  # median 2.5


def test_no_labels_measure_nothing():
    assert naive_metrics([], "regression")["metrics"] == {}


def test_labels_are_read_from_raw_eval_examples(tmp_path):
    import tensorflow as tf

    path = str(tmp_path / "eval_raw.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for species, mass in [(b"Adelie", 3000.0), (b"Gentoo", 5000.0), (None, 4000.0)]:
            feature = {"body_mass_g": tf.train.Feature(float_list=tf.train.FloatList(
                value=[mass]))}
            if species is not None:
                feature["species"] = tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[species]))
            writer.write(tf.train.Example(features=tf.train.Features(
                feature=feature)).SerializeToString())
    assert label_values([path], "species", "classification") == ["Adelie", "Gentoo"]
    assert label_values([path], "body_mass_g", "regression") == [3000.0, 5000.0, 4000.0]
