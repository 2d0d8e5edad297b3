"""The CLI through click's runner: exit codes, JSON output, saved plans, state commands, and
clear errors (never a traceback) for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from iacloud.cli.main import cli

STACK = """
version = 1
name = "web"

[parameters.count]
type = "number"
default = 2
constraints = [{ range = { min = 1, max = 4 } }]

[parameters.token]
type = "string"
default = "s3cr3t-token-value"
hidden = true

[resources.net]
type = "fake_thing"
name = "net"

[resources.vm]
type = "fake_thing"
count = { get_param = "count" }
name = "vm-%index%"
ref = { get_resource = "net" }
secret = { get_param = "token" }
tags = [{ str_replace = { template = "key=$T", params = { "$T" = { get_param = "token" } } } }]

[outputs.vm_names]
value = { get_attr = ["vm", "name"] }

[outputs.token]
value = { get_param = "token" }
sensitive = true
"""


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args: str, code: int = 0) -> str:
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        out = result.output + (result.stderr if hasattr(result, "stderr") else "")
        assert result.exit_code == code, out
        assert "Traceback" not in out
        return out

    return invoke


@pytest.fixture
def stack(write_stack) -> Path:
    return write_stack(STACK)


def test_validate_ok_and_json(run, stack):
    assert "valid (3 resources)" in run("validate", str(stack))
    data = json.loads(run("validate", "--json", str(stack)))
    assert data == {"valid": True, "stack": "web", "resources": 3}


def test_validate_reports_mistakes_with_file_resource_and_field(run, write_stack):
    bad = write_stack(STACK.replace('name = "net"', 'nmae = "net"'), "bad.toml")
    out = run("validate", str(bad), code=1)
    assert "bad.toml" in out and "resources.net" in out and "nmae" in out
    assert "did you mean 'name'" in out
    data = json.loads(run("validate", "--json", str(bad), code=1))
    assert data["valid"] is False and data["diagnostics"][0]["address"] == "resources.net"


def test_plan_detailed_exitcode_apply_then_empty(run, stack):
    out = run("plan", "--detailed-exitcode", str(stack), code=2)
    assert "Plan: 3 to create, 0 to update, 0 to replace, 0 to delete." in out
    out = run("apply", "--auto-approve", str(stack))
    assert "net: Creation complete" in out and 'vm_names = ["vm-0", "vm-1"]' in out
    out = run("plan", "--detailed-exitcode", str(stack))
    assert "No changes" in out


def test_hidden_values_never_printed(run, stack):
    outputs = [
        run("plan", str(stack), code=0),
        run("plan", "--json", str(stack)),
        run("plan", "--markdown", str(stack)),
        run("apply", "--auto-approve", str(stack)),
        run("show", "--stack", str(stack)),
        run("show", "--json", "--stack", str(stack)),
        run("output", "--stack", str(stack)),
        run("events", "--stack", str(stack)),
        run("state", "show", "vm[0]", "--stack", str(stack)),
    ]
    for out in outputs:
        assert "s3cr3t-token-value" not in out
    assert "(sensitive)" in outputs[0]


def test_plan_json_schema_and_saved_plan_apply(run, stack, tmp_path):
    plan_file = tmp_path / "plan.json"
    data = json.loads(run("plan", "--json", "-o", str(plan_file), str(stack)))
    assert data["summary"] == {"create": 3, "update": 0, "replace": 0, "delete": 0,
                               "state_updates": 0, "has_changes": True}  # fmt: skip
    assert data["serial"] == 0 and data["stack"] == "web"
    vm0 = next(c for c in data["changes"] if c["address"] == "vm[0]")
    assert vm0["action"] == "create"
    assert vm0["after"]["ref"] == {"__unknown__": {"get_resource": "net"}}
    assert plan_file.stat().st_mode & 0o777 == 0o600
    run("apply", str(plan_file))
    # the same plan again is stale now
    out = run("apply", str(plan_file), code=1)
    assert "serial 0" in out and "make a new plan" in out


def test_corrupt_plan_file_is_a_clear_error(run, tmp_path):
    bad = tmp_path / "plan.json"
    bad.write_text("{not json")
    assert "not a plan file" in run("apply", str(bad), code=1)
    bad.write_text(json.dumps({"format_version": 99}))
    assert "format_version = 99" in run("apply", str(bad), code=1)


def test_output_show_events_state_commands(run, stack):
    run("apply", "--auto-approve", str(stack))
    assert json.loads(run("output", "vm_names", "--json", "--stack", str(stack))) == [
        "vm-0",
        "vm-1",
    ]
    assert "(sensitive)" in run("output", "--stack", str(stack))
    shown = json.loads(run("show", "--json", "--stack", str(stack)))
    assert set(shown["resources"]) == {"net", "vm[0]", "vm[1]"} and shown["serial"] == 1
    events = json.loads(run("events", "--json", "--stack", str(stack)))
    assert {e["event"] for e in events} == {"CREATE_IN_PROGRESS", "CREATE_COMPLETE"}
    listed = json.loads(run("state", "list", "--json", "--stack", str(stack)))
    assert [r["address"] for r in listed] == ["net", "vm[0]", "vm[1]"]

    run("state", "mv", "vm[1]", "old", "--stack", str(stack))
    assert "old" in run("state", "list", "--stack", str(stack))
    run("state", "rm", "old", "--stack", str(stack))
    assert "old" not in run("state", "list", "--stack", str(stack))
    # the forgotten object is not deleted, and vm[1] is planned again
    assert "1 to create" in run("plan", str(stack))
    versions = json.loads(run("state", "versions", "--json", "--stack", str(stack)))
    assert [v["command"] for v in versions] == ["apply", "state mv", "state rm"]
    assert "no resource 'nope'" in run("state", "show", "nope", "--stack", str(stack), code=1)


def test_destroy_removes_everything(run, stack):
    run("apply", "--auto-approve", str(stack))
    out = run("destroy", "--auto-approve", str(stack))
    assert "3 to delete" in out
    assert run("state", "list", "--stack", str(stack)).strip() == ""


def test_apply_without_terminal_needs_auto_approve(run, stack):
    out = run("apply", str(stack), code=1)
    assert "--auto-approve" in out
    assert run("state", "list", "--stack", str(stack)).strip() == ""


def test_max_disruption_refuses_and_changes_nothing(run, stack):
    run("apply", "--auto-approve", str(stack))
    changed = stack.read_text().replace('name = "net"', 'name = "net2"')
    stack.write_text(changed)
    out = run("apply", "--auto-approve", "--max-disruption", "restart", str(stack), code=1)
    assert "beyond --max-disruption restart" in out
    assert json.loads(run("show", "--json", "--stack", str(stack)))["serial"] == 1


def test_parameter_errors(run, stack):
    out = run("plan", "-p", "count=9", str(stack), code=1)
    assert "parameters.count" in out
    out = run("plan", "-p", "cuont=1", str(stack), code=1)
    assert "did you mean 'count'" in out


def test_graph_dot_and_svg(run, stack, tmp_path):
    dot = run("graph", str(stack))
    assert dot.startswith("digraph") and '"net" -> "vm[0]"' in dot
    svg = tmp_path / "g.svg"
    run("graph", "--format", "svg", "-o", str(svg), str(stack))
    assert "<svg" in svg.read_text()


def test_lock_held_is_reported(run, stack):
    from iacloud.state import open_backend

    backend = open_backend(None, stack.parent)
    backend.acquire_lock("web", "test", 0)
    try:
        out = run("apply", "--auto-approve", str(stack), code=1)
        assert "locked" in out and "test" in out
    finally:
        backend.release_lock("web")


def test_show_and_events_text_escape_control_characters(run, stack):
    """Event reasons quote provider errors and console lines; ids come from hosts: a hostile
    escape sequence or newline in them must not reach the terminal raw."""
    import sqlite3

    run("apply", "--auto-approve", str(stack))
    db = stack.parent / ".iacloud" / "state.db"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE events SET reason = ?", ("\x1b[31mred\nFORGED LINE\u202e",))
    out = run("events", "--stack", str(stack))
    assert "\x1b" not in out and "\u202e" not in out and "\nFORGED" not in out
    assert "\\x1b[31mred\\nFORGED LINE\\u202e" in out
