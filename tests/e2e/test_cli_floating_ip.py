"""End-to-end through the `iacloud` command: a floating IP on an external network, reached by
an "outside" namespace on that network and carried to a port through a router.

The guests are namespaces of the test attached to the internal network as the ports' NICs (a
veth into the bridge with the port's MAC and IP, its default route via the router): a raw
ICMP socket in each records the source address of every echo request that reaches it, which
the tiny image cannot report. So the test sees who answers a floating IP and with which
source address a packet arrived: the outside's own (DNAT only, no SNAT on the way in), and on
the way out the floating address (not the router's). Moving the floating IP to another port
is planned `live` and after apply only the new port's namespace is reached (and the connections
tracked for the old one are gone). Removing the NAT
table or the address by hand is drift. Everything is in 198.18.0.0/15, bounded, and removed
afterwards whatever happened (destroy, then the test's own namespaces and veths).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from e2e_cli import IACLOUD, iacloud

from iacloud.ids import PortId

pytestmark = [
    pytest.mark.netlink,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not shutil.which("nft"), reason="needs nft"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="needs busybox-static"),
]

EXT, LAN = "198.19.210", "198.18.210"

STACK = """
version = 1
name = "{name}"

[resources.ext]
type = "network"
cidr = "{ext}.0/24"
dhcp = false
external = true

[resources.lan]
type = "network"
cidr = "{lan}.0/24"
dhcp = false

[resources.a]
type = "port"
network = {{ get_resource = "lan" }}
ip = "{lan}.20"

[resources.b]
type = "port"
network = {{ get_resource = "lan" }}
ip = "{lan}.21"

[resources.rtr]
type = "router"
networks = [{{ get_resource = "lan" }}]
external = {{ network = {{ get_resource = "ext" }}, ip = "{ext}.2" }}

[resources.fip]
type = "floating_ip"
network = {{ get_resource = "ext" }}
port = {{ get_resource = "{target}" }}
router = {{ get_resource = "rtr" }}

[outputs.fip]
value = {{ get_attr = ["fip", "floating_ip_address"] }}

