"""The data half on its own: validate -> transform.

Useful to check new data and prepare training inputs without training; the training
pipeline (training.py) starts with the same two tasks.
"""

# No `from __future__ import annotations` here: kfp reads the pipeline signature at runtime.

from kfp import dsl

from components.transform.component import transform
from components.validate.component import validate
from pipelines import cluster
from pipelines.training import BUNDLED_PENGUINS, PENGUINS_PROBLEM


def make_data_pipeline(settings: cluster.Settings = cluster.DEFAULT):
    """The data pipeline; ``settings``: pipelines/cluster.py."""

    @dsl.pipeline(name="kfp-ct-data",
                  description="Validate data with TFDV and preprocess it with TF Transform.")
    def data_pipeline(
        data_path: str = BUNDLED_PENGUINS,
        problem: str = PENGUINS_PROBLEM,
        schema_path: str = "",
        push_destination: str = "",
        strict: bool = False,
        beam_args: list = [],
    ):
        validated = validate(data_path=data_path, problem=problem, schema_path=schema_path,
                             push_destination=push_destination, strict=strict, beam_args=beam_args)
        cluster.configure(validated, "validate", settings)
        transformed = transform(data_path=data_path, problem=problem,
                                schema=validated.outputs["schema"], beam_args=beam_args)
        cluster.configure(transformed, "transform", settings)

    return data_pipeline


data_pipeline = make_data_pipeline()
