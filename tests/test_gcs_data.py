"""Validate and transform reading gs:// input (through the GCS emulator) match the local run."""

import json
import os

import pytest

from kfp_ct.components.common import data, storage
from kfp_ct.components.common.errors import InputDataError, ProblemSpecError
from kfp_ct.components.common.problem import load_problem
from kfp_ct.components.transform import logic as transform
from kfp_ct.components.validate import logic as validate

HERE = os.path.dirname(os.path.abspath(__file__))
PENGUINS_SPEC = os.path.join(os.path.dirname(HERE), "pipelines", "penguins", "problem.json")

USER_MODULE = '''
import tensorflow as tf
import tensorflow_transform as tft


def preprocessing_fn(inputs):
    mass = inputs["body_mass_g"]
    dense = tf.sparse.to_dense(
        tf.SparseTensor(mass.indices, mass.values, tf.stack([mass.dense_shape[0], 1])))[:, 0]
    label = inputs["species"]
    species = tf.sparse.to_dense(
        tf.SparseTensor(label.indices, label.values, tf.stack([label.dense_shape[0], 1])),
        default_value="")[:, 0]
    return {"mass_kg": dense / 1000.0,
            "species": tft.compute_and_apply_vocabulary(species, vocab_filename="label_vocabulary")}
'''


def _validate_outputs(root):
    root = str(root)
    return dict(statistics_dir=os.path.join(root, "stats"), schema_dir=os.path.join(root, "schema"),
                anomalies_dir=os.path.join(root, "anomalies"),
                report_path=os.path.join(root, "report.html"))


def _transform_outputs(root):
    root = str(root)
    return dict(transform_graph_dir=os.path.join(root, "graph"),
                examples_dir=os.path.join(root, "examples"),
                raw_eval_dir=os.path.join(root, "raw_eval"))


def _num_examples(out):
    from tensorflow_metadata.proto.v0 import statistics_pb2

    stats = statistics_pb2.DatasetFeatureStatisticsList()
    with open(os.path.join(out["statistics_dir"], validate.STATS_FILE), "rb") as fh:
        stats.ParseFromString(fh.read())
    return stats.datasets[0].num_examples


def _raw_eval_examples(out):
    import tensorflow as tf

    path = os.path.join(out["raw_eval_dir"], transform.RAW_EVAL_FILE)
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset([path])]


@pytest.fixture(scope="module")
def bucket(gcs_emulator):
    """A bucket holding the penguins CSV in two parts, the spec, and a user module."""
    root = gcs_emulator.new_bucket()
    with open(data.bundled_penguins_path()) as fh:
        lines = fh.read().splitlines()
    header, rows = lines[0], lines[1:]
    storage.write_text(f"{root}/data/part-0.csv", "\n".join([header] + rows[:170]) + "\n")
    storage.write_text(f"{root}/data/part-1.csv", "\n".join([header] + rows[170:]) + "\n")
    storage.write_text(f"{root}/data/notes/readme.txt", "not data")
    with open(PENGUINS_SPEC) as fh:
        storage.write_text(f"{root}/config/problem.json", fh.read())
    storage.write_text(f"{root}/config/my_module.py", USER_MODULE)
    return root


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gcs_local_reference")
    v_out = _validate_outputs(root / "validate")
    t_out = _transform_outputs(root / "transform")
    v = validate.run_validate(data.BUNDLED_PENGUINS, PENGUINS_SPEC, **v_out)
    t = transform.run_transform(data.BUNDLED_PENGUINS, PENGUINS_SPEC, **t_out)
    return v, v_out, t, t_out


def test_gcs_folder_and_glob_resolve_to_the_two_parts(bucket):
    expected = [f"{bucket}/data/part-0.csv", f"{bucket}/data/part-1.csv"]
    assert data.resolve_inputs(f"{bucket}/data/") == expected
    assert data.resolve_inputs(f"{bucket}/data") == expected
    assert data.resolve_inputs(f"{bucket}/data/*.csv") == expected


def test_gcs_folder_reads_the_same_rows_as_local(bucket):
    import pyarrow as pa

    spec = load_problem(PENGUINS_SPEC)
    remote = pa.Table.from_batches(list(data.iter_batches(f"{bucket}/data/", spec)))
    local = pa.Table.from_batches(list(data.iter_batches(data.BUNDLED_PENGUINS, spec)))
    assert remote.num_rows == 344
    assert remote.combine_chunks().equals(local.combine_chunks())


def test_validate_on_gcs_folder_matches_local(bucket, local_runs, tmp_path):
    local_result, local_out, _, _ = local_runs
    out = _validate_outputs(tmp_path)
    result = validate.run_validate(f"{bucket}/data/", PENGUINS_SPEC, **out)
    assert result.rows == local_result.rows == 344
    assert result.anomalies == local_result.anomalies == []
    assert _num_examples(out) == _num_examples(local_out) == 344


