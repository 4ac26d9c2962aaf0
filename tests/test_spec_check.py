"""The local endpoint refuses a broken pipeline graph at upload, as the real backend would
refuse it (later: its compiler, Argo or the driver), naming the task and what it misses.

Each broken spec is a small compiled pipeline with one thing changed; before the check
existed every one of them was stored (200) and its run failed later.
"""

import copy
import glob
import json
import os
import warnings

import kfp
import kfp_server_api
import pytest
import yaml
from kfp import compiler, dsl

from kfp_ct.pipelines.entrypoints.kfp_json import HttpError
from kfp_ct.pipelines.entrypoints.local_server import LocalServer
from kfp_ct.pipelines.entrypoints.local_server.server import (check_inline_spec,
                                                              parse_pipeline_file)

TOKEN = "spec-check-token"
GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def write(word: str, out: dsl.Output[dsl.Dataset]):
    """Writes the word to a dataset."""
    with open(out.path, "w") as handle:
        handle.write(word)


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def read(data: dsl.Input[dsl.Dataset], times: int = 1) -> str:
    """Reads the dataset's word, repeated."""
    with open(data.path) as handle:
        return handle.read() * times


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def shout(text: str) -> str:
    """The text in capitals."""
    return text.upper()


@dsl.pipeline(name="inner")
def inner(word: str) -> str:
    written = write(word=word)
    return read(data=written.outputs["out"]).output


@dsl.pipeline(name="outer")
def outer(word: str):
    shout(text=inner(word=word).output)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """The outer pipeline (root -> sub-DAG comp-inner -> write, read) compiled, as a dict."""
    path = tmp_path_factory.mktemp("spec") / "outer.yaml"
    compiler.Compiler().compile(outer, str(path))
    with open(path) as handle:
        return yaml.safe_load(handle)


@pytest.fixture(autouse=True)
def isolated_kfp(kfp_isolated):
    warnings.filterwarnings("ignore", category=FutureWarning)


def _inner_tasks(spec):
    return spec["components"]["comp-inner"]["dag"]["tasks"]


def _unknown_component(spec):
    spec["root"]["dag"]["tasks"]["shout"]["componentRef"]["name"] = "comp-gone"


def _missing_executor(spec):
    del spec["deploymentSpec"]["executors"]["exec-read"]


def _undeclared_input(spec):
    _inner_tasks(spec)["read"]["inputs"].setdefault("parameters", {})["colour"] = {
        "runtimeValue": {"constant": "red"}}


def _required_input_unbound(spec):
    del spec["root"]["dag"]["tasks"]["shout"]["inputs"]["parameters"]["text"]


def _missing_producer_artifact(spec):
    _inner_tasks(spec)["read"]["inputs"]["artifacts"]["data"]["taskOutputArtifact"][
        "producerTask"] = "gone"


def _missing_producer_parameter(spec):
    spec["root"]["dag"]["tasks"]["shout"]["inputs"]["parameters"]["text"][
        "taskOutputParameter"]["producerTask"] = "gone"


def _missing_dependent_task(spec):
    spec["root"]["dag"]["tasks"]["shout"]["dependentTasks"] = ["inner", "gone"]


def _cycle(spec):
    _inner_tasks(spec)["write"]["dependentTasks"] = ["read"]


