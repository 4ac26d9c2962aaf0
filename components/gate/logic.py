"""Gate: bless or reject the candidate from evaluation.json, with a reason per check.

Thresholds (JSON text or a dict)::

    {"value":  {"accuracy": {"min": 0.9, "better_than_naive": true}, "mse": {"max": 0.5}},
     "change": {"accuracy": {"absolute": -0.01, "relative": -0.02}},
     "min_examples": 50,
     "no_skill_floor": true}

``value`` bounds the candidate's overall metric (inclusive); ``better_than_naive`` asks
it to beat the no-skill predictor on the same eval rows (the most frequent class, the
labels' mean; components/evaluate/naive.py). ``change`` compares the candidate with the
production baseline measured on the same rows: the improvement is ``candidate -
baseline`` for a metric where higher is better, ``baseline - candidate`` otherwise (the
direction is the metric's own, components/common/metrics.py; ``higher_is_better`` is
needed only for a metric with none); it must be ``>= absolute`` and ``improvement /
|baseline| >= relative`` (a negative bound allows a small step back, 0 means "not
worse"). Ties pass. ``min_examples``: fewer eval rows than this are no ground for a
decision (not blessed).

The no-skill floor: every run checks ``better_than_naive`` on the task's main metric
(accuracy, rmse: ``metrics.MAIN_METRIC``), merged into the user's value checks when they
lack it, unless the thresholds say ``"no_skill_floor": false`` in so many words.
Empty thresholds mean the task's defaults (``TASK_DEFAULTS``): better than naive, at
most a small step back from production, at least 50 eval rows. ``{}`` means the floor
alone. A bound no value of its metric can meet or fail (accuracy min 1.5, rmse max -1)
is refused when the thresholds are parsed (``metrics.RANGES``).

With no production model yet (first push) change checks are skipped, with a note. A
production model that exists but cannot be evaluated ("unusable") rejects the candidate:
replacing a model we could not measure is not a decision the gate can justify.

A blessing rests on at least one check of the model (a value or change check on a
quality metric) that ran and passed: when none ran (the floor off and every change check
skipped, say) the candidate is not blessed, and a ``coverage`` check says "no check ran"
with the reason each was skipped. Row counts (``min_examples``) do not count: they say
whether there is ground to decide on, not whether the model is any good. (TFX's
Evaluator drops change thresholds without a baseline and decides on whatever value
thresholds remain: pipelines/TRAINING.md, "The no-skill floor", says how the two differ.)

Pure Python: no kfp, no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

from kfp_ct.components.common import metrics, report, storage
from kfp_ct.components.common.artifacts import BLESSED, BLESSING_JSON, EVALUATION_JSON, NOT_BLESSED
from kfp_ct.components.common.errors import KfpCtError
from kfp_ct.components.common.thresholds import (  # noqa: F401  (re-exported: the gate's error)
    FLOOR_OFF, TASK_DEFAULTS, GateConfigError, parse_thresholds)

PASS = "pass"
FAIL = "fail"
SKIPPED = "skipped"
COVERAGE = "coverage"  # the check that fails when no check of the model ran
NO_CHECK_RAN = "no check ran"

@dataclasses.dataclass
class Blessing:
    blessed: bool
    checks: list[dict]
    notes: list[str]

    @property
    def marker(self) -> str:
        return BLESSED if self.blessed else NOT_BLESSED

    def to_dict(self) -> dict:
        return {"blessed": self.blessed, "decision": self.marker, "checks": self.checks,
                "notes": self.notes}


# ----------------------------------------------------------------------- decision


def _fmt(value) -> str:
    return report.fmt(value, ".6g")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(kind, metric, threshold, candidate, baseline, verdict, reason) -> dict:
    return {"kind": kind, "metric": metric, "threshold": threshold, "candidate": candidate,
            "baseline": baseline, "verdict": verdict, "reason": reason}


#: The no-skill floor is a test, not a comparison: the candidate must beat the no-skill
#: predictor by more than luck explains on the eval rows, at a one-sided 5% false-bless
#: rate (a model trained on shuffled labels beat the most frequent class by 0.036 on 56
#: rows and was pushed). Accuracy: a one-sample binomial z-test against the naive
#: accuracy. Error metrics: a predictor independent of the labels lowers the mean squared
#: error below the labels' variance by at most z^2/n of it at that rate (the largest its
#: chance correlation with the labels can buy), so mse must be below naive * (1 - z^2/n),
#: rmse and mae below naive * sqrt(1 - z^2/n).
NO_SKILL_Z = 1.645


def no_skill_bar(metric: str, naive: float, rows) -> float:
    """The value ``metric`` must beat (strictly) to show skill over the no-skill
    predictor's ``naive`` on ``rows`` eval rows; ``naive`` itself when rows are unknown."""
    if not _is_number(rows) or rows <= 0:
        return naive
    z2n = NO_SKILL_Z ** 2 / rows
    if metric == metrics.ACCURACY:
        return min(1.0, naive + NO_SKILL_Z * math.sqrt(naive * (1 - naive) / rows))
    if metric == metrics.MSE:
        return naive * max(0.0, 1 - z2n)
    if metric in (metrics.RMSE, metrics.MAE):
        return naive * math.sqrt(max(0.0, 1 - z2n))
    return naive


