"""The gate's decisions, as a table of scenarios, and the files run_gate writes."""

import json
import os

import pytest

from kfp_ct.components.common.errors import KfpCtError
from kfp_ct.components.gate import logic as gate
from kfp_ct.components.gate.logic import BLESSED, NOT_BLESSED, GateConfigError, decide, run_gate


def evaluation(candidate: dict, baseline: dict | None = None, state: str | None = None,
               detail: str = "", task: str | None = None) -> dict:
    """An evaluation.json document; without ``task`` the gate cannot check metric names
    against the task (the decision table mixes metrics of both tasks)."""
    if state is None:
        state = "ok" if baseline is not None else "none"
    if state == "none" and not detail:
        detail = "no production model at /models/penguins: first push"
    return {
        **({"task": task} if task else {}), "label": "species",
        "candidate": {"overall": candidate, "slices": {}},
        "baseline": {"state": state, "version": 3 if state != "none" else None,
                     "path": "/models/penguins/3" if state != "none" else None,
                     "detail": detail, "overall": baseline},
    }


HIB = {"higher_is_better": True}
LIB = {"higher_is_better": False}
FLOOR_OFF = {"no_skill_floor": False}


def floor_off(thresholds):
    """The thresholds with the no-skill floor turned off, for the tests of the value and
    change rules themselves (the floor has tests of its own, at the end)."""
    if isinstance(thresholds, str):
        return json.dumps(floor_off(json.loads(thresholds)))
    return {**thresholds, **FLOOR_OFF}

