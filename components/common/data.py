"""Reading tabular input (CSV or Parquet; a file, a folder or a glob; local or gs://).

Rows stream as Arrow RecordBatches of the spec's columns, typed from the spec, so memory
stays flat whatever the row count. Every problem a user can cause is raised as an
InputDataError naming the file, the column and the value.

One reading rule for both formats (what every component sees, since all read here):

- A text column (categorical, a classification label, the key): null and the texts in
  ``NULL_VALUES`` ("", "NA", "nan", ...) are missing, in CSV and in Parquet alike; any
  other text is a value.
- A numeric column: null and the texts in ``NUMERIC_NULL_VALUES`` are missing. A value
  that is not a finite float32 (inf, -inf, NaN; text "inf", "Infinity", "nan", ...; a
  number beyond float32's range) is *non-finite*: the tracker counts it (validation
  reports it as an anomaly, a label refuses it) and it is read as missing.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import importlib.util
import io
import os
import re
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from kfp_ct.components.common import storage
from kfp_ct.components.common.errors import InputDataError, LabelError, StorageError
from kfp_ct.components.common.problem import ProblemSpec, fold_name

BUNDLED_PENGUINS = "bundled:penguins"
# Texts that mean "no value" in a text column (CSV and Parquet alike).
NULL_VALUES = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]
# In a numeric column "NaN" / "nan" are not "no value" but the number NaN: non-finite.
NUMERIC_NULL_VALUES = [v for v in NULL_VALUES if v.lower() != "nan"]
_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
DEFAULT_BATCH_ROWS = 65_536


def bundled_penguins_path() -> str:
    """The Palmer penguins CSV that ships inside the `palmerpenguins` package."""
    # find_spec, not import: the package's __init__ needs pkg_resources, which we do not.
    spec = importlib.util.find_spec("palmerpenguins")
    if spec is None or not spec.submodule_search_locations:
        raise InputDataError("the bundled penguins data needs the `palmerpenguins` package")
    return os.path.join(spec.submodule_search_locations[0], "data", "penguins.csv")


def format_of(path: str) -> str | None:
    """'csv' or 'parquet' from the file name; None when it is neither.

    A file whose name has no extension at all (what a KFP component writes when it opens
    its output Dataset's ``.path`` as a file) is told by its content: Parquet files start
    with ``PAR1``, anything else is read as CSV.
    """
    found = _FORMATS.get(os.path.splitext(path)[1].lower())
    if found or "." in path.rstrip("/").rsplit("/", 1)[-1]:
        return found
    return _sniffed_format(path)


@functools.lru_cache(maxsize=256)
def _sniffed_format(path: str) -> str | None:
    try:
        if not storage.exists(path) or storage.isdir(path):
            return None
        head = storage.read_head(path, 4)
    except (OSError, StorageError):
        return None
    return "parquet" if head == b"PAR1" else "csv"


def expand_paths(path: str, what: str, accept, folder_holds: str) -> list[str]:
    """A file, a folder (its entries that ``accept(folder, name)``) or a glob, local or
    gs://, as a sorted list of files; InputDataError names ``what`` and ``path`` when it
    gives nothing."""
    try:
        if any(c in path for c in "*?["):
            files = [p for p in storage.glob(path) if not storage.isdir(p)]
            if not files:
                raise InputDataError(f"{what} {path}: the pattern matches no file")
        elif storage.isdir(path):
            files = [storage.join(path, n) for n in storage.listdir(path) if accept(path, n)]
            if not files:
                raise InputDataError(f"{what} {path}: the folder holds {folder_holds}")
        elif storage.exists(path):
            files = [path]
        else:
            raise InputDataError(f"{what} {path}: no such file or folder")
    except StorageError as exc:
        raise InputDataError(f"{what} {path}: {exc}") from None
    return sorted(files)


def resolve_inputs(path: str) -> list[str]:
    """Expands a file, folder or glob (or several, comma-separated) into a list of CSV /
    Parquet files (sorted within each)."""
    if not path or not path.strip():
        raise InputDataError("data path is empty")
    path = path.strip()
    if path == BUNDLED_PENGUINS:
        return [bundled_penguins_path()]
    if "," in path and not os.path.exists(path):
        # Several paths, folders or globs (e.g. the newest N date partitions).
        files = []
        for part in (p.strip() for p in path.split(",")):
            if part:
                files += [f for f in resolve_inputs(part) if f not in files]
        if len({format_of(f) for f in files}) > 1:
            raise InputDataError(f"data path {path}: mixes CSV and Parquet files; use one format")
        return files
    files = expand_paths(path, "data path",
                         lambda folder, n: format_of(n) and not n.startswith((".", "_")),
                         "no .csv or .parquet file")
    unknown = [f for f in files if not format_of(f)]
    if unknown:
        raise InputDataError(
            f"data path {path}: cannot tell the format of {unknown[0]} "
            "(expected a .csv or .parquet file)")
    formats = {format_of(f) for f in files}
    if len(formats) > 1:
        raise InputDataError(f"data path {path}: mixes CSV and Parquet files; use one format")
    return files


def arrow_types(spec: ProblemSpec) -> dict[str, pa.DataType]:
    """The Arrow type each spec column is read as."""
    types = {c: pa.float32() for c in spec.numeric}
    types.update({c: pa.string() for c in spec.categorical})
    types[spec.label] = pa.float32() if spec.task == "regression" else pa.string()
    if spec.key and spec.key not in types:
        types[spec.key] = pa.string()
    return types


def check_columns(path: str, header: list[str], spec: ProblemSpec) -> None:
    """A file's column names hold each spec column exactly once, with no other name that
    reads the same (case, blanks); InputDataError naming the file and the columns."""
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(header):
        positions.setdefault(fold_name(name), []).append(i)
    for column in spec.required_columns:
        same = positions.get(fold_name(column), [])
        exact = [i for i in same if header[i] == column]
        if not exact:
            continue  # missing: reported below with every other missing column
        if len(same) > 1:
            names = ", ".join(f"{header[i]!r} (column {i + 1})" for i in same)
            what = (f"names it {len(same)} times" if len(exact) == len(same) else
                    f"holds {len(same)} names that differ from it only in case or blanks")
            raise InputDataError(
                f"{path}: ambiguous {_role(column, spec)} {column!r}: the header {what} "
                f"({names}); kfp-ct will not guess which one is meant: rename or drop the "
                f"others")
    missing = [c for c in spec.required_columns if c not in header]
    if missing:
        kinds = []
        for c in missing:
            near = [header[i] for i in positions.get(fold_name(c), [])]
            kinds.append(f"{c!r} ({_role(c, spec)})"
                         + (f" (the file has {', '.join(map(repr, near))}: names must match "
                            f"exactly)" if near else ""))
        raise InputDataError(
            f"{path}: missing required column(s) {', '.join(kinds)}; "
            f"the file has columns {header}")


def _role(column: str, spec: ProblemSpec) -> str:
    return "label" if column == spec.label else "key" if column == spec.key else "feature"


def _where(path: str, line: int | None) -> str:
    """A row's place for people: CSV line number (the header is line 1), Parquet row; the
    file alone where the reader does not know the row (the Beam path's split reads)."""
    if line is None:
        return path
    return f"{path} line {line}" if format_of(path) == "csv" else f"{path} row {line - 1}"


def _column_words(name: str, spec: ProblemSpec) -> str:
    return f"the label {name!r}" if name == spec.label else f"column {name!r}"


_ARROW_CONVERSION = re.compile(r"CSV column #(\d+).*?(?:Row #(\d+): )?.*?invalid value '(.*)'", re.S)


def csv_header(path: str) -> list[str]:
    """The column names of a local CSV file; InputDataError when the file is empty."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        return _header_of(path, fh.readline())


def _header_of(path: str, first: str) -> list[str]:
    """The column names in a CSV file's first line; InputDataError when there is none."""
    if not first.strip():
        raise InputDataError(f"{path}: the file is empty (no header, no rows)")
    return next(csv.reader(io.StringIO(first)))


def _csv_convert_options(spec: ProblemSpec):
    # Every column not in the spec is read as text and dropped, so stray values never fail.
    # Numeric null texts here; text columns get the rest of NULL_VALUES in normalize.
    types = arrow_types(spec)
    return pacsv.ConvertOptions(
        column_types=types, include_columns=list(types), null_values=NUMERIC_NULL_VALUES,
        strings_can_be_null=True, quoted_strings_can_be_null=True)


def csv_header_any(path: str, spec: ProblemSpec) -> list[str]:
    """The checked header of a CSV file anywhere Beam's filesystems reach (local, gs://),
    reading only its first line."""
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path, compression_type="uncompressed") as fh:
            first = fh.readline().decode("utf-8-sig", errors="replace")
    except Exception as exc:  # Beam raises several types for a missing or unreadable file
        raise InputDataError(f"{path}: cannot be read: {exc}") from None
    header = _header_of(path, first)
    check_columns(path, header, spec)
    return header


def parse_csv_lines(path: str, header: list[str], lines: list[str],
                    spec: ProblemSpec) -> Iterator[pa.RecordBatch]:
    """Typed batches (not yet normalized) from data lines of the CSV file ``path``, as
    the Beam path's workers get them: any range of the file, split at line breaks."""
    text = "\n".join([",".join(_quote(h) for h in header)] + lines).encode("utf-8")
    try:
        table = pacsv.read_csv(io.BytesIO(text), convert_options=_csv_convert_options(spec))
    except pa.ArrowInvalid as exc:
        message = str(exc)
        if _ARROW_CONVERSION.search(message):
            raise _conversion_error(path, header, message, spec) from None
        raise InputDataError(
            f"{path}: cannot parse as CSV: {message.splitlines()[0]}; the Beam path reads "
            f"CSV split at line breaks across workers, so a quoted value holding a line "
            f"break cannot be read there: use Parquet for such data") from None
    for batch in table.to_batches():
        if batch.num_rows:
            yield batch


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _csv_batches(path: str, spec: ProblemSpec, batch_rows: int) -> Iterator[pa.RecordBatch]:
    header = csv_header(path)
    check_columns(path, header, spec)
    convert = _csv_convert_options(spec)
    read = pacsv.ReadOptions(block_size=max(1 << 20, batch_rows * 64))
    try:
        reader = pacsv.open_csv(path, read_options=read, convert_options=convert)
        for batch in reader:
            if batch.num_rows:
                yield batch
    except pa.ArrowInvalid as exc:
        if "invalid UTF8" in str(exc):
            raise encoding_error(path, header) from None
        raise _conversion_error(path, header, str(exc), spec) from None


def encoding_error(path: str, header: list[str]) -> InputDataError:
    """The first line of a CSV file that is not UTF-8, in words: the line, the column by
    name, the bytes (escaped) and, where the bytes tell, the encoding to convert from."""
    with open(path, "rb") as fh:
        data = fh.read(64 << 20)
    try:
        data.decode("utf-8")
        return InputDataError(f"{path}: is not UTF-8 text")
    except UnicodeDecodeError as exc:
        start = exc.start
    line_start = data.rfind(b"\n", 0, start) + 1
    line_end = data.find(b"\n", start)
    line = data[line_start:line_end if line_end >= 0 else len(data)]
    number = data.count(b"\n", 0, start) + 1
    fields = next(csv.reader([line.decode("latin-1")]), [])
    offset, column = start - line_start, None
    for i, field in enumerate(fields):  # which field holds the byte (latin-1: 1 char = 1 byte)
        at = line.decode("latin-1").find(field)
        if field and at <= offset < at + len(field):
            column = header[i] if i < len(header) else f"#{i + 1}"
            break
    sample = data[max(line_start, start - 12):start + 12]
    guess = _guess_encoding(data[max(0, start - 4096):start + 4096])
    return InputDataError(
        f"{path} line {number}"
        + (f", column {column!r}" if column else "")
        + f": not UTF-8 text (bytes {sample!r}); kfp-ct reads CSV as UTF-8"
        + (f": the file looks like {guess}, convert it with `iconv -f {guess} -t utf-8`"
           if guess else ": convert the file to UTF-8"))


def _guess_encoding(sample: bytes) -> str | None:
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # comes with requests, which kfp needs; its absence costs a hint
        return None
    ranked = list(from_bytes(sample))[:4]
    if not ranked or ranked[0].encoding in ("utf_8", "ascii"):
        return None
    # A few accented Latin letters fit several code pages alike; where cp1252 (Excel's
    # "CSV" on Windows, a superset of latin-1) reads the bytes as the best guess does,
    # name it.
    best = ranked[0].encoding
    with contextlib.suppress(UnicodeDecodeError, LookupError):
        if sample.decode("cp1252") == sample.decode(best):
            return "cp1252"
    if ranked[0].language == "Unknown" and any(m.encoding == "cp1252" for m in ranked):
        return "cp1252"
    return best.replace("_", "-")


def _conversion_error(path: str, header: list[str], message: str,
                      spec: ProblemSpec) -> InputDataError:
    match = _ARROW_CONVERSION.search(message)
    if match:
        col = header[int(match.group(1))] if int(match.group(1)) < len(header) else match.group(1)
        value = match.group(3)
        error = LabelError if col == spec.label else InputDataError
        return error(
            f"{path}: {_column_words(col, spec)} is declared numeric but holds the value "
            f"{value!r}")
    return InputDataError(f"{path}: cannot parse as CSV: {message.splitlines()[0]}")


def _type_family(typ: pa.DataType) -> str:
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    if pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ):
        return "number"
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "text"
    if pa.types.is_boolean(typ):
        return "true/false"
    return str(typ)


