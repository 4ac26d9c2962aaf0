"""kfp_ct.components.transform.logic.run_transform on the bundled penguins and on bad input."""

import glob
import json
import os
import re

import numpy as np
import pytest

from kfp_ct.components.common import data
from kfp_ct.components.common.errors import InputDataError, ProblemSpecError
from kfp_ct.components.transform import logic as transform
from kfp_ct.components.transform.preprocessing import LABEL_VOCABULARY
from transform_outputs import USER_MODULE_HEAD, extended_module

HERE = os.path.dirname(os.path.abspath(__file__))
PENGUINS_SPEC = os.path.join(os.path.dirname(HERE), "pipelines", "penguins", "problem.json")
NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
CATEGORICAL = ["island", "sex"]
LABEL = "species"


def _outputs(root):
    root = str(root)
    return dict(transform_graph_dir=os.path.join(root, "transform_graph"),
                examples_dir=os.path.join(root, "examples"),
                raw_eval_dir=os.path.join(root, "raw_eval"))


def _assert_no_outputs(out):
    for path in out.values():
        assert not os.path.exists(path), path
    parent = os.path.dirname(out["transform_graph_dir"])
    if os.path.isdir(parent):  # no staging folder left behind either
        assert [n for n in os.listdir(parent) if n.startswith(".transform-staging-")] == []


def _records(pattern):
    import tensorflow as tf

    files = sorted(glob.glob(pattern))
    assert files, pattern
    return [r.numpy() for r in tf.data.TFRecordDataset(files)]


def _spec_text(**changes):
    with open(PENGUINS_SPEC) as fh:
        spec = json.load(fh)
    spec.update(changes)
    return json.dumps(spec)


@pytest.fixture(scope="module")
def penguins_run(tmp_path_factory):
    out = _outputs(tmp_path_factory.mktemp("transform_penguins"))
    result = transform.run_transform(data.BUNDLED_PENGUINS, PENGUINS_SPEC, **out)
    return result, out


@pytest.fixture(scope="module")
def tft_output(penguins_run):
    import tensorflow_transform as tft

    return tft.TFTransformOutput(penguins_run[1]["transform_graph_dir"])


@pytest.fixture(scope="module")
def transformed_train(penguins_run, tft_output):
    import tensorflow as tf

    records = _records(os.path.join(penguins_run[1]["examples_dir"], "train", "*.tfrecord"))
    parsed = tf.io.parse_example(records, tft_output.transformed_feature_spec())
    return {k: v.numpy() for k, v in parsed.items()}


def test_penguins_split_covers_every_row_with_about_20_percent_eval(penguins_run):
    result, out = penguins_run
    assert result.train_rows + result.eval_rows == 344
    assert 0.12 <= result.eval_rows / 344 <= 0.28
    assert result.transformed_features == sorted(NUMERIC + CATEGORICAL + [LABEL])
    with open(os.path.join(out["examples_dir"], "split.json")) as fh:
        assert json.load(fh) == result.summary()


def test_penguins_split_matches_the_eval_mask(penguins_run):
    from kfp_ct.components.common.problem import load_problem

    spec = load_problem(PENGUINS_SPEC)
    mask = np.concatenate([data.eval_mask(b, spec)
                           for b in data.iter_batches(data.BUNDLED_PENGUINS, spec)])
    result, _ = penguins_run
    assert result.eval_rows == int(mask.sum())


def test_penguins_transform_graph_has_the_species_vocabulary(tft_output):
    vocab = [v.decode() if isinstance(v, bytes) else v
             for v in tft_output.vocabulary_by_name(LABEL_VOCABULARY)]
    assert sorted(vocab) == ["Adelie", "Chinstrap", "Gentoo"]
    island = tft_output.vocabulary_by_name("vocabulary_island")
    assert {v.decode() if isinstance(v, bytes) else v for v in island} == {
        "Biscoe", "Dream", "Torgersen"}
    assert set(tft_output.transformed_feature_spec()) == set(NUMERIC + CATEGORICAL + [LABEL])


