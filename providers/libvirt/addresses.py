"""A server's `addresses`: the IPv4 addresses its NICs really have, matched by MAC.

Sources, per NIC, the first that knows something:
1. the QEMU guest agent (what the guest has configured), when its channel is connected;
2. our test image's IACLOUD-READY line of the current boot (with the MAC of each interface);
3. the DHCP lease iacloud's own dnsmasq granted to the NIC's MAC (`iacloud.netfacts` finds the
   lease file by bridge): no guest cooperation needed;
4. for a NIC on a fixed port, the port's address (what the seed's network-config set
   statically, as Neutron reports a port's fixed IP).
Guest interface names (eth0, ens2, enp1s0) are never used: they differ by image and machine
type. Each list is sorted by address and free of duplicates, and lease expiry times are not
part of the value, so a renewed lease changes nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence

from iacloud import netfacts

from .domain_xml import Nic, NicRecord


def _sorted(ips: Sequence[str]) -> list[str]:
    return sorted(set(ips), key=ipaddress.IPv4Address)


def by_mac(
    nics: Sequence[Nic],
    records: Sequence[NicRecord],
    agent: Mapping[str, list[str]] | None,
    ready: Mapping[str, list[str]] | None,
    lease_of: Callable[[str, str], str | None],
) -> dict[str, list[str]]:
    """{mac: [ip, ...]} for every NIC (an empty list when nothing is known)."""
    ports = {r.mac: r.port for r in records if r.key == "port" and r.port}
    out: dict[str, list[str]] = {}
    for nic in nics:
        ips: list[str] = []
        if agent:
            ips = agent.get(nic.mac, [])
        if not ips and ready:
            ips = ready.get(nic.mac, [])
        if not ips:
            lease = lease_of(nic.bridge, nic.mac)
            ips = [lease] if lease else []
        if not ips and nic.mac in ports:
            bridge, mac, ip = str(ports[nic.mac]).split("/")
            if bridge == nic.bridge and mac == nic.mac:
                ips = [ip]
        out[nic.mac] = _sorted(ips)
    return out


class Leases:
    """Lease lookups of one read: each network's lease file is read at most once."""

    def __init__(self) -> None:
        self._by_bridge: dict[str, dict[str, str]] = {}

    def __call__(self, bridge: str, mac: str) -> str | None:
        if bridge not in self._by_bridge:
            facts = netfacts.read(bridge)
            self._by_bridge[bridge] = netfacts.leases(facts) if facts else {}
        return self._by_bridge[bridge].get(mac)


def by_network(
    nics: Sequence[Nic], ips: Mapping[str, list[str]], label: Callable[[str], str]
) -> dict[str, list[str]]:
    """{network label: sorted IPs}: the shape of the `addresses` attribute."""
    out: dict[str, list[str]] = {}
    for nic in nics:
        key = label(nic.bridge)
        out[key] = _sorted([*out.get(key, []), *ips.get(nic.mac, [])])
    return out
