"""The Beam path of the data tasks: input read by Beam's own sources, work files where the
runner's workers can reach them.

Used when a task gets ``beam_args`` (a runner and its options). Locally, without them,
validate and transform read in-process (components/common/data.py), which is faster on
one machine. Here:

- **Reading.** CSV files go through ``ReadAllFromText`` and Parquet files through
  ``ReadAllFromParquetBatched``: Beam splits each file into ranges (CSV) or row groups
  (Parquet) across workers. Each worker applies the same reading rule as the in-process
  reader (``data.parse_csv_lines``, ``data.conform_parquet_batch``, ``data.normalize``),
  so both paths see the same values. CSV is read line by line, as every splittable CSV
  source does: a quoted field holding a line break is refused with a clear error (use
  Parquet for such data).
- **Work location.** What the workers write (statistics, the transform graph, the
  transformed examples, small JSON results) goes under ``--temp_location`` when it is
  given (``gs://...`` on Dataflow), else, for the DirectRunner only, under a local temp
  folder. A remote runner without ``--temp_location`` is refused before anything runs:
  its workers cannot write to the launching pod's disk.
- **Checks.** The column tracker's counts (nulls, non-finite values, label classes per
  split) are combined across workers (``TrackerCombine``), so the checks are the same as
  in-process, with file names but without line numbers.

No kfp here; Beam and pyarrow are imported by the functions that use them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import tempfile
import uuid
import warnings

from kfp_ct.components.common import data as data_lib
from kfp_ct.components.common import storage
from kfp_ct.components.common.errors import KfpCtError
from kfp_ct.components.common.problem import USER_MODULE_PREFIX, load_problem

CSV_BATCH_LINES = 65_536
TF_WORK_ENV = "KFP_CT_TF_WORK_LOCATION"
LOCAL_RUNNERS = ("DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner",
                 "FnApiRunner", "PrismRunner", None)


def beam_args_examples(project: str = "my-project", region: str = "europe-west4",
                       bucket: str = "gs://my-bucket", image: str = "") -> dict[str, list[str]]:
    """The documented ``beam_args`` of the Beam path (README: "Past one machine: the Beam
    path"), for validate, transform and evaluate alike; ``image``: the workers' image,
    default ours (CPU_IMAGE), which holds TFDV, TFT and TFMA at the launcher's versions.
    For evaluate the models must be at gs:// paths (KFP's ``/gcs/`` artifact paths are
    given to the workers as gs://)."""
    from kfp_ct.components.common.images import CPU_IMAGE

    image = image or CPU_IMAGE
    temp = f"--temp_location={bucket}/beam-tmp"
    return {
        # Dataflow: Runner v2 starts the workers from our image.
        "dataflow": ["--runner=DataflowRunner", f"--project={project}", f"--region={region}",
                     temp, f"--sdk_container_image={image}"],
        # Flink on Kubernetes (Flink operator): the Python SDK harness runs as a worker
        # pool sidecar of each task manager (our image, ``--worker_pool``).
        "flink": ["--runner=FlinkRunner", "--flink_master=flink-jobmanager.flink:8081",
                  "--environment_type=EXTERNAL", "--environment_config=localhost:50000",
                  temp],
        # Spark (standalone master): each executor starts the SDK harness from our image.
        "spark": ["--runner=SparkRunner", "--spark_master_url=spark://spark-master.spark:7077",
                  "--environment_type=DOCKER", f"--environment_config={image}", temp],
        # One machine, several processes (what tests/test_evaluate_beam.py runs).
        "direct": ["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                   "--direct_num_workers=2"],
    }


class BeamArgsError(KfpCtError):
    """The beam_args cannot run this task (e.g. a remote runner with nowhere to write)."""


def uses_beam(beam_args) -> bool:
    """True when the task got Beam options: the data work then runs as Beam pipelines."""
    return bool([a for a in (beam_args or []) if str(a).strip()])


_WORKER_ERROR = re.compile(
    r"kfp_ct\.components\.common\.errors\.(\w+): (.+?)(?: \[while running '[^']*'\])*$", re.M)


@contextlib.contextmanager
def worker_errors():
    """Around a Beam pipeline: one of our errors raised in a worker (a bad value, a
    user module's fault) reaches the caller as itself, with its message, instead of the
    runner's RuntimeError holding the worker's traceback. Anything else is left as the
    runner raised it."""
    from kfp_ct.components.common import errors

    try:
        yield
    except errors.KfpCtError:
        raise
    except Exception as exc:
        found = _WORKER_ERROR.findall(str(exc))
        cls = getattr(errors, found[-1][0], None) if found else None
        if isinstance(cls, type) and issubclass(cls, errors.KfpCtError):
            raise cls(found[-1][1]) from exc
        raise


def ship_by_value(function) -> None:
    """Beam's pickler sends ``function``'s user module (and so the function) to the
    workers by value. The module is imported under a private name (common/problem.py)
    that a worker cannot import, so by reference it fails there ('No module named
    kfp_ct_user_module_...'). No effect on functions of installed modules."""
    import sys

    from apache_beam.internal.cloudpickle import cloudpickle

    for fn in _wrapped(function):
        name = getattr(fn, "__module__", None) or ""
        if name.startswith(USER_MODULE_PREFIX) and name in sys.modules:
            cloudpickle.register_pickle_by_value(sys.modules[name])


def _wrapped(function):
    """``function`` and the functions its closure holds (a wrapper's wrapped function)."""
    seen, todo = [], [function]
    while todo:
        fn = todo.pop()
        if fn in seen or not callable(fn):
            continue
        seen.append(fn)
        todo.extend(cell.cell_contents for cell in (getattr(fn, "__closure__", None) or ())
                    if callable(cell.cell_contents))
    return seen


def pipeline_options(beam_args):
    with _quiet():  # Beam's first import warns about optional packages and Python dates
        from apache_beam.options.pipeline_options import PipelineOptions

    said = io.StringIO()  # argparse prints its whole usage before it exits
    try:
        with contextlib.redirect_stderr(said):
            options = PipelineOptions([str(a) for a in beam_args])
            options.get_all_options()  # parses every flag now: a bad value fails here
        return options
    except SystemExit:  # argparse's reaction to a malformed flag
        why = [line.split("error: ", 1)[1] for line in said.getvalue().splitlines()
               if "error: " in line]
        raise BeamArgsError(f"beam_args: cannot parse {list(beam_args)}"
                            + (f": {why[-1]}" if why else "")) from None


@contextlib.contextmanager
def _quiet():
    """No warnings and no log records below ERROR while the block runs (the CLI's
    preflight imports Beam on the console a user reads)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


def runner_name(options) -> str | None:
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner
    return runner if runner is None or isinstance(runner, str) else type(runner).__name__


def check_beam_args(beam_args) -> str:
    """The ``--temp_location`` the workers will write under ("": none given, which only
    the DirectRunner may do). BeamArgsError for options that do not parse and for a
    remote runner without ``--temp_location``. Writes nothing (preflight calls it)."""
    with _quiet():
        from apache_beam.options.pipeline_options import GoogleCloudOptions

        options = pipeline_options(beam_args)
        temp = options.view_as(GoogleCloudOptions).temp_location
        runner = runner_name(options)
    if not temp and runner not in LOCAL_RUNNERS:
        raise BeamArgsError(
            f"beam_args: runner {runner!r} runs on other machines, whose workers cannot "
            f"write to this pod's disk; add --temp_location=gs://BUCKET/PATH (a folder "
            f"they can write to)")
    return temp or ""


def work_location(beam_args, task: str) -> str:
    """The folder the workers write to (the task removes it, remove_work): under
    ``--temp_location`` when given, else a local temp folder (the DirectRunner);
    BeamArgsError as check_beam_args says."""
    temp = check_beam_args(beam_args)
    if temp:
        return storage.join(temp, f"kfp-ct-{task}-{uuid.uuid4().hex[:12]}")
    return tempfile.mkdtemp(prefix=f"kfp-ct-{task}-beam-")


def tf_work_location(work: str) -> str:
    """Where TF Transform writes its SavedModels (through TensorFlow's own file system):
    the work location, unless ``$KFP_CT_TF_WORK_LOCATION`` names another folder the
    workers share. The tests need it: TensorFlow's gs:// client does not honour the
    storage emulator that Beam's does, so there TFT writes to a local folder."""
    base = os.environ.get(TF_WORK_ENV, "").strip()
    return storage.join(base, f"kfp-ct-tf-{uuid.uuid4().hex[:12]}") if base else work


def remove_work(location: str) -> None:
    try:
        storage.remove_tree(location)
    except Exception as exc:  # leftovers under a temp location are not worth a failure
        print(f"[kfp-ct] could not remove the Beam work folder {location}: {exc}", flush=True)


# ----------------------------------------------------------------------------- reading


def _make_csv_dofn():
    """A DoFn class: (file, line) pairs -> tracked batches, per file, CSV_BATCH_LINES at most."""
    import apache_beam as beam
    from apache_beam.transforms.window import GlobalWindows

    class CsvLinesToBatches(beam.DoFn):
        def __init__(self, spec_json: str, headers: dict):
            self.spec_json, self.headers = spec_json, headers

        def setup(self):
            self.spec = load_problem(self.spec_json)

        def start_bundle(self):
            self.buffers = {}

        def process(self, element):
            file, line = element
            buffer = self.buffers.setdefault(file, [])
            buffer.append(line)
            if len(buffer) >= CSV_BATCH_LINES:
                yield from self._flush(file)

        def finish_bundle(self):
            for file in list(self.buffers):
                for out in self._flush(file):
                    yield GlobalWindows.windowed_value(out)

        def _flush(self, file):
            lines = self.buffers.pop(file, [])
            if not lines:
                return
            for batch in data_lib.parse_csv_lines(file, self.headers[file], lines, self.spec):
                batch, nonfinite = data_lib.normalize(batch)
                yield file, batch, nonfinite

    return CsvLinesToBatches


def _parquet_tables_to_batches(element, spec_json: str):
    """FlatMap body: (file, Arrow table of one split of the file) -> tracked batches."""
    file, table = element
    spec = load_problem(spec_json)
    for batch in table.to_batches():
        if batch.num_rows:
            batch = data_lib.conform_parquet_batch(file, batch, spec)
            batch, nonfinite = data_lib.normalize(batch)
            yield file, batch, nonfinite


def read_tracked_batches(pipeline, data_path: str, spec, label: str = "Read"):
    """A PCollection of (file, batch, nonfinite) from every input file, read by Beam's
    sources and split across workers. Headers are checked here, before the job starts."""
    import apache_beam as beam
    from apache_beam.io.parquetio import ReadAllFromParquetBatched
    from apache_beam.io.textio import ReadAllFromText

    files = data_lib.resolve_inputs(data_path)
    spec_json = spec.to_json()
    if data_lib.format_of(files[0]) == "csv":
        headers = {f: data_lib.csv_header_any(f, spec) for f in files}
        return (pipeline
                | f"{label}Files" >> beam.Create(files)
                | f"{label}Lines" >> ReadAllFromText(skip_header_lines=1, with_filename=True)
                | f"{label}Parse" >> beam.ParDo(_make_csv_dofn()(spec_json, headers)))
    agreement = data_lib.TypeAgreement(spec)
    for f in files:
        data_lib.parquet_columns_check(f, spec, agreement)
    columns = list(data_lib.arrow_types(spec))
    return (pipeline
            | f"{label}Files" >> beam.Create(files)
            | f"{label}RowGroups" >> ReadAllFromParquetBatched(columns=columns, with_filename=True)
            | f"{label}Conform" >> beam.FlatMap(_parquet_tables_to_batches, spec_json))


# ------------------------------------------------------------------------ the checks


def _make_tracker_combine():
    import apache_beam as beam

    class TrackerCombine(beam.CombineFn):
        """(file, batch, nonfinite) -> one ColumnTracker (no line numbers)."""

        def __init__(self, spec_json: str):
            self.spec_json = spec_json

        def create_accumulator(self):
            return data_lib.ColumnTracker(load_problem(self.spec_json))

        def add_input(self, tracker, element):
            file, batch, nonfinite = element
            tracker.update(file, batch, None, nonfinite)
            return tracker

        def merge_accumulators(self, trackers):
            trackers = list(trackers)
            first = trackers[0]
            for other in trackers[1:]:
                first.merge(other)
            return first

        def extract_output(self, tracker):
            return json.dumps(tracker.to_json())

    return TrackerCombine


def track(tracked, spec, label: str = "Track"):
    """The combined tracker as one JSON text (ColumnTracker.to_json)."""
    import apache_beam as beam

    return tracked | label >> beam.CombineGlobally(_make_tracker_combine()(spec.to_json()))


def write_json_text(pcoll, location: str, name: str, label: str):
    """Writes a PCollection holding one JSON text to ``location/name``."""
    import apache_beam as beam

    return pcoll | label >> beam.io.WriteToText(
        storage.join(location, name), num_shards=1, shard_name_template="")


def read_json(location: str, name: str):
    return json.loads(storage.read_text(storage.join(location, name)))


def tracker_from(location: str, name: str, spec) -> data_lib.ColumnTracker:
    return data_lib.ColumnTracker.from_json(spec, read_json(location, name))

