"""The TFJob launcher: its exact manifest, and its exact calls to a Kubernetes API.

No cluster runs here. The API is a small double (http.server on 127.0.0.1) that answers
the few endpoints the launcher uses, the way the API server and the Training Operator
do, and records every request; the real ``kubernetes`` client is pointed at it
(``Configuration.host``). What the operator itself does with the TFJob is only checked
by the fields it reads (tfReplicaSpecs, container "tensorflow", restartPolicy).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from kfp_ct.components.common.errors import KfpCtError
from kfp_ct.components.train import tfjob

from api_double import JsonHandler

ROOT = Path(__file__).resolve().parents[1]
NS = "team-a"
TFJOBS = f"/apis/kubeflow.org/v1/namespaces/{NS}/tfjobs"
PODS = f"/api/v1/namespaces/{NS}/pods"


def _condition(kind, reason="", message=""):
    return {"type": kind, "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": "2026-12-01T00:00:00Z"}


def _status(*kinds):
    """A status whose conditions went through ``kinds``; the operator sets the earlier
    ones to "False" as it moves on, and only the last stays "True"."""
    conditions = [dict(_condition(k), status="False") for k in kinds[:-1]]
    return {"conditions": conditions + [_condition(kinds[-1])]} if kinds else {}


class KubernetesDouble:
    """TFJobs whose status follows a script (one entry per GET), pods and their logs."""

    def __init__(self):
        self.requests = []
        self.jobs = {}
        self.script = []          # statuses the next GETs return, in order
        self.pods = []
        self.logs = {}            # (pod, previous) -> text
        self.exists_first = False  # POST answers 409 once (an earlier attempt's TFJob)
        self.gone_after = 1       # GETs after a DELETE that still find the job
        double = self

        class Handler(JsonHandler):
            def _record(self):
                path, query, body = self._read()
                double.requests.append((self.command, path, query, body))
                return path, query, body

            def do_POST(self):
                path, _, body = self._record()
                if path != TFJOBS:
                    return self._send(404, {"kind": "Status", "code": 404})
                name = body["metadata"]["name"]
                if double.exists_first:
                    double.exists_first = False
                    double.jobs[name] = {"old": True}
                    return self._send(409, {"kind": "Status", "code": 409,
                                            "reason": "AlreadyExists",
                                            "message": f'tfjobs.kubeflow.org "{name}" '
                                                       "already exists"})
                double.jobs[name] = dict(body, metadata={**body["metadata"], "uid": "u-1"})
                self._send(201, double.jobs[name])

            def do_GET(self):
                path, _, _ = self._record()
                if path.startswith(TFJOBS + "/"):
                    name = path.rsplit("/", 1)[1]
                    job = double.jobs.get(name)
                    if job is None:
                        return self._send(404, {"kind": "Status", "code": 404,
                                                "reason": "NotFound"})
                    if job.get("deleted"):
                        double.gone_after -= 1
                        if double.gone_after < 0:
                            del double.jobs[name]
                            return self._send(404, {"kind": "Status", "code": 404})
                        return self._send(200, job)
                    if double.script:
                        job["status"] = double.script.pop(0)
                    return self._send(200, job)
                if path == PODS:
                    return self._send(200, {"kind": "PodList", "apiVersion": "v1",
                                            "items": double.pods})
                if path.startswith(PODS + "/") and path.endswith("/log"):
                    pod = path.split("/")[-2]
                    previous = self._query_previous()
                    return self._send(200, double.logs.get((pod, previous), "").encode(),
                                      "text/plain")
                self._send(404, {"kind": "Status", "code": 404})

            def _query_previous(self):
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                return query.get("previous") == "True"

            def do_DELETE(self):
                path, _, _ = self._record()
                name = path.rsplit("/", 1)[1]
                job = double.jobs.get(name)
                if not path.startswith(TFJOBS + "/") or job is None:
                    return self._send(404, {"kind": "Status", "code": 404})
                job["deleted"] = True
                self._send(200, {"kind": "Status", "status": "Success"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def calls(self):
        return [(method, path, query) for method, path, query, _ in self.requests]


@pytest.fixture
def k8s():
    double = KubernetesDouble()
    double.thread.start()
    try:
        yield double
    finally:
        double.server.shutdown()
        double.server.server_close()
        double.thread.join(timeout=10)


def _jobs(double, logs=None):
    return tfjob.TFJobs(NS, client=tfjob.api_client(double.host),
                        log=(logs.append if logs is not None else lambda _: None))


# ------------------------------------------------------------------ the manifest

RESOURCES = tfjob.replica_resources("2", "4", "1Gi", "4Gi", scratch="10Gi")
ARGS = dict(transform_graph="gs://b/root/transform/graph",
            examples="gs://b/root/transform/examples", problem='{"label":"species"}',
            model="gs://b/root/train/model", train_steps=300, accelerator="auto", seed=42)


def test_the_tfjob_manifest_is_exactly_what_the_operator_reads():
    owner = tfjob.owner_reference({tfjob.POD_NAME_ENV: "run-7-train-123",
                                   tfjob.POD_UID_ENV: "0b1c-uid"})
    command = tfjob.worker_args(**ARGS, checkpoint_root="gs://b/ckpt", run_id="run-7")
    manifest = tfjob.build_manifest("kfp-ct-train-x", NS, "ghcr.io/kfp-ct/kfp-ct-cpu:0.1.0",
                                    command, 3, RESOURCES, owner=owner,
                                    env={"TF_CPP_MIN_LOG_LEVEL": "2"})
    assert manifest == {
        "apiVersion": "kubeflow.org/v1", "kind": "TFJob",
        "metadata": {"name": "kfp-ct-train-x", "namespace": NS,
                     "labels": {"app.kubernetes.io/part-of": "kfp-ct"},
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Pod",
                                          "name": "run-7-train-123", "uid": "0b1c-uid",
                                          "controller": False,
                                          "blockOwnerDeletion": False}]},
        "spec": {
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 3},
            "tfReplicaSpecs": {"Worker": {
                "replicas": 3, "restartPolicy": "OnFailure",
                "template": {"spec": {"containers": [{
                    "name": "tensorflow", "image": "ghcr.io/kfp-ct/kfp-ct-cpu:0.1.0",
                    "command": ["python", "-m", "kfp_ct.components.train.worker",
                                "--transform-graph", "gs://b/root/transform/graph",
                                "--examples", "gs://b/root/transform/examples",
                                "--problem", '{"label":"species"}',
                                "--model", "gs://b/root/train/model",
                                "--train-steps", "300", "--accelerator", "auto",
                                "--seed", "42", "--checkpoint-root", "gs://b/ckpt",
                                "--run-id", "run-7"],
                    "resources": {"limits": {"cpu": "4", "memory": "4Gi",
                                             "ephemeral-storage": "10Gi"},
                                  "requests": {"cpu": "2", "memory": "1Gi"}},
                    "env": [{"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"}]}]}}}}},
    }


def test_gpu_workers_a_key_secret_and_a_service_account_reach_every_replica():
    manifest = tfjob.build_manifest(
        "j", NS, "gpu-image", ["python"], 2,
        tfjob.replica_resources("4", "8", "8Gi", "16Gi", gpus=2),
        service_account="trainer", key_secret="gcs-key")
    spec = manifest["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert spec["serviceAccountName"] == "trainer"
    assert spec["volumes"] == [{"name": "gcp-key", "secret": {"secretName": "gcs-key"}}]
    assert container["volumeMounts"] == [{"name": "gcp-key",
                                          "mountPath": "/var/secrets/kfp-ct-gcp",
                                          "readOnly": True}]
    assert container["env"] == [{"name": "GOOGLE_APPLICATION_CREDENTIALS",
                                 "value": "/var/secrets/kfp-ct-gcp/key.json"}]
    assert "ownerReferences" not in manifest["metadata"]  # no pod named: no owner
    assert tfjob.owner_reference({}) is None
    assert tfjob.owner_reference({"KFP_POD_NAME": "p", "KFP_POD_UID": "u"})["uid"] == "u"


def test_the_job_name_is_a_dns_label_shared_by_retries_of_one_run():
    a = tfjob.job_name("Training Run/2026-12-01 #7 with a long name that goes on")
    assert a == tfjob.job_name("Training Run/2026-12-01 #7 with a long name that goes on")
    assert a != tfjob.job_name("another run")
    assert len(a) <= 52 and a[0].isalpha() and a[-1].isalnum()
    assert all(c.islower() or c.isdigit() or c == "-" for c in a), a


@pytest.mark.parametrize("uris,named", [
    ({"model": "/gcs/b/x/model", "transform_graph": "gs://b/g",
      "transformed_examples": "gs://b/e"}, "model = '/gcs/b/x/model'"),
    ({"model": "minio://mlpipeline/v2/artifacts/m", "transform_graph": "gs://b/g",
      "transformed_examples": "gs://b/e"}, "model = 'minio://mlpipeline"),
    ({"model": "gs://b/m", "transform_graph": "s3://b/g",
      "transformed_examples": "gs://b/e"}, "transform_graph = 's3://b/g'"),
])
def test_artifacts_outside_gcs_are_refused_naming_the_pipeline_root(uris, named):
    with pytest.raises(KfpCtError) as err:
        tfjob.check_gcs(uris)
    assert named in str(err.value) and "gs:// pipeline root" in str(err.value)


def test_the_namespace_is_the_parameter_else_the_pods_own(tmp_path):
    path = tmp_path / "namespace"
    assert tfjob.namespace_of("given", str(path)) == "given"
    with pytest.raises(KfpCtError, match="no namespace for the TFJob"):
        tfjob.namespace_of("", str(path))
    path.write_text("kubeflow-user\n")
    assert tfjob.namespace_of("", str(path)) == "kubeflow-user"


@pytest.mark.parametrize("kinds,state", [
    ((), ""),
    (("Created",), "Created"),
    (("Created", "Running"), "Running"),
    (("Created", "Running", "Restarting"), "Restarting"),
    (("Created", "Running", "Succeeded"), "Succeeded"),
    (("Created", "Running", "Failed"), "Failed"),
])
def test_job_state_reads_the_true_condition(kinds, state):
    assert tfjob.job_state({"status": _status(*kinds)})[0] == state


# ------------------------------------------------------------------ against the API

def _manifest(name="kfp-ct-train-run-7"):
    return tfjob.build_manifest(name, NS, "img", ["python", "-m", tfjob.WORKER_MODULE], 2,
                                RESOURCES)


def test_submitted_then_polled_until_succeeded(k8s):
    k8s.script = [_status(), _status("Created"), _status("Created", "Running"),
                  _status("Created", "Running", "Succeeded")]
    logs = []
    done = tfjob.run_tfjob(_jobs(k8s, logs), _manifest(), timeout_s=30, poll_s=0.01,
                           log=logs.append)
    assert tfjob.job_state(done)[0] == "Succeeded"
    job = f"{TFJOBS}/kfp-ct-train-run-7"
    assert k8s.calls() == [("POST", TFJOBS, {})] + [("GET", job, {})] * 4
    assert k8s.requests[0][3] == _manifest()  # the manifest, as built
    assert logs == [f"[tfjob] submitted TFJob {NS}/kfp-ct-train-run-7: 2 worker(s)",
                    f"[tfjob] TFJob {NS}/kfp-ct-train-run-7: submitted",
                    f"[tfjob] TFJob {NS}/kfp-ct-train-run-7: Created",
                    f"[tfjob] TFJob {NS}/kfp-ct-train-run-7: Running",
                    f"[tfjob] TFJob {NS}/kfp-ct-train-run-7: Succeeded"]


def _pod(name, state=None, last=None, restarts=0, phase="Running"):
    status = {"name": "tensorflow", "ready": False, "restartCount": restarts,
              "image": "img", "imageID": "", "state": state or {"running": {}},
              "lastState": last or {}}
    return {"metadata": {"name": name}, "status": {"phase": phase,
                                                   "containerStatuses": [status]}}


def test_a_failed_tfjob_is_an_error_quoting_the_failing_replica_and_its_log(k8s):
    k8s.script = [_status("Created", "Running"),
                  {"conditions": [_condition("Failed", "TFJobFailed",
                                             "TFJob team-a/kfp-ct-train-run-7 has failed "
                                             "because 1 Worker replica(s) failed.")]}]
    k8s.pods = [
        _pod("kfp-ct-train-run-7-worker-0"),
        _pod("kfp-ct-train-run-7-worker-1", phase="Failed",
             state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}}),
    ]
    k8s.logs[("kfp-ct-train-run-7-worker-1", False)] = "\n".join(
        [f"line {i}" for i in range(30)] + ["[train] epoch 2 done", "Killed"]) + "\n"
    with pytest.raises(tfjob.TFJobError) as err:
        tfjob.run_tfjob(_jobs(k8s), _manifest(), timeout_s=30, poll_s=0.01)
    message = str(err.value)
    assert message.startswith(f"TFJob {NS}/kfp-ct-train-run-7 failed: TFJobFailed: TFJob "
                              "team-a/kfp-ct-train-run-7 has failed because 1 Worker")
    assert ("replica kfp-ct-train-run-7-worker-1: OOMKilled, exit code 137; last log "
            "lines:\n") in message
    assert message.endswith("  | [train] epoch 2 done\n  | Killed")
    assert "  | line 12\n" in message and "line 11\n" not in message  # the last 20 lines
    assert "worker-0" not in message
    job = f"{TFJOBS}/kfp-ct-train-run-7"
    assert k8s.calls() == [
        ("POST", TFJOBS, {}), ("GET", job, {}), ("GET", job, {}),
        ("GET", PODS, {"labelSelector": "training.kubeflow.org/job-name=kfp-ct-train-run-7"}),
        ("GET", f"{PODS}/kfp-ct-train-run-7-worker-1/log",
         {"container": "tensorflow", "tailLines": "20"}),
    ]  # a failed TFJob is kept for inspection: no DELETE


def test_a_replica_that_failed_before_its_restart_is_read_from_its_previous_log(k8s):
    k8s.script = [{"conditions": [_condition("Failed", "TFJobFailed", "backoff limit")]}]
    k8s.pods = [_pod("j-worker-0", restarts=3,
                     last={"terminated": {"exitCode": 1, "reason": "Error"}})]
    k8s.logs[("j-worker-0", True)] = "Traceback\nTrainingError: eval metrics are not finite"
    with pytest.raises(tfjob.TFJobError) as err:
        tfjob.run_tfjob(_jobs(k8s), _manifest("j"), timeout_s=30, poll_s=0.01)
    assert ("replica j-worker-0: Error, exit code 1 before its last restart; last log "
            "lines:\n  | Traceback\n  | TrainingError: eval metrics are not finite") in str(
        err.value)
    assert k8s.calls()[-1] == ("GET", f"{PODS}/j-worker-0/log",
                               {"container": "tensorflow", "tailLines": "20",
                                "previous": "True"})


def test_a_tfjob_that_outlives_the_timeout_is_deleted(k8s):
    k8s.script = [_status("Created", "Running")] * 1000
    started = time.monotonic()
    with pytest.raises(tfjob.TFJobError, match=r"did not finish within 1 s \(last state: "
                                               r"Running\); it was deleted"):
        tfjob.run_tfjob(_jobs(k8s), _manifest(), timeout_s=1, poll_s=0.1)
    assert time.monotonic() - started < 10
    job = f"{TFJOBS}/kfp-ct-train-run-7"
    calls = k8s.calls()
    assert calls[0] == ("POST", TFJOBS, {}) and calls[-1] == ("DELETE", job, {})
    polls = calls[1:-1]  # one look every poll_s until the deadline, then the DELETE
    assert all(c == ("GET", job, {}) for c in polls) and 3 <= len(polls) <= 12, calls
    assert k8s.requests[-1][3]["propagationPolicy"] == "Background"


def test_an_earlier_attempts_tfjob_is_replaced(k8s):
    k8s.exists_first = True
    k8s.gone_after = 1  # still there on the first look after the DELETE
    k8s.script = [_status("Created", "Running", "Succeeded")]
    jobs = _jobs(k8s)
    created = jobs.create(_manifest(), poll_s=0.01)
    assert created["metadata"]["uid"] == "u-1"
    job = f"{TFJOBS}/kfp-ct-train-run-7"
    assert k8s.calls() == [("POST", TFJOBS, {}), ("DELETE", job, {}), ("GET", job, {}),
                           ("GET", job, {}), ("POST", TFJOBS, {})]


def test_no_training_operator_is_a_clear_error(k8s):
    manifest = _manifest()
    manifest_other = dict(manifest, metadata={**manifest["metadata"]})
    jobs = tfjob.TFJobs("other-ns", client=tfjob.api_client(k8s.host), log=lambda _: None)
    with pytest.raises(tfjob.TFJobError, match=r"cannot create TFJob other-ns/kfp-ct-train-"
                                               r"run-7: HTTP 404 .*Training Operator"):
        tfjob.run_tfjob(jobs, manifest_other, timeout_s=5, poll_s=0.01)
    assert k8s.calls() == [("POST", "/apis/kubeflow.org/v1/namespaces/other-ns/tfjobs", {})]


_SIGTERM_SCRIPT = """
import sys
from kfp_ct.components.train import tfjob
jobs = tfjob.TFJobs("team-a", client=tfjob.api_client(sys.argv[1]), log=print)
manifest = tfjob.build_manifest("kfp-ct-train-run-7", "team-a", "img", ["python"], 2, {})
try:
    tfjob.run_tfjob(jobs, manifest, timeout_s=600, poll_s=0.05, log=lambda m: print(m, flush=True))