class TypeAgreement:
    """The files of one data set give each spec column one kind of value (number, text,
    true/false, ...): a Parquet column stored as numbers in one file and as text in
    another has no one meaning (is "1" the number or a category?), so it is refused."""

    def __init__(self, spec: ProblemSpec):
        self.columns = list(arrow_types(spec))
        self.first: dict[str, tuple[str, str, pa.DataType]] = {}  # column -> file, family, type

    def add(self, path: str, schema: pa.Schema) -> None:
        for column in self.columns:
            index = schema.get_field_index(column)
            if index < 0:
                continue
            typ = schema.field(index).type
            family = _type_family(typ)
            seen = self.first.setdefault(column, (path, family, typ))
            if seen[1] != family:
                raise InputDataError(
                    f"{path}: column {column!r} holds {family} values (type {typ}) but "
                    f"{seen[0]} holds it as {seen[1]} (type {seen[2]}); the files of one "
                    f"data set must agree on each column's type: convert one of them")


def check_parquet_types(files: list[str], spec: ProblemSpec) -> None:
    """TypeAgreement over the footers of local Parquet files (no rows are read)."""
    agreement = TypeAgreement(spec)
    for path in files:
        if format_of(path) == "parquet":
            try:
                agreement.add(path, pq.read_schema(path))
            except (OSError, pa.ArrowInvalid) as exc:
                raise InputDataError(f"{path}: not a readable Parquet file: {exc}") from None


