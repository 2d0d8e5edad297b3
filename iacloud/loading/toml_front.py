"""The TOML front: a stack file or environment file read within the input limits, tomllib's
errors made specific, and the stack's top level checked (`iacloud.stack.StackFile`) and turned
into the neutral StackDocument. Everything TOML-specific in loading lives here."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from iacloud import limits
from iacloud.loading.diagnostics import SECTIONS, Sink
from iacloud.loading.document import StackDocument
from iacloud.loading.model_errors import validate_model
from iacloud.stack import STACK_NAME, StackFile

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")
_TOML_TWICE = re.compile(r"Cannot declare \((.*)\) twice")
_TOML_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'")
_TOML_KEY = re.compile(r"^\s*([^=\[#\s][^=#]*?)\s*=")
_TOML_TABLE = re.compile(r"^\s*\[+\s*([^\]]+?)\s*\]+")
CONDITION = "condition"  # the key of a resource's or output's condition
_ENTRY_KIND = {"resources": "resource", "parameters": "parameter", "outputs": "output"}


def read_stack(path: Path, sink: Sink) -> StackDocument | None:
    """The stack file as a StackDocument; None when it cannot be read or parsed (reported).
    A malformed top level is reported, and its well-formed sections are still returned."""
    doc = _read(path, sink, "the stack file", "stack file not found", sink.file)
    if doc is None:
        return None
    top = validate_model(StackFile, doc, sink, "", frozenset())
    positions = {
        (key, n): i
        for key in SECTIONS
        if isinstance(doc.get(key), dict)
        for i, n in enumerate(doc[key])
    }

    def section(key: str) -> dict[str, Any]:
        value = getattr(top, key) if top is not None else doc.get(key, {})
        return value if isinstance(value, dict) else {}

    conditions, resources, outputs = _conditions(section("resources"), section("outputs"))
    name = top.name if top is not None else doc.get("name")
    if not isinstance(name, str) or not STACK_NAME.fullmatch(name):
        name = None  # reported by StackFile
    if name is None and "name" not in doc and not STACK_NAME.fullmatch(path.stem):
        sink.add(
            f"the file name {json.dumps(path.stem)} is not a valid stack name",
            field="name",
            hint='set name = "..." in the file: letters, digits, "_" or "-"',
        )
    return StackDocument(
        path=path,
        version=top.version if top is not None else doc.get("version", 0),
        name=name or path.stem,
        description=top.description if top is not None else "",
        parameters=section("parameters"),
        resources=resources,
        outputs=outputs,
        provider=section("provider"),
        positions=positions,
        conditions=conditions,
    )


def _conditions(
    resources: dict[str, Any], outputs: dict[str, Any]
) -> tuple[dict[tuple[str, str], Any], dict[str, Any], dict[str, Any]]:
    """A resource's or output's `condition` (HOT's, as `iacloud convert` writes it: an
    expression of equals/not/and/or/contains over parameters) taken out of its table into the
    document's conditions, which loading decides once parameters are known."""
    conditions: dict[tuple[str, str], Any] = {}
    sections = []
    for key, entries in (("resources", resources), ("outputs", outputs)):
        out: dict[str, Any] = {}
        for name, entry in entries.items():
            if isinstance(entry, dict) and CONDITION in entry:
                conditions[(key, name)] = entry[CONDITION]
                entry = {k: v for k, v in entry.items() if k != CONDITION}
            out[name] = entry
        sections.append(out)
    return conditions, sections[0], sections[1]


def read_env_file(path: Path, sink: Sink) -> dict[str, Any] | None:
    """An environment file (`-e env.toml`) as plain data; None when unreadable (reported)."""
    return _read(path, sink, "the environment file", "environment file not found", str(path))


def _read(path: Path, sink: Sink, what: str, missing: str, file: str) -> dict[str, Any] | None:
    text: str | None = None
    try:
        text = limits.read_text(path)
        return limits.parse_toml(text)
    except FileNotFoundError:
        sink.add(missing, file=file)
    except limits.InputError as exc:
        sink.add(str(exc).replace("the file", what, 1), file=file)
    except tomllib.TOMLDecodeError as exc:
        sink.add(toml_error_message(str(exc), text), file=file)
    return None


def toml_error_message(message: str, text: str | None) -> str:
    """tomllib's message with its line and column, made specific where it is vague. The one
    place that reads tomllib's wording: when that changes, the message falls back to
    "invalid TOML: " and tomllib's own text."""
    twice = _TOML_TWICE.match(message)
    position = _TOML_POSITION.search(message)
    at = f" (line {position.group(1)}, column {position.group(2)})" if position else ""
    if twice:
        keys = _TOML_QUOTED.findall(twice.group(1))
        if len(keys) == 2 and keys[0] in ("resources", "parameters", "outputs", "provider"):
            return f"duplicate {_ENTRY_KIND.get(keys[0], 'provider')} '{keys[1]}'{at}"
        return f"duplicate table [{'.'.join(keys)}]{at}"
    if message.startswith("Cannot overwrite a value") and position and text is not None:
        lines = text.splitlines()
        line_no = int(position.group(1))
        if 0 < line_no <= len(lines):
            key = _TOML_KEY.match(lines[line_no - 1])
            table = next(
                (
                    t.group(1)
                    for ln in reversed(lines[: line_no - 1])
                    if (t := _TOML_TABLE.match(ln))
                ),
                None,
            )
            if key:
                inside = f" in [{table}]" if table else ""
                return f"duplicate key '{key.group(1)}'{inside}{at}"
    return f"invalid TOML: {message}"
