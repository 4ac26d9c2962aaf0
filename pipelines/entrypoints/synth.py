"""Seeded, streaming generator of penguins-like data at any row count.

The columns, their order and their types are those of ``palmerpenguins.load_penguins()``:
species, island, bill_length_mm, bill_depth_mm, flipper_length_mm, body_mass_g, sex,
year. Every distribution is estimated from the real data when generation starts (no
numbers are typed in here):

- species by its frequency; island and sex by their frequency within each species;
  year by its overall frequency;
- the four measurements from a multivariate Gaussian per (species, sex): the real
  means and covariance, so measurements stay correlated the way real birds' are;
  rounded to the real data's resolution (bills 0.1 mm, flippers 1 mm, mass 25 g);
- missing values as in the real data: a few rows lack all four measurements (and
  sex), and a few more lack sex only, at the real rates.

Rows are generated and written ``chunk_rows`` at a time, so memory stays flat at any
``n_rows``. The output is a pure function of its arguments (``n_rows, seed, fmt,
chunk_rows`` and the shift and key options): the same arguments give byte-identical files.

Windows with controlled shifts (drift and model-performance monitoring tests and
benchmarks), see ``SHIFTS``: ``write_penguins_like(..., shift="numeric_mean",
strength=0.5)``. Two of them are made for performance monitoring:

- ``concept``: the labelling rule changes, the features do not. The rows are drawn
  exactly as unshifted (same feature columns, byte for byte), then a share ``strength``
  of them gets its species re-drawn uniformly among the *other* species (from a random
  stream of its own, so the feature draws are untouched). A model's accuracy ``a``
  drops, in expectation, by ``strength * (a - (1 - a) / 2)`` (a wrong prediction hits
  the new label half the time): about ``strength`` for a good model (0.99 x strength at
  a = 0.993), give or take the binomial noise ``sqrt(strength * (1 - strength) / n)``.
- ``covariate``: the features move, the labelling rule P(species | features) does not.
  Rows are drawn from the base distribution (labels from the true rule) and each is
  kept with a probability that depends on its features only (see ``covariate_keep_p``);
  drawing goes on, chunk by chunk, until ``n_rows`` rows are kept.

Labels apart (to score predictions later): ``key_column="id"`` adds a unique,
deterministic string id ``"{seed}-{row}"`` as the first column; with
``labels_path=...`` too, the main file has no species column and a second file (same
format, same row order, same chunks) holds just ``id, species``.

Command line::

    python -m kfp_ct.pipelines.entrypoints.synth OUT N [--seed S] [--format csv|parquet]
                                      [--shift KIND [--strength X] [--feature NAME]]
                                      [--key NAME [--labels OUT2]]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa

COLUMNS = (
    "species",
    "island",
    "bill_length_mm",
    "bill_depth_mm",
    "flipper_length_mm",
    "body_mass_g",
    "sex",
    "year",
)
NUMERIC_COLUMNS = ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g")
# Measurement resolution of the real data (what its instruments record).
ROUNDING = {"bill_length_mm": 0.1, "bill_depth_mm": 0.1, "flipper_length_mm": 1.0, "body_mass_g": 25.0}
FORMATS = ("csv", "parquet")
DEFAULT_CHUNK_ROWS = 100_000

# Types as pandas reads load_penguins(): strings, float64 measurements (they hold NaN),
# int64 year.
SCHEMA = pa.schema(
    [
        ("species", pa.string()),
        ("island", pa.string()),
        ("bill_length_mm", pa.float64()),
        ("bill_depth_mm", pa.float64()),
        ("flipper_length_mm", pa.float64()),
        ("body_mass_g", pa.float64()),
        ("sex", pa.string()),
        ("year", pa.int64()),
    ]
)


def load_real_penguins():
    """The real Palmer penguins frame, as ``palmerpenguins.load_penguins()`` returns it.

    palmerpenguins 0.1.4 loads its CSV through ``pkg_resources``, which setuptools 81+
    no longer ships. When that import fails, the same packaged file is read directly
    (pandas ``read_csv``, as ``load_penguins`` does), without importing the package.
    """
    try:
        with warnings.catch_warnings():  # "pkg_resources is deprecated", from setuptools < 81
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
            from palmerpenguins import load_penguins
    except ModuleNotFoundError as exc:
        if exc.name != "pkg_resources":
            raise
    else:
        return load_penguins()
    import pandas as pd

    spec = importlib.util.find_spec("palmerpenguins")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("palmerpenguins is not installed", name="palmerpenguins")
    csv_path = Path(next(iter(spec.submodule_search_locations))) / "data" / "penguins.csv"
    return pd.read_csv(csv_path)


@dataclasses.dataclass(frozen=True)
class PenguinStats:
    """Distributions estimated from the real data; what the generator samples from."""

    species: tuple[str, ...]
    species_p: np.ndarray  # (S,)
    islands: tuple[str, ...]
    island_cum: np.ndarray  # (S, I) cumulative P(island | species)
    sexes: tuple[str, ...]  # ("female", "male")
    sex_cum: np.ndarray  # (S, X) cumulative P(sex | species)
    years: np.ndarray  # (Y,) int64
    year_p: np.ndarray  # (Y,)
    mean: np.ndarray  # (S, X, 4) per (species, sex)
    chol: np.ndarray  # (S, X, 4, 4) Cholesky factor of the covariance
    p_unmeasured: float  # P(all four measurements missing; sex missing too)
    p_sex_missing: float  # P(sex missing | measured)
    marginal_sd: tuple[float, ...] = ()  # real standard deviation of each measurement
    marginal_mean: tuple[float, ...] = ()  # real mean of each measurement


# Controlled shifts: kind -> (what it changes, default feature, "moderate" strength).
# The strength's unit depends on the kind (see ``apply_shift``).
SHIFTS = {
    "none": ("nothing: the same distribution as the base data", None, 0.0),
    "numeric_mean": ("adds strength x the feature's real standard deviation", "body_mass_g", 0.5),
    "category_mix": ("moves a share `strength` of rows to the category NEW_MIX_VALUE",
                     "island", 0.2),
    "new_category": ("gives a share `strength` of rows the unseen category NEW_CATEGORY",
                     "island", 0.1),
    "missing_column": ("drops the feature's column", "sex", 0.0),
    "label": ("moves a share `strength` of birds to the species LABEL_SHIFT_VALUE "
              "(measurements follow the species)", "species", 0.2),
    "concept": ("re-draws the species of a share `strength` of rows among the other "
                "species; the features stay exactly as unshifted", "species", 0.2),
    "covariate": ("keeps rows with a probability growing as exp(strength x z), z the "
                  "feature's standardized value; P(species | features) unchanged",
                  "bill_length_mm", 1.0),
}
NEW_MIX_VALUE = "Torgersen"
NEW_CATEGORY = "Anvers"
LABEL_SHIFT_VALUE = "Gentoo"
LABEL_COLUMN = "species"
# Covariate shift: largest |strength|, and the |z| beyond which the weight stops growing
# (keeps the acceptance rate >= ~5% at |strength| = 3).
COVARIATE_MAX_STRENGTH = 3.0
COVARIATE_Z_CAP = 2.0
COVARIATE_MIN_DRAW = 1_024  # fewest rows drawn per selection pass


def _cumulative(frequencies: np.ndarray) -> np.ndarray:
    cum = np.cumsum(frequencies / frequencies.sum(axis=-1, keepdims=True), axis=-1)
    cum[..., -1] = 1.0  # exact, so a uniform draw below 1 always lands in a category
    return cum


def penguin_stats(frame=None) -> PenguinStats:
    """Estimate every distribution the generator uses from the real penguins frame."""
    df = load_real_penguins() if frame is None else frame
    species = tuple(sorted(df["species"].dropna().unique()))
    islands = tuple(sorted(df["island"].dropna().unique()))
    sexes = tuple(sorted(df["sex"].dropna().unique()))
    years_counts = df["year"].value_counts().sort_index()

    species_p = np.array([(df["species"] == s).sum() for s in species], dtype=np.float64)
    species_p /= species_p.sum()
    island_freq = np.array(
        [[((df["species"] == s) & (df["island"] == i)).sum() for i in islands] for s in species],
        dtype=np.float64,
    )
    sex_freq = np.array(
        [[((df["species"] == s) & (df["sex"] == x)).sum() for x in sexes] for s in species],
        dtype=np.float64,
    )

    unmeasured = df[list(NUMERIC_COLUMNS)].isna().all(axis=1)
    measured = ~unmeasured
    p_unmeasured = float(unmeasured.mean())
    p_sex_missing = float(df.loc[measured, "sex"].isna().mean())

    mean = np.empty((len(species), len(sexes), len(NUMERIC_COLUMNS)))
    chol = np.empty((len(species), len(sexes), len(NUMERIC_COLUMNS), len(NUMERIC_COLUMNS)))
    for si, s in enumerate(species):
        for xi, x in enumerate(sexes):
            group = df.loc[(df["species"] == s) & (df["sex"] == x), list(NUMERIC_COLUMNS)].dropna()
            values = group.to_numpy(dtype=np.float64)
            if len(values) <= len(NUMERIC_COLUMNS):
                raise ValueError(f"too few complete rows for species={s!r} sex={x!r}: {len(values)}")
            mean[si, xi] = values.mean(axis=0)
            chol[si, xi] = np.linalg.cholesky(np.cov(values, rowvar=False))

    return PenguinStats(
        species=species,
        species_p=species_p,
        islands=islands,
        island_cum=_cumulative(island_freq),
        sexes=sexes,
        sex_cum=_cumulative(sex_freq),
        years=years_counts.index.to_numpy(dtype=np.int64),
        year_p=years_counts.to_numpy(dtype=np.float64) / years_counts.sum(),
        mean=mean,
        chol=chol,
        p_unmeasured=p_unmeasured,
        p_sex_missing=p_sex_missing,
        marginal_sd=tuple(float(df[c].std()) for c in NUMERIC_COLUMNS),
        marginal_mean=tuple(float(df[c].mean()) for c in NUMERIC_COLUMNS),
    )


def shifted_stats(stats: PenguinStats, shift: str, strength: float) -> PenguinStats:
    """The distributions a shifted window is drawn from (shifts that act before drawing)."""
    if shift == "label":
        target = np.array([s == LABEL_SHIFT_VALUE for s in stats.species], dtype=np.float64)
        return dataclasses.replace(stats, species_p=(1 - strength) * stats.species_p
                                   + strength * target)
    if shift == "category_mix":
        target = np.array([i == NEW_MIX_VALUE for i in stats.islands], dtype=np.float64)
        freq = np.diff(np.concatenate([np.zeros((len(stats.species), 1)), stats.island_cum],
                                      axis=1), axis=1)
        return dataclasses.replace(stats, island_cum=_cumulative(
            (1 - strength) * freq + strength * target[None, :]))
    return stats


def apply_shift(table: pa.Table, stats: PenguinStats, shift: str, strength: float,
                feature: str | None, rng: np.random.Generator) -> pa.Table:
    """Shifts that act on drawn rows: a numeric mean shift, a new category, a dropped column."""
    if shift == "numeric_mean":
        j = NUMERIC_COLUMNS.index(feature)
        step = ROUNDING[feature]
        column = table.column(feature).combine_chunks()
        values = column.to_numpy(zero_copy_only=False) + strength * stats.marginal_sd[j]
        values = np.round(np.round(values / step) * step, 1)
        return table.set_column(table.schema.get_field_index(feature), feature,
                                pa.array(values, type=pa.float64(),
                                         mask=np.asarray(column.is_null())))
    if shift == "new_category":
        column = table.column(feature).combine_chunks()
        hit = rng.random(table.num_rows) < strength
        values = pa.array(np.where(hit, NEW_CATEGORY, column.fill_null("").to_numpy(
            zero_copy_only=False)), type=pa.string())
        values = pa.array(values.to_pylist(), mask=np.asarray(column.is_null()) & ~hit)
        return table.set_column(table.schema.get_field_index(feature), feature, values)
    if shift == "missing_column":
        return table.drop([feature])
    return table


def named_rng(seed: int, name: str) -> np.random.Generator:
    """A random stream of its own for ``(seed, name)``: draws from it leave the main
    stream (``default_rng(seed)``, which draws the rows) untouched."""
    return np.random.default_rng(np.random.SeedSequence(
        [int(seed), int.from_bytes(name.encode(), "little")]))


def redraw_labels(table: pa.Table, stats: PenguinStats, strength: float,
                  rng: np.random.Generator) -> pa.Table:
    """The ``concept`` shift: each row, with probability ``strength``, gets a species
    other than its own, uniformly among the others; every other column is unchanged.

    Two draws per row from ``rng`` whatever ``strength`` is (so the stream stays aligned).
    """
    import pyarrow.compute as pc

    n = table.num_rows
    k = len(stats.species)
    column = table.column(LABEL_COLUMN)
    index = pc.index_in(column, value_set=pa.array(stats.species, type=pa.string()))
    index = index.combine_chunks().to_numpy(zero_copy_only=False).astype(np.int64)
    hit = rng.random(n) < strength
    step = rng.integers(1, k, size=n)  # 1..k-1: never the species the row came from
    new = np.where(hit, (index + step) % k, index)
    return table.set_column(table.schema.get_field_index(LABEL_COLUMN), LABEL_COLUMN,
                            _strings(stats.species, new.astype(np.int8)))


def covariate_keep_p(table: pa.Table, stats: PenguinStats, strength: float,
                     feature: str) -> np.ndarray:
    """The ``covariate`` shift's keep probability of each row: a function of the row's
    ``feature`` value only.

    ``z = (x - mean) / sd`` with the real data's mean and standard deviation, clipped
    to ``[-COVARIATE_Z_CAP, COVARIATE_Z_CAP]``; a row lacking the feature counts as
    ``z = 0`` (weight 1, as a row at the mean; so at a large |strength| such rows,
    like rows near the mean, become rarer). The kept rows' density is the base density
    times ``exp(strength * z)`` (normalized): the feature's mean moves by about
    ``strength`` standard deviations for a Gaussian feature, a bit less here as the
    weight stops growing beyond the cap (bill_length_mm: about 0.2 sd at strength 0.2,
    0.86 at 1, 1.5 at 3), up for a positive strength, down for a negative one. The
    probability is ``exp(strength * z - |strength| * cap)`` <= 1; about 1 row in 5 is
    kept at |strength| 1, 1 in 20 at 3.

    The selection sees the features only, and a kept row keeps the label the true rule
    gave it: P(species | features) of the kept rows is the base one. A model's
    accuracy may still change (it is averaged over a different feature mix), which is
    what a performance estimator that reweights by features should predict.
    """
    j = NUMERIC_COLUMNS.index(feature)
    x = table.column(feature).combine_chunks().to_numpy(zero_copy_only=False).astype(np.float64)
    z = (x - stats.marginal_mean[j]) / stats.marginal_sd[j]
    z = np.where(np.isnan(z), 0.0, np.clip(z, -COVARIATE_Z_CAP, COVARIATE_Z_CAP))
    return np.exp(strength * z - abs(strength) * COVARIATE_Z_CAP)


def _check_shift(shift: str, strength: float, feature: str | None) -> str | None:
    if shift not in SHIFTS:
        raise ValueError(f"shift must be one of {sorted(SHIFTS)}, got {shift!r}")
    feature = feature or SHIFTS[shift][1]
    if shift == "numeric_mean" and feature not in NUMERIC_COLUMNS:
        raise ValueError(f"a numeric_mean shift needs one of {NUMERIC_COLUMNS}, got {feature!r}")
    if shift in ("category_mix", "new_category") and feature != "island":
        raise ValueError(f"{shift} shifts the island column only, got {feature!r}")
    if shift == "missing_column" and feature not in COLUMNS:
        raise ValueError(f"missing_column needs one of {COLUMNS}, got {feature!r}")
    if shift in ("category_mix", "new_category", "label", "concept") and not 0 <= strength <= 1:
        raise ValueError(f"{shift} strength is a share of rows in [0, 1], got {strength!r}")
    if shift == "concept" and feature != LABEL_COLUMN:
        raise ValueError(f"a concept shift changes the {LABEL_COLUMN} column only, got {feature!r}")
    if shift == "covariate":
        if feature not in NUMERIC_COLUMNS:
            raise ValueError(f"a covariate shift selects on one of {NUMERIC_COLUMNS} "
                             f"(a numeric feature), got {feature!r}")
        if not abs(strength) <= COVARIATE_MAX_STRENGTH:
            raise ValueError(f"covariate strength must be in [-{COVARIATE_MAX_STRENGTH:g}, "
                             f"{COVARIATE_MAX_STRENGTH:g}], got {strength!r}")
    return feature


def _check_key(key_column: str, labels_path, shift: str, feature: str | None,
               path) -> None:
    if not isinstance(key_column, str):
        raise ValueError(f"key_column must be a column name (str), got {key_column!r}")
    if key_column in COLUMNS:
        raise ValueError(f"key_column {key_column!r} clashes with a data column; "
                         f"pick a name not in {COLUMNS}")
    if labels_path:
        if not key_column:
            raise ValueError("labels_path needs key_column: the key joins the labels "
                             "back to their rows")
        if shift == "missing_column" and feature == LABEL_COLUMN:
            raise ValueError(f"labels_path needs the {LABEL_COLUMN} column, which a "
                             f"missing_column shift of {LABEL_COLUMN!r} drops")
        if Path(labels_path).resolve() == Path(path).resolve():
            raise ValueError(f"labels_path must differ from the output path, got {str(labels_path)!r}")


def _draw_chunks(stats: PenguinStats, base: PenguinStats, n_rows: int, chunk_rows: int,
                 shift: str, strength: float, feature: str | None,
                 rng: np.random.Generator, side_rng: np.random.Generator | None):
    """The output's chunks, ``chunk_rows`` rows each (the last one partial). ``rng``
    draws the rows; ``side_rng`` (``named_rng(seed, shift)``) the concept shift's labels
    or the covariate shift's selection."""
    if shift == "covariate" and strength != 0:
        yield from _covariate_chunks(stats, n_rows, chunk_rows, strength, feature, rng,
                                     side_rng)
        return
    remaining = int(n_rows)
    while remaining > 0:
        n = min(int(chunk_rows), remaining)
        chunk = generate_chunk(stats, n, rng)
        if shift == "concept":
            chunk = redraw_labels(chunk, base, strength, side_rng)
        elif shift not in ("none", "covariate"):
            chunk = apply_shift(chunk, base, shift, strength, feature, rng)
        yield chunk
        remaining -= n


