"""The kfp-ct command line: versions and rollback at a model base; the command set."""

import os
import subprocess
import sys
import time

import pytest

from components.common import registry
from pipelines.entrypoints import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_model(tmp_path, tag):
    """A directory shaped like a SavedModel (dummy bytes, no TensorFlow)."""
    d = tmp_path / f"model-{tag}"
    (d / "variables").mkdir(parents=True)
    (d / "saved_model.pb").write_bytes(f"pb-{tag}".encode())
    (d / "variables" / "variables.index").write_bytes(b"index")
    return str(d)


@pytest.fixture
def base(tmp_path):
    base = str(tmp_path / "serving" / "penguins")
    registry.publish(base, fake_model(tmp_path, "a"), {"metrics": {"accuracy": 0.91}})
    registry.publish(base, fake_model(tmp_path, "b"), {"metrics": {"accuracy": 0.95}})
    return base


def test_versions_lists_each_version_and_marks_production(base, capsys):
    assert cli.main(["versions", base]) == 0
    out = capsys.readouterr().out
    assert out == registry.describe(base)
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [r[:2] for r in rows] == [["1", "complete"], ["*", "2"]]
    assert "accuracy=0.91" in out and "accuracy=0.95" in out


def test_versions_of_an_empty_base(tmp_path, capsys):
    assert cli.main(["versions", str(tmp_path / "none")]) == 0
    assert "No model versions" in capsys.readouterr().out


def test_rollback_prints_the_new_version(base, capsys):
    assert cli.main(["rollback", base, "1", "--reason", "bad canary in prod"]) == 0
    out = capsys.readouterr().out
    assert "now serving version 3" in out
    prod = registry.production(base)
    assert prod.version == 3
    assert prod.metadata["rollback_of"] == 1
    assert prod.metadata["rollback_reason"] == "bad canary in prod"
    assert open(os.path.join(prod.path, "saved_model.pb"), "rb").read() == b"pb-a"


def test_rollback_to_a_missing_version_exits_2_with_the_message(base, capsys):
    assert cli.main(["rollback", base, "9"]) == cli.EXIT_ERROR == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: Cannot roll back")
    assert "no such version (versions present: 1, 2)" in captured.err
    assert "Traceback" not in captured.err
    assert [v.version for v in registry.list_versions(base)] == [1, 2]


def test_cli_as_a_process_exits_2_without_traceback(base):
    proc = subprocess.run([sys.executable, "-m", "pipelines.entrypoints.cli", "rollback", base, "7"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_every_command_is_there_and_bad_arguments_exit_2(capsys):
    assert set(cli.cli.commands) == {
        "run-local", "monitor-local", "versions", "rollback", "compile", "upload",
        "pipelines", "run", "runs", "schedule", "local-server"}
    assert set(cli.cli.commands["runs"].commands) == {"list", "get", "wait"}
    assert set(cli.cli.commands["schedule"].commands) == {
        "create", "list", "enable", "disable", "delete"}
    assert cli.main(["rollback", "x", "not-a-number"]) == 2
    assert "not-a-number" in capsys.readouterr().err
    assert cli.main(["no-such-command"]) == 2


def test_console_script_is_installed_and_answers():
    script = os.path.join(os.path.dirname(sys.executable), "kfp-ct")
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for command in ("upload", "run", "runs", "schedule", "local-server", "run-local"):
        assert command in proc.stdout


REGRESSION = ('{"label": "body_mass_g", "task": "regression", "numeric": ["bill_length_mm"], '
              '"categorical": ["island"]}')


@pytest.mark.parametrize("problem, thresholds, message", [
    (REGRESSION, '{"change": {"mse": {"higher_is_better": true, "absolute": 0}}}',
     "change.mse.higher_is_better is true, but for mse lower is better"),
    (REGRESSION, None, "value.accuracy: a regression evaluation has no 'accuracy'"),
    (None, '{"change": {"example_count": {"absolute": 0}}}', "has no known direction"),
    (None, '{"value": {"mse": {"max": 1}}}', "a classification evaluation has no 'mse'"),
])
def test_run_local_refuses_thresholds_that_do_not_fit_before_any_task(
        run_cli, tmp_path, problem, thresholds, message):
    argv = ["run-local", "--destination", tmp_path / "serving", "--workdir", tmp_path / "runs"]
    if problem:
        argv += ["--problem", problem]
    if thresholds:
        argv += ["--thresholds", thresholds]
    started = time.monotonic()
    code, out, err = run_cli(*argv)
    assert code == 2 and message in err, err
    assert time.monotonic() - started < 3
    assert not (tmp_path / "runs").exists() and not (tmp_path / "serving").exists()
