"""The validation report's Features table, with a picture of each feature's values.

Numeric features get TFDV's STANDARD histogram (equal-width buckets between min and
max), categorical ones their top values as bars (TFDV keeps the 20 most frequent,
``num_top_values=20``). Counts show on hover (``<title>``), the axis carries min and max.
Pure Python on the statistics proto: no TensorFlow import.
"""

from __future__ import annotations

import math

from kfp_ct.components.common import report

NUMERIC_COLOR = report.REFERENCE_COLOR
CATEGORICAL_COLOR = "#59a14f"
HEADERS = ["feature", "type", "missing", "mean", "std", "min", "max", "values", "distribution"]

_HIST_W, _HIST_H, _HIST_TOP, _HIST_AXIS = 240, 60, 12, 14
_LABEL_W, _BAR_W, _COUNT_W, _ROW_H = 110, 140, 56, 14


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _g(x) -> str:
    """A statistic for people: 4 significant digits; NaN and inf as words."""
    if not _finite(x):
        return "NaN" if x != x else ("inf" if x > 0 else "-inf")
    return f"{x:.4g}"


def _count(c: float) -> str:
    """TFDV's bucket counts are interpolated (fractional): one decimal, dropped when 0."""
    return f"{c:,.1f}".rstrip("0").rstrip(".")


def _no_values(width: int, height: int, words: str) -> str:
    return report.svg(width, height, report.svg_text(4, height / 2 + 4, words, fill="#888"),
                      words)


def _name(feature) -> str:
    return feature.path.step[-1] if feature.path.step else feature.name


def standard_histogram(num_stats):
    """The STANDARD histogram of a NumericStatistics, or None."""
    for h in num_stats.histograms:
        if h.type == h.STANDARD:
            return h
    return None


def histogram_svg(histogram, name: str = "") -> str:
    """One bar per bucket, height proportional to its count, min and max under the axis."""
    buckets = list(histogram.buckets) if histogram is not None else []
    counts = [b.sample_count if _finite(b.sample_count) and b.sample_count > 0 else 0.0
              for b in buckets]
    if not buckets or not any(counts):
        return _no_values(_HIST_W, 24, "no values")
    lo, hi = buckets[0].low_value, buckets[-1].high_value
    by_value = _finite(lo) and _finite(hi) and hi > lo and all(
        _finite(b.low_value) and _finite(b.high_value) for b in buckets)
    top = max(counts)
    slot = _HIST_W / len(buckets)
    parts = []
    for i, (b, c) in enumerate(zip(buckets, counts)):
        if by_value:
            x = _HIST_W * (b.low_value - lo) / (hi - lo)
            w = max(_HIST_W * (b.high_value - b.low_value) / (hi - lo) - 1, 1.5)
        else:  # one bucket, or edges at +-inf: equal slots
            x, w = i * slot, max(slot - 1, 1.5)
        h = _HIST_H * c / top
        parts.append(report.svg_rect(
            x, _HIST_TOP + _HIST_H - h, w, h, NUMERIC_COLOR,
            f"{name + ': ' if name else ''}[{_g(b.low_value)}, {_g(b.high_value)}]: "
            f"{_count(c)}", css="bar"))
    base = _HIST_TOP + _HIST_H
    parts += [report.svg_line(0, base, _HIST_W, base),
              report.svg_text(0, 9, f"peak {_count(top)}", size=9, fill="#888"),
              report.svg_text(0, base + 11, _g(lo), size=9),
              report.svg_text(_HIST_W, base + 11, _g(hi), size=9, anchor="end")]
    if histogram.num_nan:
        parts.append(report.svg_text(_HIST_W, 9, f"+{_count(histogram.num_nan)} NaN", size=9,
                                     anchor="end", fill="#b00020"))
    return report.svg(_HIST_W, base + _HIST_AXIS, "".join(parts), f"histogram of {name}")


def top_values(string_stats) -> list[tuple[str, float]]:
    """(value, count), most frequent first: top_values, else the rank histogram."""
    pairs = [(v.value, v.frequency) for v in string_stats.top_values]
    if not pairs:
        pairs = [(b.label, b.sample_count) for b in string_stats.rank_histogram.buckets]
    return [(v, c if _finite(c) and c > 0 else 0.0) for v, c in pairs]


def top_values_svg(string_stats, name: str = "") -> str:
    """A horizontal bar per top value: the value, its bar and its count."""
    pairs = top_values(string_stats)
    if not pairs or not any(c for _, c in pairs):
        return _no_values(_LABEL_W + _BAR_W + _COUNT_W, 24, "no values")
    top = max(c for _, c in pairs)
    total = string_stats.common_stats.num_non_missing or sum(c for _, c in pairs)
    parts = []
    for i, (value, c) in enumerate(pairs):
        y = i * _ROW_H
        w = _BAR_W * c / top
        share = f" ({100.0 * c / total:.1f}% of non-missing)" if total else ""
        parts += [report.svg_text(_LABEL_W - 4, y + 10, value, anchor="end", limit=18),
                  report.svg_rect(_LABEL_W, y + 2, w, _ROW_H - 3, CATEGORICAL_COLOR,
                                  f"{value}: {_count(c)}{share}", css="bar"),
                  report.svg_text(_LABEL_W + w + 3, y + 10, _count(c), size=9)]
    height = len(pairs) * _ROW_H
    more = string_stats.unique - len(pairs)
    if more > 0:
        parts.append(report.svg_text(_LABEL_W, height + 10, f"+ {more} more values", size=9,
                                     fill="#888"))
        height += _ROW_H
    parts.append(report.svg_line(_LABEL_W, 0, _LABEL_W, len(pairs) * _ROW_H))
    return report.svg(_LABEL_W + _BAR_W + _COUNT_W, height + 2, "".join(parts),
                      f"top values of {name}")


def feature_rows(stats) -> list[list[str]]:
    """One row per feature of the first dataset, cells already HTML (escaped)."""
    rows = []
    dataset = stats.datasets[0]
    total = dataset.num_examples or 1
    for f in sorted(dataset.features, key=_name):
        name = _name(f)
        if f.HasField("num_stats"):
            ns = f.num_stats
            missing = ns.common_stats.num_missing
            cells = [name, "numeric", f"{100.0 * missing / total:.1f}%", f"{ns.mean:.4g}",
                     f"{ns.std_dev:.4g}", f"{ns.min:.4g}", f"{ns.max:.4g}", ""]
            picture = histogram_svg(standard_histogram(ns), name)
        elif f.HasField("string_stats"):
            ss = f.string_stats
            missing = ss.common_stats.num_missing
            top = ", ".join(f"{v} ({int(c)})" for v, c in top_values(ss)[:5])
            cells = [name, "categorical", f"{100.0 * missing / total:.1f}%", "", "", "", "",
                     f"{ss.unique} unique: {top}"]
            picture = top_values_svg(ss, name)
        else:
            continue
        rows.append([report.esc(c) for c in cells] + [picture])
    return rows


def features_table(stats) -> str:
    return report.table(HEADERS, feature_rows(stats), raw=True)
