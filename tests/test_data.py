"""kfp_ct.components.common.data: reading CSV / Parquet input, with InputDataError for bad input."""

import csv
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from kfp_ct.components.common import data
from kfp_ct.components.common.errors import InputDataError, LabelError
from kfp_ct.components.common.problem import load_problem

HERE = os.path.dirname(os.path.abspath(__file__))
PENGUINS_SPEC = os.path.join(os.path.dirname(HERE), "pipelines", "penguins", "problem.json")
PENGUIN_ROWS = 344


@pytest.fixture(scope="module")
def spec():
    return load_problem(PENGUINS_SPEC)


@pytest.fixture(scope="module")
def penguin_lines():
    with open(data.bundled_penguins_path(), newline="") as fh:
        return fh.read().splitlines()


def _write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _read_all(path, spec, **kwargs):
    batches = list(data.iter_batches(path, spec, **kwargs))
    return pa.Table.from_batches(batches).combine_chunks()


def _exhaust(path, spec, **kwargs):
    for _ in data.iter_batches(path, spec, **kwargs):
        pass


# ------------------------------------------------------------------ good input


def test_bundled_penguins_reads_all_rows_with_spec_types(spec):
    table = _read_all(data.BUNDLED_PENGUINS, spec)
    assert table.num_rows == PENGUIN_ROWS
    assert set(table.column_names) == set(spec.required_columns)
    assert "year" not in table.column_names  # undeclared columns are dropped
    for name in spec.numeric:
        assert table.schema.field(name).type == pa.float32()
    for name in spec.categorical + (spec.label,):
        assert table.schema.field(name).type == pa.string()
    # "NA" in the file is a missing value, not the text "NA"
    assert table.column("sex").null_count == 11
    assert table.column("bill_length_mm").null_count == 2
    assert set(table.column("species").to_pylist()) == {"Adelie", "Chinstrap", "Gentoo"}
    assert table.column("bill_length_mm")[0].as_py() == pytest.approx(39.1)


def test_tracker_counts_rows_and_nulls_on_penguins(spec):
    tracker = data.ColumnTracker(spec)
    _exhaust(data.BUNDLED_PENGUINS, spec, tracker=tracker)
    assert tracker.rows == PENGUIN_ROWS
    assert tracker.nulls["sex"] == 11
    assert tracker.nulls["species"] == 0
    tracker.check("penguins")  # no empty labels, no all-null feature: no error


def test_parquet_input_equals_csv_input(spec, tmp_path):
    raw = pacsv.read_csv(data.bundled_penguins_path(),
                         convert_options=pacsv.ConvertOptions(null_values=data.NULL_VALUES,
                                                              strings_can_be_null=True))
    # Written with the types pyarrow infers (int64 for flipper length, double for bill
    # length), so the reader must cast them to the spec's types.
    assert raw.schema.field("flipper_length_mm").type == pa.int64()
    parquet_path = tmp_path / "penguins.parquet"
    pq.write_table(raw, parquet_path)

    from_csv = _read_all(data.BUNDLED_PENGUINS, spec)
    from_parquet = _read_all(str(parquet_path), spec)
    assert from_parquet.num_rows == PENGUIN_ROWS
    assert from_parquet.select(sorted(from_csv.column_names)).equals(
        from_csv.select(sorted(from_csv.column_names)))
    # The same rows land in the same split whatever the format.
    np.testing.assert_array_equal(
        data.eval_mask(from_csv.to_batches()[0], spec),
        data.eval_mask(from_parquet.to_batches()[0], spec))


def test_folder_of_several_csv_files_reads_every_row_in_name_order(spec, penguin_lines, tmp_path):
    header, rows = penguin_lines[0], penguin_lines[1:]
    folder = tmp_path / "parts"
    folder.mkdir()
    _write_lines(folder / "part-2.csv", [header] + rows[200:])
    _write_lines(folder / "part-1.csv", [header] + rows[100:200])
    _write_lines(folder / "part-0.csv", [header] + rows[:100])
    (folder / "README.txt").write_text("not data")  # ignored: not .csv / .parquet
    (folder / "_SUCCESS").write_text("")
    assert data.resolve_inputs(str(folder)) == [str(folder / f"part-{i}.csv") for i in range(3)]
    table = _read_all(str(folder), spec)
    whole = _read_all(data.BUNDLED_PENGUINS, spec)
    assert table.num_rows == PENGUIN_ROWS
    assert table.equals(whole)


