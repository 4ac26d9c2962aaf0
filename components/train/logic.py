"""Training (the role of TFX Trainer): Keras on the transformed TFRecords, streamed.

- Data: `tf.data` over the TFRecord shards (interleaved, in parallel only for shards read
  over the network, shuffled with a seed, parsed in batches, prefetched); nothing is
  loaded whole into memory.
- Hardware: see strategy.py (CPU / one GPU / Mirrored / TPU, mixed precision), and
  several workers (MultiWorkerMirroredStrategy from ``TF_CONFIG``, as a TFJob sets it):
  the global batch is the per-replica batch times the replicas of the whole cluster;
  every worker reads the input and keeps its share (see :func:`shard_policy`); all of
  them take part in saving (collective ops), but only the chief writes the model to
  ``model_dir`` and the durable checkpoints; the others save into a temporary folder
  they delete, and restore from the chief's durable copy.
- Resumption: `BackupAndRestore` after every epoch, mirrored to a durable folder
  (checkpoints.py: a parameter, or under the push destination; local or gs://); a
  killed or preempted run started again, in a new pod too, continues from the last epoch.
- Reproducible on CPU: seeds plus op determinism.
- Labels: the label vocabulary is the training split's, so an eval row whose class the
  training split never had carries the id -1 (no class), which must never index the
  softmax: `eval_*` here leave such rows out (a training row with -1, possible only with a
  user module, gets weight 0); evaluate (TFMA, on the raw rows) counts them as wrong.
- A model whose loss or eval metrics are not finite numbers is refused, not exported.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import shutil
import tempfile
import time

from kfp_ct.components.common import podenv, storage, tfenv  # noqa: F401
from kfp_ct.components.common.artifacts import SPLIT_FILE
from kfp_ct.components.common.errors import KfpCtError, ProblemSpecError, TrainingError
from kfp_ct.components.common.problem import ProblemSpec, load_problem, user_function
from kfp_ct.components.train import model as model_lib
from kfp_ct.components.train.checkpoints import DurableBackup, durable_location
from kfp_ct.components.train.strategy import make_strategy

DEFAULT_BATCH = 32
#: Training steps per call into the compiled train function (Keras' steps_per_execution)
#: on one worker, unless the user's model sets its own: the same steps in the same order,
#: without a return to Python between them (tests/test_train.py checks the same weights).
#: Small batches are mostly that per-step overhead: 5.8k -> 8.5k examples/s at batch 40.
STEPS_PER_EXECUTION = 50
MIN_STEPS_PER_EPOCH = 100


@dataclasses.dataclass
class TrainResult:
    metrics: dict
    chief: bool = True  # False on a non-chief worker, which wrote no model

    def summary(self) -> dict:
        return self.metrics


def shard_policy(n_files: int, workers: int) -> str:
    """How the input is split between ``workers`` (tf.data AutoShardPolicy name).

    FILE (each worker reads whole files of its own) only when the files divide evenly
    among the workers, so every worker gets the same share. Otherwise DATA: every worker
    reads the same stream (same files, same shuffle seed) and keeps its own part of each
    global batch. That is the case for penguins, which has one file per split: FILE
    would leave a worker with no file at all (TF refuses it). DATA costs each worker a
    full read and parse of the input, but the global batches are those one worker with
    the same global batch would see.
    """
    if workers > 1 and n_files >= workers and n_files % workers == 0:
        return "FILE"
    return "DATA"


def _reads_over_network(path: str) -> bool:
    """gs:// paths, and Vertex AI's Cloud Storage FUSE mount (/gcs/<bucket>/...)."""
    return storage.is_gcs(path) or path.startswith("/gcs/")


def make_dataset(files: list[str], spec: ProblemSpec, tft_output, batch_size: int,
                 shuffle: bool, seed: int, repeat: bool, workers: int = 1):
    """``workers`` > 1: shard across them with :func:`shard_policy`; ``batch_size`` is
    then the global batch, which the strategy splits between the replicas."""
    import tensorflow as tf

    feature_spec = tft_output.transformed_feature_spec()
    categorical = set(model_lib.categorical_sizes(tft_output))
    ds = tf.data.Dataset.from_tensor_slices(sorted(files))
    # Parallel reads only where a read waits on the network: a thread hand-off per record
    # costs more than reading a local file (penguins records: 37k/s parallel, 940k/s
    # plain). Deterministic either way: the same record order.
    remote = any(_reads_over_network(f) for f in files)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=max(1, min(4, len(files))),
                       num_parallel_calls=tf.data.AUTOTUNE if remote else None,
                       deterministic=True)
    if shuffle:
        ds = ds.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=repeat)

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, feature_spec)
        label = parsed.pop(spec.label)
        features = model_lib.as_model_inputs(parsed, categorical)
        if spec.task != "classification" or not label.dtype.is_integer:
            return features, label
        # -1: a class outside the training split's vocabulary, never an index.
        known = tf.reshape(label >= 0, [-1])
        if repeat:  # training: weight 0, so the loss skips it and batch shapes stay static
            return (features, tf.where(label >= 0, label, tf.zeros_like(label)),
                    tf.cast(known, tf.float32))
        # evaluation: the row is left out, so the loss and every metric skip it
        features = {k: tf.boolean_mask(v, known) for k, v in features.items()}
        return features, tf.boolean_mask(label, known)

    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(
        tf.data.AUTOTUNE)
    if workers > 1:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = getattr(
            tf.data.experimental.AutoShardPolicy, shard_policy(len(files), workers))
        ds = ds.with_options(options)
    return ds