CASES = [
    # id, evaluation, thresholds (the floor turned off), blessed, verdicts (in check order)
    ("value_min_pass", evaluation({"accuracy": 0.95}),
     {"value": {"accuracy": {"min": 0.9}}}, True, ["pass"]),
    ("value_min_fail", evaluation({"accuracy": 0.85}),
     {"value": {"accuracy": {"min": 0.9}}}, False, ["fail"]),
    ("value_min_tie_passes", evaluation({"accuracy": 0.9}),
     {"value": {"accuracy": {"min": 0.9}}}, True, ["pass"]),
    ("value_max_fail", evaluation({"loss": 0.7}),
     {"value": {"loss": {"max": 0.5}}}, False, ["fail"]),
    ("value_max_tie_passes", evaluation({"loss": 0.5}),
     {"value": {"loss": {"max": 0.5}}}, True, ["pass"]),
    ("value_min_and_max", evaluation({"mse": 2.0}),
     {"value": {"mse": {"min": 0.0, "max": 1.0}}}, False, ["fail"]),
    ("change_higher_better_improves", evaluation({"accuracy": 0.92}, {"accuracy": 0.90}),
     {"change": {"accuracy": {**HIB, "absolute": 0.0}}}, True, ["pass"]),
    ("change_higher_better_worse_fails", evaluation({"accuracy": 0.88}, {"accuracy": 0.90}),
     {"change": {"accuracy": {**HIB, "absolute": 0.0}}}, False, ["fail"]),
    ("change_tie_passes", evaluation({"accuracy": 0.9}, {"accuracy": 0.9}),
     {"change": {"accuracy": {**HIB, "absolute": 0.0, "relative": 0.0}}}, True, ["pass"]),
    ("change_small_drop_allowed", evaluation({"accuracy": 0.895}, {"accuracy": 0.90}),
     {"change": {"accuracy": {**HIB, "absolute": -0.01}}}, True, ["pass"]),
    ("change_big_drop_rejected", evaluation({"accuracy": 0.85}, {"accuracy": 0.90}),
     {"change": {"accuracy": {**HIB, "absolute": -0.01}}}, False, ["fail"]),
    ("change_relative_drop_allowed", evaluation({"accuracy": 0.89}, {"accuracy": 0.90}),
     {"change": {"accuracy": {**HIB, "relative": -0.02}}}, True, ["pass"]),
    ("change_relative_drop_rejected", evaluation({"accuracy": 0.87}, {"accuracy": 0.90}),
     {"change": {"accuracy": {**HIB, "relative": -0.02}}}, False, ["fail"]),
    ("change_absolute_ok_relative_fails", evaluation({"mae": 0.11}, {"mae": 0.10}),
     {"change": {"mae": {**LIB, "absolute": -0.02, "relative": -0.05}}}, False, ["fail"]),
    ("change_lower_better_improves", evaluation({"mse": 0.8}, {"mse": 1.0}),
     {"change": {"mse": {**LIB, "absolute": 0.0}}}, True, ["pass"]),
    ("change_lower_better_worse_fails", evaluation({"mse": 1.2}, {"mse": 1.0}),
     {"change": {"mse": {**LIB, "absolute": 0.0}}}, False, ["fail"]),
    ("change_lower_better_relative_allowance", evaluation({"mse": 1.04}, {"mse": 1.0}),
     {"change": {"mse": {**LIB, "relative": -0.05}}}, True, ["pass"]),
    ("change_must_improve", evaluation({"accuracy": 0.9}, {"accuracy": 0.9}),
     {"change": {"accuracy": {**HIB, "absolute": 0.01}}}, False, ["fail"]),
    ("first_run_skips_change", evaluation({"accuracy": 0.95}),
     {"value": {"accuracy": {"min": 0.9}},
      "change": {"accuracy": {**HIB, "absolute": 0.0}}}, True, ["pass", "skipped"]),
    ("first_run_value_still_applies", evaluation({"accuracy": 0.5}),
     {"value": {"accuracy": {"min": 0.9}},
      "change": {"accuracy": {**HIB, "absolute": 0.0}}}, False, ["fail", "skipped"]),
    ("unusable_baseline_rejects",
     evaluation({"accuracy": 0.99}, None, state="unusable",
                detail="production version 3 at /models/penguins/3 is corrupt: bad pb"),
     {"value": {"accuracy": {"min": 0.9}}, "change": {"accuracy": {**HIB, "absolute": 0.0}}},
     False, ["pass", "fail", "skipped"]),
    ("unusable_baseline_rejects_without_thresholds",
     evaluation({"accuracy": 0.99}, None, state="unusable", detail="version 3 corrupt"),
     {}, False, ["fail", "fail"]),  # the baseline, and "no check ran"
    ("unknown_value_metric_fails", evaluation({"accuracy": 0.95}),
     {"value": {"auc": {"min": 0.9}}}, False, ["fail"]),
    ("unknown_change_metric_fails", evaluation({"accuracy": 0.95}, {"accuracy": 0.9}),
     {"change": {"auc": {**HIB, "absolute": 0.0}}}, False, ["fail"]),
    ("no_thresholds_do_not_bless", evaluation({"accuracy": 0.1}), {}, False, ["fail"]),
    ("first_run_with_only_change_thresholds_does_not_bless", evaluation({"accuracy": 0.95}),
     {"change": {"accuracy": {**HIB, "absolute": 0.0}}}, False, ["skipped", "fail"]),
    ("thresholds_as_json_text", evaluation({"accuracy": 0.95}),
     '{"value": {"accuracy": {"min": 0.9}}}', True, ["pass"]),
]