def test_glob_of_several_csv_files_reads_every_matching_file(spec, penguin_lines, tmp_path):
    header, rows = penguin_lines[0], penguin_lines[1:]
    _write_lines(tmp_path / "a.csv", [header] + rows[:150])
    _write_lines(tmp_path / "b.csv", [header] + rows[150:])
    _write_lines(tmp_path / "other.csv.bak", [header] + rows[:5])
    table = _read_all(str(tmp_path / "*.csv"), spec)
    assert table.num_rows == PENGUIN_ROWS
    assert table.equals(_read_all(data.BUNDLED_PENGUINS, spec))


def test_folder_mixing_csv_and_parquet_is_rejected(spec, penguin_lines, tmp_path):
    _write_lines(tmp_path / "a.csv", penguin_lines[:10])
    pq.write_table(pa.table({"x": [1]}), tmp_path / "b.parquet")
    with pytest.raises(InputDataError, match="mixes CSV and Parquet"):
        data.resolve_inputs(str(tmp_path))


def test_eval_mask_is_deterministic_and_independent_of_batch_boundaries(spec):
    small = np.concatenate([data.eval_mask(b, spec)
                            for b in data.iter_batches(data.BUNDLED_PENGUINS, spec, batch_rows=7)])
    big_batches = list(data.iter_batches(data.BUNDLED_PENGUINS, spec, batch_rows=1000))
    big = np.concatenate([data.eval_mask(b, spec) for b in big_batches])
    again = np.concatenate([data.eval_mask(b, spec) for b in big_batches])
    assert small.shape == big.shape == (PENGUIN_ROWS,)
    np.testing.assert_array_equal(small, big)
    np.testing.assert_array_equal(big, again)
    # The CSV reader's blocks are large; cut the same rows into 7-row batches explicitly.
    table = _read_all(data.BUNDLED_PENGUINS, spec)
    sliced = [table.slice(i, 7).to_batches()[0] for i in range(0, PENGUIN_ROWS, 7)]
    assert len(sliced) == 50
    np.testing.assert_array_equal(np.concatenate([data.eval_mask(b, spec) for b in sliced]), big)
    # Per-row: a single row on its own lands in the same split.
    singles = [bool(data.eval_mask(table.slice(i, 1).to_batches()[0], spec)[0])
               for i in range(0, PENGUIN_ROWS, 17)]
    assert singles == list(big[::17])


def test_eval_mask_of_parquet_read_in_small_batches_matches_csv(spec, tmp_path):
    parquet_path = tmp_path / "penguins.parquet"
    pq.write_table(_read_all(data.BUNDLED_PENGUINS, spec), parquet_path)
    batches = list(data.iter_batches(str(parquet_path), spec, batch_rows=7))
    assert len(batches) == 50 and max(b.num_rows for b in batches) == 7
    small = np.concatenate([data.eval_mask(b, spec) for b in batches])
    whole = data.eval_mask(_read_all(data.BUNDLED_PENGUINS, spec).to_batches()[0], spec)
    np.testing.assert_array_equal(small, whole)


def test_eval_fraction_on_penguins_is_near_eval_percent(spec):
    mask = np.concatenate([data.eval_mask(b, spec)
                           for b in data.iter_batches(data.BUNDLED_PENGUINS, spec)])
    fraction = mask.mean()
    assert 0.12 <= fraction <= 0.28, fraction
    assert 0 < mask.sum() < PENGUIN_ROWS


def test_eval_mask_follows_eval_percent(spec):
    import dataclasses

    batch = _read_all(data.BUNDLED_PENGUINS, spec).to_batches()[0]
    low = data.eval_mask(batch, dataclasses.replace(spec, eval_percent=10))
    high = data.eval_mask(batch, dataclasses.replace(spec, eval_percent=50))
    assert low.sum() < high.sum()
    assert not (low & ~high).any()  # eval at 10% is a subset of eval at 50%


def test_eval_mask_with_key_column_keeps_equal_keys_together(spec):
    import dataclasses

    keyed = dataclasses.replace(spec, key="island")
    batch = _read_all(data.BUNDLED_PENGUINS, keyed).to_batches()[0]
    mask = data.eval_mask(batch, keyed)
    islands = batch.column(batch.schema.get_field_index("island")).to_pylist()
    for island in set(islands):
        in_eval = {bool(m) for m, i in zip(mask, islands) if i == island}
        assert len(in_eval) == 1, island


# ------------------------------------------------------------------- bad input


