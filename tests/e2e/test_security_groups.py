"""Security groups with real traffic, through the installed `iacloud` command: guests of the
tiny image on one network (two on fixed ports, one on DHCP), and namespaces of the test on the
same bridge.

- group `sg` (guest web0 on a port, web2 on DHCP) allows icmp and tcp/22 from 198.18.42.0/28
  only: the namespace at .10 gets answers, the one at .20 none; adding a rule (a live update
  through apply) makes .20 answer, with the same running domain; removing it again drops the
  tracked connection; a rule deleted by hand is drift, and apply puts it back;
- group `peers` (guest web1 through its port's groups, and a namespace bound to a port with
  `device`) allows icmp from its own members (`remote_group = "self"`): the member namespace
  reaches web1, the other namespace does not;
- a NIC's groups change live (web2 moves from sg to peers);
- the member namespace, filtered as a port, cannot send from a second address it gives
  itself (anti-spoofing), while its own address works;
- destroy leaves no nft table of iacloud and no security group record of the stack.
Bounded: ping -c 2 -W 1, every namespace and veth the test makes removed whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_cli import IACLOUD, TINY, iacloud

from iacloud.secgroups.compiler import Member, zone

libvirt = pytest.importorskip("libvirt")
pytest.importorskip("pyroute2")

pytestmark = [
    pytest.mark.libvirt,
    pytest.mark.netlink,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not shutil.which("dnsmasq"), reason="needs dnsmasq"),
    pytest.mark.skipif(not shutil.which("nft"), reason="needs nft"),
]

NET = "198.18.42"
MEMBER_MAC = "52:54:00:5a:00:30"

STACK = """
version = 1
name = "{name}"

[resources.img]
type = "image"
source = "{image}"
format = "qcow2"

[resources.lan]
type = "network"
cidr = "{net}.0/24"

[resources.sg]
type = "security_group"
rules = [
  {{ direction = "ingress", protocol = "icmp", remote_cidr = "{net}.0/28" }},
  {{ direction = "ingress", protocol = "tcp", port_min = 22, remote_cidr = "{net}.0/28" }},
{extra}]

[resources.peers]
type = "security_group"
rules = [{{ direction = "ingress", protocol = "icmp", remote_group = "self" }}]

[resources.p0]
type = "port"
network = {{ get_resource = "lan" }}
ip = "{net}.100"

[resources.p1]
type = "port"
network = {{ get_resource = "lan" }}
ip = "{net}.101"
security_groups = [{{ get_resource = "peers" }}]  # the NIC that takes it (web1) is filtered

[resources.member]
type = "port"
network = {{ get_resource = "lan" }}
ip = "{net}.30"
mac = "{member_mac}"
device = "{member_dev}"
security_groups = [{{ get_resource = "peers" }}]

[resources.web0]
type = "server"
image = {{ get_resource = "img" }}
memory_mib = 128
# a TCP service on port 22 (busybox nc answers each connection with one line)
user_data = "#!/bin/sh\\nnc -ll -p 22 -e echo ssh-ok &\\n"
networks = [{{ port = {{ get_resource = "p0" }}, security_groups = [{{ get_resource = "sg" }}] }}]

[resources.web1]
type = "server"
image = {{ get_resource = "img" }}
memory_mib = 128
networks = [{{ port = {{ get_resource = "p1" }} }}]

[resources.web2]
type = "server"
image = {{ get_resource = "img" }}
memory_mib = 128
networks = [
  {{ network = {{ get_resource = "lan" }}, security_groups = [{{ get_resource = "{g2}" }}] }},
]
"""

EXTRA = '  { direction = "ingress", protocol = "icmp", remote_cidr = "' + NET + '.16/28" },\n'


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def ping(ns: str, address: str, source: str | None = None) -> bool:
    cmd = ["ping"] if shutil.which("ping") else ["busybox", "ping"]
    extra = ["-I", source] if source else []
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, *cmd, "-c", "2", "-W", "1", *extra, address],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return proc.returncode == 0


def banner(ns: str, address: str, port: int) -> str:
    """The line a TCP service sends on connect, or "" (no connection within 2 s)."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, "busybox", "nc", "-w", "2", address, str(port)],
        capture_output=True,
        text=True,
        timeout=15,
        stdin=subprocess.DEVNULL,
    )
    return proc.stdout.strip()


