"""KFP wrapper of validate: artifacts in, plain function call, artifacts out."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Output

from kfp_ct.components.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def validate(
    data: Input[Dataset],
    problem: str,
    statistics: Output[Artifact],
    schema: Output[Artifact],
    anomalies: Output[Artifact],
    report: Output[HTML],
    schema_path: str = "",
    push_destination: str = "",
    strict: bool = False,
    beam_args: list = [],
    training_thresholds: str = "",
    training_slices: list = [],
    training_steps: int = 0,
):
    """Validates the input data with TFDV: statistics, schema, anomalies and a report.

    Args:
        data: The data window, a Dataset whose URI is CSV or Parquet: a file, a folder or
            a glob, local or gs://; "bundled:penguins" for the Palmer penguins data that
            ships with the package. The shipped pipelines make it from their data_path
            parameter with dsl.importer; a user's own ingest step can hand one on.
        problem: The problem spec: inline JSON or a path to a JSON file.
        schema_path: A curated schema.pbtxt; empty: the schema kept with the production
            model at push_destination, or one inferred from this data on the first run.
        push_destination: The serving model base (used to find the production schema).
        strict: Fail the run when the data has anomalies against the schema.
        beam_args: Beam pipeline options; empty: in-process streaming statistics.
        training_thresholds: The gate thresholds of the training run this task starts.
        training_slices: The evaluation slices of that run.
        training_steps: That run's training steps; > 0 means "first task of a training
            run": the run's inputs (these three, the problem spec, the data's columns,
            that push_destination can be written) are checked before any data is read,
            so a typo fails here in seconds and not in a later task; an eval split
            smaller than the thresholds' min_examples is refused before transform.

    Returns:
        statistics: TFDV DatasetFeatureStatisticsList (FeatureStats.pb).
        schema: The schema used (schema.pbtxt).
        anomalies: TFDV Anomalies (SchemaDiff.pb) and anomalies.json.
        report: HTML feature table and anomalies, rendered by the Kubeflow UI.
    """
    import time

    from kfp_ct.components.validate.logic import run_validate

    from kfp_ct.components.common.artifacts import check_inputs, data_location, stamp_outputs

    started = time.perf_counter()
    check_inputs("validate", data=data)
    data_path = data_location(data)
    if training_steps:
        from kfp_ct.components.validate.preflight import check_training_inputs

        check_training_inputs(data_path=data_path, problem=problem,
                              thresholds=training_thresholds, slices=list(training_slices),
                              train_steps=training_steps, push_destination=push_destination)
    result = run_validate(
        data_path=data_path, problem=problem, statistics_dir=statistics.path,
        schema_dir=schema.path, anomalies_dir=anomalies.path, report_path=report.path,
        schema_path=schema_path, push_destination=push_destination, strict=strict,
        beam_args=list(beam_args),
        training_thresholds=training_thresholds if training_steps else None)
    for artifact in (statistics, schema, anomalies, report):
        artifact.metadata.update(result.summary())
    stamp_outputs("validate", statistics=statistics, schema=schema, anomalies=anomalies)
    print(f"[kfp-ct] timing task=validate logic_s={time.perf_counter() - started:.2f}")
