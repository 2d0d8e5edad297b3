"""Rollback of a failed apply (`apply --rollback`, Heat's `disable_rollback = false`).

The failed run's version is closed as failed; a new version (command `rollback`) then undoes
it through the executor, so every step is journalled (pending operation first) like any other
and a rollback killed at any instant leaves state from which the next plan finds every object:
- an object created in the run is deleted;
- an object updated in place is updated back to its recorded inputs (those from before the run),
  and so is one whose update failed (it may have changed part of them);
- an object deleted in the run (or replaced delete-first) cannot come back: it is created again
  from its recorded inputs, as a new object with a new id; whatever it held is lost, and its
  event says so;
- an object replaced create-first whose old object was not deleted yet: the new one is deleted
  and the old one recorded again, exactly as before.
The version closes as `rollback_complete` (all of that succeeded; the stack's outputs are those
from before the run) or `rollback_failed`; events say ROLLBACK_IN_PROGRESS / ROLLBACK_COMPLETE /
ROLLBACK_FAILED per resource and, at the stack's own name, for the whole rollback.
A step the provider could not prove clean keeps its pending operation, as in any apply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from iacloud.diff import diff_inputs
from iacloud.executor import ApplyResult, Executor, Reporter
from iacloud.interrupts import Interrupts
from iacloud.plan import Action, Change, Plan, Reason, ReasonCode
from iacloud.provider import ProviderSet, Registry
from iacloud.schema import max_disruption
from iacloud.state import StateBackend
from iacloud.state.model import Event, ResourceState


def wanted(result: ApplyResult) -> bool:
    """A failed run is rolled back; an interrupted one (Ctrl-C) is not: the user stopped it."""
    return bool(result.failed) and not result.interrupted and not result.abandoned


def _note(text: str) -> list[Reason]:
    return [Reason(code=ReasonCode.OTHER, detail=text)]


def rollback_plan(
    plan: Plan,
    registry: Registry,
    before: Mapping[str, ResourceState],
    forward: ApplyResult,
) -> tuple[Plan, dict[str, ResourceState]]:
    """The plan undoing a failed run: from the state it left (`forward.resources`) back to the
    state before it (`before`). Also: the old objects of create-first replacements that still
    exist, to record again once their successor is deleted."""
    after = forward.resources
    deleted_ids = {
        o.step.change.id
        for o in forward.outcomes
        if o.step.kind == "delete" and o.status == "complete" and o.step.change.id
    }
    # an update that failed may have changed part of its object: its fields are set again
    half_updated = {
        o.step.change.address: o.step.change.fields
        for o in forward.outcomes
        if o.step.kind == "update" and o.status == "failed"
    }
    changes: list[Change] = []
    restore: dict[str, ResourceState] = {}

    def change(
        rs: ResourceState, action: Action, inputs: dict[str, Any] | None, why: str, **more: Any
    ) -> Change:
        return Change(
            address=rs.address, type=rs.type, provider=rs.provider, action=action,
            id=after[rs.address].id if rs.address in after else None,
            before=dict(after[rs.address].inputs) if rs.address in after else None,
            after=inputs, why=_note(why), dependencies=list(rs.dependencies),
            lifecycle=rs.lifecycle, **more,
        )  # fmt: skip

    for address, now in after.items():
        if address not in before:
            changes.append(change(now, Action.DELETE, None, "created in the failed run"))
    for address, old in before.items():
        now = after.get(address)
        inputs = dict(old.inputs)
        if now is None:
            changes.append(
                change(old, Action.CREATE, inputs,
                       f"deleted in the failed run: {old.id} cannot come back; created again "
                       "from its recorded inputs as a new object (its contents are lost)")
            )  # fmt: skip
        elif now.id == old.id:
            type_cls = registry.types[old.type]
            fields = diff_inputs(type_cls, now.inputs, old.inputs)
            if not fields and address in half_updated:
                fields = [f for f in half_updated[address] if not f.forces_replacement]
                if fields:
                    changes.append(
                        change(old, Action.UPDATE, inputs,
                               "its update failed part-way: its recorded inputs are set again",
                               fields=fields, disruption=max_disruption(
                                   [f.disruption for f in fields]))
                    )  # fmt: skip
                continue
            if not fields:
                continue
            if any(f.forces_replacement for f in fields):
                changes.append(
                    change(old, Action.DELETE_CREATE, inputs,
                           "updated in the failed run; its recorded inputs need a new object")
                )  # fmt: skip
            else:
                changes.append(
                    change(old, Action.UPDATE, inputs, "updated in the failed run: restored",
                           fields=fields, disruption=max_disruption([f.disruption for f in fields]))
                )  # fmt: skip
        elif old.id not in deleted_ids:
            # create-first replacement whose old object is still there: keep that one
            changes.append(
                change(now, Action.DELETE, None,
                       f"replaced in the failed run; the old object {old.id} still exists "
                       "and is recorded again")
            )  # fmt: skip
            restore[address] = old
        else:
            changes.append(
                change(old, Action.DELETE_CREATE, inputs,
                       f"replaced in the failed run: the old object {old.id} was deleted and "
                       "cannot come back; created again from its recorded inputs")
            )  # fmt: skip
    rplan = plan.model_copy(
        update={"changes": changes, "state_updates": [], "drift": [], "destroy": False,
                "refresh_only": False}
    )  # fmt: skip
    return rplan, restore


def run(
    backend: StateBackend,
    plan: Plan,
    registry: Registry,
    providers: ProviderSet,
    before: Mapping[str, ResourceState],
    forward: ApplyResult,
    *,
    failed_serial: int,
    outputs_before: Mapping[str, Any],
    outputs: Callable[[Mapping[str, ResourceState]], dict[str, Any]],
    jobs: int = 4,
    reporter: Reporter | None = None,
    interrupts: Interrupts | None = None,
) -> ApplyResult:
    """Undo a failed run in a new state version; the result of the rollback's own steps."""
    rplan, restore = rollback_plan(plan, registry, before, forward)
    serial = backend.begin_version(plan.stack, "rollback", plan.stack_id, plan.lineage)

    def stack_event(status: Literal["IN_PROGRESS", "COMPLETE", "FAILED"], reason: str) -> None:
        backend.record_event(
            plan.stack,
            Event(serial=serial, address=plan.stack, type="stack", action="ROLLBACK",
                  status=status, reason=reason),
        )  # fmt: skip

    stack_event("IN_PROGRESS", f"undoing the failed apply of version {failed_serial}")
    if reporter is not None:
        reporter.rollback_started(len(rplan.changes))
    status = "rollback_failed"
    result = ApplyResult(resources=dict(forward.resources))
    try:
        executor = Executor(
            rplan, registry, providers, backend, serial, forward.resources,
            jobs=jobs, reporter=reporter, interrupts=interrupts, event_action="ROLLBACK",
        )  # fmt: skip
        result = executor.run()
        deleted = {o.step.change.address for o in result.outcomes if o.status == "complete"}
        for address, old in restore.items():
            if address in deleted:
                rs = old.model_copy(update={"status": "ROLLBACK_COMPLETE"})
                event = Event(
                    serial=serial,
                    address=address,
                    type=old.type,
                    action="ROLLBACK",
                    status="COMPLETE",
                    reason=f"the old object {old.id} recorded again",
                )
                backend.record_result(plan.stack, serial, address, rs, event)  # fmt: skip
                result.resources[address] = rs
        if result.ok:
            status = "rollback_complete"
            result.outputs = dict(outputs_before)
        else:
            result.outputs = outputs(result.resources)
    finally:
        if status == "rollback_complete":
            stack_event("COMPLETE", f"the state of version {failed_serial - 1} is restored")
        else:
            failed = [f"{o.step.kind} {o.step.change.address}" for o in result.failed]
            stack_event(
                "FAILED",
                "not undone: " + (", ".join(failed) or "the rollback was interrupted"),
            )
        backend.finish_version(plan.stack, serial, status, result.outputs or None)
    return result