def test_penguins_transformed_train_is_standardized(penguins_run, transformed_train):
    result, _ = penguins_run
    for name in NUMERIC:
        values = transformed_train[name].reshape(-1)
        assert values.shape == (result.train_rows,), name
        # missing values become 0 (the mean), which leaves the mean at 0 and std just below 1
        assert abs(values.mean()) < 0.05, (name, values.mean())
        assert 0.95 < values.std() < 1.05, (name, values.std())


def test_penguins_transformed_train_has_integer_ids(transformed_train, tft_output):
    labels = transformed_train[LABEL].reshape(-1)
    assert labels.dtype == np.int64
    assert set(labels.tolist()) == {0, 1, 2}
    islands = transformed_train["island"].reshape(-1)
    assert set(islands.tolist()) <= {0, 1, 2, 3}  # 3 islands + 1 OOV bucket
    assert len(set(islands.tolist())) == 3


def test_penguins_transformed_eval_parses_and_counts_eval_rows(penguins_run, tft_output):
    import tensorflow as tf

    result, out = penguins_run
    records = _records(os.path.join(out["examples_dir"], "eval", "*.tfrecord"))
    assert len(records) == result.eval_rows
    parsed = tf.io.parse_example(records, tft_output.transformed_feature_spec())
    assert parsed[LABEL].shape[0] == result.eval_rows


def test_penguins_raw_eval_records_are_raw_examples(penguins_run):
    import tensorflow as tf

    result, out = penguins_run
    records = _records(os.path.join(out["raw_eval_dir"], transform.RAW_EVAL_FILE))
    assert len(records) == result.eval_rows
    species, missing_sex = set(), 0
    for record in records:
        features = tf.train.Example.FromString(record).features.feature
        # every raw column, and nothing else (no "year"); a missing value is an empty list
        assert set(features) == set(NUMERIC + CATEGORICAL + [LABEL])
        species.add(features[LABEL].bytes_list.value[0].decode())
        assert features["island"].bytes_list.value[0].decode() in {"Biscoe", "Dream", "Torgersen"}
        missing_sex += not features["sex"].bytes_list.value
    assert species <= {"Adelie", "Chinstrap", "Gentoo"} and len(species) >= 2
    # a raw record parses with the serving-time (VarLen) raw feature spec
    from kfp_ct.components.common.problem import load_problem
    from kfp_ct.components.transform.preprocessing import raw_feature_spec

    parsed = tf.io.parse_example(records, raw_feature_spec(load_problem(PENGUINS_SPEC)))
    mass = tf.sparse.to_dense(parsed["body_mass_g"]).numpy()
    assert mass.shape[0] == result.eval_rows
    assert ((mass == 0) | ((mass >= 2700) & (mass <= 6300))).all()
    assert missing_sex <= 11  # penguins with no sex may or may not land in eval


def test_same_input_twice_gives_identical_split(penguins_run, tmp_path):
    first_result, first = penguins_run
    second = _outputs(tmp_path)
    result = transform.run_transform(data.BUNDLED_PENGUINS, PENGUINS_SPEC, **second)
    assert result == first_result
    with open(os.path.join(first["examples_dir"], "split.json"), "rb") as a, \
            open(os.path.join(second["examples_dir"], "split.json"), "rb") as b:
        assert a.read() == b.read()
    raw_a = _records(os.path.join(first["raw_eval_dir"], transform.RAW_EVAL_FILE))
    raw_b = _records(os.path.join(second["raw_eval_dir"], transform.RAW_EVAL_FILE))
    assert len(raw_a) == len(raw_b) == first_result.eval_rows
    # Same examples in the same order. (Compared as protos: the encoder's feature-map order
    # in the serialized bytes is not fixed from one call to the next.)
    assert [_example(r) for r in raw_a] == [_example(r) for r in raw_b]
    # and the transformed eval examples hold the same values in the same order
    eval_a = _records(os.path.join(first["examples_dir"], "eval", "*.tfrecord"))
    eval_b = _records(os.path.join(second["examples_dir"], "eval", "*.tfrecord"))
    assert [_example(r) for r in eval_a] == [_example(r) for r in eval_b]


