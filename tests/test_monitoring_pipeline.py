"""The monitoring pipeline end to end under kfp.local, through the command line:
train version 1 on a base partition; an unshifted window launches nothing; a shifted
window launches one real retraining on the newest partitions, which is evaluated against
version 1 and pushed with its drift lineage; the same window again launches nothing."""

from __future__ import annotations

import json
import os

import pytest

from kfp_ct.components.common import registry
from kfp_ct.pipelines.entrypoints import synth
from drift_base import write_daily_partitions  # tests/ is on sys.path
from kfp_ct.pipelines.entrypoints import cli

pytestmark = [pytest.mark.slow, pytest.mark.long]
TRAIN_STEPS = 120  # enough for accuracy >= 0.9 on these rows; keeps the suite short



@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("monitoring")
    data = root / "data"
    write_daily_partitions(data)
    base = str(root / "serving")
    code = cli.main(["run-local", "--destination", base, "--data",
                     str(data / "date=2026-11-22"), "--workdir", str(root / "runs"),
                     "--train-steps", str(TRAIN_STEPS)])
    assert code == 0 and [v.version for v in registry.list_versions(base)] == [1]
    return root, data, base


def monitor(run_cli, world, window, *extra):
    root, data, base = world
    summary = root / f"summary-{window}-{len(os.listdir(root))}.json"
    code, out, err = run_cli(
        "monitor-local", "--model-base", base, "--window", str(data / window),
        "--training-data", str(data / "date=*"), "--training-partitions", "2",
        "--workdir", str(root / "runs"), "--summary-json", str(summary),
        "--params", json.dumps({"train_steps": TRAIN_STEPS}), *extra)
    return code, out, err, (json.loads(summary.read_text()) if summary.exists() else None)


def test_version_1_keeps_what_drift_needs(world):
    _, _, base = world
    prod = registry.production(base)
    for name in (registry.STATISTICS, registry.SCHEMA, registry.PROBLEM,
                 registry.PREDICTION_PROFILE, registry.DRIFT_REFERENCE):
        assert os.path.exists(registry.audit_file(prod, name)), name
    profile = json.loads(open(registry.audit_file(prod, registry.PREDICTION_PROFILE)).read())
    assert profile["reference"]["kind"] == "categorical"
    assert sorted(profile["reference"]["values"]) == ["Adelie", "Chinstrap", "Gentoo"]
    assert profile["rows"] == sum(profile["reference"]["counts"]) > 200
    assert sum(profile["confidence"]["counts"]) == profile["rows"]


def test_an_unshifted_window_launches_nothing(run_cli, world):
    code, out, _, summary = monitor(run_cli, world, "date=2026-11-23")
    assert code == 0, out[-3000:]
    assert summary["decision"] == "NO_DRIFT" and summary["drifted"] == []
    assert summary["launch"]["launched"] is False
    assert "Drift decision: NO_DRIFT" in out and "Nothing launched: decision is NO_DRIFT" in out
    # Prediction drift measured with the production model: classes and confidence.
    assert "(prediction)" in out and "(confidence)" in out
    assert [v.version for v in registry.list_versions(world[2])] == [1]


def test_a_shifted_window_retrains_once_and_the_registry_shows_the_lineage(run_cli, world):
    root, data, base = world
    code, out, _, summary = monitor(run_cli, world, "date=2026-11-24")
    assert code == 0, out[-3000:]
    assert summary["decision"] == "DRIFT" and summary["drifted"] == ["island"]
    launch = summary["launch"]
    assert launch["launched"] is True and launch["seq"] == 1
    assert [os.path.basename(p) for p in launch["training_data"].split(",")] == [
        "date=2026-11-23", "date=2026-11-24"]
    result = launch["result"]
    assert result["state"] == "SUCCEEDED", result
    # The retraining was evaluated against version 1 by the normal gate.
    run_dir = result["run_id"]
    evaluation = json.load(open(os.path.join(run_dir, "evaluate", "evaluation", "evaluation.json")))
    assert evaluation["baseline"]["version"] == 1
    versions = registry.list_versions(base)
    if result["pushed"]:
        assert [v.version for v in versions] == [1, 2]
        trigger = versions[-1].metadata["trigger"]
        assert trigger["kind"] == "drift" and trigger["drifted"] == ["island"]
        assert trigger["window"] == str(data / "date=2026-11-24")
        assert trigger["monitor_run"]["run_id"] and trigger["production_version"] == 1
        code, table, _ = run_cli("versions", base)
        assert code == 0 and "drift: island (launch 1)" in table
        assert "Retraining launched (launch 1)" in out and "pushed version 2" in out
    else:  # not blessed: nothing new is served, and the report says why
        assert [v.version for v in versions] == [1]
        assert result["reason"] and "not pushed" in out