def _parquet_batches(path: str, spec: ProblemSpec, batch_rows: int,
                     agreement: TypeAgreement | None = None) -> Iterator[pa.RecordBatch]:
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputDataError(f"{path}: not a readable Parquet file: {exc}") from None
    check_columns(path, pf.schema_arrow.names, spec)
    if agreement is not None:
        agreement.add(path, pf.schema_arrow)
    for batch in pf.iter_batches(batch_size=batch_rows, columns=list(arrow_types(spec))):
        if batch.num_rows:
            yield conform_parquet_batch(path, batch, spec)


def parquet_columns_check(path: str, spec: ProblemSpec,
                          agreement: TypeAgreement | None = None) -> None:
    """Checks the columns of a Parquet file anywhere Beam's filesystems reach (and, with
    an agreement, their types against the data set's other files), reading only its
    footer."""
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path, compression_type="uncompressed") as fh:
            schema = pq.read_schema(fh)
    except Exception as exc:  # pyarrow and Beam raise several types
        raise InputDataError(f"{path}: not a readable Parquet file: {exc}") from None
    check_columns(path, schema.names, spec)
    if agreement is not None:
        agreement.add(path, schema)


def conform_parquet_batch(path: str, batch: pa.RecordBatch, spec: ProblemSpec) -> pa.RecordBatch:
    """A Parquet batch's spec columns, cast to the spec's types (not yet normalized)."""
    types = arrow_types(spec)
    arrays = []
    for name, typ in types.items():
        column = batch.column(batch.schema.get_field_index(name))
        if column.type != typ:
            if pa.types.is_floating(typ) and (pa.types.is_string(column.type)
                                              or pa.types.is_large_string(column.type)):
                # Numbers stored as text read as CSV text does: null texts are
                # missing, surrounding blanks do not count.
                column = pc.utf8_trim_whitespace(null_where_in(column, NUMERIC_NULL_VALUES))
            try:
                column = column.cast(typ)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                bad = _first_uncastable(column, typ)
                error = LabelError if name == spec.label else InputDataError
                raise error(
                    f"{path}: {_column_words(name, spec)} is declared "
                    f"{'numeric' if pa.types.is_floating(typ) else 'text'} "
                    f"but holds the value {bad!r} (type {column.type})") from None
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, names=list(types))