@pytest.mark.parametrize("ev,thresholds,blessed,verdicts",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decision_table(ev, thresholds, blessed, verdicts):
    result = decide(ev, floor_off(thresholds))
    assert [c["verdict"] for c in result.checks] == verdicts, result.checks
    assert result.blessed is blessed
    for check in result.checks:
        assert set(check) == {"kind", "metric", "threshold", "candidate", "baseline",
                              "verdict", "reason"}
        assert check["reason"]


def test_first_run_note_names_destination():
    result = decide(evaluation({"accuracy": 0.95}),
                    {"change": {"accuracy": {**HIB, "absolute": 0.0}}, **FLOOR_OFF})
    assert result.notes[-1] == (
        "no production model at /models/penguins: first push, change thresholds skipped")


def test_first_run_note_keeps_a_gs_destination_whole():
    ev = evaluation({"accuracy": 0.95},
                    detail="no production model at gs://bucket/models: first push")
    result = decide(ev, {"value": {"accuracy": {"min": 0.9}},
                         "change": {"accuracy": {**HIB, "absolute": 0.0}}, **FLOOR_OFF})
    assert result.notes[-1] == (
        "no production model at gs://bucket/models: first push, change thresholds skipped")
    assert "(1 skipped)" in gate.render_markdown(result)


def test_unusable_reason_quotes_detail():
    detail = "production version 3 at /models/penguins/3 is corrupt: bad pb"
    result = decide(evaluation({"accuracy": 0.99}, None, state="unusable", detail=detail),
                    FLOOR_OFF)
    check = result.checks[0]
    assert check["verdict"] == "fail" and detail in check["reason"]


def test_unknown_metric_reason_lists_available():
    result = decide(evaluation({"accuracy": 0.95, "example_count": 69}),
                    {"value": {"auc": {"min": 0.9}}})
    reason = result.checks[0]["reason"]
    assert "'auc'" in reason and "accuracy" in reason and "example_count" in reason


def test_change_check_records_both_values():
    result = decide(evaluation({"accuracy": 0.88}, {"accuracy": 0.9}),
                    {"change": {"accuracy": {**HIB, "absolute": -0.01}}, **FLOOR_OFF})
    check = result.checks[0]
    assert (check["candidate"], check["baseline"]) == (0.88, 0.9)
    assert "regression" in check["reason"] and "absolute" in check["reason"]


BAD_CONFIGS = [
    ("not_json", "{value:", "not valid JSON"),
    ("not_object", "[1, 2]", "expected a JSON object"),
    ("unknown_section", {"values": {}}, "unknown section"),
    ("section_not_object", {"value": [1]}, "'value' must be an object"),
    ("bounds_not_object", {"value": {"accuracy": 0.9}}, "value.accuracy must be an object"),
    ("unknown_bound", {"value": {"accuracy": {"minimum": 0.9}}}, "unknown key"),
    ("empty_bounds", {"value": {"accuracy": {}}}, "needs 'min'"),
    ("non_number", {"value": {"accuracy": {"min": "0.9"}}}, "finite number"),
    ("bool_number", {"value": {"accuracy": {"min": True}}}, "finite number"),
    ("min_above_max", {"value": {"accuracy": {"min": 0.9, "max": 0.5}}}, "above max"),
    ("change_without_bound", {"change": {"accuracy": {"higher_is_better": True}}},
     "needs 'absolute'"),
    ("hib_not_bool", {"change": {"accuracy": {"higher_is_better": "yes", "absolute": 0}}},
     "true or false"),
]


@pytest.mark.parametrize("config,message", [c[1:] for c in BAD_CONFIGS],
                         ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_a_clear_error(config, message):
    with pytest.raises(GateConfigError, match=message):
        decide(evaluation({"accuracy": 0.9}), config)


def with_naive(ev: dict, naive: dict, count: int = 500) -> dict:
    ev["naive"] = {"metrics": naive, "predictor": "always 'Adelie'"}
    ev["candidate"]["overall"].setdefault("example_count", count)
    return ev


@pytest.mark.parametrize("task, good, bad, naive", [
    ("classification", {"accuracy": 0.9}, {"accuracy": 0.44}, {"accuracy": 0.44}),
    ("regression", {"rmse": 300.0, "mse": 9e4, "mae": 200.0},
     {"rmse": 801.0, "mse": 6.4e5, "mae": 640.0}, {"rmse": 800.0, "mse": 6.4e5, "mae": 600.0}),
])
def test_empty_thresholds_are_the_task_defaults(task, good, bad, naive):
    """A problem compiled from the same YAML as penguins gets a gate that fits its task:
    beat the no-skill predictor on the first push, no big step back afterwards."""
    first = decide(with_naive(evaluation(dict(good), task=task), naive), "")
    assert first.blessed is True, first.checks
    assert [c["kind"] for c in first.checks] == ["value", "examples", "change"]
    assert any(f"the {task} defaults" in n for n in first.notes)
    useless = decide(with_naive(evaluation(dict(bad), task=task), naive), "")
    assert useless.blessed is False
    assert "does not beat the no-skill predictor" in useless.checks[0]["reason"]
    main = gate.metrics.MAIN_METRIC[task]
    worse = dict(good)
    worse[main] = good[main] * (0.9 if task == "classification" else 1.2)
    stepped_back = decide(with_naive(evaluation(worse, dict(good), task=task), naive), "")
    assert stepped_back.blessed is False
    assert [c["verdict"] for c in stepped_back.checks if c["kind"] == "change"] == ["fail"]


def test_empty_object_thresholds_are_the_no_skill_floor_alone():
    ev = with_naive(evaluation({"accuracy": 0.9}, task="classification"), {"accuracy": 0.44})
    result = decide(ev, "{}")
    assert result.blessed is True
    assert [(c["kind"], c["metric"], c["verdict"]) for c in result.checks] == [
        ("value", "accuracy", "pass")]


@pytest.mark.parametrize("count, blessed", [(49, False), (50, True)])
def test_min_examples_is_a_gate_setting(count, blessed):
    ev = with_naive(evaluation({"accuracy": 0.95}, task="classification"),
                    {"accuracy": 0.44}, count=count)
    result = decide(ev, {"value": {"accuracy": {"min": 0.9}}, "min_examples": 50})
    assert result.blessed is blessed
    check = [c for c in result.checks if c["kind"] == "examples"][0]
    assert check["verdict"] == ("pass" if blessed else "fail")
    if not blessed:
        assert "49 eval rows are too few to decide on (min_examples 50)" in check["reason"]


def test_a_decision_on_few_rows_says_how_uncertain_it_is():
    ev = evaluation({"accuracy": 0.9, "example_count": 69}, task="classification")
    notes = decide(ev, {"value": {"accuracy": {"min": 0.8}}}).notes
    assert any(n.startswith("decided on only 69 eval rows; accuracy is known to about "
                            "+/-0.072") for n in notes), notes
    many = evaluation({"accuracy": 0.9, "example_count": 5000}, task="classification")
    assert not any("decided on only" in n for n in decide(many, "{}").notes)


@pytest.mark.parametrize("config, message", [
    ({"min_examples": 0}, "min_examples must be a whole number"),
    ({"min_examples": 2.5}, "min_examples must be a whole number"),
    ({"value": {"accuracy": {"better_than_naive": "yes"}}}, "must be true or false"),
    ({"value": {"macro_recall": {"better_than_naive": True}}},
     "no-skill predictor is measured on accuracy for classification"),
])
def test_bad_naive_and_example_settings_are_clear_errors(config, message):
    with pytest.raises(GateConfigError, match=message):
        decide(evaluation({"accuracy": 0.9}, task="classification"), config)


def test_better_than_naive_without_a_naive_measure_fails_the_check():
    ev = evaluation({"accuracy": 0.9}, task="classification")  # an evaluation without naive
    result = decide(ev, {"value": {"accuracy": {"better_than_naive": True}}})
    assert result.blessed is False
    assert "has no naive accuracy" in result.checks[0]["reason"]


def test_a_change_threshold_that_calls_a_worse_error_better_is_refused():
    """The field report: mse with higher_is_better true blessed a 150x worse model."""
    ev = evaluation({"mse": 150.0}, {"mse": 1.0}, task="regression")
    with pytest.raises(GateConfigError, match=r"change\.mse\.higher_is_better is true, but "
                                              r"for mse lower is better: a worse model would "
                                              r"pass as an improvement"):
        decide(ev, {"change": {"mse": {"higher_is_better": True, "absolute": 0.0}}})


@pytest.mark.parametrize("metric", ["mse", "mae", "rmse"])
def test_error_metrics_are_lower_is_better_without_saying_so(metric):
    ev = evaluation({metric: 150.0}, {metric: 1.0}, task="regression")
    result = decide(ev, {"change": {metric: {"absolute": 0.0}}, **FLOOR_OFF})
    assert result.blessed is False and "regression" in result.checks[0]["reason"]
    better = decide(evaluation({metric: 0.5}, {metric: 1.0}, task="regression"),
                    {"change": {metric: {"absolute": 0.0}}, **FLOOR_OFF})
    assert better.blessed is True and "improvement" in better.checks[0]["reason"]


def test_accuracy_is_higher_is_better_without_saying_so():
    ev = evaluation({"accuracy": 0.80}, {"accuracy": 0.95}, task="classification")
    assert decide(ev, {"change": {"accuracy": {"absolute": -0.01}}}).blessed is False


@pytest.mark.parametrize("metric", ["example_count", "auc", "loss"])
def test_a_metric_with_no_known_direction_needs_one(metric):
    ev = evaluation({metric: 1.0}, {metric: 1.0})
    with pytest.raises(GateConfigError, match=f"change.{metric}: '{metric}' has no known "
                                              "direction; set higher_is_better"):
        decide(ev, {"change": {metric: {"absolute": 0.0}}})


@pytest.mark.parametrize("task,section,metric", [
    ("regression", "value", "accuracy"), ("regression", "change", "accuracy"),
    ("classification", "value", "mse"), ("classification", "change", "rmse")])
def test_a_metric_the_tasks_evaluation_lacks_is_a_configuration_error(task, section, metric):
    bounds = {"min": 0.5} if section == "value" else {"absolute": 0.0}
    ev = evaluation({"example_count": 10}, task=task)
    with pytest.raises(GateConfigError, match=f"{section}.{metric}: a {task} evaluation has "
                                              f"no '{metric}'; its metrics: example_count"):
        decide(ev, {section: {metric: bounds}})


def _write_evaluation(folder, doc):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "evaluation.json"), "w") as fh:
        json.dump(doc, fh)


