"""Resources that cannot be read (their host is down) are *unknown*: the plan and drift list
them with the reason, the rest is planned and applied, and apply and destroy leave them alone.
The fake provider stands in for the host: an object file marked "unreachable" reads as
unknown, as the libvirt provider reads an object on a host whose libvirtd is down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

STACK = """
version = 1
name = "lab"

[resources.vm]
type = "fake_thing"
count = 2
name = "vm-%index%"
size = {size}
"""
REASON = "h2: connection refused (198.19.250.12 port 22)"


def _object(data_dir: Path, address: str) -> Path:
    for f in data_dir.glob("stacks/*/fake/fake_thing/*.json"):
        if json.loads(f.read_text())["address"] == address:
            return f
    raise AssertionError(f"no fake object for {address}")


def _mark_down(path: Path) -> None:
    data = json.loads(path.read_text())
    data["unreachable"] = REASON
    path.write_text(json.dumps(data))


def test_unknown_resources_are_listed_and_left_alone(write_stack, run, data_dir):
    path = write_stack(STACK.format(size=1))
    run("apply", "--auto-approve", str(path))
    down = _object(data_dir, "vm[0]")
    _mark_down(down)
    before = json.loads(down.read_text())
    path.write_text(STACK.format(size=2))

    text = run("plan", str(path))
    assert "Not reachable (left as recorded, nothing planned for them):" in text
    assert f"vm[0] (fake_thing): {REASON}" in text and "1 to update" in text
    plan = json.loads(run("plan", str(path), "--json"))
    unknown = [d for d in plan["drift"] if d["kind"] == "unknown"]
    assert unknown == [
        {"address": "vm[0]", "type": "fake_thing", "kind": "unknown", "fields": [],
         "reason": REASON}
    ]  # fmt: skip
    by_address = {c["address"]: c for c in plan["changes"]}
    assert by_address["vm[0]"]["action"] == "no-op"
    assert by_address["vm[1]"]["action"] == "update"

    run("apply", "--auto-approve", str(path))
    assert json.loads(down.read_text()) == before  # not touched
    assert json.loads(_object(data_dir, "vm[1]").read_text())["inputs"]["size"] == 2

    report = json.loads(run("drift", str(path), "--json", code=0))
    status = {r["address"]: (r["status"], r.get("reason", "")) for r in report["resources"]}
    assert status["vm[0]"] == ("unknown", REASON) and status["vm[1]"][0] == "in-sync"
    assert report["totals"]["unknown"] == 1 and report["drifted"] is False
    assert "not checked: " + REASON in run("drift", str(path), code=0)

    run("destroy", "--auto-approve", str(path))
    assert down.exists()  # a destroy cannot delete what it cannot reach
    with pytest.raises(AssertionError):
        _object(data_dir, "vm[1]")
