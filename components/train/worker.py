"""The entry point a training replica runs: one process of a multi-worker training.

    python -m kfp_ct.components.train.worker --transform-graph URI --examples URI \
        --problem JSON_OR_PATH --model URI [--metrics URI] [--train-steps N] ...

A TFJob (components/train/tfjob.py) starts one of these per replica, with ``TF_CONFIG``
set by the Training Operator; on its own (no ``TF_CONFIG``) it trains on one machine.
Inputs may be local or ``gs://`` (``STORAGE_EMULATOR_HOST`` is honoured): gs:// inputs
are downloaded to a temporary folder first, since TF Transform and tf.data read them
here as local files. Every worker trains (components/train/logic.py ``run_train``); the
chief alone uploads the model to ``--model`` (``saved_model.pb`` last, so a reader
never sees half a model) and then writes the metrics JSON at ``--metrics`` (default
``<model>.metrics.json``, beside the model). Other workers write nothing there.

Exit status: 0 done; 1 training failed (the Training Operator restarts the replica under
restartPolicy OnFailure, and it resumes from the durable checkpoints); 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

from kfp_ct.components.common import storage, tfenv  # noqa: F401
from kfp_ct.components.common.errors import KfpCtError

METRICS_SUFFIX = ".metrics.json"


def metrics_location(model_uri: str) -> str:
    """Where the chief writes its metrics by default: beside the model folder."""
    return model_uri.rstrip("/") + METRICS_SUFFIX


def _local(uri: str, scratch: str, name: str) -> str:
    """A local folder holding ``uri``'s tree (downloaded when it is gs://)."""
    if not storage.is_gcs(uri):
        if not os.path.isdir(uri):
            raise KfpCtError(f"--{name} {uri}: no such directory")
        return uri
    target = os.path.join(scratch, name)
    print(f"[worker] downloading {uri} -> {target}", flush=True)
    return storage.download(uri, target)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kfp_ct.components.train.worker",
                                description=__doc__.splitlines()[0])
    p.add_argument("--transform-graph", required=True, help="TF Transform output (local, gs://)")
    p.add_argument("--examples", required=True, help="transformed TFRecords (local, gs://)")
    p.add_argument("--problem", required=True, help="the problem spec: JSON text or a path")
    p.add_argument("--model", required=True, help="where the chief puts the SavedModel")
    p.add_argument("--metrics", default="", help="metrics JSON (default <model>.metrics.json)")
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--steps-per-epoch", type=int, default=0)
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--checkpoint-dir", default="")
    p.add_argument("--checkpoint-root", default="")
    p.add_argument("--push-destination", default="")
    p.add_argument("--run-id", default="")
    return p


def run_worker(args: argparse.Namespace) -> dict:
    """Trains this replica's part; returns the metrics (the chief has uploaded them)."""
    from kfp_ct.components.train.logic import run_train

    scratch = tempfile.mkdtemp(prefix="kfp-ct-worker-")
    try:
        graph = _local(args.transform_graph, scratch, "transform-graph")
        examples = _local(args.examples, scratch, "examples")
        local_model = os.path.join(scratch, "model")
        result = run_train(graph, examples, args.problem, local_model,
                           train_steps=args.train_steps, accelerator=args.accelerator,
                           checkpoint_dir=args.checkpoint_dir, seed=args.seed,
                           steps_per_epoch=args.steps_per_epoch,
                           checkpoint_root=args.checkpoint_root,
                           push_destination=args.push_destination, run_id=args.run_id)
        if not result.chief:
            print("[worker] not the chief: the chief writes the model", flush=True)
            return result.metrics
        storage.upload_tree(local_model, args.model)
        target = args.metrics or metrics_location(args.model)
        storage.write_text(target, json.dumps(result.metrics, sort_keys=True))
        print(f"[worker] model at {args.model}, metrics at {target}", flush=True)
        return result.metrics
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        run_worker(args)
    except KfpCtError as exc:
        print(f"[worker] training failed: {type(exc).__name__}: {exc}", file=sys.stderr,
              flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