@pytest.mark.parametrize("accuracy,blessed", [(0.95, True), (0.5, False)])
def test_run_gate_writes_marker_json_and_report(tmp_path, accuracy, blessed):
    _write_evaluation(tmp_path / "ev", with_naive(evaluation(
        {"accuracy": accuracy}, {"accuracy": 0.9}, task="classification"), {"accuracy": 0.44}))
    out, report = tmp_path / "blessing", tmp_path / "report.md"
    thresholds = json.dumps({"value": {"accuracy": {"min": 0.9}},
                             "change": {"accuracy": {**HIB, "absolute": -0.01}}})
    result = run_gate(str(tmp_path / "ev"), thresholds, str(out), str(report))
    assert result.blessed is blessed
    marker = BLESSED if blessed else NOT_BLESSED
    assert sorted(os.listdir(out)) == sorted([marker, "blessing.json"])
    doc = json.loads((out / "blessing.json").read_text())
    assert doc["blessed"] is blessed and doc["decision"] == marker
    assert [c["metric"] for c in doc["checks"]] == ["accuracy", "accuracy"]
    text = report.read_text()
    assert text.splitlines()[2].startswith(f"**{marker}**")
    assert "| metric |" in text.replace("| kind | metric |", "| metric |")
    assert text.count("| value | accuracy |") == 1


