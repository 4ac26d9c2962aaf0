"""The gate's threshold configuration: its format, its checks and each task's defaults.

Read by the gate (components/gate/logic.py), which decides with it, and checked before
any heavy work: by ``kfp-ct run-local`` before the run starts and by the first task on a
cluster (components/validate/preflight.py). The format is described in the gate's module
docstring.

Pure Python: no kfp, no TensorFlow.
"""

from __future__ import annotations

import json
import math
from typing import Any

from kfp_ct.components.common import metrics
from kfp_ct.components.common.errors import KfpCtError

_VALUE_KEYS = {"min", "max", "better_than_naive"}
_CHANGE_KEYS = {"higher_is_better", "absolute", "relative"}
_SECTIONS = ("value", "change", "min_examples", "no_skill_floor")
#: How to turn the no-skill floor off: the one setting, quoted in messages and docs.
FLOOR_OFF = '"no_skill_floor": false'

#: What empty thresholds mean for each task: a floor that fits any data (beat the no-skill
#: predictor), a small step back from production at most, and enough rows to decide on.
#: The floor (``better_than_naive`` on the task's ``metrics.MAIN_METRIC``) is also added to
#: any thresholds that lack it, unless they say ``"no_skill_floor": false``.
TASK_DEFAULTS: dict[str, dict] = {
    "classification": {
        "value": {metrics.ACCURACY: {"better_than_naive": True}},
        "change": {metrics.ACCURACY: {"absolute": -0.02}},
        "min_examples": 50,
    },
    "regression": {
        "value": {metrics.RMSE: {"better_than_naive": True}},
        "change": {metrics.RMSE: {"relative": -0.05}},
        "min_examples": 50,
    },
}


class GateConfigError(KfpCtError):
    """The threshold configuration is malformed."""


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


def _span(metric: str) -> str:
    low, high = metrics.RANGES[metric]
    return f"[{low:g}, {high:g}]" if math.isfinite(high) else f"[{low:g}, inf)"


def _check_value_reachable(metric: str, bounds: dict, where: str) -> None:
    """A value bound outside the metric's range can never be met (accuracy min 1.5,
    rmse max -1) or can never fail (accuracy min -0.1): either way it checks nothing."""
    if metric not in metrics.RANGES:
        return
    low, high = metrics.RANGES[metric]
    for key, value in bounds.items():
        if key not in ("min", "max"):
            continue
        if (key == "min" and value > high) or (key == "max" and value < low):
            raise GateConfigError(f"thresholds: {where}.{key} {value:g} can never be met: "
                                  f"{metric} lies in {_span(metric)}")
        if (key == "min" and value < low) or (key == "max" and value > high):
            raise GateConfigError(f"thresholds: {where}.{key} {value:g} can never fail: "
                                  f"{metric} lies in {_span(metric)}, so it would check "
                                  f"nothing")


def _check_change_reachable(metric: str, bounds: dict, where: str) -> None:
    """A change bound no two values of the metric can meet (accuracy absolute 1.5; an
    error falling by more than 100%) or fail (accuracy absolute -1.5) is refused."""
    if metric not in metrics.RANGES:
        return
    low, high = metrics.RANGES[metric]
    width, span = high - low, _span(metric)
    absolute = bounds.get("absolute")
    if absolute is not None and math.isfinite(width) and abs(absolute) > width:
        verdict = "be met" if absolute > 0 else "fail"
        raise GateConfigError(
            f"thresholds: {where}.absolute {absolute:g} can never {verdict}: {metric} lies "
            f"in {span}, so it can change by at most {width:g}")
    relative = bounds.get("relative")
    if relative is None or low != 0:
        return
    if bounds["higher_is_better"] and relative < -1:  # (candidate - baseline) / baseline
        raise GateConfigError(
            f"thresholds: {where}.relative {relative:g} can never fail: {metric} lies in "
            f"{span}, so it can fall by at most 100% of the baseline (relative -1)")
    if not bounds["higher_is_better"] and relative > 1:  # (baseline - candidate) / baseline
        raise GateConfigError(
            f"thresholds: {where}.relative {relative:g} can never be met: {metric} lies in "
            f"{span}, so it can improve by at most 100% of the baseline (relative 1: "
            f"a perfect 0)")


def _add_floor(out: dict, task: str | None) -> dict:
    """The no-skill floor on the task's main metric, merged into the value checks unless
    the thresholds turn it off; ``floor_added`` names the metric when it was added."""
    out["floor_added"] = None
    if out["no_skill_floor"] and task in metrics.MAIN_METRIC:
        metric = metrics.MAIN_METRIC[task]
        entry = out["value"].setdefault(metric, {})
        if not entry.get("better_than_naive"):
            entry["better_than_naive"] = True
            out["floor_added"] = metric
    return out


