"""The evaluation report's pictures: confusion-matrix heatmaps and per-slice metric bars.

Confusion matrix (classification): rows are the true class, columns the predicted one,
each cell coloured by its share of the row (so a rare class reads as well as a common
one) with its count written in it; the candidate's, and production's beside it when
the evaluation kept one (``baseline["confusion_matrix"]``, same shape as
``EvaluateResult.confusion_matrix``).

Slice bars: the task's main metric (``metrics.MAIN_METRIC``) overall and for each slice
value, candidate beside production where production's value is known (overall from
``baseline["overall"]``, per slice from ``baseline["slices"]`` when recorded).

Pure Python on the evaluation record: no TensorFlow import.
"""

from __future__ import annotations

import math

from kfp_ct.components.common import metrics as metrics_lib
from kfp_ct.components.common import report

CANDIDATE_COLOR, PRODUCTION_COLOR = report.CHECKED_COLOR, report.REFERENCE_COLOR
#: Heatmap colour at share 0 and at share 1 of the row (RGB).
HEAT_LOW, HEAT_HIGH = (0xF7, 0xFB, 0xFF), (0x08, 0x45, 0x94)
#: Metrics that live in [0, 1]: their bars are drawn on a 0..1 axis.
UNIT_METRICS = {metrics_lib.ACCURACY, metrics_lib.MACRO_PRECISION, metrics_lib.MACRO_RECALL}

_CM_LEFT, _CM_TOP = 96, 40
_SL_LABEL, _SL_BAR, _SL_VALUE, _SL_BAR_H, _SL_LEGEND = 150, 260, 60, 9, 20


