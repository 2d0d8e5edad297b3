"""Parameter values as given on the command line (`-p name=value`): split, converted to the
declared type, and checked against it."""

from __future__ import annotations

import json
import math
from typing import Any

from iacloud import limits
from iacloud.errors import Diagnostic, UserError
from iacloud.loading.values import kind

_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def parse_param_assignment(text: str) -> tuple[str, str]:
    """`-p name=value` -> (name, value as text); the value is converted once its type is known."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise UserError(
            Diagnostic(
                f"-p expects NAME=VALUE, found {text.split('=', 1)[0]!r}",
                hint="for example -p web_count=3",
            )
        )
    return name, value


def _json(text: str, what: str, expected: type) -> Any:
    try:
        value = limits.parse_json(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"expected a JSON {what}: {exc.msg}") from None
    except limits.InputError as exc:
        raise ValueError(f"expected a JSON {what}: {exc}") from None
    if not isinstance(value, expected):
        raise ValueError(f"expected a JSON {what}")
    return value


def convert_param(text: str, param_type: str) -> Any:
    """A `-p` value converted to the declared type; ValueError says what was expected."""
    if param_type == "string":
        return text
    if param_type == "number":
        stripped = text.strip()
        if len(stripped) > limits.MAX_NUMBER_CHARS:
            raise ValueError(f"expected a number of at most {limits.MAX_NUMBER_CHARS} characters")
        try:
            number = int(stripped)
        except ValueError:
            try:
                number = float(stripped)
            except ValueError:
                raise ValueError("expected a number") from None
            if not math.isfinite(number):
                raise ValueError("expected a finite number") from None
            if number.is_integer():
                number = int(number)
        return number
    if param_type == "boolean":
        try:
            return _BOOLEANS[text.strip().lower()]
        except KeyError:
            raise ValueError("expected a boolean: true/false, yes/no or 1/0") from None
    if param_type == "list":
        if text.lstrip().startswith("["):
            return _json(text, "array", list)
        return [item.strip() for item in text.split(",")] if text.strip() else []
    return _json(text, "object", dict)  # map


def type_problem(value: Any, param_type: str) -> str | None:
    ok = {
        "string": isinstance(value, str),
        "number": isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value),
        "boolean": isinstance(value, bool),
        "list": isinstance(value, list),
        "map": isinstance(value, dict),
    }[param_type]
    return None if ok else f"expected a {param_type}, found {kind(value)}"
