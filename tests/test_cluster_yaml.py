"""What a cluster gets from the compiled YAML, read back from the YAML itself.

No cluster runs here, so these tests read the exact fields the KFP backend turns into a
pod: container resources and accelerators (core KFP), node selectors, tolerations,
emptyDir scratch, Secrets and activeDeadlineSeconds (kfp-kubernetes platform spec),
retry policies and caching (the task spec). Figures come from pipelines/cluster.py,
which the README's table repeats.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

import compile as compile_mod
from kfp_ct.pipelines import cluster

TRAINING = {"cpu": "training_pipeline", "gpu": "training_pipeline_gpu",
            "tpu": "training_pipeline_tpu", "multiworker": "training_pipeline_multiworker"}
# task name in the DAG -> component name in pipelines/cluster.py
TASKS = {"validate": "validate", "transform": "transform", "train": "train",
         "evaluate": "evaluate", "gate": "gate", "push": "push",
         "drift-check": "drift_check", "retrain-trigger": "retrain_trigger",
         "train-tfjob": "train_tfjob", "rollout": "rollout",
         "announce-failure": "announce_failure"}
PIPELINES = ["training_pipeline", "training_pipeline_gpu", "training_pipeline_tpu",
             "monitoring_pipeline", "data_pipeline", "training_pipeline_multiworker",
             "training_pipeline_kserve"]
NETWORK_TASKS = {"validate", "transform", "train", "evaluate", "push", "drift-check",
                 "retrain-trigger", "train-tfjob"}


def _load(path: Path) -> tuple[dict, dict]:
    docs = list(yaml.safe_load_all(path.read_text()))
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] \
        if len(docs) > 1 else {}
    return docs[0], platform


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    compile_mod.compile_all(str(out))
    return out


@pytest.fixture(scope="module")
def build_with_secret(tmp_path_factory):
    out = tmp_path_factory.mktemp("build-secret")
    settings = cluster.load_settings({"gcp_key_secret": "kfp-ct-gcs-key"})
    compile_mod.compile_all(str(out), settings)
    return out


def _tasks(spec: dict) -> dict:
    """Every task of the pipeline by name: the root DAG's and those of the DAGs inside it
    (the body sits in the failed-run notice's exit handler, ``comp-exit-handler-1``,
    pipelines/notice.py), the groups themselves included."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    tasks = {}
    for dag in dags:
        for name, body in dag["tasks"].items():
            assert name not in tasks, f"task name {name!r} in two DAGs"
            tasks[name] = body
    return tasks


def _pipeline_input(spec: dict, task: str, name: str) -> str:
    """The pipeline parameter that input ``name`` of ``task`` is given, followed through
    the group that holds the task (a group's input ``pipelinechannel--X`` is the
    pipeline's ``X``, passed in by the group's task in the root DAG)."""
    ref = _tasks(spec)[task]["inputs"]["parameters"][name]["componentInputParameter"]
    root = spec["root"]["dag"]["tasks"]
    for group in root.values():
        params = group.get("inputs", {}).get("parameters", {})
        if "dag" in spec["components"][group["componentRef"]["name"]] and ref in params:
            return params[ref]["componentInputParameter"]
    return ref


def _executor(spec: dict, task: str) -> str:
    return _tasks(spec)[task]["componentRef"]["name"].replace("comp-", "exec-")


def _pipelines(build: Path) -> list[Path]:
    return sorted((build / "pipelines").glob("*.yaml"))


def test_every_pipeline_is_compiled_including_the_tpu_variant(build):
    assert {p.stem for p in _pipelines(build)} == set(PIPELINES)


def _container_tasks(spec):
    """The tasks that run a container of ours: all but the importer that turns the data
    parameter into a Dataset (the KFP driver records its URI; no pod of ours runs)."""
    executors = spec["deploymentSpec"]["executors"]
    return [t for t in _tasks(spec)
            if "container" in executors.get(_executor(spec, t), {})]


@pytest.mark.parametrize("stem", PIPELINES)
def test_every_task_has_its_requests_limits_scratch_and_timeout(build, stem):
    spec, platform = _load(build / "pipelines" / f"{stem}.yaml")
    for task in _container_tasks(spec):
        want = cluster.RESOURCES[TASKS[task]]
        executor = _executor(spec, task)
        res = spec["deploymentSpec"]["executors"][executor]["container"]["resources"]
        assert (res["resourceCpuRequest"], res["resourceCpuLimit"],
                res["resourceMemoryRequest"], res["resourceMemoryLimit"]) == (
            want.cpu_request, want.cpu_limit, want.memory_request, want.memory_limit), task
        k8s = platform[executor]
        assert k8s["emptyDirMounts"] == [{"mountPath": "/tmp", "sizeLimit": want.scratch,
                                          "volumeName": "scratch"}], task
        env = {e["name"]: e["value"] for e in
               spec["deploymentSpec"]["executors"][executor]["container"]["env"]}
        assert env["TMPDIR"] == "/tmp"
        assert int(k8s["activeDeadlineSeconds"]) == cluster.TIMEOUTS_S[TASKS[task]], task


