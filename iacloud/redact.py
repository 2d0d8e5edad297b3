"""Redaction of hidden parameter values and sensitive fields wherever values are printed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MASK = "(sensitive)"


class Redactor:
    """Masks every occurrence of a hidden value inside strings, recursively."""

    def __init__(self, hidden_values: Iterable[str]) -> None:
        # longest first, so a value containing another is masked whole
        self.values = sorted({v for v in hidden_values if v}, key=len, reverse=True)

    def text(self, text: str) -> str:
        for v in self.values:
            if v in text:
                text = text.replace(v, MASK)
        return text

    def value(self, value: Any) -> Any:
        if not self.values:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return MASK if str(value) in self.values else value
        return value