def nft_tables() -> list[str]:
    out = subprocess.run(
        ["nft", "-j", "list", "tables"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    items = json.loads(out)["nftables"]
    return [f"{t['table']['family']} {t['table']['name']}" for t in items if "table" in t]


def tracked(src: str, dst: str) -> list[int]:
    """The conntrack zones holding an ICMP entry src -> dst."""
    from pyroute2 import Conntrack

    with Conntrack() as ct:
        return [
            e.zone or 0
            for e in ct.dump_entries()
            if e.tuple_orig.saddr == src
            and e.tuple_orig.daddr == dst
            and e.tuple_orig.proto == socket.IPPROTO_ICMP
        ]


class Namespaces:
    """The test's namespaces, each with eth0 (a veth whose outer end is on the bridge)."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.made: list[tuple[str, str]] = []

    def add(self, n: int) -> tuple[str, str]:
        ns, outer = f"sg-{self.tag}-{n}", f"sg{self.tag}{n}"
        ip("netns", "add", ns)
        self.made.append((ns, outer))
        ip("link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("-n", ns, "link", "set", "lo", "up")
        return ns, outer

    def attach(self, outer: str, ns: str, bridge: str, address: str, mac: str | None) -> None:
        if mac:
            ip("-n", ns, "link", "set", "eth0", "address", mac)
        ip("-n", ns, "addr", "add", address, "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("link", "set", outer, "master", bridge, "up")

    def cleanup(self) -> None:
        for ns, outer in self.made:
            subprocess.run(["ip", "link", "del", outer], capture_output=True, timeout=10)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


@pytest.fixture
def lab(tmp_path: Path, e2e_pool: str) -> Iterator[tuple]:
    if not TINY.is_file():
        pytest.skip("build/images/tiny.qcow2 is missing: run `make image`")
    tag = uuid.uuid4().hex[:6]
    spaces = Namespaces(tag)
    path = tmp_path / "sg.toml"
    member_dev = f"sg{tag}2"

    def write(extra: str = "", web2_group: str = "sg") -> Path:
        text = STACK.format(
            name=f"e2esg-{tag}",
            image=TINY,
            net=NET,
            extra=extra,
            member_mac=MEMBER_MAC,
            member_dev=member_dev,
            g2=web2_group,
        )
        path.write_text(text + e2e_pool)
        return path

    write()
    try:
        yield write, spaces, path
    finally:
        spaces.cleanup()
        subprocess.run([str(IACLOUD), "destroy", "--auto-approve", str(path)],
                       capture_output=True, timeout=600)  # fmt: skip


def test_security_groups_filter_real_traffic(lab) -> None:
    write, spaces, path = lab
    allowed, _ = spaces.add(0)
    other, _ = spaces.add(1)
    member, member_dev = spaces.add(2)
    iacloud("apply", "--auto-approve", str(path))
    state = json.loads(iacloud("show", "--json", "--stack", str(path)))
    by_addr = state["resources"]
    sid = state["stack_id"]
    bridge = by_addr["lan"]["id"]
    group = by_addr["sg"]["id"]
    spaces.attach(spaces.made[0][1], allowed, bridge, f"{NET}.10/24", None)
    spaces.attach(spaces.made[1][1], other, bridge, f"{NET}.20/24", None)
    spaces.attach(member_dev, member, bridge, f"{NET}.30/24", MEMBER_MAC)
    web0, web1 = f"{NET}.100", f"{NET}.101"
    assert {"bridge iacloud", "inet iacloud"} <= set(nft_tables())

    # CIDR rules: .10 is in 198.18.42.0/28, .20 is not
    assert ping(allowed, web0), "a namespace the group allows gets no answer"
    assert not ping(other, web0), "a namespace outside the group's CIDR got an answer"
    assert banner(allowed, web0, 22) == "ssh-ok", "tcp/22 from the allowed CIDR failed"
    assert banner(other, web0, 22) == "", "tcp/22 from outside the CIDR got through"

    # a NIC on DHCP (no port): allowed the address of its lease
    leased = by_addr["web2"]["attributes"]["addresses"]["lan"]
    assert len(leased) == 1, leased
    assert ping(allowed, leased[0]), "a DHCP NIC with groups is not reachable from allowed"
    assert not ping(other, leased[0])

    # a rule added live: same running domain, now .20 is answered
    conn = libvirt.open("qemu:///system")
    try:
        dom = conn.lookupByUUIDString(by_addr["web0"]["id"])
        dom_id = dom.ID()
        write(EXTRA)
        out = iacloud("plan", str(path))
        assert "security_group" in out or "sg" in out
        iacloud("apply", "--auto-approve", str(path))
        assert ping(other, web0), "the added rule did not let .20 in"
        assert conn.lookupByUUIDString(by_addr["web0"]["id"]).ID() == dom_id, "web0 restarted"
        # tracked in the network's own conntrack zone
        assert tracked(f"{NET}.20", web0) == [zone(bridge)]
        seen = time.monotonic()
        # and removed again: the tracked connection it allowed goes with it (well before
        # conntrack's 30 s ICMP timeout would have removed it)
        write()
        iacloud("apply", "--auto-approve", str(path))
        assert tracked(f"{NET}.20", web0) == [], "a connection the rules no longer allow is kept"
        assert time.monotonic() - seen < 20
        assert not ping(other, web0)
        assert dom.ID() == dom_id
    finally:
        conn.close()

    # remote_group: the member namespace (port 'member' in group peers) reaches web1; the
    # namespace that is no member does not, even though .20 is allowed nowhere else
    assert ping(member, web1), "a member of 'peers' cannot reach another member"
    assert not ping(other, web1), "a non-member reached a group that allows only members"
    assert not ping(allowed, web1)

    # anti-spoofing: the member may send from its own address only
    assert ping(member, f"{NET}.20"), "the filtered namespace cannot reach an unfiltered one"
    ip("-n", member, "addr", "add", f"{NET}.31/24", "dev", "eth0")
    assert not ping(member, f"{NET}.20", source=f"{NET}.31"), "a spoofed source got through"

    # drift: a rule deleted by hand shows in the plan and apply puts it back
    listing = subprocess.run(
        ["nft", "-j", "-a", "list", "table", "inet", "iacloud"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    handles = json.loads(listing.stdout)["nftables"]
    (mac,) = by_addr["web0"]["attributes"]["macs"]
    web0_chain = f"in_{Member(bridge, mac, 'unused').key}"
    victim = next(
        i["rule"]
        for i in handles
        if "rule" in i
        and i["rule"].get("comment") == f"{group}:0"
        and i["rule"]["chain"] == web0_chain
    )
    subprocess.run(["nft", "delete", "rule", "inet", "iacloud", victim["chain"], "handle",
                    str(victim["handle"])], check=True, timeout=10)  # fmt: skip
    assert not ping(allowed, web0)
    iacloud("plan", "--detailed-exitcode", str(path), code=2)
    iacloud("apply", "--auto-approve", str(path))
    assert ping(allowed, web0)
    iacloud("plan", "--detailed-exitcode", str(path), code=0)

    # a NIC's member record lost (as after a reboot) is drift of the server's networks too
    root = Path(os.environ.get("IACLOUD_SECGROUPS_DIR") or "/run/iacloud/secgroups")
    records = [(f, json.loads(f.read_text())) for f in (root / "members").glob("server-*.json")]
    # web0 lists the groups itself; web1 is filtered only through its port's groups, and its
    # record binds the port to the tap: without it the port's groups filter nothing
    for address in ("web0", "web1"):
        lost = next(f for f, m in records if m["address"] == address and m["stack_id"] == sid)
        lost.unlink()
        iacloud("plan", "--detailed-exitcode", str(path), code=2)
        iacloud("apply", "--auto-approve", str(path))
        assert lost.exists()
        iacloud("plan", "--detailed-exitcode", str(path), code=0)
    assert ping(member, web1) and not ping(other, web1)

    # a NIC's groups changed live: web2 moves from sg to peers, the domain keeps running
    conn = libvirt.open("qemu:///system")
    try:
        web2_id = conn.lookupByUUIDString(by_addr["web2"]["id"]).ID()
        write(web2_group="peers")
        iacloud("apply", "--auto-approve", str(path))
        assert ping(member, leased[0]), "web2 in peers does not answer a member"
        assert not ping(allowed, leased[0]), "web2 still answers by its old group's rules"
        assert conn.lookupByUUIDString(by_addr["web2"]["id"]).ID() == web2_id
        iacloud("plan", "--detailed-exitcode", str(path), code=0)
    finally:
        conn.close()

    # import: a group forgotten by state is adopted again by its id, and the plan is empty
    iacloud("state", "rm", "peers", "--stack", str(path))
    iacloud("import", "peers", by_addr["peers"]["id"], "--stack", str(path))
    iacloud("plan", "--detailed-exitcode", str(path), code=0)

    iacloud("destroy", "--auto-approve", str(path))
    assert not {"bridge iacloud", "inet iacloud"} & set(nft_tables()), "iacloud's tables remain"
    assert not list((root / "groups").glob(f"{group}.json"))
    members = [json.loads(f.read_text()) for f in (root / "members").glob("*.json")]
    assert not [m for m in members if m.get("stack_id") == sid]
