"""The penguins-like generator: seeded, exact, shaped like the real data."""

from __future__ import annotations

import sys

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
