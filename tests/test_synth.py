"""The penguins-like generator: seeded, exact, shaped like the real data."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from kfp_ct.pipelines.entrypoints import synth

N = 40_000  # large enough for proportions, small enough to stay well under a second
CHUNK = 7_000  # not a divisor of N: the last chunk is partial


@pytest.fixture(scope="module")
def real() -> pd.DataFrame:
    return synth.load_real_penguins()


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> pd.DataFrame:
    path = tmp_path_factory.mktemp("synth") / "penguins.csv"
    synth.write_penguins_like(path, N, seed=7, chunk_rows=CHUNK)
    return pd.read_csv(path)


def test_real_data_loads_even_without_pkg_resources(monkeypatch, real):
    # palmerpenguins 0.1.4 imports pkg_resources, gone from setuptools 81+.
    monkeypatch.setitem(sys.modules, "pkg_resources", None)
    for name in [m for m in sys.modules if m.split(".")[0] == "palmerpenguins"]:
        monkeypatch.delitem(sys.modules, name)
    pd.testing.assert_frame_equal(synth.load_real_penguins(), real)


def read(path, fmt):
    return pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path)


@pytest.mark.parametrize("fmt", synth.FORMATS)
def test_same_seed_gives_identical_bytes(tmp_path, fmt):
    a, b = tmp_path / f"a.{fmt}", tmp_path / f"b.{fmt}"
    synth.write_penguins_like(a, 5_000, seed=3, fmt=fmt, chunk_rows=1_000)
    synth.write_penguins_like(b, 5_000, seed=3, fmt=fmt, chunk_rows=1_000)
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("fmt", synth.FORMATS)
def test_different_seed_gives_different_rows(tmp_path, fmt):
    a, b = tmp_path / f"a.{fmt}", tmp_path / f"b.{fmt}"
    synth.write_penguins_like(a, 2_000, seed=1, fmt=fmt)
    synth.write_penguins_like(b, 2_000, seed=2, fmt=fmt)
    assert a.read_bytes() != b.read_bytes()
    assert not read(a, fmt).equals(read(b, fmt))


@pytest.mark.parametrize("fmt", synth.FORMATS)
@pytest.mark.parametrize("n_rows", [0, 1, 999, 1_000, 2_503])
def test_row_count_is_exact_across_partial_chunks(tmp_path, fmt, n_rows):
    path = tmp_path / f"p.{fmt}"
    synth.write_penguins_like(path, n_rows, seed=0, fmt=fmt, chunk_rows=1_000)
    assert len(read(path, fmt)) == n_rows


@pytest.mark.parametrize("fmt", synth.FORMATS)
def test_columns_and_dtypes_match_palmerpenguins(tmp_path, real, fmt):
    path = tmp_path / f"p.{fmt}"
    synth.write_penguins_like(path, 3_000, seed=0, fmt=fmt)
    frame = read(path, fmt)
    assert list(frame.columns) == list(real.columns) == list(synth.COLUMNS)
    assert frame.dtypes.to_dict() == real.dtypes.to_dict()


def test_csv_and_parquet_hold_the_same_rows(tmp_path):
    synth.write_penguins_like(tmp_path / "p.csv", 3_000, seed=5, fmt="csv")
    synth.write_penguins_like(tmp_path / "p.parquet", 3_000, seed=5, fmt="parquet")
    pd.testing.assert_frame_equal(read(tmp_path / "p.csv", "csv"), read(tmp_path / "p.parquet", "parquet"))


def test_species_proportions_are_near_the_real_ones(generated, real):
    got = generated["species"].value_counts(normalize=True)
    want = real["species"].value_counts(normalize=True)
    assert set(got.index) == set(want.index)
    for species, p in want.items():
        assert got[species] == pytest.approx(p, abs=0.015), species


def test_categories_stay_within_the_real_ones(generated, real):
    for column in ("island", "sex", "year"):
        assert set(generated[column].dropna()) == set(real[column].dropna()), column
    real_pairs = set(zip(real["species"], real["island"]))
    assert set(zip(generated["species"], generated["island"])) <= real_pairs  # Gentoo only on Biscoe


def test_missing_fraction_is_within_the_real_band(generated, real):
    for column in synth.NUMERIC_COLUMNS + ("sex",):
        got, want = generated[column].isna().mean(), real[column].isna().mean()
        assert 0.002 < got < 0.05, (column, got)
        assert got == pytest.approx(want, abs=0.006), (column, got, want)
    assert generated[["species", "island", "year"]].notna().all().all()
    unmeasured = generated[list(synth.NUMERIC_COLUMNS)].isna()
    assert (unmeasured.all(axis=1) == unmeasured.any(axis=1)).all(), "measurements go missing together"


def test_measurements_follow_each_species(generated, real):
    got = generated.groupby("species")[list(synth.NUMERIC_COLUMNS)].agg(["mean", "std"])
    want = real.groupby("species")[list(synth.NUMERIC_COLUMNS)].agg(["mean", "std"])
    for species in want.index:
        for column in synth.NUMERIC_COLUMNS:
            mean, std = want.loc[species, (column, "mean")], want.loc[species, (column, "std")]
            assert got.loc[species, (column, "mean")] == pytest.approx(mean, abs=0.1 * std)
            assert got.loc[species, (column, "std")] == pytest.approx(std, rel=0.2)


def test_measurements_have_the_real_resolution(generated):
    for column in ("bill_length_mm", "bill_depth_mm"):
        tenths = generated[column].dropna() * 10
        assert (tenths - tenths.round()).abs().max() < 1e-6, column
    assert (generated["flipper_length_mm"].dropna() % 1 == 0).all()
    assert (generated["body_mass_g"].dropna() % 25 == 0).all()


@pytest.mark.parametrize(
    "kwargs",
    [{"fmt": "json"}, {"n_rows": -1}, {"n_rows": 1.5}, {"chunk_rows": 0}],
    ids=["unknown-format", "negative-rows", "fractional-rows", "zero-chunk"],
)
def test_bad_arguments_are_refused_before_writing(tmp_path, kwargs):
    args = {"path": tmp_path / "x.csv", "n_rows": 10, **kwargs}
    with pytest.raises(ValueError):
        synth.write_penguins_like(**args)
    assert not (tmp_path / "x.csv").exists()


def test_command_line_writes_parquet_with_seed(tmp_path, capsys):
    out = tmp_path / "cli.parquet"
    assert synth.main([str(out), "1234", "--seed", "9", "--format", "parquet"]) == 0
    assert "1234 rows" in capsys.readouterr().out
    again = tmp_path / "again.parquet"
    synth.write_penguins_like(again, 1234, seed=9, fmt="parquet")
    assert out.read_bytes() == again.read_bytes()


# --- Shifts for performance monitoring: concept and covariate ---------------------------

SHIFT_N = 20_000
FEATURES = [c for c in synth.COLUMNS if c != "species"]


def arrow(path, fmt="csv"):
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    return pq.read_table(path) if fmt == "parquet" else pacsv.read_csv(path)


@pytest.fixture(scope="module")
def unshifted_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("shifts") / "none.csv"
    synth.write_penguins_like(path, SHIFT_N, seed=12, chunk_rows=CHUNK)
    return path


def species_by_bin_gaps(a: pd.DataFrame, b: pd.DataFrame, feature="bill_length_mm", width=1.0):
    """Per bin of ``feature`` (both sides >= 200 rows): |P_a(species | bin) - P_b(...)|
    and its allowed size (4.5 standard errors + 0.02 for the tilt inside a bin)."""
    gaps = []
    for lo in np.arange(a[feature].min() // width * width, a[feature].max(), width):
        ina = a[(a[feature] >= lo) & (a[feature] < lo + width)]
        inb = b[(b[feature] >= lo) & (b[feature] < lo + width)]
        if len(ina) < 200 or len(inb) < 200:
            continue
        for species in sorted(set(a["species"])):
            pa_, pb = (ina["species"] == species).mean(), (inb["species"] == species).mean()
            p = (pa_ * len(ina) + pb * len(inb)) / (len(ina) + len(inb))
            se = np.sqrt(p * (1 - p) * (1 / len(ina) + 1 / len(inb)))
            gaps.append((lo, species, abs(pa_ - pb), 4.5 * se + 0.02))
    assert len(gaps) >= 30, "too few populated bins to compare"
    return gaps


@pytest.mark.parametrize("strength", [0.05, 0.3])
def test_concept_changes_only_labels_by_the_strength_share(tmp_path, unshifted_path, strength):
    path = tmp_path / "concept.csv"
    synth.write_penguins_like(path, SHIFT_N, seed=12, chunk_rows=CHUNK, shift="concept",
                              strength=strength)
    before, after = arrow(unshifted_path), arrow(path)
    assert after.schema == before.schema
    for column in FEATURES:  # the features are the unshifted draw's, exactly
        assert after.column(column).equals(before.column(column)), column
    old = np.array(before.column("species").to_pylist())
    new = np.array(after.column("species").to_pylist())
    changed = old != new
    tolerance = 4 * np.sqrt(strength * (1 - strength) / SHIFT_N)
    assert changed.mean() == pytest.approx(strength, abs=tolerance)
    assert set(new) == set(old)
    # A changed label is drawn uniformly among the two other species.
    for species in set(old):
        moved = new[changed & (old == species)]
        others = sorted(set(old) - {species})
        share = (moved == others[0]).mean()
        assert share == pytest.approx(0.5, abs=4 * np.sqrt(0.25 / len(moved))), species


def test_concept_strength_zero_and_one(tmp_path, unshifted_path):
    zero, one = tmp_path / "zero.csv", tmp_path / "one.csv"
    synth.write_penguins_like(zero, SHIFT_N, seed=12, chunk_rows=CHUNK, shift="concept",
                              strength=0.0)
    assert zero.read_bytes() == unshifted_path.read_bytes()
    synth.write_penguins_like(one, 3_000, seed=12, chunk_rows=CHUNK, shift="concept",
                              strength=1.0)
    base = pd.read_csv(unshifted_path).head(3_000)
    assert (pd.read_csv(one)["species"] != base["species"]).all()


@pytest.fixture(scope="module")
def covariate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("covariate")
    frames = {}
    for strength in (1.0, -1.0):
        path = folder / f"{strength}.csv"
        synth.write_penguins_like(path, SHIFT_N, seed=12, chunk_rows=CHUNK, shift="covariate",
                                  strength=strength)
        frames[strength] = pd.read_csv(path)
    return frames


def test_covariate_moves_the_feature_in_the_strength_direction(covariate, unshifted_path):
    base = pd.read_csv(unshifted_path)
    sd = base["bill_length_mm"].std()
    assert len(covariate[1.0]) == len(covariate[-1.0]) == SHIFT_N
    up = (covariate[1.0]["bill_length_mm"].mean() - base["bill_length_mm"].mean()) / sd
    down = (covariate[-1.0]["bill_length_mm"].mean() - base["bill_length_mm"].mean()) / sd
    assert 0.6 < up < 1.0 and -1.0 < down < -0.6, (up, down)
    # The label mix follows the features (long bills: fewer Adelie)...
    share = {k: (v["species"] == "Adelie").mean() for k, v in covariate.items()}
    assert share[1.0] < (base["species"] == "Adelie").mean() - 0.2 < share[-1.0] - 0.4


@pytest.mark.parametrize("strength", [1.0, -1.0])
def test_covariate_keeps_p_species_given_the_feature(covariate, unshifted_path, strength):
    # ... but not the labelling rule: P(species | bill length bin) is the unshifted one.
    base = pd.read_csv(unshifted_path)
    for lo, species, gap, allowed in species_by_bin_gaps(base, covariate[strength]):
        assert gap <= allowed, (lo, species, gap, allowed)


def test_the_conditional_check_sees_a_concept_shift(tmp_path, unshifted_path):
    # The check above has power: it fails for a concept shift of 0.2.
    path = tmp_path / "concept.csv"
    synth.write_penguins_like(path, SHIFT_N, seed=12, chunk_rows=CHUNK, shift="concept",
                              strength=0.2)
    gaps = species_by_bin_gaps(pd.read_csv(unshifted_path), pd.read_csv(path))
    assert sum(gap > allowed for _, _, gap, allowed in gaps) >= 10


@pytest.mark.parametrize("fmt", synth.FORMATS)
def test_covariate_strength_zero_is_the_unshifted_output(tmp_path, fmt):
    a, b = tmp_path / f"a.{fmt}", tmp_path / f"b.{fmt}"
    synth.write_penguins_like(a, 2_503, seed=3, fmt=fmt, chunk_rows=1_000)
    synth.write_penguins_like(b, 2_503, seed=3, fmt=fmt, chunk_rows=1_000, shift="covariate",
                              strength=0.0)
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("fmt", synth.FORMATS)
@pytest.mark.parametrize("n_rows", [0, 1, 2_503])
def test_covariate_is_exact_deterministic_and_chunked(tmp_path, fmt, n_rows):
    a, b = tmp_path / f"a.{fmt}", tmp_path / f"b.{fmt}"
    for path in (a, b):
        synth.write_penguins_like(path, n_rows, seed=5, fmt=fmt, chunk_rows=1_000,
                                  shift="covariate", strength=-2.5, feature="body_mass_g")
    assert a.read_bytes() == b.read_bytes()
    assert len(read(a, fmt)) == n_rows
    if fmt == "parquet":
        import pyarrow.parquet as pq

        assert pq.ParquetFile(a).num_row_groups == -(-n_rows // 1_000)


# --- Key column and labels apart ---------------------------------------------------------

@pytest.mark.parametrize("fmt", synth.FORMATS)
@pytest.mark.parametrize("shift", ["none", "concept", "covariate", "label", "missing_column"])
def test_labels_apart_join_back_to_the_inline_table(tmp_path, fmt, shift):
    kw = {"seed": 8, "fmt": fmt, "chunk_rows": 700, "shift": shift, "key_column": "row_id"}
    inline, main, labels = (tmp_path / f"{name}.{fmt}" for name in ("inline", "main", "labels"))
    synth.write_penguins_like(inline, 1_800, **kw)
    synth.write_penguins_like(main, 1_800, labels_path=labels, **kw)
    whole, features, truth = read(inline, fmt), read(main, fmt), read(labels, fmt)
    assert whole.columns[0] == features.columns[0] == "row_id"
    assert "species" not in features.columns
    assert list(truth.columns) == ["row_id", "species"]
    assert whole["row_id"].is_unique and len(whole) == 1_800
    assert whole["row_id"].iloc[[0, -1]].tolist() == ["8-0", "8-1799"]
    assert truth["row_id"].tolist() == features["row_id"].tolist()  # same row order
    joined = features.merge(truth, on="row_id", validate="one_to_one")[list(whole.columns)]
    pd.testing.assert_frame_equal(joined, whole)
    # The key only adds a column: the rest is the keyless output.
    plain = tmp_path / f"plain.{fmt}"
    synth.write_penguins_like(plain, 1_800, **{**kw, "key_column": ""})
    pd.testing.assert_frame_equal(whole.drop(columns="row_id"), read(plain, fmt))


@pytest.mark.parametrize("fmt", synth.FORMATS)
def test_labels_apart_with_no_rows_write_both_headers(tmp_path, fmt):
    main, labels = tmp_path / f"m.{fmt}", tmp_path / f"l.{fmt}"
    synth.write_penguins_like(main, 0, fmt=fmt, key_column="id", labels_path=labels)
    assert list(read(labels, fmt).columns) == ["id", "species"]
    assert read(main, fmt).columns[0] == "id" and len(read(main, fmt)) == 0


def test_command_line_key_and_labels(tmp_path, capsys):
    out, labels = tmp_path / "w.parquet", tmp_path / "truth.parquet"
    assert synth.main([str(out), "900", "--seed", "4", "--shift", "concept", "--strength",
                       "0.05", "--key", "id", "--labels", str(labels)]) == 0
    assert str(labels) in capsys.readouterr().out
    again, again_labels = tmp_path / "again.parquet", tmp_path / "again_truth.parquet"
    synth.write_penguins_like(again, 900, seed=4, fmt="parquet", shift="concept",
                              strength=0.05, key_column="id", labels_path=again_labels)
    assert out.read_bytes() == again.read_bytes()
    assert labels.read_bytes() == again_labels.read_bytes()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"labels_path": "LABELS"}, "labels_path needs key_column"),
        ({"key_column": "species"}, "clashes with a data column"),
        ({"key_column": "island", "labels_path": "LABELS"}, "clashes with a data column"),
        ({"key_column": "id", "labels_path": "OUT"}, "must differ from the output"),
        ({"key_column": "id", "labels_path": "LABELS", "shift": "missing_column",
          "feature": "species"}, "missing_column shift of 'species' drops"),
        ({"shift": "concept", "strength": 1.2}, r"share of rows in \[0, 1\]"),
        ({"shift": "concept", "strength": -0.1}, r"share of rows in \[0, 1\]"),
        ({"shift": "concept", "feature": "island"}, "species column only"),
        ({"shift": "covariate", "strength": 3.5}, r"in \[-3, 3\]"),
        ({"shift": "covariate", "strength": float("nan")}, r"in \[-3, 3\]"),
        ({"shift": "covariate", "feature": "island"}, "numeric feature"),
    ],
    ids=["labels-without-key", "key-clash", "key-clash-labels", "labels-is-out",
         "labels-without-species", "concept-above-1", "concept-negative",
         "concept-feature", "covariate-too-strong", "covariate-nan", "covariate-category"],
)
def test_bad_key_label_and_shift_arguments_are_refused_before_writing(tmp_path, kwargs, message):
    out, labels = tmp_path / "x.csv", tmp_path / "labels.csv"
    swap = {"OUT": out, "LABELS": labels}
    args = {k: swap.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=message):
        synth.write_penguins_like(out, 10, **args)
    assert not out.exists() and not labels.exists()


def test_command_line_refuses_labels_without_key(tmp_path, capsys):
    with pytest.raises(SystemExit):
        synth.main([str(tmp_path / "x.csv"), "10", "--labels", str(tmp_path / "l.csv")])
    assert "labels_path needs key_column" in capsys.readouterr().err
