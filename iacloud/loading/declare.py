"""Resource declaration, the first pass over the resources: names, types and counts, so that
references can be checked in any order. Builds the symbol table and the stack's size budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iacloud import expressions as ex
from iacloud import limits
from iacloud.errors import did_you_mean
from iacloud.loading.diagnostics import Sink
from iacloud.loading.model_errors import validate_model
from iacloud.loading.parameters import ParameterSet
from iacloud.loading.prepare import BROKEN, prepare
from iacloud.loading.references import SymbolTable, Target
from iacloud.loading.scan import has_expr
from iacloud.loading.shape import check_name, check_table
from iacloud.loading.values import show
from iacloud.provider import Registry, ResourceType
from iacloud.stack import MAX_COUNT, ResourceDef


@dataclass
class Declared:
    """A resource whose definition is well-formed: the second pass expands it."""

    name: str
    definition: ResourceDef
    type_cls: type[ResourceType] | None


def declare_resources(
    raw: dict[str, Any], registry: Registry, params: ParameterSet, sink: Sink
) -> tuple[SymbolTable, list[Declared]]:
    symbols = SymbolTable()
    declared: list[Declared] = []
    instance_total = 0  # resource instances declared so far
    for name, definition in raw.items():
        address = f"resources.{name}"
        symbols.names.append(name)
        if not check_name(name, address, sink):
            continue
        if not check_table(
            definition, address, 'type = "...", then its properties', sink, params.secrets
        ):
            symbols.targets[name] = Target(name, None, counted=False, count=None)
            continue
        rdef = validate_model(ResourceDef, definition, sink, address, params.secrets)
        type_name = definition.get("type")
        type_cls = registry.types.get(type_name) if isinstance(type_name, str) else None
        if type_cls is None and isinstance(type_name, str):
            hint = did_you_mean(type_name, registry.types)
            if hint is None and registry.load_errors:
                hint = "; ".join(d.message for d in registry.load_errors)
            if hint is None:
                hint = "known types: " + ", ".join(sorted(registry.types))
            sink.add(f"unknown resource type '{type_name}'", address, "type", hint)
        if rdef is None:
            counted = "count" in definition
            symbols.targets[name] = Target(name, type_cls, counted=counted, count=None)
            continue
        counted = rdef.count is not None
        count = _evaluate_count(rdef.count, address, params, sink) if counted else None
        instances = count if counted and count is not None else 1
        if instance_total + instances > limits.MAX_RESOURCES:
            if instance_total <= limits.MAX_RESOURCES:  # said once, where it happens
                sink.add(
                    f"the stack would have {instance_total + instances:,} resources "
                    f"with this one's instances, more than the limit of "
                    f"{limits.MAX_RESOURCES:,}",
                    address,
                    "count" if counted else None,
                )
            count = None  # no instances made: the rest of the stack is still checked
        instance_total += instances
        target = Target(name, type_cls, counted, count)
        if counted and count is not None:
            target.addresses = [f"{name}[{i}]" for i in range(count)]
        symbols.targets[name] = target
        declared.append(Declared(name, rdef, type_cls))
    return symbols, declared


def _evaluate_count(raw: Any, address: str, params: ParameterSet, sink: Sink) -> int | None:
    value = raw
    if isinstance(raw, dict):
        value = prepare(raw, "count", sink, address, params)
        if value is BROKEN or isinstance(value, ex.GetParam):
            return None  # reported, here or with the parameter
        if has_expr(value):
            sink.add(
                "count must be known before anything is created: an integer or "
                "{ get_param = ... }, not a reference to a resource",
                address,
                "count",
            )
            return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        sink.add(f"count must be an integer, found {show(value, params.secrets)}", address, "count")
        return None
    if not 0 <= value <= MAX_COUNT:
        sink.add(
            f"count must be between 0 and {MAX_COUNT}, found {show(value, params.secrets)}",
            address,
            "count",
        )
        return None
    return value
