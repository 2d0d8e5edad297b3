"""A network across hosts (#16) on the real lab hosts: servers on h1 and h2 on one network get
their addresses from the network node's dnsmasq over VXLAN, and the guest on h1 pings the guest
on h2 (its console says so) and finds it by its DNS name, served by the node; the VXLAN peers
are a full unicast mesh; removing the server on h2 shrinks the network live (h2's side
removed, the node's peers updated); destroy leaves no link of the stack on any host."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab import HOSTS, NODE, fdb_peers, links_of, on, run_stack, workdir

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "build" / "images" / "tiny.qcow2"
RANGE = ("198.18.78.100", "198.18.78.101")
PING = (
    "#!/bin/sh\nwhile true; do for ip in " + " ".join(RANGE) + "; do "
    "ping -c1 -W1 $ip >/dev/null 2>&1 && echo PINGOK $ip; done; "
    # the server on h2 by name: the node's dnsmasq serves the names of every host's guests
    "echo NAME $(nslookup b.vx.internal 2>/dev/null | sed -n 's/^Address: *//p' | tail -n1); "
    "sleep 2; done &\n"
)


def stack(with_b: bool) -> str:
    text = f"""
version = 1
name = "vx"
[provider.netlink]
underlay = "{NODE}"
[resources.tiny]
type = "image"
source = "{TINY}"
format = "qcow2"
[resources.lan]
type = "network"
cidr = "198.18.78.0/24"
dhcp_range = {{ start = "{RANGE[0]}", end = "{RANGE[1]}" }}
dns_domain = "vx.internal"
[resources.a]
type = "server"
image = {{ get_resource = "tiny" }}
memory_mib = 128
host = "h1"
networks = [{{ network = {{ get_resource = "lan" }} }}]
user_data = {json.dumps(PING)}
"""
    if with_b:
        text += """
[resources.b]
type = "server"
image = { get_resource = "tiny" }
memory_mib = 128
host = "h2"
networks = [{ network = { get_resource = "lan" } }]
"""
    return text


def iacloud(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_stack(work, "vx.toml", *args)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = workdir(tmp_path_factory, "vx", vx=stack(True))
    yield path
    iacloud(path, "destroy", "--auto-approve")


def bridge(work: Path) -> str:
    state = json.loads(iacloud(work, "state", "show", "lan", "--json").stdout)
    return str(state["id"])


def test_guests_on_two_hosts_reach_each_other_over_vxlan(work: Path) -> None:
    done = iacloud(work, "apply", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    shown = iacloud(work, "show").stdout
    address = {
        name: json.loads(line.split("=", 1)[1])["lan"][0]
        for name, line in zip(
            ("a", "b"), [ln for ln in shown.splitlines() if "addresses =" in ln], strict=True
        )
    }
    assert set(address.values()) == set(RANGE)  # both leased by the node's dnsmasq
    br = bridge(work)
    vx = "iacx" + br[4:]
    for host, addr in HOSTS.items():
        assert br in links_of(host) and vx in links_of(host)
        others = {NODE, *HOSTS.values()} - {addr}
        assert fdb_peers(on(host, "bridge", "fdb", "show", "dev", vx)) == others
        assert "mtu 1450" in on(host, "ip", "link", "show", "dev", vx)
    node = subprocess.run(["bridge", "fdb", "show", "dev", vx], capture_output=True, text=True)
    assert fdb_peers(node.stdout) == set(HOSTS.values())
    deadline = time.monotonic() + 90
    seen = ""
    # a's own log: older guests' logs of the same stack name are never read
    name = json.loads(iacloud(work, "state", "show", "a", "--json").stdout)["attributes"]["name"]
    log = f"/var/log/libvirt/qemu/{name}.console.log"
    while time.monotonic() < deadline:
        seen = on("h1", "tail", "-c", "2000", log)
        if f"PINGOK {address['b']}" in seen:
            break
        time.sleep(3)
    assert f"PINGOK {address['b']}" in seen, seen[-500:]
    while f"NAME {address['b']}" not in seen and time.monotonic() < deadline:
        time.sleep(3)
        seen = on("h1", "tail", "-c", "2000", log)
    assert f"NAME {address['b']}" in seen, seen[-500:]
    plan = json.loads(iacloud(work, "plan", "--json").stdout)
    assert not [c for c in plan["changes"] if c["action"] != "no-op"]


def test_removing_the_last_server_of_a_host_shrinks_the_network_live(work: Path) -> None:
    br = bridge(work)
    (work / "vx.toml").write_text(stack(False))
    plan = json.loads(iacloud(work, "plan", "--json").stdout)
    lan = next(c for c in plan["changes"] if c["address"] == "lan")
    assert lan["action"] == "update" and lan["disruption"] == "live", (lan, plan["drift"])
    assert lan["after"]["hosts"] == ["h1"]
    done = iacloud(work, "apply", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not links_of("h2")
    vx = "iacx" + br[4:]
    node = subprocess.run(["bridge", "fdb", "show", "dev", vx], capture_output=True, text=True)
    assert fdb_peers(node.stdout) == {HOSTS["h1"]}
    assert bridge(work) == br  # the same network, changed in place


def test_destroy_leaves_no_link_on_any_host(work: Path) -> None:
    br = bridge(work)
    done = iacloud(work, "destroy", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    for host in HOSTS:
        assert not links_of(host)
    local = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert br not in local and "iacx" + br[4:] not in local