def _value_check(metric: str, bounds: dict, overall: dict, naive: dict | None = None) -> dict:
    naive = naive or {}
    limits = {k: v for k, v in bounds.items() if k in ("min", "max")}
    parts = [f"{'>=' if k == 'min' else '<='} {_fmt(v)}"
             for k, v in sorted(limits.items(), key=lambda kv: kv[0] != "min")]
    better = bounds.get("better_than_naive") and metrics.HIGHER_IS_BETTER.get(metric, True)
    if bounds.get("better_than_naive"):
        parts.append(f"{'>' if better else '<'} naive {_fmt(naive.get(metric))}")
    text = " and ".join(parts)
    value = overall.get(metric)
    if not _is_number(value):
        reason = (f"metric {metric!r} is not in the evaluation; available: "
                  f"{sorted(overall) or 'none'}" if metric not in overall
                  else f"metric {metric!r} is not a finite number ({value!r})")
        return _check("value", metric, text, value, None, FAIL, reason)
    problems = []
    if "min" in bounds and value < bounds["min"]:
        problems.append(f"{_fmt(value)} is below the minimum {_fmt(bounds['min'])}")
    if "max" in bounds and value > bounds["max"]:
        problems.append(f"{_fmt(value)} is above the maximum {_fmt(bounds['max'])}")
    rows = overall.get(metrics.EXAMPLE_COUNT)
    floor = naive.get(metric)
    if bounds.get("better_than_naive"):
        if not _is_number(floor):
            problems.append(f"the evaluation has no naive {metric} to compare with")
        else:
            bar = no_skill_bar(metric, floor, rows)
            if (value <= bar) if better else (value >= bar):
                margin = (f"by more than luck explains on {rows:g} eval rows (it must be "
                          f"{'above' if better else 'below'} {_fmt(bar)}; one-sided test at "
                          f"5%)" if bar != floor else "")
                problems.append(f"{_fmt(value)} does not beat the no-skill predictor's "
                                f"{_fmt(floor)} {margin}".rstrip()
                                + ": the model shows no skill it can be trusted with")
    if problems:
        return _check("value", metric, text, value, None, FAIL, "; ".join(problems))
    facts = [f"{_fmt(value)} is within " + " and ".join(parts[:len(limits)])] if limits else []
    if bounds.get("better_than_naive"):
        bar = no_skill_bar(metric, floor, rows)
        facts.append(f"{_fmt(value)} beats the no-skill predictor's {_fmt(floor)}"
                     + (f" by more than luck explains on {rows:g} eval rows (bar "
                        f"{_fmt(bar)}, one-sided 5%)" if bar != floor else ""))
    return _check("value", metric, text, value, None, PASS, "; ".join(facts) or "no bound")


def _change_text(bounds: dict) -> str:
    direction = "higher is better" if bounds["higher_is_better"] else "lower is better"
    parts = [f"absolute >= {_fmt(bounds['absolute'])}"] if "absolute" in bounds else []
    if "relative" in bounds:
        parts.append(f"relative >= {_fmt(bounds['relative'])}")
    return f"{direction}; " + ", ".join(parts)


def _change_check(metric: str, bounds: dict, overall: dict, base: dict) -> dict:
    text = _change_text(bounds)
    value, other = overall.get(metric), base.get(metric)
    if not _is_number(value) or not _is_number(other):
        side, have = ("candidate", overall) if not _is_number(value) else ("baseline", base)
        reason = (f"metric {metric!r} is not in the {side} evaluation; available: "
                  f"{sorted(have) or 'none'}" if metric not in have
                  else f"the {side}'s {metric!r} is not a finite number ({have[metric]!r})")
        return _check("change", metric, text, value, other, FAIL, reason)
    gain = (value - other) if bounds["higher_is_better"] else (other - value)
    word = "improvement" if gain >= 0 else "regression"
    problems, facts = [], [f"{word} {_fmt(abs(gain))} (candidate {_fmt(value)}, baseline "
                           f"{_fmt(other)})"]
    if "absolute" in bounds and gain < bounds["absolute"]:
        problems.append(f"change {_fmt(gain)} is below the absolute bound "
                        f"{_fmt(bounds['absolute'])}")
    if "relative" in bounds:
        if other == 0:
            rel = 0.0 if gain == 0 else math.copysign(math.inf, gain)
        else:
            rel = gain / abs(other)
        facts.append(f"relative {_fmt(rel)}")
        if rel < bounds["relative"]:
            problems.append(f"relative change {_fmt(rel)} is below the bound "
                            f"{_fmt(bounds['relative'])}")
    if problems:
        return _check("change", metric, text, value, other, FAIL,
                      "; ".join(problems) + f" ({'; '.join(facts)})")
    return _check("change", metric, text, value, other, PASS, "; ".join(facts))


