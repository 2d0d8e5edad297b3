"""Per-host objects on two real lab hosts (scripts/lab-hosts.sh), through the CLI with a site
file: a volume and a server from the tiny image on h1, another pair on h2. Checked in each
host's own libvirtd: the domain, its root disk, seed and console log volumes and the data
volume in that host's pool, the image copied once per host (a volume made from it later
reuses the copy). A second plan is empty; drift reads both hosts. With h2's libvirtd stopped,
plan lists h2's resources as unknown with the reason and still plans (and applies) h1's.
Destroy leaves nothing of the stack on either host. One boot per host."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from test_hosts_lab import HOSTS, host_table, lab, uri

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "build" / "images" / "tiny.qcow2"

STACK = """
version = 1
name = "{name}"

[provider.libvirt]
pool = "{pool}"
pool_path = "{pool_path}"

[resources.tiny]
type = "image"
source = "{image}"
format = "qcow2"
{resources}
"""
PAIR = """
[resources.d{n}]
type = "volume"
size_gib = {size}
host = "h{n}"

[resources.s{n}]
type = "server"
image = {{ get_resource = "tiny" }}
memory_mib = 96
host = "h{n}"
volumes = [{{ get_resource = "d{n}" }}]
"""
FROM_IMAGE = """
[resources.c1]
type = "volume"
size_gib = 1
image = { get_resource = "tiny" }
host = "h1"
"""


def iacloud(*args: str, code: int = 0, timeout: float = 900) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "iacloud.cli.main", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == code, out
    assert "Traceback" not in out
    return out


def volumes(conn: libvirt.virConnect) -> dict[str, str]:
    """name -> pool of every volume of every active pool."""
    out = {}
    for pool in conn.listAllStoragePools(0):
        if pool.isActive():
            pool.refresh(0)
            out.update({v.name(): pool.name() for v in pool.listAllVolumes(0)})
    return out


def _download(conn: libvirt.virConnect, name: str) -> str:
    vol = conn.storagePoolLookupByName("iacloud").storageVolLookupByName(name)
    stream = conn.newStream(0)
    vol.download(stream, 0, 0, 0)
    data = b""
    while chunk := stream.recv(1 << 16):
        if not isinstance(chunk, bytes):
            break
        data += chunk
    stream.finish()
    return data.decode(errors="replace")


def domains(conn: libvirt.virConnect, stack_id: str) -> list[str]:
    return [d.name() for d in conn.listAllDomains(0) if stack_id in d.XMLDesc(0)]


class Lab:
    def __init__(self, tmp: Path, site: Path) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.dir = tmp
        self.site = site
        self.pool = f"ph-{self.tag}"
        self.pool_dir = Path("/tmp") / self.pool
        self.stack = tmp / "multi.toml"
        self.sizes = {1: 1, 2: 1}
        self.extra = ""
        self.prefix = ""  # the stack id's prefix, once applied

    def write(self) -> Path:
        pairs = "".join(PAIR.format(n=n, size=s) for n, s in self.sizes.items())
        self.stack.write_text(
            STACK.format(name=f"ph-{self.tag}", pool=self.pool, pool_path=self.pool_dir / "pool",
                         image=TINY, resources=pairs + self.extra)
        )  # fmt: skip
        return self.stack

    def run(self, *args: str, code: int = 0) -> str:
        return iacloud(*args, "--site", str(self.site), str(self.stack), code=code)

    def state(self) -> dict[str, dict]:
        """Every recorded resource (address -> its state: id, inputs, attributes)."""
        listed = json.loads(iacloud("state", "list", "-s", str(self.stack), "--json"))
        return {
            r["address"]: json.loads(
                iacloud("state", "show", r["address"], "-s", str(self.stack), "--json")
            )
            for r in listed
        }


def _conn(name: str) -> libvirt.virConnect:
    return libvirt.open(uri(HOSTS[name]))


@pytest.fixture(scope="module")
def lab_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if not TINY.is_file():
        pytest.fail("build/images/tiny.qcow2 is missing: run `make image`")
    lab("up", str(len(HOSTS)))
    had_pool = {}
    for name in HOSTS:
        conn = _conn(name)
        try:
            had_pool[name] = "iacloud" in conn.listStoragePools() + conn.listDefinedStoragePools()
        finally:
            conn.close()
    tmp = tmp_path_factory.mktemp("ph")
    site = tmp / "site.toml"
    site.write_text("version = 1\n" + "".join(host_table(n, a) for n, a in HOSTS.items()))
    state = Lab(tmp, site)
    state.pool_dir.mkdir(mode=0o755)
    yield state
    lab("up", str(len(HOSTS)))  # a test that stopped a libvirtd leaves it running again
    with contextlib.suppress(Exception):
        iacloud("destroy", "--auto-approve", "--site", str(site), str(state.stack))
    for name in HOSTS:  # the pool a test made is removed with it, empty
        conn = _conn(name)
        try:
            if state.prefix:  # what a failed destroy left (the test failed before)
                _sweep(conn, state.prefix)
            with contextlib.suppress(libvirt.libvirtError):
                if not had_pool[name]:
                    pool = conn.storagePoolLookupByName("iacloud")
                    if pool.isActive() and not pool.listAllVolumes(0):
                        pool.destroy()
                        pool.undefine()
        finally:
            conn.close()
    main = libvirt.open("qemu:///system")
    try:
        with contextlib.suppress(libvirt.libvirtError):
            pool = main.storagePoolLookupByName(state.pool)
            if pool.isActive():
                pool.refresh(0)
                for vol in pool.listAllVolumes(0):
                    vol.delete(0)
                pool.destroy()
            pool.undefine()
    finally:
        main.close()
    shutil.rmtree(state.pool_dir, ignore_errors=True)


def _sweep(conn: libvirt.virConnect, prefix: str) -> None:
    """Remove the domains and volumes carrying the stack's id prefix."""
    for dom in conn.listAllDomains(0):
        if dom.name().endswith(f"-{prefix}"):
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                dom.undefine()
    for pool in conn.listAllStoragePools(0):
        if pool.isActive():
            pool.refresh(0)
            for vol in pool.listAllVolumes(0):
                if vol.name().startswith(f"iac-{prefix}-"):
                    with contextlib.suppress(libvirt.libvirtError):
                        vol.delete(0)


