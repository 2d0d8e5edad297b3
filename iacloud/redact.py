"""Redaction of hidden parameter values and sensitive fields wherever values are printed: the one
masking implementation, used by the loader's diagnostics and by every rendered plan, state and
output."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MASK = "(sensitive)"
# the loader's messages mask with this shorter form: `value **** violates length`
DIAGNOSTIC_MASK = "****"


class Redactor:
    """Masks every occurrence of a hidden value inside strings, recursively. Values shorter
    than `min_length` are left alone (masking every "1" would blank out numbers)."""

    def __init__(self, hidden_values: Iterable[str], mask: str = MASK, min_length: int = 1) -> None:
        self.mask = mask
        # longest first, so a value containing another is masked whole
        self.values = sorted(
            {v for v in hidden_values if v and len(v) >= min_length}, key=len, reverse=True
        )

    def text(self, text: str) -> str:
        for v in self.values:
            if v in text:
                text = text.replace(v, self.mask)
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
            return self.mask if str(value) in self.values else value
        return value
