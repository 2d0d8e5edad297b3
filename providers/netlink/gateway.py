"""A router's gateway leg on an external network (Neutron's external gateway), with SNAT.

`external = { network = ID, ip = IP, snat = true }` on a router gives it:
- a veth pair whose bridge end (`iacg…`, tagged like the router's legs) is a port of the
  external network's bridge and whose router end holds `ip` with that network's prefix;
- a default route inside the router's namespace via the external network's gateway (the
  outside router's address; on an external network iacloud never holds the gateway itself);
- with snat (the default), an nftables rule in the router's namespace that rewrites the source
  of packets from the router's internal networks leaving through that leg to `ip` (`snat`).

Only the router's namespace is changed: the host's routes, forwarding and ruleset are not.
Where that external network leads is the user's choice; iacloud's tests only point it at a
bridge and a namespace of their own.

`ip` and `snat` cannot be seen on the leg without entering the namespace, so a read takes
them from the router's record and checks the SNAT rule with one `nft` call per router that
has one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from ipaddress import IPv4Address
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from iacloud.errors import ProviderError
from iacloud.providers.netlink import links, names, netns, snat
from iacloud.providers.netlink.links import Link, LinkTable
from iacloud.providers.netlink.subnet import SubnetPlan, address_problem, ipv4


class ExternalGateway(BaseModel):
    """The `external` table of a router."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    network: str  # the external network's id (its bridge)
    ip: str  # the router's address on it, and the source of SNATed packets
    snat: bool = True

    @field_validator("network")
    @classmethod
    def _network(cls, v: str) -> str:
        return names.validate_ifname(v)

    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str) -> str:
        return ipv4(v)


def problems(
    where: str,
    plan: SubnetPlan,
    inputs: Mapping[str, Any],
    ip: IPv4Address | None,
    internal: Mapping[str, SubnetPlan],
) -> list[tuple[str, str]]:
    """(field, message) for what is wrong with joining the network described by `where` ("network
    'ext'"), `plan` and its `inputs` as the gateway network at `ip`, next to the `internal`
    networks (label -> plan). The same rules at load time, plan time and apply time."""
    out = []
    if not inputs.get("external"):
        out.append(
            ("external.network", f"{where} is not an external network (set external = true on it)")
        )
    if ip is not None:
        problem = address_problem(plan, ip, where)
        if problem:
            out.append(("external.ip", problem))
        elif inputs.get("dhcp", True) and plan.in_dhcp_range(ip):
            out.append(
                (
                    "external.ip",
                    f"{ip} is inside the DHCP range of {where} ({plan.range_start} to "
                    f"{plan.range_end}): its DHCP server could hand it to another host",
                )
            )
    for label, other in internal.items():
        if other.cidr.overlaps(plan.cidr):
            out.append(
                (
                    "external.network",
                    f"{where} ({plan.cidr}) overlaps {label} ({other.cidr}), which the router "
                    f"also joins",
                )
            )
    return out


def find_leg(table: LinkTable, ns: str, tag: str) -> tuple[str, Link] | None:
    """(bridge, bridge end) of the router's gateway leg, found by tag and name."""
    for link in table.by_alias.get(tag, []):
        bridge = table.name_of(link.master)
        if bridge and link.kind == "veth" and link.name == names.router_gateway_leg(ns, bridge)[0]:
            return bridge, link
    return None


def expected_rule(
    ns: str, external: ExternalGateway, internal: Mapping[str, SubnetPlan]
) -> snat.SnatRule:
    inner = names.router_gateway_leg(ns, external.network)[1]
    sources = frozenset(p.cidr for p in internal.values())
    return snat.SnatRule(inner, sources, external.ip)


def observe(
    table: LinkTable,
    ns: str,
    tag: str,
    recorded: Mapping[str, Any] | None,
    internal: Mapping[str, SubnetPlan],
) -> dict[str, Any] | None:
    """The router's `external` input as it is: None without a gateway leg; else the leg's
    network, the recorded address, and whether the SNAT rule is in place."""
    found = find_leg(table, ns, tag)
    if found is None:
        return None
    bridge = found[0]
    if not recorded or recorded.get("network") != bridge:
        return {"network": bridge, "ip": None, "snat": False}
    external = ExternalGateway.model_validate(recorded)
    in_place = False
    if external.snat:
        with contextlib.suppress(ProviderError):  # no nft: observed as off, apply says why
            in_place = expected_rule(ns, external, internal).same_as(snat.read(ns))
    return {"network": bridge, "ip": external.ip, "snat": in_place}


def converge(
    ns: str,
    tag: str,
    external: ExternalGateway | None,
    plan: SubnetPlan | None,
    internal: Mapping[str, SubnetPlan],
    had_snat: bool,
) -> None:
    """Make the gateway leg, its address, the default route and the SNAT rule match
    `external` (None: no gateway leg). `plan`: the external network's subnet. had_snat: the
    router's record had a SNAT rule (then a router without one now has a table to drop)."""
    with IPRoute() as ipr:
        table = LinkTable.dump()
        current = find_leg(table, ns, tag)
        if current is not None and (external is None or current[0] != external.network):
            links.delete(ipr, current[1].name)  # its router end, address and route go with it
            current = None
        if external is None:
            if had_snat:
                snat.remove(ns)
            return
        assert plan is not None
        host, inner = names.router_gateway_leg(ns, external.network)
        bridge = table.bridge(external.network)
        if bridge is None:
            raise ProviderError(f"network {external.network} does not exist (no such bridge)")
        if current is None:
            links.delete(ipr, host)
            try:
                ipr.link("add", ifname=host, kind="veth", peer={"ifname": inner, "net_ns_fd": ns})
                index = links.index_of(ipr, host)
                ipr.link("set", index=index, ifalias=tag)
                links.disable_ipv6(host)
                ipr.link("set", index=index, mtu=bridge.mtu)
                ipr.link("set", index=index, master=bridge.index, state="up")
            except NetlinkError as exc:
                raise links.netlink_error(
                    f"cannot join router {ns} to external network {external.network}", exc
                ) from exc
    with netns.socket(ns) as nsr:
        index = links.index_of(nsr, inner)
        if index is None:
            raise ProviderError(f"{inner} is missing in {ns}")
        try:
            links.ensure_address(nsr, index, external.ip, plan.prefixlen, bridge.mtu)
            nsr.route("replace", dst="0.0.0.0/0", gateway=str(plan.gateway), oif=index)
        except NetlinkError as exc:
            raise links.netlink_error(f"cannot address {inner} in {ns}", exc) from exc
    if external.snat:
        snat.apply(ns, expected_rule(ns, external, internal))
    elif had_snat:
        snat.remove(ns)
