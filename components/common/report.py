"""Small HTML helpers for the reports the Kubeflow UI renders (dsl.HTML artifacts).

Pictures are inline SVG built with ``svg``/``svg_rect``/``svg_text``: the report stays
one self-contained file (no script, no external asset), text from data is escaped, and
every number written into an attribute is finite.
"""

from __future__ import annotations

import html
import math
import re

STYLE = (
    "<style>body{font-family:sans-serif;font-size:14px;margin:16px}"
    "table{border-collapse:collapse;margin:8px 0 16px}"
    "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}"
    "th{background:#f2f2f2}.bad{color:#b00020;font-weight:bold}.ok{color:#1b5e20;font-weight:bold}"
    "</style>")


def esc(value) -> str:
    return html.escape(str(value))


def fmt(value, float_format: str = ".4f") -> str:
    """A metric for people: '-' for missing, floats rounded, anything else as text."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, float_format)
    return str(value)


#: The shared palette: a reference (training data, production model) is blue, what is
#: checked against it (a window, the candidate) is orange.
REFERENCE_COLOR, CHECKED_COLOR = "#5b8def", "#f28e2b"

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def coord(value, digits: int = 1) -> str:
    """A number for an SVG attribute: fixed-point, and "0" for NaN, inf or non-numbers."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "0"
    return f"{value:.{digits}f}" if math.isfinite(value) else "0"


def svg_esc(value, limit: int | None = None) -> str:
    """Escaped text for SVG (also valid XML): control characters replaced, and cut to
    ``limit`` characters with an ellipsis (the full text belongs in a ``<title>``)."""
    text = _CONTROL.sub("\ufffd", str(value))
    if limit is not None and len(text) > limit:
        text = text[:max(limit - 1, 1)] + "\u2026"
    return esc(text)


def svg(width: float, height: float, body: str, label: str) -> str:
    """An inline ``<svg>`` element of that size holding ``body``."""
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{coord(width, 0)}' "
            f"height='{coord(height, 0)}' role='img' aria-label='{svg_esc(label)}'>"
            f"{body}</svg>")


def svg_rect(x, y, width, height, fill: str, title: str = "", css: str = "") -> str:
    """A rectangle; ``title`` is what the browser shows on hover."""
    cls = f" class='{css}'" if css else ""
    tip = f"<title>{svg_esc(title)}</title>" if title else ""
    return (f"<rect{cls} x='{coord(x)}' y='{coord(y)}' width='{coord(max(width, 0))}' "
            f"height='{coord(max(height, 0))}' fill='{fill}'>{tip}</rect>")


def svg_text(x, y, text, size: int = 10, anchor: str = "start", fill: str = "#444",
             limit: int | None = None, extra: str = "") -> str:
    return (f"<text x='{coord(x)}' y='{coord(y)}' font-size='{size}' text-anchor='{anchor}' "
            f"fill='{fill}'{(' ' + extra) if extra else ''}>{svg_esc(text, limit)}</text>")


def svg_line(x1, y1, x2, y2, stroke: str = "#999") -> str:
    return (f"<line x1='{coord(x1)}' y1='{coord(y1)}' x2='{coord(x2)}' y2='{coord(y2)}' "
            f"stroke='{stroke}'/>")


def table(headers: list[str], rows: list[list], raw: bool = False) -> str:
    """An HTML table; cells are escaped unless raw=True."""
    cell = (lambda v: str(v)) if raw else esc
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(title: str, *sections: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"{STYLE}</head><body><h2>{esc(title)}</h2>{''.join(sections)}</body></html>")


def with_notes(html_text: str, notes: list[str]) -> str:
    """A report page with ``notes`` listed right under its title (things to know first,
    e.g. eval rows counted as wrong)."""
    if not notes:
        return html_text
    items = "".join(f"<li>{esc(n)}</li>" for n in notes)
    return html_text.replace("</h2>", f"</h2><ul class='bad'>{items}</ul>", 1)
