"""Walks over raw and prepared values: which hold no function at all (the fast path), where
%index% appears, one-key tables that look like a misspelled intrinsic function, and every
get_resource / get_attr with the field path where it sits."""

from __future__ import annotations

import datetime
import difflib
from collections.abc import Iterator
from typing import Any

from iacloud import expressions as ex
from iacloud.stack import INDEX_TOKEN

# TOML scalars: values of these types hold no function and need no preparing
_PLAIN = frozenset({str, int, float, bool, datetime.datetime, datetime.date, datetime.time})


def plain(value: Any) -> bool:
    """A scalar or a flat list of scalars: the common value, which needs no parsing."""
    value_type = type(value)
    return value_type in _PLAIN or (value_type is list and all(type(v) in _PLAIN for v in value))


def has_expr(value: Any) -> bool:
    value_type = type(value)
    if value_type in _PLAIN:
        return False
    if value_type is dict:
        return any(has_expr(v) for v in value.values())
    if value_type is list or value_type is tuple:
        return any(has_expr(v) for v in value)
    return isinstance(value, ex.EXPR_TYPES)


def references(value: Any, path: str) -> Iterator[tuple[ex.GetResource | ex.GetAttr, str]]:
    """Every get_resource / get_attr in a prepared value, with the field path where it sits."""
    if isinstance(value, (ex.GetResource, ex.GetAttr)):
        yield value, path
    elif isinstance(value, ex.EXPR_TYPES):
        for node in ex.walk(value):  # inside str_replace / list_join: the function's path
            if isinstance(node, (ex.GetResource, ex.GetAttr)):
                yield node, path
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from references(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from references(v, f"{path}[{i}]")


def closest_function(key: str) -> str | None:
    """The intrinsic function a one-key table probably meant, when its key is a near miss."""
    if key in ex.FUNCTIONS:
        return None
    cutoff = 0.6 if key.startswith(("get_", "str_", "list_")) else 0.8
    close = difflib.get_close_matches(key.lower().replace("-", "_"), ex.FUNCTIONS, 1, cutoff)
    return close[0] if close else None


def scan(value: Any, path: str) -> tuple[str | None, list[tuple[str, str, str]]]:
    """One pass over a raw value: where %index% first appears (or None), and one-key tables
    whose key looks like a misspelled intrinsic function (path, key, suggestion)."""
    index_at: str | None = None
    near_misses: list[tuple[str, str, str]] = []
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if index_at is None and INDEX_TOKEN in item:
                index_at = where
        elif isinstance(item, dict):
            if len(item) == 1:
                (key,) = item
                suggestion = closest_function(str(key))
                if suggestion:
                    near_misses.append((where, str(key), suggestion))
            for k, v in item.items():
                if index_at is None and INDEX_TOKEN in str(k):
                    index_at = where
                stack.append((v, f"{where}.{k}" if where else str(k)))
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
    return index_at, near_misses
