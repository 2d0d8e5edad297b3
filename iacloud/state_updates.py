"""Plan entries that change state alone, never the host: objects taken in as refresh found
them (changed outside iacloud, with the stack's agreement), lifecycle rules recorded, and the
whole refresh-only plan (`plan --refresh-only`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from iacloud import lifecycle
from iacloud.errors import UserError
from iacloud.plan import Action, Change, DriftItem, Plan, StateUpdate
from iacloud.provider import Observed
from iacloud.rules import DEFAULT, Lifecycle, normal
from iacloud.state.model import ResourceState, Snapshot

if TYPE_CHECKING:
    from iacloud.planner import Prior


def take_in(
    prior: Prior, rs: ResourceState, rules: Lifecycle | None, drift: DriftItem | None
) -> StateUpdate | None:
    """The state update of a resource the plan leaves unchanged: values changed outside
    iacloud that the stack agrees with (or leaves to the provider) are taken in (an ignored
    field's drift is not: it stays visible to drift), and lifecycle rules changed in the stack
    are recorded. None: state stays as it is."""
    seen = prior.inputs
    if rules is not None and rules.ignore_changes:
        seen = {**seen, **{f: rs.inputs[f] for f in rules.ignore_changes if f in rs.inputs}}
    update = None
    if prior.observed is not None and seen != rs.inputs:
        update = accept(rs, prior, drift, seen, rules)
    if normal(rs.lifecycle) != normal(rules):
        if update is None:
            update = lifecycle.record_rules(rs, rules)
        else:
            update = update.model_copy(update={"lifecycle": rules or DEFAULT})
    return update


def accept(
    rs: ResourceState,
    prior: Prior,
    drift: DriftItem | None,
    inputs: dict[str, Any] | None = None,
    rules: Lifecycle | None = None,
) -> StateUpdate:
    """A state update taking in an object as refresh found it (`drift`: what changed;
    `inputs`: what is taken in, when not all of `prior.inputs`: ignored fields stay)."""
    assert prior.observed is not None
    ignored = rules.ignore_changes if rules is not None else []
    # state records the running object: what differs only from next boot is not taken in
    fields = (
        [f for f in drift.fields if not f.next_boot_only and f.field not in ignored]
        if drift
        else []
    )
    return StateUpdate(
        address=rs.address, type=rs.type, action="accept", id=prior.observed.id,
        inputs=prior.inputs if inputs is None else inputs,
        attributes={**prior.observed.attributes, "id": prior.observed.id},
        fields=fields, sensitive=sorted({*rs.sensitive_inputs, *rs.sensitive_attributes}),
    )  # fmt: skip


def refresh_only_plan(
    header: dict[str, Any],
    snapshot: Snapshot,
    observed: Mapping[str, Observed] | None,
    priors: Mapping[str, Prior],
    drift: list[DriftItem],
) -> Plan:
    """A plan that changes nothing on the host: state takes in every object as it really is
    (changed inputs and attributes) and forgets the ones deleted outside iacloud. `header`:
    the fields every plan carries (`planner._plan_header`)."""
    if observed is None:
        raise UserError("a refresh-only plan needs a refresh (drop --no-refresh)")
    updates: list[StateUpdate] = []
    changes: list[Change] = []
    drift_of = {d.address: d for d in drift}
    for address, rs in snapshot.resources.items():
        obs = observed.get(address)
        if obs is None:
            updates.append(StateUpdate(address=address, type=rs.type, action="forget", id=rs.id))
            continue
        prior = priors[address]
        attributes = {**obs.attributes, "id": obs.id}
        if prior.inputs != rs.inputs or attributes != rs.attributes or obs.id != rs.id:
            updates.append(accept(rs, prior, drift_of.get(address)))
        # no-op entries keep counted names and outputs resolvable at apply time
        changes.append(
            Change(
                address=address, type=rs.type, provider=rs.provider, action=Action.NOOP,
                id=obs.id, before=prior.inputs, after=prior.inputs,
                dependencies=list(rs.dependencies),
            )
        )  # fmt: skip
    return Plan(
        **header,
        refreshed=True,
        changes=changes,
        drift=drift,
        refresh_only=True,
        state_updates=updates,
    )