def test_missing_path_names_the_path(spec, tmp_path):
    path = str(tmp_path / "no_such.csv")
    with pytest.raises(InputDataError) as info:
        _exhaust(path, spec)
    assert path in str(info.value)
    assert "no such file" in str(info.value)


def test_empty_data_path_is_rejected(spec):
    with pytest.raises(InputDataError, match="empty"):
        _exhaust("  ", spec)


def test_glob_matching_nothing_names_the_pattern(spec, tmp_path):
    pattern = str(tmp_path / "*.csv")
    with pytest.raises(InputDataError) as info:
        _exhaust(pattern, spec)
    assert pattern in str(info.value)
    assert "matches no file" in str(info.value)


def test_folder_with_no_csv_names_the_folder(spec, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(InputDataError) as info:
        _exhaust(str(tmp_path), spec)
    assert str(tmp_path) in str(info.value)
    assert "no .csv or .parquet" in str(info.value)


def test_file_of_unknown_format_is_rejected(spec, tmp_path):
    path = tmp_path / "penguins.json"
    path.write_text("{}")
    with pytest.raises(InputDataError) as info:
        _exhaust(str(path), spec)
    assert str(path) in str(info.value)
    assert "format" in str(info.value)


def test_header_only_csv_names_the_file(spec, penguin_lines, tmp_path):
    path = _write_lines(tmp_path / "header_only.csv", penguin_lines[:1])
    with pytest.raises(InputDataError) as info:
        _exhaust(path, spec)
    assert path in str(info.value)
    assert "no data rows" in str(info.value)


def test_empty_file_names_the_file(spec, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(InputDataError) as info:
        _exhaust(str(path), spec)
    assert str(path) in str(info.value)
    assert "empty" in str(info.value)


def _without_column(lines, column):
    rows = list(csv.reader(lines))
    idx = rows[0].index(column)
    return [",".join(r[:idx] + r[idx + 1:]) for r in rows]


def test_missing_label_column_names_file_and_label(spec, penguin_lines, tmp_path):
    path = _write_lines(tmp_path / "no_label.csv", _without_column(penguin_lines, "species"))
    with pytest.raises(InputDataError) as info:
        _exhaust(path, spec)
    message = str(info.value)
    assert path in message
    assert "'species' (label)" in message


def test_missing_feature_column_names_file_and_feature(spec, penguin_lines, tmp_path):
    path = _write_lines(tmp_path / "no_mass.csv", _without_column(penguin_lines, "body_mass_g"))
    with pytest.raises(InputDataError) as info:
        _exhaust(path, spec)
    message = str(info.value)
    assert path in message
    assert "'body_mass_g' (feature)" in message


def test_missing_column_in_parquet_names_file_and_column(spec, tmp_path):
    path = tmp_path / "no_sex.parquet"
    pq.write_table(pa.table({"species": ["Adelie"], "island": ["Dream"], "bill_length_mm": [1.0],
                             "bill_depth_mm": [1.0], "flipper_length_mm": [1.0],
                             "body_mass_g": [1.0]}), path)
    with pytest.raises(InputDataError) as info:
        _exhaust(str(path), spec)
    assert str(path) in str(info.value)
    assert "'sex'" in str(info.value)


def test_text_in_numeric_column_names_column_and_value(spec, penguin_lines, tmp_path):
    lines = list(penguin_lines)
    # line 31 (row 30): flipper length becomes text
    fields = lines[30].split(",")
    fields[4] = "abc"
    lines[30] = ",".join(fields)
    path = _write_lines(tmp_path / "bad_number.csv", lines)
    with pytest.raises(InputDataError) as info:
        _exhaust(path, spec)
    message = str(info.value)
    assert path in message
    assert "'flipper_length_mm'" in message
    assert "'abc'" in message


def test_text_in_numeric_column_found_in_a_later_batch(spec, penguin_lines, tmp_path):
    lines = list(penguin_lines)
    fields = lines[300].split(",")
    fields[2] = "forty"
    lines[300] = ",".join(fields)
    path = _write_lines(tmp_path / "late_bad_number.csv", lines)
    with pytest.raises(InputDataError) as info:
        _exhaust(path, spec, batch_rows=7)
    assert "'bill_length_mm'" in str(info.value)
    assert "'forty'" in str(info.value)


def test_text_in_numeric_parquet_column_names_column_and_value(spec, tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"species": ["Adelie", "Gentoo"], "island": ["Dream", "Biscoe"],
                             "bill_length_mm": ["39.1", "lots"], "bill_depth_mm": [1.0, 2.0],
                             "flipper_length_mm": [1, 2], "body_mass_g": [1.0, 2.0],
                             "sex": ["male", "female"]}), path)
    with pytest.raises(InputDataError) as info:
        _exhaust(str(path), spec)
    message = str(info.value)
    assert str(path) in message
    assert "'bill_length_mm'" in message
    assert "'lots'" in message


