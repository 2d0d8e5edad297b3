"""Where the loader's diagnostics go: a sink, the group sink that merges the repeated problems of
a counted resource's instances, and the final report (file order, hidden values masked)."""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping

from iacloud.errors import Diagnostic, UserError
from iacloud.redact import DIAGNOSTIC_MASK, Redactor

# per field of a counted resource: beyond this many distinct problems the rest are only counted
MAX_INSTANCE_DIAGNOSTICS = 3
# the sections of a stack in file order, for sorting diagnostics
SECTIONS = {"parameters": 1, "resources": 2, "outputs": 3, "provider": 4}


class Sink:
    """Where diagnostics go; `count` lets a caller tell whether a step added any."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[Diagnostic] = []

    @property
    def count(self) -> int:
        return len(self.items)

    def add(
        self,
        message: str,
        address: str | None = None,
        field: str | None = None,
        hint: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        self.items.append(
            Diagnostic(message, file or self.file, address, field or None, hint, line)
        )

    def extend(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.items.extend(diagnostics)


class GroupSink(Sink):
    """Diagnostics of the instances of one counted resource: a mistake in a shared template
    would otherwise be repeated for each of up to 10,000 instances."""

    def __init__(self, file: str, group_address: str) -> None:
        super().__init__(file)
        self.group_address = group_address
        self._same: dict[tuple[str | None, str], int] = {}  # (field, message) -> repeats
        self._per_field: dict[str | None, int] = {}
        self._dropped: dict[str | None, int] = {}
        self._total = 0

    @property
    def count(self) -> int:
        return self._total

    def add(
        self,
        message: str,
        address: str | None = None,
        field: str | None = None,
        hint: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        self._total += 1
        key = (field or None, message)
        if key in self._same:
            self._same[key] += 1
            return
        if self._per_field.get(key[0], 0) >= MAX_INSTANCE_DIAGNOSTICS:
            self._dropped[key[0]] = self._dropped.get(key[0], 0) + 1
            return
        self._per_field[key[0]] = self._per_field.get(key[0], 0) + 1
        self._same[key] = 0
        super().add(message, address, field, hint, file, line)

    def flush_into(self, target: Sink) -> None:
        for d in self.items:
            repeats = self._same.get((d.field, d.message), 0)
            if repeats:
                more = f"the same in {repeats} other instance{'s' if repeats > 1 else ''}"
                d = Diagnostic(
                    d.message, d.file, d.address, d.field, f"{d.hint}; {more}" if d.hint else more
                )
            target.items.append(d)
        for fld, n in self._dropped.items():
            target.add(
                f"{n} more instance{'s' if n > 1 else ''} with problems in this field",
                self.group_address,
                fld,
            )


def line_of(lines: Mapping[str, int], address: str | None, field: str | None) -> int | None:
    """The line of the most specific known place: address + field, its first steps, then the
    entry itself. `lines` keys are "resources.web" and "resources.web.flavor"."""
    if not address:
        return None
    entry = address.split("[", 1)[0]
    if field:
        parts = field.replace("[", ".").replace("]", "").split(".")
        for n in range(len(parts), 0, -1):
            found = lines.get(".".join([entry, *parts[:n]]))
            if found:
                return found
    return lines.get(entry)


def fail(
    sink: Sink,
    secrets: Iterable[str],
    positions: Mapping[tuple[str, str], int],
    lines: Mapping[str, int] | None = None,
) -> typing.NoReturn:
    """Raise every collected diagnostic as one UserError, in file order: top level, then
    parameters, resources, outputs and providers, each entry's problems together. `lines`
    (formats that keep them) adds the line of each diagnostic about the stack file."""
    # last line of defence: a hidden value that slipped into a message through an evaluation
    # error; very short values are left alone (they would blank out numbers)
    redactor = Redactor(secrets, mask=DIAGNOSTIC_MASK, min_length=3)
    diagnostics = [
        Diagnostic(
            redactor.text(d.message),
            d.file,
            d.address,
            d.field,
            redactor.text(d.hint) if d.hint else d.hint,
            d.line
            or (line_of(lines, d.address, d.field) if lines and d.file == sink.file else None),
        )
        for d in sink.items
    ]

    def sort_key(i: int) -> tuple[int, int, int]:
        section, _, rest = (diagnostics[i].address or "").partition(".")
        name = rest.split("[", 1)[0]
        return (SECTIONS.get(section, 0), positions.get((section, name), 0), i)

    raise UserError([diagnostics[i] for i in sorted(range(len(diagnostics)), key=sort_key)])
