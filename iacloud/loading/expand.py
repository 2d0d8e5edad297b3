"""Resource expansion, the second pass: one resource's fields checked, prepared and validated
against its type's schema, references resolved, and `count` expanded into one ResourceConfig
per instance. What does not mention %index% is done once for all instances."""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from iacloud import expressions as ex
from iacloud import limits
from iacloud.config import ResourceConfig
from iacloud.errors import did_you_mean
from iacloud.loading.declare import Declared
from iacloud.loading.diagnostics import GroupSink, Sink
from iacloud.loading.model_errors import field_set, validate_model
from iacloud.loading.parameters import ParameterSet
from iacloud.loading.prepare import BROKEN, prepare
from iacloud.loading.references import SymbolTable
from iacloud.loading.scan import has_expr, plain, scan
from iacloud.provider import Registry
from iacloud.rules import Lifecycle, LifecycleTable, normal
from iacloud.stack import INDEX_TOKEN, RESOURCE_KEYS


@dataclass
class DependencyBudget:
    """The stack's dependencies counted across its resources, against limits.MAX_DEPENDENCIES."""

    total: int = 0
    over: bool = False  # the limit was reached (reported once): nothing more is built


@dataclass(slots=True)  # made once per resource: a frozen dataclass costs 10x to build
class _Fields:
    """A resource's fields sorted by what expansion does with them."""

    order: list[str]  # the fields kept, in file order
    shared: dict[str, Any]  # no %index%: the same for every instance
    varying: dict[str, Any]  # mention %index%: prepared per instance
    shared_deps: list[tuple[int, str]]
    varying_deps: list[tuple[int, str]]


def expand_resource(
    res: Declared,
    symbols: SymbolTable,
    params: ParameterSet,
    registry: Registry,
    budget: DependencyBudget,
    report: Sink,
) -> list[ResourceConfig]:
    """Fields, references, inputs of one resource; one config per instance."""
    name, rdef, type_cls = res.name, res.definition, res.type_cls
    group = f"resources.{name}"
    target = symbols.targets[name]
    model = type_cls.Inputs if type_cls is not None else None
    fields = _sort_fields(res, target.counted, model, report)
    order, varying, varying_deps = fields.order, fields.varying, fields.varying_deps
    lifecycle = _lifecycle(res, model, group, report)

    # what does not mention %index% is the same for every instance: done once
    shared: dict[str, Any] = {}
    unresolved: set[str] = set()  # broken, or holding references: left out of validation
    shared_deps: set[str] = set()
    for key, value in fields.shared.items():
        if plain(value):
            shared[key] = value
            continue
        prepared = prepare(value, key, report, group, params)
        if prepared is BROKEN:
            unresolved.add(key)
            continue
        if prepared is ex.ELIDED:  # a two-argument `if` that is false: the field is unset
            continue
        shared[key] = prepared
        if has_expr(prepared):
            unresolved.add(key)
            shared_deps |= symbols.references(prepared, report, group, key, name)
    for i, dep in fields.shared_deps:
        shared_deps |= symbols.explicit_dependency(dep, report, group, f"depends_on[{i}]", name)

    if not target.counted:
        indices: list[int | None] = [None]
    elif target.count:
        indices = list(range(target.count))
    else:
        # no instances (or an unusable count): still check the definition, as index 0
        indices = [0]
    emit = not target.counted or bool(target.count)

    sink: Sink = GroupSink(report.file, group) if target.counted else report
    # one tuple for every instance that adds nothing of its own: a whole-group reference
    # (N addresses) is then sorted and stored once, not once per instance
    shared_deps_sorted = tuple(sorted(shared_deps))
    last_extra: AbstractSet[str] = frozenset()
    last_sorted = shared_deps_sorted
    configs: list[ResourceConfig] = []
    provider = registry.provider_of.get(rdef.type, "")
    if model is not None and not varying:  # identical instances: validate once
        _check_inputs(model, shared, unresolved, sink, group, params)
    for index in indices:
        if budget.over:
            break  # the stack fails on its size: nothing more is built for it
        address = name if index is None else f"{name}[{index}]"
        where_address = f"resources.{address}" if emit else group
        extra: set[str] = set()  # what this instance depends on beyond the shared deps
        properties = shared
        if varying or varying_deps:
            assert index is not None
            properties = dict(shared)
            instance_unresolved = set(unresolved)
            for key, value in varying.items():
                prepared = prepare(
                    ex.substitute_index(value, index), key, sink, where_address, params
                )
                if prepared is BROKEN:
                    instance_unresolved.add(key)
                    continue
                if prepared is ex.ELIDED:
                    properties.pop(key, None)
                    continue
                properties[key] = prepared
                if has_expr(prepared):
                    instance_unresolved.add(key)
                    if not budget.over:
                        extra |= symbols.references(prepared, sink, where_address, key, name, emit)
            for i, dep in varying_deps:
                extra |= symbols.explicit_dependency(
                    dep.replace(INDEX_TOKEN, str(index)),
                    sink,
                    where_address,
                    f"depends_on[{i}]",
                    name,
                    emit,
                )
            if model is not None and varying:
                _check_inputs(model, properties, instance_unresolved, sink, where_address, params)
        if emit and not budget.over:
            own = len(shared_deps) + len(extra)
            if extra and not extra.isdisjoint(shared_deps):
                own = len(shared_deps | extra)
            budget.total += own
            if budget.total > limits.MAX_DEPENDENCIES:
                budget.over = True
                report.add(
                    f"the stack's resources would have more than "
                    f"{limits.MAX_DEPENDENCIES:,} dependencies: '{address}' depends on "
                    f"{own:,} others",
                    group,
                    hint="a reference to a whole counted group from each instance of "
                    "another makes count x count dependencies: refer to one instance "
                    "('name[%index%]'), or make the counts smaller",
                )
        if budget.over:
            break
        # instances whose own references name the same addresses (a whole group inside a
        # %index% template) share one tuple too
        if extra <= shared_deps:
            deps_sorted = shared_deps_sorted
        elif extra != last_extra:
            last_extra, last_sorted = extra, tuple(sorted(shared_deps | extra))
            deps_sorted = last_sorted
        else:
            deps_sorted = last_sorted
        if emit:
            configs.append(
                ResourceConfig(
                    address=address,
                    name=name,
                    index=index,
                    type=rdef.type,
                    provider=provider,
                    # one dict per instance; nested values of shared fields are shared
                    properties={k: properties[k] for k in order if k in properties},
                    depends_on=deps_sorted,
                    lifecycle=lifecycle,
                )
            )
    if isinstance(sink, GroupSink):
        sink.flush_into(report)
    return configs