def decide(evaluation: dict, thresholds: str | dict | None) -> Blessing:
    """Applies the thresholds to an evaluation.json document."""
    if not isinstance(evaluation, dict) or "candidate" not in evaluation:
        raise KfpCtError("evaluation: expected evaluation.json with a 'candidate' section")
    config = parse_thresholds(thresholds, task=evaluation.get("task"))
    overall = (evaluation.get("candidate") or {}).get("overall") or {}
    baseline = evaluation.get("baseline") or {"state": "none", "detail": ""}
    state = baseline.get("state", "none")
    base_overall = baseline.get("overall") or {}
    checks, notes = [], []

    naive_doc = evaluation.get("naive") or {}
    if config.get("defaults"):
        notes.append(f"thresholds: the {evaluation.get('task')} defaults "
                     f"{json.dumps(TASK_DEFAULTS.get(evaluation.get('task') or '', {}), sort_keys=True)}")
    for metric, bounds in config["value"].items():
        checks.append(_value_check(metric, bounds, overall, naive_doc.get("metrics")))
    has_naive = any(b.get("better_than_naive") for b in config["value"].values())
    if config["no_skill_floor"] and not has_naive:  # no task: the floor has no metric
        checks.append(_check(
            "value", "-", "better than naive", None, None, FAIL,
            f"the evaluation names no task (one of {sorted(metrics.MAIN_METRIC)}), so the "
            f"no-skill floor has no metric to check; evaluate writes the task, or turn the "
            f"floor off with {FLOOR_OFF}"))
    if config.get("floor_added"):
        notes.append(f"no-skill floor: {config['floor_added']} must beat the no-skill "
                     f"predictor on every run ({FLOOR_OFF} turns it off)")
    elif not config["no_skill_floor"]:
        notes.append(f"no-skill floor turned off ({FLOOR_OFF})")
    if has_naive:
        notes.append(f"naive predictor: {naive_doc.get('predictor') or 'not measured'}")
    count = overall.get(metrics.EXAMPLE_COUNT)
    if config.get("min_examples") is not None:
        need = config["min_examples"]
        if not _is_number(count) or count < need:
            checks.append(_check(
                "examples", metrics.EXAMPLE_COUNT, f">= {need}", count, None, FAIL,
                f"{_fmt(count)} eval rows are too few to decide on (min_examples {need}): "
                f"give more data, or a larger eval_percent, or lower min_examples"))
        else:
            checks.append(_check("examples", metrics.EXAMPLE_COUNT, f">= {need}", count,
                                 None, PASS, f"{_fmt(count)} eval rows"))
    if _is_number(count) and 0 < count < metrics.FEW_EXAMPLES:
        accuracy = overall.get(metrics.ACCURACY)
        spread = (f"; accuracy is known to about +/-{2 * math.sqrt(accuracy * (1 - accuracy) / count):.3f}"
                  f" (2 standard errors)" if _is_number(accuracy) else "")
        notes.append(f"decided on only {int(count)} eval rows{spread}")

    if state == "corrupt":  # TF Serving cannot load it: say how to recover
        detail = baseline.get("detail") or "no detail recorded"
        recovery = baseline.get("recovery") or (
            "recover by rolling back to a loadable version (kfp-ct versions lists them)")
        checks.append(_check(
            "baseline", "-", "production model must be loadable", None, None, FAIL,
            f"the production model is corrupt, so TF Serving cannot serve it and the "
            f"candidate cannot be compared with it: {detail}; {recovery}"))
        notes.append(f"production model corrupt: {detail}; {recovery}")
    elif state == "unusable":
        detail = baseline.get("detail") or "no detail recorded"
        checks.append(_check(
            "baseline", "-", "production model must be usable", None, None, FAIL,
            f"the production model cannot be evaluated, so the candidate cannot be compared "
            f"with it: {detail}"))
        notes.append(f"production model unusable: {detail}")
    if state in ("unusable", "corrupt"):
        for metric, bounds in config["change"].items():
            checks.append(_check("change", metric, _change_text(bounds), overall.get(metric),
                                 None, SKIPPED, "no usable baseline to compare with"))
    elif state == "ok":
        for metric, bounds in config["change"].items():
            checks.append(_change_check(metric, bounds, overall, base_overall))
    elif state == "none":
        where = baseline.get("path") or _destination_of(baseline)
        notes.append(f"no production model at {where}: first push, change thresholds skipped")
        for metric, bounds in config["change"].items():
            checks.append(_check("change", metric, _change_text(bounds), overall.get(metric),
                                 None, SKIPPED, "first push: no production model to compare with"))
    else:
        checks.append(_check("baseline", "-", "known baseline state", None, None, FAIL,
                             f"unknown baseline state {state!r} in the evaluation"))

    coverage = _coverage_check(checks, config)
    if coverage:
        checks.append(coverage)
    blessed = all(c["verdict"] != FAIL for c in checks)
    return Blessing(blessed=blessed, checks=checks, notes=notes)