def _example(record):
    import tensorflow as tf

    return tf.train.Example.FromString(record)


USER_MODULE = USER_MODULE_HEAD + '''

def preprocessing_fn(inputs):
    length = _dense(inputs["bill_length_mm"], 0.0)
    depth = _dense(inputs["bill_depth_mm"], 0.0)
    return {
        "bill_ratio": tf.math.divide_no_nan(length, depth),
        "bill_length_mm": tft.scale_to_0_1(length),
        "species": tft.compute_and_apply_vocabulary(_dense(inputs["species"], ""),
                                                    vocab_filename="label_vocabulary"),
    }
'''


def test_user_module_preprocessing_fn_is_used(tmp_path):
    import tensorflow as tf
    import tensorflow_transform as tft

    module = tmp_path / "my_preprocessing.py"
    module.write_text(USER_MODULE)
    out = _outputs(tmp_path / "out")
    result = transform.run_transform(data.BUNDLED_PENGUINS, _spec_text(module_file=str(module)),
                                     **out)
    assert result.transformed_features == ["bill_length_mm", "bill_ratio", "species"]
    assert result.train_rows + result.eval_rows == 344
    tft_output = tft.TFTransformOutput(out["transform_graph_dir"])
    records = _records(os.path.join(out["examples_dir"], "train", "*.tfrecord"))
    parsed = tf.io.parse_example(records, tft_output.transformed_feature_spec())
    ratio = parsed["bill_ratio"].numpy().reshape(-1)
    present = ratio[ratio > 0]
    assert len(present) >= result.train_rows - 2  # two penguins have no bill measures
    assert 1.5 < present.min() and present.max() < 4.0  # bill length / depth
    scaled = parsed["bill_length_mm"].numpy()
    assert scaled.min() >= 0.0 and scaled.max() <= 1.0
    # Serving: a non-finite raw value reaches the user's preprocessing_fn as missing.
    served = _serve_raw(tft_output, [{"bill_length_mm": v, "bill_depth_mm": 18.0}
                                     for v in (None, float("inf"), float("nan"), 40.0)])
    lengths = served["bill_length_mm"].reshape(-1)
    assert lengths[1] == lengths[2] == lengths[0]  # inf, NaN: as if absent
    assert np.isfinite(served["bill_ratio"]).all() and lengths[3] != lengths[0]


def test_user_module_without_preprocessing_fn_fails_and_leaves_no_outputs(tmp_path):
    module = tmp_path / "nothing_here.py"
    module.write_text("def build_model(spec):\n    return None\n")
    out = _outputs(tmp_path / "out")
    with pytest.raises(ProblemSpecError) as info:
        transform.run_transform(data.BUNDLED_PENGUINS, _spec_text(module_file=str(module)), **out)
    assert str(module) in str(info.value)
    assert "preprocessing_fn" in str(info.value)
    _assert_no_outputs(out)


def test_user_module_with_failing_preprocessing_fn_names_the_module(tmp_path):
    module = tmp_path / "wrong_column.py"
    module.write_text("def preprocessing_fn(inputs):\n    return {'x': inputs['wingspan']}\n")
    out = _outputs(tmp_path / "out")
    with pytest.raises(ProblemSpecError) as info:
        transform.run_transform(data.BUNDLED_PENGUINS, _spec_text(module_file=str(module)), **out)
    assert str(module) in str(info.value)
    assert "wingspan" in str(info.value)
    _assert_no_outputs(out)


