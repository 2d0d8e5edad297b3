"""The engine functions a front end calls instead of doing the work itself: the stack name by
the loader's rules, masked state views, checked state surgery, and the approval callback."""

from __future__ import annotations

import pytest

from iacloud import engine
from iacloud.engine import PlanOptions, UserError
from iacloud.redact import MASK

STACK = """
version = 1
name = "api"
[parameters.pw]
type = "string"
hidden = true
default = "hunter2hunter2"
[resources.a]
type = "fake_thing"
secret = { get_param = "pw" }
[parameters.flavor]
type = "string"
default = "small"
[resources.b]
type = "fake_thing"
ref = { get_resource = "a" }
flavor = { get_param = "flavor" }
"""


def applied(write_stack) -> engine.Workspace:
    ws = engine.Workspace(write_stack(STACK))
    plan, _ = engine.make_plan(ws, ws.load(), PlanOptions())
    result = engine.apply(ws, plan)
    assert result is not None and result.ok
    return ws


@pytest.mark.parametrize(
    ("text", "file", "expected"),
    [
        ('version = 1\nname = "web-1"\n', "x.toml", "web-1"),
        ("version = 1\n", "from_file.toml", "from_file"),
        ('version = 1\nname = "bad name"\n', "x.toml", "'name' is not a valid stack name"),
        ('version = 1\nname = ""\n', "x.toml", "'name' is not a valid stack name"),
        ("version = 1\n", "-dash.toml", 'the file name "-dash" is not a valid stack name'),
        ("version = ", "x.toml", "cannot read the stack file"),
    ],
)
def test_stack_name_follows_the_loaders_rules(write_stack, text, file, expected):
    path = write_stack(text, file)
    try:
        assert engine.stack_name(path) == expected
    except UserError as exc:
        assert expected in str(exc.diagnostics[0])


def test_stack_name_of_a_missing_file(tmp_path):
    with pytest.raises(UserError, match="stack file not found"):
        engine.stack_name(tmp_path / "nope.toml")


def test_state_view_masks_hidden_derived_inputs(write_stack):
    ws = applied(write_stack)
    view = engine.state_view(ws)
    assert view.resources["a"]["inputs"]["secret"] == MASK
    assert "hunter2hunter2" not in str(view.resources)
    assert engine.resource_view(ws, "a") == view.resources["a"]
    with pytest.raises(UserError, match="no resource 'zz'"):
        engine.resource_view(ws, "zz")


def test_state_rm_and_mv_refuse_bad_addresses_and_change_nothing(write_stack):
    ws = applied(write_stack)
    serial = ws.backend.snapshot("api").serial
    with pytest.raises(UserError, match="not in the state of stack 'api': zz"):
        engine.state_rm(ws, ("a", "zz"))
    with pytest.raises(UserError, match="'b' is already in the state"):
        engine.state_mv(ws, "a", "b")
    with pytest.raises(UserError, match="destination: "):
        engine.state_mv(ws, "a", "x y")
    assert ws.backend.snapshot("api").serial == serial
    assert engine.state_mv(ws, "a", "c") == serial + 1
    assert engine.state_rm(ws, ("c",)) == serial + 2
    assert set(ws.backend.snapshot("api").resources) == {"b"}


def test_apply_asks_approve_after_its_checks_and_a_no_changes_nothing(write_stack):
    ws = applied(write_stack)
    plan, _ = engine.make_plan(ws, ws.load(["flavor=big"]), PlanOptions())  # b restarts
    asked: list[engine.Plan] = []
    with pytest.raises(UserError, match="beyond --max-disruption"):  # refused before asking
        engine.apply(ws, plan, max_disruption=engine.Disruption.LIVE, approve=asked.append)
    assert asked == []
    assert engine.apply(ws, plan, approve=lambda p: asked.append(p) or False) is None
    assert asked == [plan]
    assert len(ws.backend.versions("api")) == 1
    assert ws.backend.snapshot("api").resources["b"].inputs["flavor"] == "small"


def test_state_key_names_the_stack_in_state_whatever_the_file_says(write_stack):
    ws = engine.Workspace(write_stack(STACK), state_key="proj.other")
    config = ws.load()
    assert config.name == ws.name == "proj.other"
    plan, _ = engine.make_plan(ws, config, PlanOptions())
    assert engine.apply(ws, plan).ok
    assert engine.state_view(ws).snapshot.serial == 1
    plain = engine.Workspace(ws.stack_file, read_only=True)
    assert plain.name == "api" and engine.state_view(plain).snapshot.serial == 0


def test_a_cancel_pressed_before_apply_starts_no_step(write_stack):
    ws = engine.Workspace(write_stack(STACK))
    plan, _ = engine.make_plan(ws, ws.load(), PlanOptions())
    cancel = engine.Interrupts()
    cancel.press()
    result = engine.apply(ws, plan, cancel=cancel)
    assert result is not None and result.interrupted and not result.ok
    assert {o.status for o in result.outcomes} == {"not started"}
    assert engine.state_view(ws).snapshot.resources == {}
