"""The drift report: HTML the Kubeflow UI renders, and its Markdown twin.

Decision and reasons first, then anomalies, and a row per
tested feature: distance, threshold, no-drift level at this window size, verdict, and an
inline SVG of the training vs window shares per cell (no external assets).
"""

from __future__ import annotations

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


def html(record: dict) -> str:
    decision = record["decision"]
    cls = "bad" if decision == "DRIFT" else "ok" if decision == "NO_DRIFT" else ""
    head = (f"<p class='{cls}'>Decision: {report.esc(decision)}</p><ul>"
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
    return report.page("Drift check", head, context, anomalies, features, notes)


def markdown(record: dict) -> str:
    lines = [f"# Drift check: {record['decision']}", ""]
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
    lines += [""] + [f"Note: {n}" for n in record.get("notes", [])]
    return "\n".join(lines) + "\n"
