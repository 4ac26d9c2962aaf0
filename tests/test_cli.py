"""pipelines.cli: versions and rollback at a model base."""

import os
import subprocess
import sys

import pytest

from components.common import registry
from pipelines import cli

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
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "rollback", base, "7"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_parser_has_a_handler_per_subcommand():
    parser = cli.build_parser()
    examples = {"versions": ["x"], "rollback": ["x", "1"], "run-local": ["--destination", "x"],
                "monitor-local": ["--model-base", "x", "--window", "w"]}
    assert set(examples) == set(cli.SUBCOMMANDS)
    for name, rest in examples.items():
        assert parser.parse_args([name, *rest]).handler is cli.SUBCOMMANDS[name][2]
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["rollback", "x", "not-a-number"])
    assert exc.value.code == 2
