"""`iacloud convert`: a stack file of another format (a HOT template) written as the equivalent
TOML stack, for a team that moves it over for good.

The source is loaded in full first (with the parameters and site catalog given, as `plan`
would), so only a valid one is converted. What is written is the neutral document the front
made (`loading.read_document`): resources already mapped onto iacloud's types, names of the
site catalog kept as names. Where the mapping is lossy a comment says so: above an entry, each
note the front made (`StackDocument.notes`, where a front keeps them). The result is then
loaded again, with the same parameters, and must give the same resources, inputs and
dependencies as the source, else nothing is written.

HOT's conditions are kept: each becomes a `condition` key on the resource or output it guards
(the TOML front reads it back), decided when the TOML stack is loaded, so the result is good
for every parameter value and not only the ones given here; `if` expressions stay as they are
(TOML stacks have the same functions). A hidden parameter stays `hidden`; an output that shows
one is `sensitive` (the HOT front marks it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iacloud.config import StackConfig
from iacloud.engine.workspace import Workspace
from iacloud.errors import Diagnostic, UserError
from iacloud.loading import load_stack, read_document
from iacloud.loading.diagnostics import Sink, fail
from iacloud.loading.document import StackDocument
from iacloud.loading.site_file import load_site
from iacloud.site import SiteCatalog
from iacloud.toml_writer import TomlWriteError, write_document


@dataclass(frozen=True)
class Conversion:
    text: str  # the TOML stack
    notes: list[str]  # what was lossy, as printed to the user too


def convert(
    ws: Workspace,
    params: Sequence[str] = (),
    env_files: Sequence[Path] = (),
    out: Path | None = None,
) -> Conversion:
    """The stack file of `ws` as TOML text; written to `out` when given (only once the result
    loads into the same stack). UserError when the source does not load, or the result would
    differ."""
    source = ws.stack_file
    site = load_site(ws.site_file)
    original = load_stack(source, ws.registry, list(params), list(env_files), site)
    sink = Sink(str(source))
    document = read_document(source, ws.registry, sink)
    if document is None:  # pragma: no cover - it loaded just above
        fail(sink, (), {})
    header = [f"Converted from {source.name} by 'iacloud convert'."]
    document = _tidy(_toml_networks(document))
    notes = _entry_notes(document)
    lossy = [
        f"{d.address}{f' {d.field}' if d.field else ''}: {d.message}" for d in _notes(document)
    ]
    if lossy:
        header.append("Lossy mappings are noted above the entries they concern.")
    try:
        text = write_document(document, header, notes)
    except TomlWriteError as exc:
        raise UserError(Diagnostic(f"cannot write as TOML: {exc}", file=str(source))) from None
    target = out if out is not None else source.with_suffix(".toml")
    _check_same(original, text, target.parent, ws, params, env_files, site)
    if out is not None:
        out.write_text(text)
    return Conversion(text, lossy)


def _tidy(document: StackDocument) -> StackDocument:
    """What reads better left out: an output's empty description."""
    outputs = {
        name: {k: v for k, v in o.items() if not (k == "description" and v == "")}
        if isinstance(o, dict)
        else o
        for name, o in document.outputs.items()
    }
    return dataclasses.replace(document, outputs=outputs)


def _toml_networks(document: StackDocument) -> StackDocument:
    """A HOT server's network by catalog name (`site_network`, the HOT front's marker) as a
    TOML stack names one: `{network = NAME}`, resolved against the same catalog."""

    def entry(e: Any) -> Any:
        if isinstance(e, dict) and "site_network" in e:
            return {"network": e["site_network"]}
        return e

    resources = {
        name: {**r, "networks": [entry(e) for e in r["networks"]]}
        if isinstance(r, dict) and isinstance(r.get("networks"), list)
        else r
        for name, r in document.resources.items()
    }
    return dataclasses.replace(document, resources=resources)


def _notes(document: StackDocument) -> list[Diagnostic]:
    return list(getattr(document, "notes", ()))


def _entry_notes(document: StackDocument) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for d in _notes(document):
        section, _, name = (d.address or "").partition(".")
        name = name.split("[", 1)[0]
        where = f"{d.field}: " if d.field else ""
        out.setdefault((section, name), []).append(f"from the template: {where}{d.message}")
    return out


def _check_same(
    original: StackConfig,
    text: str,
    directory: Path,
    ws: Workspace,
    params: Sequence[str],
    env_files: Sequence[Path],
    site: SiteCatalog | None,
) -> None:
    """The TOML loads, beside where it goes (relative paths resolve the same), into the same
    resources with the same inputs and dependencies, and the same outputs."""
    fd, name = tempfile.mkstemp(prefix=".iacloud-convert-", suffix=".toml", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        converted = load_stack(Path(name), ws.registry, list(params), list(env_files), site)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)

    def shape(config: StackConfig) -> object:
        return (
            config.name,
            {a: (r.type, r.properties, r.depends_on) for a, r in config.resources.items()},
            {n: (o.value, o.sensitive) for n, o in config.outputs.items()},
            config.groups,
        )

    if shape(converted) != shape(original):
        before, after = original.resources, converted.resources
        differ = sorted(
            a
            for a in set(before) | set(after)
            if a not in before
            or a not in after
            or (before[a].type, before[a].properties, before[a].depends_on)
            != (after[a].type, after[a].properties, after[a].depends_on)
        )
        raise UserError(
            Diagnostic(
                "the converted stack would not be the same stack"
                + (f": {', '.join(differ[:5])} differ" if differ else ""),
                file=str(ws.stack_file),
                hint="please report this as a bug in iacloud convert",
            )
        )
