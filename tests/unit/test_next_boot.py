"""Drift of the persistent definition (what an object has from its next boot), through the CLI
with the fake provider: an object file with a `next_boot` table plays a running server whose
persistent definition was changed behind iacloud's back (`virsh setmaxmem --config`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_provider import Thing

from iacloud.diff import next_boot_changes, next_boot_fields, observed_drift
from iacloud.expressions import GetAttr, Unknown
from iacloud.plan import NEXT_BOOT, RUNNING_NOW, Action, Change, FieldChange
from iacloud.provider import Observed
from iacloud.schema import Disruption

STACK = """
version = 1
name = "boot"

[resources.vm]
type = "fake_thing"
name = "vm"
size = 2
flavor = "small"
tags = ["a"]
"""

BOTH = [RUNNING_NOW, NEXT_BOOT]
DEFINED = ("size", "flavor", "tags")  # what the fake's persistent definition holds here


@pytest.fixture
def stack(write_stack, run) -> Path:
    path = write_stack(STACK)
    run("apply", "--auto-approve", str(path))
    return path


def _vm(data_dir: Path) -> Path:
    (found,) = data_dir.glob("stacks/*/fake/fake_thing/*.json")
    return found


def _running(data_dir: Path, next_boot: dict, **live: object) -> None:
    """Make the object a running one: live inputs changed by `live`; its persistent definition
    holds the DEFINED fields, as live except for `next_boot`."""
    path = _vm(data_dir)
    data = json.loads(path.read_text())
    data["inputs"].update(live)
    data["next_boot"] = {**{k: data["inputs"][k] for k in DEFINED}, **next_boot}
    data["extra"] = {"restarts": 0}
    path.write_text(json.dumps(data))


def _facts(data_dir: Path) -> dict:
    data = json.loads(_vm(data_dir).read_text())
    nb = data.get("next_boot")
    return {"inputs": data["inputs"], "restarts": data.get("extra", {}).get("restarts"),
            # the persistent definition agrees with the running object
            "agree": nb == {k: data["inputs"][k] for k in DEFINED}}  # fmt: skip


def _differences(run, stack: Path, code: int) -> list[tuple]:
    report = json.loads(run("drift", "--json", str(stack), code=code))
    (vm,) = report["resources"]
    return [(d["attribute"], d["recorded"], d["actual"], d["effective"]) for d in vm["differences"]]


def _plan(run, stack: Path) -> dict:
    return json.loads(run("plan", "--json", str(stack)))


def _in_sync(run, stack: Path) -> None:
    assert _differences(run, stack, 0) == []
    assert "No changes" in run("plan", "--detailed-exitcode", str(stack))


# ------------------------------------------------------------------------- through the CLI


def test_next_boot_only_drift_is_reported_and_restored_without_a_restart(run, stack, data_dir):
    _running(data_dir, {"flavor": "big", "tags": ["a", "b"]})
    assert _differences(run, stack, 2) == [
        ("flavor", "small", "big", [NEXT_BOOT]),
        ("tags", ["a"], ["a", "b"], [NEXT_BOOT]),
    ]
    text = run("drift", str(stack), code=2)
    assert 'flavor: recorded "small", actual "big" (from next boot)' in text
    md = run("drift", "--markdown", str(stack), code=2)
    assert '`flavor`: "small" → "big" (from next boot)' in md

    plan = _plan(run, stack)
    (change,) = plan["changes"]
    # flavor's own class is restart, but only the persistent definition changes: live
    assert change["action"] == "update" and change["disruption"] == "live"
    assert plan["max_disruption"] == "live"
    assert [(f["field"], f["before"], f["after"], f["disruption"], f["effective"])
            for f in change["fields"]] == [
        ("flavor", "big", "small", "live", [NEXT_BOOT]),
        ("tags", ["a", "b"], ["a"], "live", [NEXT_BOOT]),
    ]  # fmt: skip
    assert any("only the persistent definition" in r for r in change["reasons"])
    assert [f["effective"] for f in plan["drift"][0]["fields"]] == [[NEXT_BOOT], [NEXT_BOOT]]
    text = run("plan", str(stack))
    assert 'flavor: recorded "small", actual "big" (from next boot)' in text
    assert 'flavor: "big" -> "small"  [live, from next boot]' in text
    assert "Most disruptive change: live" in text
    assert "(from next boot)" in run("plan", "--markdown", str(stack))

    # a restart is more than this plan needs: --max-disruption live lets it through
    run("apply", "--auto-approve", "--max-disruption", "live", str(stack))
    facts = _facts(data_dir)
    assert facts["agree"] and facts["restarts"] == 0
    assert facts["inputs"]["flavor"] == "small" and facts["inputs"]["tags"] == ["a"]
    _in_sync(run, stack)


def test_live_drift_kept_by_the_persistent_definition_is_both_and_restarts(run, stack, data_dir):
    _running(data_dir, {}, flavor="big")  # e.g. virsh setvcpus --live --config
    assert _differences(run, stack, 2) == [("flavor", "small", "big", BOTH)]
    assert "(running now, from next boot)" in run("drift", str(stack), code=2)
    (change,) = _plan(run, stack)["changes"]
    assert change["disruption"] == "restart"
    assert [(f["field"], f["effective"]) for f in change["fields"]] == [("flavor", [])]
    run("apply", "--auto-approve", str(stack))
    assert _facts(data_dir)["restarts"] == 1 and _facts(data_dir)["agree"]
    _in_sync(run, stack)


def test_a_field_no_definition_holds_is_not_labelled(run, stack, data_dir):
    _running(data_dir, {"flavor": "big"}, refs=["r"])  # like a server's power_state
    assert _differences(run, stack, 2) == [
        ("flavor", "small", "big", [NEXT_BOOT]),
        ("refs", [], ["r"], []),
    ]
    text = run("drift", str(stack), code=2)
    assert 'refs: recorded [], actual ["r"]\n' in text
    run("apply", "--auto-approve", str(stack))
    _in_sync(run, stack)


def test_live_only_and_diverging_definitions(run, stack, data_dir):
    # flavor: changed live only (next boot is back at the recorded value); size: live 5,
    # persistent 9: two findings for one field
    _running(data_dir, {"flavor": "small", "size": 9}, flavor="big", size=5)
    assert _differences(run, stack, 2) == [
        ("size", 2, 5, [RUNNING_NOW]),
        ("size", 2, 9, [NEXT_BOOT]),
        ("flavor", "small", "big", [RUNNING_NOW]),
    ]
    (change,) = _plan(run, stack)["changes"]
    assert change["disruption"] == "restart"
    assert {f["field"] for f in change["fields"]} == {"size", "flavor"}
    run("apply", "--auto-approve", str(stack))
    facts = _facts(data_dir)
    assert facts["restarts"] == 1 and facts["agree"]
    assert (facts["inputs"]["size"], facts["inputs"]["flavor"]) == (2, "small")
    _in_sync(run, stack)


def test_refresh_only_takes_in_what_runs_now_not_the_next_boot(run, stack, data_dir):
    _running(data_dir, {"flavor": "big"}, size=5)
    plan = json.loads(run("plan", "--refresh-only", "--json", str(stack)))
    (update,) = plan["state_updates"]
    assert [f["field"] for f in update["fields"]] == ["size"]
    assert update["inputs"]["flavor"] == "small" and update["inputs"]["size"] == 5


def test_stack_agreeing_with_the_next_boot_value_restarts(run, stack, write_stack, data_dir):
    _running(data_dir, {"flavor": "big"})
    write_stack(STACK.replace('flavor = "small"', 'flavor = "big"'))
    (change,) = _plan(run, stack)["changes"]
    # the running object still has "small": the new value needs the field's own class
    assert change["disruption"] == "restart"
    assert [(f["field"], f["effective"]) for f in change["fields"]] == [("flavor", [])]
    run("apply", "--auto-approve", str(stack))
    assert _facts(data_dir)["restarts"] == 1
    _in_sync(run, stack)


# ------------------------------------------------------------------------- pure functions


def _obs(inputs: dict, next_boot: dict | None) -> Observed:
    return Observed("x", inputs, {}, next_boot)


@pytest.mark.parametrize(
    "live,next_boot,expected",
    [
        ({"size": 1}, None, []),
        ({"size": 3}, None, [("size", 3, [])]),  # one definition: not labelled
        ({"size": 1}, {}, []),
        ({"size": 3}, {}, [("size", 3, [])]),  # a field the persistent definition lacks
        ({"size": 3}, {"size": 3}, [("size", 3, BOTH)]),
        ({"size": 1}, {"size": 1}, []),
        ({"size": 1}, {"size": 4}, [("size", 4, [NEXT_BOOT])]),
        ({"size": 3}, {"size": 1}, [("size", 3, [RUNNING_NOW])]),
        ({"size": 3}, {"size": 4}, [("size", 3, [RUNNING_NOW]), ("size", 4, [NEXT_BOOT])]),
        ({}, {"size": 4}, [("size", 4, [NEXT_BOOT])]),  # not observed live: recorded stands
    ],
)
def test_observed_drift_says_where(live, next_boot, expected):
    got = observed_drift(Thing, {"size": 1}, _obs(live, next_boot))
    assert [(f.field, f.after, f.effective) for f in got] == expected
    assert all(f.before == 1 for f in got)


def test_next_boot_changes_cost_live_at_most_and_keep_replacements():
    obs = _obs({"name": "a", "flavor": "small"}, {"name": "b", "flavor": "big", "size": 7})
    after = {"name": "a", "flavor": "small", "size": Unknown(GetAttr("y", None, "id"))}
    got = {f.field: f for f in next_boot_changes(Thing, obs, after, [])}
    assert set(got) == {"name", "flavor"}  # an unknown size is a live change already
    assert got["flavor"].disruption is Disruption.LIVE and not got["flavor"].forces_replacement
    assert got["name"].disruption is Disruption.REPLACE and got["name"].forces_replacement
    assert (got["flavor"].before, got["flavor"].after) == ("big", "small")
    planned = [FieldChange(field="flavor", disruption=Disruption.RESTART)]
    assert [f.field for f in next_boot_changes(Thing, obs, after, planned)] == ["name"]
    assert next_boot_changes(Thing, _obs({"size": 1}, None), {"size": 2}, []) == []


def test_next_boot_fields_at_apply():
    boot = FieldChange(
        field="flavor", before="big", after="small", disruption=Disruption.LIVE,
        effective=[NEXT_BOOT],
    )  # fmt: skip
    live = FieldChange(field="size", before=1, after=2, disruption=Disruption.LIVE)
    change = Change(address="vm", type="fake_thing", provider="fake", action=Action.UPDATE,
                    fields=[boot, live])  # fmt: skip
    assert next_boot_fields(change, {"flavor": "small", "size": 2}) == {"flavor"}
    # the persistent definition already holds the value apply resolves: nothing to restore
    assert next_boot_fields(change, {"flavor": "big", "size": 2}) == frozenset()