def test_run_gate_replaces_a_stale_marker(tmp_path):
    _write_evaluation(tmp_path / "ev", evaluation({"accuracy": 0.5}))
    out = tmp_path / "blessing"
    out.mkdir()
    (out / BLESSED).write_text("")
    run_gate(str(tmp_path / "ev"), '{"value": {"accuracy": {"min": 0.9}}}', str(out),
             str(tmp_path / "r.md"))
    assert not (out / BLESSED).exists() and (out / NOT_BLESSED).exists()


def test_run_gate_without_evaluation_is_a_clear_error(tmp_path):
    with pytest.raises(KfpCtError, match="no evaluation.json"):
        run_gate(str(tmp_path), "{}", str(tmp_path / "b"), str(tmp_path / "r.md"))


def test_gate_module_does_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys, kfp_ct.components.gate.logic; "
            "print(any(m.split('.')[0] in ('tensorflow', 'kfp') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         check=True)
    assert out.stdout.strip() == "False"


def test_every_metric_evaluate_emits_can_be_gated_for_its_task():
    """The task's metric list is what evaluate emits (a real evaluation.json is checked
    in the pipeline tests); each quality metric takes a change threshold without a
    direction, and example_count a value threshold (beside the no-skill floor)."""
    from kfp_ct.components.common import metrics

    naive = {"classification": {"accuracy": 0.5},
             "regression": {"rmse": 2.0, "mse": 4.0, "mae": 2.0}}
    for task, names in metrics.TASK_METRICS.items():
        values = {m: 1.0 for m in names}
        values[metrics.EXAMPLE_COUNT] = 500.0  # ground enough for the no-skill floor's test
        for name in names:
            section = "value" if name == "example_count" else "change"
            bounds = {"min": 0} if section == "value" else {"absolute": -1.0}
            ev = with_naive(evaluation(values, values, task=task), naive[task])
            assert decide(ev, {section: {name: bounds}}).blessed, (task, name)