def test_all_null_feature_is_reported_by_the_tracker(spec, penguin_lines, tmp_path):
    rows = list(csv.reader(penguin_lines))
    idx = rows[0].index("bill_depth_mm")
    for r in rows[1:]:
        r[idx] = "NA" if len(r) % 2 else ""
    path = _write_lines(tmp_path / "no_depth.csv", [",".join(r) for r in rows])
    tracker = data.ColumnTracker(spec)
    with pytest.raises(InputDataError) as info:
        _exhaust(path, spec, tracker=tracker)
    message = str(info.value)
    assert path in message
    assert "bill_depth_mm" in message
    assert str(PENGUIN_ROWS) in message


def test_all_null_feature_is_not_raised_without_a_tracker(spec, penguin_lines, tmp_path):
    rows = list(csv.reader(penguin_lines))
    idx = rows[0].index("bill_depth_mm")
    for r in rows[1:]:
        r[idx] = ""
    path = _write_lines(tmp_path / "no_depth.csv", [",".join(r) for r in rows])
    assert _read_all(path, spec).num_rows == PENGUIN_ROWS


def test_rows_with_empty_label_name_the_count_and_the_line(spec, penguin_lines, tmp_path):
    lines = list(penguin_lines)
    for line_no in (5, 120):  # 1-based line numbers in the file (line 1 is the header)
        fields = lines[line_no - 1].split(",")
        fields[0] = ""
        lines[line_no - 1] = ",".join(fields)
    path = _write_lines(tmp_path / "no_species.csv", lines)
    tracker = data.ColumnTracker(spec)
    with pytest.raises(InputDataError) as info:
        _exhaust(path, spec, tracker=tracker, batch_rows=50)
    message = str(info.value)
    assert "2 row(s)" in message
    assert "'species'" in message
    assert "no_species.csv line 5" in message
    assert "no_species.csv line 120" in message
    assert tracker.empty_label_rows == [(path, 5), (path, 120)]


def test_empty_label_line_numbers_count_rows_of_earlier_batches(spec, penguin_lines, tmp_path):
    lines = list(penguin_lines)
    fields = lines[299].split(",")
    fields[0] = "NA"
    lines[299] = ",".join(fields)
    path = _write_lines(tmp_path / "late_na.csv", lines)
    with pytest.raises(InputDataError, match=r"1 row\(s\).*late_na.csv line 300"):
        # batch_rows is a hint to the CSV block size; the line number must not depend on it
        _exhaust(path, spec, tracker=data.ColumnTracker(spec), batch_rows=1)


def test_empty_label_row_numbers_add_up_across_batches(spec, tmp_path):
    table = _read_all(data.BUNDLED_PENGUINS, spec)
    species = table.column("species").to_pylist()
    species[100] = None
    table = table.set_column(table.schema.get_field_index("species"), "species",
                             pa.array(species, pa.string()))
    path = str(tmp_path / "null_label.parquet")
    pq.write_table(table, path)
    tracker = data.ColumnTracker(spec)
    with pytest.raises(InputDataError, match=r"1 row\(s\) have an empty label"):
        _exhaust(path, spec, tracker=tracker, batch_rows=7)
    assert tracker.empty_label_rows == [(path, 102)]  # row index 100 -> after 14 batches of 7
    assert tracker.rows == PENGUIN_ROWS


# ------------------------------------------------ non-finite numbers, null texts

def _with_cell(lines, line_no, column, value):
    """The CSV lines with ``column`` of 1-based ``line_no`` set to ``value``."""
    rows = list(csv.reader(lines))
    rows[line_no - 1][rows[0].index(column)] = value
    return [",".join(r) for r in rows]


@pytest.mark.parametrize("text", ["inf", "Infinity", "-inf", "-Infinity", "INF", "NaN", "nan",
                                  "1e39"])  # 1e39 is beyond float32: inf
