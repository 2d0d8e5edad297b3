"""Security groups and ports on another host (#16) on the real lab hosts: a guest on h1 pings a
guest on h2 whose NIC takes a port (a fixed address from the network node's dnsmasq, over
VXLAN) and lists a security group allowing ICMP: the pings are answered, h2's own nft table
(read over its SSH) holds the group's rule bound to that NIC, and this machine's does not. A
floating IP on the node's router reaches the h2 guest through its port. A rule deleted by hand
on h2 is drift the next apply puts back. Moving the h2 guest to h1 is a live migration that
takes its rules along: h1's table gets them, h2's goes, and the pings are still answered.
Records left as by a run cut off mid-move are repaired by the next apply.
Changing the rule to TCP 22 only is then a live update: h1's table follows and the pings go
unanswered. Destroy leaves our tables on neither host. Everything is named sg* and in
198.18.0.0/15; the stack is destroyed and the test's outside namespace removed whatever
happened."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab import NODE, TINY, on, run_stack, workdir

from iacloud.secgroups import facts
from iacloud.secgroups.compiler import Member

LAN, EXT = "198.18.81", "198.19.81"
FIXED = f"{LAN}.50"
OUTSIDE_NS, OUTSIDE_LINK = "sgout", "sgout0"
# rounds of one ping each (a new ICMP id, so a new connection, every round), and one ping that
# runs on (one id: after its first reply, conntrack holds it as established)
PING = (
    "#!/bin/sh\nn=0; while true; do n=$((n+1)); "
    f"if ping -c1 -W1 {FIXED} >/dev/null 2>&1; then echo SGPING $n OK; "
    f"else echo SGPING $n NO; fi; sleep 1; done &\nping {FIXED} &\n"
)
ICMP = '{ direction = "ingress", protocol = "icmp" }'
SSH_ONLY = '{ direction = "ingress", protocol = "tcp", port_min = 22 }'


def stack(rule: str, b_host: str = "h2") -> str:
    return f"""
version = 1
name = "sg"
[provider.netlink]
underlay = "{NODE}"
[resources.tiny]
type = "image"
source = "{TINY}"
format = "qcow2"
[resources.ext]
type = "network"
cidr = "{EXT}.0/24"
dhcp = false
external = true
[resources.lan]
type = "network"
cidr = "{LAN}.0/24"
dhcp_range = {{ start = "{LAN}.100", end = "{LAN}.110" }}
[resources.rtr]
type = "router"
networks = [{{ get_resource = "lan" }}]
external = {{ network = {{ get_resource = "ext" }}, ip = "{EXT}.2" }}
[resources.icmp]
type = "security_group"
rules = [{rule}]
[resources.pb]
type = "port"
network = {{ get_resource = "lan" }}
ip = "{FIXED}"
[resources.fip]
type = "floating_ip"
network = {{ get_resource = "ext" }}
port = {{ get_resource = "pb" }}
router = {{ get_resource = "rtr" }}
[resources.a]
type = "server"
image = {{ get_resource = "tiny" }}
memory_mib = 128
host = "h1"
networks = [{{ network = {{ get_resource = "lan" }} }}]
user_data = {json.dumps(PING)}
[resources.b]
type = "server"
image = {{ get_resource = "tiny" }}
memory_mib = 128
host = "{b_host}"
networks = [{{ port = {{ get_resource = "pb" }}, security_groups = [{{ get_resource = "icmp" }}] }}]
"""


def iacloud(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_stack(work, "sg.toml", *args)


def state(work: Path, address: str) -> dict[str, object]:
    done = iacloud(work, "state", "show", address, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=False)


def drop_outside() -> None:
    ip("link", "del", OUTSIDE_LINK)
    ip("netns", "del", OUTSIDE_NS)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = workdir(tmp_path_factory, "sg", sg=stack(ICMP))
    try:
        yield path
    finally:
        drop_outside()
        done = iacloud(path, "destroy", "--auto-approve")
        assert done.returncode == 0, done.stdout + done.stderr


def console() -> str:
    """The h1 guest's console log (read over h1's SSH): the running domain's, since the logs
    of earlier runs' domains stay in the directory."""
    (name,) = [n for n in on("h1", "virsh", "list", "--name").split() if n.startswith("sg-a-")]
    return on("h1", "cat", f"/var/log/libvirt/qemu/{name}.console.log")


def rounds(work: Path) -> list[tuple[int, bool]]:
    """The h1 guest's ping rounds so far."""
    return [(int(n), ok == "OK") for n, ok in re.findall(r"SGPING (\d+) (OK|NO)", console())]


