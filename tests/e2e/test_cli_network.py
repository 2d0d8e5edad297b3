"""End-to-end through the installed `iacloud` command on real libvirtd and netlink: a DHCP
network with a port, two servers from the tiny image on it (one named by the network, one by
the port), each reporting its DHCP address; a namespace of the test on the network's bridge
pings both; a second plan is empty; then a second network and a router joining the two, and a
namespace on the second network pings the servers through the router. The stack is destroyed
in the fixture teardown whatever happened, and nothing tagged with it may remain in libvirt,
in the link table, among the namespaces or as a dnsmasq; the test's own namespaces and veths
are removed as well."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from e2e_cli import IACLOUD, TINY, iacloud

libvirt = pytest.importorskip("libvirt")
pytest.importorskip("pyroute2")

from iacloud.providers.libvirt import domain_xml  # noqa: E402
from iacloud.providers.netlink import dnsmasq, parse_port_id  # noqa: E402
from iacloud.providers.netlink.names import NetworkNames  # noqa: E402

pytestmark = [
    pytest.mark.libvirt,
    pytest.mark.netlink,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not shutil.which("dnsmasq"), reason="needs dnsmasq"),
    pytest.mark.skipif(not shutil.which("ip"), reason="needs iproute2"),
]

LAN, LAN2 = "198.18.40", "198.18.41"  # two /24s of 198.18.0.0/15 (RFC 2544 test space)
PORT_IP = f"{LAN}.50"

STACK = """
version = 1
name = "{name}"

[resources.img]
type = "image"
source = "{image}"
format = "qcow2"

[resources.lan]
type = "network"
cidr = "{lan}.0/24"
dhcp = true

[resources.p1]
type = "port"
network = {{ get_resource = "lan" }}
ip = "{port_ip}"

[resources.web]
type = "server"
count = 1
image = {{ get_resource = "img" }}
memory_mib = 128
networks = [{{ network = {{ get_resource = "lan" }} }}]

[resources.pinned]
type = "server"
image = {{ get_resource = "img" }}
memory_mib = 128
networks = [{{ port = {{ get_resource = "p1" }} }}]

[outputs.web_addresses]
value = {{ get_attr = ["web", "addresses", "lan"] }}

[outputs.pinned_addresses]
value = {{ get_attr = ["pinned", "addresses", "lan"] }}
"""

ROUTED = """
[resources.lan2]
type = "network"
cidr = "{lan2}.0/24"
dhcp = false

[resources.rtr]
type = "router"
networks = [{{ get_resource = "lan" }}, {{ get_resource = "lan2" }}]
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def ping(ns: str, address: str) -> subprocess.CompletedProcess[str]:
    cmd = ["ping"] if shutil.which("ping") else ["busybox", "ping"]
    return subprocess.run(
        ["ip", "netns", "exec", ns, *cmd, "-c", "2", "-W", "2", address],
        capture_output=True,
        text=True,
        timeout=20,
    )


