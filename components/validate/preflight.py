"""What a training run can be refused for before any heavy work, checked in about a second.

``kfp-ct run-local`` calls :func:`check_training_inputs` before the run starts; on a
cluster the first task (validate) calls it before it reads any data, so a typo costs
seconds, not a transform and a training.

Checked: the problem spec; the gate thresholds against the spec's task; the training
steps; the slices (raw columns of the spec); column names the model code can use; the
columns of each local data file (CSV header / Parquet schema, no rows read); that the
push destination can be written (a probe object, written and removed); that its
production version, if any, is not corrupt; that the eval split of local data reaches
the gate's min_examples (rows read only until it does); Beam options that cannot run
(components/common/beam_io.py: check_beam_args).

No kfp, no TensorFlow.
"""

from __future__ import annotations

import os
import re
import uuid
from typing import Sequence

from kfp_ct.components.common import data as data_lib
from kfp_ct.components.common import podenv, registry
from kfp_ct.components.common import storage
from kfp_ct.components.common.errors import InputDataError, KfpCtError, ProblemSpecError, StorageError
from kfp_ct.components.common.problem import ProblemSpec, load_problem
from kfp_ct.components.common.thresholds import parse_thresholds

#: Column names the model code can use: TensorFlow makes op, layer and vocabulary file
#: names out of them, and those allow no spaces, no non-ASCII letters and no leading
#: '_', '.' or '-'.
COLUMN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
COLUMN_RULE = ("a column name must start with an ASCII letter or digit and hold only "
               "ASCII letters, digits, '_', '.' and '-'")


class PreflightError(KfpCtError):
    """A run's inputs are refused before any task does heavy work."""


class EvalSplitTooSmall(InputDataError):
    """The eval split has fewer rows than the gate's min_examples: no model trained on
    this data could be blessed."""


#: Rows read at most before a run starts to see whether the eval split reaches the gate's
#: min_examples (a few hundred rows settle it for the default 50); when they do not
#: settle it, validate counts every row as it reads them (components/validate/logic.py).
EVAL_COUNT_ROWS = 200_000


def eval_split_error(data_path: str, spec: ProblemSpec, rows: int, held_out: int,
                     thresholds: str | dict) -> EvalSplitTooSmall | None:
    """The refusal of an eval split of ``held_out`` rows (of ``rows``) under the
    ``min_examples`` of ``thresholds`` (the training run's, for the spec's task); None
    when it is enough or there is no minimum."""
    parsed = parse_thresholds(thresholds, task=spec.task)
    need = parsed.get("min_examples")
    if need is None or held_out >= need:
        return None
    which = (f"the gate's default min_examples for {spec.task}" if parsed.get("defaults")
             else "the thresholds' min_examples")
    return EvalSplitTooSmall(
        f"{data_path}: the eval split would hold {held_out} of {rows} rows (eval_percent "
        f"{spec.eval_percent}), fewer than {which}, {need}: no model trained on it could "
        f"be blessed; give more data, a larger eval_percent in the problem spec, or a "
        f"lower min_examples in the thresholds")


def check_eval_split(data_path: str, spec: ProblemSpec, thresholds: str | dict) -> None:
    """Local data whose eval split (the hash split transform makes) holds fewer rows than
    the gate's min_examples is refused before the run: the rows are read until the eval
    split has enough, at most EVAL_COUNT_ROWS of them (gs:// data, or more rows than
    that: validate decides as it reads them all)."""
    need = parse_thresholds(thresholds, task=spec.task).get("min_examples")
    if need is None or any(storage.is_gcs(f) for f in data_lib.resolve_inputs(data_path)):
        return
    rows = held_out = 0
    for batch in data_lib.iter_batches(data_path, spec):
        rows += batch.num_rows
        held_out += int(data_lib.eval_mask(batch, spec).sum())
        if held_out >= need or rows >= EVAL_COUNT_ROWS:
            return
    error = eval_split_error(data_path, spec, rows, held_out, thresholds)
    if error is not None:
        raise error


def _suggest(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).lstrip("_.-") or "column_1"


def check_column_names(spec: ProblemSpec) -> None:
    for name in spec.required_columns:
        if not COLUMN_NAME.fullmatch(name):
            raise ProblemSpecError(
                f"problem spec: column {name!r}: {COLUMN_RULE} (TensorFlow names its ops "
                f"and layers after the columns); rename it in the data and the spec, "
                f"e.g. {_suggest(name)!r}")


