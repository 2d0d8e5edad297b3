"""Faults during runs against a real libvirtd (issue 10, items 1 and 3): libvirtd restarted
while servers are being created (one real restart, the way scripts/host-setup.sh starts it),
and destroy right after a killed apply that left a server's volumes without its domain.

Each test has a stack and pool of its own; whatever the test leaves is removed by tag."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_cli import IACLOUD, ROOT, TINY, iacloud

from iacloud.providers.libvirt.tags import NS, stack_prefix, volume_name
from iacloud.state.model import Event, PendingOperation
from iacloud.state.sqlite import SQLiteBackend

libvirt = pytest.importorskip("libvirt")

pytestmark = pytest.mark.libvirt

STACK = """
version = 1
name = "{name}"

[resources.img]
type = "image"
source = "{image}"
format = "qcow2"

[resources.web]
type = "server"
count = {count}
image = {{ get_resource = "img" }}
memory_mib = 96
"""


def tagged(stack_id: str) -> dict[str, str]:
    """Every domain and volume tagged with the stack: {object: address or role}."""
    conn = libvirt.open("qemu:///system")
    found: dict[str, str] = {}
    try:
        for dom in conn.listAllDomains(0):
            with contextlib.suppress(libvirt.libvirtError):
                owner = ET.fromstring(dom.XMLDesc(0)).find(f"metadata/{{{NS}}}owner")
                if owner is not None and owner.get("stack_id") == stack_id:
                    found[f"domain {dom.name()}"] = owner.get("address") or ""
        prefix = f"iac-{stack_prefix(stack_id)}-"
        for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
            with contextlib.suppress(libvirt.libvirtError):
                pool.refresh(0)
                for v in pool.listAllVolumes(0):
                    if v.name().startswith(prefix):
                        found[f"volume {pool.name()}/{v.name()}"] = v.name()
    finally:
        conn.close()
    return found


def purge(stack_id: str) -> None:
    conn = libvirt.open("qemu:///system")
    try:
        for dom in conn.listAllDomains(0):
            with contextlib.suppress(libvirt.libvirtError):
                owner = ET.fromstring(dom.XMLDesc(0)).find(f"metadata/{{{NS}}}owner")
                if owner is not None and owner.get("stack_id") == stack_id:
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.destroy()
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    finally:
        conn.close()


def rows(db: Path, sql: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        return c.execute(sql).fetchall()


@pytest.fixture
def lab(tmp_path: Path, e2e_pool: str) -> Iterator[tuple[Path, Path, str]]:
    """(stack file, its state db, the [provider.libvirt] table of the test's pool)"""
    if not TINY.is_file():
        pytest.skip("build/images/tiny.qcow2 is missing: run `make image`")
    stack = tmp_path / "faults.toml"
    db = tmp_path / ".iacloud" / "state.db"
    yield stack, db, e2e_pool
    with contextlib.suppress(Exception):
        subprocess.run([str(IACLOUD), "destroy", "--auto-approve", str(stack)],
                       capture_output=True, timeout=300)  # fmt: skip
    if db.exists():
        for (stack_id,) in rows(db, "SELECT stack_id FROM stacks"):
            purge(stack_id)


def test_libvirtd_restart_while_servers_are_created(lab: tuple[Path, Path, str]) -> None:
    """Item 1: every object left by the failed creates is in state or pending; the next apply
    converges (no 'already exists'), and destroy leaves nothing."""
    stack, db, pool = lab
    name = f"flt-{uuid.uuid4().hex[:8]}"
    stack.write_text(STACK.format(name=name, image=TINY, count=2) + pool)
    args = [str(IACLOUD), "apply", "--auto-approve", "-j", "2", str(stack)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until both server creates are under way
        with contextlib.suppress(sqlite3.Error):
            pending = rows(db, "SELECT address FROM pending") if db.exists() else []
            if sorted(a for (a,) in pending) == ["web[0]", "web[1]"]:
                break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("the server creates never started")
    time.sleep(1.0)
    subprocess.run(["bash", str(ROOT / "scripts" / "restart-libvirtd.sh")], check=True,
                   timeout=180)  # fmt: skip
    out, _ = proc.communicate(timeout=300)
    assert "Traceback" not in out

    (stack_id,) = rows(db, "SELECT stack_id FROM stacks")[0]
    known = {a for (a,) in rows(db, "SELECT address FROM resources WHERE serial_to IS NULL")}
    known |= {a for (a,) in rows(db, "SELECT address FROM pending")}
    for obj, owner in tagged(stack_id).items():
        if obj.startswith("domain"):
            assert owner in known, f"{obj} is in neither state nor pending\n{out}"

    iacloud("apply", "--auto-approve", str(stack))
    iacloud("plan", "--detailed-exitcode", str(stack))
    assert rows(db, "SELECT address FROM pending") == []
    iacloud("destroy", "--auto-approve", str(stack))
    assert tagged(stack_id) == {}
    assert rows(db, "SELECT address FROM pending") == []


def test_destroy_after_killed_apply_removes_volumes_of_a_server_never_defined(
    lab: tuple[Path, Path, str],
) -> None:
    """Item 3: a kill -9 after a server's root and seed volumes were made and before its
    domain was defined. drift reports the pending create and the volumes as orphans; destroy
    removes them and leaves no pending row."""
    stack, db, pool_toml = lab
    name = f"flt-{uuid.uuid4().hex[:8]}"
    stack.write_text(STACK.format(name=name, image=TINY, count=1) + pool_toml)
    iacloud("apply", "--auto-approve", "--target", "img", str(stack))
    (stack_id,) = rows(db, "SELECT stack_id FROM stacks")[0]
    (serial,) = rows(db, "SELECT MAX(serial) FROM versions")[0]

    # what the killed run left: a pending create, and the two volumes in the stack's pool
    backend = SQLiteBackend(db)
    op = PendingOperation(address="web[0]", type="server", provider="libvirt", action="create",
                          serial=serial)  # fmt: skip
    backend.record_pending(name, op, Event(serial=serial, address="web[0]", type="server",
                                           action="CREATE", status="IN_PROGRESS"))  # fmt: skip
    backend.close()
    pool_name = pool_toml.split('pool = "')[1].split('"')[0]
    conn = libvirt.open("qemu:///system")
    try:
        pool = conn.storagePoolLookupByName(pool_name)
        for vol in (volume_name(stack_id, "web[0]", "qcow2", "root"),
                    volume_name(stack_id, "web[0]", "raw", "seed")):  # fmt: skip
            fmt = "qcow2" if vol.endswith("qcow2") else "raw"
            pool.createXML(
                f"<volume><name>{vol}</name><capacity unit='M'>1</capacity>"
                f"<target><format type='{fmt}'/></target></volume>",
                0,
            )
    finally:
        conn.close()

    report = json.loads(iacloud("drift", "--json", str(stack), code=2))
    assert [(r["address"], r["status"]) for r in report["resources"] if r["status"] != "in-sync"]\
        == [("web[0]", "interrupted")]  # fmt: skip
    assert sorted(o["id"].rsplit(".", 2)[1] for o in report["orphans"]) == ["root", "seed"]

    iacloud("destroy", "--auto-approve", str(stack))
    assert tagged(stack_id) == {}
    assert rows(db, "SELECT address FROM pending") == []


def test_destroy_after_killed_destroy_removes_volumes_of_an_undefined_server(
    lab: tuple[Path, Path, str],
) -> None:
    """A destroy killed after a server's domain was undefined and before its root and seed
    volumes were deleted (found by bench/crash_trials.py): the next destroy finds the volumes
    by tag and deletes them rather than only forgetting the server."""
    stack, db, pool_toml = lab
    name = f"flt-{uuid.uuid4().hex[:8]}"
    text = STACK.format(name=name, image=TINY, count=1) + 'power_state = "shutoff"\n'
    stack.write_text(text + pool_toml)
    iacloud("apply", "--auto-approve", str(stack))
    (stack_id,) = rows(db, "SELECT stack_id FROM stacks")[0]
    conn = libvirt.open("qemu:///system")
    try:
        for obj in tagged(stack_id):
            if obj.startswith("domain "):
                conn.lookupByName(obj.split(" ", 1)[1]).undefineFlags(0)
    finally:
        conn.close()
    assert [o for o in tagged(stack_id) if o.endswith((".root.qcow2", ".seed.raw"))]

    iacloud("destroy", "--auto-approve", str(stack))
    assert tagged(stack_id) == {}
    assert rows(db, "SELECT address FROM resources WHERE serial_to IS NULL") == []
