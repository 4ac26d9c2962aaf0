"""The kfp-ct command line: versions and rollback at a model base; the command set."""

import os
import subprocess
import sys
import time

import pytest

from kfp_ct.components.common import registry
from kfp_ct.pipelines.entrypoints import cli

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


def _not_a_base(tmp_path, kind):
    if kind == "missing":
        return str(tmp_path / "none"), "no such file or folder"
    if kind == "file":
        (tmp_path / "model.pb").write_bytes(b"x")
        return str(tmp_path / "model.pb"), "it is a file"
    (tmp_path / "models" / "penguins").mkdir(parents=True)  # one level too high
    return str(tmp_path / "models"), "no numbered version folder (1/, 2/, ...); it holds: penguins"


@pytest.mark.parametrize("kind", ["missing", "file", "folder_without_versions"])
def test_versions_of_a_path_that_is_not_a_model_base_exits_2_in_one_line(tmp_path, capsys,
                                                                         kind):
    path, words = _not_a_base(tmp_path, kind)
    assert cli.main(["versions", path]) == cli.EXIT_ERROR == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: {path} is not a model base: " + captured.err.split(
        ": ", 2)[2] and words in captured.err
    assert len(captured.err.splitlines()) == 1


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
    proc = subprocess.run([sys.executable, "-m", "kfp_ct.pipelines.entrypoints.cli", "rollback", base, "7"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_every_command_is_there_and_bad_arguments_exit_2(capsys):
    assert set(cli.cli.commands) == {
        "run-local", "monitor-local", "versions", "rollback", "compile", "upload",
        "pipelines", "run", "runs", "schedule", "local-server", "monitor"}
    assert set(cli.cli.commands["monitor"].commands) == {"history"}
    assert set(cli.cli.commands["runs"].commands) == {"list", "get", "wait"}
    assert set(cli.cli.commands["schedule"].commands) == {
        "create", "list", "enable", "disable", "delete", "update"}
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
    (REGRESSION, '{"value": {"accuracy": {"min": 0.9}}}',
     "value.accuracy: a regression evaluation has no 'accuracy'"),
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


SPACED = ('{"label": "species", "task": "classification", "numeric": ["bill length"], '
          '"categorical": ["island"]}')


@pytest.mark.parametrize("extra, message", [
    (["--slice", "colour"], "cannot slice the evaluation by ['colour']: not a column of "
                            "the problem spec"),
    (["--train-steps", "0"], "train_steps must be a whole number >= 1, got 0"),
    (["--problem", SPACED], "column 'bill length': a column name must start with an ASCII "
                            "letter or digit"),
    (["--problem", SPACED.replace("bill length", "bill_length")],
     "missing required column(s) 'bill_length' (feature)"),
    (["--destination", "FILE/serving"], "is a file, not a folder"),
])
def test_run_local_refuses_bad_inputs_before_any_task_in_under_3_s(
        run_cli, tmp_path, extra, message):
    """The trust issue's figure: time from run-local to the first error, before any task."""
    (tmp_path / "FILE").write_text("not a folder")
    extra = [str(tmp_path / "FILE" / "serving") if e == "FILE/serving" else e for e in extra]
    argv = ["run-local", "--destination", tmp_path / "serving", "--workdir",
            tmp_path / "runs", *extra]
    started = time.monotonic()
    code, out, err = run_cli(*argv)
    elapsed = time.monotonic() - started
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback
    assert elapsed < 3, elapsed
    assert not (tmp_path / "runs").exists() and not (tmp_path / "serving").exists()


def test_run_local_refuses_a_corrupt_production_in_one_line_before_any_task(
        run_cli, base, tmp_path):
    """Before: the run validated, transformed, trained and evaluated for minutes, and
    then the gate said NOT BLESSED because production could not be loaded (exit 4)."""
    import shutil

    shutil.rmtree(os.path.join(base, "2", "variables"))  # production, now corrupt
    started = time.monotonic()
    code, out, err = run_cli("run-local", "--destination", base, "--workdir",
                             tmp_path / "runs")
    elapsed = time.monotonic() - started
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: production version 2 at {base} is corrupt: variables/ "
                          "is missing")
    assert "this run would train and push nothing" in err
    assert f"recover with: kfp-ct rollback {base} 1 --reason " in err
    assert elapsed < 3, elapsed
    assert not (tmp_path / "runs").exists()
    assert [v.version for v in registry.list_versions(base)] == [1, 2]


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if text.encode() in fh.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


# Test-only fault injection, loaded by every process of the run through PYTHONPATH (the
# warm-start zygote imports it at start, so forked tasks have it too): once push's
# publish has renamed the staged version into place, it marks a file and holds there,
# so a Ctrl-C lands "after the push published, before the push task ended" every time.
_HOLD_AFTER_PUBLISH = """
import os, time
_base = os.environ.get("KFP_CT_TEST_HOLD_PUBLISH_BASE")
if _base:
    _rename = os.rename
    def _held_rename(src, dst, *args, **kwargs):
        _rename(src, dst, *args, **kwargs)
        if (os.path.dirname(os.path.abspath(dst)) == _base
                and os.path.basename(dst).isdigit()):
            open(os.environ["KFP_CT_TEST_HOLD_PUBLISH_MARK"], "w").close()
            time.sleep(120)
    os.rename = _held_rename
"""

# (name, what to wait for: a task's console line, "published", or None for the start;
# then seconds to wait): at least one moment inside every task, right as its line shows,
# a few later inside the long ones, before any task, and between push's publish and its
# end.
_SIGINT_MOMENTS = [
    ("before-any-task", None, 0.3),
    ("importer", "  importer", 0.0),
    ("validate", "  validate", 0.0),
    ("validate-later", "  validate", 1.5),
    ("transform", "  transform", 0.0),
    ("train", "  train", 0.0),
    ("train-later", "  train", 1.5),
    ("evaluate", "  evaluate", 0.0),
    ("gate", "  gate", 0.0),
    ("push", "  push", 0.0),
    ("push-published", "published", 0.0),
]


@pytest.mark.slow
def test_ctrl_c_at_any_moment_of_a_run_is_answered_in_2_s_with_one_true_line(tmp_path):
    """SIGINT to run-local alone (as a scheduler or `kill -INT` sends it) at eleven moments
    of a training run. Each time: exit 130 within 2 s; one line on stderr, and what it
    says about pushing is what the registry holds; no half-written version or staging
    folder; no temp folder and no process of the run left."""
    import signal

    fault = tmp_path / "fault"
    fault.mkdir()
    (fault / "sitecustomize.py").write_text(_HOLD_AFTER_PUBLISH)
    answered = {}
    for name, wait_for, delay in _SIGINT_MOMENTS:
        case = tmp_path / name
        systmp, dest, runs = case / "systmp", case / "serving", case / "runs"
        systmp.mkdir(parents=True)
        mark = case / "published.mark"
        env = dict(os.environ, TMPDIR=str(systmp), KFP_CT_TEST_HOLD_PUBLISH_BASE=str(dest),
                   KFP_CT_TEST_HOLD_PUBLISH_MARK=str(mark),
                   PYTHONPATH=os.pathsep.join([str(fault), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.Popen(
            [sys.executable, "-m", "kfp_ct.pipelines.entrypoints.cli", "run-local",
             "--destination", str(dest), "--workdir", str(runs)], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        seen, deadline = b"", time.monotonic() + 180
        os.set_blocking(proc.stdout.fileno(), False)
        while wait_for and time.monotonic() < deadline and proc.poll() is None:
            seen += proc.stdout.read() or b""
            if (mark.exists() if wait_for == "published" else wait_for.encode() in seen):
                break
            time.sleep(0.02)
        time.sleep(delay)
        assert proc.poll() is None, (name, seen)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        os.set_blocking(proc.stdout.fileno(), True)
        out, err = proc.communicate(timeout=60)
        answered[name] = time.monotonic() - sent
        out, err = (seen + (out or b"")).decode(), err.decode()
        # 130, or ended by SIGINT itself (Python's way when a Ctrl-C ends it while it
        # exits): a shell shows 130 for both.
        assert proc.returncode in (130, -signal.SIGINT), (name, out, err)
        assert len(err.strip().splitlines()) == 1, (name, err)  # one line
        assert "Traceback" not in out + err, name
        # What the line says about pushing is what the registry holds.
        versions = registry.list_versions(str(dest))
        assert all(v.state == registry.COMPLETE for v in versions), (name, versions)
        if versions:
            assert f"this run pushed version {versions[-1].version}" in err, (name, err)
            assert f"production is version {versions[-1].version}" in err, (name, err)
        else:
            assert "nothing pushed" in err, (name, err)
        if name == "push-published":
            assert [v.version for v in versions] == [1], err
        # Nothing half-written: only whole versions in the model base.
        assert not dest.exists() or all(n.isdigit() for n in os.listdir(dest)), \
            (name, os.listdir(dest))
        assert os.listdir(systmp) == [], name
        assert _processes_mentioning(str(runs)) == [], name
    print("Ctrl-C answered after (s):", {n: round(s, 2) for n, s in answered.items()})
    slow = {name: round(s, 2) for name, s in answered.items() if s > 2.0}
    assert not slow, f"Ctrl-C answered later than 2 s: {slow} (all: {answered})"


def test_on_a_cluster_the_first_task_refuses_the_runs_bad_inputs_before_reading_data(
        tmp_path):
    """What run-local checks before the run starts, validate (the first task) checks on a
    cluster, with the same words, before it reads any data or imports TFDV."""
    from kfp.dsl import HTML, Artifact, Dataset

    from kfp_ct.components.common.errors import KfpCtError
    from kfp_ct.components.validate.component import validate

    outputs = {name: Artifact(name=name, uri=str(tmp_path / name))
               for name in ("statistics", "schema", "anomalies")}
    outputs["report"] = HTML(name="report", uri=str(tmp_path / "report.html"))
    problem = open(os.path.join(ROOT, "pipelines", "penguins", "problem.json")).read()
    started = time.monotonic()
    with pytest.raises(KfpCtError, match="cannot slice the evaluation by \\['colour'\\]"):
        validate.python_func(data=Dataset(name="data", uri="bundled:penguins"), problem=problem,
                             push_destination=str(tmp_path / "serving"),
                             training_thresholds="", training_slices=["colour"],
                             training_steps=300, **outputs)
    assert time.monotonic() - started < 3
    assert not any((tmp_path / n).exists() for n in outputs)


def test_run_local_refuses_an_eval_split_under_min_examples_in_one_line(run_cli, tmp_path):
    """Before: validate, transform and train ran, and the gate then said the eval rows
    were too few to decide on (not blessed, exit 4)."""
    import csv

    with open(_penguins_csv()) as fh:
        rows = list(csv.reader(fh))
    small = tmp_path / "small.csv"
    with open(small, "w", newline="") as fh:
        csv.writer(fh).writerows(rows[:1] + rows[1::3])  # 115 penguins of three species
    started = time.monotonic()
    code, out, err = run_cli("run-local", "--destination", tmp_path / "serving",
                             "--workdir", tmp_path / "runs", "--data", small)
    elapsed = time.monotonic() - started
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {small}: the eval split would hold ")
    assert "of 115 rows (eval_percent 20), fewer than the gate's default min_examples for " \
           "classification, 50" in err and "a larger eval_percent" in err
    assert elapsed < 3, elapsed
    assert not (tmp_path / "runs").exists()


def _penguins_csv():
    from kfp_ct.components.common.data import bundled_penguins_path

    return bundled_penguins_path()


def test_a_tasks_warning_reaches_the_console_under_its_line(tmp_path):
    """Without --verbose the console shows one line per task; a `[kfp-ct] warning:` a
    task prints (validate: a class only in the eval split) is shown under that line,
    and the rest of the task's output stays in the log only."""
    import io

    from kfp_ct.pipelines.entrypoints.local import _Tee

    console = io.StringIO()
    tee = _Tee(console, log_dir=str(tmp_path), verbose=False)
    for text in ("Executing task 'validate'\n", "some TFDV chatter\n",
                 "[kfp-ct] warning: data.csv: label 'species': class 'Emperor' appears only "
                 "in the eval split\n", "Task 'validate' finished with status SUCCESS\n",
                 "Executing task 'transform'\n",
                 "Task 'transform' finished with status SUCCESS\n"):
        tee.write(text)
    tee.close()
    lines = console.getvalue().splitlines()
    assert lines[0].startswith("  validate") and lines[0].endswith("SUCCESS")
    assert lines[1] == ("    warning: data.csv: label 'species': class 'Emperor' appears "
                        "only in the eval split")
    assert lines[2].startswith("  transform") and len(lines) == 3
    assert "TFDV chatter" in (tmp_path / "run.log").read_text()


@pytest.mark.slow
def test_a_model_trained_on_shuffled_labels_is_not_pushed_on_change_only_thresholds(
        tmp_path):
    """The issue's run, end to end: change-only thresholds, a first push (nothing to
    compare with), labels shuffled so the model has nothing to learn. It beat the most
    frequent class by luck and was pushed as production; now the no-skill floor's test
    fails it: NOT BLESSED, exit 4, no version."""
    import csv
    import random

    from kfp_ct.components.common.data import bundled_penguins_path

    rows = list(csv.reader(open(bundled_penguins_path(), newline="")))
    labels = [r[0] for r in rows[1:]]
    random.Random(7).shuffle(labels)
    shuffled = tmp_path / "shuffled.csv"
    with open(shuffled, "w", newline="") as fh:
        csv.writer(fh).writerows([rows[0]] + [[y] + r[1:] for y, r in zip(labels, rows[1:])])
    dest = tmp_path / "serving"
    proc = subprocess.run(
        [sys.executable, "-m", "kfp_ct.pipelines.entrypoints.cli", "run-local", "--data",
         str(shuffled), "--thresholds", '{"change": {"accuracy": {"absolute": -0.01}}}',
         "--destination", str(dest), "--workdir", str(tmp_path / "runs")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "Gate: NOT BLESSED" in proc.stdout
    assert "does not beat the no-skill predictor's" in proc.stdout
    assert "by more than luck explains" in proc.stdout
    assert registry.list_versions(str(dest)) == []


# ---------------------------------------------- rollback with TF Serving's labels file


def _labels_file(base, stable, canary, staged=()):
    from kfp_ct.components.rollout import labels

    path = labels.default_path(base)
    labels.write(path, labels.LabelConfig("penguins", base, stable, canary, tuple(staged)))
    return path


def _served_column(base, version):
    """The SERVED cell of ``version``'s row in ``kfp-ct versions``' table."""
    header, *rows = registry.describe(base).splitlines()[1:]
    start, end = header.index("SERVED"), header.index("DETAIL")
    row = next(r for r in rows if r[1:].split()[0] == str(version))
    return row[start:end].strip()


def test_rollback_moves_both_labels_onto_a_loaded_version_and_records_it(base, capsys):
    from kfp_ct.components.rollout import labels

    path = _labels_file(base, stable=2, canary=2, staged=[1])
    assert cli.main(["rollback", base, "1", "--reason", "2 drifts"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"Rolled back {base} to version 1: now serving version 3")
    assert out[1:] == [f"Labels: stable and canary now name version 1 in {path}"]
    cfg = labels.read(path)
    assert (cfg.stable, cfg.canary, cfg.versions) == (1, 1, (1,))
    assert registry.production(base).version == 3  # the copy, for the default policy
    [record] = registry.rollouts(base)
    assert record["target"] == f"tfserving:{path}" and record["version"] == 1
    assert (record["state"], record["previous"], record["percent"]) == ("promoted", 2, 100)
    assert record["reason"] == "kfp-ct rollback: 2 drifts"
    assert cli.main(["versions", base]) == 0
    table = capsys.readouterr().out
    assert _served_column(base, 1) == f"tfserving:{path}"
    assert _served_column(base, 2) == _served_column(base, 3) == ""
    assert f"tfserving:{path}" in table


def test_rollback_to_a_version_not_loaded_stages_it_then_labels_only_moves_the_labels(
        base, capsys):
    from kfp_ct.components.rollout import labels

    path = _labels_file(base, stable=2, canary=2)
    assert cli.main(["rollback", base, "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "now serving version 3" in out[0]
    assert "TF Serving will load it at its next poll" in out[1]
    assert "GET /v1/models/penguins/versions/1 shows AVAILABLE" in out[1]
    assert out[1].endswith(f"kfp-ct rollback {base} 1 --labels-only")
    cfg = labels.read(path)
    assert (cfg.stable, cfg.canary, cfg.staged) == (2, 2, (1,))
    assert registry.rollouts(base) == []  # nothing served moved yet

    assert cli.main(["rollback", base, "1", "--labels-only"]) == 0
    assert capsys.readouterr().out == (
        f"Labels: stable and canary now name version 1 in {path}\n")
    cfg = labels.read(path)
    assert (cfg.stable, cfg.canary, cfg.versions) == (1, 1, (1,))
    assert [v.version for v in registry.list_versions(base)] == [1, 2, 3]  # no new copy
    [record] = registry.rollouts(base)
    assert (record["version"], record["previous"], record["state"]) == (1, 2, "promoted")
    assert _served_column(base, 1) == f"tfserving:{path}"


def test_labels_only_without_a_labels_file_exits_2_in_one_line(base, capsys):
    assert cli.main(["rollback", base, "1", "--labels-only"]) == cli.EXIT_ERROR == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1
    assert captured.err.startswith("error: --labels-only: no TF Serving labels file ")
    assert os.path.join(base, "models.config") in captured.err
    assert [v.version for v in registry.list_versions(base)] == [1, 2]
    assert registry.rollouts(base) == []


def test_labels_only_to_a_version_the_file_does_not_load_exits_2_in_one_line(base, capsys):
    path = _labels_file(base, stable=2, canary=2)
    before = open(path).read()
    assert cli.main(["rollback", base, "1", "--labels-only"]) == cli.EXIT_ERROR == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1
    assert captured.err.startswith(
        f"error: --labels-only: {path} does not load version 1 yet")
    assert "wait for GET /v1/models/penguins/versions/1 to show AVAILABLE" in captured.err
    assert open(path).read() == before
    assert [v.version for v in registry.list_versions(base)] == [1, 2]
    assert registry.rollouts(base) == []


def test_rollback_without_a_labels_file_writes_none_and_records_nothing(base, capsys):
    assert cli.main(["rollback", base, "1"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"Rolled back {base} to version 1: now serving version 3 "
        f"({registry.production(base).path})"]
    assert not os.path.exists(os.path.join(base, "models.config"))
    assert registry.rollouts(base) == []


def test_rollback_with_a_labels_file_it_cannot_read_refuses_before_republishing(
        base, capsys):
    path = os.path.join(base, "models.config")
    with open(path, "w") as fh:
        fh.write("model_config_list { config { name: 'penguins' }\n")
    assert cli.main(["rollback", base, "1"]) == cli.EXIT_ERROR == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1
    assert captured.err.startswith(f"error: {path}: line ")
    assert [v.version for v in registry.list_versions(base)] == [1, 2]


@pytest.mark.parametrize("extra", [[], ["--labels-only"]])
def test_rollback_of_a_path_that_is_no_model_base_says_so_first(tmp_path, extra, capsys):
    missing = str(tmp_path / "no-such-base")
    assert cli.main(["rollback", missing, "1", *extra]) == cli.EXIT_ERROR == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {missing} is not a model base: no such file or folder"]
    assert not os.path.exists(missing)