def _measures_the_model(check: dict) -> bool:
    return check["kind"] in ("value", "change") and check["metric"] != metrics.EXAMPLE_COUNT


def _coverage_check(checks: list[dict], config: dict) -> dict | None:
    """A failed check when no check of the model ran (passed or failed), naming why."""
    if any(_measures_the_model(c) and c["verdict"] != SKIPPED for c in checks):
        return None
    why = [f"{c['kind']} {c['metric']}: {c['reason']}" for c in checks
           if c["verdict"] == SKIPPED]
    why += [f"{c['kind']} {c['metric']}: counts eval rows, it does not measure the model"
            for c in checks if c["verdict"] != SKIPPED and c["kind"] in ("value", "examples")]
    if not config["no_skill_floor"]:
        why.append(f"the no-skill floor is turned off ({FLOOR_OFF})")
    if not config["value"] and not config["change"]:
        why.append("no value or change thresholds are configured")
    return _check(COVERAGE, "-", "at least one check of the model runs", None, None, FAIL,
                  f"{NO_CHECK_RAN}: " + "; ".join(why) + "; nothing measured the candidate, "
                  f"so it is not blessed")


def _destination_of(baseline: dict) -> str:
    detail = baseline.get("detail") or ""
    prefix = "no production model at "
    if detail.startswith(prefix):
        return detail[len(prefix):].rsplit(": ", 1)[0]
    return "the push destination"


# ------------------------------------------------------------------------ writing


def _md(value) -> str:
    return _fmt(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(blessing: Blessing) -> str:
    failed = [c for c in blessing.checks if c["verdict"] == FAIL]
    if blessing.blessed:
        passed = sum(c["verdict"] == PASS for c in blessing.checks)
        skipped = len(blessing.checks) - passed
        head = (f"**{BLESSED}**: the candidate passed {passed} check(s)"
                f"{f' ({skipped} skipped)' if skipped else ''} and may be pushed.")
    else:
        names = ", ".join(NO_CHECK_RAN if c["kind"] == COVERAGE else f"{c['kind']} {c['metric']}"
                          for c in failed)
        head = f"**{NOT_BLESSED}**: {len(failed)} check(s) failed ({names}); it will not be pushed."
    lines = ["# Gate decision", "", head, ""]
    if blessing.checks:
        lines += ["| kind | metric | threshold | candidate | baseline | verdict | reason |",
                  "|---|---|---|---|---|---|---|"]
        for c in blessing.checks:
            lines.append("| " + " | ".join(_md(c[k]) for k in (
                "kind", "metric", "threshold", "candidate", "baseline", "verdict",
                "reason")) + " |")
        lines.append("")
    if blessing.notes:
        lines += ["## Notes", ""] + [f"- {_md(n)}" for n in blessing.notes] + [""]
    return "\n".join(lines)


def run_gate(evaluation_dir: str, thresholds: str, blessing_dir: str,
             report_path: str) -> Blessing:
    """Reads evaluation.json, decides, writes the marker, blessing.json and the report."""
    parse_thresholds(thresholds)  # a bad config fails before anything is read
    path = storage.join(evaluation_dir, EVALUATION_JSON)
    if not storage.exists(path):
        raise KfpCtError(f"no {EVALUATION_JSON} in {evaluation_dir}: run evaluate first")
    try:
        evaluation = json.loads(storage.read_text(path))
    except json.JSONDecodeError as exc:
        raise KfpCtError(f"{path}: not valid JSON: {exc}") from None
    blessing = decide(evaluation, thresholds)
    if not storage.is_gcs(blessing_dir):
        os.makedirs(blessing_dir, exist_ok=True)
        for stale in (BLESSED, NOT_BLESSED):
            if os.path.exists(os.path.join(blessing_dir, stale)):
                os.remove(os.path.join(blessing_dir, stale))
    storage.write_text(storage.join(blessing_dir, BLESSING_JSON),
                       json.dumps(blessing.to_dict(), indent=2, sort_keys=True) + "\n")
    storage.write_text(storage.join(blessing_dir, blessing.marker), "")
    storage.write_text(report_path, render_markdown(blessing))
    return blessing
