"""Rendering of plans: values known only after apply read `(known after apply)` at any depth in
the text, while the plan JSON keeps the documented {"__unknown__": EXPR} marker."""

from __future__ import annotations

import json
from pathlib import Path

from iacloud import engine
from iacloud.plan import Action, Change, FieldChange, Plan
from iacloud.planner import PlanOptions
from iacloud.render import plan_json, plan_markdown, plan_text
from iacloud.schema import Disruption

NET = {"__unknown__": {"get_resource": "lan"}}
ADDR = {"__unknown__": {"get_attr": ["db", "addresses", "lan"]}}


def _plan(changes: list[Change], hidden: list[str] | None = None) -> Plan:
    return Plan(
        stack="s",
        stack_file="/s.toml",
        stack_id="id",
        lineage="l",
        serial=1,
        created_at="2026-11-28T00:00:00+00:00",
        changes=changes,
        hidden_values=hidden or [],
    )


def test_create_shows_unknowns_nested_in_lists_and_tables():
    server = Change(
        address="vm",
        type="server",
        provider="libvirt",
        action=Action.CREATE,
        after={
            "name": "vm",
            "networks": [{"network": NET, "fixed_ip": "198.18.0.5"}, {"port": NET}],
            "metadata": {"db": ADDR, "deep": {"list": [1, ADDR]}},
            "image": NET,
        },
    )
    text = plan_text(_plan([server]))
    assert "__unknown__" not in text
    assert (
        'networks: [{"fixed_ip": "198.18.0.5", "network": (known after apply)}, '
        '{"port": (known after apply)}]'
    ) in text
    assert 'metadata: {"db": (known after apply), "deep": {"list": [1, (known after apply)]}}' in (
        text
    )
    assert "image: (known after apply)" in text


def test_update_field_shows_nested_unknown_and_still_masks_hidden_values():
    change = Change(
        address="vm",
        type="server",
        provider="libvirt",
        action=Action.UPDATE,
        fields=[
            FieldChange(
                field="networks",
                before=[{"network": "abc", "note": "s3cret-pw"}],
                after=[{"network": NET, "note": "s3cret-pw"}],
                disruption=Disruption.LIVE,
            )
        ],
        disruption=Disruption.LIVE,
    )
    text = plan_text(_plan([change], hidden=["s3cret-pw"]))
    assert (
        'networks: [{"network": "abc", "note": "(sensitive)"}] -> '
        '[{"network": (known after apply), "note": "(sensitive)"}]  [live]'
    ) in text
    assert "s3cret-pw" not in text


def test_a_string_that_looks_like_the_words_stays_quoted():
    change = Change(
        address="vm",
        type="server",
        provider="libvirt",
        action=Action.CREATE,
        after={"tags": ["(known after apply)", NET]},
    )
    assert 'tags: ["(known after apply)", (known after apply)]' in plan_text(_plan([change]))


def test_markdown_never_prints_the_marker():
    change = Change(
        address="vm",
        type="server",
        provider="libvirt",
        action=Action.CREATE,
        after={"networks": [{"network": NET}]},
    )
    md = plan_markdown(_plan([change]))
    assert "`vm`" in md and "__unknown__" not in md


ENGINE_STACK = """
version = 1
name = "unknowns"

[resources.a]
type = "fake_thing"
name = "a"

[resources.b]
type = "fake_thing"
name = "b"
refs = ["fixed", { get_attr = ["a", "name"] }, { get_resource = "a" }]
"""


def test_engine_plan_text_and_json(write_stack):
    stack: Path = write_stack(ENGINE_STACK)
    ws = engine.Workspace(stack)
    plan, _ = engine.make_plan(ws, ws.load([]), PlanOptions())
    text = plan_text(plan)
    assert 'refs: ["fixed", (known after apply), (known after apply)]' in text
    assert "__unknown__" not in text
    # the JSON keeps the marker at the same depth, with the stack file's own expression
    (b,) = [c for c in plan_json(plan)["changes"] if c["address"] == "b"]
    assert b["after"]["refs"] == [
        "fixed",
        {"__unknown__": {"get_attr": ["a", "name"]}},
        {"__unknown__": {"get_resource": "a"}},
    ]
    json.dumps(plan_json(plan))  # serialisable as printed by --json
