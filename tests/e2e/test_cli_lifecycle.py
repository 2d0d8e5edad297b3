"""Lifecycle rules and rollback on real libvirt (issue 12 items 4 and 5).

apply --rollback: a volume is created, then the server using it fails to start for real (QEMU
cannot reserve 1 TiB of guest memory on this host), and the rollback deletes the volume: libvirt
has no trace of it and state is as before the run. create_before_destroy: a volume whose format
changes gets its new name first; a replacement keeping the name is refused at plan time."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_cli import IACLOUD, iacloud

from iacloud.providers.libvirt.tags import stack_prefix

libvirt = pytest.importorskip("libvirt")

pytestmark = pytest.mark.libvirt

KEEP = """
version = 1
name = "{name}"

[resources.keep]
type = "volume"
size_gib = 1
"""

FAILING = """
[resources.data]
type = "volume"
size_gib = 1

[resources.web]
type = "server"
boot_volume = { get_resource = "data" }
# more than this host can reserve: QEMU fails at start ("cannot set up guest memory")
memory_mib = 1048576
"""


def rows(db: Path, sql: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        return c.execute(sql).fetchall()


def stack_objects(stack_id: str) -> list[str]:
    """Every domain and volume (in any active pool) named after the stack."""
    conn = libvirt.open("qemu:///system")
    prefix = f"iac-{stack_prefix(stack_id)}-"
    found = []
    try:
        for dom in conn.listAllDomains(0):
            if dom.name().endswith(stack_prefix(stack_id)):
                found.append(f"domain {dom.name()}")
        for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
            pool.refresh(0)
            found += [f"volume {v.name()}" for v in pool.listAllVolumes(0)
                      if v.name().startswith(prefix)]  # fmt: skip
    finally:
        conn.close()
    return sorted(found)


@pytest.fixture
def lab(tmp_path: Path, e2e_pool: str) -> Iterator[tuple[Path, Path, str]]:
    stack = tmp_path / "rollback.toml"
    yield stack, tmp_path / ".iacloud" / "state.db", e2e_pool
    with contextlib.suppress(Exception):
        stack.write_text(stack.read_text().split("[resources.data]")[0])
        subprocess.run([str(IACLOUD), "destroy", "--auto-approve", str(stack)],
                       capture_output=True, timeout=300)  # fmt: skip


def test_rollback_removes_the_volume_a_failed_server_create_left(lab) -> None:
    stack, db, pool = lab
    name = f"lcrb-{uuid.uuid4().hex[:8]}"
    stack.write_text(KEEP.format(name=name) + pool)
    iacloud("apply", "--auto-approve", str(stack))
    (stack_id,) = rows(db, "SELECT stack_id FROM stacks")[0]
    before = rows(db, "SELECT address, object_id FROM resources WHERE serial_to IS NULL")
    assert [a for a, _ in before] == ["keep"]
    kept = stack_objects(stack_id)
    assert len(kept) == 1

    stack.write_text(KEEP.format(name=name) + FAILING + pool)
    out = iacloud("apply", "--auto-approve", "--rollback", str(stack), code=1)
    assert "failed: create web" in out, out
    assert "guest memory" in out, out  # QEMU's own refusal, not a stand-in
    assert "ROLLBACK_COMPLETE" in out, out

    # libvirt: the volume the run made is gone, no domain is left, the old volume stays
    assert stack_objects(stack_id) == kept
    # state: as before the run, in a version that says so
    after = rows(db, "SELECT address, object_id FROM resources WHERE serial_to IS NULL")
    assert after == before
    assert rows(db, "SELECT address FROM pending") == []
    assert rows(db, "SELECT command, status FROM versions ORDER BY serial") == [
        ("apply", "complete"), ("apply", "failed"), ("rollback", "rollback_complete"),
    ]  # fmt: skip
    events = rows(db, "SELECT address, action || '_' || status FROM events ORDER BY id")
    assert ("data", "CREATE_COMPLETE") in events and ("web", "CREATE_FAILED") in events
    assert ("data", "ROLLBACK_COMPLETE") in events and (name, "ROLLBACK_COMPLETE") in events


CBD = """
version = 1
name = "{name}"

[resources.data]
type = "volume"
size_gib = 1
format = "{fmt}"
lifecycle = {{ create_before_destroy = true }}
"""


def test_create_before_destroy_of_a_real_volume(lab) -> None:
    """A format change makes a new volume name, so the new volume is made before the old one
    goes; a replacement that keeps the name is refused at plan time."""
    stack, db, pool = lab
    name = f"lccb-{uuid.uuid4().hex[:8]}"
    stack.write_text(CBD.format(name=name, fmt="qcow2") + pool)
    iacloud("apply", "--auto-approve", str(stack))
    (stack_id,) = rows(db, "SELECT stack_id FROM stacks")[0]
    (old,) = stack_objects(stack_id)
    out = iacloud("plan", "--replace", "data", str(stack), code=1)
    assert "lifecycle.create_before_destroy" in out and "change format or pool" in out, out

    stack.write_text(CBD.format(name=name, fmt="raw") + pool)
    out = iacloud("apply", "--auto-approve", str(stack))
    assert "create-then-delete" in out, out
    assert out.index("data: Creating") < out.index("data: Destroying"), out
    (new,) = stack_objects(stack_id)
    assert new != old and new.endswith(".raw")
    events = rows(db, "SELECT action || '_' || status FROM events WHERE serial = 2 ORDER BY id")
    assert [e for (e,) in events] == ["CREATE_IN_PROGRESS", "CREATE_COMPLETE", "DELETE_IN_PROGRESS",
                      "DELETE_COMPLETE"]  # fmt: skip
