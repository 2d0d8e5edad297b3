"""The executor's step graph: a whole-group reference orders every step through one hub node,
and apply, failures and destroy behave as with one edge per pair."""

from __future__ import annotations

from iacloud import engine
from iacloud.graph import Hub
from iacloud.planner import PlanOptions
from iacloud.steps import step_graph

GROUPS = """
version = 1
name = "groups"
[resources.a]
type = "fake_thing"
count = 10
name = "a%index%"
fail = {fail}
[resources.b]
type = "fake_thing"
count = 10
name = "b%index%"
refs = {{ get_attr = ["a", "name"] }}
"""


def _plan(stack):
    ws = engine.Workspace(stack)
    plan, _ = engine.make_plan(ws, ws.load([]), PlanOptions())
    return ws, plan


def test_whole_group_reference_goes_through_one_hub(write_stack):
    ws, plan = _plan(write_stack(GROUPS.format(fail="false")))
    assert plan.groups == {
        "a": [f"a[{i}]" for i in range(10)],
        "b": [f"b[{i}]" for i in range(10)],
    }
    graph = step_graph(plan, {})
    hubs = [n for n in graph if isinstance(n, Hub)]
    assert len(hubs) == 1  # 20 edges instead of 100
    assert graph.number_of_edges() == 20
    result = engine.apply(ws, plan)
    assert result.ok
    completes = [e.address for e in ws.backend.events("groups") if e.status == "COMPLETE"]
    assert {a[0] for a in completes[:10]} == {"a"}  # every b after every a
    snap = ws.backend.snapshot("groups")
    assert snap.resources["b[3]"].inputs["refs"] == [f"a{i}" for i in range(10)]

    destroy, _ = engine.destroy_plan(ws, "groups")
    hubs = [n for n in step_graph(destroy, snap.resources) if isinstance(n, Hub)]
    assert len(hubs) == 1
    assert engine.apply(ws, destroy, command="destroy").ok
    deletes = [e.address for e in ws.backend.events("groups")
               if e.action == "DELETE" and e.status == "COMPLETE"]  # fmt: skip
    assert {a[0] for a in deletes[:10]} == {"b"}  # every b before any a
    assert ws.backend.snapshot("groups").resources == {}


def test_a_failure_before_a_hub_skips_every_step_after_it(write_stack):
    ws, plan = _plan(write_stack(GROUPS.format(fail="true")))
    result = engine.apply(ws, plan)
    status = {o.step.change.address: o.status for o in result.outcomes}
    assert {status[f"a[{i}]"] for i in range(10)} == {"failed"}
    assert {status[f"b[{i}]"] for i in range(10)} == {"skipped"}
    assert len(result.outcomes) == 20  # the hub is no step