def check_train_steps(train_steps) -> None:
    if isinstance(train_steps, bool) or not isinstance(train_steps, int) or train_steps < 1:
        raise PreflightError(f"train_steps must be a whole number >= 1, got {train_steps!r}")


def check_slices(slices: Sequence[str], spec: ProblemSpec) -> None:
    if isinstance(slices, str) or not all(isinstance(s, str) for s in slices):
        raise PreflightError(f"slices must be a list of column names, got {slices!r}")
    unknown = [s for s in slices if s not in spec.required_columns]
    if unknown:
        raise PreflightError(
            f"cannot slice the evaluation by {unknown}: not a column of the problem spec; "
            f"its columns: {list(spec.required_columns)}")


def file_columns(path: str) -> list[str]:
    """The column names of a local CSV or Parquet file, without reading its rows."""
    if data_lib.format_of(path) == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise InputDataError(f"{path}: not a readable Parquet file: {exc}") from None
    return data_lib.csv_header(path)


def check_data_columns(data_path: str, spec: ProblemSpec, slices: Sequence[str] = ()) -> None:
    """Every local data file has each of the spec's columns once and unambiguously, and
    the Parquet files agree on each column's type (gs:// files are checked as validate
    reads them: their header is not worth a download here)."""
    files = data_lib.resolve_inputs(data_path)
    for path in files:
        if storage.is_gcs(path):
            continue
        header = file_columns(path)
        missing = [s for s in slices if s not in header]
        if missing:
            raise InputDataError(
                f"{path}: missing column(s) {missing} that the slices name; the file has "
                f"columns {header}")
        data_lib.check_columns(path, header, spec)
    data_lib.check_parquet_types([f for f in files if not storage.is_gcs(f)], spec)


def check_destination(destination: str) -> None:
    """The push destination can be written: a probe object is written and removed."""
    if not destination or not destination.strip():
        raise PreflightError("push destination is empty")
    podenv.check_durable(destination)
    if storage.is_gcs(destination):
        probe = storage.join(destination, f".kfp-ct-probe-{uuid.uuid4().hex}")
        try:
            storage.write_bytes(probe, b"")
            storage.remove_tree(probe)
        except StorageError as exc:
            raise PreflightError(f"push destination {destination} cannot be written: {exc}") \
                from None
        return
    target = os.path.abspath(destination)
    if os.path.exists(target) and not os.path.isdir(target):
        raise PreflightError(f"push destination {destination} is a file, not a folder")
    existing = target
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise PreflightError(f"push destination {destination} cannot be written: {existing} "
                             f"is a file, not a folder")
    probe = os.path.join(existing, f".kfp-ct-probe-{uuid.uuid4().hex}")
    try:
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise PreflightError(f"push destination {destination} cannot be written: {existing}: "
                             f"{exc.strerror or exc}") from None


def check_production(destination: str) -> None:
    """Refuses a run whose production version is corrupt (TF Serving serves it, the
    newest, but cannot load it): the gate blesses no candidate it cannot compare with
    production (components/gate/logic.py), so the run would train and push nothing. The
    registry knows it from one listing and two small reads."""
    info = registry.production(destination)
    if info is not None and info.state == registry.CORRUPT:
        raise PreflightError(
            f"production version {info.version} at {destination} is corrupt: {info.detail}; "
            f"a candidate cannot be compared with it, so this run would train and push "
            f"nothing; {registry.recovery(destination, info)}")


def check_training_inputs(*, data_path: str, problem: str, thresholds: str | dict,
                          slices: Sequence[str], train_steps: int,
                          push_destination: str, beam_args: Sequence[str] = ()) -> ProblemSpec:
    """All of the above, cheapest first; returns the parsed problem spec.

    Raises:
        KfpCtError: the first problem found, in words that name it.
    """
    spec = load_problem(problem)
    check_column_names(spec)
    parse_thresholds(thresholds, task=spec.task)
    check_train_steps(train_steps)
    slices = list(slices) or list(spec.slices)  # empty: the spec's own
    check_slices(slices, spec)
    check_data_columns(data_path, spec, list(slices))
    check_destination(push_destination)
    check_production(push_destination)
    check_eval_split(data_path, spec, thresholds)
    from kfp_ct.components.common import beam_io  # imports Beam only when options are given

    if beam_io.uses_beam(beam_args):
        beam_io.check_beam_args(beam_args)
    return spec
