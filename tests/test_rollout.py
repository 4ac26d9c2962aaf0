"""The rollout: its exact Kubernetes calls, its judge against a real model server double,
its records in the registry.

No KServe cluster runs here. The Kubernetes API is a double on 127.0.0.1
(tests/kserve_double.py: the API server's answers and KServe's revisions and traffic
split) reached through the real ``kubernetes`` client; the canary is a double of TF
Serving's REST API serving the pushed SavedModel itself (tests/tfserving_double.py);
the model base is on the GCS emulator, versions pushed by the real push.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from pathlib import Path

import pytest
import yaml

from kfp_ct.components.common import registry, storage
from kfp_ct.components.common.errors import KfpCtError
from kfp_ct.components.common.kube import api_client
from kfp_ct.components.push import logic as push_logic
from kfp_ct.components.rollout import kserve, labels, logic
from kfp_ct.components.rollout.logic import Policy

from kserve_double import ISVCS, KServeDouble
from tfserving_double import ModelServerDouble

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = str(ROOT / "pipelines" / "penguins" / "problem.json")
NS, NAME = "team-a", "penguins"
FAST = Policy(canary_percent=10, ready_timeout_s=5, soak_s=0, poll_s=0.01)


# ----------------------------------------------------------------------- fixtures

def _upstream(tmp):
    dirs = {n: tmp / n for n in ("blessing", "evaluation", "statistics", "schema")}
    for d in dirs.values():
        d.mkdir(parents=True)
    (dirs["blessing"] / "BLESSED").write_text("")
    (dirs["blessing"] / "blessing.json").write_text(json.dumps({"blessed": True, "checks": []}))
    (dirs["evaluation"] / "evaluation.json").write_text(json.dumps(
        {"task": "classification", "baseline": {"state": "none", "version": None},
         "candidate": {"overall": {"accuracy": 0.97}}}))
    (dirs["statistics"] / "FeatureStats.pb").write_bytes(b"\x0a\x03stats")
    (dirs["schema"] / "schema.pbtxt").write_text('feature { name: "island" }\n')
    return {k: str(v) for k, v in dirs.items()}


@pytest.fixture(scope="module")
def pushed_local(penguins_model, tmp_path_factory):
    """A local model base with versions 1 and 2, pushed by the real push (once)."""
    tmp = tmp_path_factory.mktemp("rollout_push")
    base = str(tmp / "base")
    for version in (1, 2):
        up = _upstream(tmp / f"up{version}")
        if version == 2:
            Path(up["evaluation"], "evaluation.json").write_text(json.dumps(
                {"task": "classification", "baseline": {"state": "ok", "version": 1},
                 "candidate": {"overall": {"accuracy": 0.97}}}))
        push_logic.run_push(model_dir=penguins_model["model"], blessing_dir=up["blessing"],
                            push_destination=base, raw_eval_dir=penguins_model["raw"],
                            pushed_dir=str(tmp / f"pushed{version}"),
                            statistics_dir=up["statistics"], schema_dir=up["schema"],
                            problem=PROBLEM, evaluation_dir=up["evaluation"],
                            run_info={"run_id": f"run-{version}"}, canary_rows=8)
    return base


@pytest.fixture
def base(pushed_local, gcs_emulator):
    """The two versions on gs:// (the emulator), a fresh base for each test."""
    target = f"{gcs_emulator.new_bucket()}/serving/penguins"
    for version in ("1", "2"):
        storage.copy_tree(os.path.join(pushed_local, version), f"{target}/{version}")
    return target


def meta(base, version):
    return {"pushed": True, "version": version, "uri": f"{base}/{version}", "destination": base,
            "blessed": True}


@pytest.fixture
def servers(penguins_model):
    """A model server double per version (what each revision's pods would serve)."""
    doubles = {v: ModelServerDouble(NAME, {v: penguins_model["model"]}) for v in (1, 2)}
    for d in doubles.values():
        d.start()
    yield doubles
    for d in doubles.values():
        d.stop()


@pytest.fixture
def k8s(servers):
    def url_for(uri):
        return servers[int(uri.rstrip("/").rsplit("/", 1)[1])].url

    double = KServeDouble(NS, ready_after=2, url_for=url_for).start()
    yield double
    double.stop()


