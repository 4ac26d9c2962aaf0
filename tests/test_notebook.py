"""The quickstart notebook, executed (nbclient) against `kfp-ct local-server`.

The endpoint is started the way a user starts it, through the installed `kfp-ct` console
script, on 127.0.0.1 and a free port, and stopped after. The notebook's one setting (the
host) points at it; the run it starts really trains and pushes a model.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import nbformat
import pytest
from nbclient import NotebookClient

from kfp_ct.components.common import registry
from kfp_ct.pipelines.entrypoints.client import Client

pytestmark = [pytest.mark.slow, pytest.mark.long]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "pipelines", "notebooks", "quickstart.ipynb")
KFP_CT = os.path.join(os.path.dirname(sys.executable), "kfp-ct")


@pytest.fixture
def endpoint(tmp_path, monkeypatch):
    # the token the endpoint makes reaches the notebook's Client (and this test's) through
    # the runtime file, as on a user's machine; no token is passed
    monkeypatch.setenv("KFP_CT_RUNTIME_DIR", str(tmp_path / "runtime"))
    for var in ("KFP_CT_TOKEN", "KFP_CT_LOCAL_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    proc = subprocess.Popen([KFP_CT, "local-server", "--port", "0", "--state-dir",
                             str(tmp_path / "state")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=str(tmp_path))
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match, line + (proc.stdout.read() if proc.poll() is not None else "")
        yield match.group(0)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stdout.read()


def test_quickstart_notebook_trains_pushes_and_schedules(endpoint, tmp_path, monkeypatch):
    base = str(tmp_path / "serving" / "penguins")
    monkeypatch.setenv("KFP_CT_HOST", endpoint)
    monkeypatch.setenv("KFP_CT_MODEL_BASE", base)
    monkeypatch.setenv("KFP_CT_TRAIN_STEPS", "60")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    work = tmp_path / "work"
    work.mkdir()
    started = time.monotonic()
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(work)}}).execute()
    wall = time.monotonic() - started
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []))
    assert "final state: SUCCEEDED" in text
    assert [v.version for v in registry.list_versions(base)] == [1]
    schedules = {s.name: s for s in Client(endpoint).schedules()}
    assert schedules["quickstart-train-daily"].trigger == "cron 0 0 3 * * *"
    assert schedules["quickstart-drift-hourly"].trigger == "cron 0 0 * * * *"
    assert {s.status for s in schedules.values()} == {"DISABLED"}
    assert (work / "build" / "pipelines" / "training_pipeline.yaml").exists()
    print(f"quickstart notebook under nbclient: {wall:.1f} s")