[outputs.fixed]
value = {{ get_attr = ["fip", "fixed_ip_address"] }}
"""

# Prints the source address of each ICMP echo request reaching the namespace it runs in; ends
# by itself after argv[1] seconds.
ECHO_SOURCES = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(0.2)
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    try:
        data, (src, _) = s.recvfrom(4096)
    except socket.timeout:
        continue
    if data[(data[0] & 15) * 4] == 8:
        print(src, flush=True)
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def in_ns(ns: str, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout
    )


def ping(ns: str, target: str, count: int = 2) -> bool:
    return in_ns(ns, "/bin/busybox", "ping", "-c", str(count), "-W", "2", target).returncode == 0


class Host:
    """The test's own namespaces and veths; `cleanup` removes them whatever happened."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.namespaces: list[str] = []
        self.links: list[str] = []

    def client(self, bridge: str, address: str, gateway: str | None, mac: str | None) -> str:
        n = len(self.namespaces)
        ns, outer = f"fd-{self.tag}-{n}", f"fd{self.tag}{n}"
        ip("netns", "add", ns)
        self.namespaces.append(ns)
        ip("link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self.links.append(outer)
        ip("link", "set", outer, "master", bridge, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        if mac:
            ip("-n", ns, "link", "set", "eth0", "address", mac)
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


def sources_seen(listeners: dict[str, str], sender: str, target: str) -> tuple[bool, dict]:
    """Ping `target` from `sender` (2 requests, 2 s each at most) while each listener namespace
    records the sources of the echo requests reaching it: (answered, {ns: {sources}})."""
    procs = {
        name: subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", ECHO_SOURCES, "12"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for name, ns in listeners.items()
    }
    try:
        for p in procs.values():
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        ok = ping(sender, target)
    finally:
        for p in procs.values():
            p.terminate()
    seen = {}
    for name, p in procs.items():
        out, _ = p.communicate(timeout=10)
        seen[name] = {line.strip() for line in out.splitlines() if line.strip()}
    return ok, seen


def tracked(ns: str, floating: str) -> str:
    """The namespace's conntrack lines that mention `floating` (/proc/net/nf_conntrack)."""
    out = in_ns(ns, "cat", "/proc/net/nf_conntrack").stdout
    return "\n".join(line for line in out.splitlines() if f"={floating} " in line)


def nft_tables(ns: str) -> list[str]:
    out = in_ns(ns, "nft", "-j", "list", "tables").stdout
    items = json.loads(out or '{"nftables": []}')["nftables"]
    return sorted(i["table"]["name"] for i in items if "table" in i)


@pytest.fixture
def lab(tmp_path: Path):
    tag = uuid.uuid4().hex[:6]
    path = tmp_path / "fip.toml"

    def write(target: str) -> Path:
        path.write_text(STACK.format(name=f"fdfip-{tag}", ext=EXT, lan=LAN, target=target))
        return path

    host = Host(tag)
    write("a")
    try:
        yield write, host
    finally:
        host.cleanup()
        subprocess.run([str(IACLOUD), "destroy", "--auto-approve", str(path)],
                       capture_output=True, timeout=300)  # fmt: skip


def test_floating_ip_reaches_a_port_and_moves_live(lab, tmp_path: Path) -> None:
    write, host = lab
    path = write("a")
    iacloud("apply", "--auto-approve", "-j", "2", str(path))
    shown = json.loads(iacloud("show", "--json", "--stack", str(path)))
    res = shown["resources"]
    fip = res["fip"]["attributes"]
    # allocated: the lowest address that is not the gateway (.1) or the router's (.2)
    assert fip["floating_ip_address"] == f"{EXT}.3", fip
    assert fip["fixed_ip_address"] == f"{LAN}.20"
    assert res["fip"]["id"] == f"{res['ext']['id']}/{EXT}.3"
    router = res["rtr"]["id"]
    floating = fip["floating_ip_address"]
    assert "No changes" in iacloud("plan", "--detailed-exitcode", str(path))

    macs = {p: PortId.parse(res[p]["id"]).mac for p in ("a", "b")}
    guest_a = host.client(res["lan"]["id"], f"{LAN}.20/24", f"{LAN}.1", macs["a"])
    guest_b = host.client(res["lan"]["id"], f"{LAN}.21/24", f"{LAN}.1", macs["b"])
    # the outside holds the external network's gateway and has no route to the lan
    outside = host.client(res["ext"]["id"], f"{EXT}.1/24", None, None)
    guests = {"a": guest_a, "b": guest_b}

    # in: the outside reaches a through the floating IP, and a sees the outside's address
    ok, seen = sources_seen(guests, outside, floating)
    assert ok and seen == {"a": {f"{EXT}.1"}, "b": set()}, seen
    # out: a leaves as the floating IP; b (no floating IP) as the router's external address
    ok, seen = sources_seen({"outside": outside}, guest_a, f"{EXT}.1")
    assert ok and seen == {"outside": {floating}}, seen
    ok, seen = sources_seen({"outside": outside}, guest_b, f"{EXT}.1")
    assert ok and seen == {"outside": {f"{EXT}.2"}}, seen

    # moving it to b is a live update; afterwards b answers and a is not reached, and the
    # connections tracked for a (the pings above) are dropped rather than left to time out
    assert f"{LAN}.20" in tracked(router, floating)
    write("b")
    plan = iacloud("plan", str(path))
    assert "fip (floating_ip)  update, live" in plan, plan
    assert "Most disruptive change: live" in plan, plan
    iacloud("apply", "--auto-approve", "--max-disruption", "live", str(path))
    assert f"{LAN}.20" not in tracked(router, floating)
    ok, seen = sources_seen(guests, outside, floating)
    assert ok and seen == {"a": set(), "b": {f"{EXT}.1"}}, seen
    fixed = json.loads(iacloud("output", "fixed", "--json", "--stack", str(path)))
    assert fixed == f"{LAN}.21"
    assert "No changes" in iacloud("plan", "--detailed-exitcode", str(path))

    # by hand: the NAT table dropped, then the address removed: each is drift, apply fixes it
    table = "iacloud_fip_" + floating.replace(".", "_")
    assert table in nft_tables(router)
    for undo in (
        ["nft", "delete", "table", "ip", table],
        ["ip", "addr", "del", f"{floating}/32", "dev", "lo"],
    ):
        assert in_ns(router, *undo).returncode == 0
        report = json.loads(iacloud("drift", "--json", str(path), code=2))
        drifted = [r for r in report["resources"] if r["address"] == "fip"]
        assert drifted and drifted[0]["status"] == "modified", report
        iacloud("apply", "--auto-approve", str(path))
        ok, seen = sources_seen(guests, outside, floating)
        assert ok and seen == {"a": set(), "b": {f"{EXT}.1"}}, seen

    # forgotten and imported again by its id: the same state, nothing to do
    fip_id = json.loads(iacloud("show", "--json", "--stack", str(path)))["resources"]["fip"]["id"]
    iacloud("state", "rm", "fip", "--stack", str(path))
    iacloud("import", "fip", fip_id, "--stack", str(path))
    assert "No changes" in iacloud("plan", "--detailed-exitcode", str(path))

    # destroy leaves no table, no address and no record
    iacloud("destroy", "--auto-approve", str(path))
    assert not os.path.exists(f"/run/netns/{router}")
    assert not list(tmp_path.rglob("fip-*.json"))
