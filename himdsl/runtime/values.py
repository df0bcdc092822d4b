"""Values typed on the command line: `--set D=8`, `--given beta=[0.5, -1]`.

    >>> parse_value("8"), parse_value("0.5"), parse_value("[[1, 2], [3, 4]]")
    (8, 0.5, [[1, 2], [3, 4]])
"""
from __future__ import annotations

import json
import math


def parse_value(text: str):
    """A number or a (nested) JSON list of numbers; ValueError with a readable message."""
    text = text.strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"expected a number or a JSON list such as [0.5, 1], got `{text}`") from None
    if not _numeric(value):
        raise ValueError(f"expected a number or a JSON list of numbers, got `{text}`")
    return value


def _numeric(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    return isinstance(value, list) and bool(value) and all(_numeric(v) for v in value)
