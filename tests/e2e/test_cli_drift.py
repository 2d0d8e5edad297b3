"""End-to-end drift detection through the installed `iacloud` command on real libvirtd, netlink
and dnsmasq: objects of an applied stack are changed behind iacloud's back with virsh,
libvirt-python, pyroute2, `ip netns exec` and plain file edits, as an operator would;
`iacloud drift` must name each change exactly (address, attribute, recorded and actual value)
and exit 2, and the next `iacloud apply` must restore the stack so that `drift` exits 0.
Also: objects made by hand with the stack's ownership tag are orphans, hidden by a suppression
until it expires, and adopted by `iacloud import`; a grown volume cannot be shrunk back and
`apply --refresh-only` accepts it; `drift` leaves the state database byte for byte as it was
and runs while another process holds the stack's lock; `--metrics-file` and `--markdown`
carry the same counts.

Servers are not booted (`power_state = "shutoff"`), so each stack applies in about a second;
one test boots one server of the tiny image, to change its persistent definition while it runs.
Each test has a stack of its own, destroyed in the fixture teardown whatever happened; then
nothing tagged with the stack may remain in libvirt, the link table, the namespaces or as a
dnsmasq (anything left is removed by force, and reported)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_cli import IACLOUD, TINY, iacloud

libvirt = pytest.importorskip("libvirt")
pyroute2 = pytest.importorskip("pyroute2")

from iacloud.engine import data_root  # noqa: E402

pytestmark = [
    pytest.mark.libvirt,
    pytest.mark.netlink,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not shutil.which("dnsmasq"), reason="needs dnsmasq"),
    pytest.mark.skipif(not shutil.which("virsh"), reason="needs virsh"),
    pytest.mark.skipif(not shutil.which("ip"), reason="needs iproute2"),
]

URI = "qemu:///system"
TIMEOUT = 180  # any one CLI call; each takes about a second here
NET = "198.19.5"  # /24s 198.19.50-54 of 198.18.0.0/15 (RFC 2544 test space)
GiB = 1 << 30


# ---------------------------------------------------------------------------------- helpers


def cli(*args: str, code: int | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a subprocess, stdout and stderr apart (for --json); never a traceback."""
    proc = subprocess.run(
        [str(IACLOUD), *args], capture_output=True, text=True, timeout=TIMEOUT,
        env=os.environ.copy(),
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    if code is not None:
        assert proc.returncode == code, f"exit {proc.returncode}, expected {code}:\n{out}"
    return proc


def virsh(*args: str) -> str:
    proc = subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"virsh {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def argv_of(pid: int) -> list[str] | None:
    """A process's arguments; None when it is gone or a zombie (empty cmdline)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.rstrip(b"\0").decode(errors="replace").split("\0") if raw else None


def wait_for(what: str, ok: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def link_of(name: str) -> dict[str, Any] | None:
    """A link of the root namespace by name: its mtu and alias, via pyroute2."""
    with pyroute2.IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return None
        link = ipr.get_links(found[0])[0]
        return {"index": found[0], "mtu": link.get_attr("IFLA_MTU"),
                "alias": link.get_attr("IFLA_IFALIAS")}  # fmt: skip


def all_links() -> dict[str, str]:
    with pyroute2.IPRoute() as ipr:
        return {
            link.get_attr("IFLA_IFNAME"): link.get_attr("IFLA_IFALIAS") or ""
            for link in ipr.get_links()
        }


def namespaces() -> list[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True, timeout=10)
    return [n["name"] for n in json.loads(out.stdout or "[]")]


def summary(report: dict[str, Any]) -> dict[str, tuple[str, list[tuple[str, Any, Any]]]]:
    """address -> (status, [(attribute, recorded, actual)]) of a drift report."""
    out = {}
    for r in report["resources"]:
        for d in r["differences"]:
            assert d["sensitive"] is False and d["suppressed"] is False, d
        out[r["address"]] = (
            r["status"],
            [(d["attribute"], d["recorded"], d["actual"]) for d in r["differences"]],
        )
    return out


def read_metrics(path: Path, stack: str) -> dict[str, float]:
    values = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, value = line.rsplit(" ", 1)
        name, labels = key.split("{", 1)
        assert labels == f'stack="{stack}"}}', line
        values[name] = float(value)
    return values


def sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


# ---------------------------------------------------------------------------------- the lab


class Lab:
    """One stack of the test's own, and whatever the test made by hand beside it."""

    def __init__(self, directory: Path, pool_table: str, tag: str) -> None:
        self.dir = directory
        self.path = directory / "drift.toml"
        self.pool_table = pool_table
        match = re.search(r'^pool = "([^"]+)"', pool_table, re.M)
        assert match, pool_table
        self.pool = match.group(1)
        self.name = f"e2edrift-{tag}"
        self.stack_id: str | None = None
        self.bridges: set[str] = set()
        # what the test made by hand: ("domain", uuid) | ("volume", pool/name) | ("link", name)
        self.by_hand: list[tuple[str, str]] = []

    def write(self, body: str) -> Path:
        self.path.write_text(f'version = 1\nname = "{self.name}"\n{body}{self.pool_table}')
        return self.path

    def apply(self) -> None:
        cli("apply", "--auto-approve", str(self.path), code=0)

    def show(self) -> dict[str, Any]:
        shown = json.loads(cli("show", "--json", "--stack", str(self.path), code=0).stdout)
        self.stack_id = shown["stack_id"]
        for r in shown["resources"].values():
            if r["type"] == "network" and r["id"]:
                self.bridges.add(r["id"])
        return shown["resources"]

    def ids(self) -> dict[str, str]:
        return {address: r["id"] for address, r in self.show().items()}

    def drift(self, *args: str, code: int | None) -> subprocess.CompletedProcess[str]:
        return cli("drift", *args, str(self.path), code=code)

    def report(self, code: int, *args: str) -> dict[str, Any]:
        proc = self.drift("--json", *args, code=code)
        report = json.loads(proc.stdout)
        assert report["stack"] == self.name and report["stack_id"] == self.stack_id
        assert report["drifted"] is (code == 2)
        return report

    @property
    def prefix(self) -> str:
        assert self.stack_id
        return re.sub(r"[^A-Za-z0-9]", "", self.stack_id)[:8]

    def volume_name(self, encoded_address: str, fmt: str = "qcow2") -> str:
        """A volume name carrying this stack's tag (providers/libvirt/tags.py)."""
        return f"iac-{self.prefix}-{encoded_address}.{fmt}"

    @property
    def data_dir(self) -> Path:
        assert self.stack_id
        return data_root() / "stacks" / self.stack_id

    def network_dir(self, bridge: str) -> Path:
        return self.data_dir / "netlink" / bridge

    # -- what is left of the stack on the host ------------------------------------------------

    def leftovers(self) -> list[str]:
        if not self.stack_id:
            return []
        found = []
        conn = libvirt.open(URI)
        try:
            for dom in conn.listAllDomains(0):
                with contextlib.suppress(libvirt.libvirtError):
                    if self.stack_id in dom.XMLDesc(0):
                        found.append(f"domain {dom.name()}")
            for pool in conn.listAllStoragePools(0):
                if pool.isActive():
                    with contextlib.suppress(libvirt.libvirtError):
                        pool.refresh(0)
                    found += [
                        f"volume {pool.name()}/{v.name()}"
                        for v in pool.listAllVolumes(0)
                        if v.name().startswith(f"iac-{self.prefix}-")
                    ]
        finally:
            conn.close()
        found += [f"link {n}" for n, alias in all_links().items() if self.stack_id in alias]
        dhcp = {f"iacloud-dhcp-{b[4:]}" for b in self.bridges}
        found += [f"namespace {ns}" for ns in namespaces() if ns in dhcp]
        found += [f"dnsmasq {pid}" for pid in self.dnsmasqs()]
        return found

    def dnsmasqs(self) -> list[int]:
        """Live dnsmasq processes working in this stack's data directory."""
        where = str(self.data_dir)
        pids = []
        for entry in os.listdir("/proc"):
            argv = argv_of(int(entry)) if entry.isdigit() else None
            if argv and os.path.basename(argv[0]) == "dnsmasq" and any(where in a for a in argv):
                pids.append(int(entry))
        return pids

    def remove_by_hand(self) -> None:
        """Remove the objects the test made by hand that state does not hold (those adopted by
        import are destroy's to remove)."""
        if not self.by_hand:
            return
        proc = subprocess.run([str(IACLOUD), "show", "--json", "--stack", str(self.path)],
                              capture_output=True, text=True, timeout=TIMEOUT)  # fmt: skip
        try:
            adopted = {str(r["id"]).lower() for r in json.loads(proc.stdout)["resources"].values()}
        except (ValueError, KeyError, TypeError):
            adopted = set()
        conn = libvirt.open(URI)
        try:
            for kind, id in self.by_hand:
                if id.lower() in adopted:
                    continue
                with contextlib.suppress(libvirt.libvirtError, IndexError):
                    if kind == "domain":
                        conn.lookupByUUIDString(id).undefine()
                    elif kind == "volume":
                        pool, name = id.split("/", 1)
                        conn.storagePoolLookupByName(pool).storageVolLookupByName(name).delete(0)
                    elif kind == "link":
                        with pyroute2.IPRoute() as ipr:
                            ipr.link("del", index=ipr.link_lookup(ifname=id)[0])
        finally:
            conn.close()

    def force_cleanup(self) -> None:
        """Remove by hand what destroy left (the leak is reported separately)."""
        if not self.stack_id:
            return
        for pid in self.dnsmasqs():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        conn = libvirt.open(URI)
        try:
            for dom in conn.listAllDomains(0):
                with contextlib.suppress(libvirt.libvirtError):
                    if self.stack_id in dom.XMLDesc(0):
                        if dom.isActive():
                            dom.destroy()
                        dom.undefine()
        finally:
            conn.close()
        with pyroute2.IPRoute() as ipr:
            for name, alias in all_links().items():
                if self.stack_id in alias:
                    with contextlib.suppress(Exception):
                        ipr.link("del", index=ipr.link_lookup(ifname=name)[0])
        for b in self.bridges:
            subprocess.run(["ip", "netns", "del", f"iacloud-dhcp-{b[4:]}"],
                           capture_output=True, timeout=10)  # fmt: skip


@pytest.fixture
def lab(tmp_path: Path, e2e_pool: str) -> Iterator[Lab]:
    the_lab = Lab(tmp_path, e2e_pool, uuid.uuid4().hex[:8])
    try:
        yield the_lab
    finally:
        if the_lab.path.exists():
            if the_lab.stack_id is None:  # failed early: learn the id, if it was ever applied
                with contextlib.suppress(Exception):
                    the_lab.show()
            the_lab.remove_by_hand()
            subprocess.run([str(IACLOUD), "destroy", "--auto-approve", str(the_lab.path)],
                           capture_output=True, timeout=300)  # fmt: skip
        left = the_lab.leftovers()
        the_lab.force_cleanup()
    assert left == [], "destroy left objects of the stack behind"


# ---------------------------------------------------------------------------------- servers

SERVER_STACK = """
[resources.img]
type = "image"
source = "{image}"
format = "qcow2"

[resources.data]
type = "volume"
size_gib = 1

[resources.vm]
type = "server"
image = {{ get_resource = "img" }}
vcpus = 1
memory_mib = 128
power_state = "shutoff"
volumes = [{{ get_resource = "data" }}]
"""


def domain_facts(uuid_: str) -> tuple[int, int, list[str]]:
    """(vcpus, memory in MiB, source volumes of its disks) from the inactive definition."""
    conn = libvirt.open(URI)
    try:
        xml = conn.lookupByUUIDString(uuid_).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    finally:
        conn.close()
    vcpus = int(re.search(r"<vcpu[^>]*>(\d+)</vcpu>", xml).group(1))  # type: ignore[union-attr]
    kib = int(re.search(r"<memory unit='KiB'>(\d+)</memory>", xml).group(1))  # type: ignore[union-attr]
    return vcpus, kib // 1024, re.findall(r"<source pool='[^']+' volume='([^']+)'", xml)


def test_server_memory_vcpus_and_a_detached_disk_are_reported_and_restored(lab: Lab):
    if not TINY.is_file():
        pytest.skip("build/images/tiny.qcow2 is missing: run `make image`")
    lab.write(SERVER_STACK.format(image=TINY))
    lab.apply()
    ids = lab.ids()
    assert lab.report(0)["totals"]["in_sync"] == 3
    vm = ids["vm"]
    data_volume = ids["data"].split("/", 1)[1]
    assert domain_facts(vm)[:2] == (1, 128) and data_volume in domain_facts(vm)[2]

    # an operator resizes the (stopped) server and pulls its data disk, all with virsh
    virsh("setmaxmem", vm, "192M", "--config")
    virsh("setmem", vm, "192M", "--config")
    virsh("setvcpus", vm, "2", "--config", "--maximum")
    virsh("setvcpus", vm, "2", "--config")
    virsh("detach-disk", vm, "vdb", "--config")
    assert domain_facts(vm)[:2] == (2, 192) and data_volume not in domain_facts(vm)[2]

    report = lab.report(2)
    assert summary(report) == {
        "img": ("in-sync", []),
        "data": ("in-sync", []),
        "vm": ("modified", [("vcpus", 1, 2), ("memory_mib", 128, 192),
                            ("volumes", [ids["data"]], [])]),
    }  # fmt: skip
    assert {r["address"]: r["id"] for r in report["resources"]} == ids
    assert report["orphans"] == []
    totals = report["totals"]
    assert (totals["resources"], totals["in_sync"], totals["modified"], totals["missing"]) == (
        3, 2, 1, 0,
    )  # fmt: skip
    text = lab.drift(code=2).stdout
    assert "vcpus: recorded 1, actual 2" in text and "memory_mib: recorded 128, actual 192" in text

    plan = cli("plan", str(lab.path), code=0).stdout
    assert "Changed outside iacloud" in plan
    assert plan.index("Changed outside iacloud") < plan.index("Planned changes")

    cli("apply", "--auto-approve", str(lab.path), code=0)
    # the host is back as the stack says, and drift agrees
    assert domain_facts(vm)[:2] == (1, 128), "apply did not restore vcpus/memory"
    assert data_volume in domain_facts(vm)[2], "apply did not re-attach the detached volume"
    assert summary(lab.report(0))["vm"] == ("in-sync", [])
    assert "No changes" in iacloud("plan", "--detailed-exitcode", str(lab.path))


RUNNING_STACK = """
[resources.img]
type = "image"
source = "{image}"
format = "qcow2"

[resources.data]
type = "volume"
size_gib = 1

[resources.spare]
type = "volume"
size_gib = 1

[resources.vm]
type = "server"
image = {{ get_resource = "img" }}
memory_mib = 128
volumes = [{{ get_resource = "data" }}]
"""


def definitions(uuid_: str) -> dict[str, Any]:
    """The running domain's id and state, and memory (MiB), disk sources and `<vcpu>` element of
    its live and persistent definitions."""
    conn = libvirt.open(URI)
    try:
        dom = conn.lookupByUUIDString(uuid_)
        facts: dict[str, Any] = {"id": dom.ID(), "state": dom.state()[0]}
        for key, flags in (("live", 0), ("persistent", libvirt.VIR_DOMAIN_XML_INACTIVE)):
            xml = dom.XMLDesc(flags)
            kib = int(re.search(r"<memory unit='KiB'>(\d+)</memory>", xml).group(1))  # type: ignore[union-attr]
            vcpu = re.search(r"<vcpu[^>]*>(\d+)</vcpu>", xml).group(0)  # type: ignore[union-attr]
            sources = re.findall(r"<source (?:pool='[^']+' volume|file)='([^']+)'", xml)
            facts[key] = (kib // 1024, sources, vcpu)
        return facts
    finally:
        conn.close()


def test_a_running_servers_persistent_definition_is_drift_from_next_boot(lab: Lab):
    if not TINY.is_file():
        pytest.skip("build/images/tiny.qcow2 is missing: run `make image`")
    lab.write(RUNNING_STACK.format(image=TINY))
    lab.apply()
    ids = lab.ids()
    vm, data = ids["vm"], ids["data"].split("/", 1)[1]
    before = definitions(vm)
    assert before["state"] == libvirt.VIR_DOMAIN_RUNNING
    assert before["live"][0] == before["persistent"][0] == 128
    assert lab.report(0)["totals"]["in_sync"] == 4

    # an operator changes what the running server boots with next, as virsh users do
    spare = virsh("vol-path", "--pool", lab.pool, ids["spare"].split("/", 1)[1]).strip()
    virsh("setmaxmem", vm, "192M", "--config")
    virsh("setvcpus", vm, "2", "--config", "--maximum")
    virsh("setvcpus", vm, "2", "--config")
    virsh("attach-disk", vm, spare, "vdc", "--config", "--subdriver", "qcow2")
    changed = definitions(vm)
    assert changed["live"] == before["live"], "virsh changed the running domain"
    assert changed["persistent"][0] == 192 and spare in changed["persistent"][1]
    assert ">2</vcpu>" in changed["persistent"][2]

    report = lab.report(2)
    (vm_report,) = [r for r in report["resources"] if r["address"] == "vm"]
    assert vm_report["status"] == "modified"
    assert [(d["attribute"], d["recorded"], d["actual"], d["effective"])
            for d in vm_report["differences"]] == [
        ("vcpus", 1, 2, ["from next boot"]),
        ("memory_mib", 128, 192, ["from next boot"]),
        ("volumes", [ids["data"]], [ids["data"], spare], ["from next boot"]),
    ]  # fmt: skip
    assert report["totals"]["modified"] == 1 and report["totals"]["in_sync"] == 3
    text = lab.drift(code=2).stdout
    assert "memory_mib: recorded 128, actual 192 (from next boot)" in text, text
    assert "(from next boot)" in lab.drift("--markdown", code=2).stdout

    plan = json.loads(cli("plan", "--json", str(lab.path), code=0).stdout)
    (change,) = [c for c in plan["changes"] if c["action"] != "no-op"]
    assert (change["address"], change["action"], change["disruption"]) == ("vm", "update", "live")
    assert {f["field"]: f["effective"] for f in change["fields"]} == {
        "vcpus": ["from next boot"], "memory_mib": ["from next boot"],
        "volumes": ["from next boot"],
    }  # fmt: skip
    text = cli("plan", str(lab.path), code=0).stdout
    assert "Changed outside iacloud" in text and "actual 192 (from next boot)" in text, text
    assert "memory_mib: 192 -> 128  [live, from next boot]" in text, text

    # restored in the persistent definition alone: no restart (a restart is beyond `live`)
    cli("apply", "--auto-approve", "--max-disruption", "live", str(lab.path), code=0)
    after = definitions(vm)
    assert (after["id"], after["state"]) == (before["id"], libvirt.VIR_DOMAIN_RUNNING), (
        "the server was restarted"
    )
    assert after["live"] == before["live"]
    assert after["persistent"][0] == 128, "apply did not restore the next-boot memory"
    assert after["persistent"][2] == before["persistent"][2], "vcpus not restored"
    assert spare not in after["persistent"][1], "apply did not detach the --config disk"
    assert data in " ".join(after["persistent"][1])
    assert summary(lab.report(0))["vm"] == ("in-sync", [])
    assert "No changes" in iacloud("plan", "--detailed-exitcode", str(lab.path))


# ---------------------------------------------------------------------------------- storage

STORAGE_STACK = """
[resources.img]
type = "image"
source = "{image}"
format = "qcow2"

[resources.img2]
type = "image"
source = "{image}"
format = "qcow2"

[resources.shrunk]
type = "volume"
size_gib = 2
format = "raw"

[resources.gone]
type = "volume"
size_gib = 1

[resources.vm2]
type = "server"
image = {{ get_resource = "img" }}
memory_mib = 64
power_state = "shutoff"
"""


def volume_capacity(volume_id: str) -> int | None:
    pool_name, name = volume_id.split("/", 1)
    conn = libvirt.open(URI)
    try:
        pool = conn.storagePoolLookupByName(pool_name)
        pool.refresh(0)
        try:
            return pool.storageVolLookupByName(name).info()[1]
        except libvirt.libvirtError:
            return None
    finally:
        conn.close()


def domain_exists(uuid_or_name: str) -> bool:
    conn = libvirt.open(URI)
    try:
        try:
            if re.fullmatch(r"[0-9a-f-]{36}", uuid_or_name):
                conn.lookupByUUIDString(uuid_or_name)
            else:
                conn.lookupByName(uuid_or_name)
            return True
        except libvirt.libvirtError:
            return False
    finally:
        conn.close()


def test_volumes_images_and_a_domain_removed_or_resized_are_reported_and_restored(
    lab: Lab, tmp_path: Path
):
    if not TINY.is_file():
        pytest.skip("build/images/tiny.qcow2 is missing: run `make image`")
    lab.write(STORAGE_STACK.format(image=TINY))
    lab.apply()
    resources = lab.show()
    ids = {address: r["id"] for address, r in resources.items()}
    vm2_name = resources["vm2"]["attributes"]["name"]

    # out of band: a raw volume shrunk, a volume and an image volume deleted, a domain undefined
    virsh("vol-resize", ids["shrunk"].split("/", 1)[1], "1G", "--pool", lab.pool, "--shrink")
    virsh("vol-delete", ids["gone"].split("/", 1)[1], "--pool", lab.pool)
    virsh("vol-delete", ids["img2"].split("/", 1)[1], "--pool", lab.pool)
    virsh("undefine", ids["vm2"])
    assert volume_capacity(ids["shrunk"]) == GiB

    metrics = tmp_path / "drift.prom"
    report = lab.report(2, "--metrics-file", str(metrics))
    assert summary(report) == {
        "img": ("in-sync", []),
        "img2": ("missing", []),
        "shrunk": ("modified", [("size_gib", 2, 1)]),
        "gone": ("missing", []),
        "vm2": ("missing", []),
    }
    assert {r["address"]: r["id"] for r in report["resources"]} == ids
    # the undefined server's root and seed volumes still carry its address: not orphans
    assert report["orphans"] == []
    assert report["totals"] == {
        "resources": 5, "in_sync": 1, "modified": 1, "missing": 3, "interrupted": 0,
        "orphaned": 0, "unmanaged": None, "suppressed": 0, "unknown": 0,
    }  # fmt: skip
    values = read_metrics(metrics, lab.name)
    assert {k: v for k, v in values.items() if "duration" not in k and "timestamp" not in k} == {
        "iacloud_drift_success": 1,
        "iacloud_drift_drifted": 1,
        "iacloud_drift_resources": 5,
        "iacloud_drift_modified_resources": 1,
        "iacloud_drift_missing_resources": 3,
        "iacloud_drift_interrupted_resources": 0,
        "iacloud_drift_orphaned_objects": 0,
        "iacloud_drift_suppressed_findings": 0,
        "iacloud_drift_expired_suppressions": 0,
    }
    assert 0 <= values["iacloud_drift_duration_seconds"] < 60
    assert abs(values["iacloud_drift_last_run_timestamp_seconds"] - time.time()) < 120

    md = lab.drift("--markdown", code=2).stdout
    for row in ("| `img2` | image | missing |", "| `gone` | volume | missing |",
                "| `vm2` | server | missing |", "| `shrunk` | volume | modified |"):  # fmt: skip
        assert row in md, md
    assert "`size_gib`: 2 → 1" in md, md

    cli("apply", "--auto-approve", str(lab.path), code=0)
    new = lab.ids()
    assert volume_capacity(new["shrunk"]) == 2 * GiB
    assert volume_capacity(new["gone"]) == GiB
    assert volume_capacity(new["img2"])
    assert domain_exists(vm2_name)
    report = lab.report(0, "--metrics-file", str(metrics))
    assert {s for s, _ in summary(report).values()} == {"in-sync"}
    assert read_metrics(metrics, lab.name)["iacloud_drift_drifted"] == 0
    assert "No changes" in iacloud("plan", "--detailed-exitcode", str(lab.path))


# ---------------------------------------------------------------------------------- grown volume

GROWN_STACK = """
[resources.vol]
type = "volume"
size_gib = {size}
"""


def test_a_grown_volume_is_reported_and_never_shrunk_back(lab: Lab):
    """A volume grown by hand cannot shrink: apply refuses clearly and changes nothing; once the
    stack file says the new size, an apply leaves the stack in sync."""
    lab.write(GROWN_STACK.format(size=1))
    lab.apply()
    vol = lab.ids()["vol"]
    virsh("vol-resize", vol.split("/", 1)[1], "2G", "--pool", lab.pool)

    assert summary(lab.report(2)) == {"vol": ("modified", [("size_gib", 1, 2)])}
    out = cli("apply", "--auto-approve", str(lab.path), code=1)
    assert "cannot shrink (from 2 to 1 GiB)" in out.stderr + out.stdout
    assert volume_capacity(vol) == 2 * GiB

    # the team accepts the new size in the stack file and applies it
    lab.write(GROWN_STACK.format(size=2))
    cli("apply", "--auto-approve", str(lab.path), code=0)
    assert volume_capacity(vol) == 2 * GiB
    assert summary(lab.report(0)) == {"vol": ("in-sync", [])}, (
        "after an apply of a stack that matches the host, drift still reports the old size"
    )


def test_refresh_only_accepts_a_grown_volume_into_state(lab: Lab):
    lab.write(GROWN_STACK.format(size=1))
    lab.apply()
    vol = lab.ids()["vol"]
    virsh("vol-resize", vol.split("/", 1)[1], "2G", "--pool", lab.pool)
    assert summary(lab.report(2)) == {"vol": ("modified", [("size_gib", 1, 2)])}

    plan = cli("plan", "--refresh-only", str(lab.path), code=0).stdout
    assert "size_gib: recorded 1, actual 2" in plan
    cli("apply", "--refresh-only", "--auto-approve", str(lab.path), code=0)
    assert volume_capacity(vol) == 2 * GiB
    assert summary(lab.report(0)) == {"vol": ("in-sync", [])}
    lab.write(GROWN_STACK.format(size=2))
    assert "No changes" in iacloud("plan", "--detailed-exitcode", str(lab.path))


# ---------------------------------------------------------------------------------- networks

NETWORK_STACK = f"""
[resources.lan]
type = "network"
cidr = "{NET}0.0/24"
mtu = 1400

[resources.lan2]
type = "network"
cidr = "{NET}1.0/24"

[resources.lan3]
type = "network"
cidr = "{NET}2.0/24"

[resources.p1]
type = "port"
network = {{ get_resource = "lan" }}
ip = "{NET}0.50"

[resources.p2]
type = "port"
network = {{ get_resource = "lan" }}
ip = "{NET}0.51"
"""


def test_an_mtu_changed_on_a_network_that_does_not_pin_one_is_taken_into_state(lab: Lab):
    """No `mtu` in the stack: the kernel's 1500 was recorded; a change by hand is drift, and
    since the stack leaves the MTU to the host, the next apply takes the new value into state
    (as Terraform does with an optional computed attribute) instead of forcing 1500 back."""
    lab.write(f"""
[resources.net]
type = "network"
cidr = "{NET}2.0/24"
dhcp = false
""")  # fmt: skip
    lab.apply()
    bridge = lab.ids()["net"]
    assert link_of(bridge)["mtu"] == 1500  # type: ignore[index]
    with pyroute2.IPRoute() as ipr:
        ipr.link("set", index=link_of(bridge)["index"], mtu=1280)  # type: ignore[index]
    assert summary(lab.report(2)) == {"net": ("modified", [("mtu", 1500, 1280)])}
    plan = cli("plan", str(lab.path), code=0).stdout
    assert "accept mtu" in plan and "No changes on the host" in plan
    cli("apply", "--auto-approve", str(lab.path), code=0)
    assert link_of(bridge)["mtu"] == 1280  # type: ignore[index]
    assert lab.report(0)["totals"]["in_sync"] == 1


def running_dnsmasq(lab: Lab, bridge: str) -> tuple[int, list[str]] | None:
    """(pid, argv) of the network's dnsmasq, found by its pid file and checked in /proc."""
    pid_file = lab.network_dir(bridge) / "dnsmasq.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    argv = argv_of(pid)
    if argv and os.path.basename(argv[0]) == "dnsmasq" and f"--pid-file={pid_file}" in argv:
        return pid, argv
    return None


def test_network_mtu_bridge_dnsmasq_and_reservations_are_reported_and_restored(lab: Lab):
    lab.write(NETWORK_STACK)
    lab.apply()
    ids = lab.ids()
    lan, lan2, lan3 = ids["lan"], ids["lan2"], ids["lan3"]
    assert link_of(lan)["mtu"] == 1400  # type: ignore[index]
    served = running_dnsmasq(lab, lan)
    assert served is not None
    p1_bridge, p1_mac, p1_ip = ids["p1"].split("/")
    assert p1_bridge == lan and f"--dhcp-host={p1_mac},{p1_ip}" in served[1]
    assert lab.report(0)["totals"]["in_sync"] == 5

    # lan: MTU lowered with pyroute2
    with pyroute2.IPRoute() as ipr:
        ipr.link("set", index=link_of(lan)["index"], mtu=1300)  # type: ignore[index]
    # lan2: its DHCP server killed
    pid2 = running_dnsmasq(lab, lan2)
    assert pid2 is not None
    os.kill(pid2[0], signal.SIGKILL)
    wait_for("the killed dnsmasq to go", lambda: argv_of(pid2[0]) is None)
    # lan3: the bridge deleted
    with pyroute2.IPRoute() as ipr:
        ipr.link("del", index=link_of(lan3)["index"])  # type: ignore[index]
    # p1: lan's dnsmasq restarted by hand without p1's reservation (same namespace, same files)
    pid, argv = served
    ns = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True,
                        timeout=10, check=True).stdout.strip()  # fmt: skip
    assert ns
    without = [a for a in argv if a != f"--dhcp-host={p1_mac},{p1_ip}"]
    assert len(without) == len(argv) - 1
    os.kill(pid, signal.SIGTERM)
    wait_for("lan's dnsmasq to stop", lambda: argv_of(pid) is None)
    subprocess.run(["ip", "netns", "exec", ns, *without], check=True, capture_output=True,
                   timeout=30)  # fmt: skip
    wait_for("the hand-started dnsmasq", lambda: running_dnsmasq(lab, lan) is not None)
    # p2: its reservation record removed from the network's directory
    records = [
        f for f in (lab.network_dir(lan) / "ports").glob("port-*.json")
        if json.loads(f.read_text()).get("address") == "p2"
    ]  # fmt: skip
    assert len(records) == 1
    records[0].unlink()

    report = lab.report(2)
    assert summary(report) == {
        "lan": ("modified", [("mtu", 1400, 1300)]),
        "lan2": ("modified", [("dhcp", True, False)]),
        "lan3": ("missing", []),
        "p1": ("missing", []),
        "p2": ("missing", []),
    }
    assert {r["address"]: r["id"] for r in report["resources"]} == ids
    assert report["orphans"] == []
    assert report["totals"]["modified"] == 2 and report["totals"]["missing"] == 3
    plan = cli("plan", str(lab.path), code=0).stdout
    assert "Changed outside iacloud" in plan and "mtu: recorded 1400, actual 1300" in plan

    cli("apply", "--auto-approve", str(lab.path), code=0)
    assert link_of(lan)["mtu"] == 1400  # type: ignore[index]
    assert link_of(lan3) is not None and lab.ids()["lan3"] == lan3
    lan2_dhcp = running_dnsmasq(lab, lan2)
    assert lan2_dhcp is not None
    lan3_dhcp = running_dnsmasq(lab, lan3)
    assert lan3_dhcp is not None
    served = running_dnsmasq(lab, lan)
    assert served is not None
    p2_mac, p2_ip = ids["p2"].split("/")[1:]
    assert f"--dhcp-host={p1_mac},{p1_ip}" in served[1]
    assert f"--dhcp-host={p2_mac},{p2_ip}" in served[1]
    # one DHCP server per network: the hand-started one was replaced, not joined
    assert sorted(lab.dnsmasqs()) == sorted([served[0], lan2_dhcp[0], lan3_dhcp[0]])
    report = lab.report(0)
    assert {s for s, _ in summary(report).values()} == {"in-sync"}
    assert "No changes" in iacloud("plan", "--detailed-exitcode", str(lab.path))


# ---------------------------------------------------------------------------------- orphans

ORPHAN_STACK = f"""
[resources.keep]
type = "volume"
size_gib = 1

[resources.vm]
type = "server"
boot_volume = {{ get_resource = "keep" }}
memory_mib = 64
power_state = "shutoff"

[resources.lan]
type = "network"
cidr = "{NET}3.0/24"
dhcp = false
"""

ADOPTED = f"""
[resources.extra]
type = "volume"
size_gib = 1

[resources.ghost]
type = "server"
boot_volume = {{ get_resource = "keep" }}
memory_mib = 64
power_state = "shutoff"

[resources.stray]
type = "network"
cidr = "{NET}4.0/24"
dhcp = false
"""

GHOST_XML = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <metadata>
    <iacloud:owner xmlns:iacloud="https://iacloud.dev/xmlns/owner/1"
                   stack="{stack}" stack_id="{stack_id}" address="{address}"/>
  </metadata>
</domain>
"""


def make_tagged_domain(lab: Lab, address: str) -> str:
    """A domain defined by hand with the stack's owner metadata; its uuid."""
    conn = libvirt.open(URI)
    try:
        dom = conn.defineXML(
            GHOST_XML.format(name=f"{lab.name}-{address}-byhand", stack=lab.name,
                             stack_id=lab.stack_id, address=address)
        )  # fmt: skip
        lab.by_hand.append(("domain", dom.UUIDString()))
        return dom.UUIDString()
    finally:
        conn.close()


def make_volume(lab: Lab, name: str) -> str:
    """A qcow2 volume made by hand in the stack's pool; its id."""
    conn = libvirt.open(URI)
    try:
        conn.storagePoolLookupByName(lab.pool).createXML(
            f"<volume><name>{name}</name><capacity unit='G'>1</capacity>"
            "<target><format type='qcow2'/></target></volume>",
            0,
        )
    finally:
        conn.close()
    lab.by_hand.append(("volume", f"{lab.pool}/{name}"))
    return f"{lab.pool}/{name}"


def make_tagged_bridge(lab: Lab, address: str) -> str:
    """A bridge made by hand with pyroute2, carrying the stack's tag as its alias."""
    name = f"e2ed{lab.name[-8:]}"
    with pyroute2.IPRoute() as ipr:
        ipr.link("add", ifname=name, kind="bridge")
        lab.by_hand.append(("link", name))
        ipr.link("set", index=ipr.link_lookup(ifname=name)[0],
                 ifalias=f"iacloud:{lab.stack_id}:{address}")  # fmt: skip
    return name


def test_objects_made_by_hand_with_the_tag_are_orphans_until_imported(lab: Lab):
    lab.write(ORPHAN_STACK)
    lab.apply()
    lab.show()
    assert lab.report(0)["orphans"] == []
    extra = make_volume(lab, lab.volume_name("extra"))
    make_volume(lab, "handmade.qcow2")  # no tag at all: unmanaged
    ghost = make_tagged_domain(lab, "ghost")
    stray = make_tagged_bridge(lab, "stray")

    report = lab.report(2, "--all")
    assert summary(report) == {a: ("in-sync", []) for a in ("keep", "vm", "lan")}
    orphans = sorted((o["type"], o["id"], o["address"], o["suppressed"]) for o in report["orphans"])
    assert orphans == [
        ("network", stray, "stray", False),
        ("server", ghost, "ghost", False),
        ("volume", extra, "extra", False),
    ]
    assert report["totals"]["orphaned"] == 3
    assert {"type": "volume", "id": f"{lab.pool}/handmade.qcow2", "address": None,
            "suppressed": False} in report["unmanaged"]  # fmt: skip
    assert report["totals"]["unmanaged"] == len(report["unmanaged"])
    text = lab.drift(code=2).stdout
    assert ghost in text and extra in text and stray in text

    # suppressions: two hide their orphans, an expired one no longer hides the volume
    (lab.dir / ".iacloudignore").write_text(
        "ghost  # an operator is investigating\n"
        "extra until 2000-01-01  # was accepted once\n"
        "stray until 2999-12-31\n"
    )
    report = lab.report(2)
    assert sorted((o["address"], o["suppressed"]) for o in report["orphans"]) == [
        ("extra", False), ("ghost", True), ("stray", True),
    ]  # fmt: skip
    assert report["totals"]["orphaned"] == 1 and report["totals"]["suppressed"] == 2
    assert [(e["suppression"], e["until"], e["line"]) for e in report["expired_suppressions"]] == [
        ("extra", "2000-01-01", 2)
    ]
    (lab.dir / ".iacloudignore").write_text("ghost\nextra until 2999-12-31\nstray\n")
    report = lab.report(0)
    assert report["totals"]["suppressed"] == 3 and report["expired_suppressions"] == []
    (lab.dir / ".iacloudignore").unlink()

    # adopted: the resources join the stack file and are imported by their ids
    lab.write(ORPHAN_STACK + ADOPTED)
    for address, type_, id in (("extra", "volume", extra), ("ghost", "server", ghost),
                               ("stray", "network", stray)):  # fmt: skip
        out = iacloud("import", address, id, "--stack", str(lab.path))
        assert f"Imported {type_} {id} as {address}." in out
    report = lab.report(0)
    assert report["orphans"] == []
    assert summary(report) == {
        a: ("in-sync", []) for a in ("keep", "vm", "lan", "extra", "ghost", "stray")
    }
    ids = lab.ids()
    assert (ids["extra"], ids["ghost"].lower(), ids["stray"]) == (extra, ghost.lower(), stray)
    # the imported volume is recorded as a created one would be
    state = json.loads(iacloud("state", "show", "extra", "--json", "--stack", str(lab.path)))
    assert state["inputs"] == {
        "size_gib": 1,
        "image": None,
        "snapshot": None,
        "format": "qcow2",
        "pool": None,
        "host": None,  # imported from the default host
    }


def test_tagged_objects_of_types_the_stack_does_not_use_are_orphans(lab: Lab):
    """A domain and a bridge carrying the stack's tag are orphans even when neither the stack
    file nor its state has a server or a network (say both were removed from the file and
    `iacloud state rm`-ed while their objects stayed)."""
    lab.write(GROWN_STACK.format(size=1))
    lab.apply()
    lab.show()
    ghost = make_tagged_domain(lab, "old_server")
    stray = make_tagged_bridge(lab, "old_net")
    report = lab.report(2)
    assert sorted((o["type"], o["id"], o["address"]) for o in report["orphans"]) == [
        ("network", stray, "old_net"),
        ("server", ghost, "old_server"),
    ]


# ---------------------------------------------------------------------------------- read-only

LOCK_HOLDER = """
import sys, time
from pathlib import Path
from iacloud.state import open_backend
backend = open_backend(None, Path(sys.argv[1]))
info = backend.acquire_lock(sys.argv[2], "apply", 0)
print("locked", info.pid, flush=True)
time.sleep(float(sys.argv[3]))
"""


def test_drift_leaves_state_untouched_and_runs_while_the_lock_is_held(lab: Lab, tmp_path: Path):
    lab.write(f"""
[resources.vol]
type = "volume"
size_gib = 1

[resources.net]
type = "network"
cidr = "{NET}3.0/24"
dhcp = false
mtu = 1500
""")  # fmt: skip
    lab.apply()
    ids = lab.ids()
    db = lab.dir / ".iacloud" / "state.db"
    assert db.is_file()

    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(lab.dir), lab.name, "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = holder.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("locked"), line + holder.stderr.read()  # type: ignore[union-attr]
        # the lock is really held: a refreshing plan is refused at once
        plan = cli("plan", str(lab.path), code=1)
        assert "lock" in (plan.stdout + plan.stderr).lower()
        before = {p.name: sha256(p) for p in (db, db.with_name("state.db-wal"))}

        assert lab.report(0)["totals"]["in_sync"] == 2
        virsh("vol-delete", ids["vol"].split("/", 1)[1], "--pool", lab.pool)
        with pyroute2.IPRoute() as ipr:
            ipr.link("set", index=link_of(ids["net"])["index"], mtu=1280)  # type: ignore[index]
        metrics = tmp_path / "m" / "drift.prom"
        metrics.parent.mkdir()
        report = lab.report(2, "--metrics-file", str(metrics))
        assert summary(report) == {
            "vol": ("missing", []),
            "net": ("modified", [("mtu", 1500, 1280)]),
        }
        values = read_metrics(metrics, lab.name)
        assert (values["iacloud_drift_missing_resources"],
                values["iacloud_drift_modified_resources"],
                values["iacloud_drift_orphaned_objects"],
                values["iacloud_drift_drifted"]) == (1, 1, 0, 1)  # fmt: skip
        lab.drift(code=2)
        lab.drift("--markdown", code=2)
        lab.drift("--all", code=2)

        after = {p.name: sha256(p) for p in (db, db.with_name("state.db-wal"))}
        assert after == before, "drift changed the state database"
        assert holder.poll() is None, "the lock holder died"
        assert f"locked {holder.pid}" == line.strip()
    finally:
        holder.kill()
        holder.wait(timeout=10)
        for stream in (holder.stdout, holder.stderr):
            if stream:
                stream.close()

    # the holder is dead: its lock is stale and the next apply takes over and restores
    cli("apply", "--auto-approve", str(lab.path), code=0)
    assert {s for s, _ in summary(lab.report(0)).values()} == {"in-sync"}
