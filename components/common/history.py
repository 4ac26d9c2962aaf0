"""The monitoring history of a model base: one small record per monitoring run.

``<base>/kfp_ct_monitoring/record-<n>.json`` (``registry.MONITOR_DIR``), numbered from 1,
each written **create-only** as the retraining claims are (locally: hard link of a
finished file, which fails if the name exists; gs://: ``ifGenerationMatch=0``). Two
monitoring runs appending at once never overwrite each other: the one that loses number
n takes the next free one. A record never changes once written.

A record (``FORMAT`` 1) is what a trend needs and no more (no per-cell counts)::

    {"format": 1, "seq": 12, "checked_at": "2026-11-23T03:00:04+00:00",
     "monitor_run": {"run_id": "...", "run_name": "..."},
     "window": {"path": "gs://b/w/date=2026-11-23", "request_log": "", "labels": "",
                "key": "3f0c...", "rows": {"window": 3000, "labels": 150}},
     "production_version": 3, "decision": "DRIFT", "findings": ["DRIFT"],
     "drifted": ["body_mass_g"],
     "features": [{"feature": "body_mass_g", "source": "window", "role": "feature",
                   "measure": "JSD", "distance": 0.031, "no_drift_level": 0.004,
                   "threshold": 0.02, "verdict": "drift"}, ...],
     "performance": {"realized": {"decision": "NO_DROP", "metric": "accuracy",
                                  "value": 0.91, "low": 0.86, "high": 0.95,
                                  "baseline": 0.93, "rows": 150},
                     "estimated": null},
     "launch": {"launched": true, "seq": 4, "run_id": "...", "reason": "",
                "state": "SUCCEEDED", "version": 4, "pushed": true, "blessed": true},
     "notifications": []}

Decision records written before the performance checks (no "findings", "performance",
"window.labels") give ``findings`` ["DRIFT"] or [], ``performance`` with both null.

No kfp, no TensorFlow here.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import re

from kfp_ct.components.common import performance as performance_lib
from kfp_ct.components.common import registry, storage
from kfp_ct.components.common.errors import KfpCtError

FORMAT = 1
RECORD_RE = re.compile(r"record-(\d+)\.json")
#: How many windows a trend shows by default (the drift check's ``read(base, last=...)``).
TREND_WINDOWS = 20
#: Numbers tried by one ``append`` before it gives up (each loss means another run took
#: that number in the meantime).
MAX_TRIES = 64

_FEATURE_KEYS = ("feature", "source", "role", "measure", "distance", "no_drift_level",
                 "threshold", "verdict")
_PERFORMANCE_KEYS = ("decision", "metric", "value", "low", "high", "baseline", "rows")
_LOG = logging.getLogger(__name__)


class HistoryError(KfpCtError):
    """The history could not be appended to (every number tried was taken)."""


class Records(list):
    """The records ``read`` found, in seq order; ``skipped``: one line per record file
    that could not be read or does not parse (name and why), which were left out."""

    def __init__(self, records=(), skipped=()):
        super().__init__(records)
        self.skipped = list(skipped)


def folder(base: str) -> str:
    """Where the history of ``base`` is kept."""
    return storage.join(base, registry.MONITOR_DIR)


def record_path(base: str, seq: int) -> str:
    return storage.join(folder(base), f"record-{int(seq)}.json")


# --------------------------------------------------------------------------- summary


def number(value):
    """A finite float (numpy scalars too), an int kept as int, else None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _performance(entry) -> dict | None:
    if not isinstance(entry, dict):
        return None
    out = {k: entry.get(k) for k in _PERFORMANCE_KEYS}
    for k in ("value", "low", "high", "baseline", "rows"):
        out[k] = number(out[k])
    return out


def _launch(launch) -> dict | None:
    if not isinstance(launch, dict):
        return None
    result = launch.get("result") if isinstance(launch.get("result"), dict) else {}
    return {"launched": bool(launch.get("launched")), "seq": launch.get("seq"),
            "run_id": launch.get("run_id") or result.get("run_id"),
            "reason": launch.get("reason") or "", "state": result.get("state"),
            "version": result.get("version"), "pushed": result.get("pushed"),
            "blessed": result.get("blessed")}


def summary(decision: dict, launch: dict | None = None,
            notifications: list | None = None) -> dict:
    """The history record of one monitoring run: its decision record (``drift.json``),
    what the trigger did (``launch.json``, None when it did not run) and the
    notifications sent (as given). Older decision records, without ``findings``,
    ``performance`` or labels, give empty/null values for them."""
    window = decision.get("window") or {}
    baseline = decision.get("baseline") or {}
    findings = performance_lib.findings_of(decision)
    features = []
    for f in decision.get("features") or []:
        entry = {k: f.get(k) for k in _FEATURE_KEYS}
        for k in ("distance", "no_drift_level", "threshold"):
            entry[k] = number(entry[k])
        features.append(entry)
    performance = decision.get("performance") or {}
    return {
        "format": FORMAT,
        "checked_at": decision.get("checked_at"),
        "monitor_run": {k: (decision.get("monitor_run") or {}).get(k)
                        for k in ("run_id", "run_name")},
        "window": {"path": window.get("path") or "", "request_log": window.get("request_log")
                   or "", "labels": window.get("labels") or "", "key": window.get("key"),
                   "rows": dict(window.get("rows") or {})},
        "production_version": baseline.get("version"),
        "decision": decision.get("decision"),
        "findings": list(findings),
        "drifted": list(decision.get("drifted") or []),
        "features": features,
        "performance": {"realized": _performance(performance.get("realized")),
                        "estimated": _performance(performance.get("estimated"))},
        "launch": _launch(launch),
        "notifications": list(notifications or []),
    }