def parse_thresholds(thresholds: str | dict | None, task: str | None = None) -> dict:
    """Checks the threshold config; returns {"value": {...}, "change": {...}, ...}.

    The no-skill floor (``better_than_naive`` on the task's main metric) is merged into
    the value checks when the task is known, unless ``"no_skill_floor": false``.

    Args:
        thresholds: JSON text or a dict (empty: the task's defaults).
        task: ``classification`` / ``regression`` when known: every metric named must be
            one evaluate emits for that task.

    Raises:
        GateConfigError: malformed, a bound no value of the metric can meet or fail
            (``metrics.RANGES``), a change threshold whose direction contradicts the
            metric's (or a metric with no known direction and none given), or a metric
            the task's evaluation does not have.
    """
    if thresholds is None or (isinstance(thresholds, str) and not thresholds.strip()):
        if task not in TASK_DEFAULTS:  # known once the evaluation says the task
            return {"value": {}, "change": {}, "min_examples": None, "defaults": True,
                    "no_skill_floor": True, "floor_added": None}
        out = parse_thresholds(TASK_DEFAULTS[task], task)
        out["defaults"] = True
        return out
    if isinstance(thresholds, str):
        try:
            data = json.loads(thresholds)
        except json.JSONDecodeError as exc:
            raise GateConfigError(f"thresholds: not valid JSON: {exc}") from None
    else:
        data = thresholds
    if not isinstance(data, dict):
        raise GateConfigError(f"thresholds: expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise GateConfigError(
            f"thresholds: unknown section(s) {unknown}; allowed: "
            f"{', '.join(repr(k) for k in _SECTIONS)}")
    floor = data.get("no_skill_floor", True)
    if not isinstance(floor, bool):
        raise GateConfigError(
            f"thresholds: no_skill_floor must be true or false, got {floor!r}")
    out: dict = {"value": {}, "change": {}, "min_examples": None, "defaults": False,
                 "no_skill_floor": floor}
    if data.get("min_examples") is not None:
        count = data["min_examples"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise GateConfigError(
                f"thresholds: min_examples must be a whole number of eval rows >= 1, "
                f"got {count!r}")
        out["min_examples"] = count
    for section, allowed in (("value", _VALUE_KEYS), ("change", _CHANGE_KEYS)):
        entries = data.get(section)
        entries = {} if entries is None else entries
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
                    raise GateConfigError(
                        f"thresholds: {where} needs 'min', 'max' and/or 'better_than_naive'")
                parsed = {k: _number(v, f"{where}.{k}") for k, v in bounds.items()
                          if k != "better_than_naive"}
                if "better_than_naive" in bounds:
                    naive = bounds["better_than_naive"]
                    if not isinstance(naive, bool):
                        raise GateConfigError(
                            f"thresholds: {where}.better_than_naive must be true or false, "
                            f"got {naive!r}")
                    allowed_naive = sorted({m for ms in metrics.NAIVE_METRICS.values()
                                            for m in ms} if task is None
                                           else metrics.NAIVE_METRICS.get(task, ()))
                    if not naive:
                        raise GateConfigError(
                            f"thresholds: {where}.better_than_naive: false turns nothing "
                            f"off; to turn the no-skill floor off, set {FLOOR_OFF} at the "
                            f"top level")
                    if not floor:
                        raise GateConfigError(
                            f"thresholds: no_skill_floor is false, but {where}."
                            f"better_than_naive asks for the no-skill check: drop one")
                    if metric not in allowed_naive:
                        raise GateConfigError(
                            f"thresholds: {where}.better_than_naive: the no-skill predictor "
                            f"is measured on {', '.join(allowed_naive) or 'no metric'}"
                            + (f" for {task}" if task else "") + f", not {metric!r}")
                    parsed["better_than_naive"] = True
                if "min" in parsed and "max" in parsed and parsed["min"] > parsed["max"]:
                    raise GateConfigError(
                        f"thresholds: {where}: min {parsed['min']} is above max {parsed['max']}")
                _check_value_reachable(metric, parsed, where)
            else:
                if "absolute" not in bounds and "relative" not in bounds:
                    raise GateConfigError(
                        f"thresholds: {where} needs 'absolute' and/or 'relative'")
                parsed = {"higher_is_better": _direction(metric, bounds, where)}
                for k in ("absolute", "relative"):
                    if k in bounds:
                        parsed[k] = _number(bounds[k], f"{where}.{k}")
                _check_change_reachable(metric, parsed, where)
            out[section][metric] = parsed
    return _add_floor(out, task)
