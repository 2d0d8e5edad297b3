"""Volume snapshots on a real libvirtd: a marker written into a volume, a snapshot, the marker
overwritten, a volume made from the snapshot still holds the old marker.

Two cases: a detached volume (libvirt clones it) and a volume attached to a running server
(a block copy: the domain keeps running, same id, and its disk is the same single image
afterwards, no overlay left). Markers are written and read with qemu-io with the format
given (`-f`), never probed; into the running guest's disk through QEMU's monitor (HMP
`qemu-io` on the disk's device). Each test has a stack id of its own; a finalizer removes
every domain and volume carrying its tag, and the pool, even when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")
libvirt_qemu = pytest.importorskip("libvirt_qemu")

from iacloud.errors import ProviderError  # noqa: E402
from iacloud.provider import ObjectRef, RunInfo, StackInfo  # noqa: E402
from iacloud.providers.libvirt import LibvirtProvider, LibvirtSettings  # noqa: E402
from iacloud.providers.libvirt.storage import GiB  # noqa: E402
from iacloud.providers.libvirt.tags import NS, stack_prefix  # noqa: E402

pytestmark = pytest.mark.libvirt

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "build" / "images" / "tiny.qcow2"
URI = "qemu:///system"
MARK_OFFSET = 1 << 20  # 1 MiB into the disk, clear of any partition table
MARK_LEN = 4096
OLD, NEW = 0x41, 0x42  # the marker before and after the snapshot


class Lab:
    def __init__(self, conn: libvirt.virConnect, tmp: Path) -> None:
        self.conn = conn
        self.dir = tmp
        self.stack_id = str(uuid.uuid4())
        self.pool = f"iactest-sn-{uuid.uuid4().hex[:8]}"
        self.base = Path("/tmp") / self.pool
        self.base.mkdir(mode=0o755)
        self.base.chmod(0o755)  # QEMU must reach the pool under it
        settings = LibvirtSettings(
            uri=URI,
            pool=self.pool,
            pool_path=str(self.base / "pool"),
            virt_type="qemu",
            boot_timeout=90,
            shutdown_timeout=15,
        )
        stack = StackInfo("sn", self.stack_id, tmp, tmp / "data")
        self.provider = LibvirtProvider(stack, settings)
        self.image = self.provider.resource("image")
        self.volume = self.provider.resource("volume")
        self.snapshot = self.provider.resource("volume_snapshot")
        self.server = self.provider.resource("server")

    def purge(self) -> list[str]:
        """Remove every domain and volume of this lab, and the pool; return what was left."""
        left = []
        for dom in self.conn.listAllDomains(0):
            owner = ET.fromstring(dom.XMLDesc(0)).find(f"metadata/{{{NS}}}owner")
            if owner is not None and owner.get("stack_id") == self.stack_id:
                left.append(f"domain {dom.name()}")
                with contextlib.suppress(libvirt.libvirtError):
                    dom.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    dom.undefine()
        with contextlib.suppress(libvirt.libvirtError):
            pool = self.conn.storagePoolLookupByName(self.pool)
            pool.refresh(0)
            prefix = f"iac-{stack_prefix(self.stack_id)}-"
            for vol in pool.listAllVolumes(0):
                if vol.name().startswith(prefix):
                    left.append(f"volume {vol.name()}")
                vol.delete(0)
            pool.destroy()
            pool.undefine()
        shutil.rmtree(self.base, ignore_errors=True)
        return left


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    try:
        conn = libvirt.open(URI)
    except libvirt.libvirtError as exc:
        pytest.skip(f"libvirtd not reachable at {URI}: {exc}")
    lab = Lab(conn, tmp_path)
    try:
        yield lab
    finally:
        lab.provider.close()
        left = lab.purge()
        conn.close()
        assert not left, f"the test left tagged objects behind: {left}"


def qemu_io(
    path: str, fmt: str, command: str, *, shared: bool = False
) -> subprocess.CompletedProcess[str]:
    """qemu-io on a file with its format given (-f), read-only; `shared`: beside a running
    QEMU that has it open (-U)."""
    argv = ["qemu-io", "-f", fmt, "-r", *(["-U"] if shared else []), "-c", command, path]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def write_marker(path: str, fmt: str, pattern: int) -> None:
    cmd = f"write -P {pattern:#x} {MARK_OFFSET} {MARK_LEN}"
    subprocess.run(["qemu-io", "-f", fmt, "-c", cmd, path], check=True, capture_output=True)


def has_marker(path: str, fmt: str, pattern: int, *, shared: bool = False) -> bool:
    out = qemu_io(path, fmt, f"read -P {pattern:#x} {MARK_OFFSET} {MARK_LEN}", shared=shared)
    return out.returncode == 0 and "verification failed" not in out.stdout


def backing_of(path: str) -> str | None:
    info = subprocess.run(
        ["qemu-img", "info", "-U", "-f", "qcow2", "--output=json", path],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return json.loads(info).get("backing-filename")


def test_snapshot_of_a_detached_volume(lab: Lab) -> None:
    small = lab.dir / "small.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(small), "64M"], check=True)
    img = lab.image.create("base", lab.image.Inputs(source=str(small), format="qcow2"))
    # a qcow2 overlay of an image, and a raw volume: both copied whole
    data = lab.volume.create("data", lab.volume.Inputs(size_gib=1, image=img.id))
    raw = lab.volume.create("raw", lab.volume.Inputs(size_gib=1, format="raw"))
    write_marker(data.attributes["path"], "qcow2", OLD)
    write_marker(raw.attributes["path"], "raw", OLD)

    snap = lab.snapshot.create("snap", lab.snapshot.Inputs(volume=data.id))
    rsnap = lab.snapshot.create("rsnap[0]", lab.snapshot.Inputs(volume=raw.id))
    assert snap.id == f"{lab.pool}/iac-{stack_prefix(lab.stack_id)}-snap.snap.qcow2"
    assert rsnap.id.endswith("-rsnap.0.snap.qcow2")
    assert snap.inputs == {"volume": data.id}
    attrs = snap.attributes
    assert attrs["volume"] == data.id and attrs["capacity_bytes"] == GiB
    assert attrs["consistency"] == "offline"  # no running guest used it
    assert datetime.fromisoformat(attrs["created_at"]).tzinfo is not None
    assert backing_of(attrs["path"]) is None  # flattened: needs neither volume nor image
    assert has_marker(attrs["path"], "qcow2", OLD)

    write_marker(data.attributes["path"], "qcow2", NEW)
    write_marker(raw.attributes["path"], "raw", NEW)
    copy = lab.volume.create("copy", lab.volume.Inputs(size_gib=1, snapshot=snap.id))
    rcopy = lab.volume.create("rcopy", lab.volume.Inputs(size_gib=2, snapshot=rsnap.id))
    assert has_marker(copy.attributes["path"], "qcow2", OLD)  # the point in time
    assert has_marker(rcopy.attributes["path"], "qcow2", OLD)
    assert has_marker(data.attributes["path"], "qcow2", NEW)  # the volume went on
    assert copy.inputs["snapshot"] == snap.id and copy.inputs["image"] is None
    assert backing_of(copy.attributes["path"]) == attrs["path"]
    assert rcopy.attributes["capacity_bytes"] == 2 * GiB

    # read by id and by tag, import and the orphan listing agree with create
    assert lab.snapshot.read([ObjectRef("snap", snap.id, snap.inputs)])["snap"] == snap
    assert lab.snapshot.read([ObjectRef("snap", None, {"volume": data.id})])["snap"] == snap
    assert lab.snapshot.import_("snap", snap.id) == snap
    assert lab.volume.import_("copy", copy.id) == copy
    tagged = {t.address: t.id for t in lab.snapshot.list_tagged() if t.stack_id == lab.stack_id}
    assert tagged == {"snap": snap.id, "rsnap[0]": rsnap.id}
    with pytest.raises(ProviderError, match="is the volume snapshot snap, not a volume"):
        lab.volume.import_("x", snap.id)
    with pytest.raises(ProviderError, match="read-only"):  # never attached or snapshotted
        lab.snapshot.create("again", lab.snapshot.Inputs(volume=snap.id))

    # a snapshot a volume is made from cannot be deleted: the message names both
    with pytest.raises(ProviderError, match=r"snapshot snap .* volume .*-copy\.qcow2 \(copy\)"):
        lab.snapshot.delete("snap", snap)
    assert lab.snapshot.read([ObjectRef("snap", snap.id, {})])  # still there
    # unless the run deletes that volume too
    lab.provider.run = RunInfo(deleting=frozenset({rcopy.id}))
    lab.snapshot.delete("rsnap[0]", rsnap)
    lab.provider.run = RunInfo()
    lab.volume.delete("copy", copy)
    lab.snapshot.delete("snap", snap)
    assert lab.snapshot.read([ObjectRef("snap", snap.id, {})]) == {}

    # deleted behind iacloud's back: a read finds nothing (drift: deleted outside)
    again = lab.snapshot.create("snap", lab.snapshot.Inputs(volume=data.id))
    lab.conn.storageVolLookupByPath(again.attributes["path"]).delete(0)
    assert lab.snapshot.read([ObjectRef("snap", again.id, again.inputs)]) == {}
    lab.snapshot.delete("snap", again)  # already gone: fine
    for address, obs in (("rcopy", rcopy), ("data", data), ("raw", raw)):
        lab.volume.delete(address, obs)
    lab.image.delete("base", img)


def _disk(dom: libvirt.virDomain, volume: str, flags: int = 0) -> ET.Element:
    for disk in ET.fromstring(dom.XMLDesc(flags)).findall("devices/disk"):
        source = disk.find("source")
        if source is not None and source.get("volume") == volume:
            return disk
    raise AssertionError(f"no disk of volume {volume}")


def _hmp(dom: libvirt.virDomain, volume: str, command: str) -> str:
    """A qemu-io command on the running guest's disk of `volume`, through QEMU's monitor."""
    alias = _disk(dom, volume).find("alias").get("name")
    cmd = f'qemu-io -d /machine/peripheral/{alias}/virtio-backend "{command}"'
    return libvirt_qemu.qemuMonitorCommand(
        dom, cmd, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
    )


def test_snapshot_of_a_volume_attached_to_a_running_server(lab: Lab) -> None:
    if not TINY.is_file():
        pytest.skip("build/images/tiny.qcow2 is missing: run `make image`")
    img = lab.image.create("base", lab.image.Inputs(source=str(TINY), format="qcow2"))
    data = lab.volume.create("data", lab.volume.Inputs(size_gib=1))
    write_marker(data.attributes["path"], "qcow2", OLD)
    inputs = lab.server.Inputs(image=img.id, volumes=[data.id], memory_mib=128)
    vm = lab.server.create("vm", inputs)
    dom = lab.conn.lookupByUUIDString(vm.id)
    domid = dom.ID()
    data_name = data.id.split("/")[1]
    persistent = ET.tostring(_disk(dom, data_name, libvirt.VIR_DOMAIN_XML_INACTIVE))

    snap = lab.snapshot.create("snap", lab.snapshot.Inputs(volume=data.id))

    # the domain never stopped, and its disk is the one image it was, no overlay, no job
    assert dom.ID() == domid and dom.isActive()
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    disk = _disk(dom, data_name)
    assert disk.find("mirror") is None
    store = disk.find("backingStore")
    assert store is None or store.find("source") is None  # a single image
    assert dom.blockJobInfo(disk.find("target").get("dev"), 0) == {}
    assert ET.tostring(_disk(dom, data_name, libvirt.VIR_DOMAIN_XML_INACTIVE)) == persistent
    assert backing_of(snap.attributes["path"]) is None
    assert has_marker(snap.attributes["path"], "qcow2", OLD)
    assert snap.attributes["consistency"] == "crash-consistent"  # the tiny guest has no agent

    # the running guest overwrites the marker: its disk changes, the snapshot does not
    # (qemu-io prints to QEMU's own output; the monitor answers only errors)
    assert _hmp(dom, data_name, f"write -P {NEW:#x} {MARK_OFFSET} {MARK_LEN}").strip() == ""
    assert has_marker(data.attributes["path"], "qcow2", NEW, shared=True)
    copy = lab.volume.create("copy", lab.volume.Inputs(size_gib=1, snapshot=snap.id))
    assert has_marker(copy.attributes["path"], "qcow2", OLD)

    # the volume made from it hot-plugs into the running guest: QEMU opens it and the snapshot
    both = inputs.model_copy(update={"volumes": [data.id, copy.id]})
    vm = lab.server.update("vm", vm, both, frozenset({"volumes"}))
    assert dom.ID() == domid and vm.inputs["volumes"] == [data.id, copy.id]
    assert has_marker(copy.attributes["path"], "qcow2", OLD, shared=True)

    with pytest.raises(ProviderError, match=r"volume .*-copy\.qcow2 \(copy\) is a copy-on-write"):
        lab.snapshot.delete("snap", snap)
    lab.server.delete("vm", vm)
    lab.volume.delete("copy", copy)
    lab.snapshot.delete("snap", snap)
    lab.volume.delete("data", data)
    lab.image.delete("base", img)
