"""The retraining trigger: launch exactly once per window, never while a launched
retraining runs, respect the cooldown, under races too; the cluster path's exact KFP API
requests checked against a double of the v2beta1 API on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from kfp_ct.components.common import storage
from kfp_ct.pipelines.entrypoints import synth
from kfp_ct.components.common.errors import InputDataError, KfpCtError
from kfp_ct.components.drift import logic as drift_logic
from kfp_ct.components.retrain import logic
from kfp_api_double import kfp_api_double  # tests/ has no __init__: pytest puts it on sys.path

TOKEN = "in-cluster-sa-token"
PIPELINE = "kfp-ct-training"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def token(monkeypatch, tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(path))
    import kfp.client.client as kfp_client

    monkeypatch.setattr(kfp_client.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "ctx.json"))
    return str(path)


@pytest.fixture
def api():
    with kfp_api_double(token=TOKEN) as double:
        import datetime as dt

        utc = dt.timezone.utc
        double.ids = double.add_pipeline(PIPELINE, versions=[
            ("0.1.0-abc", dt.datetime(2026, 11, 1, tzinfo=utc)),
            ("0.1.0-def", dt.datetime(2026, 11, 20, tzinfo=utc))])
        yield double


def decide(drift_base, tmp_path, shift="category_mix", seed=1, rows=1500, name=None):
    """A real drift decision on a generated window; returns its decision folder."""
    folder = tmp_path / (name or f"{shift}-{seed}")
    path = folder / "window.csv"
    synth.write_penguins_like(path, rows, seed=seed, shift=shift)
    out = folder / "decision"
    drift_logic.run_drift_check(drift_base.base, window_path=str(path), decision_dir=str(out),
                                run_info={"run_id": f"monitor-{name or seed}"})
    return str(out)


def training_data(tmp_path) -> str:
    for day in ("2026-11-21", "2026-11-22", "2026-11-23"):
        synth.write_penguins_like(tmp_path / "data" / f"date={day}" / "part.csv", 50, seed=3)
    return str(tmp_path / "data" / "date=*")


def kfp_cfg(api, tmp_path, **kw) -> logic.TriggerConfig:
    return logic.TriggerConfig(mode="kfp", host=api.url, training_data=training_data(tmp_path),
                               training_partitions=2, **kw)


def private_base(drift_base, tmp_path) -> str:
    """A copy of the stats-only model base, so launch records do not leak between tests."""
    import shutil

    base = str(tmp_path / "serving")
    shutil.copytree(drift_base.base, base)
    return base


def trigger(decision, base, cfg, tmp_path, name="launch", run_id="monitor-run"):
    return logic.run_trigger(decision, base, cfg, str(tmp_path / name),
                             run_info={"run_id": run_id, "run_name": "monitoring"})


# -------------------------------------------------------------------- cluster path


def test_drift_creates_one_run_of_the_uploaded_pipeline_with_exact_requests(
        drift_base, tmp_path, api):
    base = private_base(drift_base, tmp_path)
    decision = decide(drift_base, tmp_path)
    record = trigger(decision, base, kfp_cfg(api, tmp_path, training_params={"train_steps": 500}),
                     tmp_path)
    assert record["launched"] is True and record["seq"] == 1
    assert os.path.exists(tmp_path / "launch" / logic.LAUNCHED)

    runs = api.requests_to("POST", "/apis/v2beta1/runs")
    assert len(runs) == 1
    body = runs[0].body
    pipeline_id, (_, newest) = api.ids
    assert body["pipeline_version_reference"] == {"pipeline_id": pipeline_id,
                                                  "pipeline_version_id": newest}
    lookup = api.requests_to("GET", "/apis/v2beta1/pipelines")[0].query
    assert PIPELINE in json.dumps(lookup)  # found by its display name
    assert body["display_name"] == "retrain-drift-1"
    params = body["runtime_config"]["parameters"]
    assert params["push_destination"] == base
    assert params["train_steps"] == 500
    data = params["data_path"].split(",")
    assert [os.path.basename(p) for p in data] == ["date=2026-11-22", "date=2026-11-23"]
    lineage = json.loads(params["trigger"])
    assert lineage["kind"] == "drift" and lineage["drifted"] == ["island"]
    assert lineage["monitor_run"]["run_id"] == "monitor-run" and lineage["launch"] == 1
    assert lineage["production_version"] == 1
    for request in api.requests:
        assert request.headers.get("authorization") == f"Bearer {TOKEN}", request.path
    assert record["result"]["pipeline_id"] == pipeline_id
    launches = logic.list_launches(base)
    assert [r["seq"] for r in launches] == [1]
    assert launches[0]["result"]["run_id"] == record["run_id"]


def test_a_pinned_training_pipeline_version_is_used(drift_base, tmp_path, api):
    base = private_base(drift_base, tmp_path)
    cfg = kfp_cfg(api, tmp_path, pipeline_version="0.1.0-abc")
    trigger(decide(drift_base, tmp_path), base, cfg, tmp_path)
    body = api.requests_to("POST", "/apis/v2beta1/runs")[0].body
    pipeline_id, (pinned, _) = api.ids
    assert body["pipeline_version_reference"]["pipeline_version_id"] == pinned


def test_same_window_again_launches_nothing(drift_base, tmp_path, api):
    base = private_base(drift_base, tmp_path)
    decision = decide(drift_base, tmp_path)
    cfg = kfp_cfg(api, tmp_path)
    first = trigger(decision, base, cfg, tmp_path, "first")
    api.set_run_state(first["run_id"], "SUCCEEDED")
    again = trigger(decision, base, cfg, tmp_path, "again")
    assert again["launched"] is False
    assert "already launched: launch 1" in again["reason"]
    assert os.path.exists(tmp_path / "again" / logic.NOT_LAUNCHED)
    assert len(api.requests_to("POST", "/apis/v2beta1/runs")) == 1


def test_nothing_while_the_launched_retraining_runs_then_the_next_window_launches(
        drift_base, tmp_path, api):
    base = private_base(drift_base, tmp_path)
    cfg = kfp_cfg(api, tmp_path)
    first = trigger(decide(drift_base, tmp_path, seed=1), base, cfg, tmp_path, "a")
    api.set_run_state(first["run_id"], "RUNNING")
    blocked = trigger(decide(drift_base, tmp_path, seed=2), base, cfg, tmp_path, "b")
    assert blocked["launched"] is False and "still running" in blocked["reason"]
    api.set_run_state(first["run_id"], "FAILED")
    third = trigger(decide(drift_base, tmp_path, seed=3), base, cfg, tmp_path, "c")
    assert third["launched"] is True and third["seq"] == 2


def test_a_local_launch_runs_while_its_process_lives(drift_base, tmp_path):
    import socket

    base = private_base(drift_base, tmp_path)
    cfg = logic.TriggerConfig(mode="local", training_data=training_data(tmp_path))
    live = {"mode": "local", "window_key": "other", "claimed_at": "2026-11-25T00:00:00+00:00",
            "host": socket.gethostname(), "pid": os.getpid(), "monitor_run": {"run_id": "m1"}}
    assert logic.claim(base, 1, live)
    why, seq = logic.refusal(base, "this-window", cfg)
    assert "launch 1" in why and "still running" in why and seq == 2
    # The same claim from a process that is gone: that launch died, the next may start.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    assert logic.claim(base, 2, {**live, "pid": int(dead)})
    os.remove(os.path.join(base, "kfp_ct_retraining", "launch-1.json"))
    assert logic.refusal(base, "this-window", cfg) == ("", 3)


def test_cooldown_is_respected(drift_base, tmp_path, api):
    base = private_base(drift_base, tmp_path)
    cfg = kfp_cfg(api, tmp_path, cooldown_hours=6)
    first = trigger(decide(drift_base, tmp_path, seed=1), base, cfg, tmp_path, "a")
    api.set_run_state(first["run_id"], "SUCCEEDED")
    second = trigger(decide(drift_base, tmp_path, seed=2), base, cfg, tmp_path, "b")
    assert second["launched"] is False
    assert "cooldown" in second["reason"] and "cooldown_hours=6" in second["reason"]


def test_a_failed_launch_is_recorded_and_the_next_run_retries(drift_base, tmp_path, api):
    base = private_base(drift_base, tmp_path)
    decision = decide(drift_base, tmp_path)
    missing = kfp_cfg(api, tmp_path)
    missing.pipeline_name = "never-uploaded"
    with pytest.raises(logic.LaunchFailed, match="never-uploaded"):
        trigger(decision, base, missing, tmp_path, "a")
    assert logic.list_launches(base)[0]["result"]["state"] == logic.FAILED_LAUNCH
    retry = trigger(decision, base, kfp_cfg(api, tmp_path), tmp_path, "b")
    assert retry["launched"] is True and retry["seq"] == 2


# ----------------------------------------------------------------------- races

_RACER = textwrap.dedent("""
    import json, os, sys, time
    from kfp_ct.components.retrain import logic
    decision, base, launch_dir, go, host, data, ready = sys.argv[1:8]
    cfg = logic.TriggerConfig(mode="kfp", host=host, training_data=data, training_partitions=2)
    import kfp.client  # noqa: F401  (imported before the go, like everything else)
    open(ready, "w").close()
    # Widen the race: both racers have checked the records (none yet) before either claims.
    real_claim = logic.claim
    logic.claim = lambda *a: (time.sleep(1.0), real_claim(*a))[1]
    while not os.path.exists(go):
        time.sleep(0.001)
    record = logic.run_trigger(decision, base, cfg, launch_dir, run_info={"run_id": launch_dir})
    print(json.dumps({"launched": record["launched"], "reason": record.get("reason", "")}))