def run(k8s, base, version, logs=None, policy=FAST, **kw):
    return logic.rollout_kserve(meta(base, version), NAME, NS, policy,
                                client=api_client(k8s.host),
                                log=(logs.append if logs is not None else lambda _: None), **kw)


def predicts(server):
    return [(m, p) for m, p, *_ in server.requests if m == "POST"]


# ------------------------------------------------------------------ first deploy

def test_first_deploy_creates_the_service_judges_it_and_records_it(k8s, servers, base):
    result = run(k8s, base, 1)

    assert result.rolled_out and result.state == "promoted", result.reason
    uri = f"{base}/kfp_ct_serving/1"
    posts = [(p, b) for m, p, _, b, _ in k8s.requests if m == "POST"]
    assert posts == [(ISVCS.format(ns=NS), {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": NAME, "namespace": NS,
                     "labels": {"app.kubernetes.io/managed-by": "kfp-ct"},
                     "annotations": {"serving.kserve.io/enable-tag-routing": "true",
                                     "kfp-ct/version": "1", "kfp-ct/model-base": base}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "tensorflow"},
                                         "storageUri": uri}}}})]
    assert not [m for m, *_ in k8s.requests if m in ("PATCH", "DELETE")]
    # The judge sent the warmup rows as one batch, then three rows one by one.
    assert predicts(servers[1]) == [("POST", f"/v1/models/{NAME}:predict")] * 4
    assert "every answer matched the one recorded at push" in result.reason
    # One version is copied, as a numbered folder, without its audit files.
    copied = storage.list_files(uri)
    assert "1/saved_model.pb" in copied and not any(k.startswith("1/kfp_ct/") for k in copied)
    assert {k.split("/", 1)[0] for k in copied} == {"1"}
    assert registry.serving(base) == {f"kserve:{NS}/{NAME}": {"stable": 1, "canary": None,
                                                              "percent": 0}}
    table = registry.describe(base)
    assert re.search(rf"^\s+1\s+complete.*kserve:{NS}/{NAME}", table, re.M), table


def test_a_first_deploy_that_answers_wrongly_is_deleted(k8s, servers, base):
    servers[1].tamper = _swap_scores
    result = run(k8s, base, 1)

    assert not result.rolled_out and result.state == "removed"
    assert "answered wrongly" in result.reason and "was deleted" in result.reason
    assert [m for m, *_ in k8s.requests if m == "DELETE"] == ["DELETE"]
    assert NAME not in k8s.objects
    assert registry.serving(base)[f"kserve:{NS}/{NAME}"]["stable"] is None


# ------------------------------------------------------------------ canary

def _deployed(k8s, base):
    assert run(k8s, base, 1).rolled_out
    mark = len(k8s.requests)
    return mark


def test_a_later_version_is_a_canary_judged_at_its_own_url_then_promoted(k8s, servers, base):
    mark = _deployed(k8s, base)
    logs: list[str] = []
    result = run(k8s, base, 2, logs)

    assert result.rolled_out and result.state == "promoted" and result.previous == 1
    writes = [(m, p, b, t) for m, p, _, b, t in k8s.requests[mark:] if m != "GET"]
    path = f"{ISVCS.format(ns=NS)}/{NAME}"
    attempt = writes[0][2]["spec"]["predictor"]["annotations"]["kfp-ct/rollout-attempt"]
    assert re.fullmatch(r"[0-9a-f]{12}", attempt)
    assert writes == [
        ("PATCH", path, {"metadata": {"annotations": {
            "serving.kserve.io/enable-tag-routing": "true", "kfp-ct/version": "2"}},
            "spec": {"predictor": {"canaryTrafficPercent": 10, "model": {
                "modelFormat": {"name": "tensorflow"},
                "storageUri": f"{base}/kfp_ct_serving/2"},
                "annotations": {"kfp-ct/rollout-attempt": attempt}}}},
         "application/merge-patch+json"),
        ("PATCH", path, {"spec": {"predictor": {"canaryTrafficPercent": None}}},
         "application/merge-patch+json"),
    ]
    # Status was polled between the two (Ready of the new revision, then the traffic).
    assert [m for m, *_ in k8s.requests[mark:]].count("GET") >= 4
    assert len(predicts(servers[2])) == 4  # the canary revision's URL, not the stable one
    isvc = k8s.objects[NAME]
    assert kserve.traffic(isvc) == [{"revisionName": f"{NAME}-predictor-00002", "percent": 100,
                                     "latestRevision": True, "tag": "latest",
                                     "url": servers[2].url}]
    states = [r["state"] for r in registry.rollouts(base)]
    assert states == ["promoted", "canary", "promoted"]
    assert registry.serving(base)[f"kserve:{NS}/{NAME}"]["stable"] == 2


