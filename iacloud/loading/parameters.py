"""Parameters: their definitions, then values from defaults < environment files < `-p`, each
checked against its type and constraints. The result is a ParameterSet: the values every later
step substitutes, and the hidden values (secrets) every message must mask."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iacloud.errors import Diagnostic, UserError, did_you_mean
from iacloud.loading.constraints import APPLIES_TO, constraint_problem, constraint_text
from iacloud.loading.diagnostics import Sink
from iacloud.loading.model_errors import validate_model
from iacloud.loading.param_values import convert_param, parse_param_assignment, type_problem
from iacloud.loading.shape import check_name, check_table
from iacloud.loading.values import render, string_forms
from iacloud.redact import DIAGNOSTIC_MASK
from iacloud.site import SiteCatalog
from iacloud.stack import EnvFile, ParameterDef

# reads one environment file into its plain data, or None with the problem reported
EnvReader = Callable[[Path, Sink], "dict[str, Any] | None"]


@dataclass
class ParameterSet:
    """The parameters of one load. `names` holds every declared name (also broken definitions,
    so a use of one is not "unknown"); `values` only the valid ones."""

    names: set[str] = field(default_factory=set)
    definitions: dict[str, ParameterDef] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    hidden_names: set[str] = field(default_factory=set)
    # every candidate value of a hidden parameter, also wrong ones: masked in every message
    secrets: set[str] = field(default_factory=set)
    # a given value was wrong (reported): no further errors about it
    failed: set[str] = field(default_factory=set)

    def hidden_values(self) -> list[str]:
        """The valid hidden values' string forms, longest first, for the plan's redaction."""
        return sorted(
            {
                s
                for n in self.hidden_names
                if n in self.values
                for s in string_forms(self.values[n])
            },
            key=lambda s: (-len(s), s),
        )


def load_parameters(
    raw: dict[str, Any],
    assignments: Sequence[str],
    env_files: Sequence[Path],
    read_env: EnvReader,
    sink: Sink,
    site: SiteCatalog | None = None,
) -> ParameterSet:
    """`site`: the catalog custom constraints (nova.flavor, ...) are checked against."""
    params = ParameterSet()
    for name, definition in raw.items():
        _define(params, name, definition, sink)
    for env in env_files:
        data = read_env(env, sink)
        if data is not None:
            _apply_env_file(params, data, str(env), sink)
    for text in assignments:
        _assign(params, text, sink)
    for name, pdef in params.definitions.items():
        _check_value(params, name, pdef, sink, site)
    return params


def _define(params: ParameterSet, name: str, definition: Any, sink: Sink) -> None:
    address = f"parameters.{name}"
    params.names.add(name)
    if isinstance(definition, dict) and definition.get("hidden") is True:
        params.hidden_names.add(name)
        params.secrets.update(string_forms(definition.get("default")))
    if not check_name(name, address, sink) or not check_table(
        definition, address, 'type = "string", default = ...', sink, params.secrets
    ):
        return
    pdef = validate_model(ParameterDef, definition, sink, address, params.secrets)
    if pdef is None:
        return
    ok = True
    if pdef.has_default:
        problem = type_problem(pdef.default, pdef.type)
        if problem:
            sink.add(f"bad default: {problem}", address, "default")
            ok = False
    for i, c in enumerate(pdef.constraints):
        if pdef.type not in APPLIES_TO[c.kind]:
            applies = " or ".join(APPLIES_TO[c.kind])
            sink.add(
                f"a {c.kind} constraint applies to {applies} parameters, not {pdef.type}",
                address,
                f"constraints[{i}]",
            )
            ok = False
    if ok:
        params.definitions[name] = pdef
        if pdef.has_default:
            params.values[name] = pdef.default


def _check_value(
    params: ParameterSet, name: str, pdef: ParameterDef, sink: Sink, site: SiteCatalog | None
) -> None:
    address = f"parameters.{name}"
    if name in params.failed:
        return
    if name not in params.values:
        sink.add(
            f"parameter '{name}' has no default and no value was given",
            address,
            hint=f"pass -p {name}=VALUE or set it in an environment file (-e)",
        )
        return
    value = params.values[name]
    for i, c in enumerate(pdef.constraints):
        problem = constraint_problem(value, c, pdef.hidden, site)
        if problem:
            detail = c.description or problem
            shown = DIAGNOSTIC_MASK if pdef.hidden else render(value)
            sink.add(
                f"parameter '{name}': value {shown} violates {constraint_text(c)}: {detail}",
                address,
                f"constraints[{i}]",
            )
            params.failed.add(name)
    if name in params.failed:
        del params.values[name]  # no cascade of errors where it is used


def _apply_env_file(params: ParameterSet, data: dict[str, Any], efile: str, sink: Sink) -> None:
    if isinstance(data.get("parameters"), dict):
        for name in params.hidden_names & set(data["parameters"]):
            params.secrets.update(string_forms(data["parameters"][name]))
    envdef = validate_model(EnvFile, data, sink, "", params.secrets, file=efile)
    if envdef is None:
        return
    for name, value in envdef.parameters.items():
        address = f"parameters.{name}"
        if name not in params.names:
            hint = did_you_mean(name, params.names)
            sink.add(f"unknown parameter '{name}'", address, hint=hint, file=efile)
            continue
        pdef = params.definitions.get(name)
        if pdef is None:  # its definition is broken and already reported
            continue
        problem = type_problem(value, pdef.type)
        if problem:
            sink.add(f"parameter '{name}': {problem}", address, file=efile)
            params.failed.add(name)
            params.values.pop(name, None)
            continue
        params.failed.discard(name)
        params.values[name] = value


def _assign(params: ParameterSet, text: str, sink: Sink) -> None:
    try:
        name, raw = parse_param_assignment(text)
    except UserError as exc:
        sink.extend(
            Diagnostic(d.message, sink.file, "parameters", None, d.hint) for d in exc.diagnostics
        )
        return
    address = f"parameters.{name}"
    if name in params.hidden_names:
        params.secrets.update(s for s in (raw, *raw.split(",")) if s)
    if name not in params.names:
        hint = did_you_mean(name, params.names)
        sink.add(f"-p {name}: unknown parameter '{name}'", address, hint=hint)
        return
    pdef = params.definitions.get(name)
    if pdef is None:
        return
    try:
        value = convert_param(raw, pdef.type)
    except ValueError as exc:
        shown = DIAGNOSTIC_MASK if pdef.hidden else render(raw)
        sink.add(f"-p {name}: {exc}, found {shown}", address)
        params.failed.add(name)
        params.values.pop(name, None)
        return
    if pdef.hidden:
        params.secrets.update(string_forms(value))
    params.failed.discard(name)
    params.values[name] = value