def _libvirtd_pid(name: str) -> int:
    for line in lab("status").splitlines():
        fields = line.split()
        if fields and fields[0] == name:
            return int(next(f for f in fields if f.startswith("libvirtd=")).split("=")[1])
    raise AssertionError(f"no libvirtd for {name} in lab status")


def _stop_libvirtd(name: str) -> None:
    pid = _libvirtd_pid(name)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        status = Path(f"/proc/{pid}/status").read_text(errors="replace")
        if "\nState:\tZ" in status:
            break
        time.sleep(0.2)


def test_servers_and_volumes_on_two_hosts(lab_site: Lab) -> None:
    st = lab_site
    st.write()
    start = time.monotonic()
    st.run("apply", "--auto-approve")
    print(f"\napply of two servers on two hosts: {time.monotonic() - start:.1f} s")
    resources = st.state()
    stack_id = resources["d1"]["id"].split("/")[1].split("-")[1]  # the stack id's prefix
    st.prefix = stack_id
    image_name = resources["tiny"]["id"].split("/")[1]
    assert resources["tiny"]["id"].startswith(f"{st.pool}/")  # on the default host

    copies = {}
    for n, name in ((1, "h1"), (2, "h2")):
        assert resources[f"s{n}"]["inputs"]["host"] == name
        assert resources[f"d{n}"]["inputs"]["host"] == name
        conn = _conn(name)
        try:
            dom = conn.lookupByUUIDString(resources[f"s{n}"]["id"])
            assert dom.isActive()
            on_host = volumes(conn)
            root = ET.fromstring(dom.XMLDesc(0))
            sources = {(s.get("pool"), s.get("volume")) for s in root.iter("source")}
            assert ("iacloud", resources[f"d{n}"]["id"].split("/")[1]) in sources
            log = root.find("devices/serial/source")
            assert log is not None and log.get("path", "").startswith("/var/lib/iacloud/pool/")
            # the ready line came through the console volume: the server is ready
            console = Path(log.get("path", "")).name
            assert console in on_host and console.endswith(".console.raw")
            assert "IACLOUD-READY" in _download(conn, console)
            assert image_name in on_host  # the copy, in the host's default pool
            copy = conn.storagePoolLookupByName("iacloud").storageVolLookupByName(image_name)
            copies[name] = copy.XMLDesc(0)
            mine = [v for v in on_host if stack_id in v]
            assert len(mine) == 5, mine  # root, seed, console, data volume, image copy
            assert domains(conn, stack_id) == [dom.name()]
        finally:
            conn.close()
    main = libvirt.open("qemu:///system")
    try:
        assert domains(main, stack_id) == []  # nothing ran on the default host
    finally:
        main.close()

    out = st.run("plan", "--detailed-exitcode")
    assert "No changes" in out, out

    # a volume from the image on h1 reuses h1's copy
    st.extra = FROM_IMAGE
    st.write()
    st.run("apply", "--auto-approve")
    conn = _conn("h1")
    try:
        copy = conn.storagePoolLookupByName("iacloud").storageVolLookupByName(image_name)
        assert copy.XMLDesc(0) == copies["h1"]  # the same file, not copied again
        c1 = st.state()["c1"]["id"].split("/")[1]
        backing = ET.fromstring(
            conn.storagePoolLookupByName("iacloud").storageVolLookupByName(c1).XMLDesc(0)
        ).findtext("backingStore/path")
        assert backing == f"/var/lib/iacloud/pool/{image_name}"
    finally:
        conn.close()

    # drift across both hosts: in sync, then a volume grown behind iacloud's back on h2
    report = json.loads(st.run("drift", "--json"))
    assert report["drifted"] is False and report["orphans"] == [], report
    assert report["totals"]["in_sync"] == len(st.state())
    conn = _conn("h2")
    try:  # grown through the running guest's QEMU, which holds the file
        dom = conn.lookupByUUIDString(resources["s2"]["id"])
        dom.blockResize("vdb", 2 << 30, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
    finally:
        conn.close()
    report = json.loads(st.run("drift", "--json", code=2))
    status = {r["address"]: r for r in report["resources"]}
    assert status["d2"]["status"] == "modified", status["d2"]
    assert status["d2"]["differences"][0]["attribute"] == "size_gib"
    assert all(r["status"] == "in-sync" for a, r in status.items() if a != "d2")
    st.sizes[2] = 2  # the stack says what h2 has now: state takes it in
    st.write()
    st.run("apply", "--auto-approve")
    assert "No changes" in st.run("plan", "--detailed-exitcode")

    # h2's libvirtd stopped: h2's resources are unknown, h1's change is planned and applied
    st.sizes[1] = 2
    st.write()
    _stop_libvirtd("h2")
    try:
        start = time.monotonic()
        text = st.run("plan")
        took = time.monotonic() - start
        assert "s2 (server): unknown: h2: " in text and "d2 (volume): unknown: h2: " in text
        assert "~ d1 (volume)" in text and "2 resource(s) unknown" in text, text
        plan = json.loads(st.run("plan", "--json"))
        unknown = {d["address"]: d["reason"] for d in plan["drift"] if d["kind"] == "unknown"}
        assert set(unknown) == {"s2", "d2"}
        print(f"\nh2 down: {unknown['s2']} (plan took {took:.1f} s)")
        actions = {c["address"]: c["action"] for c in plan["changes"]}
        assert actions["d1"] == "update" and actions["s2"] == actions["d2"] == "no-op"
        st.run("apply", "--auto-approve")
        assert st.state()["d1"]["inputs"]["size_gib"] == 2
        drift = json.loads(st.run("drift", "--json"))
        assert drift["totals"]["unknown"] == 2
    finally:
        lab("up", str(len(HOSTS)))
    assert "No changes" in st.run("plan", "--detailed-exitcode")

    st.run("destroy", "--auto-approve")
    for name in HOSTS:
        conn = _conn(name)
        try:
            assert domains(conn, stack_id) == []
            assert [v for v in volumes(conn) if stack_id in v] == []
        finally:
            conn.close()
    main = libvirt.open("qemu:///system")
    try:
        assert [v for v in volumes(main) if stack_id in v] == []
    finally:
        main.close()