def test_a_user_preprocessing_fn_that_drops_the_label_is_refused_at_transform(tmp_path):
    """Before: transform wrote examples without the label, and training failed minutes
    later on a KeyError: 'species' from inside its input pipeline."""
    module = tmp_path / "no_label.py"
    module.write_text(USER_MODULE.replace('"species": tft.compute_and_apply_vocabulary(',
                                          '"kind": tft.compute_and_apply_vocabulary('))
    out = _outputs(tmp_path / "out")
    with pytest.raises(ProblemSpecError) as info:
        transform.run_transform(data.BUNDLED_PENGUINS, _spec_text(module_file=str(module)),
                                **out)
    assert str(info.value) == (
        f"user module {module}: preprocessing_fn's outputs lack the label 'species'; it "
        f"returned: ['bill_length_mm', 'bill_ratio', 'kind']")
    _assert_no_outputs(out)


@pytest.mark.parametrize("expression,share", [
    ('tf.math.log(-1.0 - tf.abs(outputs["body_mass_g"]))', "all"),  # NaN in every row
    ('1.0 / tf.maximum(outputs["bill_length_mm"], 0.0)', "some"),  # +inf where x <= 0
    ('tf.math.log(tf.maximum(outputs["bill_depth_mm"], 0.0))', "some"),  # -inf where x <= 0
])
def test_a_transformed_feature_that_is_not_finite_is_refused_and_nothing_written(
        tmp_path, expression, share):
    """Refused at transform: training cannot be trusted to notice (a fused MatMul+Relu
    kernel on some CPUs reads NaN as 0, and the loss stays finite)."""
    module = tmp_path / "broken_feature.py"
    module.write_text(extended_module(PENGUINS_SPEC, "broken", expression))
    out = _outputs(tmp_path / "out")
    with pytest.raises(ProblemSpecError) as info:
        transform.run_transform(data.BUNDLED_PENGUINS, _spec_text(module_file=str(module)),
                                **out)
    message = str(info.value)
    assert str(module) in message
    assert "'broken'" in message and "not finite" in message
    bad, total = map(int, re.search(r"(\d+) of (\d+) values", message).groups())
    assert (bad == total) if share == "all" else (0 < bad < total)
    _assert_no_outputs(out)


def test_text_in_numeric_column_fails_and_leaves_no_outputs(tmp_path):
    with open(data.bundled_penguins_path()) as fh:
        lines = fh.read().splitlines()
    fields = lines[40].split(",")
    fields[5] = "heavy"  # body_mass_g
    lines[40] = ",".join(fields)
    bad = tmp_path / "bad_mass.csv"
    bad.write_text("\n".join(lines) + "\n")
    out = _outputs(tmp_path / "out")
    with pytest.raises(InputDataError) as info:
        transform.run_transform(str(bad), PENGUINS_SPEC, **out)
    message = str(info.value)
    assert "'body_mass_g'" in message
    assert "'heavy'" in message
    assert str(bad) in message
    _assert_no_outputs(out)


def test_bad_value_deep_in_a_large_file_fails_and_leaves_no_outputs(tmp_path):
    """The value sits in a later CSV block, read ahead in a thread (common/overlap.py):
    the error is still ours, names the file and the value, and nothing is written."""
    from kfp_ct.pipelines.entrypoints.synth import write_penguins_like

    path = tmp_path / "large.csv"
    write_penguins_like(str(path), 180_000, seed=0)
    lines = path.read_text().splitlines()
    column = [name.strip('"') for name in lines[0].split(",")].index("body_mass_g")
    fields = lines[170_000].split(",")
    fields[column] = "heavy"
    lines[170_000] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size > 2 * (4 << 20)  # more than one 4 MiB read block
    out = _outputs(tmp_path / "out")
    with pytest.raises(InputDataError) as info:
        transform.run_transform(str(path), PENGUINS_SPEC, **out)
    message = str(info.value)
    assert str(path) in message and "'body_mass_g'" in message and "'heavy'" in message
    _assert_no_outputs(out)


