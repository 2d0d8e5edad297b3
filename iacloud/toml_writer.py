"""A stack as TOML text for people: what `iacloud convert` writes from the neutral
StackDocument (whatever front read it), so a team can keep the result in git and edit it.

Each parameter, resource, output and provider is its own `[section.name]` table in the
document's order; values are inline (function calls read as `{ get_resource = "base" }`, as a
person writes them); a long list goes one item per line; a multi-line string (user_data) is a
`\"\"\"` string when that keeps it byte for byte. Comments go where the caller says: a header,
and notes above an entry (where a mapping was lossy). A resource's or output's HOT condition
is its `condition` key (read back by the TOML front). What is written reads back
(`tomllib.loads`) into exactly the document's values (tests/unit/test_toml_writer.py).

Hand-written rather than tomli_w: it writes nested tables as `[a.b.c]` sections, has no inline
tables outside arrays and no comments, and a converted stack needs all three to read well.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from iacloud.errors import printable
from iacloud.loading.document import StackDocument

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# what a multi-line basic string cannot hold raw: control characters other than tab and
# newline, and \r (TOML would read \r\n as a newline)
_NOT_MULTILINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
WIDTH = 100  # a line longer than this is broken up where the value allows
SECTIONS = ("parameters", "resources", "outputs", "provider")


class TomlWriteError(ValueError):
    """A value TOML cannot hold (None, a NaN key, an unknown type)."""


def key(name: str) -> str:
    """A TOML key: bare when it can be, else a quoted string."""
    return name if _BARE_KEY.fullmatch(name) else string(name)


def string(text: str) -> str:
    """A one-line basic string: JSON's escapes are TOML's, except that TOML needs DEL escaped
    and no surrogate pairs (non-ASCII stays as it is)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _multiline(text: str) -> str | None:
    """A multi-line basic string holding `text` exactly, or None when one cannot."""
    if "\n" not in text or _NOT_MULTILINE.search(text):
        return None
    body = text.replace("\\", "\\\\").replace('"""', '""\\"')
    if body.endswith('"'):
        body = body[:-1] + '\\"'  # a quote right before the closing delimiter would join it
    # the newline right after the opening delimiter is trimmed by TOML: the text starts after
    return '"""\n' + body + '"""'


def value(v: Any, indent: int = 0) -> str:
    """A TOML value, inline; a list too long for one line goes one item per line."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _multiline(v) or string(v)
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return _array(list(v), indent)
    if isinstance(v, Mapping):
        return _inline_table(v, indent)
    if v is None:
        raise TomlWriteError("TOML has no null value")
    raise TomlWriteError(f"cannot write a {type(v).__name__} as TOML")


def _one_line(v: Any, multiline: bool = False) -> str:
    """A value on one line: strings with newlines stay escaped inside arrays and tables,
    unless `multiline` (an inline table may hold a multi-line string: a script in a
    `str_replace` template reads as the script)."""
    if isinstance(v, str):
        return (_multiline(v) if multiline else None) or string(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_one_line(x, multiline) for x in v) + "]"
    if isinstance(v, Mapping):
        if not v:
            return "{}"
        items = ", ".join(f"{key(str(k))} = {_one_line(x, multiline)}" for k, x in v.items())
        return "{ " + items + " }"
    return value(v)


def _array(items: list[Any], indent: int) -> str:
    flat = _one_line(items)
    if len(flat) + indent <= WIDTH or not items:
        return flat
    pad = " " * (indent + 4)
    lines = [
        f"{pad}{value(x, indent + 4) if isinstance(x, list) else _one_line(x)}," for x in items
    ]
    return "[\n" + "\n".join(lines) + "\n" + " " * indent + "]"


def _inline_table(table: Mapping[Any, Any], indent: int) -> str:
    # an inline table must stay on one line (TOML 1.0): long ones are long
    return _one_line(table)


def _entry_lines(table: Mapping[str, Any]) -> list[str]:
    out = []
    for k, v in table.items():
        if isinstance(v, str) and "\n" in v and _multiline(v) is not None:
            out.append(f"{key(k)} = {_multiline(v)}")
        elif isinstance(v, Mapping):
            out.append(f"{key(k)} = {_one_line(v, multiline=True)}")
        else:
            out.append(f"{key(k)} = {value(v)}")
    return out


def _comment(lines: Sequence[str]) -> list[str]:
    """Comment lines; control and invisible characters escaped (TOML refuses most in
    comments, and a note may quote a template's value)."""
    out = []
    for line in lines:
        for part in str(line).split("\n"):
            out.append(f"# {printable(part)}".rstrip())
    return out


def _with_condition(entry: Mapping[str, Any], condition: Any) -> dict[str, Any]:
    """The entry with its `condition` right after `type` (first when it has none)."""
    out: dict[str, Any] = {}
    if "type" not in entry:
        out["condition"] = condition
    for k, v in entry.items():
        out[k] = v
        if k == "type":
            out["condition"] = condition
    return out


def write_document(
    document: StackDocument,
    header: Sequence[str] = (),
    notes: Mapping[tuple[str, str], Sequence[str]] | None = None,
) -> str:
    """The document as a TOML stack file (format version 1). `header`: comment lines at the
    top; `notes`: comment lines above an entry, by (section, name)."""
    notes = notes or {}
    out: list[str] = _comment(header)
    if out:
        out.append("")
    out.append("version = 1")
    out.append(f"name = {string(document.name)}")
    if document.description:
        out.append(f"description = {value(document.description)}")
    for section in SECTIONS:
        entries: Mapping[str, Any] = getattr(document, section)
        for name, entry in entries.items():
            out.append("")
            out += _comment(notes.get((section, name), ()))
            if not isinstance(entry, Mapping):
                raise TomlWriteError(f"{section}.{name} is not a table")
            out.append(f"[{section}.{key(name)}]")
            condition = document.conditions.get((section, name))
            if condition is not None:
                # HOT's condition, decided once parameters are known (loading.conditions)
                entry = _with_condition(entry, condition)
            out += _entry_lines(entry)
    return "\n".join(out) + "\n"
