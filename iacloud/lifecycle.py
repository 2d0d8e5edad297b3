"""Lifecycle rules in the plan: what prevent_destroy refuses, what ignore_changes leaves alone,
where create_before_destroy cannot work, and deletion_policy = "retain" as a forget.

The rules of a resource the stack declares are the stack's; a resource the stack no longer
declares (and every resource on destroy, which needs no stack file) keeps the rules it was last
applied with, recorded in state (`ResourceState.lifecycle`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from iacloud.config import StackConfig
from iacloud.errors import Diagnostic
from iacloud.plan import Action, Change, FieldChange, StateUpdate
from iacloud.provider import ResourceType
from iacloud.rules import DEFAULT, Lifecycle, normal
from iacloud.state.model import ResourceState, Snapshot
from iacloud.suppressions import Suppression


def recorded(rs: ResourceState | None) -> Lifecycle:
    return (rs.lifecycle if rs is not None else None) or DEFAULT


def rules_for(address: str, config: StackConfig, rs: ResourceState | None) -> Lifecycle:
    """The stack's rules for a declared resource, else those recorded with it."""
    rc = config.resources.get(address)
    if rc is not None:
        return rc.lifecycle or DEFAULT
    return recorded(rs)


def keep_ignored(
    after: dict[str, Any], prior_inputs: Mapping[str, Any], rules: Lifecycle | None
) -> dict[str, Any]:
    """The planned inputs with each ignored field at its prior value (recorded, or as refresh
    found it): neither a stack edit nor drift of those fields is planned."""
    if rules is None or not rules.ignore_changes:
        return after
    kept = dict(after)
    for name in rules.ignore_changes:
        if name in prior_inputs:
            kept[name] = prior_inputs[name]
    return kept


def drop_ignored(fields: list[FieldChange], rules: Lifecycle | None) -> list[FieldChange]:
    if rules is None or not rules.ignore_changes:
        return fields
    return [f for f in fields if f.field not in rules.ignore_changes]


def collisions(
    type_cls: type[ResourceType],
    fields: Sequence[FieldChange],
    file: str,
    address: str,
) -> list[Diagnostic]:
    """Why a create-before-destroy replacement cannot work: the old and the new object would
    share something that must be unique while both exist."""
    changed = {f.field for f in fields}
    out = []
    for c in type_cls.replace_collisions:
        if c.unless and changed.intersection(c.unless):
            continue
        how = (
            f"change {' or '.join(c.unless)} in the same plan, or drop create_before_destroy"
            if c.unless
            else "drop create_before_destroy for this resource (it is replaced delete-first)"
        )
        out.append(
            Diagnostic(
                f"create_before_destroy: the new {type_cls.type_name} would have the same "
                f"{c.what} as the old one while both exist",
                file=file,
                address=f"resources.{address}",
                field="lifecycle.create_before_destroy",
                hint=how,
            )
        )
    return out


def refuse_destroys(
    changes: Iterable[Change],
    config: StackConfig,
    snapshot: Snapshot,
    destroy: bool,
) -> list[Diagnostic]:
    """prevent_destroy: one diagnostic per change that would delete or replace a protected
    object."""
    out = []
    for c in changes:
        if c.action is not Action.DELETE and not c.action.is_replace:
            continue
        rs = snapshot.resources.get(c.address)
        if rs is None:
            continue  # what an interrupted create left: never recorded, never protected
        rules = recorded(rs) if destroy else rules_for(c.address, config, rs)
        if not rules.prevent_destroy:
            continue
        if c.action.is_replace:
            why = "replace it (" + "; ".join(c.reasons) + ")" if c.reasons else "replace it"
            hint = "set prevent_destroy = false and apply, then replace it"
        elif destroy:
            why, hint = "delete it (destroy)", "set prevent_destroy = false and apply first"
        else:
            why = "delete it (" + "; ".join(c.reasons or ["not in the stack any more"]) + ")"
            hint = (
                "put it back in the stack, or apply it with prevent_destroy = false before "
                "removing it; 'iacloud state rm' forgets it without deleting it"
            )
        out.append(
            Diagnostic(
                f"prevent_destroy is set, but the plan would {why}; nothing was changed",
                file=str(config.file),
                address=f"resources.{c.address}",
                field="lifecycle.prevent_destroy",
                hint=hint,
            )
        )
    return out


def retained(rs: ResourceState, destroy: bool) -> StateUpdate:
    """deletion_policy = "retain": the object stays on the host and leaves state."""
    why = "destroy" if destroy else "not in the stack any more"
    return StateUpdate(
        address=rs.address,
        type=rs.type,
        action="forget",
        id=rs.id,
        retained=True,
        reason=f"{why}; deletion_policy = retain: the object {rs.id} is left on the host",
    )


def record_rules(rs: ResourceState, rules: Lifecycle | None) -> StateUpdate | None:
    """A state update recording rules changed in the stack alone (nothing else changes), so
    that they hold once the stack no longer declares the resource; None if unchanged."""
    if normal(rs.lifecycle) == normal(rules):
        return None
    return StateUpdate(
        address=rs.address,
        type=rs.type,
        action="accept",
        id=rs.id,
        inputs=dict(rs.inputs),
        attributes=dict(rs.attributes),
        sensitive=sorted({*rs.sensitive_inputs, *rs.sensitive_attributes}),
        lifecycle=rules or DEFAULT,
        reason="lifecycle rules recorded",
    )


def drift_suppressions(config: StackConfig, snapshot: Snapshot) -> list[Suppression]:
    """ignore_changes as drift suppressions: drift of those fields is reported as suppressed."""
    out = []
    for address, rs in snapshot.resources.items():
        rules = rules_for(address, config, rs)
        for name in rules.ignore_changes:
            out.append(
                Suppression(
                    pattern=address.replace("*", ""),
                    field=name,
                    until=None,
                    reason="lifecycle ignore_changes",
                    file=str(config.file),
                    line=0,
                )
            )
    return out