def _covariate_chunks(stats: PenguinStats, n_rows: int, chunk_rows: int, strength: float,
                      feature: str, rng: np.random.Generator, keep_rng: np.random.Generator):
    """Selection on features: draw base rows, keep each with ``covariate_keep_p``, until
    ``n_rows`` are kept; at most about two chunks are held at a time."""
    buffer: list[pa.Table] = []
    buffered = kept_total = drawn_total = 0
    remaining = int(n_rows)
    while remaining > 0:
        want = min(int(chunk_rows), remaining)
        while buffered < want:
            rate = max(kept_total, 1) / max(drawn_total, 1)
            n = min(int(chunk_rows), max(COVARIATE_MIN_DRAW,
                                         int(np.ceil(1.25 * (want - buffered) / rate))))
            drawn = generate_chunk(stats, n, rng)
            keep = keep_rng.random(n) < covariate_keep_p(drawn, stats, strength, feature)
            drawn_total += n
            kept = int(keep.sum())
            kept_total += kept
            if kept:
                buffer.append(drawn.filter(pa.array(keep)))
                buffered += kept
        table = pa.concat_tables(buffer).combine_chunks()
        yield table.slice(0, want)
        rest = table.slice(want)
        buffer = [rest] if rest.num_rows else []
        buffered -= want
        remaining -= want