""")


def _race(decisions, base, api, tmp_path):
    go = tmp_path / f"go-{time.monotonic_ns()}"
    data = training_data(tmp_path)
    ready = [tmp_path / f"ready-{i}-{time.monotonic_ns()}" for i in range(len(decisions))]
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, d, base, str(tmp_path / f"l{i}"),
                               str(go), api.url, data, str(ready[i])], stdout=subprocess.PIPE,
                              text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
             for i, d in enumerate(decisions)]
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in ready):  # both have imported everything
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    go.write_text("go")
    outs = [json.loads(p.communicate(timeout=60)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    return outs


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_two_monitoring_runs_at_once_start_one_retraining(drift_base, tmp_path, api, where,
                                                           request):
    if where == "gcs":
        bucket = request.getfixturevalue("gcs_emulator").new_bucket()
        base = storage.join(bucket, "serving")
        storage.copy_tree(drift_base.base, base, last=())
    else:
        base = private_base(drift_base, tmp_path)
    same = decide(drift_base, tmp_path, seed=5)
    other = decide(drift_base, tmp_path, seed=6)
    for decisions in ([same, same], [same, other]):
        before = len(api.requests_to("POST", "/apis/v2beta1/runs"))
        outs = _race(decisions, base, api, tmp_path)
        assert sorted(o["launched"] for o in outs) == [False, True] or (
            before and not any(o["launched"] for o in outs)), outs
        created = len(api.requests_to("POST", "/apis/v2beta1/runs")) - before
        assert created == sum(o["launched"] for o in outs) <= 1
        loser = next(o for o in outs if not o["launched"])
        if not before:  # the first race: one claim wins, the other sees it
            assert "first: nothing more launched" in loser["reason"], loser
        else:  # the second: the window was launched, and that launch still runs
            assert all(("already launched" in o["reason"] or "still running" in o["reason"])
                       for o in outs), outs
    assert len(api.requests_to("POST", "/apis/v2beta1/runs")) == 1  # the second race: running


def test_create_only_keeps_the_first_writer(tmp_path, gcs_emulator):
    for root in (str(tmp_path), gcs_emulator.new_bucket()):
        path = storage.join(root, "records", "launch-1.json")
        assert storage.create_only(path, b"first") is True
        assert storage.create_only(path, b"second") is False
        assert storage.read_bytes(path) == b"first"


# ----------------------------------------------------------------- no launch cases


def test_no_drift_insufficient_data_blocking_anomalies_and_off_launch_nothing(
        drift_base, tmp_path, api):
    base = private_base(drift_base, tmp_path)
    cfg = kfp_cfg(api, tmp_path)
    calm = trigger(decide(drift_base, tmp_path, shift="none"), base, cfg, tmp_path, "calm")
    assert calm["launched"] is False and calm["reason"].startswith("decision is NO_DRIFT")
    tiny = trigger(decide(drift_base, tmp_path, shift="none", rows=20, name="tiny"), base, cfg,
                   tmp_path, "tiny")
    assert tiny["reason"].startswith("decision is INSUFFICIENT_DATA")
    missing = trigger(decide(drift_base, tmp_path, shift="missing_column"), base, cfg, tmp_path,
                      "missing")
    assert missing["launched"] is False and "sex" in missing["reason"]
    assert "fix the data upstream" in missing["reason"]
    off = logic.TriggerConfig(mode="off")
    assert "off" in trigger(decide(drift_base, tmp_path, seed=9), base, off, tmp_path,
                            "off")["reason"]
    assert not api.requests_to("POST", "/apis/v2beta1/runs")
    assert logic.list_launches(base) == []


def test_bad_trigger_settings_are_named(drift_base, tmp_path):
    base = private_base(drift_base, tmp_path)
    decision = decide(drift_base, tmp_path)
    with pytest.raises(KfpCtError, match="retrain mode"):
        trigger(decision, base, logic.TriggerConfig(mode="cluster"), tmp_path)
    with pytest.raises(InputDataError, match="no training data"):
        trigger(decision, base, logic.TriggerConfig(mode="local"), tmp_path)
    with pytest.raises(InputDataError, match="matches nothing"):
        trigger(decision, base, logic.TriggerConfig(
            mode="local", training_data=str(tmp_path / "none" / "date=*"),
            training_partitions=2), tmp_path)
    with pytest.raises(KfpCtError, match="push_destination"):
        logic.check_config(logic.TriggerConfig(training_params={"push_destination": "x"}))
    with pytest.raises(KfpCtError, match="training_params"):
        logic.parse_params("[1, 2]")
    assert logic.list_launches(base) == []


def test_training_window_takes_the_newest_partitions(tmp_path):
    data = training_data(tmp_path)
    assert logic.training_window(data, 0) == data
    newest = logic.training_window(data, 1).split(",")
    assert [os.path.basename(p) for p in newest] == ["date=2026-11-23"]
    from kfp_ct.components.common.data import resolve_inputs

    files = resolve_inputs(logic.training_window(data, 2))
    assert [os.path.basename(os.path.dirname(f)) for f in files] == ["date=2026-11-22",
                                                                      "date=2026-11-23"]


def test_a_kfp_host_that_is_not_an_http_url_is_refused_before_anything_is_read(tmp_path):
    cfg = logic.TriggerConfig(mode="kfp", host="ml-pipeline.kubeflow:8888")
    with pytest.raises(KfpCtError) as info:
        logic.check_config(cfg)
    assert str(info.value).startswith("kfp_host 'ml-pipeline.kubeflow:8888' is not a KFP API "
                                      "URL: it has no http:// or https:// in front "
                                      "(http://ml-pipeline.kubeflow:8888?)")
    logic.check_config(logic.TriggerConfig(mode="kfp", host="http://ml-pipeline.kubeflow:8888"))
    logic.check_config(logic.TriggerConfig(mode="kfp", host=""))  # in-cluster default


def test_a_local_launch_that_died_after_its_push_is_settled_from_the_registry(
        drift_base, tmp_path):
    """A monitoring run stopped while its retraining ran leaves a claim with no result;
    what the record then says comes from the registry, not from the dead process: the
    launch whose version is there SUCCEEDED with it, the other pushed nothing (issue 21)."""
    import socket

    from kfp_ct.components.common import registry

    base = private_base(drift_base, tmp_path)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout.strip())
    claim = {"mode": "local", "claimed_at": "2026-11-25T00:00:00+00:00",
             "host": socket.gethostname(), "pid": dead, "monitor_run": {"run_id": "m1"}}
    before = registry.production_version(base)
    assert logic.claim(base, 1, {**claim, "window_key": "w1"})
    assert logic.claim(base, 2, {**claim, "window_key": "w2"})
    production = registry.production(base)  # launch 2's training run pushes its model
    registry.publish(base, production.path, {"trigger": {"kind": "drift", "launch": 2}})
    records = {r["seq"]: r["result"] for r in logic.list_launches(base)}
    assert records[1]["state"] == "FAILED" and records[1]["pushed"] is False
    assert "pushed nothing" in records[1]["reason"]
    assert records[2]["state"] == "SUCCEEDED" and records[2]["version"] == before + 1
    assert f"after it pushed version {before + 1}" in records[2]["reason"]


# ------------------------------------------------------------------------ notices


def test_the_trigger_tells_the_webhook_and_a_failing_one_never_stops_the_launch(
        drift_base, tmp_path, api):
    from kfp_ct.components.common import history, notify
    from test_notify import Receiver  # tests/ is on sys.path

    notify_backoff = notify.BACKOFF_S
    notify.BACKOFF_S = 0.01
    try:
        for plan, then, delivered in (([500], 200, True), ((), 500, False)):
            base = private_base(drift_base, tmp_path / f"case-{then}")
            with Receiver(plan=plan, then=then) as receiver:
                folder = tmp_path / f"decision-{then}"
                synth.write_penguins_like(folder / "window.csv", 1500, seed=1,
                                          shift="category_mix")
                drift_logic.run_drift_check(
                    base, window_path=str(folder / "window.csv"),
                    decision_dir=str(folder / "d"),
                    settings={"notify": {"url": receiver.url + "/hook", "retries": 2}})
                record = trigger(str(folder / "d"), base, kfp_cfg(api, tmp_path), tmp_path,
                                 name=f"launch-{then}")
            assert record["launched"] is True  # told or not, the launch happened
            events = [n["event"] for n in record["notifications"]]
            assert events == ["drift", "launched"]
            assert all(n["delivered"] is delivered for n in record["notifications"])
            if delivered:  # the first try failed, the retry delivered
                assert record["notifications"][0]["attempts"] == 2
                bodies = [r["body"] for r in receiver.requests if r["body"]]
                assert [b["event"] for b in bodies][-2:] == ["drift", "launched"]
                assert "island" in bodies[-2]["text"] and bodies[-2]["record"]["findings"] == [
                    "DRIFT"]
            else:
                assert record["notifications"][0]["attempts"] == 3  # 1 + 2 retries
                assert "500" in record["notifications"][0]["error"]
            saved = json.loads((tmp_path / f"launch-{then}" / "launch.json").read_text())
            assert saved["notifications"] == record["notifications"]
            kept = history.read(base)[-1]
            assert [n["delivered"] for n in kept["notifications"]] == [delivered, delivered]
            assert kept["launch"]["launched"] is True
    finally:
        notify.BACKOFF_S = notify_backoff


def test_a_launch_that_failed_to_start_is_told_from_its_recorded_error():
    decision = {"decision": "DRIFT", "findings": ["DRIFT"], "drifted": ["island"],
                "baseline": {"model_base": "/m", "version": 1}, "reasons": []}
    failed = {"launched": False, "seq": 3, "reason": "launch 3 failed: no API",
              "launch_error": "no API"}
    assert [e for e, _ in logic.notices(decision, failed)] == ["drift", "launch_failed"]
    refused = {"launched": False, "seq": 3, "reason": "launch 3 failed: or so it says"}
    assert [e for e, _ in logic.notices(decision, refused)] == ["drift"]