# ------------------------------------------- issue 21: no blessing on a gate that checked nothing

CHANGE_ONLY = {"change": {"accuracy": {"absolute": -0.01}}}
NO_SKILL = {"accuracy": 0.44, "example_count": 69}  # what shuffled labels give on penguins
SKILLED = {"accuracy": 0.97, "example_count": 69}
NAIVE = {"accuracy": 0.44}


def test_change_only_thresholds_on_a_first_push_keep_the_no_skill_floor():
    """The field report: a model trained on shuffled labels was pushed as production by
    change-only thresholds on a first push (every check skipped, BLESSED)."""
    ev = with_naive(evaluation(dict(NO_SKILL), task="classification"), NAIVE)
    result = decide(ev, CHANGE_ONLY)
    assert result.blessed is False
    assert [(c["kind"], c["metric"], c["verdict"]) for c in result.checks] == [
        ("value", "accuracy", "fail"), ("change", "accuracy", "skipped")]
    assert "does not beat the no-skill predictor's 0.44" in result.checks[0]["reason"]
    assert any('"no_skill_floor": false' in n for n in result.notes), result.notes


def test_change_only_thresholds_on_a_first_push_bless_a_model_that_beats_the_floor():
    ev = with_naive(evaluation(dict(SKILLED), task="classification"), NAIVE)
    result = decide(ev, json.dumps(CHANGE_ONLY))
    assert result.blessed is True
    floor, change = result.checks
    assert (floor["kind"], floor["metric"], floor["verdict"]) == ("value", "accuracy", "pass")
    assert "0.97 beats the no-skill predictor's 0.44" in floor["reason"]
    assert change["verdict"] == "skipped"
    assert "passed 1 check(s) (1 skipped)" in gate.render_markdown(result)


def test_the_floor_is_merged_into_the_users_own_value_check_on_the_key_metric():
    ev = with_naive(evaluation({"rmse": 500.0, "mse": 2.5e5, "mae": 400.0}, task="regression"),
                    {"rmse": 800.0, "mse": 6.4e5, "mae": 600.0})
    result = decide(ev, {"value": {"rmse": {"max": 600}}})
    (check,) = result.checks
    assert check["threshold"] == "<= 600 and < naive 800" and check["verdict"] == "pass"
    ev["candidate"]["overall"]["rmse"] = 801.0
    assert decide(ev, {"value": {"rmse": {"max": 900}}}).blessed is False


def test_empty_object_thresholds_still_keep_the_no_skill_floor():
    ev = with_naive(evaluation(dict(NO_SKILL), task="classification"), NAIVE)
    result = decide(ev, "{}")
    assert result.blessed is False
    assert [(c["kind"], c["metric"], c["verdict"]) for c in result.checks] == [
        ("value", "accuracy", "fail")]


def test_floor_turned_off_with_change_only_thresholds_on_a_first_push_is_not_blessed():
    ev = with_naive(evaluation(dict(SKILLED), task="classification"), NAIVE)
    result = decide(ev, {**CHANGE_ONLY, "no_skill_floor": False})
    assert result.blessed is False
    assert [c["verdict"] for c in result.checks] == ["skipped", "fail"]
    reason = result.checks[-1]["reason"]
    assert reason.startswith("no check ran: ")
    assert "change accuracy: first push: no production model to compare with" in reason
    assert '"no_skill_floor": false' in reason
    assert "no check ran" in gate.render_markdown(result).splitlines()[2]


@pytest.mark.parametrize("thresholds, why", [
    ({"no_skill_floor": False}, "no value or change thresholds"),
    ({"no_skill_floor": False, "min_examples": 50},
     "examples example_count: counts eval rows, it does not measure the model"),
])
def test_a_gate_with_nothing_that_measures_the_model_does_not_bless(thresholds, why):
    ev = with_naive(evaluation(dict(SKILLED, example_count=500), task="classification"),
                    NAIVE)
    result = decide(ev, thresholds)
    assert result.blessed is False
    assert result.checks[-1]["reason"].startswith("no check ran: ")
    assert why in result.checks[-1]["reason"]