def test_resources_are_the_measured_figures():
    # Exact values a reviewer can compare with the README's table.
    got = {name: (r.cpu_request, r.cpu_limit, r.memory_request, r.memory_limit, r.scratch)
           for name, r in cluster.RESOURCES.items()}
    assert got["train"] == ("2", "4", "1Gi", "4Gi", "10Gi")
    assert got["evaluate"] == ("1", "2", "1Gi", "4Gi", "10Gi")
    assert got["gate"] == ("100m", "500m", "128Mi", "512Mi", "1Gi")
    for name, res in cluster.RESOURCES.items():
        cluster.check_resources(name, res)


@pytest.mark.parametrize("stem", PIPELINES)
def test_network_tasks_retry_with_backoff_and_gate_does_not(build, stem):
    spec, _ = _load(build / "pipelines" / f"{stem}.yaml")
    for task, body in _tasks(spec).items():
        policy = body.get("retryPolicy")
        if task not in NETWORK_TASKS:
            assert policy is None, task
            continue
        want = cluster.RETRIES[TASKS[task]]
        assert policy == {"maxRetryCount": want.retries, "backoffDuration": want.backoff,
                          "backoffFactor": want.factor,
                          "backoffMaxDuration": want.max_backoff}, task
        assert policy["backoffFactor"] > 1  # exponential, not a fixed wait


@pytest.mark.parametrize("stem", PIPELINES)
def test_tasks_whose_inputs_change_under_the_same_names_are_never_cached(build, stem):
    spec, _ = _load(build / "pipelines" / f"{stem}.yaml")
    for task, body in _tasks(spec).items():
        cached = body.get("cachingOptions", {}).get("enableCache", False)
        if task == "train":  # its inputs are the uncached transform's fresh artifacts
            continue
        assert cached is False, f"{stem}: {task} is cached"


def test_cpu_training_asks_for_no_accelerator_and_no_special_node(build):
    spec, platform = _load(build / "pipelines" / "training_pipeline.yaml")
    executor = _executor(spec, "train")
    container = spec["deploymentSpec"]["executors"][executor]["container"]
    assert "accelerator" not in container["resources"]
    assert "/kfp-ct-cpu:" in container["image"]
    assert "nodeSelector" not in platform[executor]
    assert "tolerations" not in platform[executor]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["accelerator"]["defaultValue"] == "auto"


@pytest.mark.parametrize("variant, image, kind, count, selector, toleration, accelerator", [
    ("gpu", "/kfp-ct-gpu:", "nvidia.com/gpu", "1",
     {"cloud.google.com/gke-accelerator": "nvidia-l4"}, "nvidia.com/gpu", "gpu"),
    ("tpu", "/kfp-ct-tpu:", "google.com/tpu", "4",
     {"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
      "cloud.google.com/gke-tpu-topology": "2x2"}, "google.com/tpu", "tpu"),
])
def test_accelerator_variants_request_their_chips_nodes_and_tolerations(
        build, variant, image, kind, count, selector, toleration, accelerator):
    spec, platform = _load(build / "pipelines" / f"{TRAINING[variant]}.yaml")
    executor = _executor(spec, "train")
    container = spec["deploymentSpec"]["executors"][executor]["container"]
    assert image in container["image"]
    acc = container["resources"]["accelerator"]
    assert (acc["resourceType"], acc["resourceCount"]) == (kind, count)
    assert platform[executor]["nodeSelector"] == {"labels": selector}
    assert platform[executor]["tolerations"] == [
        {"key": toleration, "operator": "Exists", "effect": "NoSchedule"}]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["accelerator"]["defaultValue"] == accelerator
    env = {e["name"]: e["value"] for e in container["env"]}
    if variant == "tpu":
        assert env["TPU_NAME"] == "local"  # TPUClusterResolver on a TPU VM node
    # Only train runs on the accelerator node: every other task stays on CPU nodes.
    for task in _container_tasks(spec):
        if task == "train":
            continue
        other = _executor(spec, task)
        assert "accelerator" not in spec["deploymentSpec"]["executors"][other]["container"][
            "resources"], task
        assert "nodeSelector" not in platform[other] and "tolerations" not in platform[other]
        assert "/kfp-ct-cpu:" in spec["deploymentSpec"]["executors"][other]["container"]["image"]


