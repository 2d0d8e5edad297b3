"""Plan and apply through the engine with the fake provider: ordering, parallelism, failure
isolation, interruption, durable recording, replacement, deletion, stale plans."""

from __future__ import annotations

import _thread
import threading
from pathlib import Path

import pytest

from iacloud import engine
from iacloud.errors import UserError
from iacloud.executor import Reporter
from iacloud.plan import Action
from iacloud.planner import PlanOptions
from iacloud.schema import Disruption
from iacloud.state.model import PendingOperation

CHAIN = """
version = 1
name = "chain"

[parameters.size]
type = "number"
default = 1

[resources.a]
type = "fake_thing"
name = "a"
size = { get_param = "size" }

[resources.b]
type = "fake_thing"
name = "b"
ref = { get_resource = "a" }

[resources.c]
type = "fake_thing"
name = "c"
refs = [{ get_attr = ["b", "name"] }]

[outputs.b_id]
value = { get_resource = "b" }
"""


def plan_apply(stack: Path, *params: str, jobs: int = 4, reporter: Reporter | None = None,
               options: PlanOptions | None = None):  # fmt: skip
    ws = engine.Workspace(stack)
    config = ws.load(list(params))
    plan, _ = engine.make_plan(ws, config, options or PlanOptions())
    result = engine.apply(ws, plan, jobs=jobs, reporter=reporter)
    return ws, plan, result


def replan(stack: Path, *params: str, **kw):
    ws = engine.Workspace(stack)
    plan, _ = engine.make_plan(ws, ws.load(list(params)), PlanOptions(**kw))
    return plan


def test_apply_creates_in_dependency_order_and_second_plan_is_empty(write_stack):
    stack = write_stack(CHAIN)
    ws, plan, result = plan_apply(stack)
    assert [c.action for c in plan.changes] == [Action.CREATE] * 3
    assert result.ok
    events = ws.backend.events("chain")
    completes = [e.address for e in events if e.status == "COMPLETE"]
    assert completes == ["a", "b", "c"]
    snap = ws.backend.snapshot("chain")
    assert snap.resources["b"].inputs["ref"] == snap.resources["a"].id
    assert snap.resources["c"].inputs["refs"] == ["b"]
    assert snap.outputs["b_id"]["value"] == snap.resources["b"].id
    again = replan(stack)
    assert not again.has_changes, again.actionable()


def test_update_in_place_versus_replacement(write_stack):
    stack = write_stack(CHAIN)
    plan_apply(stack)
    plan = replan(stack, "size=5")
    (change,) = plan.actionable()
    assert change.address == "a" and change.action is Action.UPDATE
    assert change.disruption is Disruption.LIVE
    assert [f.field for f in change.fields] == ["size"]

    stack.write_text(CHAIN.replace('name = "a"', 'name = "a2"'))
    plan = replan(stack)
    by = {c.address: c for c in plan.actionable()}
    assert by["a"].action is Action.DELETE_CREATE
    assert "changing name forces replacement" in by["a"].reasons
    # b refers to a's id, which is unknown until a is recreated: b's ref changes too
    assert by["b"].action is Action.DELETE_CREATE
    _, _, result = plan_apply(stack)
    assert result.ok
    assert not replan(stack).has_changes


def test_removed_resource_is_deleted_and_dependents_first_on_destroy(write_stack):
    stack = write_stack(CHAIN)
    ws, _, _ = plan_apply(stack)
    ids = {a: r.id for a, r in ws.backend.snapshot("chain").resources.items()}
    plan, _ = engine.destroy_plan(ws, "chain")
    assert {c.action for c in plan.changes} == {Action.DELETE}
    result = engine.apply(ws, plan, command="destroy")
    assert result.ok
    deletes = [e.address for e in ws.backend.events("chain")
               if e.action == "DELETE" and e.status == "COMPLETE"]  # fmt: skip
    assert deletes == ["c", "b", "a"]
    assert ws.backend.snapshot("chain").resources == {}
    fake_dir = engine.data_root() / "stacks" / plan.stack_id / "fake" / "fake_thing"
    assert not any((fake_dir / f"{i}.json").exists() for i in ids.values())
    assert not (engine.data_root() / "stacks" / plan.stack_id).exists()


PARALLEL = """
version = 1
name = "par"
[resources.t]
type = "fake_thing"
count = 4
name = "t%index%"
"""


def creates_wait(monkeypatch: pytest.MonkeyPatch, wait) -> None:
    """Make the fake provider's create call `wait(address)` first: a test holds steps running
    on an event instead of guessing with sleeps how long a step takes on a busy machine."""
    import fake_provider

    create = fake_provider._FakeType.create

    def waiting_create(self, address, inputs):
        wait(address)
        return create(self, address, inputs)

    monkeypatch.setattr(fake_provider._FakeType, "create", waiting_create)


