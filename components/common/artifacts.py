"""File names inside the artifacts that one component writes and another reads.

One place for them, so that renaming one cannot leave a reader looking for the old name.
(The layout of a pushed version is the registry's: components/common/registry.py.)
"""

from __future__ import annotations

from kfp_ct.components.common.errors import KfpCtError


class WiringError(KfpCtError):
    """An artifact of one kind wired to an input that takes another."""

STATS_FILE = "FeatureStats.pb"  # validate's statistics; push keeps them with a version
SCHEMA_FILE = "schema.pbtxt"  # validate's schema; push keeps it with a version
ANOMALIES_FILE = "SchemaDiff.pb"  # validate's TFDV anomalies
ANOMALIES_JSON = "anomalies.json"  # validate's anomalies, read by run-local's report
RAW_EVAL_FILE = "eval_raw.tfrecord"  # transform's raw eval rows: evaluate, push's canary
SPLIT_FILE = "split.json"  # transform's row counts per split, read by train
EVALUATION_JSON = "evaluation.json"  # evaluate's metrics, read by the gate and push
BLESSED = "BLESSED"  # the gate's marker files: one of the two is written
NOT_BLESSED = "NOT_BLESSED"
BLESSING_JSON = "blessing.json"  # the gate's decision, read by push
PUSHED = "PUSHED"  # push's marker files: one of the two is written
NOT_PUSHED = "NOT_PUSHED"
PUSH_JSON = "push.json"  # push's record, read by run-local's report
ROLLED_OUT = "ROLLED_OUT"  # the rollout's marker files: one of the two is written
NOT_ROLLED_OUT = "NOT_ROLLED_OUT"
ROLLOUT_JSON = "rollout.json"  # the rollout's record
NOTICE_JSON = "notice.json"  # announce_failure's record: outcome, delivery of the notice

# ------------------------------------------------------------------ artifact kinds
#
# What each artifact that flows between our components is. kfp 2.13 accepts only the
# `system` and `google` namespaces in an artifact's schema_title (kfp.dsl.types.type_utils.
# validate_schema_title, at compile time and again in load_component_from_file;
# kubeflow/pipelines issue 11505), so a title of our own, such as kfp_ct.Schema, cannot be
# compiled or loaded by a user's kfp. Each artifact therefore has the closest system type
# (Dataset, Model, Artifact) and its kind in the metadata key "kind", which ML Metadata
# keeps as a custom property and the Kubeflow UI shows. The kinds are checked three times:
# kfp's own type check refuses a wiring across system types (a Model where a Dataset
# belongs); check_wiring refuses one across kinds in a compiled pipeline (compile.py runs it
# on every shipped pipeline, a user runs it on theirs); and each task refuses an input of
# another kind before it reads anything (check_inputs).

KIND_KEY = "kind"
STATISTICS = "kfp_ct.ExampleStatistics"  # validate: FeatureStats.pb (TFDV statistics)
SCHEMA = "kfp_ct.Schema"  # validate: schema.pbtxt (TFDV schema)
ANOMALIES = "kfp_ct.ExampleAnomalies"  # validate: SchemaDiff.pb, anomalies.json
TRANSFORM_GRAPH = "kfp_ct.TransformGraph"  # transform: transform_fn/, transformed_metadata/
TRANSFORMED_EXAMPLES = "kfp_ct.TransformedExamples"  # transform: train/ and eval/ shards
RAW_EXAMPLES = "kfp_ct.Examples"  # transform: eval_raw.tfrecord, the raw eval rows
TRAINED_MODEL = "kfp_ct.TrainedModel"  # train: a SavedModel with the serving signature
EVALUATION = "kfp_ct.ModelEvaluation"  # evaluate: evaluation.json
BLESSING = "kfp_ct.ModelBlessing"  # gate: blessing.json and a BLESSED / NOT_BLESSED marker
PUSHED_MODEL = "kfp_ct.PushedModel"  # push: push.json, a PUSHED / NOT_PUSHED marker
DRIFT_DECISION = "kfp_ct.MonitoringDecision"  # drift_check: drift.json
RETRAINING_LAUNCH = "kfp_ct.RetrainingLaunch"  # retrain_trigger: launch.json
ROLLOUT = "kfp_ct.Rollout"  # rollout: rollout.json and a ROLLED_OUT / NOT_ROLLED_OUT marker
RUN_NOTICE = "kfp_ct.RunNotice"  # announce_failure: notice.json

#: The train component in each of its variants (same inputs and outputs).
TRAIN_COMPONENTS = ("train", "train_gpu", "train_tpu", "train_tfjob")

#: (component, output) -> the kind that output carries.
OUTPUT_KINDS: dict[tuple[str, str], str] = {
    ("validate", "statistics"): STATISTICS,
    ("validate", "schema"): SCHEMA,
    ("validate", "anomalies"): ANOMALIES,
    ("transform", "transform_graph"): TRANSFORM_GRAPH,
    ("transform", "transformed_examples"): TRANSFORMED_EXAMPLES,
    ("transform", "raw_eval"): RAW_EXAMPLES,
    **{(train, "model"): TRAINED_MODEL
       for train in TRAIN_COMPONENTS},
    ("evaluate", "evaluation"): EVALUATION,
    ("gate", "blessing"): BLESSING,
    ("push", "pushed"): PUSHED_MODEL,
    ("drift_check", "decision"): DRIFT_DECISION,
    ("retrain_trigger", "launch"): RETRAINING_LAUNCH,
    ("rollout", "rollout"): ROLLOUT,
    ("announce_failure", "notice"): RUN_NOTICE,
}

