"""kfp-ct: run pipelines locally, submit and schedule them on Kubeflow, manage model bases.

    kfp-ct run-local --destination DEST [--data PATH] [--problem SPEC] ...
    kfp-ct monitor-local --model-base DEST --window PATH [--training-data ...]
    kfp-ct versions DEST | rollback DEST VERSION
    kfp-ct monitor history DEST [--last N] [--output json]
    kfp-ct compile [PIPELINE ...] [--out build]
    kfp-ct --endpoint URL upload training
    kfp-ct --endpoint URL run training -p push_destination=gs://b/models [--wait]
    kfp-ct --endpoint URL runs list | get RUN_ID | wait RUN_ID
    kfp-ct --endpoint URL schedule create training --name daily --cron '0 0 3 * * *' ...
    kfp-ct --endpoint URL schedule list | enable | disable | delete ID_OR_NAME
    kfp-ct --endpoint URL schedule update ID_OR_NAME [--cron C | --interval S] [-p K=V] ...
    kfp-ct local-server [--port 8888] [--state-dir .kfp-ct] [--token T | --no-token]
                        [--no-metadata]

Global flags follow the ``kfp`` CLI's: ``--endpoint`` ($KF_PIPELINES_ENDPOINT),
``-n/--namespace`` ($KFP_CT_NAMESPACE), ``--existing-token`` ($KFP_CT_TOKEN),
``--output table|json``.

Exit status (components/common/exitcodes.py): 0 done (run-local pushed; a waited run
SUCCEEDED); 1 a run or a local pipeline failed; 2 the input or the server said no (the
message says why, no traceback; nothing ran); 3 a wait timed out; 4 run-local succeeded
but pushed nothing (not blessed, or push refused); 130 stopped by Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_starting(signum, frame):  # until main() runs: one line, not a traceback
    sys.stderr.write("interrupted (Ctrl-C) while kfp-ct was starting: nothing was done\n")
    sys.stderr.flush()
    os._exit(130)


if __name__ == "__main__" or os.path.basename(sys.argv[0] if sys.argv else "") == "kfp-ct":
    # Run as the command: the imports below take a second, and a Ctrl-C during them
    # would print Python's traceback. main() hands Ctrl-C back to the commands.
    signal.signal(signal.SIGINT, _interrupted_while_starting)

import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import datetime as dt  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import time
import types
from typing import Any, Optional, Sequence

import click

from kfp_ct.components.common import exitcodes
from kfp_ct.components.common.errors import KfpCtError
from kfp_ct.components.common.params import json_object
from kfp_ct.pipelines.entrypoints.client import DEFAULT_TIMEOUT_S

EXIT_OK = exitcodes.OK
EXIT_FAILED = exitcodes.FAILED
EXIT_ERROR = exitcodes.USAGE
EXIT_TIMEOUT = exitcodes.TIMEOUT
EXIT_NOT_PUSHED = exitcodes.NOT_PUSHED
EXIT_INTERRUPTED = exitcodes.INTERRUPTED
DEFAULT_STATE_DIR = ".kfp-ct-local"


class _Exit(Exception):
    """Ends a command with a status (click's standalone mode is off)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


# ------------------------------------------------------------------------ output


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value


def _when(value: Optional[dt.datetime]) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h).upper() for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in cells)


def _emit(ctx: click.Context, data: Any, headers: Sequence[str], rows: Sequence) -> None:
    if ctx.obj["output"] == "json":
        click.echo(json.dumps(_plain(data), indent=2, sort_keys=True))
    else:
        click.echo(_table(headers, rows))


def _run_rows(runs: Sequence) -> list:
    return [[r.run_id, r.name, r.state, _when(r.created_at), _when(r.finished_at)]
            for r in runs]


_RUN_HEADERS = ("run id", "name", "state", "created", "finished")
_SCHEDULE_HEADERS = ("schedule id", "name", "status", "trigger", "max concurrency",
                     "catchup", "created")


def _schedule_rows(items: Sequence) -> list:
    return [[s.recurring_run_id, s.name, s.status, s.trigger, s.max_concurrency,
             "no" if s.no_catchup else "yes", _when(s.created_at)] for s in items]


# -------------------------------------------------------------------- the group


@click.group(name="kfp-ct", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--endpoint", envvar="KF_PIPELINES_ENDPOINT", default=None,
              help="KFP API host, e.g. http://127.0.0.1:8888 [$KF_PIPELINES_ENDPOINT]; "
                   "empty inside a pod: the in-cluster address")
@click.option("-n", "--namespace", envvar="KFP_CT_NAMESPACE", default="",
              help="Profile namespace for experiments and runs (multi-user Kubeflow) "
                   "[$KFP_CT_NAMESPACE]")
@click.option("--existing-token", envvar="KFP_CT_TOKEN", default=None,
              help="Bearer token to send [$KFP_CT_TOKEN]")
