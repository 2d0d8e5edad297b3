"""The shape every section entry must have before its own checks: a valid name and a table."""

from __future__ import annotations

import json
from collections.abc import Set as AbstractSet
from typing import Any

from iacloud.loading.diagnostics import Sink
from iacloud.loading.values import show
from iacloud.stack import NAME

NAME_RULE = "1 to 63 letters, digits, '_' or '-', starting with a letter or '_'"


def check_name(name: str, address: str, sink: Sink) -> bool:
    if NAME.fullmatch(name):
        return True
    shown = json.dumps(name, ensure_ascii=False)
    sink.add(f"invalid name {shown}: expected {NAME_RULE}", address)
    return False


def check_table(raw: Any, address: str, what: str, sink: Sink, secrets: AbstractSet[str]) -> bool:
    if isinstance(raw, dict):
        return True
    sink.add(f"expected a table ({what}), found {show(raw, secrets)}", address)
    return False