def test_a_canary_that_never_becomes_ready_is_rolled_back_with_its_condition_and_logs(
        k8s, servers, base):
    _deployed(k8s, base)
    k8s.fate = "never"
    revision = f"{NAME}-predictor-00002"
    k8s.pods = [{"metadata": {"name": f"{revision}-deployment-abc",
                              "labels": {kserve.REVISION_LABEL: revision}},
                 "status": {"phase": "Pending", "initContainerStatuses": [
                     {"name": "storage-initializer", "ready": False,
                      "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}]
    k8s.logs[(f"{revision}-deployment-abc", "storage-initializer")] = (
        "INFO copying gs://bucket/serving/penguins/kfp_ct_serving/2\n"
        "google.api_core.exceptions.Forbidden: 403 GET storage.googleapis.com: "
        "caller does not have storage.objects.list access")
    policy = Policy(canary_percent=10, ready_timeout_s=0.5, poll_s=0.01)
    result = run(k8s, base, 2, policy=policy)

    assert not result.rolled_out and result.state == "rolled_back"
    assert "did not become ready" in result.reason
    assert "Ready: RevisionMissing" in result.reason
    assert "storage-initializer: CrashLoopBackOff" in result.reason
    assert "storage.objects.list access" in result.reason
    patches = [b for m, _, _, b, _ in k8s.requests if m == "PATCH"]
    assert patches[-1] == {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    assert not predicts(servers[2])  # never judged
    assert kserve.traffic(k8s.objects[NAME])[0]["url"] == servers[1].url  # v1 serves all
    assert registry.serving(base)[f"kserve:{NS}/{NAME}"] == {"stable": 1, "canary": None,
                                                              "percent": 0}
    assert (ROOT / "components" / "rollout" / "README.md").exists()


def test_the_same_version_after_a_failed_canary_gets_a_fresh_revision(k8s, servers, base):
    _deployed(k8s, base)
    k8s.fate = "never"
    assert run(k8s, base, 2, policy=Policy(ready_timeout_s=0.2, poll_s=0.01)).state == \
        "rolled_back"
    k8s.fate = "ready"  # say the cause was a node that is back now
    result = run(k8s, base, 2)
    assert result.rolled_out and result.state == "promoted", result.reason
    assert [r["name"] for r in k8s.revisions[NAME]] == [
        f"{NAME}-predictor-00001", f"{NAME}-predictor-00002", f"{NAME}-predictor-00003"]
    assert kserve.traffic(k8s.objects[NAME])[0]["revisionName"] == f"{NAME}-predictor-00003"


def test_a_canary_whose_model_fails_to_load_is_rolled_back_at_once(k8s, base):
    _deployed(k8s, base)
    k8s.fate = "load-fails"
    policy = Policy(canary_percent=10, ready_timeout_s=60, poll_s=0.01)
    result = run(k8s, base, 2, policy=policy)
    assert result.state == "rolled_back"
    assert "the model failed to load (ModelLoadFailed: Failed to load the model" in result.reason


def _swap_scores(answer):
    out = answer.get("outputs")
    if isinstance(out, dict):
        out = {k: (list(reversed(v)) if isinstance(v, list) and len(v) > 1 else
                   [[(x[-1] if isinstance(x, list) else x)] * (len(x) if isinstance(x, list)
                                                               else 1) for x in v]
                   if isinstance(v, list) else v) for k, v in out.items()}
        return dict(answer, outputs=out)
    return answer


def test_a_ready_canary_that_answers_wrongly_is_rolled_back(k8s, servers, base):
    _deployed(k8s, base)
    servers[2].tamper = _swap_scores
    result = run(k8s, base, 2)

    assert not result.rolled_out and result.state == "rolled_back"
    assert "answered wrongly" in result.reason and "expected" in result.reason
    assert [b for m, _, _, b, _ in k8s.requests if m == "PATCH"][-1] == \
        {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    assert result.verdict["passed"] is False
    assert registry.serving(base)[f"kserve:{NS}/{NAME}"]["stable"] == 1
    assert "rolled_back" in [r["state"] for r in registry.rollouts(base)]


def test_a_canary_that_answers_with_errors_is_rolled_back(k8s, servers, base):
    _deployed(k8s, base)
    servers[2].fail_predict = (500, "Failed to load servable")
    result = run(k8s, base, 2)
    assert result.state == "rolled_back"
    assert "HTTP 500" in result.reason and "Failed to load servable" in result.reason


def _sigterm_once(when):
    """A function that sends this process SIGTERM the first time ``when()`` is true."""
    sent = []

    def check():
        if not sent and when():
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
    return check


def test_sigterm_while_the_canary_takes_traffic_rolls_it_back(k8s, base):
    _deployed(k8s, base)
    k8s.fate = "never"
    # SIGTERM while the rollout waits for the canary: sent by the API double as it
    # answers the first status read after the canary patch.
    k8s.on_read = _sigterm_once(lambda: any(m == "PATCH" for m, *_ in k8s.requests))
    with pytest.raises(KfpCtError, match="interrupted.*canary's traffic was set to 0"):
        run(k8s, base, 2, policy=Policy(canary_percent=10, ready_timeout_s=30, poll_s=0.01))
    assert [b for m, _, _, b, _ in k8s.requests if m == "PATCH"][-1] == \
        {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    assert registry.rollouts(base)[-1]["state"] == "rolled_back"


def test_sigterm_while_a_record_is_written_still_rolls_the_canary_back(k8s, base,
                                                                        monkeypatch):
    """SIGTERM inside a storage call (the canary's record being written) is not taken
    for a storage error: the canary the patch started is still set back to 0."""
    _deployed(k8s, base)
    real = storage.create_only
    sigterm = _sigterm_once(lambda: any(m == "PATCH" for m, *_ in k8s.requests))

    def create_only(path, data):
        sigterm()
        return real(path, data)

    monkeypatch.setattr(storage, "create_only", create_only)
    with pytest.raises(KfpCtError, match="interrupted.*canary's traffic was set to 0"):
        run(k8s, base, 2)
    patches = [b for m, _, _, b, _ in k8s.requests if m == "PATCH"]
    assert len(patches) == 2 and patches[-1] == \
        {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    assert [r["state"] for r in registry.rollouts(base)] == ["promoted", "rolled_back"]


def test_sigterm_after_the_promotion_takes_nothing_back_and_says_so(k8s, base):
    _deployed(k8s, base)
    k8s.on_read = _sigterm_once(lambda: [m for m, *_ in k8s.requests].count("PATCH") == 2)
    with pytest.raises(KfpCtError, match="had no canary of version 2 taking traffic"):
        run(k8s, base, 2)
    patches = [b for m, _, _, b, _ in k8s.requests if m == "PATCH"]
    assert patches[-1] == {"spec": {"predictor": {"canaryTrafficPercent": None}}}


def test_the_same_version_already_serving_changes_nothing(k8s, base):
    mark = _deployed(k8s, base)
    result = run(k8s, base, 1)
    assert result.rolled_out and result.state == "unchanged"
    assert [m for m, *_ in k8s.requests[mark:]] == ["GET"]


# ------------------------------------------------------------------ refusals

def test_a_service_account_without_permission_is_named_clearly(k8s, base):
    k8s.forbidden = {"get"}
    with pytest.raises(kserve.RolloutError) as err:
        run(k8s, base, 1)
    text = str(err.value)
    assert f"cannot read InferenceService {NS}/{NAME}: HTTP 403" in text
    assert 'cannot get resource "inferenceservices"' in text
    assert "needs the Role in components/rollout/README.md" in text
    assert [m for m, *_ in k8s.requests] == ["GET"]
    assert registry.rollouts(base) == []


def test_patch_forbidden_after_a_first_deploy_is_named_and_changes_nothing(k8s, base):
    _deployed(k8s, base)
    k8s.forbidden = {"patch"}
    with pytest.raises(kserve.RolloutError, match=r"cannot patch .*HTTP 403.*Role"):
        run(k8s, base, 2)
    assert registry.serving(base)[f"kserve:{NS}/{NAME}"]["stable"] == 1


def test_nothing_pushed_is_nothing_rolled_out(k8s, tmp_path):
    result = logic.run_rollout({"pushed": False, "reason": "not blessed: accuracy 0.4 < 0.5",
                                "destination": "gs://b/serving/penguins"}, str(tmp_path / "out"),
                               target="kserve", name=NAME, namespace=NS,
                               client=api_client(k8s.host), log=lambda _: None)
    assert not result.rolled_out and result.state == "skipped"
    assert "push pushed nothing: not blessed" in result.reason
    assert k8s.requests == []
    assert (tmp_path / "out" / "NOT_ROLLED_OUT").read_text().startswith("push pushed nothing")
    assert json.loads((tmp_path / "out" / "rollout.json").read_text())["state"] == "skipped"


@pytest.mark.parametrize("bad, message", [
    ({"name": "Penguins"}, "not usable"), ({"name": "p" * 46}, "at most 45"),
    ({"policy": Policy(canary_percent=0)}, "canary_percent must be 1..99"),
    ({"policy": Policy(canary_percent=100)}, "canary_percent must be 1..99"),
    ({"policy": Policy(ready_timeout_s=0)}, "ready_timeout_s must be above 0"),
])
def test_bad_settings_are_refused_before_any_call(k8s, base, bad, message):
    args = {"name": NAME, "policy": FAST, **bad}
    with pytest.raises(KfpCtError, match=message):
        logic.rollout_kserve(meta(base, 1), args["name"], NS, args["policy"],
                             client=api_client(k8s.host), log=lambda _: None)
    assert k8s.requests == []


def test_a_local_model_base_is_refused_for_kserve(k8s, pushed_local):
    with pytest.raises(KfpCtError, match="storage initializer copies from object storage"):
        run(k8s, pushed_local, 1)
    assert k8s.requests == []


def test_raw_deployment_mode_is_refused_for_a_canary(k8s, base):
    _deployed(k8s, base)
    k8s.objects[NAME]["metadata"]["annotations"][kserve.DEPLOYMENT_MODE] = "RawDeployment"
    with pytest.raises(KfpCtError, match="RawDeployment mode: a canary revision"):
        run(k8s, base, 2)


# ------------------------------------------------------------------ RBAC

def _readme_rbac():
    text = (ROOT / "components" / "rollout" / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    docs = [d for b in blocks for d in yaml.safe_load_all(b) if d]
    return {d["kind"]: d for d in docs if d.get("kind") in ("Role", "RoleBinding")}


def _rule_for(method, path):
    """(apiGroup, resource, verb) the API server checks for a request."""
    if path.startswith("/apis/serving.kserve.io/"):
        named = path.rstrip("/").split("/")[-1] != "inferenceservices"
        verb = {"GET": "get" if named else "list", "POST": "create", "PATCH": "patch",
                "DELETE": "delete"}[method]
        return "serving.kserve.io", "inferenceservices", verb
    if path.endswith("/log"):
        return "", "pods/log", "get"
    return "", "pods", "list" if path.rstrip("/").endswith("/pods") else "get"


def test_the_readme_role_allows_every_call_the_rollout_makes_and_no_more(k8s, servers, base):
    rbac = _readme_rbac()
    role, binding = rbac["Role"], rbac["RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"][0]["kind"] == "ServiceAccount"
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]
    allowed = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}

    # Every kind of call: create, a canary (promote is a patch too), a failing canary's
    # pods and logs, its rollback, and the delete of a failed first deploy.
    _deployed(k8s, base)
    k8s.fate = "never"
    revision = f"{NAME}-predictor-00002"
    k8s.pods = [{"metadata": {"name": "p", "labels": {kserve.REVISION_LABEL: revision}},
                 "status": {"phase": "Pending", "containerStatuses": [
                     {"name": "kserve-container", "ready": False,
                      "state": {"waiting": {"reason": "Error"}}}]}}]
    run(k8s, base, 2, policy=Policy(ready_timeout_s=0.2, poll_s=0.01))
    servers[1].tamper = _swap_scores
    k8s.objects.clear()
    k8s.rolled_out.clear()
    run(k8s, base, 1)
    used = {_rule_for(m, p) for m, p, *_ in k8s.requests}
    assert used == allowed, (used ^ allowed)


# ------------------------------------------------------------ plain TF Serving

class ConfigPoller:
    """What TF Serving does with ``--model_config_file`` at each poll
    (``ServerCore::ReloadConfig``, see components/rollout/labels.py): the new labels are
    checked against the versions loaded now (a label that moves must land on a loaded
    version; a new one may not, with --allow_version_labels_for_unavailable_models), a
    refused file changes nothing; then the policy's versions are loaded, the rest unloaded."""

    def __init__(self, server, path):
        self.server, self.path = server, path
        self.refused = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def poll(self):
        cfg = labels.read(self.path)
        if cfg is None:
            return
        loaded = {v for v in self.server.versions
                  if self.server.states.get(v, "AVAILABLE") == "AVAILABLE"}
        for key, version in cfg.labels.items():
            moved = self.server.labels.get(key) not in (None, version)
            if moved and version not in loaded:
                self.refused += 1
                return
        self.server.labels = dict(cfg.labels)
        for v in self.server.versions:
            self.server.states[v] = "AVAILABLE" if v in cfg.versions else "END"

    def _run(self):
        while not self.stop.wait(0.02):
            self.poll()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)


@pytest.fixture
def tfs(penguins_model, pushed_local, tmp_path):
    """A TF Serving double that has both versions on disk and serves what the labels
    file says (stable and canary on version 1 to begin with), and the file's path."""
    path = str(tmp_path / "models.config")
    labels.write(path, labels.LabelConfig(NAME, pushed_local, stable=1, canary=1))
    server = ModelServerDouble(NAME, {1: penguins_model["model"], 2: penguins_model["model"]})
    server.start()
    ConfigPoller(server, path).poll()
    yield server, path
    server.stop()


def tf_run(server, path, base, policy=FAST):
    return logic.rollout_tfserving(meta(base, 2), NAME, server.url, path, policy,
                                   log=lambda _: None)


def test_tfserving_labels_load_the_canary_judge_it_then_move_stable(tfs, pushed_local):
    server, path = tfs
    assert server.states == {1: "AVAILABLE", 2: "END"}
    with ConfigPoller(server, path) as poller:
        result = tf_run(server, path, pushed_local)

    assert result.rolled_out and result.state == "promoted" and result.previous == 1
    assert poller.refused == 0  # the version was loaded before a label moved onto it
    cfg = labels.read(path)
    assert (cfg.stable, cfg.canary, cfg.versions) == (2, 2, (2,))
    assert predicts(server) == [("POST", f"/v1/models/{NAME}/labels/canary:predict")] * 4
    target = f"tfserving:{path}"
    assert registry.serving(pushed_local)[target] == {"stable": 2, "canary": None,
                                                      "percent": 0}
    assert [r["state"] for r in registry.rollouts(pushed_local)
            if r["target"] == target][-2:] == ["canary", "promoted"]


def test_tfserving_canary_that_answers_wrongly_moves_the_canary_label_back(tfs, pushed_local):
    server, path = tfs
    server.tamper = _swap_scores
    with ConfigPoller(server, path) as poller:
        result = tf_run(server, path, pushed_local)
        poller.poll()

    assert not result.rolled_out and result.state == "rolled_back"
    assert "answered wrongly" in result.reason
    cfg = labels.read(path)
    assert (cfg.stable, cfg.canary, cfg.versions) == (1, 1, (1,))
    assert server.labels == {"canary": 1, "stable": 1} and server.states[2] == "END"


def test_tfserving_that_never_loads_the_version_is_rolled_back_naming_the_flags(
        tfs, pushed_local):
    server, path = tfs  # no poller: the server never reads the file again
    result = tf_run(server, path, pushed_local, Policy(ready_timeout_s=0.3, poll_s=0.01))
    assert result.state == "rolled_back"
    assert "did not load version 2" in result.reason
    assert "--allow_version_labels_for_unavailable_models" in result.reason
    assert labels.read(path).versions == (1,)
    assert not predicts(server)