def test_train_checkpoints_under_this_runs_id_on_durable_storage(build):
    spec, _ = _load(build / "pipelines" / "training_pipeline.yaml")
    inputs = _tasks(spec)["train"]["inputs"]["parameters"]
    assert inputs["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert _pipeline_input(spec, "train", "push_destination") == "push_destination"
    assert _pipeline_input(spec, "train", "checkpoint_root") == "checkpoint_root"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["checkpoint_root"]["defaultValue"] == ""


def test_default_credentials_are_workload_identity_nothing_mounted(build):
    for path in _pipelines(build):
        _, platform = _load(path)
        for executor, k8s in platform.items():
            assert "secretAsVolume" not in k8s and "secretAsEnv" not in k8s, (path, executor)


def test_a_key_secret_is_mounted_by_name_on_every_task(build_with_secret):
    for path in _pipelines(build_with_secret):
        spec, platform = _load(path)
        for task in _container_tasks(spec):
            executor = _executor(spec, task)
            assert platform[executor]["secretAsVolume"] == [{
                "secretName": "kfp-ct-gcs-key", "mountPath": cluster.SECRET_MOUNT,
                "optional": False, "secretNameParameter": {
                    "runtimeValue": {"constant": "kfp-ct-gcs-key"}}}], (path.name, task)
            env = {e["name"]: e["value"] for e in
                   spec["deploymentSpec"]["executors"][executor]["container"]["env"]}
            assert env["GOOGLE_APPLICATION_CREDENTIALS"] == \
                f"{cluster.SECRET_MOUNT}/{cluster.SECRET_KEY_FILE}"


# ------------------------------------------------------------------ secret scan

SECRET_PATTERNS = {
    "PEM private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "service-account key field": re.compile(r'"private_key(_id)?"\s*:'),
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "Google OAuth token": re.compile(r"\bya29\.[0-9A-Za-z_-]{20,}"),
    "GitHub token": re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{40,})"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "JSON web token": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    "bearer header": re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{16,}"),
    "URL with a password": re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@"),
}
CREDENTIAL_NAME = re.compile(r"(?i)(token|password|passwd|secret|credential|api_?key|"
                             r"private_?key|access_?key)")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(c / len(text) * math.log2(c / len(text)) for c in counts.values())


def secret_findings(text: str) -> list[str]:
    """What in a compiled YAML looks like a secret value (empty: nothing)."""
    found = [f"{name}: {m.group(0)[:24]}..." for name, pattern in SECRET_PATTERNS.items()
             for m in pattern.finditer(text)]
    # Long random-looking strings (base64 / hex keys), image digests excepted.
    for token in re.findall(r"[A-Za-z0-9+/=_-]{32,}", DIGEST.sub("", text)):
        if (_entropy(token) > 4.3 and any(c.isdigit() for c in token)
                and any(c.isupper() for c in token) and any(c.islower() for c in token)):
            found.append(f"high-entropy string: {token[:24]}...")
    doc = list(yaml.safe_load_all(text))[0]
    parameters = {**doc.get("root", {}).get("inputDefinitions", {}).get("parameters", {})}
    for comp in doc.get("components", {}).values():
        parameters.update(comp.get("inputDefinitions", {}).get("parameters", {}))
    for name, body in parameters.items():
        if CREDENTIAL_NAME.search(name):
            found.append(f"parameter {name!r} is named like a credential")
    return found


def test_the_secret_scan_finds_a_planted_key_token_and_credential_parameter(build):
    text = (build / "pipelines" / "training_pipeline.yaml").read_text()
    assert secret_findings(text) == []
    planted = {
        "PEM private key": "-----BEGIN PRIVATE KEY-----\\nMIIEv...",
        "AWS access key id": "AKIAIOSFODNN7EXAMPLE",
        "GitHub token": "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
        "JSON web token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
        "high-entropy": "q8Zr2Lk0Vx7Tn4Hb9Wm3Jc6Pd1Sg5Yf0Ae8Ku2",
    }
    for what, value in planted.items():
        dirty = text.replace("bundled:penguins", value, 1)
        assert secret_findings(dirty), f"the scan missed a planted {what}"
    renamed = text.replace("train_steps:", "api_token:")
    assert any("named like a credential" in f for f in secret_findings(renamed))


