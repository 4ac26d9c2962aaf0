"""Benchmark: training throughput streamed from TFRecords vs the same model on in-memory tensors.

    .venv/bin/python -m tests.benchmarks.bench_train [--rows 200000] [--steps 2000] [--batch 256]

Both runs use the same transformed data (penguins-like rows from the seeded generator,
through our transform), the same default model, batch size, step count and steps per
call into the train function (``STEPS_PER_EXECUTION``, as run_train); throughput is
measured after a warm-up epoch (tracing excluded) with a Keras callback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _timer():
    import tf_keras as keras

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    return Timer()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args(argv)

    from kfp_ct.components.common import tfenv  # noqa: F401
    from kfp_ct.components.common.problem import load_problem
    from kfp_ct.pipelines.entrypoints.synth import write_penguins_like
    from kfp_ct.components.train import logic, model as model_lib
    from kfp_ct.components.transform.logic import run_transform

    import numpy as np
    import tensorflow as tf
    import tensorflow_transform as tft

    spec_path = os.path.join(ROOT, "pipelines", "penguins", "problem.json")
    spec_dict = json.load(open(spec_path))
    spec_dict["model"]["batch_size"] = args.batch
    spec = load_problem(json.dumps(spec_dict))
    logic._skip_autograph_for_graph_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data.csv")
        write_penguins_like(data, args.rows, seed=0)
        run_transform(data, json.dumps(spec_dict), f"{tmp}/graph", f"{tmp}/ex", f"{tmp}/raw")
        tft_output = tft.TFTransformOutput(f"{tmp}/graph")
        files = sorted(tf.io.gfile.glob(f"{tmp}/ex/train/*.tfrecord"))
        epochs, per_epoch = 5, args.steps // 5

        streamed_ds = logic.make_dataset(files, spec, tft_output, args.batch, shuffle=True,
                                         seed=1, repeat=True)
        # In memory: the same parsed tensors, materialized once, then sliced.
        parsed = next(iter(logic.make_dataset(files, spec, tft_output, 10**9, shuffle=False,
                                              seed=1, repeat=False)))
        features, labels = parsed
        memory_ds = (tf.data.Dataset.from_tensor_slices(
            ({k: v.numpy() for k, v in features.items()}, labels.numpy()))
            .shuffle(10_000, seed=1).repeat().batch(args.batch, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE))
        results = {}
        for name, ds in (("in_memory", memory_ds), ("streamed_tfrecord", streamed_ds)):
            tf.keras.utils.set_random_seed(1)
            model = model_lib.build_default_model(spec, tft_output)
            model.steps_per_execution = logic.STEPS_PER_EXECUTION  # as run_train trains
            timer = _timer()
            model.fit(ds, epochs=epochs, steps_per_epoch=per_epoch, verbose=0, callbacks=[timer])
            steady = sum(timer.times[1:])  # the first epoch holds the tracing
            results[name] = per_epoch * (epochs - 1) * args.batch / steady
        print(json.dumps({
            "rows": args.rows, "batch": args.batch, "steps": per_epoch * epochs,
            "examples_per_s": {k: round(v) for k, v in results.items()},
            "ratio_streamed_to_memory": round(results["streamed_tfrecord"] / results["in_memory"], 3),
            "train_rows_in_memory": int(labels.shape[0]),
        }))
        del np
    return 0


if __name__ == "__main__":
    sys.exit(main())
