"""The Beam path of validate and transform (components/common/beam_io.py).

The equality tests run the DirectRunner in multi-processing mode (2 worker processes) on
gs:// input and a gs:// --temp_location through the storage emulator, and compare every
output with the in-process path's. TensorFlow's own gs:// client (which TF Transform
writes its SavedModels through) does not honour the emulator, so there TFT's folder is a
local one the workers share (KFP_CT_TF_WORK_LOCATION); on Dataflow it is the temp
location too. Flink, Spark and Dataflow cannot run here: their options are checked.
"""

from __future__ import annotations

import glob
import io
import json
import math
import os

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from kfp_ct.components.common import beam_io, storage
from kfp_ct.components.common import data as data_lib
from kfp_ct.components.common.errors import InputDataError
from kfp_ct.components.common.problem import load_problem
from kfp_ct.pipelines.training import PENGUINS_PROBLEM
from transform_outputs import extended_module

MULTI = ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--no_auth",
         "--direct_num_workers=2"]


def _penguins_table() -> pa.Table:
    return pacsv.read_csv(data_lib.bundled_penguins_path())


def _records(pattern: str) -> list[bytes]:
    import tensorflow as tf

    out = []
    for path in sorted(glob.glob(pattern)):
        for record in tf.data.TFRecordDataset(path):
            example = tf.train.Example.FromString(record.numpy())
            out.append(example.SerializeToString(deterministic=True))
    return sorted(out)


def _examples(pattern: str) -> list[dict]:
    """Every tf.Example as {feature: values}, in an order that does not depend on the
    last bits of a float."""
    import tensorflow as tf

    rows = []
    for path in sorted(glob.glob(pattern)):
        for record in tf.data.TFRecordDataset(path):
            example = tf.train.Example.FromString(record.numpy())
            row = {}
            for name, feature in example.features.feature.items():
                kind = feature.WhichOneof("kind")
                row[name] = (kind, list(getattr(feature, kind).value))
            rows.append(row)

    def key(row):
        return [(n, k, [round(v, 3) if isinstance(v, float) else v for v in vals])
                for n, (k, vals) in sorted(row.items())]

    return sorted(rows, key=key)


def _assert_examples_close(a: list[dict], b: list[dict], where: str) -> None:
    """The same examples; float values to float32 precision (TFT's means and variances are
    sums over the rows, taken in another order by two workers)."""
    assert a and len(a) == len(b), where
    for i, (x, y) in enumerate(zip(a, b)):
        assert sorted(x) == sorted(y), (where, i)
        for name in x:
            (kind, xs), (kind_b, ys) = x[name], y[name]
            assert kind == kind_b and len(xs) == len(ys), (where, i, name)
            if kind == "float_list":
                assert all(math.isclose(p, q, rel_tol=1e-5, abs_tol=1e-6)
                           for p, q in zip(xs, ys)), (where, i, name, xs, ys)
            else:
                assert xs == ys, (where, i, name)