class Host:
    """The test's own namespaces and veths; `cleanup` removes them whatever happened."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.namespaces: list[str] = []
        self.links: list[str] = []

    def client(self, bridge: str, address: str, gateway: str | None = None) -> str:
        """A namespace with eth0 (a veth whose other end is a port of `bridge`) at `address`."""
        n = len(self.namespaces)
        ns, outer = f"e2e-{self.tag}-{n}", f"e2e{self.tag}{n}"
        ip("netns", "add", ns)
        self.namespaces.append(ns)
        ip("link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self.links.append(outer)
        ip("link", "set", outer, "master", bridge, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "addr", "add", address, "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        if gateway:
            ip("-n", ns, "route", "add", "default", "via", gateway)
        return ns

    def cleanup(self) -> None:
        for name in self.links:
            subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=10)
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)

    def leftovers(self) -> list[str]:
        names = set(_links()) | set(_namespaces())
        return [n for n in (*self.links, *self.namespaces) if n in names]


def _links() -> dict[str, str]:
    """Every link of the root namespace with its alias."""
    out = subprocess.run(
        ["ip", "-j", "-d", "link", "show"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    return {link["ifname"]: link.get("ifalias", "") for link in json.loads(out)}


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True, timeout=10)
    return [n["name"] for n in json.loads(out.stdout or "[]")]


def leftovers(stack_id: str, bridges: set[str], router: str | None) -> list[str]:
    found = []
    conn = libvirt.open("qemu:///system")
    try:
        found += [d.name() for d in conn.listAllDomains() if stack_id in (d.XMLDesc(0) or "")]
        for pool in conn.listAllStoragePools():
            if pool.isActive():
                pool.refresh(0)
                found += [v.name() for v in pool.listAllVolumes(0) if stack_id[:8] in v.name()]
    finally:
        conn.close()
    found += [f"link {n}" for n, alias in _links().items() if stack_id in alias]
    ours = {NetworkNames(b).dhcp_namespace for b in bridges} | ({router} if router else set())
    found += [f"namespace {ns}" for ns in _namespaces() if ns in ours]
    for entry in os.listdir("/proc"):
        argv = dnsmasq.cmdline(int(entry)) if entry.isdigit() else None
        if argv and any(stack_id in a or any(b in a for b in bridges) for a in argv):
            found.append(f"dnsmasq {entry}")
    return found


@pytest.fixture
def lab(tmp_path: Path, e2e_pool: str):
    if not TINY.is_file():
        pytest.skip("build/images/tiny.qcow2 is missing: run `make image`")
    tag = uuid.uuid4().hex[:8]
    path = tmp_path / "net.toml"

    def write(routed: bool = False) -> Path:
        text = STACK.format(name=f"e2enet-{tag}", image=TINY, lan=LAN, port_ip=PORT_IP)
        path.write_text(text + (ROUTED.format(lan2=LAN2) if routed else "") + e2e_pool)
        return path

    host = Host(tag)
    seen: dict = {"stack_id": None, "bridges": set(), "router": None}
    write()
    try:
        yield write, host, seen
    finally:
        host.cleanup()
        # destroy even when the test failed, then check that nothing of the stack is left
        subprocess.run([str(IACLOUD), "destroy", "--auto-approve", str(path)],
                       capture_output=True, timeout=600)  # fmt: skip
    assert host.leftovers() == [], "the test's own namespaces or veths are left"
    if seen["stack_id"]:
        assert leftovers(seen["stack_id"], seen["bridges"], seen["router"]) == []


def test_servers_on_a_dhcp_network_with_a_port_and_a_router(lab):
    write, host, seen = lab
    path = write()
    t0 = time.monotonic()
    iacloud("apply", "--auto-approve", "-j", "2", str(path))
    print(f"\napply (network, port, 2 servers booted to IACLOUD-READY with DHCP): "
          f"{time.monotonic() - t0:.1f}s")  # fmt: skip

    shown = json.loads(iacloud("show", "--json", "--stack", str(path)))
    seen["stack_id"] = shown["stack_id"]
    res = shown["resources"]
    bridge = res["lan"]["id"]
    seen["bridges"].add(bridge)
    port_bridge, port_mac, port_ip = parse_port_id(res["p1"]["id"])
    assert (port_bridge, port_ip) == (bridge, PORT_IP)

    # both servers got a DHCP address, keyed by the network's address in the stack
    web_addrs = json.loads(iacloud("output", "web_addresses", "--json", "--stack", str(path)))
    pinned_addrs = json.loads(iacloud("output", "pinned_addresses", "--json", "--stack", str(path)))
    assert len(web_addrs) == 1 and len(web_addrs[0]) == 1, web_addrs
    (web_ip,) = web_addrs[0]
    assert web_ip.startswith(f"{LAN}.") and web_ip != PORT_IP
    assert pinned_addrs == [PORT_IP]
    assert res["pinned"]["attributes"]["addresses"] == {"lan": [PORT_IP]}
    assert res["pinned"]["attributes"]["macs"] == [port_mac]
    assert res["pinned"]["inputs"]["networks"] == [
        {"network": None, "bridge": None, "port": res["p1"]["id"], "mac": None}
    ]
    conn = libvirt.open("qemu:///system")
    try:
        nics = domain_xml.parse(conn.lookupByUUIDString(res["pinned"]["id"]).XMLDesc(0)).nics
    finally:
        conn.close()
    assert [(n.bridge, n.mac) for n in nics] == [(bridge, port_mac)]

    # a namespace of the test on the bridge reaches both
    ns = host.client(bridge, f"{LAN}.200/24")
    for target in (web_ip, PORT_IP):
        r = ping(ns, target)
        assert r.returncode == 0, r.stdout + r.stderr
        print(f"ping {target} from {ns}: {r.stdout.strip().splitlines()[-1]}")

    assert "No changes" in iacloud("plan", "--detailed-exitcode", str(path))

    # a second network and a router: the servers' default route (DHCP router option) is the
    # gateway the router now holds
    write(routed=True)
    assert "2 to create" in iacloud("plan", "--detailed-exitcode", str(path), code=2)
    iacloud("apply", "--auto-approve", str(path))
    shown = json.loads(iacloud("show", "--json", "--stack", str(path)))
    seen["bridges"].add(shown["resources"]["lan2"]["id"])
    seen["router"] = shown["resources"]["rtr"]["id"]
    far = host.client(shown["resources"]["lan2"]["id"], f"{LAN2}.10/24", f"{LAN2}.1")
    for target in (web_ip, PORT_IP):
        r = ping(far, target)
        assert r.returncode == 0, r.stdout + r.stderr
        print(f"ping {target} from {far} via the router: {r.stdout.strip().splitlines()[-1]}")
    assert "No changes" in iacloud("plan", "--detailed-exitcode", str(path))

    iacloud("destroy", "--auto-approve", str(path))
    assert leftovers(seen["stack_id"], seen["bridges"], seen["router"]) == []
