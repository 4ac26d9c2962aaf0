"""Warm task starts (pipelines/entrypoints/warm.py): forks of one zygote behave like new processes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kfp_ct.pipelines.entrypoints import warm

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


def test_a_zygote_started_early_is_taken_over_by_the_run(tmp_path):
    """kfp-ct run-local starts the zygote before it builds the pipeline; the run's
    zygote() takes that process over (no second one), and its early lines reach the log."""
    modules = ("numpy", "json")
    warm.start_early(modules)
    early = warm._early
    assert early is not None and early.proc.poll() is None
    log = tmp_path / "warm.log"
    with warm.zygote(str(tmp_path / "warm"), str(log), modules=modules) as launcher:
        assert warm._early is None
        result = run(launcher, "report", "x")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["preloaded"] is True
    assert early.proc.poll() is not None  # stopped with the run
    assert not os.path.exists(early.folder)
    assert "warm zygote pid %d" % early.proc.pid in log.read_text()


def test_an_early_zygote_of_other_modules_or_a_dead_one_is_not_used(tmp_path):
    warm.start_early(("json",))
    other = warm._early
    try:
        with warm.zygote(str(tmp_path / "a"), str(tmp_path / "a.log"),
                         modules=("numpy", "json")) as launcher:
            assert warm._early is other  # not its modules: left for a run that wants them
            assert run(launcher, "report", "x").returncode == 0
        other.proc.kill()
        other.proc.wait()
        with warm.zygote(str(tmp_path / "b"), str(tmp_path / "b.log"),
                         modules=("json",)) as launcher:
            assert warm._early is None
            assert run(launcher, "report", "y").returncode == 0  # a new zygote serves
        assert not os.path.exists(other.folder)
    finally:
        warm._stop_early()


def test_an_early_zygote_that_no_run_takes_over_stops_at_exit_even_mid_import():
    """A command that refuses its inputs exits at once, though the zygote it started is
    in the middle of a long import (TensorFlow's takes seconds)."""
    script = ("import sys, time; sys.path.insert(0, %r); from kfp_ct.pipelines.entrypoints import warm; "
              "warm.start_early(('tests.warm_probe.slow_import',)); "
              "print(warm._early.proc.pid, warm._early.folder); time.sleep(1)" % ROOT)
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert time.monotonic() - started < 8, "the exit waited for the zygote's import"
    assert out.returncode == 0, out.stderr
    pid, folder = out.stdout.split()
    deadline = time.time() + 10
    while time.time() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()
    assert not os.path.exists(folder)