except tfjob.Terminated:
    print("TERMINATED", flush=True)
    sys.exit(143)
"""


def test_sigterm_while_waiting_deletes_the_tfjob(k8s):
    k8s.script = [_status("Created", "Running")] * 100000
    proc = subprocess.Popen([sys.executable, "-c", _SIGTERM_SCRIPT, k8s.host], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.strip().endswith(": Running"):
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err[-2000:]
    assert "[tfjob] deleted TFJob team-a/kfp-ct-train-run-7" in out and "TERMINATED" in out
    assert k8s.calls()[-1] == ("DELETE", f"{TFJOBS}/kfp-ct-train-run-7", {})


def test_launch_reads_the_chiefs_metrics_after_success(k8s, gcs_emulator):
    from kfp_ct.components.common import storage

    bucket = gcs_emulator.new_bucket()
    model = f"{bucket}/root/run-7/train-tfjob/model"
    storage.write_text(model + ".metrics.json", json.dumps({"eval_accuracy": 0.97,
                                                            "workers": 2.0}))
    k8s.script = [_status("Created", "Running", "Succeeded")]
    metrics = tfjob.launch(model, f"{bucket}/g", f"{bucket}/e", "{}", workers=2,
                           image="img", resources=RESOURCES, run_id="run-7", namespace=NS,
                           client=tfjob.api_client(k8s.host), poll_s=0.01,
                           environ={tfjob.POD_NAME_ENV: "p", tfjob.POD_UID_ENV: "u"},
                           log=lambda _: None)
    assert metrics == {"eval_accuracy": 0.97, "workers": 2.0}
    body = k8s.requests[0][3]
    assert body["metadata"]["name"] == tfjob.job_name("run-7")
    assert body["metadata"]["ownerReferences"][0]["uid"] == "u"
    command = body["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0][
        "command"]
    assert command[command.index("--model") + 1] == model


def test_launch_refuses_a_local_pipeline_root_before_any_call(k8s):
    with pytest.raises(KfpCtError, match="gs:// pipeline root"):
        tfjob.launch("/tmp/model", "/tmp/g", "/tmp/e", "{}", workers=2, image="img",
                     resources=RESOURCES, namespace=NS, client=tfjob.api_client(k8s.host))
    assert k8s.calls() == []


# ------------------------------------------------------------------ compiled variant

@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    import compile as compile_mod

    out = tmp_path_factory.mktemp("build")
    compile_mod.compile_all(str(out))
    docs = list(yaml.safe_load_all((out / "pipelines" / "training_pipeline_multiworker.yaml")
                                   .read_text()))
    return out, docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_the_multiworker_variant_launches_a_tfjob_from_a_small_launcher(compiled):
    from kfp_ct.pipelines import cluster

    out, spec, platform = compiled
    assert spec["pipelineInfo"]["name"] == "kfp-ct-training-multiworker"
    assert (out / "components" / "train_tfjob.yaml").exists()
    # The body runs inside the failed-run notice's exit handler (pipelines/notice.py).
    assert sorted(spec["root"]["dag"]["tasks"]) == ["announce-failure", "exit-handler-1"]
    tasks = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert sorted(tasks) == ["evaluate", "gate", "importer", "push", "train-tfjob",
                             "transform", "validate"]
    train = tasks["train-tfjob"]
    params = train["inputs"]["parameters"]
    # the pipeline's parameters, passed into the group by its task in the root DAG
    group = spec["root"]["dag"]["tasks"]["exit-handler-1"]["inputs"]["parameters"]
    for name in ("workers", "gpus_per_worker"):
        assert params[name] == {"componentInputParameter": f"pipelinechannel--{name}"}
        assert group[f"pipelinechannel--{name}"] == {"componentInputParameter": name}
    assert params["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    want = cluster.RESOURCES["train"]
    assert params["worker_resources"]["runtimeValue"]["constant"] == {
        "requests": {"cpu": want.cpu_request, "memory": want.memory_request},
        "limits": {"cpu": want.cpu_limit, "memory": want.memory_limit,
                   "ephemeral-storage": want.scratch}}
    assert "/kfp-ct-cpu:" in params["cpu_image"]["runtimeValue"]["constant"]
    assert "/kfp-ct-gpu:" in params["gpu_image"]["runtimeValue"]["constant"]
    assert params["timeout_s"]["runtimeValue"]["constant"] == cluster.TIMEOUTS_S["train"]
    root = spec["root"]["inputDefinitions"]["parameters"]
    assert root["workers"]["defaultValue"] == 2 and root["gpus_per_worker"]["defaultValue"] == 0
    assert root["namespace"]["defaultValue"] == ""
    # evaluate and push read the model the chief wrote to the artifact's URI
    assert tasks["evaluate"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"] == {
        "outputArtifactKey": "model", "producerTask": "train-tfjob"}
    executor = train["componentRef"]["name"].replace("comp-", "exec-")
    container = spec["deploymentSpec"]["executors"][executor]["container"]
    launcher = cluster.RESOURCES["train_tfjob"]
    assert (container["resources"]["resourceCpuRequest"],
            container["resources"]["resourceMemoryLimit"]) == (launcher.cpu_request,
                                                               launcher.memory_limit)
    assert "accelerator" not in container["resources"]  # the replicas hold the GPUs
    assert platform[executor]["fieldPathAsEnv"] == [
        {"name": "KFP_CT_POD_NAME", "fieldPath": "metadata.name"},
        {"name": "KFP_CT_POD_UID", "fieldPath": "metadata.uid"}]
    assert int(platform[executor]["activeDeadlineSeconds"]) == \
        cluster.TIMEOUTS_S["train_tfjob"] > cluster.TIMEOUTS_S["train"]
    assert train["retryPolicy"]["maxRetryCount"] == cluster.RETRIES["train_tfjob"].retries
