"""apply --rollback (Heat's disable_rollback = false) with the fake provider, against SQLite
and a real PostgreSQL server: what a failed run created is deleted, what it updated restored,
and the state ends as before in a version marked rollback_complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iacloud import engine
from iacloud.engine import PlanOptions


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "state.db")
    return request.getfixturevalue("pg_server").fresh_url()


def objects(data_dir: Path, type_name: str) -> dict[str, dict]:
    return {f.stem: json.loads(f.read_text()) for f in data_dir.rglob(f"fake/{type_name}/*.json")}


BASE = """
version = 1
name = "rb"
[resources.disk]
type = "fake_disk"
size_gib = 1
[resources.thing]
type = "fake_thing"
ref = { get_resource = "disk" }
flavor = "small"
"""

BAD = """
[resources.bad]
type = "fake_thing"
fail = true
depends_on = ["thing"]
"""


def run_apply(ws: engine.Workspace, text: str, rollback: bool, **kw) -> engine.ApplyResult:
    ws.stack_file.write_text(text)
    plan, _ = engine.make_plan(ws, ws.load(), PlanOptions())
    result = engine.apply(ws, plan, rollback=rollback, **kw)
    assert result is not None
    return result


def rollback_events(ws: engine.Workspace, serial: int) -> list[tuple[str, str]]:
    return [(e.address, e.action_status) for e in ws.backend.events("rb") if e.serial == serial]


def test_rollback_after_a_failed_create_deletes_what_the_run_created(
    write_stack, data_dir, state_url
):
    ws = engine.Workspace(write_stack(""), state_url)
    result = run_apply(ws, BASE + BAD, rollback=True)
    assert not result.ok and [o.step.change.address for o in result.failed] == ["bad"]
    assert result.rollback is not None and result.rollback.ok
    assert objects(data_dir, "fake_disk") == {} and objects(data_dir, "fake_thing") == {}
    versions = ws.backend.versions("rb")
    assert [(v.command, v.status) for v in versions] == [
        ("apply", "failed"),
        ("rollback", "rollback_complete"),
    ]
    snap = ws.backend.snapshot("rb")
    assert snap.resources == {} and snap.pending == []
    events = rollback_events(ws, 2)
    assert events[0] == ("rb", "ROLLBACK_IN_PROGRESS") and events[-1] == ("rb", "ROLLBACK_COMPLETE")
    assert ("disk", "ROLLBACK_IN_PROGRESS") in events and ("disk", "ROLLBACK_COMPLETE") in events
    # the thing (using the disk) is deleted before the disk
    assert events.index(("thing", "ROLLBACK_COMPLETE")) < events.index(
        ("disk", "ROLLBACK_IN_PROGRESS")
    )
    # and the next plan creates everything again
    plan, _ = engine.make_plan(ws, ws.load(), PlanOptions())
    assert plan.counts()["create"] == 3


def test_rollback_restores_an_updated_resource_and_the_state(write_stack, data_dir, state_url):
    ws = engine.Workspace(write_stack(""), state_url)
    assert run_apply(ws, BASE, rollback=True).ok
    before = ws.backend.snapshot("rb")
    thing_id = before.resources["thing"].id
    result = run_apply(ws, BASE.replace('"small"', '"big"') + BAD, rollback=True)
    assert not result.ok and result.rollback is not None and result.rollback.ok
    assert objects(data_dir, "fake_thing")[thing_id]["inputs"]["flavor"] == "small"
    after = ws.backend.snapshot("rb")
    assert after.serial == before.serial + 2
    assert set(after.resources) == set(before.resources)
    for address, rs in before.resources.items():
        assert after.resources[address].id == rs.id
        assert after.resources[address].inputs == rs.inputs
    assert after.outputs == before.outputs
    assert ws.backend.versions("rb")[-1].status == "rollback_complete"
    assert after.resources["thing"].status == "ROLLBACK_COMPLETE"
    plan, _ = engine.make_plan(ws, ws.load(), PlanOptions())
    assert plan.counts() == {"create": 1, "update": 1, "replace": 0, "delete": 0}


def test_without_rollback_a_failed_apply_keeps_what_it_did(write_stack, data_dir, run):
    path = write_stack(BASE + BAD)
    out = run("apply", str(path), "--auto-approve", code=1)
    assert "Rolled back" not in out
    ws = engine.Workspace(path)
    assert set(ws.backend.snapshot("rb").resources) == {"disk", "thing"}
    assert [v.status for v in ws.backend.versions("rb")] == ["failed"]
    assert len(objects(data_dir, "fake_disk")) == 1


def test_cli_apply_rollback(write_stack, data_dir, run):
    path = write_stack(BASE + BAD)
    out = run("apply", str(path), "--auto-approve", "--rollback", code=1)
    assert "Rolling back the failed run: 2 change(s) to undo." in out
    assert "ROLLBACK_COMPLETE" in out
    assert objects(data_dir, "fake_disk") == {}
    out = run("events", "--stack", str(path))
    assert "ROLLBACK_COMPLETE" in out and "created in the failed run" in out


def test_a_replaced_object_deleted_first_cannot_come_back_and_is_created_again(
    write_stack, data_dir
):
    ws = engine.Workspace(write_stack(""))
    assert run_apply(ws, BASE, rollback=True).ok
    old_disk = ws.backend.snapshot("rb").resources["disk"].id
    # source forces the disk's replacement (delete first); the thing then fails to update
    text = BASE.replace("size_gib = 1", 'size_gib = 1\nsource = "s2"').replace(
        'flavor = "small"', 'flavor = "small"\nfail = true'
    )
    result = run_apply(ws, text, rollback=True)
    assert not result.ok and result.rollback is not None and result.rollback.ok
    snap = ws.backend.snapshot("rb")
    assert snap.resources["disk"].id != old_disk  # a new object ...
    assert (
        "source" not in snap.resources["disk"].inputs
        or snap.resources["disk"].inputs["source"] is None
    )  # ... with the recorded inputs
    reasons = [e.reason for e in ws.backend.events("rb") if e.address == "disk"]
    assert any("cannot come back" in r for r in reasons), reasons
    assert set(objects(data_dir, "fake_disk")) == {snap.resources["disk"].id}


def test_a_failing_rollback_step_says_rollback_failed(write_stack, data_dir, monkeypatch):
    import fake_provider

    ws = engine.Workspace(write_stack(""))
    real_delete = fake_provider.Disk.delete

    def broken_delete(self, address, prior):
        raise fake_provider.ProviderError("the disk is busy")

    monkeypatch.setattr(fake_provider.Disk, "delete", broken_delete)
    result = run_apply(ws, BASE + BAD, rollback=True)
    monkeypatch.setattr(fake_provider.Disk, "delete", real_delete)
    assert result.rollback is not None and not result.rollback.ok
    assert ws.backend.versions("rb")[-1].status == "rollback_failed"
    events = [(e.address, e.action_status) for e in ws.backend.events("rb")]
    assert ("disk", "ROLLBACK_FAILED") in events and ("rb", "ROLLBACK_FAILED") in events
    # the disk stays recorded: the next plan finds it
    assert "disk" in ws.backend.snapshot("rb").resources


def test_a_postgres_schema_of_version_1_is_upgraded_for_rollback_statuses(pg_server, tmp_path):
    import psycopg

    from iacloud.state import open_backend, pg_schema
    from iacloud.state.pg_url import parse_url

    url = pg_server.fresh_url()
    target = parse_url(url)
    with psycopg.connect(target.conninfo, autocommit=True) as raw:  # what iacloud 1 made
        raw.execute(f'CREATE SCHEMA "{target.schema}"')
        raw.execute(f'SET search_path TO "{target.schema}"')
        raw.execute(
            "CREATE TABLE iacloud_schema (version integer PRIMARY KEY, format text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for statement in pg_schema.MIGRATIONS[1]:
            raw.execute(statement)  # type: ignore[arg-type]
        raw.execute("INSERT INTO iacloud_schema (version, format) VALUES (1, 'iacloud-state')")
    # reads work before any write migrates (read commands right after an upgrade)
    assert open_backend(url, tmp_path, read_only=True).versions("rb") == []
    backend = open_backend(url, tmp_path)
    snap = backend.snapshot("rb")
    serial = backend.begin_version("rb", "rollback", snap.stack_id, snap.lineage)
    backend.finish_version("rb", serial, "rollback_complete", None)
    assert backend.versions("rb")[-1].status == "rollback_complete"
    backend.close()
    with psycopg.connect(target.conninfo, autocommit=True) as raw:
        raw.execute(f'SET search_path TO "{target.schema}"')
        assert raw.execute("SELECT max(version) FROM iacloud_schema").fetchone() == (2,)


def test_a_rollback_killed_mid_step_leaves_state_the_next_run_recovers_from(
    tmp_path: Path, fake_entry_point: Path, data_dir: Path
):
    import os
    import signal
    import subprocess
    import sys
    import time

    from iacloud.state import open_backend

    tests = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake_entry_point), str(tests)])}
    env.pop("CI", None)
    stack = tmp_path / "stack.toml"
    slow = BASE.replace('flavor = "small"', 'flavor = "small"\nsleep = 1.5')

    def cli(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "iacloud.cli.main", *args], cwd=tmp_path, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    stack.write_text(slow)
    assert cli("apply", "--auto-approve", "stack.toml").wait(60) == 0
    # the run creates 'extra', updates 'thing' (slowly), and fails on 'bad'; its rollback
    # updates 'thing' back (slowly again): killed there
    extra = '\n[resources.extra]\ntype = "fake_disk"\nsize_gib = 2\n'
    stack.write_text(slow.replace('"small"', '"big"') + BAD + extra)
    proc = cli("apply", "--auto-approve", "--rollback", "stack.toml")
    state = tmp_path / ".iacloud" / "state.db"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the rollback never started its update"
        if state.exists():
            b = open_backend(str(state), tmp_path, read_only=True)
            seen = [(e.address, e.action_status) for e in b.events("rb")]
            b.close()
            if ("thing", "ROLLBACK_IN_PROGRESS") in seen:
                break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    b = open_backend(str(state), tmp_path)
    snap = b.snapshot("rb")
    assert [op.address for op in snap.pending] == ["thing"]  # journalled before the call
    assert [v.status for v in b.versions("rb")] == ["complete", "failed", "in_progress"]
    b.close()
    # the next run finds every object and converges; nothing leaks
    stack.write_text(slow)
    run = cli("apply", "--auto-approve", "stack.toml")
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, out + err
    b = open_backend(str(state), tmp_path)
    snap = b.snapshot("rb")
    assert sorted(snap.resources) == ["disk", "thing"] and snap.pending == []
    assert b.versions("rb")[2].status == "interrupted"
    b.close()
    things, disks = objects(data_dir, "fake_thing"), objects(data_dir, "fake_disk")
    assert set(disks) == {snap.resources["disk"].id}
    assert set(things) == {snap.resources["thing"].id}
    assert things[snap.resources["thing"].id]["inputs"]["flavor"] == "small"


def test_a_create_first_replacement_is_undone_exactly(write_stack, data_dir):
    cbd = "lifecycle = { create_before_destroy = true }"
    text = BASE.replace("size_gib = 1", "size_gib = 1\n" + cbd).replace(
        'ref = { get_resource = "disk" }', 'refs = [{ get_resource = "disk" }]'
    )
    ws = engine.Workspace(write_stack(""))
    assert run_apply(ws, text, rollback=True).ok
    before = ws.backend.snapshot("rb").resources
    # the new disk is made, the thing fails to move onto it, so the old disk is never deleted
    failing = text.replace("size_gib = 1", 'size_gib = 1\nsource = "s2"').replace(
        'flavor = "small"', 'flavor = "small"\nfail = true'
    )
    result = run_apply(ws, failing, rollback=True)
    assert not result.ok and result.rollback is not None and result.rollback.ok
    after = ws.backend.snapshot("rb").resources
    assert {a: (rs.id, rs.inputs) for a, rs in after.items()} == {
        a: (rs.id, rs.inputs) for a, rs in before.items()
    }
    assert set(objects(data_dir, "fake_disk")) == {before["disk"].id}
    reasons = [e.reason for e in ws.backend.events("rb") if e.address == "disk"]
    assert any("recorded again" in r for r in reasons), reasons


def test_an_update_that_failed_part_way_is_set_back(write_stack, data_dir, monkeypatch):
    import fake_provider

    ws = engine.Workspace(write_stack(""))
    assert run_apply(ws, BASE, rollback=True).ok
    thing_id = ws.backend.snapshot("rb").resources["thing"].id
    real_update = fake_provider.Thing.update
    calls = []

    def half_update(self, address, prior, inputs, changed):
        calls.append(inputs.flavor)
        observed = real_update(self, address, prior, inputs, changed)  # the change lands ...
        if inputs.flavor == "big":
            raise fake_provider.ProviderError("... and then the backend fails")
        return observed

    monkeypatch.setattr(fake_provider.Thing, "update", half_update)
    result = run_apply(ws, BASE.replace('"small"', '"big"'), rollback=True)
    assert not result.ok and result.rollback is not None and result.rollback.ok
    assert calls == ["big", "small"]
    assert objects(data_dir, "fake_thing")[thing_id]["inputs"]["flavor"] == "small"
    reasons = [e.reason for e in ws.backend.events("rb") if e.action == "ROLLBACK"]
    assert any("failed part-way" in r for r in reasons), reasons