def test_failed_run_keeps_the_previous_outputs(tmp_path, penguins_run):
    import shutil

    _, good = penguins_run
    out = _outputs(tmp_path / "out")
    for key in out:
        shutil.copytree(good[key], out[key])
    before = _records(os.path.join(out["raw_eval_dir"], transform.RAW_EVAL_FILE))
    missing = str(tmp_path / "absent.csv")
    with pytest.raises(InputDataError) as info:
        transform.run_transform(missing, PENGUINS_SPEC, **out)
    assert missing in str(info.value)
    assert [n for n in os.listdir(tmp_path / "out") if n.startswith(".transform-staging-")] == []
    assert _records(os.path.join(out["raw_eval_dir"], transform.RAW_EVAL_FILE)) == before


# ------------------------------------------------------------- non-finite numbers

def _raw_example(values: dict) -> bytes:
    """A serialized raw tf.Example; None leaves the feature out (missing)."""
    import tensorflow as tf

    feature = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, str):
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
        else:
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _serve_raw(tft_output, rows: list[dict]) -> dict:
    """The transform graph applied as serving applies it: parse raw tf.Examples, transform."""
    import tensorflow as tf

    from kfp_ct.components.common.problem import load_problem
    from kfp_ct.components.transform.preprocessing import raw_feature_spec

    parsed = tf.io.parse_example(tf.constant([_raw_example(r) for r in rows]),
                                 raw_feature_spec(load_problem(PENGUINS_SPEC), with_label=False))
    outputs = tft_output.transform_features_layer()(parsed)
    return {k: v.numpy() for k, v in outputs.items()}


_ODD = {5: ("body_mass_g", "inf"), 60: ("body_mass_g", "NaN"), 120: ("body_mass_g", "-Infinity"),
        7: ("bill_depth_mm", "nan"), 200: ("bill_depth_mm", "1e39"), 9: ("island", "nan")}
_OPTIONS = {"body_mass_g": {"log": True}, "bill_depth_mm": {"buckets": 4}}