#: A raw data input: any Dataset (a user's ingest step, an importer) except one of ours.
RAW_DATA = ""

#: (component, input) -> the kind it takes (RAW_DATA: raw rows, no kind of ours).
INPUT_KINDS: dict[tuple[str, str], str] = {
    ("validate", "data"): RAW_DATA,
    ("transform", "data"): RAW_DATA,
    ("transform", "schema"): SCHEMA,
    **{key: kind for train in TRAIN_COMPONENTS
       for key, kind in (((train, "transform_graph"), TRANSFORM_GRAPH),
                         ((train, "transformed_examples"), TRANSFORMED_EXAMPLES))},
    ("evaluate", "model"): TRAINED_MODEL,
    ("evaluate", "raw_eval"): RAW_EXAMPLES,
    ("gate", "evaluation"): EVALUATION,
    ("push", "model"): TRAINED_MODEL,
    ("push", "blessing"): BLESSING,
    ("push", "raw_eval"): RAW_EXAMPLES,
    ("push", "statistics"): STATISTICS,
    ("push", "schema"): SCHEMA,
    ("push", "evaluation"): EVALUATION,
    ("drift_check", "window"): RAW_DATA,
    ("retrain_trigger", "decision"): DRIFT_DECISION,
    ("rollout", "pushed"): PUSHED_MODEL,
}


def _describe(kind: str) -> str:
    return kind or "raw data (a Dataset that is not one of kfp-ct's outputs)"


def stamp_outputs(component: str, **outputs) -> None:
    """Writes each output's kind into its metadata (a KFP artifact's ``.metadata``)."""
    for name, artifact in outputs.items():
        artifact.metadata[KIND_KEY] = OUTPUT_KINDS[(component, name)]


def check_inputs(component: str, **inputs) -> None:
    """Refuses an input artifact of another kind, before the task reads anything.

    An artifact with no kind (a user's own step, an importer) is taken as it is: the
    component's own reading then names what is missing or malformed.
    """
    for name, artifact in inputs.items():
        expected = INPUT_KINDS[(component, name)]
        got = str((artifact.metadata or {}).get(KIND_KEY) or "")
        if got and got != expected:
            raise WiringError(
                f"{component}: input {name!r} takes {_describe(expected)}, but the artifact "
                f"wired to it is a {got} ({artifact.uri}); check the pipeline's wiring")


def _component_of(task: dict) -> str:
    ref = task.get("componentRef", {}).get("name", "")
    name = ref[len("comp-"):] if ref.startswith("comp-") else ref
    base, _, suffix = name.rpartition("-")
    name = base if base and suffix.isdigit() else name
    return name.replace("-", "_")


def data_location(artifact) -> str:
    """Where a task reads a data Dataset from: its URI (a local path, a file, folder or
    glob on gs://, ``bundled:penguins``), except for s3:// and minio:// (a KFP install's
    default MinIO pipeline root), which kfp-ct does not read itself: there the KFP
    launcher's copy in the pod (``artifact.path``: /s3/..., /minio/...) is read."""
    uri = artifact.uri or ""
    if uri.startswith(("s3://", "minio://")):
        return artifact.path
    return uri


def check_wiring_file(path: str) -> list[str]:
    """check_wiring on a compiled pipeline YAML file (what ``compiler.Compiler().compile``
    wrote); the first document is the pipeline spec."""
    import yaml

    with open(path) as fh:
        return check_wiring(next(yaml.safe_load_all(fh)))


def check_wiring(pipeline_spec: dict) -> list[str]:
    """The wirings of a compiled pipeline (KFP IR as a dict) that join an output of one
    kind to an input of another, as messages; empty when every wiring fits.

    Tasks are recognised by their component's name (validate, push, ...), so components
    loaded from kfp-ct's compiled YAML are checked inside a user's pipeline too.
    """
    problems = []
    dags = [pipeline_spec.get("root", {}).get("dag", {})]
    dags += [c.get("dag", {}) for c in pipeline_spec.get("components", {}).values()]
    for dag in dags:
        tasks = dag.get("tasks", {})
        for task_name, task in sorted(tasks.items()):
            consumer = _component_of(task)
            for name, arg in sorted(task.get("inputs", {}).get("artifacts", {}).items()):
                if (consumer, name) not in INPUT_KINDS:
                    continue
                source = arg.get("taskOutputArtifact")
                if not source or source.get("producerTask") not in tasks:
                    continue
                producer = _component_of(tasks[source["producerTask"]])
                given = OUTPUT_KINDS.get((producer, source.get("outputArtifactKey")))
                expected = INPUT_KINDS[(consumer, name)]
                if given is not None and given != expected:
                    problems.append(
                        f"task {task_name!r} input {name!r} takes {_describe(expected)}, but "
                        f"it is wired to task {source['producerTask']!r} output "
                        f"{source.get('outputArtifactKey')!r}, a {given}")
    return problems