def test_the_same_window_again_launches_nothing(run_cli, world):
    before = [v.version for v in registry.list_versions(world[2])]
    code, out, _, summary = monitor(run_cli, world, "date=2026-11-24")
    assert code == 0
    assert summary["decision"] == "DRIFT" and summary["launch"]["launched"] is False
    assert "already launched: launch 1" in summary["launch"]["reason"]
    assert [v.version for v in registry.list_versions(world[2])] == before


def test_bad_input_fails_before_any_task_with_a_clear_message(run_cli, world, tmp_path):
    import time

    root, data, base = world
    cases = [
        (["--model-base", str(tmp_path / "empty-base"), "--window", str(data / "date=2026-11-23"),
          "--retrain", "off"], "no production version"),
        (["--model-base", base, "--window", str(data / "date=2099-*"), "--retrain", "off"],
         "matches no file"),
        (["--model-base", base, "--window", str(data / "date=2026-11-23"), "--retrain", "off",
          "--settings", '{"numeric": "high"}'], "'numeric' must be a number"),
        (["--model-base", base, "--window", str(data / "date=2026-11-23")],
         "--training-data is needed"),
        (["--model-base", base, "--labels", str(data / "date=2026-11-23"),
          "--label-key", "ride_id", "--retrain", "off"],
         "need the served rows they belong to: give --request-log (or --window)"),
    ]
    for argv, message in cases:
        started = time.perf_counter()
        code, out, err = run_cli("monitor-local", *argv)
        assert code == cli.EXIT_ERROR and message in err, (argv, err)
        assert time.perf_counter() - started < 3
        assert "Traceback" not in err


def test_a_window_missing_a_column_is_reported_and_launches_nothing(run_cli, world):
    root, data, base = world
    synth.write_penguins_like(data / "broken" / "part.csv", 800, seed=5, shift="missing_column")
    code, out, _, summary = monitor(run_cli, world, "broken")
    assert code == 0
    assert summary["decision"] == "DRIFT" and "sex" in summary["drifted"]
    assert summary["launch"]["launched"] is False
    assert "sex" in summary["launch"]["reason"] and "missing column" in out


def test_a_labelled_concept_shift_retrains_with_performance_as_its_reason(run_cli, world):
    """The features keep their distribution (no drift), 15% of the labels changed: the
    realized accuracy drop launches the retraining, and the version says why."""
    root, data, base = world
    labelled = data / "labelled" / "part.csv"
    synth.write_penguins_like(labelled, 1500, seed=7, shift="concept", strength=0.15)
    production = registry.production_version(base)
    summary_path = root / "summary-performance.json"
    code, out, _ = run_cli(
        "monitor-local", "--model-base", base, "--labels", str(labelled),
        "--training-data", str(data / "date=*"), "--training-partitions", "2",
        "--workdir", str(root / "runs"), "--summary-json", str(summary_path),
        "--params", json.dumps({"train_steps": TRAIN_STEPS}))
    assert code == 0, out[-3000:]
    summary = json.loads(summary_path.read_text())
    # Production may be the version the drift test's retraining pushed (trained on the
    # island-shifted partition): this window then drifts from it too. Either way, the
    # strongest reason, the realized drop, is the one the lineage names.
    assert "PERFORMANCE_DROP" in summary["findings"]
    realized = summary["performance"]["realized"]
    assert realized["decision"] == "PERFORMANCE_DROP" and realized["rows"] == 1500
    assert "Realized performance: PERFORMANCE_DROP" in out
    launch = summary["launch"]
    assert launch["launched"] is True and "PERFORMANCE_DROP" in launch["launch_reasons"]
    result = launch["result"]
    assert result["state"] == "SUCCEEDED" and result["pushed"] is True, result
    newest = registry.list_versions(base)[-1]
    trigger = newest.metadata["trigger"]
    assert trigger["kind"] == "performance" and "PERFORMANCE_DROP" in trigger["reasons"]
    assert trigger["production_version"] == production
    assert trigger["realized"]["value"] == pytest.approx(realized["value"])
    code, table, _ = run_cli("versions", base)
    assert code == 0 and f"performance: accuracy {realized['value']:.3f}" in table
    # Every monitoring run of this base is in its history, this one last.
    code, text, _ = run_cli("monitor", "history", base, "--output", "json")
    records = json.loads(text)
    assert records[-1]["findings"] == summary["findings"]
    assert records[-1]["launch"]["launched"] is True
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
