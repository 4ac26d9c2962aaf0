"""kfp-ct's components in a user's own pipeline: loaded from compiled YAML, wired to the
user's own steps, data in as a Dataset, the pushed Model out, wrong wirings refused."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
from kfp import compiler, components, dsl
from kfp.dsl import Dataset, Output

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "pipelines" / "examples" / "user_pipeline.py"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """What a user keeps in their repository: the compiled component YAML of one version."""
    out = tmp_path_factory.mktemp("pinned")
    done = subprocess.run([sys.executable, str(ROOT / "compile.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return out


def _load(compiled, name):
    return components.load_component_from_file(str(compiled / "components" / f"{name}.yaml"))


def test_a_pinned_component_yaml_loads_with_its_versions_image_and_typed_interface(compiled):
    from kfp_ct.components import __version__

    validate = _load(compiled, "validate")
    spec = validate.component_spec
    assert spec.implementation.container.image == f"ghcr.io/kfp-ct/kfp-ct-cpu:{__version__}"
    assert spec.inputs["data"].type == "system.Dataset@0.0.1"
    push = _load(compiled, "push")
    assert push.component_spec.outputs["pushed"].type == "system.Model@0.0.1"
    for name in ("transform", "drift_check"):
        inputs = _load(compiled, name).component_spec.inputs
        assert any(i.type == "system.Dataset@0.0.1" for i in inputs.values()), name

    @dsl.pipeline(name="uses-a-pinned-validate")
    def mine(uri: str):
        data = dsl.importer(artifact_uri=uri, artifact_class=dsl.Dataset)
        validate(data=data.output, problem="{}")

    path = compiled / "mine.yaml"
    compiler.Compiler().compile(mine, package_path=str(path))
    assert "kfp-ct-cpu:" + __version__ in path.read_text()


@dsl.component
def _ingest(rows: Output[Dataset]):
    with open(rows.path, "w") as fh:
        fh.write("a\n1\n")


def test_a_model_where_data_belongs_is_refused_at_compile_time_with_kfps_message(compiled):
    validate, train = _load(compiled, "validate"), _load(compiled, "train")
    transform = _load(compiled, "transform")
    from kfp.dsl.types.type_utils import InconsistentTypeException

    with pytest.raises(InconsistentTypeException,
                       match="Argument type 'system.Model@0.0.1' is incompatible with the "
                             "input type 'system.Dataset@0.0.1'"):
        @dsl.pipeline(name="wrong")
        def wrong():
            rows = _ingest()
            checked = validate(data=rows.output, problem="{}")
            shaped = transform(data=rows.output, problem="{}", schema=checked.outputs["schema"])
            trained = train(problem="{}", transform_graph=shaped.outputs["transform_graph"],
                            transformed_examples=shaped.outputs["transformed_examples"])
            validate(data=trained.outputs["model"], problem="{}")


def test_anomalies_where_the_schema_belongs_is_refused_by_check_wiring(compiled, tmp_path):
    """kfp cannot tell two system.Artifact kinds apart; check_wiring (run by compile.py on
    every shipped pipeline) names the task, the input and both kinds."""
    from kfp_ct.components.common.artifacts import check_wiring_file

    validate, transform = _load(compiled, "validate"), _load(compiled, "transform")

    @dsl.pipeline(name="miswired")
    def miswired():
        rows = _ingest()
        checked = validate(data=rows.output, problem="{}")
        transform(data=rows.output, problem="{}", schema=checked.outputs["anomalies"])

    @dsl.pipeline(name="wired")
    def wired():
        rows = _ingest()
        checked = validate(data=rows.output, problem="{}")
        transform(data=rows.output, problem="{}", schema=checked.outputs["schema"])

    bad, good = tmp_path / "bad.yaml", tmp_path / "good.yaml"
    compiler.Compiler().compile(miswired, package_path=str(bad))  # kfp lets it through
    compiler.Compiler().compile(wired, package_path=str(good))
    assert check_wiring_file(str(good)) == []
    problems = check_wiring_file(str(bad))
    assert problems == ["task 'transform' input 'schema' takes kfp_ct.Schema, but it is wired "
                        "to task 'validate' output 'anomalies', a kfp_ct.ExampleAnomalies"]
    # Every shipped pipeline passes the same check (compile.py refuses one that does not).
    for path in sorted((compiled / "pipelines").glob("*.yaml")):
        assert check_wiring_file(str(path)) == [], path


def test_a_task_refuses_an_input_of_another_kind_before_reading_it(tmp_path):
    from kfp.dsl import HTML, Artifact

    from kfp_ct.components.common.artifacts import WiringError
    from kfp_ct.components.transform.component import transform

    anomalies = Artifact(name="schema", uri=str(tmp_path / "anomalies"),
                         metadata={"kind": "kfp_ct.ExampleAnomalies"})
    outputs = {n: Artifact(name=n, uri=str(tmp_path / n))
               for n in ("transform_graph", "transformed_examples", "raw_eval")}
    with pytest.raises(WiringError, match="transform: input 'schema' takes kfp_ct.Schema, but "
                                          "the artifact wired to it is a kfp_ct.ExampleAnomalies"):
        transform.python_func(data=Dataset(name="data", uri="bundled:penguins"), problem="{}",
                              schema=anomalies, **outputs)
    assert not any((tmp_path / n).exists() for n in outputs)
    # Raw data must not be one of our own artifacts either (transformed records, say).
    from kfp_ct.components.validate.component import validate

    records = Dataset(name="data", uri=str(tmp_path / "x"),
                      metadata={"kind": "kfp_ct.TransformedExamples"})
    outs = {n: Artifact(name=n, uri=str(tmp_path / n)) for n in ("statistics", "schema",
                                                                 "anomalies")}
    with pytest.raises(WiringError, match="takes raw data"):
        validate.python_func(data=records, problem="{}", report=HTML(
            name="report", uri=str(tmp_path / "r.html")), **outs)


@pytest.mark.slow
def test_the_users_own_pipeline_runs_end_to_end_under_kfp_local(compiled, tmp_path):
    """pipelines/examples/user_pipeline.py: the user's ingest writes a CSV Dataset, our
    loop runs from the pinned YAML, the user's last step reads the pushed Model."""
    project = tmp_path / "project"
    for pkg in ("components", "pipelines"):  # the user's own packages, as in their project
        (project / pkg).mkdir(parents=True)
        (project / pkg / "__init__.py").write_text("MINE = True\n")
    import palmerpenguins

    palmerpenguins.load_penguins().to_csv(project / "penguins.csv", index=False)
    serving = tmp_path / "serving"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--components", str(compiled / "components"),
         "--out", "mine.yaml", "--run-local", "--source", "penguins.csv",
         "--destination", str(serving), "--pipeline-root", "runs"],
        cwd=project, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith(f"Serve version 1 from {serving / '1'} (accuracy "), last
    assert (serving / "1" / "saved_model.pb").exists()
    # The ingested rows reached validate as a Dataset: its statistics count them.
    runs = next((project / "runs").iterdir())
    ingested = (runs / "ingest" / "rows").read_text().splitlines()
    assert len(ingested) - 1 == 333  # 344 penguins, 11 with a missing value dropped
    record = json.loads((runs / "push" / "pushed" / "push.json").read_text())
    assert record["pushed"] is True and record["version"] == 1
    # The compiled pipeline has the user's steps around ours.
    tasks = list(next(__import__("yaml").safe_load_all(
        (project / "mine.yaml").read_text()))["root"]["dag"]["tasks"])
    assert {"ingest", "validate", "push", "announce"} <= set(tasks)