def test_independent_steps_run_in_parallel(write_stack, monkeypatch):
    # no create returns before all four have started; run one at a time, the barrier breaks
    barrier = threading.Barrier(4, timeout=30)
    creates_wait(monkeypatch, lambda address: barrier.wait())
    ws, _, result = plan_apply(write_stack(PARALLEL), jobs=4)
    assert result.ok
    events = ws.backend.events("par")
    kinds = [e.status for e in events]
    # all four started before the first finished
    assert kinds[:4] == ["IN_PROGRESS"] * 4


def test_jobs_one_runs_serially(write_stack):
    ws, _, _ = plan_apply(write_stack(PARALLEL), jobs=1)
    assert [e.status for e in ws.backend.events("par")] == ["IN_PROGRESS", "COMPLETE"] * 4


FAILING = """
version = 1
name = "fail"
[resources.bad]
type = "fake_thing"
fail = true
[resources.after_bad]
type = "fake_thing"
ref = { get_resource = "bad" }
[resources.fine]
type = "fake_thing"
"""


def test_failure_skips_dependents_only(write_stack):
    ws, _, result = plan_apply(write_stack(FAILING))
    status = {o.step.change.address: o.status for o in result.outcomes}
    assert status == {"bad": "failed", "after_bad": "skipped", "fine": "complete"}
    assert "told to fail" in result.failed[0].error
    snap = ws.backend.snapshot("fail")
    assert set(snap.resources) == {"fine"}
    assert snap.pending == []
    failed = [e for e in ws.backend.events("fail") if e.status == "FAILED"]
    assert [(e.address, e.action_status) for e in failed] == [("bad", "CREATE_FAILED")]
    assert ws.backend.versions("fail")[-1].status == "failed"


SLOW_CHAIN = """
version = 1
name = "slow"
[resources.first]
type = "fake_thing"
[resources.second]
type = "fake_thing"
ref = { get_resource = "first" }
"""


def test_interrupt_waits_for_running_steps_and_records_them(write_stack, monkeypatch):
    caught = threading.Event()

    class NoticeInterrupt(Reporter):
        def interrupted(self, running):
            caught.set()

    def interrupt_while_first_runs(address: str) -> None:
        # Ctrl-C while 'first' runs; 'first' returns only once the executor took the interrupt
        if address != "first":
            return
        _thread.interrupt_main()  # SIGINT, as the apply's handler sees it
        assert caught.wait(30)

    creates_wait(monkeypatch, interrupt_while_first_runs)
    ws, _, result = plan_apply(write_stack(SLOW_CHAIN), reporter=NoticeInterrupt())
    assert result.interrupted
    status = {o.step.change.address: o.status for o in result.outcomes}
    assert status == {"first": "complete", "second": "not started"}
    snap = ws.backend.snapshot("slow")
    assert set(snap.resources) == {"first"} and snap.pending == []
    assert ws.backend.versions("slow")[-1].status == "interrupted"
    plan = replan(write_stack(SLOW_CHAIN))
    assert [(c.address, c.action) for c in plan.actionable()] == [("second", Action.CREATE)]


def test_interrupted_create_is_found_by_tag_and_replaced(write_stack):
    """A run killed after the provider created an object but before the result was written
    leaves a pending operation; the next plan finds the object by its tag."""
    stack = write_stack(SLOW_CHAIN)
    ws = engine.Workspace(stack)
    config = ws.load()
    plan, _ = engine.make_plan(ws, config, PlanOptions())
    serial = ws.backend.begin_version("slow", "apply", plan.stack_id, plan.lineage)
    from iacloud.state.model import Event

    op = PendingOperation(address="first", type="fake_thing", provider="fake", action="create",
                          inputs={"name": "thing"}, serial=serial)  # fmt: skip
    ws.backend.record_pending("slow", op, Event(serial=serial, address="first", type="fake_thing",
                                                action="CREATE", status="IN_PROGRESS"))  # fmt: skip
    providers = ws.providers("slow", plan, {})
    providers.resource("fake_thing").create("first", config_inputs(ws, config, "first"))
    ws.backend.finish_version("slow", serial, "interrupted", None)

    plan2 = replan(stack)
    assert [d.kind for d in plan2.drift] == ["interrupted"]
    first = next(c for c in plan2.changes if c.address == "first")
    assert first.action is Action.DELETE_CREATE
    assert any("interrupted" in r for r in first.reasons)
    _, _, result = plan_apply(stack)
    assert result.ok
    fake_dir = engine.data_root() / "stacks" / plan.stack_id / "fake" / "fake_thing"
    assert len(list(fake_dir.glob("*.json"))) == 2  # the leftover was deleted, not leaked