def test_no_compiled_yaml_holds_anything_that_looks_like_a_secret(build, build_with_secret):
    paths = sorted(build.rglob("*.yaml")) + sorted(build_with_secret.rglob("*.yaml"))
    assert len(paths) >= 15
    findings = {str(p.relative_to(p.parents[1])): secret_findings(p.read_text()) for p in paths}
    assert not {k: v for k, v in findings.items() if v}, json.dumps(findings, indent=1)


# ------------------------------------------------------------------ overrides


def test_resources_and_variants_can_be_overridden_at_compile_time(tmp_path):
    settings_file = tmp_path / "cluster.json"
    settings_file.write_text(json.dumps({
        "resources": {"train": {"memory_limit": "16Gi", "cpu_limit": "8"}},
        "timeouts_s": {"train": 7200},
        "variants": {"gpu": {"accelerator_count": 2,
                             "node_selector": {"cloud.google.com/gke-accelerator":
                                               "nvidia-tesla-t4"}}}}))
    assert compile_mod.main(["--out", str(tmp_path / "b"), "--settings", str(settings_file)]) == 0
    spec, platform = _load(tmp_path / "b" / "pipelines" / "training_pipeline_gpu.yaml")
    executor = _executor(spec, "train")
    res = spec["deploymentSpec"]["executors"][executor]["container"]["resources"]
    assert (res["resourceMemoryLimit"], res["resourceCpuLimit"],
            res["resourceMemoryRequest"]) == ("16Gi", "8", "1Gi")
    assert res["accelerator"]["resourceCount"] == "2"
    assert platform[executor]["nodeSelector"] == {
        "labels": {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}}
    assert platform[executor]["activeDeadlineSeconds"] == "7200"


@pytest.mark.parametrize("settings, message", [
    ({"resources": {"trian": {}}}, "unknown task 'trian'"),
    ({"resources": {"train": {"memory": "1Gi"}}}, "unknown key(s) ['memory']"),
    ({"resources": {"train": {"cpu_request": "two"}}}, "'two' is not a CPU quantity"),
    ({"resources": {"train": {"memory_request": "5Gi"}}}, "memory_request 5Gi exceeds"),
    ({"resources": {"gate": {"scratch": "1GB"}}}, "'1GB' is not a memory/storage quantity"),
    ({"timeouts_s": {"push": 0}}, "timeouts_s.push must be a whole number"),
    ({"variants": {"gpu": {"accelerator_count": 3}}}, "must be one of 0, 1, 2, 4, 8, 16"),
    ({"variants": {"fpga": {}}}, "unknown variant 'fpga'"),
    ({"gcp_key_secret": "My_Key"}, "is not a Kubernetes Secret name"),
    ({"secrets": {}}, "unknown key(s) ['secrets']"),
])
def test_bad_cluster_settings_are_refused_naming_the_setting(settings, message):
    with pytest.raises(cluster.SettingsError) as err:
        cluster.load_settings(settings)
    assert message in str(err.value)


def test_compile_with_unreadable_settings_exits_2_with_the_reason(tmp_path, capsys):
    assert compile_mod.main(["--out", str(tmp_path), "--settings", "{not json"]) == 2
    assert "not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize("stem", list(TRAINING.values()))
def test_compiled_defaults_leave_the_gate_and_slices_to_the_problem(build, stem):
    """Nothing penguin-specific in the defaults a cluster run gets: empty thresholds are
    the task's defaults (components/common/thresholds.py), empty slices the spec's own."""
    spec, _ = _load(build / "pipelines" / f"{stem}.yaml")
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["thresholds"]["defaultValue"] == ""
    assert params["slices"]["defaultValue"] == []
    assert "island" not in json.dumps({k: v for k, v in params.items() if k != "problem"})


def test_multiworker_replicas_get_the_key_secret_and_the_train_resources(build_with_secret):
    """The TFJob's replicas are not KFP tasks: what they need reaches them as the
    launcher's parameters (the launcher writes them into the TFJob)."""
    spec, _ = _load(build_with_secret / "pipelines" / "training_pipeline_multiworker.yaml")
    params = _tasks(spec)["train-tfjob"]["inputs"]["parameters"]
    assert params["gcp_key_source"]["runtimeValue"]["constant"] == "kfp-ct-gcs-key"
    assert params["worker_resources"]["runtimeValue"]["constant"] == \
        cluster.worker_resources()
    assert cluster.worker_resources()["limits"]["memory"] == cluster.RESOURCES["train"].memory_limit