def _number(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _count(c) -> str:
    return f"{int(c):,}" if float(c).is_integer() else f"{c:,.1f}"


def heat_color(share: float) -> str:
    share = min(max(share, 0.0), 1.0) if math.isfinite(share) else 0.0
    rgb = [round(lo + (hi - lo) * share) for lo, hi in zip(HEAT_LOW, HEAT_HIGH)]
    return "#" + "".join(f"{c:02x}" for c in rgb)


def confusion_svg(labels: list, matrix: list[list], who: str = "") -> str:
    """A heatmap of ``matrix`` (rows: true class, columns: predicted class)."""
    n = len(labels)
    if not n or len(matrix) != n:
        return ""
    cell = min(max(360 / n, 14), 64)
    chars = max(int(cell / 6.5), 2)
    middle = _CM_TOP + n * cell / 2
    parts = [report.svg_text(_CM_LEFT + n * cell / 2, 11, "predicted", anchor="middle",
                             fill="#666"),
             report.svg_text(12, middle, "true", anchor="middle", fill="#666",
                             extra=f"transform='rotate(-90 12 {report.coord(middle)})'")]
    for j, label in enumerate(labels):
        parts.append(report.svg_text(_CM_LEFT + (j + 0.5) * cell, _CM_TOP - 6, label,
                                     anchor="middle", limit=chars))
    for i, (label, row) in enumerate(zip(labels, matrix)):
        counts = [c if _number(c) is not None and c > 0 else 0 for c in row[:n]]
        counts += [0] * (n - len(counts))
        total = sum(counts)
        y = _CM_TOP + i * cell
        parts.append(report.svg_text(_CM_LEFT - 6, y + cell / 2 + 4, label, anchor="end",
                                     limit=14))
        for j, count in enumerate(counts):
            share = count / total if total else 0.0
            x = _CM_LEFT + j * cell
            parts.append(report.svg_rect(
                x, y, cell - 1, cell - 1, heat_color(share),
                f"{who + ': ' if who else ''}true {label}, predicted {labels[j]}: "
                f"{_count(count)} ({100 * share:.1f}% of true {label})", css="cell"))
            text = _count(count)
            if cell >= 18 and len(text) * 6.5 <= cell:
                parts.append(report.svg_text(x + (cell - 1) / 2, y + cell / 2 + 4, text,
                                             size=11, anchor="middle",
                                             fill="#ffffff" if share > 0.55 else "#222222"))
    size = n * cell
    return report.svg(_CM_LEFT + size + 4, _CM_TOP + size + 4, "".join(parts),
                      f"confusion matrix {who}".strip())


def confusion_section(result) -> str:
    """The candidate's heatmap, and production's beside it when it was evaluated."""
    figures = []
    for who, cm in (("candidate", result.confusion_matrix),
                    ("production", (result.baseline or {}).get("confusion_matrix"))):
        if cm and cm.get("labels"):
            picture = confusion_svg(cm["labels"], cm["matrix"], who)
            figures.append(f"<figure style='margin:0'>{picture}"
                           f"<figcaption>{report.esc(who)}</figcaption></figure>")
    if not figures:
        return ""
    return ("<h3>Confusion matrix (rows: true class, columns: predicted)</h3>"
            "<p>Colour: share of the true class's rows; hover a cell for the share.</p>"
            "<div style='display:flex;gap:32px;flex-wrap:wrap'>" + "".join(figures) + "</div>")


def _main_metric(result) -> str:
    metric = metrics_lib.MAIN_METRIC.get(result.task)
    if metric is None or metric not in result.candidate.get("overall", {}):
        metric = next((m for m in result.candidate.get("overall", {})
                       if m != metrics_lib.EXAMPLE_COUNT), metric)
    return metric


def slice_groups(result, metric: str) -> list[tuple[str, float | None, float | None]]:
    """(slice, candidate value, production value) for overall and each slice value."""
    base = result.baseline or {}
    base_overall = base.get("overall") or {}
    base_slices = base.get("slices") or {}
    groups = [("overall", _number(result.candidate.get("overall", {}).get(metric)),
               _number(base_overall.get(metric)))]
    for name, values in (result.candidate.get("slices") or {}).items():
        groups.append((name, _number((values or {}).get(metric)),
                       _number((base_slices.get(name) or {}).get(metric))))
    return groups


def slice_bars_svg(groups: list[tuple], metric: str) -> str:
    """Horizontal bars: candidate (orange) above production (blue) for each group."""
    values = [v for _, c, p in groups for v in (c, p) if v is not None]
    if not values:
        return ""
    top = max(max(values), 1.0 if metric in UNIT_METRICS else 0.0) or 1.0
    with_production = any(p is not None for _, _, p in groups)
    series = [("candidate", CANDIDATE_COLOR)] + (
        [("production", PRODUCTION_COLOR)] if with_production else [])
    parts = []
    for k, (who, color) in enumerate(series):  # the legend
        x = _SL_LABEL + k * 100
        parts += [report.svg_rect(x, 4, 10, 10, color, who, css="legend"),
                  report.svg_text(x + 14, 13, who)]
    group_h = len(series) * (_SL_BAR_H + 1) + 8
    for i, (name, cand, prod) in enumerate(groups):
        y = _SL_LEGEND + i * group_h
        middle = y + 3 + len(series) * (_SL_BAR_H + 1) / 2
        parts.append(report.svg_text(_SL_LABEL - 6, middle + 3.5, name, anchor="end", limit=24))
        for k, ((who, color), value) in enumerate(zip(series, (cand, prod))):
            by = y + 3 + k * (_SL_BAR_H + 1)
            if value is None:
                parts.append(report.svg_text(_SL_LABEL + 3, by + _SL_BAR_H - 1, "-", size=9,
                                             fill="#888"))
                continue
            w = _SL_BAR * max(value, 0.0) / top
            parts += [report.svg_rect(_SL_LABEL, by, w, _SL_BAR_H, color,
                                      f"{name}: {who} {metric} {report.fmt(value)}", css="bar"),
                      report.svg_text(_SL_LABEL + w + 3, by + _SL_BAR_H - 1, report.fmt(value),
                                      size=9)]
    height = _SL_LEGEND + len(groups) * group_h
    parts.append(report.svg_line(_SL_LABEL, _SL_LEGEND, _SL_LABEL, height))
    return report.svg(_SL_LABEL + _SL_BAR + _SL_VALUE, height + 2, "".join(parts),
                      f"{metric} per slice")


def slices_section(result) -> str:
    """Bars of the main metric overall and per slice; nothing when that is a lone bar."""
    metric = _main_metric(result)
    if metric is None:
        return ""
    groups = slice_groups(result, metric)
    if len(groups) < 2 and groups[0][2] is None:
        return ""
    picture = slice_bars_svg(groups, metric)
    if not picture:
        return ""
    direction = metrics_lib.direction_words(metric)
    production = [p for _, _, p in groups]
    note = ("<p>- : no production value recorded for that slice.</p>"
            if any(p is None for p in production) and any(p is not None for p in production)
            else "")
    return f"<h3>{report.esc(metric)} per slice ({report.esc(direction)})</h3>{picture}{note}"


def pictures(result) -> list[str]:
    """The report sections with pictures, in reading order."""
    return [s for s in (slices_section(result), confusion_section(result)) if s]