def null_where_in(column: pa.Array, texts: list[str]) -> pa.Array:
    """``column`` with every value in ``texts`` made null."""
    hit = pc.is_in(column, value_set=pa.array(texts, type=column.type))
    return pc.if_else(hit, pa.scalar(None, column.type), column)


def normalize(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, dict]:
    """The reading rule applied to a typed batch from either format: null texts in text
    columns become null, non-finite numbers become null.

    Returns the batch and ``{column: (inf count, nan count, first index, first value)}``
    for the numeric columns that held non-finite values.
    """
    arrays, nonfinite = [], {}
    for name, column in zip(batch.schema.names, batch.columns):
        if pa.types.is_string(column.type):
            column = null_where_in(column, NULL_VALUES)
        elif pa.types.is_floating(column.type) and column.null_count < len(column):
            bad = pc.invert(pc.is_finite(column)).fill_null(False)
            if pc.any(bad).as_py():
                nan = pc.is_nan(column).fill_null(False)
                n_nan = pc.sum(nan).as_py() or 0
                n_bad = pc.sum(bad).as_py()
                first = int(np.flatnonzero(np.asarray(bad))[0])
                nonfinite[name] = (n_bad - n_nan, n_nan, first, column[first].as_py())
                column = pc.if_else(bad, pa.scalar(None, column.type), column)
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names), nonfinite