# ---------------------------------------------------------------------- append, read


def append(base: str, record: dict) -> int:
    """Adds ``record`` to the history of ``base`` as ``record-<n>.json``, n = 1 + the
    highest number there, create-only (``storage.create_numbered``); a number taken in the
    meantime by another run is not overwritten: the next free one is tried (at most
    ``MAX_TRIES``). Returns n, which is also stored in the file and in ``record`` as
    ``"seq"``.

    Raises:
        HistoryError: every number tried was taken.
        StorageError: the history cannot be listed or written.
    """
    n = storage.create_numbered(
        folder(base), RECORD_RE, lambda n: f"record-{n}.json",
        lambda n: (json.dumps({**record, "seq": n}, indent=1, sort_keys=True) + "\n").encode(),
        MAX_TRIES)
    if n is None:
        raise HistoryError(f"{folder(base)}: could not add a monitoring record after "
                           f"{MAX_TRIES} tries: each number tried was taken by another run "
                           "in the meantime")
    record["seq"] = n
    return n


def _load(path: str) -> tuple[dict | None, str]:
    try:
        doc = json.loads(storage.read_text(path))
    except (KfpCtError, ValueError) as exc:
        return None, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    if not isinstance(doc, dict):
        return None, f"a JSON {type(doc).__name__}, not an object"
    return doc, ""


def read(base: str, last: int | None = None) -> Records:
    """The history of ``base``, oldest first (the last ``last`` records when given; [] when
    there is none). A record file that cannot be read or does not parse is left out, never
    raised: the returned list's ``skipped`` names it and why (also logged as a warning),
    so a report drawn from the history is still drawn."""
    records, skipped = [], []
    for n in reversed(storage.numbered(folder(base), RECORD_RE)):
        if last is not None and len(records) >= last:
            break
        path = record_path(base, n)
        doc, why = _load(path)
        if doc is None:
            skipped.append(f"{path}: skipped, unreadable ({why})")
            _LOG.warning("monitoring history: %s", skipped[-1])
            continue
        doc["seq"] = n  # the name is the record's number
        records.append(doc)
    return Records(reversed(records), reversed(skipped))


# ------------------------------------------------------------------------- for people


def when(record: dict) -> str:
    """``checked_at`` as 'YYYY-MM-DD HH:MM' UTC ('-' when missing, the text as is when it
    is not a time)."""
    text = record.get("checked_at")
    if not text:
        return "-"
    try:
        t = datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return str(text)
    if t.tzinfo is not None:
        t = t.astimezone(datetime.timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M")


def fmt(value) -> str:
    value = number(value)
    return "-" if value is None else f"{value:.4g}"


def performance(record: dict, which: str) -> dict | None:
    """The record's "realized" or "estimated" entry (None when absent or malformed)."""
    found = record.get("performance")
    entry = found.get(which) if isinstance(found, dict) else None
    return entry if isinstance(entry, dict) else None


def metric_text(entry: dict | None) -> str:
    """A realized/estimated metric for a table: '0.912 [0.88, 0.94]', '- (insufficient
    labels)', '-' when not measured; ' drop' added when it dropped."""
    if not isinstance(entry, dict) or not entry:
        return "-"
    decision = str(entry.get("decision") or "")
    if number(entry.get("value")) is None:
        return "-" if decision in ("", "NOT_ESTIMATED") else \
            f"- ({decision.lower().replace('_', ' ')})"
    text = fmt(entry["value"])
    if number(entry.get("low")) is not None and number(entry.get("high")) is not None:
        text += f" [{fmt(entry['low'])}, {fmt(entry['high'])}]"
    if decision.endswith("DROP") and decision != "NO_DROP":
        text += " drop"
    return text


def launch_text(launch: dict | None) -> str:
    """'launch 4 (SUCCEEDED, pushed v5)', 'no', '-' (the trigger did not run)."""
    if not isinstance(launch, dict) or not launch:
        return "-"
    if not launch.get("launched"):
        return "no"
    bits = [b for b in (launch.get("state"),
                        f"pushed v{launch['version']}" if launch.get("version") is not None
                        and launch.get("pushed") is not False else "") if b]
    return f"launch {launch.get('seq') or '?'}" + (f" ({', '.join(bits)})" if bits else "")


def rows_text(record: dict) -> str:
    window = record.get("window") if isinstance(record.get("window"), dict) else {}
    rows = window.get("rows") if isinstance(window.get("rows"), dict) else {}
    if len(rows) == 1 and "window" in rows:
        return str(rows["window"])
    order = {"window": 0, "requests": 1, "labels": 2}  # the file keeps them sorted by name
    return ",".join(f"{k}={rows[k]}" for k in sorted(rows, key=lambda k: (order.get(k, 3), k))
                    ) or "-"
