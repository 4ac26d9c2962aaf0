"""Warm task starts (pipelines/warm.py): forks of one zygote behave like new processes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pipelines import warm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = "tests.warm_probe.probe"


@pytest.fixture
def launcher(tmp_path):
    with warm.zygote(str(tmp_path / "warm"), str(tmp_path / "warm.log"),
                     modules=("numpy", "json")) as path:
        yield path


def run(launcher, *args, env=None, cwd=ROOT, timeout=60):
    return subprocess.run([launcher, "-m", PROBE, *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": ROOT, **(env or {})},
                          timeout=timeout)


def test_a_forked_task_gets_its_own_argv_cwd_environment_and_random_draws(launcher,
                                                                          tmp_path):
    first = run(launcher, "report", "x", env={"PROBE_VALUE": "one"}, cwd=str(tmp_path))
    second = run(launcher, "report", "y", env={"PROBE_VALUE": "two"})
    assert first.returncode == 0 and second.returncode == 0, (first.stderr, second.stderr)
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["argv"] == ["report", "x"] and b["argv"] == ["report", "y"]
    assert a["cwd"] == str(tmp_path) and b["cwd"] == ROOT
    assert (a["env"], b["env"]) == ("one", "two")
    assert a["main"] == "__main__" and a["preloaded"] is True
    assert a["pid"] != b["pid"]
    # No state passes from one task to the next, and each draws fresh random numbers.
    assert a["leaked"] is None and b["leaked"] is None
    assert a["numpy"] != b["numpy"] and a["random"] != b["random"]


@pytest.mark.parametrize("args, code, words", [
    (("exit", "3"), 3, ""),
    (("raise",), 1, "ValueError: the task's own error"),
    (("segfault",), 128 + signal.SIGSEGV, ""),
])
def test_a_task_that_fails_or_crashes_ends_with_its_own_status(launcher, args, code, words):
    result = run(launcher, *args)
    assert result.returncode == code, result.stderr
    assert words in result.stderr
    # The zygote lives on: the next task runs.
    assert run(launcher, "report", "after").returncode == 0


def test_without_a_zygote_the_task_starts_cold_and_says_so(tmp_path):
    path = warm.write_launcher(str(tmp_path / "python3"), "@kfp-ct-warm-nobody-listens")
    result = run(path, "report", "cold")
    assert result.returncode == 0, result.stderr
    assert "warm start unavailable" in result.stderr and "starting cold" in result.stderr
    assert json.loads(result.stdout)["argv"] == ["report", "cold"]


def test_a_signal_to_the_launcher_reaches_the_forked_task(launcher):
    proc = subprocess.Popen([launcher, "-m", PROBE, "sleep"], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.stdout.readline().strip() == "sleeping"
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    assert time.monotonic() - started < 5


def test_other_python_calls_run_the_real_interpreter(launcher):
    result = subprocess.run([launcher, "-c", "import sys; print(sys.executable)"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.strip() == sys.executable


@pytest.mark.parametrize("value, expected", [("0", False), ("off", False), ("1", True),
                                             ("", True)])
def test_one_switch_turns_it_off(monkeypatch, value, expected):
    monkeypatch.setenv(warm.ENV_SWITCH, value)
    assert warm.enabled() is expected
