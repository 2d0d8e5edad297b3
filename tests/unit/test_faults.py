"""Faults during runs (issue 10, items 1-5 and 7) through the engine and the CLI with the fake
provider: clean-up that cannot be proven, Ctrl-C at any moment (a real SIGINT to a real
`iacloud apply` process), destroy after a killed run, destroy's provider settings, objects gone
before a destroy, and the lock held from plan to apply (two real processes)."""

from __future__ import annotations

import os
import pty
import select
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from iacloud import engine
from iacloud.cli.main import cli
from iacloud.drift import build_report
from iacloud.plan import Action
from iacloud.planner import PlanOptions
from iacloud.provider import Observed, Registry, TaggedObject
from iacloud.state.model import Event, PendingOperation, Snapshot

TESTS = Path(__file__).resolve().parent.parent


def fake_dir(stack_id: str, type_name: str = "fake_thing") -> Path:
    return engine.data_root() / "stacks" / stack_id / "fake" / type_name


def objects(stack_id: str, type_name: str = "fake_thing") -> list[Path]:
    return sorted(fake_dir(stack_id, type_name).glob("*.json"))


def plan_apply(stack: Path, jobs: int = 4):
    ws = engine.Workspace(stack)
    plan, _ = engine.make_plan(ws, ws.load(), PlanOptions())
    return ws, plan, engine.apply(ws, plan, jobs=jobs)


def destroy(stack: Path, name: str):
    ws = engine.Workspace(stack)
    plan, _ = engine.destroy_plan(ws, name)
    return ws, plan, engine.apply(ws, plan, command="destroy")


def pend(ws: engine.Workspace, stack: str, op: PendingOperation) -> None:
    ws.backend.record_pending(
        stack,
        op,
        Event(serial=op.serial, address=op.address, type=op.type, action="CREATE",
              status="IN_PROGRESS"),
    )  # fmt: skip


# ---- item 1: a pending operation goes only when the provider proved nothing is left -------

LEAKY = """
version = 1
name = "leaky"
[resources.x]
type = "fake_leaky"
name = "x"
"""


def test_unproven_cleanup_keeps_pending_and_destroy_finds_the_object(write_stack):
    stack = write_stack(LEAKY)
    ws, plan, result = plan_apply(stack)
    assert [o.status for o in result.outcomes] == ["failed"]
    assert "pending operation is kept" in result.failed[0].error
    snap = ws.backend.snapshot("leaky")
    assert [p.address for p in snap.pending] == ["x"]
    assert len(objects(plan.stack_id, "fake_leaky")) == 1

    # the next plan finds the object by its tag and takes it in as tainted: replaced
    again, _ = engine.make_plan(ws, ws.load(), PlanOptions())
    assert [(c.address, c.action) for c in again.actionable()] == [("x", Action.DELETE_CREATE)]
    _, _, gone = destroy(stack, "leaky")
    assert gone.ok
    assert objects(plan.stack_id, "fake_leaky") == []
    assert ws.backend.snapshot("leaky").pending == []


def test_proven_failure_drops_pending(write_stack):
    stack = write_stack(
        'version = 1\nname = "f"\n[resources.x]\ntype = "fake_thing"\nfail = true\n'
    )
    ws, _, result = plan_apply(stack)
    assert [o.status for o in result.outcomes] == ["failed"]
    assert ws.backend.snapshot("f").pending == []


# ---- item 2: Ctrl-C, a real SIGINT to a real `iacloud apply` --------------------------------


def cli_env(fake_entry_point: Path, data_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(fake_entry_point), str(TESTS)])
    env["IACLOUD_DATA_DIR"] = str(data_dir)
    env.pop("IACLOUD_STATE", None)
    env.update(extra)
    return env


def iacloud(*args: str) -> list[str]:
    return [sys.executable, "-c", "from iacloud.cli.main import main; main()", *args]


