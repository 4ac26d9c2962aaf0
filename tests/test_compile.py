"""Compiling: golden files, determinism, no TensorFlow, components loadable.

Refresh the golden files after an intended change to a component or pipeline:

    KFP_CT_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_compile.py

then review `git diff tests/golden` like any other change.
"""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
HEAVY = ("tensorflow", "tensorflow_transform", "tensorflow_data_validation",
         "tensorflow_model_analysis", "apache_beam", "tfx_bsl")


def _strip_sdk_version(text: str) -> str:
    # The only line allowed to differ: the kfp SDK version that wrote the file.
    return "\n".join(line for line in text.splitlines() if not line.startswith("sdkVersion:"))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    import compile as compile_mod

    paths = compile_mod.compile_all(str(out))
    return out, paths


def test_compile_writes_every_pipeline_and_component(compiled):
    out, paths = compiled
    names = sorted(os.path.relpath(p, out) for p in paths)
    assert "pipelines/training_pipeline.yaml" in names
    assert "pipelines/training_pipeline_gpu.yaml" in names
    assert "pipelines/training_pipeline_tpu.yaml" in names
    assert "pipelines/monitoring_pipeline.yaml" in names
    for component in ("validate", "transform", "train", "train_gpu", "train_tpu", "evaluate",
                      "gate", "push", "drift_check", "retrain_trigger"):
        assert f"components/{component}.yaml" in names


@pytest.mark.parametrize("rel", ["pipelines/training_pipeline.yaml", "pipelines/data_pipeline.yaml",
                                 "pipelines/training_pipeline_gpu.yaml",
                                 "pipelines/training_pipeline_tpu.yaml",
                                 "pipelines/monitoring_pipeline.yaml"])
