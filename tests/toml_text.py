"""TOML text for generated values: the writer the property tests and bench/fuzz_inputs.py share
(they write values no TOML library would, NaN and deep nesting markers included)."""

from __future__ import annotations

import json
import math
from typing import Any


def toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes, non-ASCII kept as it is (JSON would write surrogate
    pairs, which TOML refuses), DEL escaped (TOML refuses it raw)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: Any) -> str:
    """TOML for a value, all inline: strings as JSON-style basic strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    items = (f"{toml_string(str(k))} = {toml_value(v)}" for k, v in value.items())
    return "{" + ", ".join(items) + "}"
