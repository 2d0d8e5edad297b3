"""Groups and memberships -> the text of iacloud's nftables ruleset (a pure function).

Two tables named `iacloud`, replaced together in one `nft -f` transaction:

- `table bridge iacloud`, bound to bridge ports (the NIC's tap or veth, by name): stateless
  anti-spoofing on the way in (only the NIC's MAC; ARP only for its own IP; IPv4 only from its
  own addresses, plus the DHCP client's 0.0.0.0 broadcast; no DHCP server replies; no other
  ethertype) and, on the way out, a guard dropping flooded frames not meant for the NIC (ARP
  and DHCP replies pass; unicast for its MAC goes on to the inet table).
- `table inet iacloud`, stateful: bridged IPv4 passes the inet hooks through br_netfilter,
  where conntrack sees it. A NIC is found there by MAC (`ether saddr` / `ether daddr`), which
  the bridge table has made trustworthy: a frame carrying a filtered NIC's MAC entered through
  that NIC's port. Per NIC: established/related allowed, invalid dropped, DHCP allowed, then its
  groups' rules, then drop. A NIC's egress rules end in `return` (so the destination NIC's
  ingress chain still runs), ingress rules in `accept`.

Conntrack zones: bridged IPv4 of every bridge with a filtered NIC is tracked in a zone of
that bridge's own (`zone`, set in the inet table's prerouting before conntrack runs), so two
networks with overlapping subnets never share a connection entry: a reply allowed on one
bridge cannot pass for one on another.

A group without egress rules allows all egress: Neutron gives every new group allow-all egress
rules, and Heat's OS::Neutron::SecurityGroup deletes them as soon as one egress rule is listed.
`remote_group` compiles to a named set of the group's members' addresses. Every group rule
carries the comment `<group id>:<index>`, which is how a read finds rules deleted by hand.

Every name and value in the text is validated here again (interface names, MACs, addresses,
group ids) or made from hex digests, so nothing else reaches nft.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from iacloud.secgroups.rules import Rule, check_group_id
from iacloud.site_hosts import HOST_NAME
from iacloud.validators import is_interface_name, is_unicast_mac

TABLE = "iacloud"
FAMILIES = ("bridge", "inet")
ANY = "0.0.0.0/0"


@dataclass(frozen=True)
class Group:
    id: str
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class Member:
    """One filtered NIC: the bridge port it sends through, its MAC and addresses, its groups."""

    bridge: str
    mac: str
    device: str
    ips: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    # the catalog host the NIC is on; None: this machine (not part of the key: a NIC that
    # moves keeps its chains' names)
    host: str | None = None

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.bridge}\0{self.mac}".encode()).hexdigest()[:12]


@dataclass
class Ruleset:
    text: str
    # per group and rule index: the chains that must hold that rule
    expected: dict[str, dict[int, set[str]]] = field(default_factory=dict)


def _check(member: Member) -> None:
    if not is_interface_name(member.bridge):
        raise ValueError(f"{member.bridge!r} is not an interface name")
    if not is_interface_name(member.device):
        raise ValueError(f"{member.device!r} is not an interface name")
    if not is_unicast_mac(member.mac):
        raise ValueError(f"{member.mac!r} is not a unicast MAC")
    for ip in member.ips:
        ipaddress.IPv4Address(ip)
    for g in member.groups:
        check_group_id(g)
    if member.host is not None and not HOST_NAME.fullmatch(member.host):
        raise ValueError(f"{member.host!r} is not a host name")


def zone(bridge: str) -> int:
    """The conntrack zone of a bridge's traffic: 1-65534, stable, from the bridge's name (two
    bridges sharing one, a 1 in 65534 chance per pair, share entries as all did before)."""
    return 1 + int(hashlib.sha256(bridge.encode()).hexdigest()[:8], 16) % 65534


def set_name(group: str) -> str:
    return "sg_" + check_group_id(group)[3:]


def _match(rule: Rule, group: str, ingress: bool) -> str:
    parts = ["meta nfproto ipv4"]
    if rule.protocol != "any":
        parts.append(f"meta l4proto {rule.protocol}")
    if rule.ports is not None:
        lo, hi = rule.ports
        parts.append(f"{rule.protocol} dport {lo}" + ("" if lo == hi else f"-{hi}"))
    side = "saddr" if ingress else "daddr"
    remote = rule.remote_group_of(group)
    if remote is not None:
        parts.append(f"ip {side} @{set_name(remote)}")
    elif rule.remote_cidr is not None and rule.remote_cidr != ANY:
        parts.append(f"ip {side} {rule.remote_cidr}")
    return " ".join(parts)


def _elements(values: Iterable[str]) -> str:
    return "{ " + ", ".join(values) + " }"


def by_host(members: Iterable[Member]) -> dict[str | None, list[Member]]:
    """The members of each host (None: this machine)."""
    out: dict[str | None, list[Member]] = {}
    for m in members:
        out.setdefault(m.host, []).append(m)
    return out


def compile_hosts(
    groups: Mapping[str, Group], members: Sequence[Member], hosts: Iterable[str | None] = ()
) -> dict[str | None, Ruleset]:
    """One ruleset per host: this machine's (None) always, every host with members, and each
    of `hosts` (where a table was applied before: an empty text removes it). Each host's
    chains are its own members'; the remote-group sets hold the members of every host, since
    a rule names a group wherever its members run."""
    split = by_host(members)
    out: dict[str | None, Ruleset] = {}
    for host in sorted({None, *split, *hosts}, key=lambda h: (h is not None, h or "")):
        out[host] = compile_ruleset(groups, split.get(host, []), everyone=members)
    return out


def compile_ruleset(
    groups: Mapping[str, Group],
    members: Sequence[Member],
    everyone: Sequence[Member] | None = None,
) -> Ruleset:
    """The whole ruleset of one host for its `members`; an empty text when none is filtered
    (the tables are then removed, see `nft.apply`). `everyone`: the members of all hosts,
    whose addresses fill the remote-group sets (default: `members`)."""
    members = sorted(members, key=lambda m: m.key)
    for m in members:
        _check(m)
    if not members:
        return Ruleset("")
    everyone = members if everyone is None else everyone
    for g in groups:
        check_group_id(g)
    expected: dict[str, dict[int, set[str]]] = {}
    # the sets: every group some rule names as remote, with its members' addresses
    remotes: set[str] = set()
    for m in members:
        for g in m.groups:
            for rule in groups.get(g, Group(g)).rules:
                r = rule.remote_group_of(g)
                if r is not None:
                    remotes.add(r)
    addresses: dict[str, set[str]] = {g: set() for g in remotes}
    for m in everyone:
        for g in m.groups:
            if g in addresses:
                addresses[g].update(m.ips)

    out: list[str] = []
    # declare and delete first, so the transaction replaces whatever version is there
    for fam in FAMILIES:
        out += [f"table {fam} {TABLE}", f"delete table {fam} {TABLE}"]

    out.append(f"table bridge {TABLE} {{")
    out.append("  chain prerouting {")
    out.append("    type filter hook prerouting priority -300; policy accept;")
    out.append(
        "    iifname vmap " + _elements(f'"{m.device}" : jump spoof_{m.key}' for m in members)
    )
    # a filtered NIC's MAC entering through any other port is a spoof as well (frames from the
    # NIC's own port ended in its spoof chain: accept or drop)
    out.append("    ether saddr " + _elements(m.mac for m in members) + " drop")
    out.append("  }")
    out.append("  chain forward {")
    out.append("    type filter hook forward priority -300; policy accept;")
    out.append(
        "    oifname vmap " + _elements(f'"{m.device}" : jump guard_{m.key}' for m in members)
    )
    out.append("  }")
    for m in members:
        ips = sorted(m.ips, key=ipaddress.IPv4Address)
        out.append(f"  chain spoof_{m.key} {{")
        out.append(f"    ether saddr != {m.mac} drop")
        out.append(f"    ether type arp arp saddr ether != {m.mac} drop")
        out.append("    ether type arp arp saddr ip != " + _elements(["0.0.0.0", *ips]) + " drop")
        out.append("    ether type arp accept")
        out.append(
            "    ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 "
            "udp sport 68 udp dport 67 accept"
        )
        out.append("    ether type ip udp sport 67 udp dport 68 drop")
        if ips:
            out.append("    ether type ip ip saddr " + _elements(ips) + " accept")
        out.append("    drop")
        out.append("  }")
        out.append(f"  chain guard_{m.key} {{")
        out.append("    ether type arp accept")
        out.append(f"    ether daddr {m.mac} return")
        out.append("    ether type ip udp sport 67 udp dport 68 accept")
        out.append("    drop")
        out.append("  }")
    out.append("}")

    out.append(f"table inet {TABLE} {{")
    for g in sorted(addresses):
        ips = sorted(addresses[g], key=ipaddress.IPv4Address)
        out.append(f"  set {set_name(g)} {{")
        out.append("    type ipv4_addr;")
        if ips:
            out.append("    elements = " + _elements(ips))
        out.append("  }")
    # bridged frames show the bridge as their input device in the inet hooks
    bridges = sorted({m.bridge for m in members})
    out.append("  chain prerouting {")
    out.append("    type filter hook prerouting priority -300; policy accept;")
    out.append("    ct zone set iifname map " + _elements(f'"{b}" : {zone(b)}' for b in bridges))
    out.append("  }")
    out.append("  chain forward {")
    out.append("    type filter hook forward priority 0; policy accept;")
    out.append("    ether saddr vmap " + _elements(f"{m.mac} : jump out_{m.key}" for m in members))
    out.append("    ether daddr vmap " + _elements(f"{m.mac} : jump in_{m.key}" for m in members))
    out.append("  }")
    for m in members:
        for direction, chain in (("egress", f"out_{m.key}"), ("ingress", f"in_{m.key}")):
            ingress = direction == "ingress"
            verdict = "accept" if ingress else "return"
            out.append(f"  chain {chain} {{")
            out.append(f"    ct state established,related {verdict}")
            out.append("    ct state invalid drop")
            if ingress:
                out.append("    udp sport 67 udp dport 68 accept")
            else:
                out.append("    udp sport 68 udp dport 67 return")
            for g in sorted(set(m.groups)):
                rules = [r for r in groups.get(g, Group(g)).rules if r.direction == direction]
                if not ingress and not rules and g in groups:
                    out.append(f'    meta nfproto ipv4 return comment "{g}:egress-default"')
                for i, rule in enumerate(groups.get(g, Group(g)).rules):
                    if rule.direction != direction:
                        continue
                    out.append(f'    {_match(rule, g, ingress)} {verdict} comment "{g}:{i}"')
                    expected.setdefault(g, {}).setdefault(i, set()).add(chain)
            out.append("    drop")
            out.append("  }")
    out.append("}")
    return Ruleset("\n".join(out) + "\n", expected)


def removal() -> str:
    """The text that removes both tables (each declared first, so a missing one is fine)."""
    return "".join(f"table {f} {TABLE}\ndelete table {f} {TABLE}\n" for f in FAMILIES)