def last_reply() -> int:
    """The sequence number of the last reply the running ping got (-1: none)."""
    return max((int(n) for n in re.findall(rf"from {FIXED}: seq=(\d+) ttl", console())), default=-1)


def wait_rounds(work: Path, after: int, count: int, timeout: float = 120) -> list[bool]:
    """The outcomes of `count` rounds after round `after`."""
    deadline = time.monotonic() + timeout
    seen: list[tuple[int, bool]] = []
    while time.monotonic() < deadline:
        seen = [r for r in rounds(work) if r[0] > after]
        if len(seen) >= count:
            return [ok for _, ok in seen[:count]]
        time.sleep(2)
    raise AssertionError(f"only {len(seen)} ping rounds after round {after}: {seen}")


def b_nic(work: Path) -> tuple[str, str]:
    """The h2 guest's NIC: the port's bridge and MAC (`<bridge>/<mac>/<ip>`)."""
    bridge, mac, _ = str(state(work, "pb")["id"]).split("/")
    return bridge, mac


def table(host: str, family: str = "inet") -> str:
    return on(host, "nft", "list", "table", family, "iacloud")


def h2_table(family: str = "inet") -> str:
    return table("h2", family)


def test_a_port_and_a_group_on_h2_let_icmp_from_h1_in(work: Path) -> None:
    done = iacloud(work, "apply", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    gid = str(state(work, "icmp")["id"])
    bridge, mac = b_nic(work)
    # b leased the port's fixed address from the node's dnsmasq, over VXLAN
    shown = iacloud(work, "show").stdout
    assert FIXED in shown, shown
    # answered: some round after boot succeeds, and then they keep succeeding
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(ok for _, ok in rounds(work)):
        time.sleep(3)
    last = max((n for n, ok in rounds(work) if ok), default=None)
    assert last is not None, rounds(work)[-10:]
    assert all(wait_rounds(work, last, 3))
    assert last_reply() >= 0  # the running ping is answered too
    # h2 holds the rule, bound to b's MAC; this machine's table does not filter b
    table = h2_table()
    assert f'comment "{gid}:0"' in table and "icmp" in table and mac in table, table
    assert mac in h2_table("bridge")
    local = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    assert mac not in local
    assert bridge in on("h2", "ip", "-br", "link")
    # the group reads back from h2's table as applied: no drift, nothing to do
    plan = json.loads(iacloud(work, "plan", "--json").stdout)
    assert not [c for c in plan["changes"] if c["action"] != "no-op"], plan


def test_a_rule_deleted_on_h2_by_hand_is_drift_and_put_back(work: Path) -> None:
    gid = str(state(work, "icmp")["id"])
    bridge, mac = b_nic(work)
    chain = f"in_{Member(bridge, mac, 'unused').key}"
    on("h2", "nft", "flush", "chain", "inet", "iacloud", chain)
    assert f'comment "{gid}:0"' not in h2_table()
    plan = json.loads(iacloud(work, "plan", "--json").stdout)
    changes = [(c["address"], c["action"]) for c in plan["changes"] if c["action"] != "no-op"]
    assert changes == [("icmp", "update")], plan
    done = iacloud(work, "apply", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f'comment "{gid}:0"' in h2_table()


def test_a_floating_ip_reaches_the_guest_on_h2_through_its_port(work: Path) -> None:
    fip = str(state(work, "fip")["id"]).split("/")[1]
    ext = str(state(work, "ext")["id"])
    drop_outside()
    for args in (
        ("netns", "add", OUTSIDE_NS),
        ("link", "add", OUTSIDE_LINK, "type", "veth", "peer", "name", "eth0", "netns", OUTSIDE_NS),
        ("link", "set", OUTSIDE_LINK, "master", ext, "up"),
        ("-n", OUTSIDE_NS, "link", "set", "lo", "up"),
        ("-n", OUTSIDE_NS, "addr", "add", f"{EXT}.1/24", "dev", "eth0"),
        ("-n", OUTSIDE_NS, "link", "set", "eth0", "up"),
    ):
        done = ip(*args)
        assert done.returncode == 0, (args, done.stderr)
    ping = subprocess.run(
        ["ip", "netns", "exec", OUTSIDE_NS, "/bin/busybox", "ping", "-c", "3", "-W", "2", fip],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_moving_the_guest_to_h1_takes_its_rules_along(work: Path) -> None:
    gid = str(state(work, "icmp")["id"])
    _, mac = b_nic(work)
    uuid = str(state(work, "b")["id"])
    (work / "sg.toml").write_text(stack(ICMP, b_host="h1"))
    plan = json.loads(iacloud(work, "plan", "--json").stdout)
    moves = [(c["address"], c["action"], c["disruption"]) for c in plan["changes"]
             if c["action"] != "no-op"]  # fmt: skip
    assert ("b", "update", "live") in moves and all(a == "update" for _, a, _ in moves), moves
    # while it moves, h1 is watched: whenever b's domain is there (the incoming one included),
    # its MAC's chains must be in h1's table already
    samples: list[tuple[bool, bool]] = []
    applying = threading.Event()
    applying.set()

    def watch() -> None:
        script = "virsh list --name; echo ==; nft list table bridge iacloud 2>/dev/null; true"
        while applying.is_set():
            domains, _, rules = on("h1", "sh", "-c", shlex.quote(script)).partition("==")
            samples.append((any(n.startswith("sg-b-") for n in domains.split()), mac in rules))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        done = iacloud(work, "apply", "--auto-approve")
    finally:
        applying.clear()
        watcher.join()
    assert done.returncode == 0, done.stdout + done.stderr
    assert any(there for there, _ in samples), samples  # the watch saw b arrive
    assert all(filtered for there, filtered in samples if there), samples
    assert str(state(work, "b")["id"]) == uuid
    assert [n for n in on("h1", "virsh", "list", "--name").split() if n.startswith("sg-b-")]
    # h1 filters b now, with the group's rule; h2 has no filtered NIC left: no tables there
    assert f'comment "{gid}:0"' in table("h1") and mac in table("h1", "bridge")
    assert h2_table() == "" and h2_table("bridge") == ""
    # the guest on h1 still answers a's pings, through its rules on h1
    last = max(n for n, _ in rounds(work))
    assert all(wait_rounds(work, last + 1, 3))
    plan = json.loads(iacloud(work, "plan", "--json").stdout)
    assert not [c for c in plan["changes"] if c["action"] != "no-op"], plan


def test_a_move_cut_off_before_the_records_followed_is_repaired_by_the_next_apply(
    work: Path,
) -> None:
    # as a run killed after the migration leaves them: b's record still names h2, and the copy
    # staged for the move names h1
    (own,) = [m for m in facts.members() if (m.source, m.address) == ("server", "b")]
    assert own.host == "h1" and own.ssh is not None
    h2 = own.ssh.model_copy(update={"target": "h2"})
    with facts.locked():
        facts.write_member(dataclasses.replace(own, host="h2", ssh=h2))
        facts.write_member(dataclasses.replace(own, source=facts.MOVING))
    plan = json.loads(iacloud(work, "plan", "--json").stdout)
    changes = [(c["address"], c["action"], c["disruption"]) for c in plan["changes"]
               if c["action"] != "no-op"]  # fmt: skip
    assert changes == [("b", "update", "live")], changes
    done = iacloud(work, "apply", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    mine = [m for m in facts.members() if m.address == "b"]
    assert [(m.source, m.host) for m in mine] == [("server", "h1")], mine
    assert h2_table() == "" and own.mac in table("h1", "bridge")
    plan = json.loads(iacloud(work, "plan", "--json").stdout)
    assert not [c for c in plan["changes"] if c["action"] != "no-op"], plan


def test_changing_the_rule_is_live_on_the_guests_host(work: Path) -> None:
    gid = str(state(work, "icmp")["id"])
    (work / "sg.toml").write_text(stack(SSH_ONLY, b_host="h1"))
    plan = json.loads(iacloud(work, "plan", "--json").stdout)
    changes = [c for c in plan["changes"] if c["action"] != "no-op"]
    assert [(c["address"], c["action"], c["disruption"]) for c in changes] == [
        ("icmp", "update", "live")
    ], changes
    done = iacloud(work, "apply", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    last, seq = max(n for n, _ in rounds(work)), last_reply()
    # a round under way while the rules changed may still pass: judge the ones after it
    assert not any(wait_rounds(work, last + 1, 3))
    # the running ping's connection was established, which the rules let pass whatever they
    # say: it stops only because h2's conntrack entry was deleted (over SSH) with the rule
    assert last_reply() <= seq + 2, (seq, last_reply())
    text = table("h1")
    assert f'comment "{gid}:0"' in text and "tcp dport 22" in text, text
    assert "meta l4proto icmp" not in text


def test_destroy_removes_the_tables_on_both_hosts(work: Path) -> None:
    _, mac = b_nic(work)
    done = iacloud(work, "destroy", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    # b was the last filtered NIC: our tables are gone everywhere
    for host in ("h1", "h2"):
        assert table(host) == "" and table(host, "bridge") == "", (host, mac)
