"""End-to-end through the `iacloud` command: DNS names on a network with `dns_domain`.

Servers from the tiny image on a DHCP network with `dns_domain = "fd.internal"`: two counted
ones on DHCP (web-0, web-1) and one on a fixed port (db). A namespace of the test on the
network asks the network's dnsmasq (busybox nslookup, bounded): each name answers with the
server's address. Removing web-1 (count 2 -> 1) removes its name while dnsmasq keeps running
(same pid); changing the domain is a live update that restarts dnsmasq. Everything is in
198.18.0.0/15 and removed afterwards, failed test or not.
"""

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

from iacloud import netnames
from iacloud.providers.netlink import dnsmasq
from iacloud.providers.netlink.names import NetworkNames

pytestmark = [
    pytest.mark.libvirt,
    pytest.mark.netlink,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not shutil.which("dnsmasq"), reason="needs dnsmasq"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="needs busybox-static"),
]

LAN = "198.18.212"

STACK = """
version = 1
name = "{name}"

[parameters.count]
type = "number"
default = 2

[parameters.domain]
type = "string"
default = "fd.internal"

[resources.img]
type = "image"
source = "{image}"
format = "qcow2"

[resources.lan]
type = "network"
cidr = "{lan}.0/24"
dns_domain = {{ get_param = "domain" }}

[resources.dbport]
type = "port"
network = {{ get_resource = "lan" }}
ip = "{lan}.50"

[resources.web]
type = "server"
count = {{ get_param = "count" }}
image = {{ get_resource = "img" }}
memory_mib = 128
networks = [{{ network = {{ get_resource = "lan" }} }}]

[resources.db]
type = "server"
image = {{ get_resource = "img" }}
memory_mib = 128
networks = [{{ port = {{ get_resource = "dbport" }} }}]

[outputs.web]
value = {{ get_attr = ["web", "addresses", "lan"] }}

[outputs.server]
value = {{ get_attr = ["lan", "dhcp_server"] }}
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def lookup(ns: str, name: str, server: str) -> str | None:
    """The address dnsmasq answers for `name` (busybox nslookup, 5 s at most), or None."""
    r = subprocess.run(
        ["ip", "netns", "exec", ns, "/bin/busybox", "nslookup", name, server],
        capture_output=True,
        text=True,
        timeout=10,
    )
    found = None
    seen_name = False
    for line in r.stdout.splitlines():
        if line.startswith("Name:") and line.split()[-1] == name:
            seen_name = True
        elif seen_name and line.startswith("Address:"):
            found = line.split()[-1]
            break
    return found


def answer(ns: str, name: str, server: str, expected: str | None, wait: float = 5.0) -> str | None:
    """`lookup`, repeated (bounded by `wait` seconds) until it gives `expected`: dnsmasq picks
    up a changed hosts file a moment after the file changed."""
    deadline = time.monotonic() + wait
    found = lookup(ns, name, server)
    while found != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        found = lookup(ns, name, server)
    return found


def servers(bridge: str) -> dict[str, int]:
    """{"dhcp": pid, "dns": pid} of the network's two dnsmasq processes."""
    wanted = f"--interface={NetworkNames(bridge).dhcp_inner}"
    out = {}
    for e in os.listdir("/proc"):
        argv = dnsmasq.cmdline(int(e)) if e.isdigit() else None
        if argv and wanted in argv:
            kind = "dns" if "--expand-hosts" in argv else "dhcp"
            assert kind not in out, f"two {kind} servers"
            out[kind] = int(e)
    return out


@pytest.fixture
def lab(tmp_path: Path, e2e_pool: str):
    if not TINY.is_file():
        pytest.skip("build/images/tiny.qcow2 is missing: run `make image`")
    tag = uuid.uuid4().hex[:6]
    path = tmp_path / "dns.toml"
    path.write_text(STACK.format(name=f"fddns-{tag}", image=TINY, lan=LAN) + e2e_pool)
    made: dict[str, list[str]] = {"ns": [], "links": []}
    try:
        yield path, tag, made
    finally:
        for name in made["links"]:
            subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=10)
        for ns in made["ns"]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        subprocess.run([str(IACLOUD), "destroy", "--auto-approve", str(path)],
                       capture_output=True, timeout=600)  # fmt: skip


def test_servers_are_resolvable_by_name(lab, tmp_path: Path) -> None:
    path, tag, made = lab
    iacloud("apply", "--auto-approve", "-j", "3", str(path))
    shown = json.loads(iacloud("show", "--json", "--stack", str(path)))
    res = shown["resources"]
    bridge = res["lan"]["id"]
    server = json.loads(iacloud("output", "server", "--json", "--stack", str(path)))
    web = json.loads(iacloud("output", "web", "--json", "--stack", str(path)))
    assert len(web) == 2 and all(len(a) == 1 for a in web), web

    ns, outer = f"fd-{tag}-dns", f"fd{tag}d"
    ip("netns", "add", ns)
    made["ns"].append(ns)
    ip("link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns)
    made["links"].append(outer)
    ip("link", "set", outer, "master", bridge, "up")
    ip("-n", ns, "addr", "add", f"{LAN}.200/24", "dev", "eth0")
    ip("-n", ns, "link", "set", "eth0", "up")

    assert answer(ns, "web-0.fd.internal", server, web[0][0]) == web[0][0]
    assert answer(ns, "web-1.fd.internal", server, web[1][0]) == web[1][0]
    assert answer(ns, "db.fd.internal", server, f"{LAN}.50") == f"{LAN}.50"
    assert answer(ns, "nobody.fd.internal", server, None) is None
    assert "No changes" in iacloud("plan", "--detailed-exitcode", str(path))

    # a server goes: its name goes with it, dnsmasq keeps running (no restart)
    pids = servers(bridge)
    assert set(pids) == {"dhcp", "dns"}, pids
    iacloud("apply", "--auto-approve", "-p", "count=1", str(path))
    assert answer(ns, "web-1.fd.internal", server, None) is None
    assert answer(ns, "web-0.fd.internal", server, web[0][0]) == web[0][0]
    assert servers(bridge) == pids

    # another domain: a live update (dnsmasq restarts, the names follow)
    plan = iacloud("plan", "-p", "count=1", "-p", "domain=lab2.fd.internal", str(path))
    assert "lan (network)  update, live" in plan, plan
    iacloud("apply", "--auto-approve", "-p", "count=1", "-p", "domain=lab2.fd.internal",
            "--max-disruption", "live", str(path))  # fmt: skip
    assert answer(ns, "web-0.lab2.fd.internal", server, web[0][0]) == web[0][0]
    assert answer(ns, "db.lab2.fd.internal", server, f"{LAN}.50") == f"{LAN}.50"
    assert answer(ns, "web-0.fd.internal", server, None) is None
    assert servers(bridge)["dns"] != pids["dns"]  # restarted (and DHCP, for the domain name)

    iacloud("destroy", "--auto-approve", str(path))
    assert netnames.hosts_dir(bridge) is not None and not netnames.hosts_dir(bridge).exists()
    assert NetworkNames(bridge).dhcp_namespace not in os.listdir("/run/netns")
