"""What interrupted runs left behind: pending operations resolved, leftovers found by their tag.

A pending operation is a step that started and never recorded its result (kill -9, a libvirtd
restart, a clean-up that failed). When its object exists, refresh finds it (by id or ownership
tag) and the planner takes it in as tainted. When it does not, parts of it may still exist (a
server's root and seed volumes whose domain was never defined): these carry the ownership tag,
so `find_leftovers` lists them and `resolve` plans their deletion. A pending operation that left
nothing, and a recorded object that is gone, are forgotten when the plan no longer wants them
(destroy, or dropped from the stack): nothing stays pending forever.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

from iacloud.plan import Action, Change, Reason, ReasonCode, StateUpdate
from iacloud.provider import Observed, Registry, ResourceType, TaggedObject
from iacloud.schema import Disruption
from iacloud.state.model import PendingOperation, Snapshot


def unresolved(snapshot: Snapshot, observed: Mapping[str, Observed]) -> list[PendingOperation]:
    """Pending operations whose address holds neither a recorded nor a found object."""
    return [
        op
        for op in snapshot.pending
        if op.address not in snapshot.resources and op.address not in observed
    ]


def find_leftovers(
    snapshot: Snapshot,
    observed: Mapping[str, Observed],
    resource: Callable[[str], ResourceType],
    registry: Registry,
) -> dict[str, list[TaggedObject]]:
    """The tagged objects (or parts) of this stack at the addresses of unresolved pending
    operations and of recorded objects that are gone (a server whose domain was undefined by a
    killed delete still has its volumes): one listing per resource type involved, none when
    nothing is pending or missing."""
    wanted: dict[str, set[str]] = {}
    for op in unresolved(snapshot, observed):
        wanted.setdefault(op.type, set()).add(op.address)
    for address, rs in snapshot.resources.items():
        if address not in observed:
            wanted.setdefault(rs.type, set()).add(address)
    out: dict[str, list[TaggedObject]] = {}
    for type_name in sorted(t for t in wanted if t in registry.types):
        addresses = wanted[type_name]
        for t in resource(type_name).list_tagged():
            if t.stack_id == snapshot.stack_id and t.address in addresses:
                out.setdefault(t.address, []).append(t)
    return out


def resolve(
    snapshot: Snapshot,
    observed: Mapping[str, Observed],
    leftovers: Mapping[str, Sequence[TaggedObject]],
    registry: Registry,
    keep: Callable[[str], bool],
    destroy: bool,
) -> tuple[list[Change], list[StateUpdate]]:
    """For every address the plan does not keep (`keep` false): delete what an interrupted
    create left (found by tag), and forget pending operations that left nothing and recorded
    objects that no longer exist."""
    changes: list[Change] = []
    updates: list[StateUpdate] = []
    reason = Reason(code=ReasonCode.DESTROY_REQUESTED if destroy else ReasonCode.NOT_IN_STACK)
    for address, rs in snapshot.resources.items():
        if address in observed or keep(address):
            continue
        if found := leftovers.get(address):
            changes.append(
                _delete_leftovers(
                    address,
                    rs.type,
                    rs.provider,
                    rs.id,
                    rs.inputs,
                    rs.dependencies,
                    found,
                    registry,
                    reason,
                    "delete",
                )
            )
            continue  # fmt: skip
        updates.append(
            StateUpdate(
                address=address, type=rs.type, action="forget", id=rs.id,
                reason="it no longer exists",
            )
        )  # fmt: skip
    seen: set[str] = set()
    for op in unresolved(snapshot, observed):
        if op.address in seen or keep(op.address):
            continue
        seen.add(op.address)
        found = leftovers.get(op.address, [])
        if not found:
            updates.append(
                StateUpdate(
                    address=op.address, type=op.type, action="forget", id=op.id,
                    reason=f"its interrupted {op.action} left nothing behind",
                )
            )  # fmt: skip
            continue
        changes.append(
            _delete_leftovers(op.address, op.type, op.provider, None, op.inputs,
                              op.dependencies, found, registry, reason, op.action)
        )  # fmt: skip
    return changes, updates


def _delete_leftovers(
    address: str,
    type_name: str,
    provider: str,
    recorded_id: str | None,
    inputs: Mapping[str, object],
    dependencies: Sequence[str],
    found: Sequence[TaggedObject],
    registry: Registry,
    reason: Reason,
    action: str,
) -> Change:
    whole = [t for t in found if t.part is None]
    type_cls = registry.types.get(type_name)
    return Change(
        address=address,
        type=type_name,
        provider=provider,
        action=Action.DELETE,
        # a part (a server's volume) is deleted through its object, found by tag
        id=whole[0].id if whole else recorded_id,
        before=dict(inputs),
        disruption=type_cls.replace_disruption if type_cls else Disruption.REPLACE,
        why=[
            reason,
            Reason(code=ReasonCode.LEFT_BY_INTERRUPTED, ids=[t.id for t in found], step=action),
        ],
        dependencies=list(dependencies),
    )


def keeps(
    wanted: Collection[str], selected: Collection[str] | None, destroy: bool
) -> Callable[[str], bool]:
    """Which addresses a plan leaves alone: the stack's (unless destroying) and, with
    --target, everything not selected."""

    def keep(address: str) -> bool:
        if selected is not None and address not in selected:
            return True
        return not destroy and address in wanted

    return keep
