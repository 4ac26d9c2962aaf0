"""Gate: bless or reject the candidate from evaluation.json, with a reason per check.

Thresholds (JSON text or a dict)::

    {"value":  {"accuracy": {"min": 0.9}, "loss": {"max": 0.5}},
     "change": {"accuracy": {"higher_is_better": true, "absolute": -0.01, "relative": -0.02}}}

``value`` bounds the candidate's overall metric (inclusive). ``change`` compares the
candidate with the production baseline measured on the same rows: with
``higher_is_better`` the improvement is ``candidate - baseline``, otherwise
``baseline - candidate``; it must be ``>= absolute`` and ``improvement / |baseline| >=
relative`` (a negative bound allows a small step back, 0 means "not worse"). Ties pass.

With no production model yet (first push) change checks are skipped, with a note. A
production model that exists but cannot be evaluated ("unusable") rejects the candidate:
replacing a model we could not measure is not a decision the gate can justify.

Pure Python: no kfp, no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

from components.common import metrics, report, storage
from components.common.errors import KfpCtError

BLESSED = "BLESSED"
NOT_BLESSED = "NOT_BLESSED"
BLESSING_JSON = "blessing.json"
EVALUATION_JSON = "evaluation.json"

PASS = "pass"
FAIL = "fail"
SKIPPED = "skipped"

_VALUE_KEYS = {"min", "max"}
_CHANGE_KEYS = {"higher_is_better", "absolute", "relative"}


class GateConfigError(KfpCtError):
    """The threshold configuration is malformed."""


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


# ------------------------------------------------------------------------- config


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GateConfigError(f"thresholds: {where} must be a finite number, got {value!r}")
    return float(value)


def _direction(metric: str, bounds: dict, where: str) -> bool:
    """A change threshold's direction: the metric's own, or the one given for a metric
    with none; one that contradicts the metric's is refused (it would bless a worse
    model as an improvement)."""
    known = metrics.HIGHER_IS_BETTER.get(metric)
    given = bounds.get("higher_is_better")
    if given is not None and not isinstance(given, bool):
        raise GateConfigError(
            f"thresholds: {where}.higher_is_better must be true or false, got {given!r}")
    if known is None:
        if given is None:
            raise GateConfigError(
                f"thresholds: {where}: {metric!r} has no known direction; set "
                f"higher_is_better (known: {metrics.known_directions()})")
        return given
    if given is not None and given != known:
        raise GateConfigError(
            f"thresholds: {where}.higher_is_better is {str(given).lower()}, but for {metric} "
            f"{metrics.direction_words(metric)}: a worse model would pass as an improvement; "
            f"drop higher_is_better (the direction is known) or set it "
            f"{str(known).lower()}")
    return known


def parse_thresholds(thresholds: str | dict | None, task: str | None = None) -> dict:
    """Checks the threshold config; returns {"value": {...}, "change": {...}}.

    Args:
        thresholds: JSON text or a dict (empty: no thresholds).
        task: ``classification`` / ``regression`` when known: every metric named must be
            one evaluate emits for that task.

    Raises:
        GateConfigError: malformed, a change threshold whose direction contradicts the
            metric's (or a metric with no known direction and none given), or a metric
            the task's evaluation does not have.
    """
    if thresholds is None or (isinstance(thresholds, str) and not thresholds.strip()):
        data: Any = {}
    elif isinstance(thresholds, str):
        try:
            data = json.loads(thresholds)
        except json.JSONDecodeError as exc:
            raise GateConfigError(f"thresholds: not valid JSON: {exc}") from None
    else:
        data = thresholds
    if not isinstance(data, dict):
        raise GateConfigError(f"thresholds: expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - {"value", "change"})
    if unknown:
        raise GateConfigError(
            f"thresholds: unknown section(s) {unknown}; allowed: 'value', 'change'")
    out: dict = {"value": {}, "change": {}}
    for section, allowed in (("value", _VALUE_KEYS), ("change", _CHANGE_KEYS)):
        entries = data.get(section) or {}
        if not isinstance(entries, dict):
            raise GateConfigError(
                f"thresholds: {section!r} must be an object keyed by metric name, "
                f"got {type(entries).__name__}")
        for metric, bounds in entries.items():
            where = f"{section}.{metric}"
            emitted = metrics.TASK_METRICS.get(task or "")
            if emitted is not None and metric not in emitted:
                raise GateConfigError(
                    f"thresholds: {where}: a {task} evaluation has no {metric!r}; its "
                    f"metrics: {', '.join(emitted)}")
            if not isinstance(bounds, dict):
                raise GateConfigError(f"thresholds: {where} must be an object, got {bounds!r}")
            bad = sorted(set(bounds) - allowed)
            if bad:
                raise GateConfigError(
                    f"thresholds: {where} has unknown key(s) {bad}; allowed: {sorted(allowed)}")
            if section == "value":
                if not bounds:
                    raise GateConfigError(f"thresholds: {where} needs 'min' and/or 'max'")
                parsed = {k: _number(v, f"{where}.{k}") for k, v in bounds.items()}
                if "min" in parsed and "max" in parsed and parsed["min"] > parsed["max"]:
                    raise GateConfigError(
                        f"thresholds: {where}: min {parsed['min']} is above max {parsed['max']}")
            else:
                if "absolute" not in bounds and "relative" not in bounds:
                    raise GateConfigError(
                        f"thresholds: {where} needs 'absolute' and/or 'relative'")
                parsed = {"higher_is_better": _direction(metric, bounds, where)}
                for k in ("absolute", "relative"):
                    if k in bounds:
                        parsed[k] = _number(bounds[k], f"{where}.{k}")
            out[section][metric] = parsed
    return out


# ----------------------------------------------------------------------- decision


def _fmt(value) -> str:
    return report.fmt(value, ".6g")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(kind, metric, threshold, candidate, baseline, verdict, reason) -> dict:
    return {"kind": kind, "metric": metric, "threshold": threshold, "candidate": candidate,
            "baseline": baseline, "verdict": verdict, "reason": reason}


def _value_check(metric: str, bounds: dict, overall: dict) -> dict:
    text = " and ".join(f"{'>=' if k == 'min' else '<='} {_fmt(v)}"
                        for k, v in sorted(bounds.items(), key=lambda kv: kv[0] != "min"))
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
    if problems:
        return _check("value", metric, text, value, None, FAIL, "; ".join(problems))
    return _check("value", metric, text, value, None, PASS, f"{_fmt(value)} is within {text}")


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

    for metric, bounds in config["value"].items():
        checks.append(_value_check(metric, bounds, overall))

    if state == "unusable":
        detail = baseline.get("detail") or "no detail recorded"
        checks.append(_check(
            "baseline", "-", "production model must be usable", None, None, FAIL,
            f"the production model cannot be evaluated, so the candidate cannot be compared "
            f"with it: {detail}"))
        notes.append(f"production model unusable: {detail}")
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

    if not checks:
        notes.append("no thresholds configured: blessed without checks")
    blessed = all(c["verdict"] != FAIL for c in checks)
    return Blessing(blessed=blessed, checks=checks, notes=notes)


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
        names = ", ".join(f"{c['kind']} {c['metric']}" for c in failed)
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
    config = parse_thresholds(thresholds)  # a bad config fails before anything is read
    path = storage.join(evaluation_dir, EVALUATION_JSON)
    if not storage.exists(path):
        raise KfpCtError(f"no {EVALUATION_JSON} in {evaluation_dir}: run evaluate first")
    try:
        evaluation = json.loads(storage.read_text(path))
    except json.JSONDecodeError as exc:
        raise KfpCtError(f"{path}: not valid JSON: {exc}") from None
    blessing = decide(evaluation, config)
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
