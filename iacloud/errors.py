"""User-facing diagnostics: every mistake in user input becomes a Diagnostic, never a traceback."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass

# control characters (C0, DEL, C1) and the invisible format characters that reorder or hide
# text (bidi overrides, zero-width): quoted user text must not forge lines or colour a terminal
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def printable(text: str) -> str:
    """Text for a terminal line: control and invisible format characters as escapes."""
    return _UNPRINTABLE.sub(_escape, text)


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in user input, located by file, resource address and field."""

    message: str
    file: str | None = None
    address: str | None = None  # "resources.web[0]", "parameters.web_count", "outputs.ips"
    field: str | None = None  # dotted path inside the resource: "networks[0].network"
    hint: str | None = None
    line: int | None = None  # 1-based, where the format keeps positions (HOT YAML)

    def __str__(self) -> str:
        where = [p for p in (self.file, self.address) if p]
        if self.line and self.file:
            where.insert(1, f"line {self.line}")
        if self.field:
            where.append(f"field '{self.field}'")
        text = ": ".join([", ".join(where), self.message]) if where else self.message
        return printable(f"{text} ({self.hint})" if self.hint else text)

    def to_json(self) -> dict[str, str | None]:
        return {
            "message": self.message,
            "file": self.file,
            "address": self.address,
            "field": self.field,
            "hint": self.hint,
            "line": self.line,
        }


class IacloudError(Exception):
    """Base of every error the CLI reports without a traceback."""

    exit_code = 1


class UserError(IacloudError):
    """One or more diagnostics about user input; nothing was changed."""

    def __init__(self, diagnostics: Iterable[Diagnostic] | Diagnostic | str) -> None:
        if isinstance(diagnostics, str):
            diagnostics = [Diagnostic(diagnostics)]
        elif isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class ProviderError(IacloudError):
    """A backend refused or failed an operation; the message says what and why."""


class CleanupUnproven(ProviderError):
    """A step failed and the provider cannot prove it left nothing behind: its clean-up failed
    too, or the connection to the host was lost on the way. The engine keeps the step's pending
    operation, so the next plan looks for the objects by their ownership tag and adopts or
    removes them."""


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A 'did you mean' hint for a misspelled name, or None when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
