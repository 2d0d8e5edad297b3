"""HOT parameters and Heat environment files: parameter definitions in our shape (types
string, number, boolean, comma_delimited_list -> list, json -> map or list), values written as
strings converted as Heat does ("2", "on", "a,b"), and `-e env.yaml` read as a Heat environment
(`parameters`, then `parameter_defaults`, whose names of other templates are ignored)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iacloud import limits
from iacloud.errors import did_you_mean
from iacloud.loading.diagnostics import Sink
from iacloud.loading.document import StackDocument
from iacloud.loading.parameters import EnvReader
from iacloud.loading.yaml_input import read_yaml_file
from iacloud.stack import CUSTOM_CONSTRAINTS

_PARAM_TYPES = {
    "string": "string",
    "number": "number",
    "boolean": "boolean",
    "comma_delimited_list": "list",
    "json": "map",
}
_TRUE = ("t", "true", "on", "y", "yes", "1")
_FALSE = ("f", "false", "off", "n", "no", "0")


def parameter(name: Any, pdef: Any, sink: Sink, notes: list[tuple[str, str, str]]) -> Any:
    """A HOT parameter definition in our shape (types and defaults converted)."""
    address = f"parameters.{name}"
    if not isinstance(pdef, dict):
        return pdef  # reported by the loader
    out: dict[str, Any] = {}
    hot_type = pdef.get("type")
    our_type = _PARAM_TYPES.get(hot_type) if isinstance(hot_type, str) else None
    if our_type is None:
        sink.add(
            f"unknown parameter type {hot_type!r}",
            address,
            "type",
            "one of: " + ", ".join(_PARAM_TYPES),
        )
        our_type = "string"
    if hot_type == "json" and isinstance(pdef.get("default"), list):
        our_type = "list"
    out["type"] = our_type
    for key, value in pdef.items():
        if key == "type":
            continue
        if key == "default":
            if value is None:
                continue
            try:
                out["default"] = convert_value(value, str(hot_type))
            except ValueError as exc:
                sink.add(f"bad default: {exc}", address, "default")
        elif key in ("description", "label", "hidden"):
            out[key] = value
        elif key == "constraints":
            out["constraints"] = _constraints(value, address, sink, notes)
        elif key in ("immutable", "tags"):
            notes.append((address, key, f"'{key}' is accepted and has no effect"))
        else:
            sink.add(f"unknown key {key!r} in a parameter", address, str(key))
    return out


def _constraints(value: Any, address: str, sink: Sink, notes: list[tuple[str, str, str]]) -> Any:
    if not isinstance(value, list):
        return value  # reported by the loader
    out = []
    for i, c in enumerate(value):
        if isinstance(c, dict) and c.get("custom_constraint") in CUSTOM_CONSTRAINTS:
            # checked at load time: catalog names against the site catalog, addresses by syntax
            out.append(c)
            continue
        if isinstance(c, dict) and "custom_constraint" in c:
            notes.append(
                (
                    address,
                    f"constraints[{i}]",
                    f"custom_constraint {c['custom_constraint']!r} is not checked",
                )
            )
            continue
        if isinstance(c, dict) and "modulo" in c:
            sink.add("the modulo constraint is not supported", address, f"constraints[{i}]")
            continue
        out.append(c)
    return out


def convert_value(value: Any, hot_type: str) -> Any:
    """A value written for a HOT parameter (often a string) in the parameter's type."""
    if hot_type == "number" and isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"expected a number, found {value!r}") from None
        return int(number) if number.is_integer() and "." not in value else number
    if hot_type == "boolean" and isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"expected a boolean, found {value!r}")
    if hot_type == "comma_delimited_list" and isinstance(value, str):
        return value.split(",") if value else []
    if hot_type == "comma_delimited_list" and isinstance(value, list):
        return [str(v) for v in value]
    if hot_type == "json" and isinstance(value, str):
        try:
            return limits.parse_json(value)
        except (ValueError, limits.InputError) as exc:
            raise ValueError(f"expected JSON: {exc}") from None
    if hot_type == "string" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def env_reader(document: StackDocument | None, toml_reader: EnvReader) -> EnvReader:
    """The reader of `-e` files for one stack: YAML files as Heat environments (with the
    template's parameter types, for its values written as strings), others as TOML."""
    types: dict[str, str] = {}
    if document is not None:
        for name, pdef in document.parameters.items():
            if isinstance(pdef, dict) and isinstance(pdef.get("type"), str):
                types[str(name)] = pdef["type"]

    def read(path: Path, sink: Sink) -> dict[str, Any] | None:
        if Path(path).suffix.lower() not in (".yaml", ".yml"):
            return toml_reader(path, sink)
        return _read_env(Path(path), sink, types, document is not None)

    return read


_OUR_TO_HOT = {"list": "comma_delimited_list", "map": "json"}


def _read_env(
    path: Path, sink: Sink, types: dict[str, str], known_only: bool
) -> dict[str, Any] | None:
    read = read_yaml_file(path, sink, "environment file")
    if read is None:
        return None
    data, _ = read
    file = str(path)
    if data is None:
        return {"parameters": {}}
    if not isinstance(data, dict):
        sink.add("an environment file is a map with parameters / parameter_defaults", file=file)
        return None
    for key in data:
        if key in (
            "resource_registry",
            "event_sinks",
            "parameter_merge_strategies",
            "encrypted_param_names",
        ):
            if data[key]:
                sink.add(f"'{key}' in an environment file is not supported", str(key), file=file)
        elif key not in ("parameters", "parameter_defaults"):
            sink.add(
                f"unknown key {key!r} in an environment file",
                str(key),
                file=file,
                hint=did_you_mean(str(key), ("parameters", "parameter_defaults")),
            )
    values: dict[str, Any] = {}
    for key in ("parameter_defaults", "parameters"):
        section = data.get(key) or {}
        if not isinstance(section, dict):
            sink.add(f"'{key}' must be a map", key, file=file)
            continue
        for name, value in section.items():
            # parameter_defaults may name parameters of other templates (Heat ignores them)
            if key == "parameter_defaults" and known_only and name not in types:
                continue
            our = types.get(str(name))
            if our is not None:
                try:
                    value = convert_value(value, _OUR_TO_HOT.get(our, our))
                except ValueError as exc:
                    sink.add(f"parameter '{name}': {exc}", f"parameters.{name}", file=file)
                    continue
            values[str(name)] = value
    return {"parameters": values}


__all__ = ["convert_value", "env_reader", "parameter"]
