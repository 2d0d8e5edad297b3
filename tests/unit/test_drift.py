"""`iacloud drift`, suppressions, metrics and refresh-only plans, through the CLI with the fake
provider (whose objects are JSON files we change behind iacloud's back)."""

from __future__ import annotations

import gc
import hashlib
import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from iacloud.errors import UserError
from iacloud.suppressions import parse

STACK = """
version = 1
name = "lab"

[parameters.token]
type = "string"
default = "hunter2-secret"
hidden = true

[resources.net]
type = "fake_thing"
name = "net"

[resources.vm]
type = "fake_thing"
count = 2
name = "vm-%index%"
size = 2
ref = { get_resource = "net" }
secret = { get_param = "token" }

[resources.disk]
type = "fake_disk"
size_gib = 10

[outputs.sizes]
value = { get_attr = ["vm", "echo"] }
"""


@pytest.fixture
def stack(write_stack, run) -> Path:
    path = write_stack(STACK)
    run("apply", "--auto-approve", str(path))
    return path


def _object(data_dir: Path, type_name: str, address: str) -> Path:
    for f in data_dir.glob(f"stacks/*/fake/{type_name}/*.json"):
        if json.loads(f.read_text())["address"] == address:
            return f
    raise AssertionError(f"no fake object for {address}")


def _edit(path: Path, **inputs: object) -> None:
    data = json.loads(path.read_text())
    data["inputs"].update(inputs)
    path.write_text(json.dumps(data))


def _drift(run, stack: Path, *args: str, code: int) -> dict:
    return json.loads(run("drift", str(stack), "--json", *args, code=code))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_in_sync_exits_0(run, stack):
    out = run("drift", str(stack))
    assert "In sync: 4 of 4 resources" in out
    report = _drift(run, stack, code=0)
    assert report["drifted"] is False
    assert report["totals"]["in_sync"] == 4 and report["orphans"] == []
    assert {r["status"] for r in report["resources"]} == {"in-sync"}


def test_modified_attribute_is_reported_exactly(run, stack, data_dir):
    _edit(_object(data_dir, "fake_thing", "vm[1]"), size=7)
    report = _drift(run, stack, code=2)
    changed = [r for r in report["resources"] if r["status"] != "in-sync"]
    assert len(changed) == 1
    (vm,) = changed
    assert vm["address"] == "vm[1]" and vm["type"] == "fake_thing" and vm["status"] == "modified"
    assert vm["differences"] == [
        {"attribute": "size", "recorded": 2, "actual": 7, "sensitive": False, "suppressed": False,
         "effective": []}  # one definition: where it holds is not said
    ]  # fmt: skip
    assert report["totals"]["modified"] == 1 and report["totals"]["in_sync"] == 3
    text = run("drift", str(stack), code=2)
    assert "size: recorded 2, actual 7" in text and "vm[1]" in text


def test_hidden_and_sensitive_values_are_masked(run, stack, data_dir):
    _edit(_object(data_dir, "fake_thing", "vm[0]"), secret="another-hunter2-secret")
    for args in (["--json"], [], ["--markdown"]):
        out = run("drift", str(stack), *args, code=2)
        assert "hunter2" not in out
        assert "(sensitive)" in out


def test_missing_resource_then_apply_restores(run, stack, data_dir):
    _object(data_dir, "fake_disk", "disk").unlink()
    report = _drift(run, stack, code=2)
    (missing,) = [r for r in report["resources"] if r["status"] == "missing"]
    assert missing["address"] == "disk" and report["totals"]["missing"] == 1
    plan = run("plan", str(stack))
    assert "Changed outside iacloud" in plan and "disk (fake_disk): missing" in plan
    run("apply", "--auto-approve", str(stack))
    _drift(run, stack, code=0)


def test_modified_then_apply_restores(run, stack, data_dir):
    _edit(_object(data_dir, "fake_thing", "vm[0]"), size=3)
    out = run("plan", str(stack))
    assert out.index("Changed outside iacloud") < out.index("Planned changes")
    assert "size: recorded 2, actual 3" in out and "size: 3 -> 2" in out
    _drift(run, stack, code=2)
    run("apply", "--auto-approve", str(stack))
    _drift(run, stack, code=0)