@click.option("--sa-token-path", envvar="KF_PIPELINES_SA_TOKEN_PATH", default="",
              help="Service-account token file, used when no bearer token is given "
                   "[$KF_PIPELINES_SA_TOKEN_PATH]")
@click.option("--timeout", "connect_timeout", type=float, default=DEFAULT_TIMEOUT_S,
              show_default=True,
              help="Seconds allowed for the first contact with the server")
@click.option("--output", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format of API commands")
@click.version_option(package_name="kfp-ct", prog_name="kfp-ct")
@click.pass_context
def cli(ctx: click.Context, endpoint: Optional[str], namespace: str,
        existing_token: Optional[str], sa_token_path: str, connect_timeout: float,
        output: str) -> None:
    """Continuous training of TensorFlow models on Kubeflow Pipelines."""
    ctx.ensure_object(dict)
    from_env = ctx.get_parameter_source("existing_token") == \
        click.core.ParameterSource.ENVIRONMENT
    endpoint_source = "$KF_PIPELINES_ENDPOINT" if ctx.get_parameter_source("endpoint") == \
        click.core.ParameterSource.ENVIRONMENT else "--endpoint"
    ctx.obj.update(endpoint=endpoint, endpoint_source=endpoint_source, namespace=namespace,
                   token=existing_token,
                   token_source="$KFP_CT_TOKEN" if from_env else "--existing-token",
                   token_path=sa_token_path, timeout=connect_timeout, output=output)


def _client(ctx: click.Context) -> Any:
    from kfp_ct.components.retrain.kfp_launcher import check_endpoint
    from kfp_ct.pipelines.entrypoints.client import Client

    obj = ctx.obj
    if obj["endpoint"]:  # checked by the commands that use it: `versions` needs none
        check_endpoint(obj["endpoint"], obj["endpoint_source"])
    token_path = obj["token_path"]
    if token_path and not os.path.isfile(token_path):
        raise KfpCtError(f"--sa-token-path {token_path}: no such file")
    return Client(host=obj["endpoint"], namespace=obj["namespace"],
                  token=obj["token"], token_path=token_path, timeout_s=obj["timeout"],
                  token_source=obj["token_source"])


# ----------------------------------------------------------------- local commands


def _local_run_options(command):
    """The console and task-start flags of run-local and monitor-local."""
    command = click.option(
        "--cold", is_flag=True,
        help="start every task in a new Python instead of forking it from one that "
             "imported the heavy libraries once [$KFP_CT_WARM=0]")(command)
    return click.option(
        "-v", "--verbose", is_flag=True,
        help="show everything the tasks print (always kept in the run folder's "
             "run.log)")(command)


@cli.command("run-local")
@click.option("--destination", required=True,
              help="TF Serving model base to push to: local path or gs://BUCKET/PATH")
@click.option("--data", default=None,
              help="CSV/Parquet file, folder or glob (default: the bundled penguins)")
@click.option("--problem", default=None, help="problem spec: inline JSON or a path "
                                              "(default: penguins)")
@click.option("--thresholds", default=None,
              help="gate thresholds (JSON; default: the task's defaults, see README)")
@click.option("--schema", default="", help="curated schema.pbtxt")
@click.option("--strict", is_flag=True, help="fail on data anomalies")
@click.option("--train-steps", type=int, default=300, show_default=True)
@click.option("--accelerator", default="auto", type=click.Choice(["auto", "cpu", "gpu", "tpu"]))
@click.option("--slice", "slices", multiple=True,
              help="raw feature to slice evaluation by (repeatable; default: the "
                   "problem spec's slices)")
@click.option("--beam-arg", "beam_args", multiple=True,
              help="Beam pipeline option, e.g. --beam-arg=--direct_num_workers=2")
@click.option("--workdir", default="local_outputs", show_default=True,
              help="where run folders go")
@click.option("--params", default="",
              help="JSON object of further training pipeline parameters (applied last)")
@click.option("--trigger", default="",
              help="JSON: why this training runs (kept in the pushed version's metadata)")
@click.option("--summary-json", default="",
              help="also write the outcome (pushed version, gate, error) to this file")
@click.option("--notify", default="",
              help='where to announce a failed run: JSON, {"url_env": "SLACK_WEBHOOK_URL"}, '
                   '{"url_file": PATH} or {"url": URL} (see components/notify)')
@_local_run_options
def run_local_cmd(**kw: Any) -> None:
    """Run the training pipeline on this machine through kfp.local."""
    if not kw["cold"]:  # the zygote imports TensorFlow while this builds and checks
        from kfp_ct.pipelines.entrypoints import warm

        warm.start_early()
    from kfp_ct.pipelines.training import BUNDLED_PENGUINS, PENGUINS_PROBLEM

    kw["data"] = kw["data"] or BUNDLED_PENGUINS
    kw["problem"] = kw["problem"] or PENGUINS_PROBLEM
    kw["thresholds"] = kw["thresholds"] or ""  # the task's defaults
    kw["slices"] = list(kw["slices"]) or None
    kw["beam_args"] = list(kw["beam_args"])
    raise _Exit(_before_the_run(_run_local, types.SimpleNamespace(**kw)))


def _before_the_run(run_command, args: types.SimpleNamespace) -> int:
    """``run_command(args)``; a Ctrl-C that reaches here came before any task started (a
    run answers one itself, and its report ignores one), so nothing was pushed."""
    try:
        return run_command(args)
    except KeyboardInterrupt:
        click.echo(_NOT_STARTED, err=True)
        return EXIT_INTERRUPTED


_NOT_STARTED = "interrupted (Ctrl-C) before the run started: no task ran, nothing pushed"
_RUN_COMMANDS = ("run-local", "monitor-local")


def _write_summary(path: str, summary: dict) -> None:
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as fh:
            json.dump(summary, fh, indent=1, sort_keys=True)


def _run_local(args: types.SimpleNamespace) -> int:
    from kfp_ct.pipelines.entrypoints.local import run_local, training_report, training_summary
    from kfp_ct.pipelines.training import training_pipeline

    destination = args.destination
    if "://" not in destination:
        destination = os.path.abspath(destination)
    arguments = {
        "push_destination": destination, "data_path": args.data, "problem": args.problem,
        "thresholds": args.thresholds, "schema_path": args.schema, "strict": args.strict,
        "train_steps": args.train_steps, "accelerator": args.accelerator,
        "beam_args": list(args.beam_args),
    }
    if args.slices is not None:
        arguments["slices"] = list(args.slices)
    if args.trigger:
        json_object(args.trigger, "--trigger")
        arguments["trigger"] = args.trigger
    params = json_object(args.params, "--params")
    for reserved in ("push_destination", "data_path"):
        if reserved in params:
            raise KfpCtError(f"--params: set {reserved} with --destination / --data")
    if args.notify:
        arguments["notify"] = args.notify
    arguments.update(params)
    if arguments.get("notify"):  # a bad target fails here, not in the exit task
        _check_notify(arguments["notify"],
                      "--params: notify" if "notify" in params else "--notify")
        if isinstance(arguments["notify"], dict):  # the parameter is JSON text
            arguments["notify"] = json.dumps(arguments["notify"], sort_keys=True)
    # Known before any task starts (about a second): the spec, the thresholds for its
    # task, the steps, slices and columns, that the destination can be written.
    from kfp_ct.components.validate.preflight import check_training_inputs

    defaults = {name: p.default for name, p in
                inspect.signature(training_pipeline.pipeline_func).parameters.items()}
    given = {**defaults, **arguments}
    check_training_inputs(data_path=given["data_path"], problem=given["problem"],
                          thresholds=given["thresholds"], slices=given["slices"],
                          train_steps=given["train_steps"],
                          push_destination=given["push_destination"],
                          beam_args=given["beam_args"])
    run = run_local(training_pipeline, arguments, workdir=args.workdir,
                    verbose=args.verbose, warm=False if args.cold else None)
    with _reporting():
        summary = training_summary(run, destination)
        _write_summary(args.summary_json, summary)
        if run.interrupted:
            return _interrupted(run, destination)
        print(training_report(run, steps=args.verbose, base=destination))
    if not run.ok:
        return EXIT_FAILED
    return EXIT_OK if summary.get("pushed") else EXIT_NOT_PUSHED


def _check_notify(value: Any, what: str) -> None:
    """The failed-run notice's target (components/common/notify.py), checked before any
    task runs: a KfpCtError naming ``what`` and the bad key otherwise."""
    from kfp_ct.components.common import notify

    try:
        notify.parse_config(value)
    except KfpCtError as exc:
        raise KfpCtError(f"{what}: {str(exc).removeprefix('notify: ')}") from None


@contextlib.contextmanager
def _reporting():
    """The run is over: a Ctrl-C now would cut its report short, and the report (well
    under a second) is what tells the user what happened. It is ignored until written."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupted(run: Any, base: str) -> int:
    """Ctrl-C: one line, true to what the run left behind: the registry at ``base`` says
    what it published (a task stopped mid-way leaves its run folder, never a part of a
    version: a push publishes atomically, see components/common/registry.py)."""
    from kfp_ct.pipelines.entrypoints.local import outcome_line

    click.echo(f"{run.error}; stopped after {run.total_s:.1f} s; {outcome_line(run, base)}; "
               f"run folder: {os.path.dirname(run.log_path) or run.run_dir}", err=True)
    return EXIT_INTERRUPTED


@cli.command("monitor-local")
@click.option("--model-base", required=True,
              help="TF Serving model base of the production model: local path or gs://")
@click.option("--window", default="",
              help="fresh data: CSV/Parquet file, folder or glob (e.g. .../date=2026-11-23/)")
@click.option("--request-log", default="",
              help="TF Serving request log: PredictionLog TFRecord file, folder or glob")
@click.option("--labels", default="",
              help="labelled rows for the model's realized performance: a labelled window "
                   "(features and label), or with --label-key a labels file (key and label)")
@click.option("--label-key", default="",
              help="the column joining --labels to the request log (else to the window)")
@click.option("--settings", default="",
              help='drift settings JSON, e.g. \'{"numeric": 0.02, "categorical": 0.05, '
                   '"features": {"island": 0.1}, "min_rows": 100}\'')
@click.option("--training-data", default="",
              help="training window to retrain on: path, folder or glob")
@click.option("--training-partitions", type=int, default=0,
              help="with a glob: train on the newest N matches only (0: all)")
@click.option("--retrain", default="local", type=click.Choice(["local", "off"]),
              help="local: run the training pipeline here when drift is found; off: "
                   "record only")
@click.option("--cooldown-hours", type=float, default=0.0)
@click.option("--params", default="",
              help="JSON object of training pipeline parameters for the retraining")
@click.option("--workdir", default="local_outputs", help="where run folders go")
@click.option("--summary-json", default="", help="also write the outcome to this file")
@_local_run_options
def monitor_local_cmd(**kw: Any) -> None:
    """Check fresh data for drift on this machine; retrain when it moved."""
    raise _Exit(_before_the_run(_monitor_local, types.SimpleNamespace(**kw)))


def _monitor_local(args: types.SimpleNamespace) -> int:
    from kfp_ct.pipelines.entrypoints.local import monitoring_report, monitoring_summary, run_local
    from kfp_ct.pipelines.monitoring import monitoring_pipeline

    if not args.window and not args.request_log:
        if args.labels and args.label_key:
            raise KfpCtError(f"--labels joined on --label-key {args.label_key!r} need the "
                             "served rows they belong to: give --request-log (or --window)")
        if not args.labels:
            raise KfpCtError("give --window (fresh data), --request-log or a labelled "
                             "window (--labels)")
    if args.retrain != "off" and not args.training_data:
        raise KfpCtError("--training-data is needed to retrain (or use --retrain off)")
    params = json_object(args.params, "--params")
    if args.settings:
        from kfp_ct.components.drift.logic import parse_settings

        parse_settings(args.settings)  # a typo fails here, before any task runs
    base = args.model_base if "://" in args.model_base else os.path.abspath(args.model_base)

    def local_path(path: str) -> str:
        if not path or "://" in path:
            return path
        return ",".join(os.path.abspath(p) for p in path.split(","))

    # What can be known before any task starts is checked here, in about a second.
    from kfp_ct.components.common.data import resolve_inputs
    from kfp_ct.components.drift.logic import load_baseline

    load_baseline(base)
    for given in (args.window, args.labels):
        if given:
            resolve_inputs(local_path(given))

    arguments = {
        "model_base": base, "window_path": local_path(args.window),
        "request_log_path": local_path(args.request_log), "drift_settings": args.settings,
        "labels_path": local_path(args.labels), "label_key": args.label_key,
        "training_data": local_path(args.training_data),
        "training_partitions": args.training_partitions, "retrain_mode": args.retrain,
        "cooldown_hours": args.cooldown_hours,
        "training_params": json.dumps(params),
    }
    run = run_local(monitoring_pipeline, arguments, workdir=args.workdir,
                    verbose=args.verbose, warm=False if args.cold else None)
    with _reporting():
        if run.interrupted:
            return _interrupted(run, base)
        print(monitoring_report(run, steps=args.verbose))
        summary = monitoring_summary(run)
        _write_summary(args.summary_json, summary)
    if not run.ok:
        return EXIT_FAILED
    launch = summary.get("launch") or {}
    if launch.get("launched") and (launch.get("result") or {}).get("state") == "FAILED":
        return EXIT_FAILED
    return EXIT_OK


@cli.command("versions")
@click.argument("dest")
def versions_cmd(dest: str) -> None:
    """List the versions under a model base DEST (* marks production)."""
    from kfp_ct.components.common import registry

    registry.check_model_base(dest)  # a mistyped path: one line, exit 2
    sys.stdout.write(registry.describe(dest))


@cli.command("rollback")
@click.argument("dest")
@click.argument("version", type=int)
@click.option("--reason", default="", help="why, kept in the new version's metadata "
              "and in the record of a label move")
@click.option("--labels-only", is_flag=True, default=False,
              help="only move the labels in DEST/models.config onto VERSION (no new "
                   "version): the second step, once TF Serving shows VERSION AVAILABLE")
def rollback_cmd(dest: str, version: int, reason: str, labels_only: bool) -> None:
    """Republish an earlier VERSION of model base DEST as the new newest one.

    TF Serving's default policy then serves the copy. When DEST/models.config exists (a TF
    Serving model config file with stable/canary version labels, written by
    components/rollout/labels.py), the labels move too: if the file already loads
    VERSION, both labels name VERSION now; if not, the file lists VERSION so TF Serving
    loads it at its next poll, and `kfp-ct rollback DEST VERSION --labels-only` moves the labels once
    GET /v1/models/NAME/versions/VERSION shows AVAILABLE (TF Serving refuses a label
    moved onto a version it has not loaded). A label move is recorded, so `kfp-ct
    versions` shows where VERSION is served.
    """
    from kfp_ct.components.common import registry
    from kfp_ct.components.rollout import labels

    registry.check_model_base(dest)  # a wrong path is said as such, before any labels
    path = labels.default_path(dest)
    cfg = labels.read(path)  # a file kfp-ct cannot read: one line, nothing done
    if labels_only:
        if cfg is None:
            raise KfpCtError(f"--labels-only: no TF Serving labels file {path}, so no "
                             f"label to move; drop --labels-only to republish version "
                             f"{version}")
        if version not in cfg.versions:
            loaded = ", ".join(str(v) for v in cfg.versions)
            raise KfpCtError(f"--labels-only: {path} does not load version {version} yet "
                             f"(it loads {loaded}): run `kfp-ct rollback {dest} {version}` "
                             f"to stage it, wait for GET /v1/models/{cfg.name}/versions/"
                             f"{version} to show AVAILABLE, then run this again")
    else:
        info = registry.rollback(dest, version, reason=reason)
        print(f"Rolled back {dest} to version {version}: "
              f"now serving version {info.version} ({info.path})")
        if cfg is None:
            return
        cfg = labels.read(path) or cfg
        if version not in cfg.versions:
            labels.stage(path, version)
            print(f"Labels: {path} now lists version {version}, so TF Serving will load "
                  f"it at its next poll; once GET /v1/models/{cfg.name}/versions/{version} "
                  f"shows AVAILABLE, move the labels with: kfp-ct rollback {dest} "
                  f"{version} --labels-only")
            return
    labels.move_stable(path, version)
    registry.record_rollout(dest, {
        "target": f"tfserving:{path}", "version": version, "state": "promoted",
        "previous": cfg.stable, "percent": 100,
        "reason": f"kfp-ct rollback: {reason}" if reason else
                  f"kfp-ct rollback: labels moved from version {cfg.stable} to {version}"})
    print(f"Labels: stable and canary now name version {version} in {path}")


@cli.command("compile")
@click.argument("pipelines", nargs=-1)
@click.option("--out", default="build", show_default=True,
              help="folder: <out>/<pipeline>_pipeline.yaml")
def compile_cmd(pipelines: Sequence[str], out: str) -> None:
    """Compile shipped PIPELINES (default: all) into KFP IR YAML."""
    from kfp_ct.pipelines.entrypoints import catalog

    names = list(pipelines) or list(catalog.CATALOG)
    started = time.perf_counter()
    for name in names:
        item = catalog.entry(name)
        click.echo(catalog.compile_to(item.name, os.path.join(out, f"{item.file_stem}.yaml")))
    click.echo(f"compiled {len(names)} pipelines in {time.perf_counter() - started:.2f} s",
               err=True)


@cli.command("local-server")
@click.option("--state-dir", default=DEFAULT_STATE_DIR, show_default=True,
              help="where pipelines, runs, schedules (SQLite) and run outputs are kept")
@click.option("--port", type=int, default=8888, show_default=True,
              help="port on 127.0.0.1 (0: any free port)")
@click.option("--token", envvar="KFP_CT_LOCAL_TOKEN", default=None,
              help="the bearer token every call but healthz needs; default: a new random "
                   "one, printed and kept in <state-dir>/token [$KFP_CT_LOCAL_TOKEN]")
@click.option("--no-token", is_flag=True, default=False,
              help="no auth: any local account can then run code as you through the endpoint")
@click.option("--max-upload-mb", type=click.IntRange(1, 4096), default=32, show_default=True,
              help="the largest pipeline upload taken; a larger one is answered 413 before "
                   "it is read (a compiled kfp-ct pipeline is about 50 KB)")
@click.option("--no-metadata", is_flag=True, default=False,
              help="do not record runs in the ML Metadata store (<state-dir>/mlmd.sqlite) "
                   "that the Kubeflow UI reads task states and artifacts from")
def local_server_cmd(state_dir: str, port: int, token: Optional[str], no_token: bool,
                     max_upload_mb: int, no_metadata: bool) -> None:
    """Serve the KFP v2beta1 API on 127.0.0.1; runs execute here through kfp.local.

    A token is required unless --no-token; kfp-ct and its Python client on this machine
    find it by themselves (a runtime file per running server)."""
    from kfp_ct.pipelines.entrypoints.local_server import serve

    if no_token and token:
        raise KfpCtError("--token and --no-token: give one of them")
    serve(os.path.abspath(state_dir), port, token or None, no_token=no_token,
          max_upload_bytes=max_upload_mb << 20, metadata=not no_metadata)


# ------------------------------------------------------------------ API commands


def _params(client: Any, pipeline: str, version: str, pairs: Sequence[str],
            params_file: str) -> dict:
    from kfp_ct.pipelines.entrypoints.client import parse_params

    if not pairs and not params_file:
        return {}
    doc = client.version_spec(pipeline, version)
    return parse_params(doc, pairs, params_file, pipeline=f"pipeline {pipeline!r}")


@cli.command("upload")
@click.argument("pipeline")
@click.option("--name", default="", help="pipeline name (default: the compiled name, "
                                         "e.g. kfp-ct-training)")
@click.option("--version", "version", default="",
              help="version name (default: package version + git commit)")
@click.option("--description", default="")
@click.pass_context
def upload_cmd(ctx: click.Context, pipeline: str, name: str, version: str,
               description: str) -> None:
    """Upload PIPELINE (training, monitoring, ... or a compiled YAML) as a new version."""
    client = _client(ctx)
    package = pipeline if pipeline.endswith((".yaml", ".yml")) else ""
    made = client.upload(pipeline="" if package else pipeline, package=package, name=name,
                         version=version, description=description)
    if not made.uploaded:
        click.echo(f"version {made.version!r} of {made.pipeline!r} is already there with "
                   "the same spec: nothing uploaded", err=True)
    _emit(ctx, made, ("pipeline", "pipeline id", "version", "version id", "created"),
          [[made.pipeline, made.pipeline_id, made.version, made.version_id,
            _when(made.created_at)]])


@cli.group("pipelines")
def pipelines_group() -> None:
    """Uploaded pipelines and their versions."""


@pipelines_group.command("list")
@click.pass_context
def pipelines_list(ctx: click.Context) -> None:
    """Names of the uploaded pipelines."""
    names = _client(ctx).pipelines()
    _emit(ctx, names, ("pipeline",), [[n] for n in names])


@pipelines_group.command("versions")
@click.argument("pipeline")
@click.pass_context
def pipelines_versions(ctx: click.Context, pipeline: str) -> None:
    """Versions of an uploaded PIPELINE, newest first."""
    items = _client(ctx).versions(pipeline)
    _emit(ctx, items, ("version", "version id", "created"),
          [[v.version, v.version_id, _when(v.created_at)] for v in items])


def _progress(started: float):
    def show(info: Any) -> None:
        done = [t for t in info.tasks if t.state in ("SUCCEEDED", "FAILED", "SKIPPED",
                                                     "CANCELED")]
        running = [t.name for t in info.tasks if t.state == "RUNNING"]
        line = f"[{time.monotonic() - started:6.1f} s] {info.state}"
        if info.tasks:
            line += f"  tasks done {len(done)}/{len(info.tasks)}"
        if running:
            line += f"  running: {', '.join(running)}"
        click.echo(line, err=True)
    return show


def _wait(ctx: click.Context, client: Any, run_id: str, timeout: float, poll: float) -> None:
    try:
        info = client.wait(run_id, timeout_s=timeout, poll_s=poll,
                           progress=_progress(time.monotonic()))
    except TimeoutError as exc:
        click.echo(f"error: {exc}", err=True)
        raise _Exit(EXIT_TIMEOUT) from None
    _emit(ctx, info, _RUN_HEADERS, _run_rows([info]))
    if info.error:
        click.echo(f"error: {info.error}", err=True)
    raise _Exit(EXIT_OK if info.succeeded else EXIT_FAILED)


@cli.command("run")
@click.argument("pipeline")
@click.option("-p", "--param", "pairs", multiple=True, metavar="NAME=VALUE",
              help="runtime parameter (repeatable), read by its declared type")
@click.option("-f", "--params-file", default="", help="JSON or YAML mapping of parameters")
@click.option("--version", default="", help="version name or id (default: newest)")
@click.option("-e", "--experiment", default="kfp-ct", show_default=True)
@click.option("--run-name", default="")
@click.option("-w", "--wait", "wait", is_flag=True, help="wait for the run and show progress")
@click.option("--timeout", type=float, default=6 * 3600.0, help="seconds to wait at most")
@click.option("--poll", type=float, default=2.0, help="seconds between polls")
@click.pass_context
def run_cmd(ctx: click.Context, pipeline: str, pairs: Sequence[str], params_file: str,
            version: str, experiment: str, run_name: str, wait: bool, timeout: float,
            poll: float) -> None:
    """Start a run of an uploaded PIPELINE version."""
    client = _client(ctx)
    params = _params(client, pipeline, version, pairs, params_file)
    info = client.run(pipeline, params, version=version, experiment=experiment,
                      run_name=run_name)
    if wait:
        click.echo(f"run {info.run_id} ({info.name}) created", err=True)
        _wait(ctx, client, info.run_id, timeout, poll)
    _emit(ctx, info, _RUN_HEADERS, _run_rows([info]))


@cli.group("runs")
def runs_group() -> None:
    """Runs on the server."""


@runs_group.command("list")
@click.option("-e", "--experiment", default="", help="only this experiment's runs")
@click.option("-m", "--max-size", type=int, default=20, show_default=True)
@click.pass_context
def runs_list(ctx: click.Context, experiment: str, max_size: int) -> None:
    """Runs, newest first."""
    items = _client(ctx).list_runs(experiment=experiment, limit=max_size)
    _emit(ctx, items, _RUN_HEADERS, _run_rows(items))


@runs_group.command("get")
@click.argument("run_id")
@click.pass_context
def runs_get(ctx: click.Context, run_id: str) -> None:
    """One run, with its tasks."""
    info = _client(ctx).get_run(run_id)
    _emit(ctx, info, _RUN_HEADERS, _run_rows([info]))
    if ctx.obj["output"] == "table":
        for task in info.tasks:
            click.echo(f"  {task.name:<16} {task.state:<10} {_when(task.start_time)} -> "
                       f"{_when(task.end_time)}")
        if info.error:
            click.echo(f"error: {info.error}")


@runs_group.command("wait")
@click.argument("run_id")
@click.option("--timeout", type=float, default=6 * 3600.0, help="seconds to wait at most")
@click.option("--poll", type=float, default=2.0, help="seconds between polls")
@click.pass_context
def runs_wait(ctx: click.Context, run_id: str, timeout: float, poll: float) -> None:
    """Wait for RUN_ID to end; exit 0 if it SUCCEEDED, 1 if not, 3 on timeout."""
    _wait(ctx, _client(ctx), run_id, timeout, poll)


@cli.group("schedule")
def schedule_group() -> None:
    """Recurring runs: create, list, update, enable, disable, delete."""


@schedule_group.command("create")
@click.argument("pipeline")
@click.option("--name", required=True, help="the schedule's name")
@click.option("--cron", default="",
              help="six fields, seconds first: '0 0 3 * * *' is 03:00 daily; or @hourly, "
                   "@daily, '@every 90s'")
@click.option("--interval", type=int, default=None, help="or: every N seconds")
@click.option("-p", "--param", "pairs", multiple=True, metavar="NAME=VALUE")
@click.option("-f", "--params-file", default="")
@click.option("--version", default="", help="version name or id (default: newest)")
@click.option("-e", "--experiment", default="kfp-ct", show_default=True)
@click.option("--max-concurrency", type=int, default=1, show_default=True,
              help="active runs of this schedule at once (1..10)")
@click.option("--catchup/--no-catchup", default=False, show_default=True,
              help="after a pause, run every missed slot (catchup) or only the latest")
@click.option("--start-time", default="", help="RFC 3339, e.g. 2026-12-01T00:00:00Z")
@click.option("--end-time", default="")
@click.option("--disabled", is_flag=True, help="create it disabled")
@click.option("--description", default="")
@click.pass_context
def schedule_create(ctx: click.Context, pipeline: str, name: str, cron: str,
                    interval: Optional[int], pairs: Sequence[str], params_file: str,
                    version: str, experiment: str, max_concurrency: int, catchup: bool,
                    start_time: str, end_time: str, disabled: bool,
                    description: str) -> None:
    """Run an uploaded PIPELINE on a cron or every --interval seconds."""
    from kfp_ct.pipelines.entrypoints import rules

    # The backend's rules first: no connection is made for a bad schedule.
    rules.check_schedule(cron, interval, max_concurrency, start_time, end_time,
                         names=("--cron", "--interval"))
    client = _client(ctx)
    params = _params(client, pipeline, version, pairs, params_file)
    made = client.schedule(pipeline, name, cron=cron, interval_s=interval, params=params,
                           version=version, experiment=experiment,
                           max_concurrency=max_concurrency, no_catchup=not catchup,
                           start_time=start_time or None, end_time=end_time or None,
                           enabled=not disabled, description=description)
    _emit(ctx, made, _SCHEDULE_HEADERS, _schedule_rows([made]))


@schedule_group.command("update")
@click.argument("schedule")
@click.option("--cron", default="", help="a new cron (six fields, seconds first)")
@click.option("--interval", type=int, default=None, help="or: every N seconds")
@click.option("-p", "--param", "pairs", multiple=True, metavar="NAME=VALUE",
              help="parameters to change (the others stay)")
@click.option("-f", "--params-file", default="")
@click.option("--version", default="", help="run this version (name or id) of its pipeline")
@click.option("--max-concurrency", type=int, default=None,
              help="active runs of this schedule at once (1..10)")
@click.option("--catchup/--no-catchup", default=None,
              help="after a pause, run every missed slot (catchup) or only the latest")
@click.option("--description", default=None)
@click.pass_context
def schedule_update(ctx: click.Context, schedule: str, cron: str, interval: Optional[int],
                    pairs: Sequence[str], params_file: str, version: str,
                    max_concurrency: Optional[int], catchup: Optional[bool],
                    description: Optional[str]) -> None:
    """Change SCHEDULE (id or name) in place: same id, runs in progress go on.

    Only what is given changes. `kfp-ct local-server` serves this (a kfp-ct extension); the
    KFP API has no update call, so on a Kubeflow cluster it refuses and prints the steps
    that replace the schedule instead (disable, create, delete) and what they lose."""
    from kfp_ct.pipelines.entrypoints.client import parse_params

    client = _client(ctx)
    params = {}
    if pairs or params_file:
        params = parse_params(client.schedule_spec(schedule, version), pairs, params_file,
                              pipeline=f"schedule {schedule!r}")
    made = client.update_schedule(
        schedule, cron=cron, interval_s=interval, params=params, version=version,
        max_concurrency=max_concurrency, no_catchup=None if catchup is None else not catchup,
        description=description)
    _emit(ctx, made, _SCHEDULE_HEADERS, _schedule_rows([made]))


@schedule_group.command("list")
@click.option("-e", "--experiment", default="", help="only this experiment's schedules")
@click.pass_context
def schedule_list(ctx: click.Context, experiment: str) -> None:
    """Schedules, newest first."""
    items = _client(ctx).schedules(experiment=experiment)
    _emit(ctx, items, _SCHEDULE_HEADERS, _schedule_rows(items))


def _schedule_action(name: str, doc: str):
    @schedule_group.command(name, help=doc)
    @click.argument("schedule")
    @click.pass_context
    def action(ctx: click.Context, schedule: str) -> None:
        client = _client(ctx)
        if name == "delete":
            job_id = client.delete_schedule(schedule)
            _emit(ctx, {"recurring_run_id": job_id, "deleted": True}, ("deleted",),
                  [[job_id]])
            return
        made = getattr(client, f"{name}_schedule")(schedule)
        _emit(ctx, made, _SCHEDULE_HEADERS, _schedule_rows([made]))

    return action


_schedule_action("enable", "Enable SCHEDULE (id or name).")
_schedule_action("disable", "Disable SCHEDULE (id or name): no new runs until enabled.")
_schedule_action("delete", "Delete SCHEDULE (id or name); its runs stay.")


# ------------------------------------------------------------------ monitoring


@cli.group("monitor")
def monitor_group() -> None:
    """The monitoring records kept at a model base."""


_HISTORY_HEADERS = ("#", "checked", "version", "decision", "findings", "rows", "realized",
                    "estimated", "launched")


@monitor_group.command("history")
@click.argument("base")
@click.option("--last", type=click.IntRange(min=1), default=None,
              help="only the last N monitoring runs (default: all)")
@click.option("--output", "output", type=click.Choice(["table", "json"]), default=None,
              help="table (default: the global --output) or json: the records themselves")
@click.pass_context
def monitor_history(ctx: click.Context, base: str, last: Optional[int],
                    output: Optional[str]) -> None:
    """The monitoring history of model base BASE, oldest first: one row per monitoring
    run (window, decision, realized and estimated metric, what was launched)."""
    from kfp_ct.components.common import history, registry

    registry.check_model_base(base)  # a mistyped path: one line, exit 2
    records = history.read(base, last=last)
    for line in records.skipped:
        click.echo(f"note: {line}", err=True)
    if not records:
        unreadable = f" ({len(records.skipped)} unreadable record(s))" if records.skipped \
            else ""
        raise KfpCtError(f"{base} has no monitoring history{unreadable}: a monitoring run "
                         f"adds a record under {history.folder(base)} for each window")
    if (output or ctx.obj["output"]) == "json":
        click.echo(json.dumps(list(records), indent=2, sort_keys=True))
        return
    rows = [[r.get("seq"), history.when(r),
             "-" if r.get("production_version") is None else r["production_version"],
             r.get("decision") or "-",
             ",".join(map(str, r.get("findings") or [])) or "-", history.rows_text(r),
             history.metric_text(history.performance(r, "realized")),
             history.metric_text(history.performance(r, "estimated")),
             history.launch_text(r.get("launch"))] for r in records]
    click.echo(_table(_HISTORY_HEADERS, rows))


# ------------------------------------------------------------------------ main


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the CLI; returns the exit status (see the module docstring)."""
    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # each command answers it
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="kfp-ct",
                 standalone_mode=False)
    except _Exit as done:
        return done.code
    except KfpCtError as exc:
        click.echo(f"error: {exc}", err=True)
        return EXIT_ERROR
    except (click.exceptions.Abort, KeyboardInterrupt):
        args = list(argv) if argv is not None else sys.argv[1:]
        # run-local / monitor-local answer a Ctrl-C during their run themselves; one
        # that reaches here came while the command was still being read.
        started = next((a for a in args if not a.startswith("-")), "") in _RUN_COMMANDS
        click.echo(_NOT_STARTED if started else "interrupted (Ctrl-C)", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        return EXIT_ERROR
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
