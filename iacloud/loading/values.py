"""Found values in the loader's messages: their kind, their TOML-like text cut short, and the
masked form when a hidden parameter's value is inside."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from iacloud import expressions as ex
from iacloud.redact import DIAGNOSTIC_MASK


def kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, ex.EXPR_TYPES):
        return "expression"
    return type(value).__name__


def render(value: Any, budget: int = 80) -> str:
    """TOML-like text of a value, cut short: what the user wrote, not Python's repr."""
    if isinstance(value, (*ex.EXPR_TYPES, ex.Unknown)):
        value = ex.to_json(value)
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(render(v, budget) for v in value[:20]) + "]"
    elif isinstance(value, dict):
        items = list(value.items())[:20]
        text = "{ " + ", ".join(f"{k} = {render(v, budget)}" for k, v in items) + " }"
        text = "{}" if not items else text
    else:
        text = str(value)
    return text if len(text) <= budget else text[: budget - 3] + "..."


def show(value: Any, secrets: Iterable[str]) -> str:
    """A found value for a message, with its kind; masked when a hidden value is in it."""
    # look for secrets in the whole text: a cut could leave half a secret showing
    whole = render(value, budget=1 << 20)
    if any(s and s in whole for s in secrets):
        return DIAGNOSTIC_MASK
    return f"{render(value)} ({kind(value)})"


def string_forms(value: Any) -> list[str]:
    """How a parameter value can appear in text: each scalar inside it. Booleans are left out:
    masking every "true" in a plan would hide everything and protect nothing."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (str, int, float)):
        return [str(value)] if str(value) else []
    if isinstance(value, list):
        return [s for v in value for s in string_forms(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in string_forms(v)]
    return []
