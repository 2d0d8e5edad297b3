"""The netlink provider against the real kernel and a real dnsmasq (needs root).

Every test works in its own stack (a unique id) and its own state dir under tmp_path. Traffic
flows only between objects the test made: its namespaces, veths and the provider's bridges,
all addressed from 198.18.0.0/15, with bounded counts and timeouts. The `lab` fixture removes
everything afterwards, failed test or not, and then asserts that nothing tagged with the
test's stack id, no namespace and no dnsmasq of the test is left.
"""

from __future__ import annotations

import contextlib
import errno
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute, NetNS, netns
from pyroute2.netlink.exceptions import NetlinkError

from iacloud.errors import ProviderError
from iacloud.provider import ObjectRef, Observed, StackInfo, TaggedObject
from iacloud.providers.netlink import NetlinkProvider, NetlinkSettings, dnsmasq
from iacloud.providers.netlink import netns as nl_netns
from iacloud.providers.netlink.links import LinkTable
from iacloud.providers.netlink.names import (
    NetworkNames,
    parse_tag,
    router_gateway_leg,
    router_leg,
    router_namespace,
)
from iacloud.providers.netlink.network_inputs import NetworkInputs
from iacloud.providers.netlink.port import PortInputs
from iacloud.providers.netlink.router import RouterInputs

pytestmark = [
    pytest.mark.netlink,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not shutil.which("dnsmasq"), reason="needs dnsmasq"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="needs busybox-static"),
]

BUSYBOX = "/bin/busybox"


