"""Drift suppressions: the `.iacloudignore` file, which names drift a team has accepted for now.

One suppression per line; `#` starts a comment (the rest of the line is kept as the reason):

    ADDRESS[.FIELD]  [until YYYY-MM-DD]  [# reason]

`*` in ADDRESS or FIELD matches any run of characters (`web[*]` is every instance of `web`,
`*.power_state` that field of every resource); brackets are literal, as in addresses.
A suppression applies through its `until` date (inclusive); after it, it stops applying and the
drift report says so, so accepted drift cannot be forgotten.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from iacloud import limits
from iacloud.errors import Diagnostic, UserError

FILE_NAME = ".iacloudignore"

_LINE = re.compile(
    r"(?P<address>[A-Za-z0-9_*\[\]-]+)(?:\.(?P<field>[A-Za-z_*][A-Za-z0-9_*]*))?"
    r"(?:\s+until\s+(?P<until>\S+))?"
)


@dataclass(frozen=True)
class Suppression:
    """One line of an ignore file."""

    pattern: str  # the address pattern
    field: str | None  # None: the whole resource (and orphans claiming its address)
    until: date | None
    reason: str
    file: str
    line: int

    @property
    def text(self) -> str:
        return self.pattern + (f".{self.field}" if self.field else "")

    def expired(self, today: date) -> bool:
        return self.until is not None and today > self.until

    def covers(self, address: str, field: str | None = None) -> bool:
        """Whether this suppression hides `address` (a field of it, if `field` is given)."""
        if not _glob(self.pattern).fullmatch(address):
            return False
        if self.field is None:
            return True
        return field is not None and _glob(self.field).fullmatch(field) is not None


@functools.lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def parse(text: str, file: str) -> list[Suppression]:
    """Parse an ignore file; every bad line is reported at once with its line number."""
    out: list[Suppression] = []
    errors: list[Diagnostic] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        body, _, reason = raw.partition("#")
        body = body.strip()
        if not body:
            continue
        m = _LINE.fullmatch(body)
        if m is None:
            errors.append(
                Diagnostic(
                    f"line {number}: expected 'ADDRESS[.FIELD] [until YYYY-MM-DD]', got {body!r}",
                    file=file,
                )
            )
            continue
        until = None
        if m["until"] is not None:
            try:
                until = date.fromisoformat(m["until"])
            except ValueError:
                errors.append(
                    Diagnostic(
                        f"line {number}: 'until {m['until']}' is not a date (YYYY-MM-DD)",
                        file=file,
                    )
                )
                continue
        out.append(Suppression(m["address"], m["field"], until, reason.strip(), file, number))
    if errors:
        raise UserError(errors)
    return out


def load(stack_file: Path, explicit: Path | None) -> list[Suppression]:
    """The suppressions for a stack: `explicit` (which must exist), else `.iacloudignore`
    beside the stack file if there is one."""
    path = explicit if explicit is not None else stack_file.parent / FILE_NAME
    if explicit is None and not path.exists():
        return []
    try:
        text = limits.read_text(path)
    except OSError as exc:
        raise UserError(
            Diagnostic(f"cannot read the ignore file: {exc.strerror}", file=str(path))
        ) from None
    except limits.InputError as exc:
        raise UserError(Diagnostic(f"the ignore file: {exc}", file=str(path))) from None
    return parse(text, str(path))