def _first_uncastable(column: pa.Array, typ: pa.DataType):
    for value in column.to_pylist():
        try:
            pa.array([value]).cast(typ)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return value
    return None


@dataclasses.dataclass
class NonFinite:
    """Non-finite values of one numeric column (each was read as missing)."""

    inf: int = 0
    nan: int = 0
    first: tuple = ()  # (file, line number as in empty_label_rows, value)

    @property
    def count(self) -> int:
        return self.inf + self.nan

    def describe(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in (("inf/-inf", self.inf), ("NaN", self.nan)) if n)
        path, line, value = self.first
        return (f"{self.count} value(s) are not finite numbers ({kinds}; a number beyond "
                f"float32's +-3.4e38 reads as inf); first: {_where(path, line)} (value "
                f"{value!r}); each is read as missing")


@dataclasses.dataclass
class ColumnTracker:
    """Counts rows, nulls and non-finite numbers per column while batches stream past;
    for classification also the label's classes per split (train, eval)."""

    spec: ProblemSpec
    rows: int = 0
    nulls: dict = dataclasses.field(default_factory=dict)  # non-finite values included
    empty_label_rows: list = dataclasses.field(default_factory=list)  # (file, row number)
    nonfinite: dict = dataclasses.field(default_factory=dict)  # column -> NonFinite
    label_classes: dict = dataclasses.field(default_factory=dict)  # value -> [train, eval]
    # text column -> file -> [values, integers, integral decimals, numbers, first value]
    shapes: dict = dataclasses.field(default_factory=dict)
    _mask: tuple = dataclasses.field(default=(None, None), repr=False)

    def eval_mask(self, batch: pa.RecordBatch) -> np.ndarray:
        """eval_mask(batch, spec), computed once for the batch last seen by update."""
        if self._mask[0] is not batch:
            self._mask = (batch, eval_mask(batch, self.spec))
        return self._mask[1]

    def update(self, path: str, batch: pa.RecordBatch, file_row_offset: int | None,
               nonfinite: dict | None = None) -> None:
        """``nonfinite``: what normalize found in this batch (already nulls in it).
        ``file_row_offset`` None: the batch's place in the file is not known (the Beam
        path's split reads); messages then name the file only."""
        for name in batch.schema.names:
            column = batch.column(batch.schema.get_field_index(name))
            self.nulls[name] = self.nulls.get(name, 0) + column.null_count
        for name, (n_inf, n_nan, first, value) in (nonfinite or {}).items():
            found = self.nonfinite.setdefault(name, NonFinite())
            if not found.first:
                found.first = (path, _line(file_row_offset, first), value)
            found.inf += n_inf
            found.nan += n_nan
        for name in self._text_columns():
            column = batch.column(batch.schema.get_field_index(name)).drop_null()
            if len(column):
                counts = self.shapes.setdefault(name, {}).setdefault(
                    path, [0, 0, 0, 0, column[0].as_py()])
                counts[0] += len(column)
                for i, pattern in enumerate((_INTEGER, _INTEGRAL_DECIMAL, _NUMBER), 1):
                    counts[i] += pc.sum(pc.match_substring_regex(column, pattern)).as_py() or 0
        label = batch.column(batch.schema.get_field_index(self.spec.label))
        if label.null_count and len(self.empty_label_rows) < 5:
            idx = np.flatnonzero(np.asarray(label.is_null()))[:5]
            self.empty_label_rows += [(path, _line(file_row_offset, int(i))) for i in idx]
        if self.spec.task == "classification":
            is_eval = pa.array(self.eval_mask(batch), type=pa.bool_())
            for split, part in enumerate((label.filter(pc.invert(is_eval)), label.filter(is_eval))):
                counts = pc.value_counts(part.drop_null())
                for value, n in zip(counts.field("values").to_pylist(),
                                    counts.field("counts").to_pylist()):
                    self.label_classes.setdefault(value, [0, 0])[split] += n
        self.rows += batch.num_rows

    def merge(self, other: "ColumnTracker") -> None:
        """Adds the counts of a tracker of other rows (another worker's share)."""
        self.rows += other.rows
        for name, n in other.nulls.items():
            self.nulls[name] = self.nulls.get(name, 0) + n
        self.empty_label_rows = (self.empty_label_rows + other.empty_label_rows)[:5]
        for name, theirs in other.nonfinite.items():
            mine = self.nonfinite.setdefault(name, NonFinite())
            mine.inf += theirs.inf
            mine.nan += theirs.nan
            mine.first = mine.first or theirs.first
        for value, (train, held_out) in other.label_classes.items():
            counts = self.label_classes.setdefault(value, [0, 0])
            counts[0] += train
            counts[1] += held_out
        for name, files in other.shapes.items():
            for path, theirs in files.items():
                mine = self.shapes.setdefault(name, {}).setdefault(path, [0, 0, 0, 0, theirs[4]])
                for i in range(4):
                    mine[i] += theirs[i]

    def _text_columns(self) -> list[str]:
        """The columns read as text whose values could also be numbers."""
        spec = self.spec
        return list(spec.categorical) + ([spec.label] if spec.task == "classification" else [])

    def check_shapes(self, source: str) -> None:
        """Refuses a text column whose values are numbers in one file and words in
        another, or whole numbers written as "1" in one file and "1.0" in another: the
        same value would be two categories, or a shifted column would be read as one."""
        for name in self._text_columns():
            seen: dict[str, tuple[str, str]] = {}  # shape -> (file, example)
            for path, (n, integers, integral, numbers, example) in self.shapes.get(name, {}).items():
                if numbers == 0:
                    shape = "words"
                elif numbers < n:
                    continue  # mixed within the file: no one shape to compare
                elif integers == n:
                    shape = "whole numbers written without a decimal point"
                elif integral == n:
                    shape = "whole numbers written with a decimal point"
                else:
                    shape = "numbers"
                seen.setdefault(shape, (path, example))
            clash = _shape_clash(seen)
            if clash:
                (a, (file_a, ex_a)), (b, (file_b, ex_b)) = clash
                raise InputDataError(
                    f"{source}: {_column_words(name, self.spec)} (read as text) holds {a} in "
                    f"{file_a} (e.g. {ex_a!r}) but {b} in {file_b} (e.g. {ex_b!r}); the files "
                    f"of one data set must agree on what a column holds, or the same value "
                    f"becomes two categories: convert one of them")

    def to_json(self) -> dict:
        return {"rows": self.rows, "nulls": self.nulls,
                "empty_label_rows": [list(r) for r in self.empty_label_rows],
                "nonfinite": {c: {"inf": f.inf, "nan": f.nan, "first": list(f.first)}
                              for c, f in self.nonfinite.items()},
                "label_classes": self.label_classes, "shapes": self.shapes}

    @classmethod
    def from_json(cls, spec: ProblemSpec, doc: dict) -> "ColumnTracker":
        return cls(spec=spec, rows=int(doc["rows"]), nulls=dict(doc["nulls"]),
                   empty_label_rows=[tuple(r) for r in doc["empty_label_rows"]],
                   nonfinite={c: NonFinite(f["inf"], f["nan"], tuple(f["first"]))
                              for c, f in doc["nonfinite"].items()},
                   label_classes={v: list(n) for v, n in doc["label_classes"].items()},
                   shapes={c: {f: list(n) for f, n in files.items()}
                           for c, files in doc.get("shapes", {}).items()})

    def eval_only_classes(self) -> dict[str, int]:
        """Classification: label classes that only the eval split holds -> their rows."""
        return {v: n[1] for v, n in sorted(self.label_classes.items()) if not n[0]}

    def check(self, source: str) -> None:
        """Raises on label values that cannot be learned from (empty, non-finite, one
        class only, in the data or in the training split) and on features with no value
        at all."""
        self.check_shapes(source)
        label = self.spec.label
        bad = self.nonfinite.get(label)
        if bad:
            raise LabelError(
                f"{source}: the regression label {label!r} is not a finite number in "
                f"{bad.count} row(s) (first: {_where(*bad.first[:2])}, value "
                f"{bad.first[2]!r}); drop or fix them before training")
        label_nulls = self.nulls.get(label, 0)
        if label_nulls:
            where = ", ".join(_where(f, r) for f, r in self.empty_label_rows[:5])
            raise LabelError(
                f"{source}: {label_nulls} row(s) have an empty label {label!r} "
                f"(first: {where}); drop or fill them before training")
        empty = [c for c in self.spec.features if self.nulls.get(c, 0) == self.rows]
        if empty:
            why = "".join(f"; {c}: {self.nonfinite[c].describe()}" for c in empty
                          if c in self.nonfinite)
            raise InputDataError(
                f"{source}: feature column(s) {empty} hold no value in any of the "
                f"{self.rows} rows{why}")
        if self.spec.task == "classification" and self.rows:
            self._check_classes(source)

    def _check_classes(self, source: str) -> None:
        label, classes = self.spec.label, self.label_classes
        if len(classes) < 2:
            (value, (train, held_out)), = classes.items()
            raise LabelError(
                f"{source}: the classification label {label!r} has a single class, "
                f"{value!r}, in all {train + held_out} rows; a classifier needs at least 2 "
                f"classes (for a numeric target use \"task\": \"regression\")")
        train = {v: n[0] for v, n in sorted(classes.items()) if n[0]}
        if len(train) < 2:
            train_rows = sum(train.values())
            only = (f"a single class, {next(iter(train))!r}" if train else "no class")
            others = {v: n[1] for v, n in sorted(classes.items()) if v not in train}
            raise LabelError(
                f"{source}: the training split of the classification label {label!r} holds "
                f"{only} ({train_rows} rows); the other class(es) are only in the eval "
                f"split (eval_percent={self.spec.eval_percent}), rows per class: {others}; a "
                f"classifier needs at least 2 classes to learn from: give more rows of each "
                f"class")


