"""The training pipeline: validate -> transform -> train -> evaluate -> gate -> push.

One compiled graph runs locally (kfp.local) and on a cluster. Decisions live inside the
components (the gate writes a blessing, push reads it and records "not pushed"), so the
graph needs no dsl.If, which kfp.local cannot run (see shared/DESIGN.md).
"""

# No `from __future__ import annotations` here: kfp reads the pipeline signature at runtime.


import json
import pathlib

from kfp import dsl, kubernetes

from components.evaluate.component import evaluate
from components.gate.component import gate
from components.push.component import push
from components.train.component import train, train_gpu
from components.transform.component import transform
from components.validate.component import validate

PENGUINS_PROBLEM = json.dumps(
    json.loads((pathlib.Path(__file__).parent / "penguins" / "problem.json").read_text()),
    sort_keys=True, separators=(",", ":"))
BUNDLED_PENGUINS = "bundled:penguins"  # components.common.data.BUNDLED_PENGUINS
# Empty: the gate's defaults for the problem's task (components/common/thresholds.py,
# TASK_DEFAULTS): beat the no-skill predictor, at most a small step back from production,
# at least 50 eval rows. Nothing here is sized for penguins, so another problem compiled
# from this YAML gets a gate that fits it.
DEFAULT_THRESHOLDS = ""
TRAIN_TIMEOUT_S = 4 * 3600


def make_training_pipeline(gpu: bool = False):
    """The training pipeline; gpu=True trains in the GPU image on one nvidia.com/gpu."""
    train_op = train_gpu if gpu else train

    @dsl.pipeline(
        name="kfp-ct-training-gpu" if gpu else "kfp-ct-training",
        description="Validate, transform, train, evaluate against production, gate and "
                    "push a TensorFlow model to a versioned TF Serving model base.")
    def training_pipeline(
        push_destination: str,
        data_path: str = BUNDLED_PENGUINS,
        problem: str = PENGUINS_PROBLEM,
        schema_path: str = "",
        strict: bool = False,
        beam_args: list = [],
        train_steps: int = 300,
        accelerator: str = "gpu" if gpu else "auto",
        seed: int = 42,
        thresholds: str = DEFAULT_THRESHOLDS,
        slices: list = [],
        trigger: str = "",
    ):
        # The first task checks the whole run's inputs before any heavy work.
        validated = validate(data_path=data_path, problem=problem, schema_path=schema_path,
                             push_destination=push_destination, strict=strict,
                             beam_args=beam_args, training_thresholds=thresholds,
                             training_slices=slices, training_steps=train_steps)
        # Reads external data that can change under the same path: never cached.
        validated.set_caching_options(False)
        transformed = transform(data_path=data_path, problem=problem,
                                schema=validated.outputs["schema"], beam_args=beam_args)
        transformed.set_caching_options(False)
        trained = train_op(problem=problem,
                           transform_graph=transformed.outputs["transform_graph"],
                           transformed_examples=transformed.outputs["transformed_examples"],
                           train_steps=train_steps, accelerator=accelerator, seed=seed)
        trained.set_retry(num_retries=2, backoff_duration="60s")
        kubernetes.set_timeout(trained, TRAIN_TIMEOUT_S)
        if gpu:
            trained.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
            kubernetes.add_toleration(trained, key="nvidia.com/gpu", operator="Exists",
                                      effect="NoSchedule")
        evaluated = evaluate(problem=problem, push_destination=push_destination,
                             model=trained.outputs["model"],
                             raw_eval=transformed.outputs["raw_eval"], slices=slices)
        # The baseline is whatever is in production now: never cached.
        evaluated.set_caching_options(False)
        gated = gate(thresholds=thresholds, evaluation=evaluated.outputs["evaluation"])
        gated.set_caching_options(False)
        pushed = push(problem=problem, push_destination=push_destination,
                      model=trained.outputs["model"], blessing=gated.outputs["blessing"],
                      raw_eval=transformed.outputs["raw_eval"],
                      statistics=validated.outputs["statistics"],
                      schema=validated.outputs["schema"],
                      evaluation=evaluated.outputs["evaluation"],
                      run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                      run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, trigger=trigger)
        pushed.set_caching_options(False)

    return training_pipeline


training_pipeline = make_training_pipeline()
training_pipeline_gpu = make_training_pipeline(gpu=True)
