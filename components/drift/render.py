"""The drift report: HTML the Kubeflow UI renders, and its Markdown twin.

Decision and reasons first, then anomalies, and a row per
tested feature: distance, threshold, no-drift level at this window size, verdict, and an
inline SVG of the training vs window shares per cell (no external assets). Given the
model base's monitoring history (components/common/history.py), a trend section: per
feature, its distance against its no-drift level and threshold over the last windows; the
realized and estimated performance with their intervals against the version's baseline,
with the production version changes marked.
"""

from __future__ import annotations

import math

from kfp_ct.components.common import history as history_lib
from kfp_ct.components.common import report

_TRAIN, _WINDOW = report.REFERENCE_COLOR, report.CHECKED_COLOR
_VERDICT_CLASS = {"drift": "bad", "all missing": "bad", "missing column": "bad",
                  "type change": "bad", "no drift": "ok"}


def _num(x, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def svg(cells: list[dict], width: int = 260, height: int = 70) -> str:
    """Paired bars per cell: training share (blue) beside window share (orange)."""
    if not cells:
        return ""
    train_total = sum(c["train"] for c in cells) or 1.0
    window_total = sum(c["window"] for c in cells) or 1.0
    shares = [(c["label"], c["train"] / train_total, c["window"] / window_total) for c in cells]
    top = max(max(t, w) for _, t, w in shares) or 1.0
    slot = width / len(shares)
    bar = max(slot / 2 - 1, 1.0)
    parts = []
    for i, (label, t, w) in enumerate(shares):
        x = i * slot
        for j, (share, color, who) in enumerate(((t, _TRAIN, "training"), (w, _WINDOW, "window"))):
            h = height * share / top
            parts.append(report.svg_rect(x + j * bar, height - h, bar, h, color,
                                         f"{label}: {who} {100 * share:.1f}%"))
    parts.append(report.svg_line(0, height, width, height))
    return report.svg(width, height + 2, "".join(parts), "training vs window distribution")


def _feature_rows(record: dict, with_svg: bool) -> list[list]:
    rows = []
    multi = len(record["window"]["rows"]) > 1
    order = {"drift": 0, "all missing": 0, "missing column": 0, "type change": 0,
             "within sampling noise": 1, "no drift": 2, "insufficient data": 3}
    for r in sorted(record["features"], key=lambda r: (order.get(r["verdict"], 4), r["feature"])):
        name = r["feature"] + ("" if r["role"] != "label" else " (label)")
        if multi:
            name += f" [{r['source']}]"
        verdict = r["verdict"]
        cls = _VERDICT_CLASS.get(verdict, "")
        cells = [report.esc(name), report.esc(r.get("measure") or "-"),
                 _num(r.get("distance")), _num(r.get("threshold")), _num(r.get("no_drift_level")),
                 str(r.get("rows", 0)),
                 f"<span class='{cls}'>{report.esc(verdict)}</span>" if cls else report.esc(verdict)]
        if with_svg:
            cells.append(svg(r.get("cells") or []))
        rows.append(cells)
    return rows


def html(record: dict, history: list | None = None) -> str:
    """The report; with ``history`` (``history.read(base, last=N)``, this window not in
    it yet) a trend section too, this window drawn last."""
    decision = record["decision"]
    findings = record.get("findings") or []
    cls = "bad" if decision == "DRIFT" or findings else "ok" if decision == "NO_DRIFT" else ""
    shown = decision + (f"; findings: {', '.join(findings)}" if findings else "")
    if record.get("launch_reasons") is not None:
        shown += f"; retrains on: {', '.join(record['launch_reasons']) or 'nothing found'}"
    head = (f"<p class='{cls}'>Decision: {report.esc(shown)}</p><ul>"
            + "".join(f"<li>{report.esc(r)}</li>" for r in record["reasons"]) + "</ul>")
    base = record["baseline"]
    window = record["window"]
    context = (f"<p>Window: {report.esc(window.get('path') or '-')}"
               + (f"; request log: {report.esc(window['request_log'])}"
                  if window.get("request_log") else "")
               + f" ({', '.join(f'{k} {v} rows' for k, v in window['rows'].items())}). "
               f"Baseline: production version {base['version']} at "
               f"{report.esc(base['model_base'])}, trained on {base['rows']} rows. "
               f"False-alarm rate {record['settings']['false_alarm_rate']:g} per window, "
               f"split over {record['tests']} tests.</p>")
    anomalies = ""
    if record["anomalies"]:
        anomalies = "<h3>Schema anomalies</h3>" + report.table(
            ["feature", "kind", "detail"],
            [[a["feature"], a["kind"], a["detail"]] for a in record["anomalies"]])
    legend = (f"<p>Bars: <span style='color:{_TRAIN}'>&#9632; training</span> "
              f"<span style='color:{_WINDOW}'>&#9632; window</span>, share per cell "
              "(missing, below the training min, each training bucket or value, above the "
              "max, then window values outside the training cells).</p>")
    features = "<h3>Features</h3>" + legend + report.table(
        ["feature", "measure", "distance", "threshold", "no-drift level", "rows", "verdict",
         "training vs window"], _feature_rows(record, True), raw=True)
    notes = "".join(f"<p>Note: {report.esc(n)}</p>" for n in record.get("notes", []))
    trend = trend_html(history, record) if history is not None else ""
    perf = _performance_rows(record)
    performance = ""
    if perf:
        performance = "<h3>Model performance</h3>" + report.table(
            _PERF_HEADERS, [[report.esc(c) for c in row] for row in perf], raw=True) + "".join(
            f"<p>{report.esc(line)}</p>" for line in _performance_lines(record))
    return report.page("Drift check", head, context, anomalies, performance, features, trend,
                       notes)


_PERF_HEADERS = ["check", "decision", "metric", "value", "interval", "at push", "rows"]


def _performance_rows(record: dict) -> list[list[str]]:
    """One row per performance check of the window (realized, estimated, and the estimate
    on the labelled rows beside what their labels say)."""
    perf = record.get("performance") or {}
    rows = []

    def interval(p):
        return "-" if p.get("low") is None else f"[{p['low']:.4f}, {p['high']:.4f}]"

    for part, name in (("realized", "realized (labels)"), ("estimated", "estimated (CBPE)")):
        p = perf.get(part)
        if not p:
            continue
        rows.append([name, p.get("decision", ""), p.get("metric", ""), _num(p.get("value")),
                     interval(p), _num(p.get("baseline")), str(p.get("rows", 0))])
        if part == "realized" and (p.get("estimated") or {}).get("value") is not None:
            e = p["estimated"]
            rows.append(["estimated on the labelled rows", "-", p.get("metric", ""),
                         _num(e["value"]), interval(e), _num(p.get("baseline")),
                         str(p.get("rows", 0))])
        if part == "realized" and (p.get("estimated_before") or {}).get("value") is not None:
            e = p["estimated_before"]
            rows.append([f"estimated before the labels ({e.get('checked_at')}, record "
                         f"{e.get('seq')})", "-", p.get("metric", ""), _num(e["value"]),
                         interval(e), _num(p.get("baseline")), "-"])
    return rows


def _performance_lines(record: dict) -> list[str]:
    perf = record.get("performance") or {}
    out = []
    for part in ("realized", "estimated"):
        p = perf.get(part) or {}
        if p.get("reason"):
            out.append(f"{part.capitalize()}: {p['reason']}")
        if part == "realized" and p.get("companions"):
            out.append("Also on the labelled rows: " + ", ".join(
                f"{k} {_num(v) if isinstance(v, float) else v}"
                for k, v in sorted(p["companions"].items())))
        if part == "estimated" and p.get("assumes") and p.get("value") is not None:
            out.append(f"The estimate assumes that {p['assumes']}.")
    return out


def markdown(record: dict, history: list | None = None) -> str:
    findings = record.get("findings") or []
    lines = [f"# Drift check: {record['decision']}"
             + (f" (findings: {', '.join(findings)})" if findings else ""), ""]
    lines += [f"- {r}" for r in record["reasons"]]
    base, window = record["baseline"], record["window"]
    lines += ["", f"Window `{window.get('path') or '-'}`"
              + (f", request log `{window['request_log']}`" if window.get("request_log") else "")
              + f" ({', '.join(f'{k} {v} rows' for k, v in window['rows'].items())}); "
              f"baseline: production version {base['version']} ({base['rows']} training rows).",
              ""]
    if record["anomalies"]:
        lines += ["## Schema anomalies", "", "| feature | kind | detail |", "|---|---|---|"]
        lines += [f"| {a['feature']} | {a['kind']} | {a['detail']} |" for a in record["anomalies"]]
        lines.append("")
    lines += ["## Features", "",
              "| feature | measure | distance | threshold | no-drift level | rows | verdict |",
              "|---|---|---|---|---|---|---|"]
    for row in _feature_rows(record, False):
        plain = [c.replace("<span class='bad'>", "**").replace("<span class='ok'>", "")
                 .replace("</span>", "**" if "class='bad'" in c else "") for c in row]
        lines.append("| " + " | ".join(plain) + " |")
    perf = _performance_rows(record)
    if perf:
        lines += ["", "## Model performance", "", "| " + " | ".join(_PERF_HEADERS) + " |",
                  "|" + "---|" * len(_PERF_HEADERS)]
        lines += ["| " + " | ".join(row) + " |" for row in perf]
        lines += [""] + _performance_lines(record)
    if history is not None:
        lines += [""] + trend_markdown(history, record)
    lines += [""] + [f"Note: {n}" for n in record.get("notes", [])]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- trend

#: Colours of the trend pictures: the distance (orange) is what is checked, the no-drift
#: level and the version's baseline (blue) what it is held against; a drifted window or
#: a drop is the report's red; the estimated metric purple.
DISTANCE_COLOR, LEVEL_COLOR = report.CHECKED_COLOR, report.REFERENCE_COLOR
REALIZED_COLOR, BASELINE_COLOR = report.CHECKED_COLOR, report.REFERENCE_COLOR
ESTIMATED_COLOR = "#8e5bbf"
ALARM_COLOR, OK_COLOR, NEUTRAL_COLOR = "#b00020", "#2e7d32", "#9e9e9e"
THRESHOLD_COLOR, VERSION_COLOR, CURRENT_COLOR = "#9e9e9e", "#555555", "#eeeeee"
TREND_FEATURES = 12  # feature pictures at most: drifted ones first
TREND_MAX = 60  # windows drawn at most (the newest)
_DRIFTED = {"drift", "all missing", "missing column", "type change"}
_ORDER = {"drift": 0, "all missing": 0, "missing column": 0, "type change": 0,
          "within sampling noise": 1, "no drift": 2, "insufficient data": 3}


def _same_run(a: dict, b: dict) -> bool:
    return (a.get("checked_at"), (a.get("window") or {}).get("key")) == \
        (b.get("checked_at"), (b.get("window") or {}).get("key"))


def trend_points(history: list | None, current: dict | None = None) -> list[dict]:
    """The windows a trend draws, oldest first: the history records, then ``current`` (a
    decision record, or a history record) marked ``this_window``; the newest TREND_MAX."""
    points = [_clean(r) for r in (history or []) if isinstance(r, dict)]
    if current is not None:
        now = _clean(current if "format" in current else history_lib.summary(current))
        points = [p for p in points if not _same_run(p, now)]  # already recorded: once
        now["this_window"] = True
        points.append(now)
    return points[-TREND_MAX:]


def _clean(record: dict) -> dict:
    """A history record whose numbers are numbers or None (a record is read from a file
    anyone may have edited: the pictures never fail on it)."""
    out = dict(record)
    features = out.get("features") if isinstance(out.get("features"), list) else []
    out["features"] = [{**f, **{k: history_lib.number(f.get(k))
                                for k in ("distance", "no_drift_level", "threshold")}}
                       for f in features if isinstance(f, dict)]
    performance = out.get("performance") if isinstance(out.get("performance"), dict) else {}
    out["performance"] = {
        which: ({**e, **{k: history_lib.number(e.get(k))
                         for k in ("value", "low", "high", "baseline", "rows")}}
                if isinstance(e, dict) else None)
        for which, e in ((w, performance.get(w)) for w in ("realized", "estimated"))}
    for key in ("window", "launch"):
        if not isinstance(out.get(key), dict):
            out[key] = {} if key == "window" else None
    if not isinstance(out.get("findings"), list):
        out["findings"] = []
    return out


def _label(point: dict) -> str:
    if point.get("this_window"):
        return f"this window ({history_lib.when(point)})"
    seq = point.get("seq")
    return f"#{seq} ({history_lib.when(point)})" if seq is not None else history_lib.when(point)


def _short(point: dict) -> str:
    """The x-axis label of a window: its day, 'now' for this one."""
    if point.get("this_window"):
        return "now"
    text = history_lib.when(point)
    return text[5:10] if len(text) >= 10 and text[4] == "-" else text[:6]


def _title(text) -> str:
    return f"<title>{report.svg_esc(text)}</title>"


def _mark_line(x1, y1, x2, y2, stroke, title, width: float = 1, dash: str = "") -> str:
    dashed = f" stroke-dasharray='{dash}'" if dash else ""
    return (f"<line x1='{report.coord(x1)}' y1='{report.coord(y1)}' x2='{report.coord(x2)}' "
            f"y2='{report.coord(y2)}' stroke='{stroke}' stroke-width='{width:g}'{dashed}>"
            f"{_title(title)}</line>")


def _dot(x, y, r, fill, title, css: str = "") -> str:
    cls = f" class='{css}'" if css else ""
    return (f"<circle{cls} cx='{report.coord(x)}' cy='{report.coord(y)}' r='{r:g}' "
            f"fill='{fill}'>{_title(title)}</circle>")


def _polylines(xy: list, stroke: str, title: str, width: float = 2) -> str:
    """Lines through consecutive points (None breaks the line)."""
    out, run = [], []
    for p in list(xy) + [None]:
        if p is not None:
            run.append(p)
            continue
        if len(run) > 1:
            pts = " ".join(f"{report.coord(x)},{report.coord(y)}" for x, y in run)
            out.append(f"<polyline points='{pts}' fill='none' stroke='{stroke}' "
                       f"stroke-width='{width:g}'>{_title(title)}</polyline>")
        run = []
    return "".join(out)


def _version_marks(points: list[dict], x_edge, top: float, bottom: float) -> str:
    """A dashed line where the production version changed, labelled with the new one."""
    parts = []
    for i in range(1, len(points)):
        old, new = points[i - 1].get("production_version"), points[i].get("production_version")
        if new is None or old == new:
            continue
        x = x_edge(i)
        parts.append(_mark_line(x, top, x, bottom, VERSION_COLOR,
                                f"production version {old} -> {new} from window "
                                f"{_label(points[i])}", 1, "4,3"))
        parts.append(report.svg_text(x + 2, top + 8, f"v{new}", 9, fill=VERSION_COLOR))
    return "".join(parts)


def _feature_key(entry: dict) -> tuple:
    return entry.get("feature"), entry.get("source") or "window"


def trend_features(points: list[dict], limit: int = TREND_FEATURES) -> list[tuple]:
    """(feature, source) pairs to draw: those the newest window tested, drifted first."""
    if not points:
        return []
    newest = points[-1].get("features") or []
    ranked = sorted(newest, key=lambda f: (_ORDER.get(f.get("verdict"), 4),
                                           str(f.get("feature")), str(f.get("source"))))
    keys = []
    for f in ranked:
        key = _feature_key(f)
        if key not in keys and (f.get("distance") is not None or f.get("verdict") in _DRIFTED):
            keys.append(key)
    return keys[:limit]


def feature_trend_svg(points: list[dict], key: tuple, width: int = 300,
                      height: int = 110) -> str:
    """One feature over the windows: its distance (orange line, a red dot where it
    drifted) against its no-drift level at each window's size (blue step) and its
    threshold (dashed grey); production version changes as dashed dark lines."""
    name, source = key
    left, right, top, bottom = 40, 6, 16, 16
    pw, ph = width - left - right, height - top - bottom
    n = len(points)
    slot = pw / max(n, 1)
    entries = []
    for p in points:
        found = [f for f in p.get("features") or [] if _feature_key(f) == key]
        entries.append(found[0] if found else None)
    values = [e[k] for e in entries if e for k in ("distance", "no_drift_level", "threshold")
              if isinstance(e.get(k), (int, float))]
    peak = max(values, default=0.0) * 1.15 or 1.0

    def x(i):
        return left + (i + 0.5) * slot

    def y(v):
        return top + ph * (1 - min(max(v, 0.0), peak) / peak)

    parts = _frame(points, left, top, pw, ph, slot)
    parts.append(report.svg_text(left - 3, top + 4, f"{peak:.3g}", 9, "end"))
    parts.append(report.svg_text(left - 3, top + ph, "0", 9, "end"))
    parts.append(_version_marks(points, lambda i: left + i * slot, top, top + ph))
    measure = next((e.get("measure") for e in entries if e and e.get("measure")), "distance")
    for i, e in enumerate(entries):  # threshold: dashed, per window (it may be changed)
        if e and e.get("threshold") is not None:
            yy = y(e["threshold"])
            parts.append(_mark_line(left + i * slot, yy, left + (i + 1) * slot, yy,
                                    THRESHOLD_COLOR, f"{_label(points[i])}: threshold "
                                    f"{e['threshold']:.4g}", 1, "3,2"))
    for i, e in enumerate(entries):  # no-drift level at this window's size
        if e and e.get("no_drift_level") is not None:
            parts.append(report.svg_rect(
                left + i * slot + slot * 0.1, y(e["no_drift_level"]) - 1.5, slot * 0.8, 3,
                LEVEL_COLOR, f"{_label(points[i])}: no-drift level {e['no_drift_level']:.4f}",
                "level"))
    xy = [(x(i), y(e["distance"])) if e and e.get("distance") is not None else None
          for i, e in enumerate(entries)]
    parts.append(_polylines(xy, DISTANCE_COLOR, f"{name}: {measure} per window"))
    for i, e in enumerate(entries):
        if e is None:
            continue
        verdict = e.get("verdict") or "-"
        bad = verdict in _DRIFTED
        if e.get("distance") is None:
            if bad:  # a missing column, a type change: no distance, still drift
                parts.append(report.svg_rect(x(i) - 4, top - 4, 8, 8, ALARM_COLOR,
                                             f"{_label(points[i])}: {verdict}", "alarm"))
            continue
        tip = (f"{_label(points[i])}: {measure} {e['distance']:.4f} (no-drift level "
               f"{_num(e.get('no_drift_level'))}, threshold "
               f"{history_lib.fmt(e.get('threshold'))}): {verdict}")
        parts.append(_dot(x(i), y(e["distance"]), 4.5 if bad else 3.5,
                          ALARM_COLOR if bad else DISTANCE_COLOR, tip,
                          "alarm" if bad else "distance"))
    if points:  # the first and the last window's day under the axis
        parts.append(report.svg_text(x(0), height - 3, _short(points[0]), 9, "middle"))
        if n > 1:
            parts.append(report.svg_text(x(n - 1), height - 3, _short(points[-1]), 9,
                                         "middle"))
    label = f"{name}" + ("" if source == "window" else f" [{source}]")
    parts.append(report.svg_text(left, 11, label, 11, fill="#222", limit=40))
    return report.svg(width, height, "".join(parts), f"trend of {label}")


def _perf(point: dict, which: str) -> dict | None:
    return history_lib.performance(point, which)


def _finite(v) -> bool:
    return history_lib.number(v) is not None


def _frame(points: list[dict], left: float, top: float, pw: float, ph: float,
           slot: float) -> list[str]:
    """A trend picture's axes, with this window's column shaded."""
    parts = []
    if points and points[-1].get("this_window"):
        parts.append(report.svg_rect(left + (len(points) - 1) * slot, top, slot, ph,
                                     CURRENT_COLOR, _label(points[-1])))
    parts.append(report.svg_line(left, top + ph, left + pw, top + ph))
    parts.append(report.svg_line(left, top, left, top + ph))
    return parts


def performance_trend_svg(points: list[dict], width: int = 700, height: int = 230) -> str:
    """Realized (orange) and estimated (purple) metric per window, each with its interval
    as an error bar, the version's baseline (blue step), production version changes
    (dashed, labelled vN) and a strip of the window decisions (red: drift or a drop,
    green: none, grey: not decided; outlined where a retraining was launched). '' when
    no window has a metric."""
    realized = [_perf(p, "realized") for p in points]
    estimated = [_perf(p, "estimated") for p in points]
    values = [e[k] for e in realized + estimated if e for k in ("value", "low", "high",
                                                                   "baseline")
              if _finite(e.get(k))]
    if not values:
        return ""
    metric = next((e.get("metric") for e in realized + estimated if e and e.get("metric")),
                  "metric")
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.12 or max(abs(hi) * 0.05, 0.01)
    lo, hi = lo - pad, hi + pad
    if min(values) >= 0:
        lo = max(lo, 0.0)
    if metric == "accuracy":
        hi = min(hi, 1.0)
    left, right, top = 56, 10, 14
    strip, labels = 12, 14
    ph = height - top - strip - labels - 10
    pw = width - left - right
    n = len(points)
    slot = pw / max(n, 1)

    def x(i):
        return left + (i + 0.5) * slot

    def y(v):
        return top + ph * (1 - (min(max(v, lo), hi) - lo) / ((hi - lo) or 1.0))

    parts = _frame(points, left, top, pw, ph, slot)
    parts.append(report.svg_text(left - 4, top + 4, f"{hi:.4g}", 9, "end"))
    parts.append(report.svg_text(left - 4, top + ph, f"{lo:.4g}", 9, "end"))
    parts.append(report.svg_text(left - 4, top + ph / 2 + 3, metric, 9, "end", limit=9))
    parts.append(_version_marks(points, lambda i: left + i * slot, top, top + ph))
    if points and points[0].get("production_version") is not None:
        parts.append(report.svg_text(left + 2, top + 8, f"v{points[0]['production_version']}",
                                     9, fill=VERSION_COLOR))
    for i, p in enumerate(points):  # the baseline of the version serving each window
        base = next((e.get("baseline") for e in (realized[i], estimated[i])
                     if e and _finite(e.get("baseline"))), None)
        if base is not None:
            parts.append(report.svg_rect(
                left + i * slot, y(base) - 1, slot, 2, BASELINE_COLOR,
                f"{_label(p)}: version {p.get('production_version')} baseline {metric} "
                f"{base:.4g} (at push)", "baseline"))
    bar = min(max(slot * 0.18, 3.0), 9.0)
    for offset, entries, color, who in ((-0.6, realized, REALIZED_COLOR, "realized"),
                                        (0.6, estimated, ESTIMATED_COLOR, "estimated")):
        xy = []
        for i, e in enumerate(entries):
            if not e or not _finite(e.get("value")):
                xy.append(None)
                continue
            cx = x(i) + offset * bar
            xy.append((cx, y(e["value"])))
            interval = ""
            if _finite(e.get("low")) and _finite(e.get("high")):
                y1, y2 = y(e["high"]), y(e["low"])
                interval = f" [{e['low']:.4g}, {e['high']:.4g}]"
                parts.append(report.svg_rect(cx - 1, y1, 2, y2 - y1, color,
                                             f"{_label(points[i])}: {who} {metric} interval"
                                             f"{interval}", f"{who}-interval"))
                for yy in (y1, y2):
                    parts.append(report.svg_rect(cx - bar / 2, yy - 1, bar, 2, color,
                                                 f"{_label(points[i])}: {who} {metric}"
                                                 f"{interval}", f"{who}-interval"))
            decision = e.get("decision") or ""
            drop = decision.endswith("DROP") and decision != "NO_DROP"
            rows = f", {e['rows']:g} rows" if _finite(e.get("rows")) else ""
            parts.append(report.svg_rect(
                cx - bar / 2 - 1, y(e["value"]) - bar / 2 - 1, bar + 2, bar + 2,
                ALARM_COLOR if drop else color,
                f"{_label(points[i])}: {who} {metric} {e['value']:.4g}{interval}{rows}: "
                f"{decision or '-'}", who))
        parts.append(_polylines(xy, color, f"{who} {metric} per window", 1))
    strip_top = top + ph + 4
    for i, p in enumerate(points):
        decision = str(p.get("decision") or "-")
        findings = [str(f) for f in p.get("findings") or []]
        color = (ALARM_COLOR if findings or decision == "DRIFT" else
                 OK_COLOR if decision == "NO_DRIFT" else NEUTRAL_COLOR)
        launch = p.get("launch") or {}
        tip = (f"{_label(p)}: {decision}" + (f" ({', '.join(findings)})" if findings else "")
               + f"; production version {p.get('production_version')}; retraining: "
               + history_lib.launch_text(launch or None))
        rect = report.svg_rect(left + i * slot + slot * 0.1, strip_top, slot * 0.8, strip,
                               color, tip, "decision")
        if launch.get("launched"):
            rect = rect.replace("<rect ", "<rect stroke='#000' stroke-width='2' ", 1)
        parts.append(rect)
    every = max(1, int(math.ceil(34 / slot)))
    for i, p in enumerate(points):
        if i % every == 0 or i == n - 1:
            parts.append(report.svg_text(x(i), strip_top + strip + labels - 2, _short(p), 9,
                                         "middle"))
    better = "lower is better" if metric in ("rmse", "mse", "mae") else "higher is better"
    return report.svg(width, height, "".join(parts), f"{metric} per window ({better})")


def _trend_rows(points: list[dict]) -> list[list[str]]:
    rows = []
    for p in points:
        decision = str(p.get("decision") or "-")
        findings = [str(f) for f in p.get("findings") or [] if f != decision]
        version = p.get("production_version")
        rows.append([_label(p), "-" if version is None else str(version),
                     decision + (f" ({', '.join(findings)})" if findings else ""),
                     history_lib.metric_text(_perf(p, "realized")),
                     history_lib.metric_text(_perf(p, "estimated")),
                     "this run's trigger" if p.get("this_window") and p.get("launch") is None
                     else history_lib.launch_text(p.get("launch"))])
    return rows


_TREND_HEADERS = ["window", "version", "decision", "realized", "estimated", "launched"]


def _first_sentence(history: list, points: list[dict]) -> str:
    earlier = sum(1 for p in points if not p.get("this_window"))
    skipped = list(getattr(history, "skipped", []) or [])
    if earlier == 0:
        return ("No earlier monitoring run is recorded at this model base: the trend starts "
                "with this window.")
    return (f"The last {earlier} recorded monitoring run(s) and this window"
            + (f"; {len(skipped)} unreadable record(s) left out" if skipped else "") + ".")


def trend_html(history: list | None, current: dict | None = None) -> str:
    """The trend section: '' without a history (None); a sentence when it is empty."""
    if history is None:
        return ""
    points = trend_points(history, current)
    notes = "".join(f"<p>Note: {report.esc(s)}</p>"
                    for s in getattr(history, "skipped", []) or [])
    head = f"<h3>Trend</h3><p>{report.esc(_first_sentence(history, points))}</p>"
    if sum(1 for p in points if not p.get("this_window")) == 0:
        return head + notes
    legend = (f"<p>Per feature: <span style='color:{DISTANCE_COLOR}'>&#9679; distance</span> "
              f"(<span style='color:{ALARM_COLOR}'>&#9679; drift</span>), "
              f"<span style='color:{LEVEL_COLOR}'>&#9644; no-drift level</span> at each "
              f"window's size, <span style='color:{THRESHOLD_COLOR}'>- - threshold</span>, "
              f"<span style='color:{VERSION_COLOR}'>| vN</span> a new production version "
              "from that window on; the grey band is this window.</p>")
    pictures = "".join(f"<div style='display:inline-block;margin:0 8px 8px 0'>"
                       f"{feature_trend_svg(points, key)}</div>"
                       for key in trend_features(points))
    performance = performance_trend_svg(points)
    if performance:
        performance = (
            "<h4>Performance</h4>"
            f"<p><span style='color:{REALIZED_COLOR}'>&#9632; realized</span> (labelled rows) "
            f"and <span style='color:{ESTIMATED_COLOR}'>&#9632; estimated</span> (before "
            "labels) with their intervals; "
            f"<span style='color:{ALARM_COLOR}'>&#9632;</span> a drop; "
            f"<span style='color:{BASELINE_COLOR}'>&#9644; baseline</span>: the serving "
            "version's metric at push. Strip below: the window's decision "
            f"(<span style='color:{ALARM_COLOR}'>&#9632;</span> drift or a drop, "
            f"<span style='color:{OK_COLOR}'>&#9632;</span> none, "
            f"<span style='color:{NEUTRAL_COLOR}'>&#9632;</span> not decided; outlined: "
            "a retraining was launched).</p>" + performance)
    else:
        performance = "<p>No realized or estimated performance is recorded for these windows.</p>"
    table = ("<details><summary>Windows</summary>"
             + report.table(_TREND_HEADERS, _trend_rows(points)) + "</details>")
    return head + legend + "<h4>Features</h4>" + pictures + performance + table + notes


def trend_markdown(history: list | None, current: dict | None = None) -> list[str]:
    """The trend section's Markdown lines: a table of the windows."""
    if history is None:
        return []
    points = trend_points(history, current)
    lines = ["## Trend", "", _first_sentence(history, points), ""]
    if sum(1 for p in points if not p.get("this_window")):
        lines += ["| " + " | ".join(_TREND_HEADERS) + " |",
                  "|" + "---|" * len(_TREND_HEADERS)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"
                  for row in _trend_rows(points)]
        lines.append("")
    lines += [f"Note: {s}" for s in getattr(history, "skipped", []) or []]
    return lines
