"""Import and volume snapshots on the site's hosts (#16), through the CLI against the real lab
hosts (scripts/lab-hosts.sh).

Import: a volume made on h2 directly through libvirt, a server made on h2 and then forgotten
(`state rm`), and an overlay volume on h2 backed by h2's copy of the stack's image, are
imported into a stack that does not name their host; import finds them on h2, state records
host h2 (and the overlay's image as the stack's image, not the copy), and the next plan is
empty. An id on no host is an error
naming the hosts searched.
Snapshots: a volume named on h2, a snapshot of it and a volume made from the snapshot are all
made in h2's pool (checked in h2's own libvirtd), the plan after is empty, the snapshot
forgotten is imported from h2, and destroy leaves nothing of the stack on any host.

Everything made here is named "imp..." (the stacks "imp" and "impsnap", the volume
"imp-data.qcow2"); the teardown destroys both stacks and removes whatever of that is left,
also when a test failed.
"""

from __future__ import annotations

import contextlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from lab import HOSTS, TINY, run_stack, uri, workdir

from iacloud.providers.libvirt.pool import pool_xml

POOL = "iacloud"  # the lab hosts' pool (the provider's default pool name)
POOL_PATH = "/var/lib/iacloud/pool"  # where the provider would make it (setting pool_path)
FOREIGN = "imp-data.qcow2"  # made here through libvirt, not by iacloud
DATA = """
version = 1
name = "imp"

[resources.data]
type = "volume"
size_gib = 1
"""
SERVER = f"""
[resources.tiny]
type = "image"
source = "{TINY}"
format = "qcow2"

[resources.vm]
type = "server"
image = {{ get_resource = "tiny" }}
memory_mib = 128
power_state = "shutoff"
"""
OVERLAY = """
[resources.ov]
type = "volume"
size_gib = 1
image = { get_resource = "tiny" }
"""
SNAPSHOTS = """
version = 1
name = "impsnap"

[resources.data]
type = "volume"
size_gib = 1
host = "h2"

[resources.snap]
type = "volume_snapshot"
volume = { get_resource = "data" }

[resources.copy]
type = "volume"
size_gib = 1
snapshot = { get_resource = "snap" }
"""
# the volume-name prefixes ("iac-<8 of the stack id>-") of the stacks, for the teardown
PREFIXES: set[str] = set()


@contextlib.contextmanager
def connected(addr: str) -> Iterator[libvirt.virConnect]:
    conn = libvirt.open(uri(addr))
    try:
        yield conn
    finally:
        conn.close()


def lab_pool(conn: libvirt.virConnect) -> libvirt.virStoragePool:
    """The pool on a host, defined and started here when missing: fresh lab hosts have none
    until a stack has put something on them, and this module is not the first to."""
    try:
        return conn.storagePoolLookupByName(POOL)
    except libvirt.libvirtError:
        pool = conn.storagePoolDefineXML(pool_xml(POOL, POOL_PATH), 0)
        pool.build(0)
        pool.create(0)
        return pool


def volumes(addr: str) -> dict[str, ET.Element]:
    """The volumes of the lab pool on a host, by name, as their XML (none without a pool)."""
    with connected(addr) as conn:
        try:
            pool = conn.storagePoolLookupByName(POOL)
        except libvirt.libvirtError:
            return {}
        pool.refresh(0)
        return {v.name(): ET.fromstring(v.XMLDesc(0)) for v in pool.listAllVolumes(0)}


def ours(name: str) -> bool:
    return name.startswith("imp") or any(name.startswith(p) for p in PREFIXES)


def purge() -> list[str]:
    """Remove what this module made on the lab hosts; return what was still there."""
    left = []
    for addr in HOSTS.values():
        with connected(addr) as conn:
            for dom in conn.listAllDomains(0):
                if dom.name().startswith("imp"):
                    left.append(f"domain {dom.name()}")
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.destroy()
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.undefine()
            with contextlib.suppress(libvirt.libvirtError):
                pool = conn.storagePoolLookupByName(POOL)
                pool.refresh(0)
                for vol in pool.listAllVolumes(0):
                    if ours(vol.name()):
                        left.append(f"volume {vol.name()}")
                        with contextlib.suppress(libvirt.libvirtError):
                            vol.delete(0)
    return left


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = workdir(tmp_path_factory, "imp", imp=DATA, impsnap=SNAPSHOTS)
    yield path
    destroyed = [
        run_stack(path, name, "destroy", "--auto-approve") for name in ("imp.toml", "impsnap.toml")
    ]
    left = purge()
    assert all(d.returncode == 0 for d in destroyed), [d.stdout + d.stderr for d in destroyed]
    assert not left, left


def state(work: Path, stack: str) -> dict[str, Any]:
    done = run_stack(work, stack, "show", "--json")
    assert done.returncode == 0, done.stderr
    resources: dict[str, Any] = json.loads(done.stdout)["resources"]
    for r in resources.values():
        if isinstance(r.get("id"), str) and "/iac-" in r["id"]:
            PREFIXES.add(r["id"].split("/", 1)[1][:13])  # iac-XXXXXXXX-
    return resources