def _odd_penguin_files(folder):
    """Penguins with non-finite numbers (and a categorical "nan"), as CSV and as Parquet."""
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(data.bundled_penguins_path(), newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    for row, (column, text) in _ODD.items():
        body[row][header.index(column)] = text
    folder.mkdir()
    with open(folder / "odd.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([header] + body)
    columns = {}
    for i, name in enumerate(header):
        cells = [r[i] for r in body]
        if name in NUMERIC:
            columns[name] = pa.array([None if c == "NA" else float(c) for c in cells], pa.float64())
        else:
            columns[name] = pa.array(cells, pa.string())
    pq.write_table(pa.table(columns), folder / "odd.parquet")
    return str(folder / "odd.csv"), str(folder / "odd.parquet")


@pytest.fixture(scope="module")
def odd_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd")
    paths = _odd_penguin_files(root / "data")
    runs = {}
    for path in paths:
        out = _outputs(root / os.path.basename(path).replace(".", "_"))
        runs[data.format_of(path)] = (transform.run_transform(
            path, _spec_text(options=_OPTIONS), **out), out)
    return runs


def _transformed(out, split):
    import tensorflow as tf
    import tensorflow_transform as tft

    records = _records(os.path.join(out["examples_dir"], split, "*.tfrecord"))
    spec = tft.TFTransformOutput(out["transform_graph_dir"]).transformed_feature_spec()
    return records, {k: v.numpy().reshape(-1) for k, v in tf.io.parse_example(records, spec).items()}


def test_non_finite_values_are_transformed_as_missing_ones(odd_runs):
    result, out = odd_runs["csv"]
    assert result.train_rows + result.eval_rows == 344
    values = {}
    for split in (transform.TRAIN, transform.EVAL):
        for name, v in _transformed(out, split)[1].items():
            values.setdefault(name, []).extend(v.tolist())
    for name in NUMERIC:
        assert np.isfinite(values[name]).all(), name
    # 2 penguins have no measures; 3 masses and 2 depths are not finite: all are missing.
    mass = np.array(values["body_mass_g"])
    assert (mass == 0.0).sum() == 2 + 3  # z-score: missing is the mean, 0
    assert abs(mass.mean()) < 0.05 and 0.95 < mass.std() < 1.05
    depth = np.array(values["bill_depth_mm"])
    assert (depth == 4).sum() == 2 + 2  # buckets 0..3; missing gets its own id, 4
    assert set(depth.tolist()) == {0, 1, 2, 3, 4}


def test_csv_and_parquet_of_the_same_table_transform_identically(odd_runs):
    (csv_result, csv_out), (pq_result, pq_out) = odd_runs["csv"], odd_runs["parquet"]
    assert csv_result == pq_result
    for split in (transform.TRAIN, transform.EVAL):
        a, b = _transformed(csv_out, split)[0], _transformed(pq_out, split)[0]
        assert [_example(r) for r in a] == [_example(r) for r in b], split
    raw_a = _records(os.path.join(csv_out["raw_eval_dir"], transform.RAW_EVAL_FILE))
    raw_b = _records(os.path.join(pq_out["raw_eval_dir"], transform.RAW_EVAL_FILE))
    assert [_example(r) for r in raw_a] == [_example(r) for r in raw_b]


def test_serving_treats_non_finite_raw_values_as_missing(odd_runs):
    import tensorflow_transform as tft

    _, out = odd_runs["csv"]
    tft_output = tft.TFTransformOutput(out["transform_graph_dir"])
    base = {"bill_length_mm": 40.0, "flipper_length_mm": 200.0, "island": "Dream", "sex": "male"}
    rows = [dict(base, body_mass_g=m, bill_depth_mm=d) for m, d in (
        (None, None), (float("inf"), float("nan")), (float("-inf"), float("inf")),
        (float("nan"), float("-inf")), (4000.0, 18.0))]
    served = _serve_raw(tft_output, rows)
    mass, depth = served["body_mass_g"].reshape(-1), served["bill_depth_mm"].reshape(-1)
    assert mass.tolist()[:4] == [0.0] * 4 and mass[4] != 0.0 and np.isfinite(mass[4])
    assert depth.tolist()[:4] == [4] * 4 and depth[4] in {0, 1, 2, 3}


def test_single_class_in_the_training_split_fails_and_leaves_no_outputs(tmp_path):
    from kfp_ct.components.common.errors import LabelError
    from label_data import penguin_rows, with_class_in_split

    header, rows = penguin_rows()
    path, n = with_class_in_split(tmp_path / "gentoo.csv", "Gentoo", "eval", rows=5, every=3,
                                  base=(header, [r for r in rows if r[0] == "Adelie"]))
    out = _outputs(tmp_path / "out")
    with pytest.raises(LabelError, match=rf"holds a single class, 'Adelie'.*'Gentoo': {n}"):
        transform.run_transform(path, PENGUINS_SPEC, **out)
    _assert_no_outputs(out)


def test_sharded_writer_fills_each_shard_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(transform, "SHARD_ROWS", 3)
    writer = transform._ShardedWriter(str(tmp_path / "out"), "data")
    records = [f"r{i}".encode() for i in range(11)]
    for chunk in (records[:2], records[2:7], [], records[7:]):
        writer.write(iter(chunk))
    writer.close()
    files = sorted(glob.glob(str(tmp_path / "out" / "*.tfrecord")))
    assert [os.path.basename(f) for f in files] == [
        "data-00000.tfrecord", "data-00001.tfrecord", "data-00002.tfrecord",
        "data-00003.tfrecord"]
    assert [len(_records(f)) for f in files] == [3, 3, 3, 2]
    assert [r for f in files for r in _records(f)] == records
    assert writer.rows == 11
