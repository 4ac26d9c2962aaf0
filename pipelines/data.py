"""The data half on its own: validate -> transform.

Useful to check new data and prepare training inputs without training; the training
pipeline (training.py) starts with the same two tasks.
"""

# No `from __future__ import annotations` here: kfp reads the pipeline signature at runtime.

from kfp import dsl

from kfp_ct.components.transform.component import transform
from kfp_ct.components.validate.component import validate
from kfp_ct.pipelines import cluster
from kfp_ct.pipelines.training import BUNDLED_PENGUINS, PENGUINS_PROBLEM, import_dataset


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
        data = import_dataset(data_path).output
        validated = validate(data=data, problem=problem, schema_path=schema_path,
                             push_destination=push_destination, strict=strict, beam_args=beam_args)
        cluster.configure(validated, "validate", settings)
        transformed = transform(data=data, problem=problem,
                                schema=validated.outputs["schema"], beam_args=beam_args)
        cluster.configure(transformed, "transform", settings)

    return data_pipeline


data_pipeline = make_data_pipeline()