_INTEGER = r"^\s*[+-]?\d+\s*$"
_INTEGRAL_DECIMAL = r"^\s*[+-]?\d+\.0*\s*$"
_NUMBER = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
# Shapes of one column that cannot both be right: a number is not a word, and 1 is not 1.0.
_CLASHES = [("words", "whole numbers written without a decimal point"),
            ("words", "whole numbers written with a decimal point"), ("words", "numbers"),
            ("whole numbers written without a decimal point",
             "whole numbers written with a decimal point")]


def _shape_clash(seen: dict) -> tuple | None:
    for a, b in _CLASHES:
        if a in seen and b in seen:
            return (a, seen[a]), (b, seen[b])
    return None


def _line(file_row_offset: int | None, index: int) -> int | None:
    # +2: one for the header line, one for 1-based numbering.
    return None if file_row_offset is None else file_row_offset + index + 2


def iter_batches(path: str, spec: ProblemSpec, batch_rows: int = DEFAULT_BATCH_ROWS,
                 tracker: ColumnTracker | None = None) -> Iterator[pa.RecordBatch]:
    """Streams the spec's columns from every input file, in file order.

    Every batch follows the reading rule (module docstring): null texts and non-finite
    numbers are missing. Raises InputDataError for a missing path, an empty match, a
    header-only file, a missing column or a value that does not parse; with a tracker,
    once the stream ends, also for all-null features and (LabelError) for labels that
    cannot be learned from (ColumnTracker.check).
    """
    files = resolve_inputs(path)
    agreement = TypeAgreement(spec)
    for file in files:
        with local_input(file) as local:
            if format_of(file) == "csv":
                batches = _csv_batches(local, spec, batch_rows)
            else:
                batches = _parquet_batches(local, spec, batch_rows, agreement)
            offset = 0
            for batch in batches:
                batch, nonfinite = normalize(batch)
                if tracker is not None:
                    tracker.update(file, batch, offset, nonfinite)
                offset += batch.num_rows
                yield batch
            if offset == 0:
                raise InputDataError(f"{file}: the file has a header but no data rows")
    if tracker is not None:
        tracker.check(path)


