"""Parameters that arrive as JSON text (pipeline parameters, command-line flags)."""

from __future__ import annotations

import json

from kfp_ct.components.common.errors import KfpCtError


def json_object(value: str | dict | None, what: str) -> dict:
    """``value`` as a dict: JSON object text, a dict, or empty ({}); a KfpCtError naming
    ``what`` otherwise."""
    if isinstance(value, dict):
        return dict(value)
    text = (value or "").strip()
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise KfpCtError(f"{what}: not valid JSON ({exc}): {text[:80]!r}") from None
    if not isinstance(data, dict):
        raise KfpCtError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data