def test_every_check_skipped_for_an_unusable_baseline_names_each_reason():
    ev = evaluation(dict(SKILLED), None, state="unusable", detail="version 3 corrupt",
                    task="classification")
    result = decide(ev, {**CHANGE_ONLY, "no_skill_floor": False})
    assert result.blessed is False
    assert "change accuracy: no usable baseline to compare with" in result.checks[-1]["reason"]


def test_a_floor_with_no_task_to_place_it_on_fails():
    ev = evaluation({"accuracy": 0.97})  # an evaluation.json that names no task
    result = decide(ev, CHANGE_ONLY)
    assert result.blessed is False
    assert "names no task" in result.checks[0]["reason"]


@pytest.mark.parametrize("config, message", [
    ({"value": {"accuracy": {"min": 1.5}}},
     "value.accuracy.min 1.5 can never be met: accuracy lies in [0, 1]"),
    ({"value": {"accuracy": {"min": -0.1}}},
     "value.accuracy.min -0.1 can never fail: accuracy lies in [0, 1]"),
    ({"value": {"accuracy": {"max": 1.2}}},
     "value.accuracy.max 1.2 can never fail: accuracy lies in [0, 1]"),
    ({"value": {"macro_recall": {"max": -0.5}}},
     "value.macro_recall.max -0.5 can never be met: macro_recall lies in [0, 1]"),
    ({"value": {"rmse": {"max": -1}}}, "value.rmse.max -1 can never be met: rmse lies in [0, inf)"),
    ({"value": {"mse": {"min": -2}}}, "value.mse.min -2 can never fail: mse lies in [0, inf)"),
    ({"value": {"example_count": {"max": -1}}},
     "value.example_count.max -1 can never be met: example_count lies in [0, inf)"),
    ({"change": {"accuracy": {"absolute": 1.5}}},
     "change.accuracy.absolute 1.5 can never be met: accuracy lies in [0, 1], so it can "
     "change by at most 1"),
    ({"change": {"macro_precision": {"absolute": -1.5}}},
     "change.macro_precision.absolute -1.5 can never fail: macro_precision lies in [0, 1]"),
    ({"change": {"mae": {"relative": 1.5}}},
     "change.mae.relative 1.5 can never be met: mae lies in [0, inf)"),
    ({"change": {"accuracy": {"relative": -2}}},
     "change.accuracy.relative -2 can never fail: accuracy lies in [0, 1]"),
    ({"min_examples": -5}, "min_examples must be a whole number of eval rows >= 1, got -5"),
    ({"min_examples": 50.0}, "min_examples must be a whole number of eval rows >= 1, got 50.0"),
])
def test_unreachable_thresholds_are_refused_when_parsed(config, message):
    from kfp_ct.components.common.thresholds import parse_thresholds

    for text in (config, json.dumps(config)):
        with pytest.raises(GateConfigError) as caught:
            parse_thresholds(text)  # no task yet: run_gate's first check, the CLI's
        assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("config, message", [
    ({"no_skill_floor": "no"}, "no_skill_floor must be true or false, got 'no'"),
    ({"value": {"accuracy": {"better_than_naive": False}}},
     'better_than_naive: false turns nothing off; to turn the no-skill floor off, set '
     '"no_skill_floor": false'),
    ({"no_skill_floor": False, "value": {"accuracy": {"better_than_naive": True}}},
     "no_skill_floor is false, but value.accuracy.better_than_naive asks for the no-skill"),
])
def test_the_floor_setting_is_explicit(config, message):
    with pytest.raises(GateConfigError, match=message.replace(".", r"\.")):
        decide(evaluation({"accuracy": 0.9}, task="classification"), config)


def test_reachable_edges_are_accepted():
    from kfp_ct.components.common.thresholds import parse_thresholds

    parse_thresholds({"value": {"accuracy": {"min": 1.0}, "rmse": {"max": 0}},
                      "change": {"accuracy": {"absolute": 1.0}, "mae": {"relative": 1.0}}})
    parse_thresholds({"value": {"accuracy": {"min": 0.0, "max": 1.0}},
                      "change": {"accuracy": {"absolute": -1.0, "relative": -1.0}}})