def _keys(seed: int, start: int, n: int) -> pa.Array:
    """``"{seed}-{row}"`` for rows ``start .. start + n - 1`` of the output."""
    import pyarrow.compute as pc

    rows = pc.cast(pa.array(np.arange(start, start + n, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise(str(int(seed)), rows, "-")


def _draw_category(rng: np.random.Generator, cum: np.ndarray) -> np.ndarray:
    """One draw per row from per-row cumulative probabilities ``cum`` (n, K)."""
    u = rng.random(cum.shape[0])
    return (u[:, None] >= cum).sum(axis=1).astype(np.int8)


def _strings(names: tuple[str, ...], index: np.ndarray, missing: np.ndarray | None = None) -> pa.Array:
    return pa.array(names, type=pa.string()).take(pa.array(index, mask=missing))


def generate_chunk(stats: PenguinStats, n: int, rng: np.random.Generator) -> pa.Table:
    """``n`` penguins-like rows as an Arrow table with ``SCHEMA``."""
    species = rng.choice(len(stats.species), size=n, p=stats.species_p).astype(np.int8)
    island = _draw_category(rng, stats.island_cum[species])
    sex = _draw_category(rng, stats.sex_cum[species])
    year = stats.years[rng.choice(len(stats.years), size=n, p=stats.year_p)]

    z = rng.standard_normal((n, len(NUMERIC_COLUMNS)))
    measures = stats.mean[species, sex] + np.einsum("nij,nj->ni", stats.chol[species, sex], z)

    unmeasured = rng.random(n) < stats.p_unmeasured
    sex_missing = unmeasured | (rng.random(n) < stats.p_sex_missing)

    columns = {
        "species": _strings(stats.species, species),
        "island": _strings(stats.islands, island),
    }
    for j, name in enumerate(NUMERIC_COLUMNS):
        step = ROUNDING[name]
        values = np.round(measures[:, j] / step) * step
        if step < 1:  # undo binary noise from the multiply: 39.1, not 39.1000000001
            values = np.round(values, 1)
        columns[name] = pa.array(values, type=pa.float64(), mask=unmeasured)
    columns["sex"] = _strings(stats.sexes, sex, sex_missing)
    columns["year"] = pa.array(year, type=pa.int64())
    return pa.table([columns[c] for c in COLUMNS], schema=SCHEMA)


def write_penguins_like(
    path: str | os.PathLike,
    n_rows: int,
    seed: int = 0,
    fmt: str = "csv",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    shift: str = "none",
    strength: float | None = None,
    feature: str | None = None,
    key_column: str = "",
    labels_path: str | os.PathLike = "",
) -> Path:
    """Write ``n_rows`` seeded penguins-like rows to a local file, chunk by chunk.

    Args:
        path: Local file to create (parent folders are created).
        n_rows: Exact number of data rows (0 writes a header / schema only).
        seed: Seed of the random generator; same arguments give identical bytes.
        fmt: "csv" (header row, empty field for a missing value) or "parquet"
            (one row group per chunk).
        chunk_rows: Rows generated and written at a time; bounds memory use.
        shift: One of ``SHIFTS``: a window drawn from a controlled shift of the base
            distribution; "none" draws from the base distribution itself.
        strength: The shift's size (unit per kind, see ``SHIFTS``); None: its moderate
            default. ``concept``: the share of rows whose species is re-drawn among the
            other species, in [0, 1]. ``covariate``: the exponential tilt on the
            feature's standardized value, in [-3, 3] (0: no shift, identical to "none";
            negative: the feature moves down).
        feature: The column shifted; None: the kind's default.
        key_column: When given, the name of a first column holding a unique,
            deterministic string id per row, ``f"{seed}-{row}"`` (row 0 .. n_rows-1
            in file order). Must not be a data column's name.
        labels_path: When given (needs ``key_column``), the main file has no species
            column and this file (same format, same row order and chunks) holds two
            columns: the key and ``species``.

    Returns:
        The path written.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if isinstance(n_rows, bool) or not isinstance(n_rows, (int, np.integer)) or n_rows < 0:
        raise ValueError(f"n_rows must be a non-negative integer, got {n_rows!r}")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")

    strength = SHIFTS[shift][2] if strength is None and shift in SHIFTS else strength
    feature = _check_shift(shift, float(strength or 0.0), feature)
    strength = float(strength or 0.0)
    key_column = key_column or ""
    _check_key(key_column, labels_path, shift, feature, path)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = penguin_stats()
    stats = shifted_stats(base, shift, strength)
    rng = np.random.default_rng(seed)
    side_rng = named_rng(seed, shift) if shift in ("concept", "covariate") else None
    schema = SCHEMA
    if shift == "missing_column":
        schema = pa.schema([f for f in SCHEMA if f.name != feature])
    labels_schema = None
    if key_column:
        schema = pa.schema([pa.field(key_column, pa.string())] + list(schema))
    if labels_path:
        labels_schema = pa.schema([schema.field(key_column), schema.field(LABEL_COLUMN)])
        schema = pa.schema([f for f in schema if f.name != LABEL_COLUMN])
        Path(labels_path).parent.mkdir(parents=True, exist_ok=True)

    def open_writer(target, target_schema):
        if fmt == "csv":
            import pyarrow.csv as pacsv

            return pacsv.CSVWriter(str(target), target_schema)
        import pyarrow.parquet as pq

        return pq.ParquetWriter(str(target), target_schema)

    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(open_writer(out, schema))
        labels_writer = (stack.enter_context(open_writer(labels_path, labels_schema))
                         if labels_schema is not None else None)
        if n_rows == 0 and fmt == "csv":
            writer.write_table(schema.empty_table())  # the header row
            if labels_writer is not None:
                labels_writer.write_table(labels_schema.empty_table())
        row = 0
        for chunk in _draw_chunks(stats, base, n_rows, chunk_rows, shift, strength, feature,
                                  rng, side_rng):
            if key_column:
                chunk = chunk.add_column(0, pa.field(key_column, pa.string()),
                                         _keys(seed, row, chunk.num_rows))
            row += chunk.num_rows
            if labels_writer is not None:
                labels_writer.write_table(chunk.select([key_column, LABEL_COLUMN]))
                chunk = chunk.drop([LABEL_COLUMN])
            writer.write_table(chunk)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kfp_ct.pipelines.entrypoints.synth",
        description="Write N seeded penguins-like rows (palmerpenguins columns) to OUT. "
                    "Shifts: " + "; ".join(f"{k}: {v[0]}" for k, v in SHIFTS.items()) + ".",
    )
    parser.add_argument("out", metavar="OUT", help="file to write")
    parser.add_argument("n_rows", metavar="N", type=int, help="number of rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", dest="fmt", choices=FORMATS, default=None,
                        help="default: from OUT's suffix (.parquet -> parquet), else csv")
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    parser.add_argument("--shift", choices=sorted(SHIFTS), default="none",
                        help="draw a window with a controlled shift (default: none)")
    parser.add_argument("--strength", type=float, default=None,
                        help="size of the shift (default: the kind's moderate strength); "
                             "concept: share of rows relabelled, in [0, 1]; covariate: "
                             "tilt exp(strength x z) on the feature, in [-3, 3]")
    parser.add_argument("--feature", default=None, help="column to shift (default per kind)")
    parser.add_argument("--key", dest="key_column", metavar="NAME", default="",
                        help="add a first column NAME with a unique row id '{seed}-{row}'")
    parser.add_argument("--labels", dest="labels_path", metavar="OUT2", default="",
                        help="write the labels apart: OUT gets no species column, OUT2 "
                             "(same format) gets the key and species (needs --key)")
    args = parser.parse_args(argv)
    fmt = args.fmt or ("parquet" if args.out.endswith((".parquet", ".pq")) else "csv")
    start = time.perf_counter()
    try:
        out = write_penguins_like(args.out, args.n_rows, seed=args.seed, fmt=fmt,
                                  chunk_rows=args.chunk_rows, shift=args.shift,
                                  strength=args.strength, feature=args.feature,
                                  key_column=args.key_column, labels_path=args.labels_path)
    except ValueError as exc:
        parser.error(str(exc))
    elapsed = time.perf_counter() - start
    shifted = "" if args.shift == "none" else f", shift {args.shift}"
    labels = f", labels to {args.labels_path}" if args.labels_path else ""
    print(f"wrote {args.n_rows} rows ({fmt}, seed {args.seed}{shifted}) to {out}{labels} "
          f"in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
