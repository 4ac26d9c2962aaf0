"""components/transform/analyze_local.py: TFT's analysis graph run without Beam writes
what TFT's Beam pipeline writes, for the default preprocessing and for user functions
that use many analyzers; what it does not run goes through Beam."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from kfp_ct.components.common import data
from kfp_ct.components.transform import analyze_local
from kfp_ct.components.transform import logic as transform
from transform_outputs import USER_MODULE_HEAD, assert_same, contents

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PENGUINS_SPEC = os.path.join(ROOT, "pipelines", "penguins", "problem.json")

# Every analyzer family the direct pass runs: mean/variance, min/max, quantiles
# (bucketize), two phases (an analyzer of an analyzer's output), vocabularies with top_k,
# frequency_threshold, numeric tokens, fingerprint order, stored frequencies, one that
# keeps nothing, and a vocabulary no output uses (a side effect: still an asset).
MANY_ANALYZERS = USER_MODULE_HEAD + '''

def preprocessing_fn(inputs):
    length = _dense(inputs["bill_length_mm"], 0.0)
    depth = _dense(inputs["bill_depth_mm"], 0.0)
    mass = _dense(inputs["body_mass_g"], 0.0)
    island = _dense(inputs["island"], "")
    sex = _dense(inputs["sex"], "")
    tft.vocabulary(island, vocab_filename="island_counts", store_frequency=True)
    return {
        "z": tft.scale_to_z_score(length),
        "nested": tft.scale_to_z_score(tft.scale_to_0_1(length) * depth),
        "buckets": tft.bucketize(depth, 7),
        "minmax": tft.scale_by_min_max(mass),
        "centered": mass - tft.mean(mass) + tft.max(depth) - tft.min(length),
        "island_common": tft.compute_and_apply_vocabulary(island, frequency_threshold=60),
        "island_none": tft.compute_and_apply_vocabulary(island, frequency_threshold=10**6),
        "sex_top1": tft.compute_and_apply_vocabulary(sex, top_k=1),
        "depth_ids": tft.compute_and_apply_vocabulary(tf.cast(depth, tf.int64)),
        "island_fp": tft.compute_and_apply_vocabulary(island, fingerprint_shuffle=True),
        "species": tft.compute_and_apply_vocabulary(_dense(inputs["species"], ""),
                                                    vocab_filename="label_vocabulary"),
    }
'''

# A weighted vocabulary: not run directly, so TFT's Beam pipeline analyzes.
WEIGHTED = '''
import tensorflow as tf
import tensorflow_transform as tft


def preprocessing_fn(inputs):
    island = tf.sparse.to_dense(inputs["island"], default_value="")[:, 0]
    mass = tf.sparse.to_dense(inputs["body_mass_g"], default_value=0.0)[:, 0]
    species = tf.sparse.to_dense(inputs["species"], default_value="")[:, 0]
    return {"island": tft.compute_and_apply_vocabulary(island, weights=mass),
            "species": tft.compute_and_apply_vocabulary(species,
                                                        vocab_filename="label_vocabulary")}
'''


def _spec(**changes) -> str:
    with open(PENGUINS_SPEC) as fh:
        spec = json.load(fh)
    spec.update(changes)
    return json.dumps(spec)


def _run(data_path: str, problem: str, out) -> dict:
    transform.run_transform(data_path, problem, str(out / "graph"), str(out / "examples"),
                            str(out / "raw"))
    return contents(str(out))


def _refuse_beam_pipelines(monkeypatch) -> None:
    """A Beam pipeline built from now on fails the test."""
    import apache_beam as beam

    def refuse(*args, **kwargs):
        raise AssertionError("a Beam pipeline was built")

    monkeypatch.setattr(beam.Pipeline, "__init__", refuse)


def _both(data_path, problem, tmp_path, monkeypatch, direct_only=True) -> tuple[dict, dict]:
    """The outputs of the direct pass (no Beam pipeline at all, unless ``direct_only`` is
    False) and of TFT's Beam pipeline, on the same input."""
    monkeypatch.delenv(analyze_local.FORCE_BEAM_ENV, raising=False)
    with monkeypatch.context() as patched:
        if direct_only:
            _refuse_beam_pipelines(patched)
        direct = _run(data_path, problem, tmp_path / "direct")
    monkeypatch.setenv(analyze_local.FORCE_BEAM_ENV, "1")
    with_beam = _run(data_path, problem, tmp_path / "beam")
    monkeypatch.delenv(analyze_local.FORCE_BEAM_ENV)
    return direct, with_beam


def test_penguins_default_preprocessing_is_the_same_as_with_beam(tmp_path, monkeypatch):
    direct, with_beam = _both(data.BUNDLED_PENGUINS, PENGUINS_SPEC, tmp_path, monkeypatch)
    assert any(k.startswith("graph/transform_fn/assets/vocabulary_") for k in direct)
    assert "graph/transformed_metadata/schema.pbtxt" in direct
    assert_same(direct, with_beam)


def test_wide_table_is_the_same_as_with_beam(tmp_path, monkeypatch):
    """16 features: bucketized numerics, large vocabularies with top_k, z-scores."""
    spec = importlib.util.spec_from_file_location(
        "wide", os.path.join(ROOT, "tests", "benchmarks", "wide.py"))
    wide = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wide)
    path = wide.write_wide(str(tmp_path / "wide.csv"), 2500, seed=5)
    direct, with_beam = _both(path, wide.problem_json(), tmp_path, monkeypatch)
    assert len([k for k in direct if "/assets/" in k]) == 7  # 6 categoricals, the label
    assert_same(direct, with_beam)


def test_many_analyzers_in_a_user_module_are_the_same_as_with_beam(tmp_path, monkeypatch):
    module = tmp_path / "many.py"
    module.write_text(MANY_ANALYZERS)
    direct, with_beam = _both(data.BUNDLED_PENGUINS, _spec(module_file=str(module)),
                              tmp_path, monkeypatch)
    assets = {os.path.basename(k) for k in direct if "/assets/" in k}
    assert {"island_counts", "label_vocabulary"} <= assets and len(assets) >= 7
    assert_same(direct, with_beam)


def test_an_operation_not_run_directly_goes_through_beam(tmp_path, monkeypatch, capsys):
    module = tmp_path / "weighted.py"
    module.write_text(WEIGHTED)
    direct, with_beam = _both(data.BUNDLED_PENGUINS, _spec(module_file=str(module)),
                              tmp_path, monkeypatch, direct_only=False)
    said = capsys.readouterr().out
    assert "analyzing with Beam (VocabularyAccumulate by" in said
    assert_same(direct, with_beam)