def test_run_gate_writes_not_blessed_for_a_no_skill_first_push(tmp_path):
    ev = with_naive(evaluation(dict(NO_SKILL), task="classification"), NAIVE)
    _write_evaluation(tmp_path / "ev", ev)
    out = tmp_path / "blessing"
    result = run_gate(str(tmp_path / "ev"), json.dumps(CHANGE_ONLY), str(out),
                      str(tmp_path / "r.md"))
    assert result.blessed is False
    assert sorted(os.listdir(out)) == sorted([NOT_BLESSED, "blessing.json"])


def test_gate_component_does_not_bless_a_no_skill_first_push(tmp_path):
    """The KFP component's own function, with artifacts as a task gets them."""
    from kfp import dsl

    from kfp_ct.components.gate.component import gate as gate_component

    ev_dir = tmp_path / "ev"
    _write_evaluation(ev_dir, with_naive(evaluation(dict(NO_SKILL), task="classification"),
                                         NAIVE))
    blessing = dsl.Artifact(uri=str(tmp_path / "blessing"), metadata={})
    report = dsl.Markdown(uri=str(tmp_path / "report.md"), metadata={})
    blessed = gate_component.python_func(
        thresholds=json.dumps(CHANGE_ONLY), blessing=blessing, report=report,
        evaluation=dsl.Artifact(uri=str(ev_dir), metadata={}))
    assert blessed is False and blessing.metadata["blessed"] is False
    assert os.path.exists(tmp_path / "blessing" / NOT_BLESSED)
    assert "does not beat the no-skill predictor" in (tmp_path / "report.md").read_text()


def test_run_local_refuses_an_unreachable_threshold_in_one_line_before_any_task(tmp_path):
    """A fresh ``kfp-ct run-local`` process: one line, exit 2, in under 3 s of CPU (about
    1.4 s wall on an idle machine; CPU time, because a machine shared with other work
    stretches wall time, not the work done)."""
    import resource
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, "-m", "kfp_ct.pipelines.entrypoints.cli", "run-local",
         "--destination", str(tmp_path / "serving"), "--workdir", str(tmp_path / "runs"),
         "--thresholds", '{"value": {"accuracy": {"min": 1.5}}}'],
        cwd=root, capture_output=True, text=True, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "value.accuracy.min 1.5 can never be met" in lines[0], lines
    assert cpu < 3, cpu
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("task, candidate, naive, rows, blessed", [
    # The run: a model trained on shuffled penguin labels beat the most frequent
    # class by luck (0.464 against 0.429 on 56 eval rows) and was pushed.
    ("classification", {"accuracy": 0.464286}, {"accuracy": 0.428571}, 56, False),
    ("classification", {"accuracy": 0.985507}, {"accuracy": 0.391304}, 69, True),
    ("classification", {"accuracy": 0.52}, {"accuracy": 0.5}, 10_000, True),
    ("classification", {"accuracy": 0.505}, {"accuracy": 0.5}, 10_000, False),
    ("regression", {"rmse": 790.0, "mse": 790.0 ** 2, "mae": 590.0},
     {"rmse": 800.0, "mse": 6.4e5, "mae": 600.0}, 60, False),
    ("regression", {"rmse": 300.0, "mse": 9e4, "mae": 200.0},
     {"rmse": 800.0, "mse": 6.4e5, "mae": 600.0}, 60, True),
])
def test_the_no_skill_floor_asks_for_more_than_luck(task, candidate, naive, rows, blessed):
    """Beating the no-skill predictor by less than chance gives at this many eval rows
    (one-sided 5%) is no skill: first push, change-only thresholds, only the floor ran."""
    from kfp_ct.components.common.metrics import MAIN_METRIC

    ev = with_naive(evaluation(dict(candidate, example_count=float(rows)), task=task), naive)
    result = decide(ev, {"change": {MAIN_METRIC[task]: {"absolute": -0.01}}})
    assert result.blessed is blessed, result.checks
    floor = result.checks[0]
    assert floor["verdict"] == ("pass" if blessed else "fail")
    assert f"by more than luck explains on {rows} eval rows" in floor["reason"], floor