def test_non_finite_csv_text_is_read_as_missing_and_counted(spec, penguin_lines, tmp_path, text):
    lines = _with_cell(penguin_lines, 7, "body_mass_g", text)
    lines = _with_cell(lines, 250, "body_mass_g", text)
    path = _write_lines(tmp_path / "odd_mass.csv", lines)
    tracker = data.ColumnTracker(spec)
    table = _read_all(path, spec, tracker=tracker, batch_rows=50)
    mass = table.column("body_mass_g")
    assert mass[5].as_py() is None and mass[248].as_py() is None  # lines 7 and 250
    assert pa.compute.all(pa.compute.is_finite(mass.drop_null())).as_py()
    found = tracker.nonfinite["body_mass_g"]
    assert found.count == 2
    assert found.first[:2] == (path, 7)
    assert tracker.nulls["body_mass_g"] == 2 + 2  # penguins' own two missing, plus these
    assert set(tracker.nonfinite) == {"body_mass_g"}
    assert f"{path} line 7" in found.describe() and "2 value(s)" in found.describe()


def test_non_finite_parquet_floats_are_read_as_missing_and_counted(spec, tmp_path):
    table = _read_all(data.BUNDLED_PENGUINS, spec)
    depth = table.column("bill_depth_mm").to_pylist()
    depth[3], depth[40], depth[41] = float("inf"), float("-inf"), float("nan")  # [3] was NA
    table = table.set_column(table.schema.get_field_index("bill_depth_mm"), "bill_depth_mm",
                             pa.array(depth, pa.float64()))
    path = str(tmp_path / "odd_depth.parquet")
    pq.write_table(table, path)
    tracker = data.ColumnTracker(spec)
    read = _read_all(path, spec, tracker=tracker, batch_rows=7)
    assert read.column("bill_depth_mm").null_count == 4  # one NA left, three read as missing
    found = tracker.nonfinite["bill_depth_mm"]
    assert (found.inf, found.nan) == (2, 1)
    assert found.first[:2] == (path, 5)  # row index 3: "row 4" of the file
    assert f"{path} row 4" in found.describe()


def _logical_table():
    """One small table, as CSV text cells and as Parquet columns of several types."""
    csv_rows = [  # species, island, sex, bill_length_mm, bill_depth_mm, flipper, mass
        ["Adelie", "Dream", "male", "39.1", "18.7", "181", "3750"],
        ["Adelie", "nan", "NA", "inf", "", "186", "3800"],
        ["Gentoo", "NaN", "", "NaN", "-inf", "NA", "4500"],
        ["Gentoo", "Biscoe", "None", "45.5", "1e39", "210", "null"],
        ["Chinstrap", "", "female", "-Infinity", "17.9", "195", "3650"],
        ["Chinstrap", "Dream", "female", "46.5", "nan", "192", "3500"],
        ["Adelie", "Torgersen", "male", "38.6", "21.2", "191", "3800"],
    ]
    none, inf, nan = None, float("inf"), float("nan")
    parquet = pa.table({
        "species": [r[0] for r in csv_rows],
        # text: null and the null texts are missing, as in CSV
        "island": ["Dream", "nan", "NaN", "Biscoe", None, "Dream", "Torgersen"],
        "sex": ["male", "NA", "", None, "female", "female", "male"],
        # numbers stored as text, as CSV holds them
        "bill_length_mm": ["39.1", "inf", "NaN", "45.5", "-Infinity", " 46.5 ", "38.6"],
        # doubles with non-finite values (1e39 overflows float32, as the CSV text does)
        "bill_depth_mm": pa.array([18.7, none, -inf, 1e39, 17.9, nan, 21.2], pa.float64()),
        "flipper_length_mm": pa.array([181, 186, none, 210, 195, 192, 191], pa.int64()),
        "body_mass_g": ["3750", "3800", "4500", "NA", "3650", "3500", "3800"],
    })
    header = ["species", "island", "sex", "bill_length_mm", "bill_depth_mm",
              "flipper_length_mm", "body_mass_g"]
    return header, csv_rows, parquet


