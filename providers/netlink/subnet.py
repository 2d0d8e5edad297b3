"""Address arithmetic of one IPv4 subnet: the defaults a network fills in and the checks on them.

Layout of a subnet (usable hosts h1 .. hn, n >= 6 when DHCP is on, i.e. at most a /29):
- gateway: h1 unless given. Nobody holds it unless a router joins the network.
- DHCP server: hn (the last usable address), or hn-1 when the gateway is hn. It lives on the
  namespace end of the DHCP veth; ports and DHCP ranges may not use it.
- default DHCP range: from the 10th address (the 2nd on subnets smaller than /26) to the
  address below the server, cut so it never contains the gateway.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

MIN_DHCP_PREFIX = 29  # smaller subnets have no room for gateway, server and a client


def ipv4(value: str) -> str:
    """A canonical dotted IPv4 address, or ValueError saying what is wrong."""
    try:
        return str(IPv4Address(value))
    except (ipaddress.AddressValueError, ValueError):
        raise ValueError(f"'{value}' is not an IPv4 address") from None


def ipv4_network(value: str) -> str:
    """A canonical IPv4 CIDR: host bits must be zero, prefix between /8 and /30."""
    try:
        net = IPv4Network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"'{value}' is not an IPv4 CIDR: {exc}") from None
    if "/" not in str(value):
        raise ValueError(f"'{value}' has no prefix length (write e.g. '{net.network_address}/24')")
    if not 8 <= net.prefixlen <= 30:
        raise ValueError(f"prefix length /{net.prefixlen} of '{value}' is outside /8 .. /30")
    return str(net)


@dataclass(frozen=True)
class SubnetPlan:
    """A network's addresses, defaults filled in."""

    cidr: IPv4Network
    gateway: IPv4Address
    server: IPv4Address | None  # None: too small for DHCP
    range_start: IPv4Address | None
    range_end: IPv4Address | None

    @property
    def netmask(self) -> str:
        return str(self.cidr.netmask)

    @property
    def prefixlen(self) -> int:
        return self.cidr.prefixlen

    def is_host(self, ip: IPv4Address) -> bool:
        return ip in self.cidr and ip not in (
            self.cidr.network_address,
            self.cidr.broadcast_address,
        )

    def in_dhcp_range(self, ip: IPv4Address) -> bool:
        if self.range_start is None or self.range_end is None:
            return False
        return self.range_start <= ip <= self.range_end

    def reserved(self) -> dict[IPv4Address, str]:
        """Addresses no port may take, with what holds them."""
        out = {self.gateway: "the gateway"}
        if self.server is not None:
            out[self.server] = "the DHCP server"
        return out


def plan_subnet(
    cidr: str,
    gateway: str | None = None,
    dhcp_range: tuple[str, str] | None = None,
) -> SubnetPlan:
    """Fill in defaults and check the result; ValueError names the first problem."""
    net = IPv4Network(cidr)
    first = net.network_address + 1
    last = net.broadcast_address - 1
    gw = IPv4Address(gateway) if gateway else first
    if gw not in net or gw in (net.network_address, net.broadcast_address):
        raise ValueError(f"gateway {gw} is not a host address of {net}")

    if net.prefixlen > MIN_DHCP_PREFIX:
        server = start = end = None
    else:
        server = last if gw != last else last - 1
        if dhcp_range is None:
            start = net.network_address + (10 if net.prefixlen <= 26 else 2)
            end = server - 1
            if start <= gw <= end:  # keep the larger side of the gateway
                if int(gw) - int(start) >= int(end) - int(gw):
                    end = gw - 1
                else:
                    start = gw + 1
        else:
            start, end = IPv4Address(dhcp_range[0]), IPv4Address(dhcp_range[1])
            for name, ip in (("start", start), ("end", end)):
                if ip not in net or ip in (net.network_address, net.broadcast_address):
                    raise ValueError(f"dhcp_range {name} {ip} is not a host address of {net}")
            if start > end:
                raise ValueError(f"dhcp_range start {start} is above its end {end}")
            for ip, what in ((gw, "the gateway"), (server, "the DHCP server")):
                if start <= ip <= end:
                    raise ValueError(
                        f"dhcp_range {start}-{end} contains {ip}, {what} "
                        f"(the DHCP server takes the last usable address, or the one below "
                        f"it when that is the gateway)"
                    )
    return SubnetPlan(net, gw, server, start, end)


def address_problem(plan: SubnetPlan, ip: IPv4Address, where: str) -> str | None:
    """Why a fixed address (a port's, a router's external leg's) cannot be `ip` on the subnet
    of `where` ("network lan"), or None. Used at load time and against the records alike."""
    cidr = plan.cidr
    if ip not in cidr:
        return f"{ip} is outside {where} ({cidr})"
    if ip == cidr.network_address:
        return f"{ip} is the network address of {where} ({cidr}), not a host address"
    if ip == cidr.broadcast_address:
        return f"{ip} is the broadcast address of {where} ({cidr}), not a host address"
    held = plan.reserved().get(ip)
    if held:
        return f"{ip} is {held} of {where} ({cidr})"
    return None