def test_validate_on_gcs_glob_with_gcs_spec_matches_local(bucket, local_runs, tmp_path):
    local_result, local_out, _, _ = local_runs
    out = _validate_outputs(tmp_path)
    result = validate.run_validate(f"{bucket}/data/*.csv", f"{bucket}/config/problem.json", **out)
    assert result.rows == local_result.rows
    assert _num_examples(out) == _num_examples(local_out)
    # the curated schema can live on gs:// too
    schema_uri = f"{bucket}/config/schema.pbtxt"
    with open(os.path.join(local_out["schema_dir"], validate.SCHEMA_FILE)) as fh:
        storage.write_text(schema_uri, fh.read())
    curated = validate.run_validate(f"{bucket}/data/*.csv", f"{bucket}/config/problem.json",
                                    schema_path=schema_uri, **_validate_outputs(tmp_path / "2"))
    assert curated.schema_source == f"curated file {schema_uri}"
    assert curated.anomalies == []


def test_transform_on_gcs_folder_with_gcs_spec_matches_local(bucket, local_runs, tmp_path):
    _, _, local_result, local_out = local_runs
    out = _transform_outputs(tmp_path)
    result = transform.run_transform(f"{bucket}/data/", f"{bucket}/config/problem.json", **out)
    assert result == local_result
    with open(os.path.join(out["examples_dir"], "split.json")) as a, \
            open(os.path.join(local_out["examples_dir"], "split.json")) as b:
        assert a.read() == b.read()
    assert _raw_eval_examples(out) == _raw_eval_examples(local_out)


def test_transform_on_gcs_glob_with_gcs_user_module(bucket, local_runs, tmp_path):
    import tensorflow as tf
    import tensorflow_transform as tft

    _, _, local_result, local_out = local_runs
    with open(PENGUINS_SPEC) as fh:
        spec = json.load(fh)
    spec["module_file"] = f"{bucket}/config/my_module.py"
    out = _transform_outputs(tmp_path)
    result = transform.run_transform(f"{bucket}/data/*.csv", json.dumps(spec), **out)
    # the split does not depend on the preprocessing
    assert (result.train_rows, result.eval_rows) == (local_result.train_rows, local_result.eval_rows)
    assert result.transformed_features == ["mass_kg", "species"]
    assert _raw_eval_examples(out) == _raw_eval_examples(local_out)
    tft_output = tft.TFTransformOutput(out["transform_graph_dir"])
    files = tf.io.gfile.glob(os.path.join(out["examples_dir"], "train", "*.tfrecord"))
    records = [r.numpy() for r in tf.data.TFRecordDataset(files)]
    parsed = tf.io.parse_example(records, tft_output.transformed_feature_spec())
    mass = parsed["mass_kg"].numpy().reshape(-1)
    present = mass[mass > 0]
    assert len(present) >= result.train_rows - 2
    assert 2.7 <= present.min() and present.max() <= 6.3


def test_gcs_user_module_without_preprocessing_fn_is_rejected(bucket):
    storage.write_text(f"{bucket}/config/empty_module.py", "X = 1\n")
    with open(PENGUINS_SPEC) as fh:
        spec = json.load(fh)
    spec["module_file"] = f"{bucket}/config/empty_module.py"
    with pytest.raises(ProblemSpecError) as info:
        transform.resolve_preprocessing_fn(load_problem(json.dumps(spec)))
    assert f"{bucket}/config/empty_module.py" in str(info.value)
    assert "preprocessing_fn" in str(info.value)


def test_missing_gcs_spec_names_the_uri(bucket):
    with pytest.raises(ProblemSpecError) as info:
        load_problem(f"{bucket}/config/absent.json")
    assert f"{bucket}/config/absent.json" in str(info.value)


def test_gcs_glob_matching_nothing_names_the_pattern(bucket):
    spec = load_problem(PENGUINS_SPEC)
    with pytest.raises(InputDataError) as info:
        list(data.iter_batches(f"{bucket}/data/*.parquet", spec))
    assert f"{bucket}/data/*.parquet" in str(info.value)
    assert "matches no file" in str(info.value)


def test_gcs_folder_without_data_files_names_the_folder(bucket):
    spec = load_problem(PENGUINS_SPEC)
    with pytest.raises(InputDataError) as info:
        list(data.iter_batches(f"{bucket}/config/", spec))
    # config/ holds problem.json and Python files, no .csv / .parquet
    assert "no .csv or .parquet" in str(info.value)


def test_missing_gcs_path_names_the_uri(bucket):
    spec = load_problem(PENGUINS_SPEC)
    with pytest.raises(InputDataError) as info:
        list(data.iter_batches(f"{bucket}/nothing/here.csv", spec))
    assert f"{bucket}/nothing/here.csv" in str(info.value)