def test_same_logical_table_reads_the_same_from_csv_and_parquet(spec, tmp_path):
    header, rows, parquet = _logical_table()
    csv_path = str(tmp_path / "t.csv")
    with open(csv_path, "w", newline="") as fh:
        csv.writer(fh).writerows([header] + rows)
    parquet_path = str(tmp_path / "t.parquet")
    pq.write_table(parquet, parquet_path)
    trackers = {p: data.ColumnTracker(spec) for p in (csv_path, parquet_path)}
    tables = {p: _read_all(p, spec, tracker=t) for p, t in trackers.items()}
    names = sorted(tables[csv_path].column_names)
    from_csv, from_parquet = (tables[p].select(names) for p in (csv_path, parquet_path))
    assert from_csv.equals(from_parquet), (from_csv.to_pylist(), from_parquet.to_pylist())
    assert from_csv.column("island").to_pylist() == [
        "Dream", None, None, "Biscoe", None, "Dream", "Torgersen"]
    assert from_csv.column("sex").null_count == 3
    assert from_csv.column("bill_length_mm").null_count == 3
    assert from_csv.column("bill_depth_mm").null_count == 4
    assert from_csv.column("bill_length_mm")[5].as_py() == pytest.approx(46.5)
    summary = {p: ({c: (n.inf, n.nan, n.first[1]) for c, n in t.nonfinite.items()}, t.nulls)
               for p, t in trackers.items()}
    assert summary[csv_path] == summary[parquet_path]
    assert summary[csv_path][0] == {"bill_length_mm": (2, 1, 3), "bill_depth_mm": (2, 1, 4)}
    np.testing.assert_array_equal(data.eval_mask(from_csv.to_batches()[0], spec),
                                  data.eval_mask(from_parquet.to_batches()[0], spec))


# ----------------------------------------------------------------------- labels

def _penguins_with_species(penguin_lines, species_of):
    rows = list(csv.reader(penguin_lines))
    for i, r in enumerate(rows[1:]):
        r[0] = species_of(i, r[0])
    return [",".join(r) for r in rows]


def test_single_class_label_names_the_label_the_class_and_the_rows(spec, penguin_lines, tmp_path):
    path = _write_lines(tmp_path / "adelie.csv",
                        _penguins_with_species(penguin_lines, lambda i, s: "Adelie"))
    with pytest.raises(LabelError) as info:
        _exhaust(path, spec, tracker=data.ColumnTracker(spec))
    message = str(info.value)
    assert isinstance(info.value, InputDataError)
    assert path in message and "'species'" in message and "'Adelie'" in message
    assert f"all {PENGUIN_ROWS} rows" in message and "at least 2 classes" in message


def test_single_class_in_the_training_split_is_refused(spec, tmp_path):
    from label_data import penguin_rows, with_class_in_split

    header, rows = penguin_rows()
    adelie = [r for r in rows if r[0] == "Adelie"]
    path, gentoo = with_class_in_split(tmp_path / "gentoo_in_eval.csv", "Gentoo", "eval",
                                       rows=4, every=3, base=(header, adelie))
    assert gentoo == 4
    with pytest.raises(LabelError) as info:
        _exhaust(path, spec, tracker=data.ColumnTracker(spec))
    message = str(info.value)
    assert "training split" in message and "'Adelie'" in message
    assert "{'Gentoo': 4}" in message and "'species'" in message


def test_class_only_in_the_eval_split_is_counted_not_refused(spec, tmp_path):
    from label_data import with_class_in_split

    path, n = with_class_in_split(tmp_path / "emperor.csv", "Emperor", "eval")
    assert n == 6
    tracker = data.ColumnTracker(spec)
    _exhaust(path, spec, tracker=tracker)  # no error
    assert tracker.eval_only_classes() == {"Emperor": 6}
    assert tracker.label_classes["Emperor"] == [0, 6]
    assert sum(sum(v) for v in tracker.label_classes.values()) == tracker.rows


def test_regression_label_that_is_not_finite_is_refused(penguin_lines, tmp_path):
    import dataclasses

    spec = load_problem(PENGUINS_SPEC)
    reg = dataclasses.replace(spec, label="body_mass_g", task="regression",
                              numeric=tuple(c for c in spec.numeric if c != "body_mass_g"),
                              categorical=spec.categorical + ("species",))
    lines = _with_cell(penguin_lines, 5, "body_mass_g", "3000")  # lines 5 and 273 were NA
    lines = _with_cell(lines, 273, "body_mass_g", "3000")
    path = _write_lines(tmp_path / "mass.csv", _with_cell(lines, 30, "body_mass_g", "inf"))
    with pytest.raises(LabelError) as info:
        _exhaust(path, reg, tracker=data.ColumnTracker(reg))
    message = str(info.value)
    assert "regression label 'body_mass_g'" in message and "not a finite number" in message
    assert f"{path} line 30" in message and "1 row(s)" in message