@contextlib.contextmanager
def local_input(path: str):
    """A local path holding an input file (gs://: downloaded); InputDataError on failure."""
    try:
        with storage.local_copy(path) as local:
            yield local
    except StorageError as exc:
        raise InputDataError(str(exc)) from None


def as_list_batch(batch: pa.RecordBatch, spec: ProblemSpec,
                  columns: list[str] | None = None) -> pa.RecordBatch:
    """Scalar columns -> list columns (one value per row, an empty list for a missing value)
    in sorted name order: what tfx_bsl's tf.Example encoder and TFT's adapter take.

    Keeps the spec's dtypes (tfx_bsl's CanonicalizeRecordBatch would widen float32 to
    float64, which tf.Examples cannot hold); text becomes bytes.
    """
    names = sorted(columns if columns is not None else set(spec.features) | {spec.label})
    types = arrow_types(spec)
    arrays = []
    for name in names:
        column = batch.column(batch.schema.get_field_index(name))
        if name in types and column.type != types[name]:
            column = column.cast(types[name])
        valid = np.asarray(column.is_valid(), dtype=np.int32)
        offsets = np.concatenate([[0], np.cumsum(valid)]).astype(np.int32)
        values = column.drop_null()
        values = values.cast(pa.binary() if pa.types.is_string(values.type) else values.type)
        arrays.append(pa.ListArray.from_arrays(pa.array(offsets), values))
    return pa.RecordBatch.from_arrays(arrays, names=names)


def eval_mask(batch: pa.RecordBatch, spec: ProblemSpec) -> np.ndarray:
    """True for rows in the eval split: a stable hash of the key column (or of the row).

    Like TFX ExampleGen's hash split: the same row lands in the same split on every run
    and machine, whatever the file order or batch boundaries.
    """
    import pandas as pd  # local: pandas is only needed here

    cols = [spec.key] if spec.key else sorted(batch.schema.names)
    frame = pa.Table.from_batches([batch]).select(cols).to_pandas()
    hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return (hashes % np.uint64(100)) < np.uint64(spec.eval_percent)