def test_pipeline_matches_golden_file(compiled, rel):
    out, _ = compiled
    actual = (out / rel).read_text()
    golden = GOLDEN / pathlib.Path(rel).name
    if os.environ.get("KFP_CT_UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        golden.write_text(actual)
    assert golden.exists(), f"no golden file {golden}; create it with KFP_CT_UPDATE_GOLDEN=1"
    assert _strip_sdk_version(actual) == _strip_sdk_version(golden.read_text()), (
        f"{rel} differs from {golden}. If the change is intended, refresh with "
        "KFP_CT_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_compile.py")


def test_compile_is_byte_identical_and_needs_no_tensorflow_or_environment(tmp_path):
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1"}
    probe = ("import sys, compile; compile.compile_all(sys.argv[1]); "
             f"heavy = [m for m in sys.modules if m.split('.')[0] in {HEAVY!r}]; "
             "print('HEAVY', heavy)")
    outs = []
    for i in range(2):
        target = tmp_path / f"b{i}"
        done = subprocess.run([sys.executable, "-c", probe, str(target)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "HEAVY []" in done.stdout, done.stdout
        outs.append({p.relative_to(target): p.read_bytes() for p in target.rglob("*.yaml")})
    assert outs[0] == outs[1]


def test_compiled_components_load_with_kfp(compiled):
    from kfp import components

    out, _ = compiled
    for path in sorted((out / "components").glob("*.yaml")):
        loaded = components.load_component_from_file(str(path))
        assert loaded.component_spec.implementation.container.image.startswith("ghcr.io/kfp-ct/")


def test_component_wrappers_import_only_stdlib_kfp_and_images_at_top_level():
    allowed_roots = {"kfp"}
    for path in sorted((ROOT / "components").glob("*/component.py")):
        for line in path.read_text().splitlines():
            if line.startswith(("import ", "from ")):
                module = line.split()[1]
                root = module.split(".")[0]
                if root == "kfp_ct":
                    assert module == "kfp_ct.components.common.images", f"{path}: {line}"
                else:
                    assert root in allowed_roots or root in sys.stdlib_module_names, \
                        f"{path}: top-level import {line!r}"


def test_gpu_pipeline_requests_a_gpu_and_uses_the_gpu_image(compiled):
    import yaml

    out, _ = compiled
    docs = list(yaml.safe_load_all((out / "pipelines/training_pipeline_gpu.yaml").read_text()))
    spec = docs[0]
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert train["image"].startswith("ghcr.io/kfp-ct/kfp-ct-gpu:")
    assert train["resources"]["accelerator"]["resourceCount"] == "1" or \
        train["resources"]["accelerator"].get("count") in (1, "1")
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert platform["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert int(platform["activeDeadlineSeconds"]) > 0


def test_monitoring_pipeline_runs_uncached_with_timeouts_and_a_retried_trigger(compiled):
    import yaml

    out, _ = compiled
    docs = list(yaml.safe_load_all((out / "pipelines/monitoring_pipeline.yaml").read_text()))
    spec = docs[0]
    # The body runs inside the failed-run notice's exit handler (pipelines/notice.py).
    tasks = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    # The window enters as a Dataset through an importer (its URI is the lineage's first
    # artifact), then the two tasks.
    assert set(tasks) == {"importer", "drift-check", "retrain-trigger"}
    assert tasks["drift-check"]["inputs"]["artifacts"]["window"]["taskOutputArtifact"] == {
        "producerTask": "importer", "outputArtifactKey": "artifact"}
    # The labels are a path (optional: KFP's importer refuses an empty URI on a cluster),
    # the pipeline's labels_path passed in through the exit handler's group; every input
    # of before is kept, with its default.
    assert set(tasks["drift-check"]["inputs"]["artifacts"]) == {"window"}
    assert tasks["drift-check"]["inputs"]["parameters"]["labels_path"] == {
        "componentInputParameter": "pipelinechannel--labels_path"}
    assert spec["root"]["dag"]["tasks"]["exit-handler-1"]["inputs"]["parameters"][
        "pipelinechannel--labels_path"] == {"componentInputParameter": "labels_path"}
    params = spec["root"]["inputDefinitions"]["parameters"]
    before = {"model_base", "window_path", "request_log_path", "drift_settings",
              "training_data", "training_partitions", "retrain_mode", "cooldown_hours",
              "training_params", "training_pipeline", "training_pipeline_version",
              "experiment", "kfp_host", "namespace"}
    assert before | {"labels_path", "label_key"} <= set(params)
    assert params["labels_path"]["defaultValue"] == "" and params["label_key"]["defaultValue"] == ""
    assert "defaultValue" not in params["model_base"]
    for name in ("drift-check", "retrain-trigger"):  # fresh data and launch records change
        task = tasks[name]                            # under the same names
        assert task["cachingOptions"] == {} or task["cachingOptions"].get("enableCache") is False
    assert tasks["retrain-trigger"]["retryPolicy"]["maxRetryCount"] == 2
    assert tasks["retrain-trigger"]["dependentTasks"] == ["drift-check"]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["retrain_mode"]["defaultValue"] == "kfp"  # the compiled graph is the cluster's
    assert "model_base" in params and not params["model_base"].get("isOptional")
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("exec-drift-check", "exec-retrain-trigger"):
        assert int(platform[name]["activeDeadlineSeconds"]) > 0
    for executor in spec["deploymentSpec"]["executors"].values():
        if "importer" in executor:  # the data parameter as a Dataset: no container
            continue
        assert executor["container"]["image"].startswith("ghcr.io/kfp-ct/kfp-ct-cpu:")


@pytest.mark.parametrize("rel,name", [
    ("pipelines/monitoring_pipeline.yaml", "kfp-ct-monitoring"),
    ("pipelines/training_pipeline.yaml", "kfp-ct-training"),
    ("pipelines/training_pipeline_gpu.yaml", "kfp-ct-training-gpu"),
    ("pipelines/training_pipeline_tpu.yaml", "kfp-ct-training-tpu")])
def test_pipeline_body_runs_in_an_exit_handler_whose_exit_task_announces_a_failure(
        compiled, rel, name):
    """pipelines/notice.py: the root holds only the exit handler (the whole body) and the
    failed-run notice, which runs after it whatever its outcome, uncached, unretried."""
    import yaml

    out, _ = compiled
    docs = list(yaml.safe_load_all((out / rel).read_text()))
    spec = docs[0]
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"exit-handler-1", "announce-failure"}
    assert root["exit-handler-1"]["componentRef"]["name"] == "comp-exit-handler-1"
    assert "dag" in spec["components"]["comp-exit-handler-1"]
    notice = root["announce-failure"]
    assert notice["componentRef"]["name"] == "comp-announce-failure"
    assert notice["dependentTasks"] == ["exit-handler-1"]
    # Runs once the body ended, whether it succeeded or failed (an exit task).
    assert notice["triggerPolicy"] == {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}
    assert notice["cachingOptions"] == {} or notice["cachingOptions"].get("enableCache") is False
    assert "retryPolicy" not in notice  # it retries its delivery itself
    params = notice["inputs"]["parameters"]
    assert params["pipeline"]["runtimeValue"]["constant"] == name
    assert params["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert params["run_name"]["runtimeValue"]["constant"] == "{{$.pipeline_job_name}}"
    assert "local_final_status" not in params  # only kfp-ct's local runner sets it
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    if name == "kfp-ct-monitoring":  # the "notify" key of the drift settings
        assert params["settings"] == {"componentInputParameter": "drift_settings"}
        assert params["kfp_host"] == {"componentInputParameter": "kfp_host"}
        assert params["namespace"] == {"componentInputParameter": "namespace"}
        assert "notify" not in inputs
    else:  # the pipeline's own notify parameter, optional and empty by default
        assert params["notify"] == {"componentInputParameter": "notify"}
        assert inputs["notify"] == {"defaultValue": "", "isOptional": True,
                                    "parameterType": "STRING"}
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert int(platform["exec-announce-failure"]["activeDeadlineSeconds"]) > 0


def test_resource_setters_on_a_pipeline_used_as_a_component_are_refused_by_name():
    """pipelines/cluster.py replaces kfp's container-spec check (kfp looked up the setter's
    name with inspect.stack(), 40% of building a pipeline); the refusal is kfp's."""
    from kfp import dsl

    import kfp_ct.pipelines.cluster  # noqa: F401  (installs the check)

    @dsl.component
    def noop() -> str:
        return "x"

    @dsl.pipeline(name="inner")
    def inner():
        noop()

    with pytest.raises(ValueError, match=r"^set_cpu_request can only be used on single-step"):
        @dsl.pipeline(name="outer")
        def outer():
            inner().set_cpu_request("1")

    names = []

    @dsl.pipeline(name="fine")
    def fine():
        names.append(noop().set_cpu_request("1").set_memory_limit("1G").name)

    assert names == ["noop"]
