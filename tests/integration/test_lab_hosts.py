"""The many-hosts test bed (scripts/lab-hosts.sh): each lab host is a namespace with its own
libvirtd and sshd, reached over the underlay the way a remote host is, and gone after `down`."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "lab-hosts.sh"
LAB_DIR = Path(os.environ.get("IACLOUD_LAB_DIR", "/var/lib/iacloud-lab"))
HOSTS = {"h1": "198.19.250.11", "h2": "198.19.250.12"}
PROBE = "iaclab-test-probe"


def lab(*args: str) -> str:
    done = subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def uri(addr: str) -> str:
    return (
        f"qemu+libssh2://root@{addr}/system?sshauth=privkey"
        f"&keyfile={LAB_DIR / 'id_ed25519'}&known_hosts={LAB_DIR / 'known_hosts'}"
    )


def ssh(host: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-F", str(LAB_DIR / "ssh_config"), host, "--", *argv],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def lab_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.startswith("iaclab-")]


@pytest.fixture(scope="module")
def hosts() -> Iterator[dict[str, libvirt.virConnect]]:
    was_up = bool(lab_namespaces())
    lab("up", str(len(HOSTS)))
    conns = {name: libvirt.open(uri(addr)) for name, addr in HOSTS.items()}
    try:
        yield conns
    finally:
        for conn in conns.values():
            try:
                dom = conn.lookupByName(PROBE)
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
            except libvirt.libvirtError:
                pass
            conn.close()
        if not was_up:
            lab("down")


def test_each_host_is_its_own_libvirtd_reached_over_ssh(hosts) -> None:
    assert {name: conn.getHostname() for name, conn in hosts.items()} == {
        "h1": "iaclab-h1",
        "h2": "iaclab-h2",
    }
    xml = (
        f"<domain type='qemu'><name>{PROBE}</name><memory unit='MiB'>64</memory>"
        "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices/></domain>"
    )
    dom = hosts["h1"].defineXML(xml)
    dom.create()  # a running guest proves QEMU starts under the lab host's libvirtd
    assert dom.isActive()
    with pytest.raises(libvirt.libvirtError):
        hosts["h2"].lookupByName(PROBE)
    main = libvirt.open("qemu:///system")
    try:
        with pytest.raises(libvirt.libvirtError):
            main.lookupByName(PROBE)
    finally:
        main.close()
    dom.destroy()
    dom.undefine()


def test_network_side_by_ssh_and_hosts_reach_each_other(hosts) -> None:
    shown = ssh("h1", "ip", "-br", "-4", "addr", "show", "dev", "eth0")
    assert shown.returncode == 0 and HOSTS["h1"] in shown.stdout, shown.stderr
    ping = ssh("h1", "busybox", "ping", "-c", "2", "-W", "1", HOSTS["h2"])
    assert ping.returncode == 0, ping.stdout + ping.stderr
    # each host has its own /run: what h1 writes there is not seen by h2 or by this namespace
    assert ssh("h1", "touch", "/run/iaclab-marker").returncode == 0
    assert ssh("h2", "test", "-e", "/run/iaclab-marker").returncode == 1
    assert not Path("/run/iaclab-marker").exists()


def test_host_facts_and_placement_from_real_hosts(hosts) -> None:
    from iacloud.providers.libvirt.host_facts import read_host_facts
    from iacloud.scheduler import Request, place_one

    before = {name: read_host_facts(conn, None) for name, conn in hosts.items()}
    assert before["h1"].hostname == "iaclab-h1" and before["h1"].memory_mib > 0
    assert before["h1"].vcpus == os.cpu_count() and before["h1"].disk_gib is None
    # a defined (not running) domain counts against its host, as a stopped instance does
    xml = (
        f"<domain type='qemu'><name>{PROBE}</name><memory unit='MiB'>3072</memory>"
        "<vcpu>3</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os><devices/></domain>"
    )
    dom = hosts["h1"].defineXML(xml)
    try:
        after = read_host_facts(hosts["h1"], None)
        assert after.domains == before["h1"].domains + 1
        assert after.used_vcpus == before["h1"].used_vcpus + 3
        assert after.used_memory_mib == before["h1"].used_memory_mib + 3072
        placed = place_one(
            [read_host_facts(c, None).as_host(n) for n, c in hosts.items()],
            Request("web", vcpus=1, memory_mib=256),
        )
        assert placed.host == "h2" and placed.why.startswith("h2: most free RAM")
    finally:
        dom.undefine()


def test_down_removes_every_lab_object(hosts) -> None:
    hosts["h1"].close()
    hosts["h2"].close()
    lab("down")
    assert lab_namespaces() == []
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, check=True)
    assert "iaclab" not in links.stdout
    assert not LAB_DIR.exists()
    assert lab("status") == ""
    # bring them back so the fixture's clean-up (and a later test) finds what it expects
    lab("up", str(len(HOSTS)))
    for name, addr in HOSTS.items():
        hosts[name] = libvirt.open(uri(addr))