def _shards(examples_dir: str, split: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(examples_dir, split, "*.tfrecord")))
    if not files:
        raise KfpCtError(f"{examples_dir}/{split}: no transformed TFRecord shards "
                         "(is this the output of the transform component?)")
    return files


class _Progress:
    """Keras callback (built lazily so this module imports without TF): epochs actually run."""

    @staticmethod
    def make():
        import tf_keras as keras

        class Progress(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.first_epoch = None
                self.epochs_run = 0
                self.started = None
                self.train_seconds = 0.0

            def on_epoch_begin(self, epoch, logs=None):
                if self.first_epoch is None:
                    self.first_epoch = epoch
                self.started = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.epochs_run += 1
                self.train_seconds += time.perf_counter() - self.started
                print(f"[train] epoch {epoch + 1} done: "
                      + ", ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items()), flush=True)

        return Progress()


def build_model(spec: ProblemSpec, tft_output):
    builder = user_function(spec, "build_model", required=False)
    if builder is None:
        return model_lib.build_default_model(spec, tft_output)
    try:
        model = builder(spec, tft_output)
    except Exception as exc:  # the user's code: say whose it is
        raise ProblemSpecError(f"build_model of {spec.module_file} raised "
                               f"{type(exc).__name__}: {exc}") from exc
    if not hasattr(model, "fit") or not getattr(model, "optimizer", None):
        raise ProblemSpecError(f"build_model of {spec.module_file} must return a compiled "
                               f"tf_keras.Model, got {type(model).__name__}")
    return model


#: Libraries written to run as graph code already, which AutoGraph would transpile anyway.
_GRAPH_CODE_PACKAGES = ("tf_keras", "tensorflow_transform")


def _skip_autograph_for_graph_libraries() -> None:
    """Tells AutoGraph not to transpile tf_keras' or TF Transform's own code.

    TF's AutoGraph skips `keras` (written to run as graph code already) but not the
    `tf_keras` package, which holds the same code: every model.fit then spends about 10 s
    converting Keras internals. Likewise TF Transform's Keras layer, which the serving
    signature calls: converting its code was 2-3 s of the export. User code (a custom
    train_step, a model's call) is still converted; the user's preprocessing_fn is a
    loaded SavedModel function by then, not Python.
    """
    from tensorflow.python.autograph.core import config as autograph_config

    for package in _GRAPH_CODE_PACKAGES:
        if not any(getattr(r, "_prefix", None) == package
                   for r in autograph_config.CONVERSION_RULES):
            autograph_config.CONVERSION_RULES = (
                (autograph_config.DoNotConvert(package),) + tuple(autograph_config.CONVERSION_RULES))


def _check_inputs(transform_graph_dir: str, examples_dir: str) -> None:
    """Names the input that is not transform's output before any TensorFlow work."""
    for path, needed, what in ((transform_graph_dir, "transform_fn", "transform graph"),
                               (examples_dir, SPLIT_FILE, "transformed examples")):
        if not storage.exists(storage.join(path, needed)):
            raise KfpCtError(f"train: the {what} at {path} has no {needed}: is it the "
                             "output of kfp-ct's transform?")


def run_train(transform_graph_dir: str, examples_dir: str, problem: str, model_dir: str,
              train_steps: int = 2000, accelerator: str = "auto", checkpoint_dir: str = "",
              seed: int = 42, steps_per_epoch: int = 0, checkpoint_root: str = "",
              push_destination: str = "", run_id: str = "") -> TrainResult:
    """Trains, evaluates on the transformed eval split, and exports the serving model.

    Args:
        train_steps: total optimizer steps (batches).
        steps_per_epoch: steps between checkpoints; 0 means one pass over the train split
            (at least MIN_STEPS_PER_EPOCH).
        checkpoint_dir: the durable folder (local or gs://) the training state is kept in
            after every epoch, and resumed from (checkpoints.py).
        checkpoint_root, push_destination, run_id: when checkpoint_dir is "", the durable
            folder is ``<checkpoint_root or push_destination/kfp_ct_checkpoints>/<run_id>/train``.
            With none of them, the state stays beside the model (`<model_dir>.backup`),
            which a new pod does not have.
    """
    import tensorflow as tf
    import tensorflow_transform as tft
    import tf_keras as keras

    spec = load_problem(problem)
    if train_steps < 1:
        raise KfpCtError(f"train_steps must be at least 1, got {train_steps}")
    durable = checkpoint_dir or durable_location(checkpoint_root, push_destination, run_id)
    if durable:  # before any work: a pod's own disk would not survive a retry
        podenv.check_durable(durable, what="the train checkpoint folder")
    _check_inputs(transform_graph_dir, examples_dir)
    # The strategy first: MultiWorkerMirroredStrategy must exist before any other TF op.
    strategy, plan = make_strategy(accelerator)
    _skip_autograph_for_graph_libraries()
    keras.utils.set_random_seed(seed)
    if plan.kind == "default":
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(plan.precision)
    tft_output = tft.TFTransformOutput(transform_graph_dir)
    with open(os.path.join(examples_dir, SPLIT_FILE)) as fh:
        split = json.load(fh)
    per_replica = int(spec.model.get("batch_size", DEFAULT_BATCH))
    batch_size = per_replica * strategy.num_replicas_in_sync
    if steps_per_epoch <= 0:
        # One pass over the data, but at least MIN_STEPS_PER_EPOCH: a checkpoint per
        # epoch costs about as much as 100 small steps.
        steps_per_epoch = max(MIN_STEPS_PER_EPOCH, math.ceil(split["train_rows"] / batch_size))
    steps_per_epoch = min(steps_per_epoch, train_steps)
    epochs = math.ceil(train_steps / steps_per_epoch)
    train_ds = make_dataset(_shards(examples_dir, "train"), spec, tft_output, batch_size,
                            shuffle=True, seed=seed, repeat=True, workers=plan.workers)
    eval_ds = make_dataset(_shards(examples_dir, "eval"), spec, tft_output, batch_size,
                           shuffle=False, seed=seed, repeat=False, workers=plan.workers)
    with strategy.scope():
        model = build_model(spec, tft_output)
    progress = _Progress.make()
    if plan.workers > 1:
        print(f"[train] worker {plan.task} of {plan.workers}"
              f"{' (chief)' if plan.chief else ''}: global batch {batch_size}", flush=True)
    if durable:
        backup = tempfile.mkdtemp(prefix="kfp-ct-backup-")
        # Every worker restores the chief's newest copy (they must all start from the same
        # epoch); only the chief uploads after each epoch.
        mirror = DurableBackup(durable, backup)
        resumed = mirror.restore()
        print(f"[train] durable checkpoints at {durable}"
              + (f": resuming from {resumed}" if resumed else ": none yet, starting fresh"),
              flush=True)
        callbacks = [keras.callbacks.BackupAndRestore(backup)]
        callbacks += [mirror.callback()] if plan.chief else []
        callbacks += [progress]
    elif plan.workers > 1:
        # Several workers and nowhere durable: a worker's own disk cannot agree with the
        # others' on where to resume, so each starts from its empty folder.
        mirror = None
        backup = tempfile.mkdtemp(prefix="kfp-ct-backup-")
        callbacks = [keras.callbacks.BackupAndRestore(backup), progress]
    else:
        mirror = None
        backup = model_dir.rstrip("/") + ".backup"
        callbacks = [keras.callbacks.BackupAndRestore(backup), progress]
    if plan.workers == 1 and int(model.steps_per_execution.numpy()) == 1:
        model.steps_per_execution = STEPS_PER_EXECUTION
    model.fit(train_ds, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=0,
              callbacks=callbacks)
    model.steps_per_execution = 1  # the eval split's size is not known to Keras
    evaluated = model.evaluate(eval_ds, verbose=0, return_dict=True)
    broken = {k: float(v) for k, v in evaluated.items() if not math.isfinite(float(v))}
    if broken:
        raise TrainingError(
            f"training on {examples_dir} gave a model whose eval metrics are not finite "
            f"numbers ({broken}): the model is not exported; look for features that the "
            f"preprocessing turns into inf or NaN (e.g. a log or a division by zero in "
            f"{spec.module_file or 'the preprocessing'})")
    # Every worker saves (the save runs collective ops); only the chief's copy is kept.
    export_dir = model_dir if plan.chief else tempfile.mkdtemp(prefix="kfp-ct-worker-model-")
    try:
        model_lib.export_serving_model(model, spec, tft_output, export_dir)
    except (TypeError, ValueError) as exc:
        raise ProblemSpecError(
            f"the model cannot be exported with a serving signature over serialized "
            f"tf.Examples: {type(exc).__name__}: {exc}") from exc
    finally:
        if not plan.chief:
            shutil.rmtree(export_dir, ignore_errors=True)
    if mirror is not None:
        if plan.chief:
            mirror.clear()
        shutil.rmtree(backup, ignore_errors=True)
    elif plan.workers > 1:
        shutil.rmtree(backup, ignore_errors=True)
    steps_run = progress.epochs_run * steps_per_epoch
    metrics = {f"eval_{k}": float(v) for k, v in evaluated.items()}
    metrics.update({
        "train_steps": float(epochs * steps_per_epoch),
        "steps_run_this_attempt": float(steps_run),
        "resumed_from_epoch": float(progress.first_epoch or 0),
        "examples_per_second": (steps_run * batch_size / progress.train_seconds
                                if progress.train_seconds else 0.0),
        "replicas": float(strategy.num_replicas_in_sync),
        "batch_size": float(batch_size),
    })
    if plan.workers > 1:
        metrics["workers"] = float(plan.workers)
    return TrainResult(metrics={**metrics, "strategy": plan.describe()}, chief=plan.chief)
