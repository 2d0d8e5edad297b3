"""How one planned value is printed: sensitive fields masked whole, hidden values masked inside
strings and as numbers, long values cut, empty values on a create left out."""

from __future__ import annotations

from iacloud.plan import Action, Change, FieldChange, Plan
from iacloud.render import plan_json, plan_text
from iacloud.schema import Disruption


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


def _update(f: FieldChange) -> Change:
    return Change(
        address="vm",
        type="server",
        provider="libvirt",
        action=Action.UPDATE,
        fields=[f],
        disruption=f.disruption,
    )


def test_sensitive_field_is_masked_whole_in_text_and_json() -> None:
    f = FieldChange(
        field="user_data", before="a", after="b", disruption=Disruption.RESTART, sensitive=True
    )
    plan = _plan([_update(f)])
    assert "user_data: (sensitive) -> (sensitive)  [restart]" in plan_text(plan)
    [field] = plan_json(plan)["changes"][0]["fields"]
    assert (field["before"], field["after"]) == ("(sensitive)", "(sensitive)")


def test_hidden_values_masked_inside_strings_and_as_numbers() -> None:
    change = Change(
        address="vm",
        type="server",
        provider="libvirt",
        action=Action.CREATE,
        after={"note": "pw=hunter22;", "port": 4711, "other": 4712, "flag": True},
    )
    text = plan_text(_plan([change], hidden=["hunter22", "4711"]))
    assert 'note: "pw=(sensitive);"' in text
    assert 'port: "(sensitive)"' in text and "other: 4712" in text and "flag: true" in text
    assert "hunter22" not in text and "4711" not in text


def test_long_values_are_cut_and_empty_ones_left_out() -> None:
    change = Change(
        address="vm",
        type="server",
        provider="libvirt",
        action=Action.CREATE,
        after={"keys": ["k" * 50, "k" * 50, "k" * 50], "tags": [], "meta": {}, "none": None},
    )
    text = plan_text(_plan([change]))
    [line] = [ln for ln in text.splitlines() if "keys:" in ln]
    value = line.split("keys: ", 1)[1]
    assert len(value) == 120 and value.endswith("...")
    assert "tags:" not in text and "meta:" not in text and "none:" not in text
