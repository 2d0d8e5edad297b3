"""The neutral stack document: what a format's front (TOML today, HOT YAML next) makes of a
file, and all the rest of loading consumes. Entries stay raw plain data (dicts, lists,
scalars, one-key function tables) so that each is validated on its own and one bad resource
does not hide the mistakes in the others.

The shape of each entry, whatever the format wrote:
- parameters: NAME -> {type, default, description, label, hidden, constraints}
- resources: NAME -> {type, count, depends_on} plus each property as its own key (a front
  whose format nests them under `properties`, as HOT does, lifts them up)
- outputs: NAME -> {value, description, sensitive}
- provider: NAME -> that provider's settings
Intrinsic functions are one-key tables ({get_param = "x"}), as in HOT. Conditions (HOT's, or a
TOML entry's `condition` key) are `conditions`: (section, entry name) -> a condition expression
(equals/not/and/or over parameters, condition names already inlined by the front); an entry
whose condition is false is left out once parameters are known. `lines`
("resources.web.flavor" -> line) and `notes` (what was accepted but ignored) come from formats
that keep them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iacloud.errors import Diagnostic


@dataclass(frozen=True)
class StackDocument:
    path: Path
    version: int | str  # the format's version as written, already checked by the front
    name: str  # from the file, else the file name (reported by the front when invalid)
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    provider: dict[str, Any] = field(default_factory=dict)
    # (section, entry name) -> the entry's place in its section, for reporting in file order
    positions: dict[tuple[str, str], int] = field(default_factory=dict)
    conditions: dict[tuple[str, str], Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    notes: list[Diagnostic] = field(default_factory=list)

    @property
    def file(self) -> str:
        return str(self.path)