def assert_plan_empty(work: Path, stack: str) -> None:
    done = run_stack(work, stack, "plan", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    plan = json.loads(done.stdout)
    assert not [c for c in plan["changes"] if c["action"] != "no-op"], plan["changes"]
    assert not plan["drift"], plan["drift"]


def test_an_id_on_no_host_is_an_error_naming_the_hosts_searched(work: Path) -> None:
    done = run_stack(work, "imp.toml", "import", "data", f"{POOL}/imp-nowhere.qcow2")
    assert done.returncode != 0
    said = " ".join(done.stderr.split())  # the CLI wraps long messages
    assert (
        f"no volume {POOL}/imp-nowhere.qcow2 on any host (searched the default host, h1, h2)"
        in said
    ), done.stderr


def test_a_volume_made_on_h2_through_libvirt_is_imported_from_there(work: Path) -> None:
    with connected(HOSTS["h2"]) as conn:
        lab_pool(conn).createXML(
            f"<volume><name>{FOREIGN}</name><capacity unit='GiB'>1</capacity>"
            "<target><format type='qcow2'/></target></volume>",
            0,
        )
    done = run_stack(work, "imp.toml", "import", "data", f"{POOL}/{FOREIGN}")
    assert done.returncode == 0, done.stdout + done.stderr
    data = state(work, "imp.toml")["data"]
    assert data["id"] == f"{POOL}/{FOREIGN}" and data["inputs"]["host"] == "h2"
    assert_plan_empty(work, "imp.toml")


def test_a_server_on_h2_forgotten_is_imported_from_there(work: Path) -> None:
    stack = work / "imp.toml"
    stack.write_text(DATA + SERVER + 'host = "h2"\n')
    done = run_stack(work, "imp.toml", "apply", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    vm = state(work, "imp.toml")["vm"]
    done = run_stack(work, "imp.toml", "state", "rm", "vm")
    assert done.returncode == 0, done.stdout + done.stderr
    stack.write_text(DATA + SERVER)  # the host is no longer named: import must find it
    done = run_stack(work, "imp.toml", "import", "vm", vm["id"])
    assert done.returncode == 0, done.stdout + done.stderr
    again = state(work, "imp.toml")["vm"]
    assert again["id"] == vm["id"] and again["inputs"]["host"] == "h2"
    with connected(HOSTS["h2"]) as conn:
        assert conn.lookupByUUIDString(vm["id"]).name().startswith("imp-vm")
    assert_plan_empty(work, "imp.toml")


def test_an_overlay_on_h2_forgotten_is_imported_backed_by_the_stacks_image(work: Path) -> None:
    stack = work / "imp.toml"
    stack.write_text(DATA + SERVER + OVERLAY + 'host = "h2"\n')
    done = run_stack(work, "imp.toml", "apply", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    resources = state(work, "imp.toml")
    ov = resources["ov"]
    assert ov["inputs"]["image"] == resources["tiny"]["id"]
    # on h2 it is backed by h2's copy of the image, not by the image itself
    backing = volumes(HOSTS["h2"])[ov["id"].split("/", 1)[1]].findtext("backingStore/path")
    assert backing is not None and "/iacsite-copy-" in backing, backing
    done = run_stack(work, "imp.toml", "state", "rm", "ov")
    assert done.returncode == 0, done.stdout + done.stderr
    stack.write_text(DATA + SERVER + OVERLAY)  # the host is no longer named: import finds it
    done = run_stack(work, "imp.toml", "import", "ov", ov["id"])
    assert done.returncode == 0, done.stdout + done.stderr
    again = state(work, "imp.toml")["ov"]
    assert again["inputs"]["image"] == resources["tiny"]["id"], again
    assert again["inputs"]["host"] == "h2"
    assert_plan_empty(work, "imp.toml")


def test_a_snapshot_and_a_volume_made_from_it_stay_on_their_volumes_host(work: Path) -> None:
    done = run_stack(work, "impsnap.toml", "apply", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    resources = state(work, "impsnap.toml")
    assert {a: r["inputs"]["host"] for a, r in resources.items()} == {
        "data": "h2",
        "snap": "h2",
        "copy": "h2",
    }
    names = {a: r["id"].split("/", 1)[1] for a, r in resources.items()}
    on_h2 = volumes(HOSTS["h2"])
    assert set(names.values()) <= set(on_h2), sorted(on_h2)
    # the copy is an overlay on the snapshot's file in h2's pool
    backing = on_h2[names["copy"]].findtext("backingStore/path")
    assert backing == on_h2[names["snap"]].findtext("target/path")
    assert not set(names.values()) & set(volumes(HOSTS["h1"]))
    assert_plan_empty(work, "impsnap.toml")
    # a snapshot forgotten is imported from h2, where it is (the stack names no host for it)
    done = run_stack(work, "impsnap.toml", "state", "rm", "snap")
    assert done.returncode == 0, done.stdout + done.stderr
    done = run_stack(work, "impsnap.toml", "import", "snap", resources["snap"]["id"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert state(work, "impsnap.toml")["snap"]["inputs"]["host"] == "h2"
    assert_plan_empty(work, "impsnap.toml")
    done = run_stack(work, "impsnap.toml", "destroy", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not set(names.values()) & set(volumes(HOSTS["h2"]))


def test_nothing_of_the_stacks_is_left_after_destroy(work: Path) -> None:
    done = run_stack(work, "imp.toml", "destroy", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    for addr in HOSTS.values():
        with connected(addr) as conn:
            assert not [d.name() for d in conn.listAllDomains(0) if d.name().startswith("imp")]
        assert not [v for v in volumes(addr) if ours(v)]
