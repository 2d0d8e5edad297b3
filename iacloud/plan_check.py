"""A saved plan checked as the user input it is, before apply takes the lock or begins a state
version: the plan file may have been edited, damaged or written by another iacloud. The model
(`iacloud.plan`) checks its shape; this checks what the model cannot know: addresses, resource
types and providers this installation has, dependencies inside the plan, and values apply will
evaluate. Every problem is a diagnostic naming the plan's field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from iacloud import expressions
from iacloud.errors import Diagnostic, UserError
from iacloud.plan import Plan
from iacloud.provider import Registry

MAX_DIAGNOSTICS = 20


def _problems(plan: Plan, registry: Registry) -> Iterator[Diagnostic]:
    addresses: set[str] = set()
    for i, c in enumerate(plan.changes):
        where = f"changes[{i}]"
        try:
            expressions.parse_address(c.address)
        except expressions.ExpressionError as exc:
            yield Diagnostic(str(exc), address=where, field="address")
            continue
        if c.address in addresses:
            yield Diagnostic(f"'{c.address}' has two changes", address=where, field="address")
        addresses.add(c.address)
        if c.type not in registry.types:
            yield Diagnostic(f"unknown resource type '{c.type}'", address=where, field="type")
        elif registry.provider_of[c.type] != c.provider:
            yield Diagnostic(
                f"type '{c.type}' belongs to provider '{registry.provider_of[c.type]}', "
                f"not '{c.provider}'",
                address=where,
                field="provider",
            )
        for j, dep in enumerate(c.dependencies):
            try:
                expressions.parse_address(dep)
            except expressions.ExpressionError as exc:
                yield Diagnostic(str(exc), address=where, field=f"dependencies[{j}]")
        for side in ("before", "after"):
            value = getattr(c, side)
            if value is not None:
                yield from _values(value, where, side)
    for i, u in enumerate(plan.state_updates):
        try:
            expressions.parse_address(u.address)
        except expressions.ExpressionError as exc:
            yield Diagnostic(str(exc), address=f"state_updates[{i}]", field="address")
    for name, value in plan.outputs.items():
        yield from _values(value, f"outputs.{name}", "value")


def _values(value: Any, where: str, field: str) -> Iterator[Diagnostic]:
    """Inputs and outputs as apply will read them: expression nodes in their JSON form."""
    try:
        expressions.from_json(value)
    except (expressions.ExpressionError, ValueError, TypeError, KeyError) as exc:
        yield Diagnostic(f"not a value iacloud wrote: {exc}", address=where, field=field)


def check(plan: Plan, registry: Registry, file: str | None = None) -> None:
    """Raise UserError listing what in the plan this iacloud cannot apply."""
    found = []
    for d in _problems(plan, registry):
        found.append(Diagnostic(d.message, file, d.address, d.field, d.hint))
        if len(found) >= MAX_DIAGNOSTICS:
            break
    if found:
        raise UserError(found)