def _sort_fields(
    res: Declared, counted: bool, model: type[BaseModel] | None, report: Sink
) -> _Fields:
    """Unknown fields, misspelled functions and a stray %index% reported; the rest sorted into
    shared and varying."""
    rdef, group = res.definition, f"resources.{res.name}"
    known = field_set(model) if model is not None else None
    order: list[str] = []
    shared: dict[str, Any] = {}
    varying: dict[str, Any] = {}
    for key, value in rdef.properties.items():
        if known is not None and key not in known:
            _unknown_field(key, rdef.type, known, group, report)
            continue
        if plain(value):  # most values: no functions, nothing to scan
            index_at = key if INDEX_TOKEN in str(value) else None
        else:
            index_at, near_misses = scan(value, key)
            for where, fn, suggestion in near_misses:
                report.add(
                    f"unknown function '{fn}'", group, where, f"did you mean '{suggestion}'?"
                )
        if index_at is not None and not counted:
            report.add(
                f"{INDEX_TOKEN} is only replaced in a counted resource",
                group,
                index_at,
                hint="add count = N, or remove %index%",
            )
            continue
        order.append(key)
        (varying if index_at is not None else shared)[key] = value

    shared_deps: list[tuple[int, str]] = []
    varying_deps: list[tuple[int, str]] = []
    for i, dep in enumerate(rdef.depends_on):
        if INDEX_TOKEN not in dep:
            shared_deps.append((i, dep))
        elif counted:
            varying_deps.append((i, dep))
        else:
            report.add(
                f"{INDEX_TOKEN} is only replaced in a counted resource",
                group,
                f"depends_on[{i}]",
                hint="add count = N, or remove %index%",
            )
    return _Fields(order, shared, varying, shared_deps, varying_deps)


def _lifecycle(
    res: Declared, model: type[BaseModel] | None, group: str, report: Sink
) -> Lifecycle | None:
    """The resource's lifecycle rules (None: the defaults); `ignore_changes` must name fields
    of its type, and `create_before_destroy` must be possible for it."""
    rdef = res.definition
    if rdef.lifecycle is None and rdef.deletion_policy == "delete":
        return None  # the usual case, kept cheap: stacks of 10,000 resources load this often
    table = rdef.lifecycle or LifecycleTable()
    if model is not None:
        known = field_set(model)
        for i, name in enumerate(table.ignore_changes):
            if name not in known:
                report.add(
                    f"ignore_changes: '{name}' is not a field of type '{rdef.type}'",
                    group,
                    f"lifecycle.ignore_changes[{i}]",
                    did_you_mean(name, known) or "fields: " + ", ".join(sorted(known)),
                )
    if table.create_before_destroy and res.type_cls is not None:
        for c in res.type_cls.replace_collisions:
            if not c.unless:  # no change of inputs tells old and new apart
                report.add(
                    f"create_before_destroy cannot work for type '{rdef.type}': the new object "
                    f"would have the same {c.what} as the old one while both exist",
                    group,
                    "lifecycle.create_before_destroy",
                    "remove it: this type is replaced delete-first",
                )
    rules = Lifecycle(**table.model_dump(), deletion_policy=rdef.deletion_policy)
    return normal(rules)


def _unknown_field(
    key: str, type_name: str, known: Iterable[str], address: str, report: Sink
) -> None:
    if key == "properties":
        hint = "properties go directly in the resource table, not under 'properties'"
    else:
        hint = did_you_mean(key, [*known, *RESOURCE_KEYS])
    report.add(f"unknown field '{key}' for type '{type_name}'", address, key, hint)


def _check_inputs(
    model: type[BaseModel],
    properties: dict[str, Any],
    unresolved: set[str],
    sink: Sink,
    address: str,
    params: ParameterSet,
) -> None:
    """Validate what is known now: fields that still hold a reference are left out (their
    value exists only after apply), and their absence is not an error."""
    data = {k: v for k, v in properties.items() if k not in unresolved}
    validate_model(model, data, sink, address, params.secrets, skip_missing=unresolved)