def test_orphans_and_unmanaged(run, stack, data_dir):
    net = _object(data_dir, "fake_thing", "net")
    stack_id = json.loads(net.read_text())["stack_id"]
    ghost = net.with_name("ghost1.json")
    ghost.write_text(json.dumps({"stack_id": stack_id, "address": "old", "inputs": {}}))
    other = net.with_name("other1.json")
    other.write_text(json.dumps({"stack_id": "another-stack", "address": "x", "inputs": {}}))
    loose = net.with_name("loose1.json")
    loose.write_text(json.dumps({"inputs": {}}))
    report = _drift(run, stack, code=2)
    assert report["orphans"] == [
        {"type": "fake_thing", "id": "ghost1", "address": "old", "suppressed": False}
    ]
    assert report["unmanaged"] is None and report["totals"]["orphaned"] == 1
    report = _drift(run, stack, "--all", code=2)
    # --all also lists the host's own untagged bridges (the real netlink provider is loaded):
    # only the fake provider's objects are this test's to know
    assert [u for u in report["unmanaged"] if u["type"].startswith("fake")] == [
        {"type": "fake_thing", "id": "loose1", "address": None, "suppressed": False}
    ]
    assert "orphan      fake_thing ghost1, tagged as old" in run("drift", str(stack), code=2)


def test_orphan_adopted_by_import(run, stack, data_dir):
    net = _object(data_dir, "fake_thing", "net")
    data = json.loads(net.read_text())
    data.update(address="extra", inputs={**data["inputs"], "name": "extra"})
    net.with_name("adopt1.json").write_text(json.dumps(data))
    extra = '\n[resources.extra]\ntype = "fake_thing"\nname = "extra"\n'
    stack.write_text(stack.read_text() + extra)
    report = _drift(run, stack, code=2)
    assert [o["id"] for o in report["orphans"]] == ["adopt1"]
    run("import", "extra", "adopt1", "--stack", str(stack))
    _drift(run, stack, code=0)


def test_drift_is_read_only_and_ignores_the_lock(run, stack, data_dir):
    from iacloud.state import open_backend

    db = stack.parent / ".iacloud" / "state.db"
    _edit(_object(data_dir, "fake_thing", "vm[0]"), size=5)
    gc.collect()  # the in-process apply's connection: closed (and checkpointed) now, not later
    backend = open_backend(None, stack.parent)
    backend.acquire_lock("lab", "apply", 0)
    backend.close()  # the lock row stays: as if another process were applying
    before = _digest(db)
    try:
        _drift(run, stack, code=2)
        run("drift", str(stack), "--markdown", code=2)
        assert _digest(db) == before
        out = run("apply", "--auto-approve", str(stack), code=1)
        assert "locked" in out
    finally:
        backend = open_backend(None, stack.parent)
        backend.release_lock("lab")
        backend.close()


def test_never_applied_stack_is_an_error(run, write_stack, tmp_path):
    path = write_stack(STACK, name="fresh.toml")
    out = run("drift", str(path), code=1)
    assert "has no state" in out
    assert not (tmp_path / ".iacloud" / "state.db").exists()


def test_suppressions_hide_and_expire(run, stack, data_dir):
    _edit(_object(data_dir, "fake_thing", "vm[0]"), size=5)
    _edit(_object(data_dir, "fake_thing", "vm[1]"), size=6, flavor="large")
    ignore = stack.parent / ".iacloudignore"
    tomorrow = (datetime.now(timezone.utc).date() + timedelta(days=1)).isoformat()
    ignore.write_text(f"# load test\nvm[*].size  until {tomorrow}  # JIRA-1\n")
    report = _drift(run, stack, code=2)  # vm[1].flavor is not suppressed
    vm1 = next(r for r in report["resources"] if r["address"] == "vm[1]")
    assert {d["attribute"]: d["suppressed"] for d in vm1["differences"]} == {
        "size": True,
        "flavor": False,
    }
    ignore.write_text(f"vm[*].size until {tomorrow}\nvm[1]\n")
    report = _drift(run, stack, code=0)
    assert report["totals"]["suppressed"] == 2 and report["drifted"] is False
    assert "2 suppressed" in run("drift", str(stack))
    assert run("drift", "-q", str(stack)) == ""
    ignore.write_text("vm[*].size until 2020-01-31 # expired\nvm[1]\n")
    report = _drift(run, stack, code=2)
    assert report["expired_suppressions"] == [
        {"suppression": "vm[*].size", "until": "2020-01-31", "file": str(ignore), "line": 1,
         "reason": "expired"}
    ]  # fmt: skip
    assert "expired on 2020-01-31" in run("drift", str(stack), code=2)
    assert "expired on 2020-01-31" in run("drift", "-q", str(stack), code=2)
    explicit = stack.parent / "other.ignore"
    explicit.write_text("vm*\n")
    _drift(run, stack, "--ignore", str(explicit), code=0)