def config_inputs(ws, config, address):
    from fake_provider import ThingInputs

    return ThingInputs(**{k: v for k, v in config.resources[address].properties.items()})


def test_stale_saved_plan_is_refused(write_stack):
    stack = write_stack(CHAIN)
    ws = engine.Workspace(stack)
    config = ws.load()
    old_plan, _ = engine.make_plan(ws, config, PlanOptions())
    engine.apply(ws, engine.make_plan(ws, config, PlanOptions())[0])
    with pytest.raises(UserError, match="serial 0"):
        engine.apply(ws, old_plan)


def test_max_disruption_refuses_a_more_disruptive_plan(write_stack):
    stack = write_stack(CHAIN)
    plan_apply(stack)
    stack.write_text(CHAIN.replace('name = "c"', 'name = "c2"'))
    ws = engine.Workspace(stack)
    plan, _ = engine.make_plan(ws, ws.load(), PlanOptions())
    with pytest.raises(UserError, match="beyond --max-disruption restart"):
        engine.apply(ws, plan, max_disruption=Disruption.RESTART)
    assert ws.backend.snapshot("chain").serial == 1  # nothing changed


DISK = """
version = 1
name = "disk"
[parameters.size]
type = "number"
default = 1
[resources.d]
type = "fake_disk"
size_gib = { get_param = "size" }
"""


def test_a_change_the_object_cannot_take_in_place_is_a_replacement_that_says_why(
    write_stack,
):
    stack = write_stack(DISK)
    plan_apply(stack)
    grown = replan(stack, "size=500")
    (change,) = grown.actionable()
    assert (change.action, change.disruption) == (Action.UPDATE, Disruption.LIVE)
    plan = replan(stack, "size=2000")
    (change,) = plan.actionable()
    assert change.action is Action.DELETE_CREATE
    assert change.disruption is Disruption.DATA_LOSS
    (field,) = change.fields
    assert (field.field, field.forces_replacement, field.disruption) == (
        "size_gib", True, Disruption.REPLACE
    )  # fmt: skip
    assert change.reasons == [
        "changing size_gib forces replacement",
        "size_gib cannot change in place: a fake disk grows in place up to 1000 GiB",
    ]
    ws = engine.Workspace(stack)
    with pytest.raises(UserError, match="beyond --max-disruption live"):
        engine.apply(ws, plan, max_disruption=Disruption.LIVE)
    assert ws.backend.snapshot("disk").serial == 1  # nothing changed
    engine.apply(ws, plan, max_disruption=Disruption.DATA_LOSS)
    assert not replan(stack, "size=2000").actionable()


def test_target_plans_only_the_target_and_its_dependencies(write_stack):
    stack = write_stack(CHAIN)
    plan = replan(stack, targets=["b"])
    assert [c.address for c in plan.actionable()] == ["a", "b"]


def test_replace_option_forces_replacement(write_stack):
    stack = write_stack(CHAIN)
    plan_apply(stack)
    plan = replan(stack, replace=["c"])
    (change,) = plan.actionable()
    assert change.action is Action.DELETE_CREATE
    assert change.reasons == ["replacement requested with --replace"]


def test_out_of_band_deletion_is_drift_and_recreated(write_stack):
    stack = write_stack(CHAIN)
    ws, plan, _ = plan_apply(stack)
    c_id = ws.backend.snapshot("chain").resources["c"].id
    (
        engine.data_root() / "stacks" / plan.stack_id / "fake" / "fake_thing" / f"{c_id}.json"
    ).unlink()
    plan2 = replan(stack)
    assert [(d.address, d.kind) for d in plan2.drift] == [("c", "missing")]
    (change,) = plan2.actionable()
    assert change.action is Action.CREATE and change.reasons == ["deleted outside iacloud"]


def test_shrinking_a_disk_is_a_plan_time_error(write_stack):
    text = 'version = 1\nname = "d"\n[resources.d]\ntype = "fake_disk"\nsize_gib = 4\n'
    stack = write_stack(text)
    plan_apply(stack)
    stack.write_text(text.replace("4", "2"))
    with pytest.raises(UserError, match="cannot shrink from 4 to 2") as info:
        replan(stack)
    assert info.value.diagnostics[0].field == "size_gib"
    stack.write_text(text.replace("4", "8"))
    (change,) = replan(stack).actionable()
    assert change.action is Action.UPDATE and change.disruption is Disruption.LIVE
