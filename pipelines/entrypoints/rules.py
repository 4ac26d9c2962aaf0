"""The KFP backend's rules, checked before a request leaves (client) or lands (local server).

The real API server (KFP backend 2.x, which pairs with SDK 2.13) refuses these only after
the round trip, often with a terse message. Both the client API and the local endpoint
check them here, so the same input gets the same words everywhere:

* cron: robfig/cron with **six fields, seconds first** (``0 0 3 * * *`` = 03:00 daily),
  or one of its descriptors (``@hourly``, ``@daily``, ``@every 90s``...);
* ``max_concurrency``: 1..10;
* ``interval_second``: a positive whole number of seconds;
* runtime parameters: only those the pipeline declares, each of its declared type, and
  every parameter without a default given.

No ``kfp`` import at module level: the local server's scheduler and the CLI's checks
stay cheap.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any, Iterator, Mapping

from kfp_ct.components.common.errors import KfpCtError

MAX_CONCURRENCY_MIN = 1
MAX_CONCURRENCY_MAX = 10

# robfig/cron descriptors (the KFP backend's parser accepts them).
_DESCRIPTORS = {
    "@yearly": "0 0 0 1 1 *", "@annually": "0 0 0 1 1 *", "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0", "@daily": "0 0 0 * * *", "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_DURATION_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}

# PipelineSpec ParameterType names -> words for messages.
PARAMETER_TYPE_WORDS = {
    "STRING": "a string", "NUMBER_INTEGER": "an integer", "NUMBER_DOUBLE": "a number",
    "BOOLEAN": "a boolean", "LIST": "a JSON list", "STRUCT": "a JSON object",
}


class RuleError(KfpCtError):
    """An input the KFP backend would refuse; the message says the rule and a fix."""


# ------------------------------------------------------------------------ schedules


def _every_seconds(text: str) -> float:
    """Seconds of a Go duration as robfig's ``@every`` takes it (``1h30m``, ``90s``)."""
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNIT_S[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise RuleError(f"cron {'@every ' + text!r}: {text!r} is not a duration "
                        "(e.g. '@every 30s', '@every 1h30m')")
    if total < 1:
        raise RuleError(f"cron '@every {text}': the interval must be at least 1 s")
    return total


def check_cron(expression: str) -> str:
    """Checks a cron expression the way the KFP backend parses it; returns it stripped.

    Args:
        expression: Six fields, seconds first (``"0 0 3 * * *"``), or a descriptor.

    Returns:
        The expression, stripped.

    Raises:
        RuleError: not six fields (a five-field Unix cron gets the six-field form to use)
            or a field the parser refuses.
    """
    text = " ".join(str(expression or "").split())
    if not text:
        raise RuleError("cron: empty expression; KFP cron has six fields, seconds first, "
                        "e.g. '0 0 3 * * *' (03:00 every day)")
    if text.startswith("@"):
        if text.startswith("@every "):
            _every_seconds(text[len("@every "):].strip())
            return text
        if text not in _DESCRIPTORS:
            raise RuleError(f"cron {text!r}: unknown descriptor; use one of "
                            f"{', '.join(sorted(_DESCRIPTORS))} or '@every <duration>'")
        return text
    fields = text.split(" ")
    if len(fields) == 5:
        raise RuleError(f"cron {text!r} has 5 fields; KFP's cron has six, seconds first: "
                        f"use '0 {text}' (the same times, at second 0)")
    if len(fields) != 6:
        raise RuleError(f"cron {text!r} has {len(fields)} fields; KFP's cron has six, "
                        "seconds first: 'SEC MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK', "
                        "e.g. '0 0 3 * * *'")
    from croniter import croniter

    try:
        croniter(text.replace("?", "*"), dt.datetime(2026, 1, 1), second_at_beginning=True)
    except (ValueError, KeyError) as exc:
        raise RuleError(f"cron {text!r}: {exc}") from None
    return text


def next_cron_times(expression: str, after: dt.datetime) -> Iterator[dt.datetime]:
    """The times a checked cron expression fires strictly after ``after`` (UTC, aware)."""
    text = check_cron(expression)
    if text.startswith("@every "):
        step = dt.timedelta(seconds=_every_seconds(text[len("@every "):].strip()))
        when = after
        while True:
            when = when + step
            yield when
    from croniter import croniter

    text = _DESCRIPTORS.get(text, text).replace("?", "*")
    it = croniter(text, after, second_at_beginning=True)
    while True:
        yield it.get_next(dt.datetime)


def check_max_concurrency(value: Any) -> int:
    """``max_concurrency`` as the backend allows it: a whole number in 1..10."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RuleError(f"max_concurrency must be a whole number from {MAX_CONCURRENCY_MIN} "
                        f"to {MAX_CONCURRENCY_MAX}, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise RuleError(f"max_concurrency must be a whole number from {MAX_CONCURRENCY_MIN} "
                        f"to {MAX_CONCURRENCY_MAX}, got {value!r}") from None
    if not MAX_CONCURRENCY_MIN <= number <= MAX_CONCURRENCY_MAX:
        raise RuleError(f"max_concurrency must be from {MAX_CONCURRENCY_MIN} to "
                        f"{MAX_CONCURRENCY_MAX} (the KFP backend's limit), got {number}")
    return number


def check_interval(value: Any) -> int:
    """``interval_second``: a positive whole number of seconds."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RuleError(f"interval must be a whole number of seconds >= 1, got {value!r}")
    return value


def parse_time(value: Any, what: str) -> dt.datetime | None:
    """An RFC 3339 time (``2026-12-01T03:00:00Z``) as an aware datetime; None if empty."""
    if value in (None, ""):
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    try:
        when = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        raise RuleError(f"{what} {value!r} is not an RFC 3339 time, e.g. "
                        "2026-12-01T03:00:00Z") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def check_window(start: Any, end: Any) -> tuple:
    """Start and end times of a schedule; the end after the start."""
    start_t, end_t = parse_time(start, "start time"), parse_time(end, "end time")
    if start_t and end_t and end_t <= start_t:
        raise RuleError(f"end time {end_t.isoformat()} is not after start time "
                        f"{start_t.isoformat()}")
    return start_t, end_t


def check_schedule(cron: str, interval: Any, max_concurrency: Any, start: Any = None,
                   end: Any = None, names: tuple = ("cron", "interval")) -> tuple:
    """A recurring run's trigger as the backend allows it.

    Args:
        cron: A cron expression ("" for none).
        interval: Seconds between runs (None for none).
        max_concurrency: Active runs at once (1..10).
        start, end: RFC 3339 times or datetimes bounding the schedule.
        names: How the caller calls cron and interval, for messages (the CLI's flags).

    Returns:
        ``(cron or "", interval or None, max_concurrency, start, end)``, checked.

    Raises:
        RuleError: not exactly one of cron and interval, or any part refused.
    """
    if bool(cron) == (interval is not None):
        raise RuleError(f"give exactly one of {names[0]} (six fields, e.g. '0 0 3 * * *') "
                        f"or {names[1]} SECONDS")
    checked_cron = check_cron(cron) if cron else ""
    checked_interval = check_interval(interval) if interval is not None else None
    concurrency = check_max_concurrency(max_concurrency)
    start_t, end_t = check_window(start, end)
    return checked_cron, checked_interval, concurrency, start_t, end_t


# ---------------------------------------------------------------------- parameters


def pipeline_spec_of(document: Mapping) -> Mapping:
    """The PipelineSpec dict of a compiled document or of a server's ``pipeline_spec``.

    A version's ``pipeline_spec`` is the spec itself, or ``{"pipeline_spec": ...,
    "platform_spec": ...}`` when the pipeline has platform settings (kfp 2.13).
    """
    if isinstance(document, Mapping) and isinstance(document.get("pipeline_spec"), Mapping):
        return document["pipeline_spec"]
    return document if isinstance(document, Mapping) else {}


def pipeline_inputs(document: Mapping) -> dict:
    """The pipeline's declared runtime parameters.

    Args:
        document: A compiled pipeline (dict) or a version's ``pipeline_spec``.

    Returns:
        ``{name: {"type": "STRING" | ..., "optional": bool, "default": value}}``; the
        default is left out when there is none.
    """
    spec = pipeline_spec_of(document)
    params = (((spec.get("root") or {}).get("inputDefinitions") or {})
              .get("parameters") or {})
    out = {}
    for name, decl in params.items():
        entry = {"type": decl.get("parameterType", "STRING"),
                 "optional": bool(decl.get("isOptional")) or "defaultValue" in decl}
        if "defaultValue" in decl:
            entry["default"] = decl["defaultValue"]
        out[name] = entry
    return out


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "STRING":
        return isinstance(value, str)
    if kind == "NUMBER_INTEGER":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if kind == "NUMBER_DOUBLE":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "BOOLEAN":
        return isinstance(value, bool)
    if kind == "LIST":
        return isinstance(value, list)
    if kind == "STRUCT":
        return isinstance(value, dict)
    return True


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_parameters(document: Mapping, params: Mapping, pipeline: str = "the pipeline"
                     ) -> dict:
    """Checks runtime parameters against the pipeline's declarations.

    Args:
        document: The compiled pipeline (or a version's ``pipeline_spec``).
        params: Parameter values, already typed (JSON values).
        pipeline: How to name the pipeline in messages.

    Returns:
        The parameters, integers given as whole floats turned into ints.

    Raises:
        RuleError: a parameter the pipeline does not declare (with the declared names), a
            value of the wrong type (name, expected type, value), or a required parameter
            left out.
    """
    inputs = pipeline_inputs(document)
    unknown = sorted(set(params) - set(inputs))
    if unknown:
        raise RuleError(f"{pipeline} has no parameter{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(unknown)}; its parameters: "
                        f"{', '.join(sorted(inputs)) or 'none'}")
    out = {}
    for name, value in params.items():
        kind = inputs[name]["type"]
        if not _type_ok(kind, value):
            raise RuleError(f"parameter {name} of {pipeline} must be "
                            f"{PARAMETER_TYPE_WORDS.get(kind, kind)}, got {_shown(value)}")
        out[name] = int(value) if kind == "NUMBER_INTEGER" else value
    missing = sorted(n for n, d in inputs.items() if not d["optional"] and n not in params)
    if missing:
        raise RuleError(f"{pipeline} needs parameter{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(missing)} (no default)")
    return out


def parse_parameter_text(document: Mapping, name: str, text: str,
                         pipeline: str = "the pipeline") -> Any:
    """Reads one ``NAME=VALUE`` value from the command line by the declared type.

    Strings are taken as they are; integers, numbers and booleans from their text; lists
    and objects as JSON.

    Raises:
        RuleError: the parameter is not declared, or the text is not of its type.
    """
    inputs = pipeline_inputs(document)
    if name not in inputs:
        raise RuleError(f"{pipeline} has no parameter {name}; its parameters: "
                        f"{', '.join(sorted(inputs)) or 'none'}")
    kind = inputs[name]["type"]
    words = PARAMETER_TYPE_WORDS.get(kind, kind)
    if kind == "STRING":
        return text
    if kind == "BOOLEAN":
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise RuleError(f"parameter {name} of {pipeline} must be {words} (true/false), "
                        f"got {text!r}")
    try:
        value = json.loads(text)
    except ValueError:
        raise RuleError(f"parameter {name} of {pipeline} must be {words}, got {text!r}"
                        ) from None
    if not _type_ok(kind, value):
        raise RuleError(f"parameter {name} of {pipeline} must be {words}, got {text!r}")
    return int(value) if kind == "NUMBER_INTEGER" else value


# ------------------------------------------------------------------ schedule time
# kfp 2.13's dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER. KFP backend 2.5.0 does not fill
# it (no code under backend/ names it); the local endpoint fills it with the slot's time.
SCHEDULE_TIME_PLACEHOLDER = "{{$.pipeline_job_schedule_time_utc}}"
# Templates a schedule's string parameters may hold, e.g. window_path=data/date={schedule_date}/
# They become the backend's own macros (below), which the local endpoint fills with each run's
# slot. KFP backend 2.5.0 fills them only in v1 (Argo-argument) workflows: a v2 run gets them
# as written (kubeflow/pipelines issue 12494).
SCHEDULE_TEMPLATES = {"{schedule_date}": "{{$.scheduledTime.strftime('%Y-%m-%d')}}",
                      "{schedule_time}": "{{$.scheduledTime.strftime('%Y-%m-%dT%H:%M:%SZ')}}"}
# The macros KFP backend 2.5.0's ScheduledWorkflow controller fills for each slot
# (backend/src/common/util/parameter_formatter.go, applied to the Argo workflow's arguments,
# which a v2 pipeline leaves empty); [[ScheduledTime.<Go layout>]] is not filled here.
_MACRO = re.compile(r"\[\[(ScheduledTime|CurrentTime)\]\]"
                    r"|\{\{\$\.(scheduledTime|currentTime)\.strftime\('(.*?)'\)\}\}")


def schedule_time_text(slot: dt.datetime) -> str:
    """A slot as RFC 3339 UTC with whole seconds (``2026-01-02T03:00:00Z``)."""
    return slot.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def schedule_templates(value: Any) -> Any:
    """A parameter value with ``{schedule_date}`` / ``{schedule_time}`` turned into the
    backend's scheduled-time macros (other values unchanged)."""
    if not isinstance(value, str):
        return value
    for template, macro in SCHEDULE_TEMPLATES.items():
        value = value.replace(template, macro)
    return value


def fill_schedule_macros(value: Any, scheduled: dt.datetime, now: dt.datetime) -> Any:
    """A recurring run's parameter value for one slot, as KFP backend 2.5.0 formats it:
    ``[[ScheduledTime]]`` / ``[[CurrentTime]]`` as ``YYYYMMDDhhmmss`` UTC, and
    ``{{$.scheduledTime.strftime('FMT')}}`` / ``{{$.currentTime.strftime('FMT')}}`` with
    FMT, in UTC. Non-strings are returned unchanged."""
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        which = (match.group(1) or match.group(2)).lower()
        when = (scheduled if which == "scheduledtime" else now).astimezone(dt.timezone.utc)
        return when.strftime(match.group(3) if match.group(3) is not None else "%Y%m%d%H%M%S")

    return _MACRO.sub(one, value)


def fill_schedule_time(document: Any, slot: dt.datetime) -> Any:
    """A copy of a pipeline document with every ``SCHEDULE_TIME_PLACEHOLDER`` in its strings
    replaced by the slot's RFC 3339 UTC time."""
    text = schedule_time_text(slot)
    if isinstance(document, str):
        return document.replace(SCHEDULE_TIME_PLACEHOLDER, text)
    if isinstance(document, list):
        return [fill_schedule_time(item, slot) for item in document]
    if isinstance(document, dict):
        return {key: fill_schedule_time(item, slot) for key, item in document.items()}
    return document