def test_data_is_read_from_the_uri_except_s3_and_minio_where_the_launchers_copy_is_read():
    from kfp_ct.components.common.artifacts import data_location

    for uri in ("bundled:penguins", "gs://b/data/*.csv", "/data/x.csv", "gs://b/data/"):
        assert data_location(Dataset(name="d", uri=uri)) == uri
    assert data_location(Dataset(name="d", uri="minio://mlpipeline/v2/run/ingest/rows")) == \
        "/minio/mlpipeline/v2/run/ingest/rows"
    assert data_location(Dataset(name="d", uri="s3://bucket/rows")) == "/s3/bucket/rows"


def test_a_file_without_an_extension_is_read_by_its_content(tmp_path):
    """What a KFP component writes when it opens its output Dataset's .path as a file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kfp_ct.components.common import data

    (tmp_path / "rows").write_text("a,b\n1,2\n")
    pq.write_table(pa.table({"a": [1]}), tmp_path / "table")
    (tmp_path / "notes.txt").write_text("x")
    assert data.format_of(str(tmp_path / "rows")) == "csv"
    assert data.format_of(str(tmp_path / "table")) == "parquet"
    assert data.format_of(str(tmp_path / "notes.txt")) is None  # an extension decides
    assert data.resolve_inputs(str(tmp_path / "rows")) == [str(tmp_path / "rows")]


def test_train_names_an_input_that_is_not_transforms_output(tmp_path):
    from kfp_ct.components.common.errors import KfpCtError
    from kfp_ct.components.train.logic import _check_inputs

    (tmp_path / "graph" / "transform_fn").mkdir(parents=True)
    (tmp_path / "examples").mkdir()
    with pytest.raises(KfpCtError, match="transformed examples at .*examples has no "
                                         "split.json: is it the output of kfp-ct's transform"):
        _check_inputs(str(tmp_path / "graph"), str(tmp_path / "examples"))
    with pytest.raises(KfpCtError, match="transform graph at .*examples has no transform_fn"):
        _check_inputs(str(tmp_path / "examples"), str(tmp_path / "examples"))