BROKEN = {  # how to break it -> what the message must name
    "unknown component": (_unknown_component,
                          ["task 'shout' of DAG 'root'", "component 'comp-gone'"]),
    "missing executor": (_missing_executor,
                         ["task 'read' of DAG 'comp-inner'", "executor 'exec-read'",
                          "deploymentSpec.executors"]),
    "undeclared input bound": (_undeclared_input,
                               ["task 'read' of DAG 'comp-inner'", "parameter 'colour'",
                                "does not declare"]),
    "required input unbound": (_required_input_unbound,
                               ["task 'shout' of DAG 'root'", "required input parameter "
                                "'text'"]),
    "missing producer (artifact)": (_missing_producer_artifact,
                                    ["task 'read' of DAG 'comp-inner'", "task 'gone'",
                                     "taskOutputArtifact.producerTask"]),
    "missing producer (parameter)": (_missing_producer_parameter,
                                     ["task 'shout' of DAG 'root'", "task 'gone'",
                                      "taskOutputParameter.producerTask"]),
    "missing dependent task": (_missing_dependent_task,
                               ["task 'shout' of DAG 'root'", "task 'gone'",
                                "dependentTasks"]),
    "a cycle": (_cycle, ["DAG 'comp-inner'", "cycle", "read -> write -> read"]),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LocalServer(str(tmp_path_factory.mktemp("state")), token=TOKEN) as running:
        yield running


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_broken_graph_is_refused_at_upload_naming_the_task(server, good, tmp_path, name):
    breaker, words = BROKEN[name]
    spec = copy.deepcopy(good)
    breaker(spec)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(spec))
    client = kfp.Client(host=server.url, existing_token=TOKEN)
    with pytest.raises(kfp_server_api.ApiException) as err:
        client.upload_pipeline(str(path), pipeline_name=f"broken-{name.replace(' ', '-')}"
                               .replace("(", "").replace(")", ""))
    body = json.loads(err.value.body)
    assert err.value.status == 400 and body["code"] == 3, body
    assert body["message"].startswith("Invalid input error: broken.yaml: invalid v2 "
                                      "pipeline spec: "), body["message"]
    for word in words:
        assert word in body["message"], body["message"]
    names = [p.display_name for p in client.list_pipelines(page_size=100).pipelines or []]
    assert not any(n.startswith("broken-") for n in names)  # nothing was stored


def test_an_inline_spec_in_a_run_is_checked_too(server, good, tmp_path):
    spec = copy.deepcopy(good)
    _unknown_component(spec)
    path = tmp_path / "inline.yaml"
    path.write_text(yaml.safe_dump(spec))
    client = kfp.Client(host=server.url, existing_token=TOKEN)
    experiment = client.create_experiment("inline")
    for call in (lambda: client.run_pipeline(experiment.experiment_id, "r",
                                             pipeline_package_path=str(path),
                                             params={"word": "a"}),
                 lambda: client.create_recurring_run(experiment.experiment_id, "rr",
                                                     interval_second=60,
                                                     pipeline_package_path=str(path),
                                                     params={"word": "a"})):
        with pytest.raises(kfp_server_api.ApiException) as err:
            call()
        assert err.value.status == 400 and "component 'comp-gone'" in err.value.body
    assert client.list_runs().runs is None
    assert client.list_recurring_runs().recurring_runs is None


def test_the_unbroken_pipeline_is_accepted_and_compiler_added_inputs_pass(good):
    assert check_inline_spec(copy.deepcopy(good), "outer") == good
    # kfp adds task inputs that no component declares: a pipeline channel a placeholder
    # reads, and (kfp 2.7 / 2.8) resource fields as constants. The backend runs them.
    spec = copy.deepcopy(good)
    params = spec["root"]["dag"]["tasks"]["shout"]["inputs"]["parameters"]
    params["pipelinechannel--word"] = {"componentInputParameter": "word"}
    params["cpu_limit"] = {"runtimeValue": {"constant": "{{$.inputs.parameters["
                                                         "'pipelinechannel--word']}}"}}
    assert check_inline_spec(spec, "outer") == spec
    params["cpu_limit"] = {"componentInputParameter": "word"}  # not a compiler constant
    with pytest.raises(HttpError, match="parameter 'cpu_limit'"):
        check_inline_spec(spec, "outer")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(GOLDEN, "*.yaml"))),
                         ids=os.path.basename)
def test_every_shipped_compiled_pipeline_passes(path):
    """The golden files are the shipped pipelines compiled (test_compile keeps them so)."""
    with open(path) as handle:
        parse_pipeline_file(handle.read(), os.path.basename(path))