class Lab:
    """One test's stack, provider and the namespaces and links the test itself makes."""

    def __init__(self, tmp_path: Path) -> None:
        self.uid = uuid.uuid4().hex[:6]
        self.stack = StackInfo(
            name="nltest",
            id=f"nltest-{self.uid}",
            directory=tmp_path,
            data_dir=tmp_path / "data",
        )
        self.provider = NetlinkProvider(self.stack, NetlinkSettings())
        self.network = self.provider.resource("network")
        self.port = self.provider.resource("port")
        self.router = self.provider.resource("router")
        self.namespaces: list[str] = []  # the test's own
        self.links: list[str] = []  # the test's own, in the root namespace
        self.bridges: set[str] = set()
        self.seen_namespaces: set[str] = set()
        self._n = 0

    # ---- provider objects ----------------------------------------------------------------

    def create_network(self, address: str, **inputs: Any) -> Observed:
        observed = self.network.create(address, NetworkInputs(**inputs))
        self.bridges.add(observed.id)
        return observed

    def read_network(self, address: str, id: str | None) -> Observed | None:
        return self.network.read([ObjectRef(address=address, id=id)]).get(address)

    # ---- the test's own objects ----------------------------------------------------------

    def name(self, role: str) -> str:
        self._n += 1
        return f"t{self.uid}{self._n:02d}{role}"[:15]

    def namespace(self) -> str:
        name = f"nltest-{self.uid}-{len(self.namespaces)}"
        netns.create(name)
        self.namespaces.append(name)
        with NetNS(name, flags=0) as ns:
            ns.link("set", index=1, state="up")
        return name

    def veth(self, ns: str, inner: str = "eth0", mac: str | None = None) -> str:
        """A veth pair: returns the root end (left down and unattached); `inner` is in ns."""
        outer = self.name("o")
        peer: dict[str, Any] = {"ifname": inner, "net_ns_fd": ns}
        if mac:
            peer["address"] = mac
        with IPRoute() as ipr:
            ipr.link("add", ifname=outer, kind="veth", peer=peer)
        self.links.append(outer)
        with NetNS(ns, flags=0) as nsr:
            nsr.link("set", index=nsr.link_lookup(ifname=inner)[0], state="up")
        return outer

    def client(
        self,
        bridge: str,
        address: str | None = None,
        gateway: str | None = None,
        mac: str | None = None,
    ) -> str:
        """A namespace with eth0 on the bridge, optionally addressed and routed."""
        ns = self.namespace()
        outer = self.veth(ns, mac=mac)
        with IPRoute() as ipr:
            ipr.link(
                "set",
                index=ipr.link_lookup(ifname=outer)[0],
                master=ipr.link_lookup(ifname=bridge)[0],
                state="up",
            )
        if address:
            with NetNS(ns, flags=0) as nsr:
                index = nsr.link_lookup(ifname="eth0")[0]
                ip, prefix = address.split("/")
                nsr.addr("add", index=index, address=ip, prefixlen=int(prefix))
                if gateway:
                    nsr.route("add", dst="0.0.0.0/0", gateway=gateway)
        return ns

    # ---- cleanup -------------------------------------------------------------------------

    def provider_namespaces(self) -> set[str]:
        """The namespaces the provider made for this stack, as far as anything tells: created
        networks, the state dir's records, and the tags on links."""
        bridges = self.bridges | {files_.bridge for files_ in self.provider.state.networks()}
        out = {NetworkNames(b).dhcp_namespace for b in bridges}
        out |= {path.stem for path in self.provider.state.routers()}
        with IPRoute() as ipr:
            for msg in ipr.get_links():
                owner = parse_tag(msg.get("IFLA_IFALIAS"))
                name = msg.get("IFLA_IFNAME")
                if owner and owner[0] == self.stack.id:
                    if name.startswith("iacb"):
                        out.add(NetworkNames(name).dhcp_namespace)
                    if name.startswith(("iacr", "iacg")):
                        out.add(router_namespace(*owner))
        return out

    def cleanup(self) -> None:
        """Remove everything, in an order that works whatever state the test left."""
        self.seen_namespaces |= self.provider_namespaces()
        state = self.provider.state
        for path in list(state.routers()):
            with contextlib.suppress(Exception):
                self.router.delete("?", Observed(id=path.stem, inputs={}, attributes={}))
        for files_ in list(state.networks()):
            with contextlib.suppress(Exception):
                self.network.delete("?", Observed(id=files_.bridge, inputs={}, attributes={}))
        # Whatever the provider could not remove: links tagged with our stack, test links.
        with IPRoute() as ipr:
            for msg in ipr.get_links():
                owner = parse_tag(msg.get("IFLA_IFALIAS"))
                if owner and owner[0] == self.stack.id:
                    with contextlib.suppress(Exception):
                        ipr.link("del", index=msg["index"])
            for name in self.links:
                with contextlib.suppress(Exception):
                    ipr.link("del", index=ipr.link_lookup(ifname=name)[0])
        for pid in _dnsmasq_pids(str(self.stack.data_dir)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for ns in self.seen_namespaces | set(self.namespaces):
            with contextlib.suppress(Exception):
                netns.remove(ns)

    def tagged_links(self) -> list[str]:
        with IPRoute() as ipr:
            return [
                msg.get("IFLA_IFNAME")
                for msg in ipr.get_links()
                if self.stack.id in (msg.get("IFLA_IFALIAS") or "")
            ]

    def leftovers(self) -> list[str]:
        out = []
        with IPRoute() as ipr:
            for msg in ipr.get_links():
                name = msg.get("IFLA_IFNAME")
                if self.stack.id in (msg.get("IFLA_IFALIAS") or ""):
                    out.append(f"link {name}")
                if name in self.links:
                    out.append(f"test link {name}")
        ours = self.seen_namespaces | set(self.namespaces) | self.provider_namespaces()
        out += [f"namespace {ns}" for ns in sorted(ours & set(netns.listnetns()))]
        out += [f"dnsmasq {pid}" for pid in _dnsmasq_pids(str(self.stack.data_dir))]
        return out


def _dnsmasq_pids(marker: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            argv = dnsmasq.cmdline(int(entry))
            if argv and os.path.basename(argv[0]) == "dnsmasq" and any(marker in a for a in argv):
                out.append(int(entry))
    return out


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.cleanup()
    assert lab.leftovers() == [], "the test left objects behind"


# ---- helpers ---------------------------------------------------------------------------------


def run_in(ns: str, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", f"--net=/run/netns/{ns}", "--", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def dhcp_address(ns: str) -> str | None:
    """Ask for a lease on eth0 (bounded: 5 discovers, 1 s apart) and return the address."""
    r = run_in(
        ns,
        BUSYBOX,
        "udhcpc",
        "-i",
        "eth0",
        "-n",
        "-q",
        "-f",
        "-t",
        "5",
        "-T",
        "1",
        "-s",
        "/bin/true",
    )
    m = re.search(r"lease of (\S+) obtained", r.stdout + r.stderr)
    return m.group(1) if m else None


def ping(ns: str, ip: str, count: int = 2) -> bool:
    return run_in(ns, BUSYBOX, "ping", "-c", str(count), "-W", "2", ip).returncode == 0


def link(name: str, ns: str | None = None) -> dict[str, Any] | None:
    if ns is None:
        with IPRoute() as ipr:
            found = ipr.get_links(ifname=name) if ipr.link_lookup(ifname=name) else []
    else:
        with NetNS(ns, flags=0) as nsr:
            found = nsr.get_links(ifname=name) if nsr.link_lookup(ifname=name) else []
    if not found:
        return None
    msg = found[0]
    return {
        "index": msg["index"],
        "mtu": msg.get("IFLA_MTU"),
        "alias": msg.get("IFLA_IFALIAS"),
        "master": msg.get("IFLA_MASTER"),
    }


def addresses(name: str) -> list[str]:
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=name)[0]
        return [a.get("IFA_ADDRESS") for a in ipr.get_addr(index=index)]


def served(files_dir: Path) -> tuple[int, list[str]]:
    from iacloud.providers.netlink.records import NetworkFiles

    found = dnsmasq.running(NetworkFiles(files_dir))
    assert found is not None, "dnsmasq is not running"
    return found


# ---- networks --------------------------------------------------------------------------------


def test_network_lifecycle(lab: Lab) -> None:
    net = lab.create_network("lan", cidr="198.18.10.0/24")
    bridge = net.id
    n = NetworkNames(bridge)
    tag = f"iacloud:{lab.stack.id}:lan"

    assert link(bridge)["alias"] == tag
    assert addresses(bridge) == [], "the host must take no part in the network"
    assert link(n.dhcp_veth)["master"] == link(bridge)["index"]
    assert n.dhcp_namespace in netns.listnetns()
    pid, argv = served(lab.provider.state.network(bridge).dir)
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{n.dhcp_namespace}").st_ino
    assert "--dhcp-range=198.18.10.10,198.18.10.253,255.255.255.0,3600" in argv

    assert net.inputs == {
        "cidr": "198.18.10.0/24",
        "gateway": "198.18.10.1",
        "dhcp": True,
        "dhcp_range": {"start": "198.18.10.10", "end": "198.18.10.253"},
        "dns": [],
        "mtu": 1500,
        "segment": None,
        "external": False,
        "dns_domain": None,
    }
    assert net.attributes["dhcp_server"] == "198.18.10.254"
    # Refresh right after create: identical; found by tag when the id was never recorded.
    assert lab.read_network("lan", bridge) == net
    assert lab.read_network("lan", None) == net
    assert lab.network.import_("lan", bridge) == net
    assert TaggedObject("network", bridge, lab.stack.id, "lan") in lab.network.list_tagged()

    lab.network.delete("lan", net)
    assert link(bridge) is None and link(n.dhcp_veth) is None
    assert n.dhcp_namespace not in netns.listnetns()
    assert _dnsmasq_pids(str(lab.stack.data_dir)) == []
    assert not lab.provider.state.network(bridge).dir.exists()
    assert lab.read_network("lan", bridge) is None
    lab.network.delete("lan", net)  # already gone: fine


def test_dhcp_lease_and_port_reservation(lab: Lab) -> None:
    net = lab.create_network("lan", cidr="198.18.11.0/24")
    mac = "52:54:00:0a:0b:0c"
    client = lab.client(net.id, mac=mac)

    got = dhcp_address(client)
    assert got is not None, "no lease"
    assert 10 <= int(got.split(".")[3]) <= 253

    port = lab.port.create("p", PortInputs(network=net.id, ip="198.18.11.5", mac=mac))
    assert port.id == f"{net.id}/{mac}/198.18.11.5"
    assert port.inputs == {
        "network": net.id,
        "ip": "198.18.11.5",
        "mac": mac,
        "security_groups": [],
        "device": None,
    }
    assert f"--dhcp-host={mac},198.18.11.5" in served(lab.provider.state.network(net.id).dir)[1]
    assert dhcp_address(client) == "198.18.11.5"

    refs = [ObjectRef("p", port.id), ObjectRef("p", None, {"network": net.id})]
    assert lab.port.read(refs) == {"p": port}
    assert lab.port.import_("p", port.id) == port

    # Another port may not take the address or the MAC; the error names the holder.
    with pytest.raises(ProviderError, match="already reserved by port 'p'"):
        lab.port.create("q", PortInputs(network=net.id, ip="198.18.11.5"))
    diags = lab.port.check("q", PortInputs(network=net.id, ip="198.18.11.6", mac=mac), None)
    assert [d.field for d in diags] == ["mac"]
    with pytest.raises(ProviderError, match="the gateway"):
        lab.port.create("q", PortInputs(network=net.id, ip="198.18.11.1"))
    with pytest.raises(ProviderError, match="outside network"):
        lab.port.create("q", PortInputs(network=net.id, ip="198.18.12.7"))
    with pytest.raises(ProviderError, match="does not exist"):
        lab.port.create("q", PortInputs(network="iacb0000000000", ip="198.18.11.7"))

    # A default MAC is stable per address and recorded.
    q = lab.port.create("q", PortInputs(network=net.id, ip="198.18.11.7"))
    assert q.inputs["mac"].startswith("52:54:00:")
    assert lab.port.create("q", PortInputs(network=net.id, ip="198.18.11.7")) == q

    lab.port.delete("p", port)
    assert f"--dhcp-host={mac},198.18.11.5" not in served(lab.provider.state.network(net.id).dir)[1]
    assert lab.port.read(refs) == {}
    lab.port.delete("p", port)


def test_port_whose_reservation_is_not_served_reads_absent(lab: Lab) -> None:
    net = lab.create_network("lan", cidr="198.18.13.0/24")
    port = lab.port.create("p", PortInputs(network=net.id, ip="198.18.13.5"))
    files = lab.provider.state.network(net.id)
    # dnsmasq restarted by hand without the reservation: the port is not in effect.
    argv = served(files.dir)[1]
    dnsmasq.stop(files)
    dnsmasq.start(
        NetworkNames(net.id).dhcp_namespace, [a for a in argv if "--dhcp-host" not in a], files
    )
    assert lab.port.read([ObjectRef("p", port.id)]) == {}
    assert lab.port.create("p", PortInputs(network=net.id, ip="198.18.13.5")) == port
    assert lab.port.read([ObjectRef("p", port.id)]) == {"p": port}


def test_mtu_changes_live(lab: Lab) -> None:
    net = lab.create_network("lan", cidr="198.18.14.0/24")
    n = NetworkNames(net.id)
    before = link(net.id)["index"], link(n.dhcp_veth)["index"]

    inputs = NetworkInputs(cidr="198.18.14.0/24", mtu=1400)
    updated = lab.network.update("lan", net, inputs, frozenset({"mtu"}))
    assert (link(net.id)["index"], link(n.dhcp_veth)["index"]) == before
    assert link(net.id)["mtu"] == 1400
    assert link(n.dhcp_veth)["mtu"] == 1400
    assert link(n.dhcp_inner, n.dhcp_namespace)["mtu"] == 1400
    assert updated.inputs["mtu"] == 1400
    assert "--dhcp-option=option:mtu,1400" in served(lab.provider.state.network(net.id).dir)[1]
    assert lab.read_network("lan", net.id) == updated


def test_dhcp_range_and_dns_change_restart_dnsmasq_only(lab: Lab) -> None:
    net = lab.create_network("lan", cidr="198.18.15.0/24")
    n = NetworkNames(net.id)
    files_dir = lab.provider.state.network(net.id).dir
    indexes = link(net.id)["index"], link(n.dhcp_veth)["index"]
    pid = served(files_dir)[0]

    inputs = NetworkInputs(
        cidr="198.18.15.0/24",
        dhcp_range=["198.18.15.100", "198.18.15.110"],
        dns=["198.18.15.53"],
    )
    updated = lab.network.update("lan", net, inputs, frozenset({"dhcp_range", "dns"}))
    assert (link(net.id)["index"], link(n.dhcp_veth)["index"]) == indexes
    new_pid, argv = served(files_dir)
    assert new_pid != pid
    assert "--dhcp-range=198.18.15.100,198.18.15.110,255.255.255.0,3600" in argv
    assert "--dhcp-option=option:dns-server,198.18.15.53" in argv
    assert updated.inputs["dhcp_range"] == {"start": "198.18.15.100", "end": "198.18.15.110"}
    assert updated.inputs["dns"] == ["198.18.15.53"]
    assert lab.read_network("lan", net.id) == updated

    # Nothing changed: nothing is restarted.
    lab.network.update("lan", updated, inputs, frozenset())
    assert served(files_dir)[0] == new_pid

    client = lab.client(net.id)
    got = dhcp_address(client)
    assert got is not None and 100 <= int(got.split(".")[3]) <= 110


def test_dead_dnsmasq_is_observed_and_restarted(lab: Lab) -> None:
    net = lab.create_network("lan", cidr="198.18.16.0/24")
    files_dir = lab.provider.state.network(net.id).dir
    pid = served(files_dir)[0]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while dnsmasq.cmdline(pid) and time.monotonic() < deadline:
        time.sleep(0.01)

    seen = lab.read_network("lan", net.id)
    assert seen is not None
    assert seen.inputs["dhcp"] is False  # so the next plan proposes dhcp false -> true
    assert seen.attributes["dhcp_running"] is False
    assert {k: v for k, v in seen.inputs.items() if k != "dhcp"} == {
        k: v for k, v in net.inputs.items() if k != "dhcp"
    }

    fixed = lab.network.update(
        "lan", seen, NetworkInputs(cidr="198.18.16.0/24"), frozenset({"dhcp"})
    )
    assert fixed == net or fixed.inputs == net.inputs
    assert served(files_dir)[0] != pid
    assert lab.read_network("lan", net.id).inputs == net.inputs


def test_port_create_after_dnsmasq_was_killed_serves_or_fails(lab: Lab) -> None:
    """Issue 10 item 6: dnsmasq killed mid-apply (after its network's step) must not give a
    port step that reports success while no DHCP server runs: it starts the server again,
    with the new reservation, and checks it runs."""
    net = lab.create_network("lan", cidr="198.18.20.0/24")
    files = lab.provider.state.network(net.id)
    pid = served(files.dir)[0]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while dnsmasq.cmdline(pid) and time.monotonic() < deadline:
        time.sleep(0.01)

    port = lab.port.create("p", PortInputs(network=net.id, ip="198.18.20.5"))
    new_pid, argv = served(files.dir)
    assert new_pid != pid
    assert f"--dhcp-host={port.inputs['mac']},198.18.20.5" in argv
    assert lab.read_network("lan", net.id).attributes["dhcp_running"] is True


def test_dhcp_namespace_removed_by_hand_is_rebuilt(lab: Lab) -> None:
    net = lab.create_network("lan", cidr="198.18.19.0/24")
    n = NetworkNames(net.id)
    netns.remove(n.dhcp_namespace)  # dnsmasq keeps the unnamed namespace alive

    seen = lab.read_network("lan", net.id)
    assert seen.inputs["dhcp"] is False
    fixed = lab.network.update(
        "lan", seen, NetworkInputs(cidr="198.18.19.0/24"), frozenset({"dhcp"})
    )
    assert fixed.inputs == net.inputs
    assert len(_dnsmasq_pids(str(lab.stack.data_dir))) == 1
    client = lab.client(net.id, mac="52:54:00:0a:0b:0d")
    lab.port.create("p", PortInputs(network=net.id, ip="198.18.19.5", mac="52:54:00:0a:0b:0d"))
    assert dhcp_address(client) == "198.18.19.5"


def test_dhcp_off_and_on(lab: Lab) -> None:
    net = lab.create_network("lan", cidr="198.18.17.0/24")
    n = NetworkNames(net.id)
    index = link(net.id)["index"]

    off = lab.network.update(
        "lan", net, NetworkInputs(cidr="198.18.17.0/24", dhcp=False), frozenset({"dhcp"})
    )
    assert off.inputs["dhcp"] is False
    assert n.dhcp_namespace not in netns.listnetns()
    assert link(n.dhcp_veth) is None
    assert _dnsmasq_pids(str(lab.stack.data_dir)) == []
    assert lab.read_network("lan", net.id) == off

    on = lab.network.update("lan", off, NetworkInputs(cidr="198.18.17.0/24"), frozenset({"dhcp"}))
    assert on.inputs == net.inputs
    assert link(net.id)["index"] == index


def test_failed_create_leaves_nothing(lab: Lab) -> None:
    with pytest.raises(ProviderError, match="uplink nosuchdev0 does not exist"):
        lab.create_network(
            "lan", cidr="198.18.18.0/24", segment={"vlan": 10, "uplink": "nosuchdev0"}
        )
    assert lab.tagged_links() == []
    assert lab.provider_namespaces() & set(netns.listnetns()) == set()
    assert list(lab.provider.state.networks()) == []


def test_networks_read_in_bulk(lab: Lab) -> None:
    nets = {
        f"n{i}": lab.create_network(f"n{i}", cidr=f"198.18.{20 + i}.0/24", dhcp=i % 2 == 0)
        for i in range(4)
    }
    refs = [ObjectRef(a, o.id) for a, o in nets.items()] + [ObjectRef("gone", "iacb0000000000")]
    assert lab.network.read(refs) == nets


def test_reads_share_one_link_dump_and_changes_drop_it(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `iacloud drift` asks of one provider (bulk reads, then every type's tagged objects)
    costs one link dump and one namespace listing; a change drops them, so a read after it
    sees it."""
    a = lab.create_network("a", cidr="198.18.60.0/24", dhcp=False)
    dumps: list[int] = []
    listings: list[int] = []
    real_dump = LinkTable.dump.__func__
    real_list = nl_netns.list_namespaces
    monkeypatch.setattr(
        LinkTable, "dump", classmethod(lambda cls: dumps.append(1) or real_dump(cls))
    )
    monkeypatch.setattr(nl_netns, "list_namespaces", lambda: listings.append(1) or real_list())

    assert lab.network.read([ObjectRef("a", a.id)]) == {"a": a}
    assert lab.router.read([ObjectRef("r", None)]) == {}
    tagged = lab.network.list_tagged() + lab.router.list_tagged() + lab.port.list_tagged()
    assert TaggedObject("network", a.id, lab.stack.id, "a") in tagged
    assert (len(dumps), len(listings)) == (1, 1)

    b = lab.create_network("b", cidr="198.18.61.0/24", dhcp=False)
    assert TaggedObject("network", b.id, lab.stack.id, "b") in lab.network.list_tagged()
    assert lab.network.read([ObjectRef("b", b.id)]) == {"b": b}
    assert len(dumps) == 2  # create took no dump; the reads after it took one
    lab.network.delete("b", b)
    assert b.id not in {t.id for t in lab.network.list_tagged()}
    assert lab.network.read([ObjectRef("b", b.id)]) == {}


def test_link_dump_agrees_with_pyroute2(lab: Lab) -> None:
    """The provider decodes links itself (`links`): every field of a Link is what pyroute2
    reads from the kernel, for every link of the host (a bridge, its veth, the host's own)."""
    net = lab.create_network("a", cidr="198.18.62.0/24")  # with DHCP: a veth on the bridge
    ours = LinkTable.dump()
    with IPRoute() as ipr:
        theirs = {msg["index"]: msg for msg in ipr.get_links()}
    both = set(ours.by_index) & set(theirs)  # other tests may add or remove links meanwhile
    assert {net.id, NetworkNames(net.id).dhcp_veth} <= {ours.by_index[i].name for i in both}
    for index in both:
        msg = theirs[index]
        info = msg.get("IFLA_LINKINFO")
        expected = (
            msg.get("IFLA_IFNAME"),
            info.get("IFLA_INFO_KIND") if info else None,
            msg.get("IFLA_IFALIAS"),
            msg.get("IFLA_MASTER"),
            msg.get("IFLA_MTU"),
            bool(msg["flags"] & 1),
        )
        got = ours.by_index[index]
        assert (got.name, got.kind, got.alias, got.master, got.mtu, got.up) == expected
    fetched = LinkTable.fetch([net.id, NetworkNames(net.id).dhcp_veth, "nosuchlink0"])
    assert set(fetched.by_name) == {net.id, NetworkNames(net.id).dhcp_veth}
    for name, found in fetched.by_name.items():
        assert found == ours.by_name[name]


def test_parallel_creates(lab: Lab) -> None:
    """The engine applies with a thread pool: networks and the ports of one network are
    created concurrently, and every reservation ends up served."""
    with ThreadPoolExecutor(max_workers=6) as pool:
        nets = list(
            pool.map(lambda i: lab.create_network(f"n{i}", cidr=f"198.18.{50 + i}.0/24"), range(6))
        )
        ports = list(
            pool.map(
                lambda i: lab.port.create(
                    f"p{i}", PortInputs(network=nets[0].id, ip=f"198.18.50.{100 + i}")
                ),
                range(8),
            )
        )
    assert len({n.id for n in nets}) == 6
    assert all(
        n.inputs["dhcp"]
        for n in lab.network.read([ObjectRef(f"n{i}", n.id) for i, n in enumerate(nets)]).values()
    )
    argv = served(lab.provider.state.network(nets[0].id).dir)[1]
    for port in ports:
        assert f"--dhcp-host={port.inputs['mac']},{port.inputs['ip']}" in argv
    assert len(_dnsmasq_pids(str(lab.stack.data_dir))) == 6


# ---- routers ---------------------------------------------------------------------------------


def test_router_joins_two_networks(lab: Lab) -> None:
    forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    a = lab.create_network("a", cidr="198.18.30.0/24", dhcp=False)
    b = lab.create_network("b", cidr="198.18.31.0/24", dhcp=False)
    left = lab.client(a.id, "198.18.30.10/24", "198.18.30.1")
    right = lab.client(b.id, "198.18.31.10/24", "198.18.31.1")

    router = lab.router.create("r", RouterInputs(networks=[b.id, a.id]))
    assert router.inputs == {"networks": sorted([a.id, b.id]), "external": None}
    assert router.attributes["addresses"] == {a.id: "198.18.30.1/24", b.id: "198.18.31.1/24"}
    assert ping(left, "198.18.31.10")
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == forwarding
    refs = [ObjectRef("r", router.id), ObjectRef("r", None)]
    assert lab.router.read(refs) == {"r": router}
    assert lab.router.import_("r", router.id) == router
    assert TaggedObject("router", router.id, lab.stack.id, "r") in lab.router.list_tagged()

    # Legs come and go live, the namespace stays.
    only_a = lab.router.update("r", router, RouterInputs(networks=[a.id]), frozenset({"networks"}))
    assert only_a.inputs == {"networks": [a.id], "external": None}
    assert link(router_leg(router.id, b.id)[0]) is None
    assert not ping(left, "198.18.31.10", count=1)
    both = lab.router.update(
        "r", only_a, RouterInputs(networks=[a.id, b.id]), frozenset({"networks"})
    )
    assert both == router
    assert ping(left, "198.18.31.10")
    assert ping(right, "198.18.30.10")

    # A second router cannot take the same gateways.
    with pytest.raises(ProviderError, match="already has a router"):
        lab.router.create("r2", RouterInputs(networks=[a.id]))

    # MTU of a network reaches the router's end of its leg.
    lab.network.update(
        "a", a, NetworkInputs(cidr="198.18.30.0/24", dhcp=False, mtu=1300), frozenset({"mtu"})
    )
    assert link(router_leg(router.id, a.id)[1], router.id)["mtu"] == 1300

    lab.router.delete("r", router)
    assert router.id not in netns.listnetns()
    assert link(router_leg(router.id, a.id)[0]) is None
    assert lab.router.read(refs) == {}
    lab.router.delete("r", router)


def test_router_refuses_overlapping_networks(lab: Lab) -> None:
    a = lab.create_network("a", cidr="198.18.32.0/24", dhcp=False)
    b = lab.create_network("b", cidr="198.18.32.0/25", dhcp=False)
    inputs = RouterInputs(networks=[a.id, b.id])
    assert [d.field for d in lab.router.check("r", inputs, None)] == ["networks"]
    with pytest.raises(ProviderError, match="overlap"):
        lab.router.create("r", inputs)
    assert lab.router.read([ObjectRef("r", None)]) == {}


# ---- a router's external gateway -------------------------------------------------------------

# Captures ICMP echo requests arriving in the namespace it runs in and prints their source
# address: what the far side of a router really sees. It ends by itself after argv[1] seconds.
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


def ping_seen_from(outside: str, inside: str, target: str, count: int = 2) -> tuple[bool, set[str]]:
    """Ping `target` from `inside` (`count` echo requests, 2 s each at most) while `outside`
    records the source addresses of the echo requests that reach it."""
    listener = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{outside}", "--", sys.executable, "-c", ECHO_SOURCES, "15"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        ok = ping(inside, target, count)
    finally:
        listener.terminate()
        out, _ = listener.communicate(timeout=10)
    return ok, {line.strip() for line in out.splitlines() if line.strip()}


def host_view() -> tuple[str, str, set[tuple[Any, ...]]]:
    """What the router must not change in the root namespace: its nftables ruleset, IPv4
    forwarding, and its IPv4 routes."""
    ruleset = subprocess.run(
        ["nft", "list", "ruleset"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    with IPRoute() as ipr:
        routes = {
            (r.get("RTA_DST"), r["dst_len"], r.get("RTA_GATEWAY"), r.get("RTA_OIF"))
            for r in ipr.get_routes(family=2, table=254)
        }
    return ruleset, Path("/proc/sys/net/ipv4/ip_forward").read_text(), routes


def default_gateway(ns: str) -> str | None:
    with NetNS(ns, flags=0) as nsr:
        routes = nsr.get_default_routes(family=2)
    return routes[0].get("RTA_GATEWAY") if routes else None


@pytest.mark.skipif(not shutil.which("nft"), reason="needs nft")
def test_router_external_gateway_with_snat(lab: Lab) -> None:
    host_before = host_view()
    lan = lab.create_network("lan", cidr="198.18.34.0/24", dhcp=False)
    ext = lab.create_network("ext", cidr="198.19.34.0/24", dhcp=False, external=True)
    inside = lab.client(lan.id, "198.18.34.10/24", "198.18.34.1")
    # The stand-in for the outside holds the external network's gateway and has no route back
    # to 198.18.34.0/24: only a reply to the router's own external address can reach it.
    outside = lab.client(ext.id, "198.19.34.1/24")

    wanted = RouterInputs(networks=[lan.id], external={"network": ext.id, "ip": "198.19.34.2"})
    router = lab.router.create("r", wanted)
    assert router.inputs == {
        "networks": [lan.id],
        "external": {"network": ext.id, "ip": "198.19.34.2", "snat": True},
    }
    assert router.attributes["external_ip"] == "198.19.34.2"
    assert default_gateway(router.id) == "198.19.34.1"
    ok, sources = ping_seen_from(outside, inside, "198.19.34.1")
    assert ok and sources == {"198.19.34.2"}, sources
    assert host_view() == host_before, "the host's ruleset, forwarding or routes changed"
    assert lab.router.read([ObjectRef("r", router.id)]) == {"r": router}
    assert lab.router.import_("r", router.id) == router
    assert TaggedObject("router", router.id, lab.stack.id, "r") in lab.router.list_tagged()

    # SNAT off, live: the request now arrives from the inside address, and gets no answer.
    no_snat = RouterInputs(
        networks=[lan.id], external={"network": ext.id, "ip": "198.19.34.2", "snat": False}
    )
    off = lab.router.update("r", router, no_snat, frozenset({"external"}))
    assert off.inputs["external"]["snat"] is False
    ok, sources = ping_seen_from(outside, inside, "198.19.34.1", count=1)
    assert not ok and sources == {"198.18.34.10"}, sources
    on = lab.router.update("r", off, wanted, frozenset({"external"}))
    assert on == router
    assert ping(inside, "198.19.34.1")

    # Undone by hand: the SNAT table flushed, then the gateway leg deleted. A read sees each,
    # and an update puts it back.
    assert run_in(router.id, "nft", "delete", "table", "ip", "iacloud_snat").returncode == 0
    seen = lab.router.read([ObjectRef("r", router.id)])["r"]
    assert seen.inputs["external"]["snat"] is False
    assert lab.router.update("r", seen, wanted, frozenset({"external"})) == router
    leg = router_gateway_leg(router.id, ext.id)
    with IPRoute() as ipr:
        ipr.link("del", index=ipr.link_lookup(ifname=leg[0])[0])
    seen = lab.router.read([ObjectRef("r", router.id)])["r"]
    assert seen.inputs["external"] is None and seen.attributes["external_ip"] is None
    assert lab.router.update("r", seen, wanted, frozenset({"external"})) == router
    assert default_gateway(router.id) == "198.19.34.1"
    ok, sources = ping_seen_from(outside, inside, "198.19.34.1")
    assert ok and sources == {"198.19.34.2"}, sources

    # The external network's MTU reaches the router's end of the gateway leg.
    lab.network.update(
        "ext",
        ext,
        NetworkInputs(cidr="198.19.34.0/24", dhcp=False, external=True, mtu=1300),
        frozenset({"mtu"}),
    )
    assert link(leg[1], router.id)["mtu"] == 1300

    # Without external: the leg, the route and the table go; the internal leg stays.
    plain = lab.router.update("r", router, RouterInputs(networks=[lan.id]), frozenset({"external"}))
    assert plain.inputs == {"networks": [lan.id], "external": None}
    assert link(leg[0]) is None and default_gateway(router.id) is None
    assert run_in(router.id, "nft", "list", "table", "ip", "iacloud_snat").returncode != 0
    assert not ping(inside, "198.19.34.1", count=1)

    lab.router.delete("r", plain)
    assert router.id not in netns.listnetns()
    assert host_view() == host_before


def test_router_external_network_rules(lab: Lab) -> None:
    lan = lab.create_network("lan", cidr="198.18.35.0/24", dhcp=False)
    plain = lab.create_network("plain", cidr="198.19.35.0/24", dhcp=False)
    ext = lab.create_network("ext", cidr="198.19.36.0/24", external=True)

    not_external = RouterInputs(
        networks=[lan.id], external={"network": plain.id, "ip": "198.19.35.2"}
    )
    assert [d.field for d in lab.router.check("r", not_external, None)] == ["external.network"]
    with pytest.raises(ProviderError, match="not an external network"):
        lab.router.create("r", not_external)

    # ext has DHCP on: its default range (.10 to .253) is dnsmasq's to hand out
    in_range = RouterInputs(networks=[lan.id], external={"network": ext.id, "ip": "198.19.36.20"})
    assert [d.field for d in lab.router.check("r", in_range, None)] == ["external.ip"]
    with pytest.raises(ProviderError, match="inside the DHCP range"):
        lab.router.create("r", in_range)

    as_leg = RouterInputs(networks=[lan.id, ext.id])
    assert [d.field for d in lab.router.check("r", as_leg, None)] == ["networks"]
    with pytest.raises(ProviderError, match="is external"):
        lab.router.create("r", as_leg)
    assert lab.router.read([ObjectRef("r", None)]) == {}
    assert not any(name.startswith(("iacr", "iacg")) for name in lab.tagged_links())


# ---- segments --------------------------------------------------------------------------------


def _kernel_has_vlan(lab: Lab) -> bool:
    probe = lab.name("p")
    with IPRoute() as ipr:
        ipr.link("add", ifname=probe, kind="veth", peer=probe + "x")
        try:
            index = ipr.link_lookup(ifname=probe)[0]
            ipr.link("add", ifname=probe + "v", kind="vlan", link=index, vlan_id=7)
            return True
        except NetlinkError as exc:
            if exc.code == errno.EOPNOTSUPP:
                return False
            raise
        finally:
            ipr.link("del", index=ipr.link_lookup(ifname=probe)[0])


def test_vlan_segment(lab: Lab) -> None:
    far = lab.namespace()
    uplink = lab.veth(far, inner="up1")
    if not _kernel_has_vlan(lab):
        # The create must fail cleanly and say why (the kernel lacks CONFIG_VLAN_8021Q here).
        with pytest.raises(ProviderError, match=r"802\.1Q"):
            lab.create_network(
                "lan", cidr="198.18.40.0/24", dhcp=False, segment={"vlan": 100, "uplink": uplink}
            )
        assert lab.tagged_links() == []
        # the traffic half below needs CONFIG_VLAN_8021Q; this host's kernel has none
        return
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname=uplink)[0], state="up")
    with NetNS(far, flags=0) as nsr:
        up1 = nsr.link_lookup(ifname="up1")[0]
        nsr.link("add", ifname="up1.100", kind="vlan", link=up1, vlan_id=100)
        index = nsr.link_lookup(ifname="up1.100")[0]
        nsr.addr("add", index=index, address="198.18.40.2", prefixlen=24)
        nsr.link("set", index=index, state="up")

    segment = {"vlan": 100, "uplink": uplink}
    net = lab.create_network("lan", cidr="198.18.40.0/24", dhcp=False, segment=segment)
    assert net.inputs["segment"] == segment
    vlan = link(NetworkNames(net.id).vlan)
    assert vlan["master"] == link(net.id)["index"]
    assert vlan["alias"] == f"iacloud:{lab.stack.id}:lan"
    client = lab.client(net.id, "198.18.40.3/24")
    assert ping(client, "198.18.40.2")
    assert lab.read_network("lan", net.id) == net

    lab.network.delete("lan", net)
    assert link(NetworkNames(net.id).vlan) is None
    assert link(uplink) is not None, "the uplink is the user's: never deleted"


def test_vxlan_segment(lab: Lab) -> None:
    far = lab.namespace()
    underlay = lab.veth(far, inner="ul1")
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=underlay)[0]
        ipr.addr("add", index=index, address="198.19.7.1", prefixlen=30)
        ipr.link("set", index=index, state="up")
    with NetNS(far, flags=0) as nsr:
        nsr.addr("add", index=nsr.link_lookup(ifname="ul1")[0], address="198.19.7.2", prefixlen=30)
        nsr.link(
            "add",
            ifname="vx0",
            kind="vxlan",
            vxlan_id=4242,
            vxlan_local="198.19.7.2",
            vxlan_port=4789,
        )
        vx = nsr.link_lookup(ifname="vx0")[0]
        nsr.fdb("append", ifindex=vx, lladdr="00:00:00:00:00:00", dst="198.19.7.1")
        nsr.addr("add", index=vx, address="198.18.41.2", prefixlen=24)
        nsr.link("set", index=vx, state="up")

    segment = {"vxlan": 4242, "local": "198.19.7.1", "remotes": ["198.19.7.2"]}
    net = lab.create_network("lan", cidr="198.18.41.0/24", dhcp=False, segment=segment)
    assert net.inputs["segment"] == {**segment, "group": None, "port": 4789, "uplink": None}
    assert net.inputs["mtu"] == link(net.id)["mtu"]
    client = lab.client(net.id, "198.18.41.3/24")
    assert ping(client, "198.18.41.2")
    assert lab.read_network("lan", net.id) == net


# ---- doctor ----------------------------------------------------------------------------------


def test_doctor_on_this_host(lab: Lab) -> None:
    checks = {c.name: c for c in NetlinkProvider.doctor(NetlinkSettings())}
    assert list(checks) == [
        "netlink privileges",
        "dnsmasq",
        "nftables",
        "bridge netfilter",
        "security groups",
        "802.1Q VLAN",
    ]
    assert checks["netlink privileges"].status == "ok"  # these tests run as root
    version = subprocess.run(
        ["dnsmasq", "--version"], capture_output=True, text=True, timeout=5
    ).stdout.split("  ")[0]
    assert checks["dnsmasq"].status == "ok" and version in checks["dnsmasq"].message
    assert checks["nftables"].status == ("ok" if shutil.which("nft") else "warn")
    bridge_nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    calls_iptables = bridge_nf.exists() and bridge_nf.read_text().strip() == "1"
    assert checks["bridge netfilter"].status == ("warn" if calls_iptables else "ok")
    assert checks["security groups"].status == ("ok" if calls_iptables else "warn")
    # the doctor only reads; the probe really creates a VLAN link: they must agree
    assert (checks["802.1Q VLAN"].status == "ok") == _kernel_has_vlan(lab)
    for check in checks.values():
        assert check.status == "ok" or check.fix, f"{check.name} says nothing about a fix"

    from click.testing import CliRunner

    from iacloud.cli.main import cli

    result = CliRunner().invoke(cli, ["doctor", "--json"])
    shown = {c["name"]: c for c in json.loads(result.output)}
    assert {name: shown[name]["status"] for name in checks} == {
        name: c.status for name, c in checks.items()
    }


def test_doctor_says_how_to_fix_each_problem(tmp_path: Path, monkeypatch) -> None:
    from iacloud.providers.netlink import doctor

    monkeypatch.setattr(doctor, "effective_capabilities", lambda: 1 << 12)  # no CAP_SYS_ADMIN
    monkeypatch.setattr(doctor, "find", lambda program: None)
    (tmp_path / "nf").write_text("1\n")
    monkeypatch.setattr(doctor, "BRIDGE_NF", tmp_path / "nf")
    monkeypatch.setattr(doctor, "VLAN_PROC", tmp_path / "vlan")
    monkeypatch.setattr(doctor, "MODULES", tmp_path / "modules")
    monkeypatch.setattr(doctor.platform, "release", lambda: "6.1.0-test")
    checks = {c.name: c for c in doctor.checks()}
    assert {name: (c.status, c.fix) for name, c in checks.items()} == {
        "netlink privileges": ("fail", "run iacloud as root (sudo iacloud ...)"),
        "dnsmasq": ("fail", "apt-get install dnsmasq-base"),
        "nftables": ("warn", "apt-get install nftables"),
        "bridge netfilter": ("warn", checks["bridge netfilter"].fix),
        "security groups": ("ok", ""),
        "802.1Q VLAN": ("warn", checks["802.1Q VLAN"].fix),
    }
    assert "missing CAP_SYS_ADMIN" in checks["netlink privileges"].message
    assert "external.snat" in checks["nftables"].message
    assert "sysctl -w net.bridge.bridge-nf-call-iptables=0" in checks["bridge netfilter"].fix
    assert "host firewall" in checks["bridge netfilter"].message
    assert "segment = { vlan = ... } fail to create" in checks["802.1Q VLAN"].message
    assert "modprobe 8021q" in checks["802.1Q VLAN"].fix

    # and what makes each one pass
    (tmp_path / "nf").write_text("0\n")
    assert doctor.bridge_netfilter().status == "ok"
    groups = doctor.security_groups()
    assert groups.status == "warn" and "bridge-nf-call-iptables = 0" in groups.message
    assert "sysctl -w net.bridge.bridge-nf-call-iptables=1" in groups.fix
    # an nft (or kernel) that refuses the ruleset in check mode
    (tmp_path / "nf").write_text("1\n")
    fake = tmp_path / "nft"
    fake.write_text("#!/bin/sh\necho 'Error: Could not process rule: Protocol error' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(doctor, "find", lambda program: str(fake))
    refused = doctor.security_groups()
    assert refused.status == "fail" and "Protocol error" in refused.message
    assert "CONFIG_NF_CONNTRACK_ZONES" in refused.fix
    (tmp_path / "nf").unlink()
    assert doctor.bridge_netfilter().status == "ok"
    modules = tmp_path / "modules" / "6.1.0-test"
    modules.mkdir(parents=True)
    (modules / "modules.dep").write_text("kernel/net/8021q/8021q.ko: kernel/net/802/garp.ko\n")
    assert (doctor.vlan().status, doctor.vlan().message) == (
        "ok",
        "the 8021q module is installed (the kernel loads it on first use)",
    )
    (tmp_path / "vlan").mkdir()
    assert doctor.vlan().message == "802.1Q support is in the running kernel"
    monkeypatch.setattr(doctor, "effective_capabilities", lambda: (1 << 12) | (1 << 21))
    assert doctor.privileges().status == "ok"
