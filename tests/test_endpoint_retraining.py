"""Drift's cluster path, for real, on the local KFP endpoint, driven by the kfp-ct CLI.

Version 1 is trained by a run submitted with `kfp-ct run training --wait`. Then the
monitoring pipeline runs on the endpoint with `retrain_mode=kfp` and `kfp_host` set to it,
as it runs on a cluster: its trigger finds the drift and creates a run of the uploaded
training pipeline through kfp.Client; the endpoint executes that run, which evaluates
against version 1 and pushes version 2 with the drift lineage.
"""

import json
import subprocess
import sys
import types

import pytest

from kfp_ct.components.common import registry
from drift_base import write_daily_partitions  # tests/ is on sys.path
from kfp_ct.pipelines.entrypoints.client import Client

pytestmark = [pytest.mark.slow, pytest.mark.long]
TRAIN_STEPS = 120  # accuracy >= 0.9 on these rows (as in test_monitoring_pipeline)



@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """`kfp-ct local-server` as a user starts it: a token by default, found by the CLI,
    the client and the monitoring run's trigger through the server's runtime file (kept
    in the test's folder), never passed by hand."""
    root = tmp_path_factory.mktemp("endpoint-retraining")
    data = root / "data"
    write_daily_partitions(data)
    patch = pytest.MonkeyPatch()
    patch.setenv("KFP_CT_RUNTIME_DIR", str(root / "runtime"))
    for name in ("KFP_CT_TOKEN", "KFP_CT_LOCAL_TOKEN"):
        patch.delenv(name, raising=False)
    proc = subprocess.Popen([sys.executable, "-m", "kfp_ct.pipelines.entrypoints.cli",
                             "local-server", "--port", "0", "--state-dir", str(root / "state")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("kfp-ct local endpoint on ") and " token: " in line, line
        server = types.SimpleNamespace(url=line.split(" on ", 1)[1].split(" ", 1)[0])
        yield server, data, str(root / "serving")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        patch.undo()


def test_cli_run_and_wait_trains_and_pushes_version_1(world, run_cli):
    server, data, base = world
    for pipeline in ("training", "monitoring"):
        code, _, err = run_cli("--endpoint", server.url, "upload", pipeline)
        assert code == 0, err
    code, out, err = run_cli("--endpoint", server.url, "run", "training",
                             "-p", f"push_destination={base}",
                             "-p", f"data_path={data / 'date=2026-11-22'}",
                             "-p", f"train_steps={TRAIN_STEPS}", "--wait", "--poll", "0.5")
    assert code == 0, err
    assert "SUCCEEDED" in out
    # progress lines while it ran (the data importer and the failed-run notice too: the
    # exit task runs after a body that succeeded, and finds nothing to announce)
    assert "tasks done 8/8" in err
    assert [v.version for v in registry.list_versions(base)] == [1]
    runs = [r for r in Client(server.url).list_runs() if r.state == "SUCCEEDED"]
    tasks = {t.name: t.state for t in runs[0].tasks}
    assert tasks == dict.fromkeys(
        ["importer", "validate", "transform", "train", "evaluate", "gate", "push",
         "announce-failure"], "SUCCEEDED")


def test_monitoring_on_the_endpoint_launches_a_retraining_through_the_kfp_api(world, run_cli):
    server, data, base = world
    code, out, err = run_cli(
        "--endpoint", server.url, "--output", "json", "run", "monitoring",
        "-p", f"model_base={base}", "-p", f"window_path={data / 'date=2026-11-24'}",
        "-p", f"training_data={data / 'date=*'}", "-p", "training_partitions=2",
        "-p", "retrain_mode=kfp", "-p", f"kfp_host={server.url}",
        "-p", f"training_params={json.dumps({'train_steps': TRAIN_STEPS})}",
        "--wait", "--poll", "0.5")
    assert code == 0, err
    client = Client(server.url)
    retrains = client.list_runs(experiment="kfp-ct-retraining")
    assert [r.name for r in retrains] == ["retrain-drift-1"]
    # The endpoint runs it after the monitoring run: wait for it through the CLI.
    code, out, err = run_cli("--endpoint", server.url, "runs", "wait",
                             retrains[0].run_id, "--poll", "0.5")
    assert code == 0, err
    versions = registry.list_versions(base)
    assert [v.version for v in versions] == [1, 2]
    trigger = registry.production(base).metadata["trigger"]
    assert trigger["kind"] == "drift" and trigger["production_version"] == 1
    assert "island" in trigger["drifted"]
    # The same window again: the trigger finds its claim and launches nothing.
    code, out, err = run_cli(
        "--endpoint", server.url, "run", "monitoring",
        "-p", f"model_base={base}", "-p", f"window_path={data / 'date=2026-11-24'}",
        "-p", f"training_data={data / 'date=*'}", "-p", "retrain_mode=kfp",
        "-p", f"kfp_host={server.url}", "--wait", "--poll", "0.5")
    assert code == 0, err
    assert len(client.list_runs(experiment="kfp-ct-retraining")) == 1
