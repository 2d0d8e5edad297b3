"""The HOT front: a Heat Orchestration Template (YAML with `heat_template_version`) read safely
(`yaml_input`), its version and the functions that version allows checked, HOT-only functions
resolved (`hot_functions`), its resources mapped onto ours (`hot_types`), and the result handed
on as the same neutral StackDocument the TOML front makes. Also Heat environment files
(`-e env.yaml`: `parameters`, `parameter_defaults`).

A template is chosen by its extension (.yaml, .yml, .template, .hot); everything else is TOML.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from iacloud.errors import did_you_mean
from iacloud.loading import hot_attributes as ha
from iacloud.loading import hot_functions as hf
from iacloud.loading import hot_types as ht
from iacloud.loading.diagnostics import Sink
from iacloud.loading.document import StackDocument
from iacloud.loading.hot_params import env_reader, parameter
from iacloud.loading.yaml_input import read_yaml_file
from iacloud.provider import Registry
from iacloud.stack import INDEX_TOKEN, STACK_NAME

_SUFFIXES = (".yaml", ".yml", ".template", ".hot")
_TOP = (
    "heat_template_version",
    "description",
    "parameter_groups",
    "parameters",
    "resources",
    "outputs",
    "conditions",
)
_RESOURCE_KEYS = (
    "type",
    "properties",
    "depends_on",
    "metadata",
    "deletion_policy",
    "update_policy",
    "condition",
    "external_id",
)


def is_template(path: Path) -> bool:
    """By name only: opening the file here could block (a FIFO) before the bounded reader."""
    return path.suffix.lower() in _SUFFIXES


def read_template(path: Path, registry: Registry, sink: Sink) -> StackDocument | None:
    """The template as a StackDocument; None when it cannot be read at all (reported)."""
    read = read_yaml_file(path, sink, "template")
    if read is None:
        return None
    data, key_lines = read
    file = str(path)
    if not isinstance(data, dict):
        sink.add(
            "a HOT template is a YAML map with heat_template_version, resources, ...", file=file
        )
        return None
    lines = {".".join(p): n for p, n in key_lines.items()}
    for key in data:
        if key not in _TOP:
            sink.add(
                f"unknown top-level key {key!r}",
                str(key),
                hint=did_you_mean(str(key), _TOP),
                line=lines.get(str(key)),
            )
    try:
        version = hf.version_of(data.get("heat_template_version"))
    except hf.HotError as exc:
        what = "missing heat_template_version" if "heat_template_version" not in data else str(exc)
        sink.add(
            what, "heat_template_version", hint=exc.hint, line=lines.get("heat_template_version")
        )
        return None
    name = path.stem
    if not STACK_NAME.fullmatch(name):
        sink.add(
            f"the file name {json.dumps(name)} is not a valid stack name",
            hint="rename the template: letters, digits, '_' or '-'",
        )
    sections = {k: data.get(k) or {} for k in ("parameters", "resources", "outputs", "conditions")}
    for key, value in sections.items():
        if not isinstance(value, dict):
            sink.add(f"'{key}' must be a map", key, line=lines.get(key))
            sections[key] = {}
    if sections["conditions"] and version < "2016-10-14":
        sink.add(
            "conditions need heat_template_version 2016-10-14 or later",
            "conditions",
            line=lines.get("conditions"),
        )
    rewriter = hf.Rewriter(version, path.parent, name, sections["conditions"])
    conditions: dict[tuple[str, str], Any] = {}
    notes: list[tuple[str, str, str]] = []

    def rewrite(value: Any, address: str, where: str) -> tuple[bool, Any]:
        try:
            return True, rewriter.value(value, where)
        except hf.HotError as exc:
            _report(sink, address, exc, lines)
            return False, None

    def condition(address: str, value: Any) -> None:
        section, entry = address.split(".", 1)
        if version < "2016-10-14":
            sink.add(
                "condition needs heat_template_version 2016-10-14 or later", address, "condition"
            )
            return
        try:
            conditions[(section, entry)] = rewriter.condition(value, "condition")
        except hf.HotError as exc:
            _report(sink, address, exc, lines)

    parameters = {
        pname: parameter(pname, pdef, sink, notes) for pname, pdef in sections["parameters"].items()
    }
    entries: dict[str, ht.Entry] = {}
    for rname, rdef in sections["resources"].items():
        address = f"resources.{rname}"
        entry = _entry(str(rname), rdef, address, sink, lines, notes, registry)
        if entry is None:
            continue
        ok, props = rewrite(entry.properties, address, "")
        ok2, count = rewrite(entry.count, address, "count")
        if not (ok and ok2):
            continue
        entry.properties, entry.count = props, count
        if isinstance(rdef, dict) and "condition" in rdef:
            condition(address, rdef["condition"])
        entries[entry.name] = entry
    translation = ht.translate(entries, frozenset(registry.types))
    for address, exc in translation.problems:
        _report(sink, address, exc, lines)
    notes.extend(translation.notes)
    resources: dict[str, Any] = {}
    net_names: dict[str, str] = {
        str(e.properties["name"]): e.name
        for e in entries.values()
        if e.hot_type == "OS::Neutron::Net" and isinstance(e.properties.get("name"), str)
    }
    # what refers to a resource that could not be mapped (reported) is left out, so one
    # mistake does not also read as "unknown resource" everywhere it is used
    broken = set(translation.failed) | {str(n) for n in sections["resources"]} - set(entries)
    while True:
        more = {
            n
            for n, r in translation.resources.items()
            if n not in broken and ht.referenced(r) & broken
        }
        if not more:
            break
        broken |= more
    retained = {
        str(n)
        for n, r in sections["resources"].items()
        if isinstance(r, dict) and deletion_policy(r) == "retain"
    }
    for rname in sorted(retained):
        part = entries.get(rname)
        if part is not None and part.into is not None and part.into not in retained:
            # a Subnet is its Net's cidr, an attachment an entry of its server's volumes...:
            # Retain on the part alone would be silently dropped with the whole
            sink.add(
                f"deletion_policy Retain: a {part.hot_type} is part of {part.into!r} in "
                "iacloud, which is deleted",
                f"resources.{rname}",
                "deletion_policy",
                f"give {part.into!r} deletion_policy Retain too",
                line=lines.get(f"resources.{rname}.deletion_policy"),
            )
    for rname, rdef in translation.resources.items():
        if rname in broken:
            continue
        base = rname if rname in entries else rname.rsplit("-", 1)[0]  # SERVER-nic0
        if "depends_on" in rdef:
            rdef = {**rdef, "depends_on": [d for d in rdef["depends_on"] if d not in broken]}
        if base in retained:  # a server's own ports are kept with it
            rdef = {**rdef, "deletion_policy": "retain"}
        try:
            resources[rname] = ha.rewrite_references(rdef, entries, net_names, "")
        except hf.HotError as exc:
            _report(sink, f"resources.{base}", exc, lines)
    outputs: dict[str, Any] = {}
    hidden = {n for n, p in parameters.items() if isinstance(p, dict) and p.get("hidden") is True}
    for oname, odef in sections["outputs"].items():
        address = f"outputs.{oname}"
        if not isinstance(odef, dict):
            outputs[oname] = odef  # reported by the loader
            continue
        extra = set(odef) - {"value", "description", "condition"}
        for key in sorted(extra):
            sink.add(f"unknown key {key!r} in an output", address, key, line=lines.get(address))
        ok, value = rewrite(odef.get("value"), address, "value")
        if not ok or ht.referenced(value) & broken:
            continue
        try:
            value = ha.rewrite_references(value, entries, net_names, "value")
        except hf.HotError as exc:
            _report(sink, address, exc, lines)
            continue
        if "condition" in odef:
            condition(address, odef["condition"])
        outputs[oname] = {"value": value, "description": str(odef.get("description") or "")}
        if _uses(value, hidden):
            # Heat has no sensitive outputs: one that shows a hidden parameter is one
            outputs[oname]["sensitive"] = True
    our_lines = _our_lines(lines)
    for hot_name, prop, ours in translation.renames:  # size -> size_gib, cidr -> the net's
        line = lines.get(f"resources.{hot_name}.properties.{prop}")
        holder = entries[hot_name].into or hot_name
        if line:
            our_lines.setdefault(f"resources.{holder}.{ours}", line)
    positions = {
        (key, n): i
        for key in ("parameters", "resources", "outputs")
        for i, n in enumerate(sections[key])
    }
    description = data.get("description")
    return StackDocument(
        path=path,
        version=version,
        name=name,
        description=description if isinstance(description, str) else "",
        parameters=parameters,
        resources=resources,
        outputs=outputs,
        positions=positions,
        conditions=conditions,
        lines=our_lines,
        notes=ht.notes_as_diagnostics(notes, file, our_lines),
    )


def _uses(value: Any, names: set[str]) -> bool:
    """Whether a value reads one of the parameters `names` with get_param."""
    if not names:
        return False
    if isinstance(value, dict):
        if len(value) == 1 and "get_param" in value:
            arg = value["get_param"]
            first = arg[0] if isinstance(arg, list) and arg else arg
            if isinstance(first, str) and first in names:
                return True
        return any(_uses(v, names) for v in value.values())
    if isinstance(value, list):
        return any(_uses(v, names) for v in value)
    return False


def _report(sink: Sink, address: str, exc: hf.HotError, lines: dict[str, int]) -> None:
    hot = _hot_path(address, exc.path)
    line = None
    parts = hot.split(".")
    for n in range(len(parts), 0, -1):
        line = lines.get(".".join(parts[:n]))
        if line:
            break
    sink.add(str(exc), address, exc.path or None, exc.hint, line=line)


def _hot_path(address: str, field: str) -> str:
    """Our address + field as the path of the HOT keys ('resources.web.properties.image')."""
    section, _, name = address.partition(".")
    name = name.split("[", 1)[0]
    field = field.split("[", 1)[0]
    if section == "resources":
        return ".".join(p for p in (section, name, "properties", field) if p)
    return ".".join(p for p in (section, name, field) if p)


def _our_lines(lines: dict[str, int]) -> dict[str, int]:
    """HOT key lines under our addresses: resources.web.properties.image -> resources.web.image."""
    out: dict[str, int] = {}
    for path, line in lines.items():
        parts = path.split(".")
        if len(parts) >= 4 and parts[0] == "resources" and parts[2] == "properties":
            out[".".join([parts[0], parts[1], *parts[3:]])] = line
        elif len(parts) >= 4 and parts[0] == "resources" and parts[2] == "resource_def":
            if len(parts) >= 5 and parts[3] == "properties":
                out[".".join([parts[0], parts[1], *parts[4:]])] = line
        else:
            out.setdefault(path, line)
    return out


def _entry(
    name: str,
    rdef: Any,
    address: str,
    sink: Sink,
    lines: dict[str, int],
    notes: list[tuple[str, str, str]],
    registry: Registry,
) -> ht.Entry | None:
    line = lines.get(address)
    if not isinstance(rdef, dict):
        sink.add("a resource is a map with type and properties", address, line=line)
        return None
    for key in rdef:
        if key not in _RESOURCE_KEYS:
            sink.add(
                f"unknown key {key!r} in a resource",
                address,
                str(key),
                did_you_mean(str(key), _RESOURCE_KEYS),
                line=lines.get(f"{address}.{key}"),
            )
    rtype = rdef.get("type")
    props = rdef.get("properties") or {}
    count = None
    if not isinstance(props, dict):
        sink.add("properties must be a map", address, "properties", line=line)
        return None
    if rtype == ht.GROUP:
        group = _group(props, address, sink, lines, notes)
        if group is None:
            return None
        rtype, props, count = group
    if not isinstance(rtype, str):
        sink.add("a resource needs a type", address, "type", line=line)
        return None
    if rtype not in ht.HANDLERS:
        if rtype in ht.PENDING:
            message = f"{rtype}: {ht.PENDING[rtype]} are not supported yet"
        elif rtype == ht.GROUP:
            message = "a ResourceGroup inside a ResourceGroup is not supported"
        elif rtype.endswith((".yaml", ".yml", ".template")) or "::" not in rtype:
            message = f"resource type {rtype!r}: nested templates are not supported"
        else:
            message = f"unsupported resource type {rtype!r}"
        sink.add(
            message,
            address,
            "type",
            "supported: " + ", ".join(ht.SUPPORTED),
            line=lines.get(f"{address}.type") or line,
        )
        return None
    for key in ("metadata", "update_policy"):
        if key in rdef:
            notes.append((address, key, f"'{key}' is accepted and has no effect"))
    if deletion_policy(rdef) is None:
        policy = rdef.get("deletion_policy")
        hint = (
            "take a volume_snapshot resource of the volume instead"
            if str(policy).lower() == "snapshot"
            else "Delete or Retain"
        )
        sink.add(
            f"deletion_policy {policy!r} is not supported: {hint}",
            address,
            "deletion_policy",
            line=lines.get(f"{address}.deletion_policy"),
        )
        return None
    if "external_id" in rdef:
        sink.add(
            "external_id is not supported: adopt existing objects with 'iacloud import'",
            address,
            "external_id",
            line=lines.get(f"{address}.external_id"),
        )
        return None
    deps = rdef.get("depends_on") or []
    if isinstance(deps, str):
        deps = [deps]
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        sink.add(
            "depends_on is a resource name or a list of them", address, "depends_on", line=line
        )
        return None
    return ht.Entry(name, rtype, dict(props), list(deps), count)


def deletion_policy(rdef: dict[str, Any]) -> str | None:
    """Our deletion_policy for a HOT resource's (Heat spells it Delete/Retain, any case);
    None for one we do not support."""
    policy = rdef.get("deletion_policy", "Delete")
    if isinstance(policy, str) and policy.lower() in ("delete", "retain"):
        return policy.lower()
    return None


def _group(
    props: dict[str, Any],
    address: str,
    sink: Sink,
    lines: dict[str, int],
    notes: list[tuple[str, str, str]],
) -> tuple[Any, dict[str, Any], Any] | None:
    line = lines.get(address)
    extra = set(props) - {
        "count",
        "index_var",
        "resource_def",
        "removal_policies",
        "removal_policies_mode",
    }
    for key in sorted(extra):
        sink.add(
            f"property {key!r} of OS::Heat::ResourceGroup is not supported", address, key, line=line
        )
    rdef = props.get("resource_def")
    if not isinstance(rdef, dict) or "type" not in rdef:
        sink.add(
            "resource_def must be a map with type and properties",
            address,
            "resource_def",
            line=line,
        )
        return None
    extra = set(rdef) - {"type", "properties", "metadata"}
    for key in sorted(extra):
        sink.add(f"resource_def: {key!r} is not supported", address, "resource_def", line=line)
    for key in ("removal_policies", "removal_policies_mode"):
        if props.get(key):
            notes.append((address, key, f"'{key}' is accepted and has no effect"))
    index_var = props.get("index_var", INDEX_TOKEN)
    if not isinstance(index_var, str) or not index_var:
        sink.add("index_var must be a non-empty string", address, "index_var", line=line)
        return None
    inner = rdef.get("properties") or {}
    if not isinstance(inner, dict):
        sink.add("resource_def properties must be a map", address, "resource_def", line=line)
        return None
    if index_var != INDEX_TOKEN:
        inner = _replace_text(inner, index_var, INDEX_TOKEN)
    return rdef["type"], inner, props.get("count", 1)


def _replace_text(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {_replace_text(k, old, new): _replace_text(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_text(v, old, new) for v in value]
    return value


__all__ = ["env_reader", "is_template", "read_template"]
