"""kfp-ct command line: run the training pipeline locally, manage a TF Serving model base.

    python -m pipelines.cli run-local --destination DEST [--data PATH] [--problem SPEC] ...
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


def _run_local(args: argparse.Namespace) -> int:
    import os

    from pipelines.local import run_local, training_report
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
    run = run_local(training_pipeline, arguments, workdir=args.workdir)
    print(training_report(run))
    return 0 if run.ok else 1


# name -> (help, add_arguments, handler)
SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None],
                             Callable[[argparse.Namespace], int]]] = {
    "run-local": ("run the training pipeline on this machine through kfp.local",
                  _add_run_local, _run_local),
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