def _assert_close(a, b, where="stats"):
    """Equal structure and values; floats to 1e-12 relative (sums in another order)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for key in a:
            _assert_close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12), (where, a, b)
    else:
        assert a == b, (where, a, b)


def _stats_doc(stats) -> dict:
    from google.protobuf.json_format import MessageToDict

    doc = MessageToDict(stats)
    for dataset in doc["datasets"]:
        dataset["features"].sort(key=lambda f: f["path"]["step"])
    return doc


def _gcs_files(prefix: str) -> list[str]:
    return sorted(storage.list_files(prefix)) if storage.isdir(prefix) else []


@pytest.mark.long
def test_validate_on_beam_equals_in_process_on_gcs(gcs_emulator):
    from kfp_ct.components.validate.logic import compute_statistics

    bucket = gcs_emulator.new_bucket()
    table = _penguins_table()
    # Two CSV files, one with its columns in another order: each is parsed with its header.
    half = table.num_rows // 2
    for name, part in (("a.csv", table.slice(0, half)),
                       ("b.csv", table.slice(half).select(list(reversed(table.column_names))))):
        sink = io.BytesIO()
        pacsv.write_csv(part, sink)
        storage.write_bytes(f"{bucket}/in/{name}", sink.getvalue())
    spec = load_problem(PENGUINS_PROBLEM)
    # In process over the same two files: the tracker keeps per-file facts (the shape of
    # each text column's values in each file) that must come out the same on Beam.
    local_stats, local_tracker, local_ref = compute_statistics(f"{bucket}/in", spec)
    temp = f"{bucket}/tmp"
    stats, tracker, ref = compute_statistics(f"{bucket}/in", spec,
                                             beam_args=MULTI + [f"--temp_location={temp}"])
    # The same statistics, to the last few bits of the float sums (the rows are summed in
    # another order; the in-process path over the same two files differs as much).
    _assert_close(_stats_doc(stats), _stats_doc(local_stats))
    assert tracker.to_json() == local_tracker.to_json()
    assert ref == local_ref
    assert _gcs_files(temp) == [], "the Beam work folder is left behind"


@pytest.mark.long
def test_transform_on_beam_equals_in_process_on_gcs(gcs_emulator, tmp_path, monkeypatch):
    from kfp_ct.components.transform.logic import run_transform

    bucket = gcs_emulator.new_bucket()
    table = _penguins_table()
    # Parquet with small row groups, so Beam has several splits to hand to two workers.
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=50)
    storage.write_bytes(f"{bucket}/in/penguins.parquet", sink.getvalue())
    monkeypatch.setenv(beam_io.TF_WORK_ENV, str(tmp_path / "tf-work"))

    def outputs(root, data, args):
        result = run_transform(data, PENGUINS_PROBLEM, f"{root}/graph", f"{root}/examples",
                               f"{root}/raw", beam_args=args)
        return result.summary()

    here = outputs(tmp_path / "in_process", "bundled:penguins", None)
    temp = f"{bucket}/tmp"
    there = outputs(tmp_path / "beam", f"{bucket}/in/penguins.parquet",
                    MULTI + [f"--temp_location={temp}"])
    assert here == there
    assert json.loads((tmp_path / "beam/examples/split.json").read_text()) == here
    for sub in ("examples/train/*.tfrecord", "examples/eval/*.tfrecord"):
        _assert_examples_close(_examples(str(tmp_path / "in_process" / sub)),
                               _examples(str(tmp_path / "beam" / sub)), sub)
    # The raw eval rows involve no arithmetic: byte for byte the same examples.
    raw_here, raw_there = (_records(str(tmp_path / p / "raw/*.tfrecord"))
                           for p in ("in_process", "beam"))
    assert raw_here and raw_here == raw_there
    assert sorted(os.listdir(tmp_path / "beam/raw")) == ["eval_raw.tfrecord"]
    # The graphs: the same vocabularies and variables (the protos differ in graph names).
    for kind in ("transform_fn/assets", "transform_fn/variables", "transformed_metadata"):
        a_dir, b_dir = tmp_path / "in_process/graph" / kind, tmp_path / "beam/graph" / kind
        names = sorted(p.relative_to(a_dir) for p in a_dir.rglob("*") if p.is_file())
        assert names == sorted(p.relative_to(b_dir) for p in b_dir.rglob("*") if p.is_file())
        for name in names:
            if kind != "transform_fn/variables":
                assert (a_dir / name).read_bytes() == (b_dir / name).read_bytes(), name
    assert _gcs_files(temp) == []
    assert list((tmp_path / "tf-work").iterdir()) == []


def test_a_remote_runner_without_temp_location_is_refused_before_it_runs():
    with pytest.raises(beam_io.BeamArgsError, match="--temp_location=gs://"):
        beam_io.work_location(["--runner=DataflowRunner", "--project=p", "--region=r"],
                              "validate")
    with pytest.raises(beam_io.BeamArgsError, match="'FlinkRunner'"):
        beam_io.work_location(["--runner=FlinkRunner", "--flink_master=host:8081"], "transform")


@pytest.mark.parametrize("runner", ["dataflow", "flink", "spark"])
def test_the_documented_runner_examples_give_the_workers_a_folder_under_temp_location(runner):
    """The README's beam_args examples (these runners cannot run here; the options each
    gives are checked in tests/test_evaluate_beam.py)."""
    args = beam_io.beam_args_examples()[runner]
    for task in ("validate", "transform"):
        work = beam_io.work_location(args, task)
        assert work.startswith(f"gs://my-bucket/beam-tmp/kfp-ct-{task}-")
    # The same options without --temp_location: refused, naming the flag.
    with pytest.raises(beam_io.BeamArgsError, match="--temp_location=gs://"):
        beam_io.work_location([a for a in args if not a.startswith("--temp_location")],
                              "validate")


def test_a_quoted_line_break_is_refused_with_the_reason(tmp_path):
    spec = load_problem(PENGUINS_PROBLEM)
    header = data_lib.csv_header(data_lib.bundled_penguins_path())
    first, second = 'Adelie,"Tor', 'gersen",39.1,18.7,181,3750,male,2007'
    # Within one worker's share of the file the halves meet again and parse.
    (batch,) = data_lib.parse_csv_lines("gs://b/data.csv", header, [first, second], spec)
    assert batch.column(batch.schema.get_field_index("island")).to_pylist() == ["Tor\ngersen"]
    # Split between two workers, each half is refused: never read as a wrong row.
    for fragment in ([first], [second]):
        with pytest.raises(InputDataError, match="quoted value holding a line break"):
            list(data_lib.parse_csv_lines("gs://b/data.csv", header, fragment, spec))


def test_a_bad_value_on_the_beam_path_names_file_column_and_value():
    spec = load_problem(PENGUINS_PROBLEM)
    header = data_lib.csv_header(data_lib.bundled_penguins_path())
    row = dict(zip(header, ["Adelie", "Torgersen", "39.1", "18.7", "181", "3750", "male",
                            "2007"]))
    row["bill_length_mm"] = "long"
    with pytest.raises(InputDataError, match=r"gs://b/d\.csv: column 'bill_length_mm' .*'long'"):
        list(data_lib.parse_csv_lines("gs://b/d.csv", header,
                                      [",".join(row[h] for h in header)], spec))


def test_a_missing_column_is_refused_at_launch_naming_the_file(tmp_path):
    import apache_beam as beam

    path = tmp_path / "no_label.csv"
    path.write_text("island,bill_length_mm\nTorgersen,39.1\n")
    spec = load_problem(PENGUINS_PROBLEM)
    with pytest.raises(InputDataError, match=r"no_label\.csv: missing required column"):
        beam_io.read_tracked_batches(beam.Pipeline(), str(path), spec)


def test_trackers_merged_from_shares_equal_one_tracker_over_all_rows():
    spec = load_problem(PENGUINS_PROBLEM)
    whole = data_lib.ColumnTracker(spec)
    parts = [data_lib.ColumnTracker(spec), data_lib.ColumnTracker(spec)]
    path = data_lib.bundled_penguins_path()
    for i, batch in enumerate(data_lib.iter_batches(path, spec, batch_rows=100)):
        whole.update(path, batch, None)
        parts[i % 2].update(path, batch, None)
    parts[0].merge(parts[1])
    assert parts[0].to_json() == whole.to_json()
    assert whole.rows == 344 and whole.nulls["sex"] == 11
    again = data_lib.ColumnTracker.from_json(spec, json.loads(json.dumps(whole.to_json())))
    assert again.to_json() == whole.to_json()


def test_run_local_preflight_refuses_beam_args_that_cannot_run(tmp_path):
    """kfp-ct run-local checks the Beam options before the run starts (no task runs)."""
    from kfp_ct.components.validate.preflight import check_training_inputs

    common = dict(data_path="bundled:penguins", problem=PENGUINS_PROBLEM, thresholds="",
                  slices=[], train_steps=10, push_destination=str(tmp_path / "serving"))
    with pytest.raises(beam_io.BeamArgsError, match=r"'DataflowRunner'.*--temp_location"):
        check_training_inputs(**common, beam_args=["--runner=DataflowRunner", "--project=p"])
    with pytest.raises(beam_io.BeamArgsError,
                       match=r"cannot parse .*--direct_num_workers: invalid int value: 'two'"):
        check_training_inputs(**common, beam_args=["--direct_num_workers=two"])
    check_training_inputs(**common, beam_args=MULTI)  # the local multi-process example
    assert not (tmp_path / "serving").exists() or not any((tmp_path / "serving").iterdir())


@pytest.mark.parametrize("expression,fails", [
    ('outputs["bill_length_mm"] / 2.0', False),
    ('1.0 / tf.maximum(outputs["bill_length_mm"], 0.0)', True),  # +inf in some rows
])
def test_a_user_module_runs_in_beam_workers_and_its_faults_arrive_as_ours(tmp_path, expression,
                                                                         fails):
    """The workers are other processes: the user module (imported under a private name)
    must reach them by value, and an error of ours raised there must reach the caller as
    itself, not as the runner's RuntimeError."""
    from kfp_ct.components.common.errors import ProblemSpecError
    from kfp_ct.components.transform.logic import run_transform

    module = tmp_path / "user_module.py"
    module.write_text(extended_module(PENGUINS_PROBLEM, "ratio", expression))
    spec = json.loads(PENGUINS_PROBLEM)  # the spec's text
    spec["module_file"] = str(module)
    out = {k: str(tmp_path / "out" / k) for k in ("graph", "examples", "raw")}
    work = ["--temp_location=" + str(tmp_path / "work")]
    if not fails:
        result = run_transform(data_lib.BUNDLED_PENGUINS, json.dumps(spec), out["graph"],
                               out["examples"], out["raw"], beam_args=MULTI + work)
        assert "ratio" in result.transformed_features
        assert result.train_rows + result.eval_rows == 344
        return
    with pytest.raises(ProblemSpecError) as info:
        run_transform(data_lib.BUNDLED_PENGUINS, json.dumps(spec), out["graph"],
                      out["examples"], out["raw"], beam_args=MULTI + work)
    message = str(info.value)
    assert message.startswith(f"preprocessing_fn of {module} gave the transformed feature "
                              f"'ratio' values that are not finite")
    assert "while running" not in message and "Traceback" not in message
    assert not os.path.exists(out["examples"])


def test_worker_errors_unwraps_only_our_errors():
    from kfp_ct.components.common.errors import InputDataError as Ours

    worker = ("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
              "kfp_ct.components.common.errors.InputDataError: gs://b/d.csv: column 'x' is declared "
              "numeric but holds the value 'long' [while running 'Read/Parse']\n")
    with pytest.raises(Ours, match=r"^gs://b/d\.csv: column 'x' is declared numeric but "
                                   r"holds the value 'long'$"):
        with beam_io.worker_errors():
            raise RuntimeError(worker)
    with pytest.raises(RuntimeError, match="worker lost"):  # not ours: left as it is
        with beam_io.worker_errors():
            raise RuntimeError("worker lost\ncomponents.common.errors.NoSuchError: x")
    with pytest.raises(ValueError, match="plain"):
        with beam_io.worker_errors():
            raise ValueError("plain")