def test_bad_ignore_file_names_file_and_line(run, stack):
    bad = stack.parent / "bad.ignore"
    bad.write_text("vm[0]\nvm[1].size until tomorrow\nnot an address!\n")
    out = run("drift", str(stack), "--ignore", str(bad), code=1)
    assert "bad.ignore" in out and "line 2" in out and "line 3" in out
    out = run("drift", str(stack), "--ignore", str(stack.parent / "absent"), code=1)
    assert "cannot read the ignore file" in out


def test_suppression_matching():
    (s,) = parse("web[*].power_state until 2030-01-01", "f")
    assert s.covers("web[0]", "power_state") and s.covers("web[12]", "power_state")
    assert not s.covers("web[0]", "memory_mb") and not s.covers("web[0]")
    assert not s.covers("web0", "power_state")  # brackets are literal
    (whole,) = parse("db", "f")
    assert whole.covers("db") and whole.covers("db", "size") and not whole.covers("db2")
    assert s.expired(date(2030, 1, 2)) and not s.expired(date(2030, 1, 1))
    with pytest.raises(UserError):
        parse("a.b.c", "f")


def test_metrics_file(run, stack, data_dir, tmp_path):
    metrics = tmp_path / "drift.prom"
    run("drift", str(stack), "--metrics-file", str(metrics))
    text = metrics.read_text()
    assert 'iacloud_drift_success{stack="lab"} 1' in text
    assert 'iacloud_drift_drifted{stack="lab"} 0' in text
    assert 'iacloud_drift_resources{stack="lab"} 4' in text
    _object(data_dir, "fake_disk", "disk").unlink()
    run("drift", str(stack), "--metrics-file", str(metrics), code=2)
    values = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.read_text().splitlines()
        if not line.startswith("#")
    }
    assert values["iacloud_drift_missing_resources"] == 1
    assert values["iacloud_drift_drifted"] == 1
    assert abs(values["iacloud_drift_last_run_timestamp_seconds"] - datetime.now().timestamp()) < 60
    assert "# TYPE iacloud_drift_orphaned_objects gauge" in metrics.read_text()
    stack.write_text("not = [toml")
    run("drift", str(stack), "--metrics-file", str(metrics), code=1)
    assert 'iacloud_drift_success{stack="stack"} 0' in metrics.read_text()
    assert list(tmp_path.glob(".drift.prom.*")) == []  # no temporary file left behind


def test_refresh_only_accepts_reality(run, stack, data_dir):
    _edit(_object(data_dir, "fake_thing", "vm[0]"), size=9)
    _object(data_dir, "fake_disk", "disk").unlink()
    out = run("plan", "--refresh-only", str(stack), "--detailed-exitcode", code=2)
    assert "Refresh-only: 1 to update in state, 1 to forget" in out
    assert "accept size" in out
    plan_json = json.loads(run("plan", "--refresh-only", str(stack), "--json"))
    assert plan_json["refresh_only"] is True
    assert all(c["action"] == "no-op" for c in plan_json["changes"])
    assert "hunter2" not in json.dumps(plan_json)
    run("apply", "--refresh-only", "--auto-approve", str(stack))
    # state now says what is: no drift, and nothing on the host was changed
    _drift(run, stack, code=0)
    assert json.loads(_object(data_dir, "fake_thing", "vm[0]").read_text())["inputs"]["size"] == 9
    state = json.loads(run("state", "show", "vm[0]", "--stack", str(stack), "--json"))
    assert state["inputs"]["size"] == 9
    assert "disk" not in run("state", "list", "--stack", str(stack))
    events = run("events", "--stack", str(stack))
    assert "REFRESH_COMPLETE" in events
    # the ordinary plan now proposes to bring the host back to the stack file
    out = run("plan", str(stack))
    assert "size: 9 -> 2" in out and "+ disk" in out


def test_refresh_only_flag_clashes(run, stack):
    out = run("plan", "--refresh-only", "--destroy", str(stack), code=1)
    assert "--refresh-only cannot be combined with --destroy" in out
    out = run("plan", "--refresh-only", str(stack), "--detailed-exitcode")
    assert "No changes. State already matches the real objects." in out


def test_drift_the_stack_agrees_with_is_taken_into_state(run, stack, data_dir):
    _edit(_object(data_dir, "fake_thing", "vm[1]"), size=3)
    stack.write_text(stack.read_text().replace("size = 2", "size = 3"))
    out = run("plan", str(stack), "--detailed-exitcode", code=2)
    assert "~ vm[1] (fake_thing)  accept size" in out
    assert "1 to update, 0 to replace, 0 to delete; state takes in 1 change(s) made" in out
    # vm[0] really changes (2 -> 3); vm[1] is already there and only state moves
    run("apply", "--auto-approve", str(stack))
    _drift(run, stack, code=0)
    run("plan", str(stack), "--detailed-exitcode")
