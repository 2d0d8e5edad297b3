"""A network's DNS server (`dns_domain`) against the real kernel and dnsmasq (needs root):
names registered in its hosts directory answer from a namespace on the network and vanish
with their file, without a restart; a DNS server that died reads as `dns_domain` unset and an
update starts it again; turning `dns_domain` off stops it. Addresses in 198.18.0.0/15; the
`lab` fixture of test_netlink_provider removes everything, failed test or not."""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest
from test_netlink_provider import BUSYBOX, Lab, lab, run_in  # noqa: F401 (lab: a fixture)

from iacloud import netfacts, netnames
from iacloud.providers.netlink import dnsmasq
from iacloud.providers.netlink.network_inputs import NetworkInputs

pytestmark = [
    pytest.mark.netlink,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not shutil.which("dnsmasq"), reason="needs dnsmasq"),
    pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs busybox-static"),
]


def lookup(ns: str, name: str, server: str) -> str | None:
    out = run_in(ns, BUSYBOX, "nslookup", name, server, timeout=10).stdout.splitlines()
    for i, line in enumerate(out):
        if line.startswith("Name:") and line.split()[-1] == name:
            following = [x for x in out[i + 1 :] if x.startswith("Address:")]
            return following[0].split()[-1] if following else None
    return None


def test_dns_domain_serves_registered_names(lab: Lab) -> None:  # noqa: F811 (the fixture)
    cidr = "198.18.213.0/24"
    net = lab.create_network("lan", cidr=cidr, dns_domain="fd.internal")
    assert net.inputs["dns_domain"] == "fd.internal"
    server = net.attributes["dhcp_server"]
    facts = netfacts.read(net.id)
    assert facts is not None and facts.dns_domain == "fd.internal"
    client = lab.client(net.id, "198.18.213.200/24")

    owner = f"iacloud:{lab.stack.id}:web[0]"
    assert netnames.register(net.id, "52:54:00:fd:00:01", "198.18.213.23", "web-0", owner)
    deadline = time.monotonic() + 5  # inotify: at once, but give it a moment on a busy host
    while lookup(client, "web-0.fd.internal", server) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert lookup(client, "web-0.fd.internal", server) == "198.18.213.23"
    assert lookup(client, "web-1.fd.internal", server) is None
    files = lab.provider.state.network(net.id)
    dns_pid = dnsmasq.running(files.dns())[0]
    dhcp_pid = dnsmasq.running(files)[0]

    netnames.unregister(net.id, "52:54:00:fd:00:01", owner)
    time.sleep(0.5)
    assert lookup(client, "web-0.fd.internal", server) is None
    assert dnsmasq.running(files.dns())[0] == dns_pid and dnsmasq.running(files)[0] == dhcp_pid

    # killed by hand: read as dns_domain unset (drift); an update starts it again
    os.kill(dns_pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while dnsmasq.running(files.dns()) and time.monotonic() < deadline:
        time.sleep(0.01)
    seen = lab.read_network("lan", net.id)
    assert seen.inputs["dns_domain"] is None and seen.inputs["dhcp"] is True
    wanted = NetworkInputs(cidr=cidr, dns_domain="fd.internal")
    fixed = lab.network.update("lan", seen, wanted, frozenset({"dns_domain"}))
    assert fixed.inputs == net.inputs
    assert dnsmasq.running(files)[0] == dhcp_pid  # DHCP untouched

    # off: the DNS server stops, DHCP goes on
    off = lab.network.update("lan", fixed, NetworkInputs(cidr=cidr), frozenset({"dns_domain"}))
    assert off.inputs["dns_domain"] is None and dnsmasq.running(files.dns()) is None
    assert off.inputs["dhcp"] is True

    lab.network.delete("lan", off)
    assert not netnames.hosts_dir(net.id).exists()
