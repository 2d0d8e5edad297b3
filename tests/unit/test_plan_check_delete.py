"""The planner's `check_delete` step with the fake provider: a type may refuse the delete of an
object that an object the plan keeps still needs (a volume snapshot a kept volume is made from);
the plan then fails naming it and nothing is applied. Deleting both, or replacing the user
too, passes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from fake_provider import Thing

from iacloud import engine
from iacloud.errors import Diagnostic, UserError
from iacloud.plan import Action
from iacloud.planner import PlanOptions
from iacloud.provider import Observed, Remaining

STACK = """
version = 1
name = "held"

[resources.base]
type = "fake_thing"
name = "base"

[resources.user]
type = "fake_thing"
name = "user"
ref = { get_resource = "base" }
"""


def _refuse_if_referenced(
    self: Thing, address: str, prior: Observed, remaining: Mapping[str, Remaining]
) -> list[Diagnostic]:
    users = [r.address for r in remaining.values() if r.inputs.get("ref") == prior.id]
    return (
        [Diagnostic(f"{address} is used by {', '.join(users)}", address=address)] if users else []
    )


def _plan(stack: Path, **options: object):
    ws = engine.Workspace(stack)
    return engine.make_plan(ws, ws.load([]), PlanOptions(**options))[0]


@pytest.fixture
def applied(write_stack, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(Thing, "check_delete", _refuse_if_referenced)
    stack = write_stack(STACK)
    ws = engine.Workspace(stack)
    plan, _ = engine.make_plan(ws, ws.load([]), PlanOptions())
    assert engine.apply(ws, plan).ok
    return stack


def test_a_delete_that_a_kept_object_needs_is_refused_at_plan_time(applied: Path) -> None:
    with pytest.raises(UserError) as err:
        _plan(applied, destroy=True, targets=["base"])
    (diag,) = err.value.diagnostics
    assert diag.message == "base is used by user"
    assert diag.address == "resources.base"
    with pytest.raises(UserError):  # a replacement's delete half too
        _plan(applied, targets=["base"], replace=["base"])


def test_deleting_or_replacing_the_user_as_well_passes(applied: Path) -> None:
    plan = _plan(applied, destroy=True)
    assert {c.address: c.action for c in plan.changes} == {
        "base": Action.DELETE,
        "user": Action.DELETE,
    }
    # replacing base makes user's ref unknown until apply: user is replaced with it
    plan = _plan(applied, replace=["base"])
    assert {c.address: c.action for c in plan.changes} == {
        "base": Action.DELETE_CREATE,
        "user": Action.DELETE_CREATE,
    }
