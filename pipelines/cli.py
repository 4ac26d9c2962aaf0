"""kfp-ct command line: run the training pipeline locally, manage a TF Serving model base.

    python -m pipelines.cli run-local --destination DEST [--data PATH] [--problem SPEC] ...
    python -m pipelines.cli monitor-local --model-base DEST --window PATH [--training-data ...]
    python -m pipelines.cli versions DEST
    python -m pipelines.cli rollback DEST VERSION [--reason TEXT]

Each subcommand is a ``(add_arguments, handler)`` pair in ``SUBCOMMANDS``; a handler
takes the parsed arguments and returns an exit status. A :class:`KfpCtError` prints
``error: <message>`` to stderr and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from components.common.errors import KfpCtError
from components.common.params import json_object

EXIT_ERROR = 2


def _add_versions(p: argparse.ArgumentParser) -> None:
    p.add_argument("dest", help="model base: local path or gs://BUCKET/PATH")


def _versions(args: argparse.Namespace) -> int:
    from components.common import registry

    sys.stdout.write(registry.describe(args.dest))
    return 0


def _add_rollback(p: argparse.ArgumentParser) -> None:
    p.add_argument("dest", help="model base: local path or gs://BUCKET/PATH")
    p.add_argument("version", type=int, help="the complete version to serve again")
    p.add_argument("--reason", default="", help="why, kept in the new version's metadata")


def _rollback(args: argparse.Namespace) -> int:
    from components.common import registry

    info = registry.rollback(args.dest, args.version, reason=args.reason)
    print(f"Rolled back {args.dest} to version {args.version}: "
          f"now serving version {info.version} ({info.path})")
    return 0


def _add_run_local(p: argparse.ArgumentParser) -> None:
    from pipelines.training import BUNDLED_PENGUINS, DEFAULT_THRESHOLDS, PENGUINS_PROBLEM

    p.add_argument("--destination", required=True,
                   help="TF Serving model base to push to: local path or gs://BUCKET/PATH")
    p.add_argument("--data", default=BUNDLED_PENGUINS,
                   help="CSV/Parquet file, folder or glob (default: the bundled penguins)")
    p.add_argument("--problem", default=PENGUINS_PROBLEM,
                   help="problem spec: inline JSON or a path (default: penguins)")
    p.add_argument("--thresholds", default=DEFAULT_THRESHOLDS, help="gate thresholds (JSON)")
    p.add_argument("--schema", default="", help="curated schema.pbtxt")
    p.add_argument("--strict", action="store_true", help="fail on data anomalies")
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu", "tpu"])
    p.add_argument("--slice", action="append", dest="slices", default=None,
                   help="raw feature to slice evaluation by (repeatable; default: island)")
    p.add_argument("--beam-arg", action="append", dest="beam_args", default=[],
                   help="Beam pipeline option, e.g. --beam-arg=--direct_num_workers=2")
    p.add_argument("--workdir", default="local_outputs", help="where run folders go")
    p.add_argument("--params", default="",
                   help="JSON object of further training pipeline parameters (applied last)")
    p.add_argument("--trigger", default="",
                   help="JSON: why this training runs (kept in the pushed version's metadata)")
    p.add_argument("--summary-json", default="",
                   help="also write the outcome (pushed version, gate, error) to this file")


def _write_summary(path: str, summary: dict) -> None:
    import json
    import os

    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as fh:
            json.dump(summary, fh, indent=1, sort_keys=True)


def _run_local(args: argparse.Namespace) -> int:
    import os

    from pipelines.local import run_local, training_report, training_summary
    from pipelines.training import training_pipeline

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
    arguments.update(params)
    run = run_local(training_pipeline, arguments, workdir=args.workdir)
    print(training_report(run))
    _write_summary(args.summary_json, training_summary(run))
    return 0 if run.ok else 1


def _add_monitor_local(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-base", required=True,
                   help="TF Serving model base of the production model: local path or gs://")
    p.add_argument("--window", default="",
                   help="fresh data: CSV/Parquet file, folder or glob (e.g. .../date=2026-11-23/)")
    p.add_argument("--request-log", default="",
                   help="TF Serving request log: PredictionLog TFRecord file, folder or glob")
    p.add_argument("--settings", default="",
                   help='drift settings JSON, e.g. \'{"numeric": 0.02, "categorical": 0.05, '
                        '"features": {"island": 0.1}, "min_rows": 100}\'')
    p.add_argument("--training-data", default="",
                   help="training window to retrain on: path, folder or glob")
    p.add_argument("--training-partitions", type=int, default=0,
                   help="with a glob: train on the newest N matches only (0: all)")
    p.add_argument("--retrain", default="local", choices=["local", "off"],
                   help="local: run the training pipeline here when drift is found; off: "
                        "record only")
    p.add_argument("--cooldown-hours", type=float, default=0.0)
    p.add_argument("--params", default="",
                   help="JSON object of training pipeline parameters for the retraining")
    p.add_argument("--workdir", default="local_outputs", help="where run folders go")
    p.add_argument("--summary-json", default="", help="also write the outcome to this file")


def _monitor_local(args: argparse.Namespace) -> int:
    import json
    import os

    from pipelines.local import monitoring_report, monitoring_summary, run_local
    from pipelines.monitoring import monitoring_pipeline

    if not args.window and not args.request_log:
        raise KfpCtError("give --window (fresh data) or --request-log, or both")
    if args.retrain != "off" and not args.training_data:
        raise KfpCtError("--training-data is needed to retrain (or use --retrain off)")
    params = json_object(args.params, "--params")
    if args.settings:
        from components.drift.logic import parse_settings

        parse_settings(args.settings)  # a typo fails here, before any task runs
    base = args.model_base if "://" in args.model_base else os.path.abspath(args.model_base)

    def local_path(path: str) -> str:
        if not path or "://" in path:
            return path
        return ",".join(os.path.abspath(p) for p in path.split(","))

    # What can be known before any task starts is checked here, in about a second.
    from components.common.data import resolve_inputs
    from components.drift.logic import load_baseline

    load_baseline(base)
    if args.window:
        resolve_inputs(local_path(args.window))

    arguments = {
        "model_base": base, "window_path": local_path(args.window),
        "request_log_path": local_path(args.request_log), "drift_settings": args.settings,
        "training_data": local_path(args.training_data),
        "training_partitions": args.training_partitions, "retrain_mode": args.retrain,
        "cooldown_hours": args.cooldown_hours,
        "training_params": json.dumps(params),
    }
    run = run_local(monitoring_pipeline, arguments, workdir=args.workdir)
    print(monitoring_report(run))
    summary = monitoring_summary(run)
    _write_summary(args.summary_json, summary)
    if not run.ok:
        return 1
    launch = summary.get("launch") or {}
    if launch.get("launched") and (launch.get("result") or {}).get("state") == "FAILED":
        return 1
    return 0


# name -> (help, add_arguments, handler)
SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None],
                             Callable[[argparse.Namespace], int]]] = {
    "run-local": ("run the training pipeline on this machine through kfp.local",
                  _add_run_local, _run_local),
    "monitor-local": ("check fresh data for drift on this machine; retrain when it moved",
                      _add_monitor_local, _monitor_local),
    "versions": ("list the versions under a model base (* marks production)",
                 _add_versions, _versions),
    "rollback": ("republish an earlier version as the new newest one",
                 _add_rollback, _rollback),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kfp-ct", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_arguments, handler) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KfpCtError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