def test_regression_label_that_is_text_names_the_label(penguin_lines, tmp_path):
    import dataclasses

    spec = load_problem(PENGUINS_SPEC)
    reg = dataclasses.replace(spec, label="body_mass_g", task="regression",
                              numeric=tuple(c for c in spec.numeric if c != "body_mass_g"))
    path = _write_lines(tmp_path / "mass.csv",
                        _with_cell(penguin_lines, 30, "body_mass_g", "heavy"))
    with pytest.raises(LabelError, match=r"the label 'body_mass_g' is declared numeric but "
                                         r"holds the value 'heavy'"):
        _exhaust(path, reg)
    table = _read_all(data.BUNDLED_PENGUINS, spec)
    mass = table.column("body_mass_g").cast(pa.string()).to_pylist()
    mass[9] = "heavy"
    table = table.set_column(table.schema.get_field_index("body_mass_g"), "body_mass_g",
                             pa.array(mass, pa.string()))
    parquet = str(tmp_path / "mass.parquet")
    pq.write_table(table, parquet)
    with pytest.raises(LabelError, match=r"the label 'body_mass_g' .* 'heavy'"):
        _exhaust(parquet, reg)


def test_parquet_label_holding_a_null_text_is_an_empty_label(spec, tmp_path):
    table = _read_all(data.BUNDLED_PENGUINS, spec)
    species = table.column("species").to_pylist()
    species[20] = "NA"  # in CSV this text is a missing label: the same in Parquet
    table = table.set_column(table.schema.get_field_index("species"), "species",
                             pa.array(species, pa.string()))
    path = str(tmp_path / "na_label.parquet")
    pq.write_table(table, path)
    with pytest.raises(LabelError, match=rf"1 row\(s\) have an empty label 'species' "
                                         rf"\(first: {path} row 21\)"):
        _exhaust(path, spec, tracker=data.ColumnTracker(spec))


# ------------------------------------------- ambiguous input: never guessed (issue 21)


def _with_extra_column(penguin_lines, name, source_column):
    """The penguins lines with one more column called ``name`` holding ``source_column``."""
    rows = list(csv.reader(penguin_lines))
    at = rows[0].index(source_column)
    return [",".join(rows[0] + [name])] + [",".join(r + [r[at]]) for r in rows[1:]]


@pytest.mark.parametrize("name, column, words", [
    ("species", "island", "names it 2 times"),
    ("Species", "island", "differ from it only in case or blanks"),
    (" species ", "island", "differ from it only in case or blanks"),
    ("ISLAND", "sex", "differ from it only in case or blanks"),
    ("bill_length_mm", "bill_depth_mm", "names it 2 times"),
])
def test_a_spec_column_named_twice_in_a_csv_header_is_refused(spec, penguin_lines, tmp_path,
                                                               name, column, words):
    # The reader took the first of two 'species' columns: a model trained on whichever
    # it was could be blessed and pushed. Now nothing is read.
    path = _write_lines(tmp_path / "twice.csv", _with_extra_column(penguin_lines, name, column))
    with pytest.raises(InputDataError) as info:
        next(data.iter_batches(path, spec))
    message = str(info.value)
    assert path in message and "ambiguous" in message and words in message
    assert repr(name) in message and "column 9" in message, message


def test_a_column_named_twice_in_parquet_is_refused(spec, tmp_path):
    table = pacsv.read_csv(data.bundled_penguins_path())
    doubled = pa.Table.from_arrays(table.columns + [table.column("island")],
                                   names=table.column_names + ["species"])
    path = str(tmp_path / "twice.parquet")
    pq.write_table(doubled, path)
    with pytest.raises(InputDataError, match=r"ambiguous label 'species'.*2 times"):
        next(data.iter_batches(path, spec))


def test_unrelated_columns_named_alike_are_not_refused(spec, penguin_lines, tmp_path):
    lines = _with_extra_column(_with_extra_column(penguin_lines, "note", "island"), "NOTE", "sex")
    path = _write_lines(tmp_path / "notes.csv", lines)
    assert _read_all(path, spec).num_rows == PENGUIN_ROWS


def test_a_missing_column_with_a_near_name_says_names_must_match(spec, penguin_lines, tmp_path):
    lines = [penguin_lines[0].replace("island", "Island")] + penguin_lines[1:]
    path = _write_lines(tmp_path / "case.csv", lines)
    with pytest.raises(InputDataError, match=r"'island' \(feature\) \(the file has 'Island'"):
        next(data.iter_batches(path, spec))


def test_a_utf8_byte_order_mark_is_not_part_of_the_first_name(spec, penguin_lines, tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(penguin_lines).encode() + b"\n")
    assert _read_all(str(path), spec).num_rows == PENGUIN_ROWS


