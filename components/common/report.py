"""Small HTML helpers for the reports the Kubeflow UI renders (dsl.HTML artifacts)."""

from __future__ import annotations

import html

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


def table(headers: list[str], rows: list[list], raw: bool = False) -> str:
    """An HTML table; cells are escaped unless raw=True."""
    cell = (lambda v: str(v)) if raw else esc
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(title: str, *sections: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"{STYLE}</head><body><h2>{esc(title)}</h2>{''.join(sections)}</body></html>")