def state_rows(stack: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(f"file:{stack.parent / '.iacloud' / 'state.db'}?mode=ro", uri=True) as db:
        return db.execute(sql).fetchall()


SIGINT_ON_START = """
version = 1
name = "sig"
[resources.a_slow]
type = "fake_thing"
name = "slow"
sleep = 1.5
[resources.b_trigger]
type = "fake_interrupter"
name = "trigger"
[resources.c_later]
type = "fake_thing"
name = "later"
ref = { get_resource = "a_slow" }
"""


def test_sigint_while_the_scheduler_starts_a_step(write_stack, fake_entry_point, data_dir):
    """SIGINT lands after b_trigger's pending operation is written and before a worker has
    it, while a_slow runs: both finish and are recorded, c_later never starts, exit 130."""
    stack = write_stack(SIGINT_ON_START)
    env = cli_env(fake_entry_point, data_dir, FAKE_SIGINT_ON_START="1")
    run = subprocess.run(iacloud("apply", "--auto-approve", "-j", "2", str(stack)), env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode == 130, out
    assert "Traceback" not in out
    assert "running steps were recorded" in out
    assert state_rows(stack, "SELECT address FROM pending") == []
    recorded = state_rows(stack, "SELECT address FROM resources WHERE serial_to IS NULL")
    assert sorted(r[0] for r in recorded) == ["a_slow", "b_trigger"]
    # the next apply creates only what was never started: nothing is rebuilt
    again = subprocess.run(iacloud("apply", "--auto-approve", str(stack)), env=cli_env(
        fake_entry_point, data_dir), capture_output=True, text=True, timeout=60)  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 to create, 0 to update, 0 to replace, 0 to delete" in again.stdout


SLOW = """
version = 1
name = "slow"
[resources.t]
type = "fake_thing"
count = 3
name = "t%index%"
sleep = 2.0
"""


def start_apply(stack: Path, env: dict[str, str]) -> subprocess.Popen:
    args = iacloud("apply", "--auto-approve", "-j", "2", str(stack))
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    deadline = time.monotonic() + 30
    db = stack.parent / ".iacloud" / "state.db"
    while time.monotonic() < deadline:  # until two steps run (their pending rows are written)
        try:
            if db.exists() and len(state_rows(stack, "SELECT address FROM pending")) == 2:
                return proc
        except sqlite3.OperationalError:
            pass  # the file is being created

        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the apply never started two steps")


def test_sigint_from_outside_waits_for_running_steps(write_stack, fake_entry_point, data_dir):
    stack = write_stack(SLOW)
    proc = start_apply(stack, cli_env(fake_entry_point, data_dir))
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out
    assert "Traceback" not in out
    assert state_rows(stack, "SELECT address FROM pending") == []
    recorded = state_rows(stack, "SELECT address FROM resources WHERE serial_to IS NULL")
    assert len(recorded) == 2
    status = state_rows(stack, "SELECT status FROM versions ORDER BY serial DESC LIMIT 1")
    assert status == [("interrupted",)]


def test_second_sigint_leaves_at_once_and_says_what_it_leaves(
    write_stack, fake_entry_point, data_dir
):
    stack = write_stack(SLOW)
    proc = start_apply(stack, cli_env(fake_entry_point, data_dir))
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out
    assert time.monotonic() - started < 1.5, "it waited for the running steps"
    assert "Aborted: left 2 running step(s) unfinished: create t[0], create t[1]" in out
    assert "Traceback" not in out
    assert len(state_rows(stack, "SELECT address FROM pending")) == 2
    assert state_rows(stack, "SELECT holder FROM locks") == []
    # recovery: the next apply converges on three objects, none duplicated
    ws, plan, result = plan_apply(stack)
    assert result.ok
    assert len(objects(plan.stack_id)) == 3
    assert ws.backend.snapshot("slow").pending == []


# ---- item 3: destroy right after a killed apply; drift sees pending operations ------------

TWO = """
version = 1
name = "two"
[resources.a]
type = "fake_thing"
name = "a"
[resources.b]
type = "fake_thing"
name = "b"
"""


def test_destroy_resolves_pending_creates(write_stack):
    """A killed apply left two pending creates: one made its object (found by tag), one made
    nothing. Destroy deletes the first, forgets the second: no objects, no pending rows."""
    stack = write_stack(TWO)
    ws = engine.Workspace(stack)
    config = ws.load()
    plan, _ = engine.make_plan(ws, config, PlanOptions())
    serial = ws.backend.begin_version("two", "apply", plan.stack_id, plan.lineage)
    for address in ("a", "b"):
        pend(ws, "two", PendingOperation(address=address, type="fake_thing", provider="fake",
                                         action="create", inputs={"name": address},
                                         serial=serial))  # fmt: skip
    from fake_provider import ThingInputs

    providers = ws.providers("two", plan, {})
    providers.resource("fake_thing").create("a", ThingInputs(name="a"))
    ws.backend.finish_version("two", serial, "interrupted", None)

    plan2, _ = engine.destroy_plan(ws, "two")
    assert [(c.address, c.action) for c in plan2.actionable()] == [("a", Action.DELETE)]
    assert [(u.address, u.action) for u in plan2.state_updates] == [("b", "forget")]
    result = engine.apply(ws, plan2, command="destroy")
    assert result.ok
    assert objects(plan.stack_id) == []
    snap = ws.backend.snapshot("two")
    assert snap.pending == [] and snap.resources == {}


def test_drift_reports_pending_operations_and_their_parts_as_orphans():
    """A server whose domain was never defined: its pending create is reported, and the root
    and seed volumes it left are orphans (they were hidden behind the pending address)."""
    snap = Snapshot(
        stack="s", stack_id="sid", lineage="l", serial=1,
        pending=[PendingOperation(address="web", type="server", provider="libvirt",
                                  action="create", serial=1)],
    )  # fmt: skip
    tagged = [
        TaggedObject("server", "pool/iac-root", "sid", "web", part="root"),
        TaggedObject("server", "pool/iac-seed", "sid", "web", part="seed"),
    ]
    report = build_report(snap, {}, tagged, Registry([]), now=datetime.now(timezone.utc))
    assert report.drifted
    assert [(r.address, r.status, r.id) for r in report.resources] == [("web", "interrupted", None)]
    assert sorted(o.id for o in report.orphans) == ["pool/iac-root", "pool/iac-seed"]

    # once the domain exists, its volumes are its own: no orphans
    found = {"web": Observed(id="uuid-1", inputs={}, attributes={})}
    tagged.append(TaggedObject("server", "uuid-1", "sid", "web"))
    report = build_report(snap, found, tagged, Registry([]), now=datetime.now(timezone.utc))
    assert report.orphans == []


# ---- item 4: destroy honours [provider.*]; a saved destroy plan removes the working dir ----

SETTINGS = """
version = 1
name = "set"
[provider.fake]
path = "{path}"
[resources.a]
type = "fake_thing"
name = "a"
"""


def test_destroy_honours_provider_settings(write_stack, tmp_path):
    where = tmp_path / "elsewhere"
    stack = write_stack(SETTINGS.format(path=where))
    _, _, result = plan_apply(stack)
    assert result.ok
    assert len(list((where / "fake_thing").glob("*.json"))) == 1
    out = CliRunner().invoke(cli, ["destroy", "--auto-approve", str(stack)])
    assert out.exit_code == 0, out.output
    assert list((where / "fake_thing").glob("*.json")) == []


def test_apply_of_a_saved_destroy_plan_removes_the_working_dir(write_stack, tmp_path):
    stack = write_stack(TWO)
    _, plan, result = plan_apply(stack)
    assert result.ok and fake_dir(plan.stack_id).exists()
    saved = tmp_path / "destroy.json"
    runner = CliRunner()
    out = runner.invoke(cli, ["plan", "--destroy", "-o", str(saved), str(stack)])
    assert out.exit_code == 0, out.output
    out = runner.invoke(cli, ["apply", str(saved)])
    assert out.exit_code == 0, out.output
    assert not (engine.data_root() / "stacks" / plan.stack_id).exists()


# ---- item 5: a missing object in a destroy is forgotten -----------------------------------


def test_destroy_forgets_objects_already_gone(write_stack):
    """After a killed destroy: 'a' was deleted but its record and pending delete remain."""
    stack = write_stack(TWO)
    ws, plan, result = plan_apply(stack)
    assert result.ok
    snap = ws.backend.snapshot("two")
    a = snap.resources["a"]
    serial = ws.backend.begin_version("two", "destroy", snap.stack_id, snap.lineage)
    pend(ws, "two", PendingOperation(address="a", type="fake_thing", provider="fake",
                                     action="delete", id=a.id, serial=serial))  # fmt: skip
    (fake_dir(plan.stack_id) / f"{a.id}.json").unlink()
    ws.backend.finish_version("two", serial, "interrupted", None)

    out = CliRunner().invoke(cli, ["destroy", "--auto-approve", str(stack)])
    assert out.exit_code == 0, out.output
    assert "a (fake_thing)" in out.output and "forget" in out.output
    snap = ws.backend.snapshot("two")
    assert snap.resources == {} and snap.pending == []
    assert objects(plan.stack_id) == []
    again = CliRunner().invoke(cli, ["destroy", "--auto-approve", str(stack)])
    assert "No changes" in again.output


# ---- item 7: one lock from the refresh to the last write -----------------------------------


def test_no_other_run_between_plan_and_apply(write_stack, fake_entry_point, data_dir):
    """Run A stops at its confirmation prompt (plan made, apply not begun); run B, started
    then, must find the stack locked rather than apply in between."""
    stack = write_stack(TWO)
    env = cli_env(fake_entry_point, data_dir)
    pid, fd = pty.fork()
    if pid == 0:  # run A, on a terminal so that it asks
        os.execve(sys.executable, iacloud("apply", str(stack)), env)
    seen = b""
    deadline = time.monotonic() + 30
    try:
        while b"Do you want to apply" not in seen:
            assert time.monotonic() < deadline, seen.decode(errors="replace")
            if select.select([fd], [], [], 0.5)[0]:
                seen += os.read(fd, 4096)
        b = subprocess.run(iacloud("apply", "--auto-approve", str(stack)), env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        assert b.returncode == 1, b.stdout + b.stderr
        assert "is locked" in b.stderr and "'apply'" in b.stderr
        os.write(fd, b"y\n")
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        deadline = time.monotonic() + 30
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        if done[0] == 0:  # still at its prompt: the test failed above
            os.kill(pid, signal.SIGKILL)
            done = os.waitpid(pid, 0)
        status = done[1]
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, seen.decode(errors="replace")
    rows = state_rows(stack, "SELECT command, status FROM versions ORDER BY serial")
    assert rows == [("apply", "complete")]  # one version: B changed nothing


@pytest.fixture(autouse=True)
def _state_is_local(monkeypatch):
    monkeypatch.delenv("IACLOUD_STATE", raising=False)