def test_parquet_files_that_disagree_on_a_column_type_are_refused(spec, tmp_path):
    table = pacsv.read_csv(data.bundled_penguins_path())
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(table.slice(0, 200), str(folder / "a.parquet"))
    as_text = table.slice(200).set_column(
        table.column_names.index("bill_length_mm"), "bill_length_mm",
        table.slice(200).column("bill_length_mm").cast(pa.string()))
    pq.write_table(as_text, str(folder / "b.parquet"))
    expected = (r"b\.parquet: column 'bill_length_mm' holds text values \(type string\) but "
                r".*a\.parquet holds it as number")
    with pytest.raises(InputDataError, match=expected):
        _exhaust(str(folder), spec)
    from kfp_ct.components.validate.preflight import check_data_columns

    with pytest.raises(InputDataError, match=expected):  # before any task, footers only
        check_data_columns(str(folder), spec)


def _split_files(penguin_lines, folder, change_second):
    """The penguins rows in two files; ``change_second(row, header)`` edits the second's."""
    rows = list(csv.reader(penguin_lines))
    folder.mkdir()
    for name, part in (("a.csv", rows[1:180]), ("b.csv", rows[180:])):
        if name == "b.csv":
            part = [change_second(list(r), rows[0]) for r in part]
        with open(folder / name, "w", newline="") as fh:
            csv.writer(fh).writerows([rows[0]] + part)
    return str(folder)


def _set(column, value):
    def change(row, header):
        row[header.index(column)] = value(row[header.index(column)])
        return row
    return change


@pytest.mark.parametrize("column, value, words", [
    ("island", lambda v: str(len(v)), "holds words in .*a.csv .*'Torgersen'.* but whole "
                                      "numbers written without a decimal point in .*b.csv"),
    ("sex", lambda v: "1.5" if v == "male" else "2.5", "holds words in .* but numbers in"),
])
def test_a_text_column_of_words_in_one_file_and_numbers_in_another_is_refused(
        spec, penguin_lines, tmp_path, column, value, words):
    folder = _split_files(penguin_lines, tmp_path / "parts", _set(column, value))
    tracker = data.ColumnTracker(spec)
    with pytest.raises(InputDataError, match=f"column '{column}' \\(read as text\\) {words}"):
        _exhaust(folder, spec, tracker=tracker)


def test_a_label_written_1_in_one_file_and_1_0_in_another_is_refused(tmp_path):
    # "1" and "1.0" are one class to a person and two to a text label.
    spec = load_problem('{"label": "y", "numeric": ["x"]}')
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "a.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(60)))
    (folder / "b.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}.0\n" for i in range(60)))
    with pytest.raises(InputDataError,
                       match=r"the label 'y' \(read as text\) holds whole numbers written "
                             r"without a decimal point in .*a\.csv \(e\.g\. '0'\) but whole "
                             r"numbers written with a decimal point in .*b\.csv \(e\.g\. '0\.0'\)"):
        _exhaust(str(folder), spec, tracker=data.ColumnTracker(spec))


def test_text_columns_that_agree_across_files_are_read(spec, penguin_lines, tmp_path):
    # Mixed words and numbers inside one file, and numbers of any shape in every file,
    # leave nothing to guess across files.
    folder = _split_files(penguin_lines, tmp_path / "parts",
                          _set("island", lambda v: v if v != "Dream" else "7"))
    tracker = data.ColumnTracker(spec)
    _exhaust(folder, spec, tracker=tracker)
    assert tracker.rows == PENGUIN_ROWS
    again = data.ColumnTracker.from_json(spec, tracker.to_json())  # the Beam path's merge
    merged = data.ColumnTracker(spec)
    merged.merge(again)
    assert merged.shapes == tracker.shapes


def test_a_non_utf8_csv_names_line_column_bytes_and_encoding(spec, penguin_lines, tmp_path):
    lines = list(penguin_lines)
    lines[40] = lines[40].replace("Torgersen", "Torgersen Île", 1).replace("Dream", "Dréam", 1)
    path = tmp_path / "latin.csv"
    path.write_bytes("\n".join(lines).encode("cp1252") + b"\n")
    with pytest.raises(InputDataError) as info:
        _exhaust(str(path), spec)
    message = str(info.value)
    assert message.startswith(f"{path} line 41, column 'island': not UTF-8 text"), message
    assert "\\xe9am" in message  # the escaped byte of "é", in its context
    assert "iconv -f cp1252 -t utf-8" in message
