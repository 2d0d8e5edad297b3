"""Dropping tracked connections that the new rules no longer allow (through ctnetlink).

Entries are matched to NICs by zone and address: each bridge with filtered NICs has its own
conntrack zone (`compiler.zone`), so a NIC's address on one network is not confused with the
same address on another.

A stateful filter lets every packet of an established connection pass, so a rule removed
would not stop a connection it once allowed. After a ruleset change, each IPv4 entry of the
conntrack table whose original direction starts or ends at a filtered NIC's address is checked
against that NIC's rules as they are now (`allows`, the compiler's meaning in Python); an
entry they no longer allow is deleted, and its next packet is judged as new. Entries of
NICs that are not filtered are left alone. pyroute2 (already a dependency) speaks ctnetlink,
so no conntrack tool is needed here; a catalog host's table is read and pruned with its
`conntrack` tool over SSH (`remote`), judged by the same `stale`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from iacloud.secgroups.compiler import Group, Member, zone
from iacloud.secgroups.rules import Rule

PROTOCOLS = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp", socket.IPPROTO_ICMP: "icmp"}


def _rule_allows(
    rule: Rule, group: str, remote: str, proto: str, dport: int | None, sets: Mapping[str, set[str]]
) -> bool:
    if rule.protocol != "any" and rule.protocol != proto:
        return False
    if rule.ports is not None and (dport is None or not rule.ports[0] <= dport <= rule.ports[1]):
        return False
    remote_group = rule.remote_group_of(group)
    if remote_group is not None:
        return remote in sets.get(remote_group, set())
    if rule.remote_cidr is not None:
        return ipaddress.IPv4Address(remote) in ipaddress.IPv4Network(rule.remote_cidr)
    return True


def allows(
    member: Member,
    groups: Mapping[str, Group],
    direction: str,
    remote: str,
    proto: str,
    dport: int | None,
    sets: Mapping[str, set[str]],
) -> bool:
    """Whether `member`'s rules allow a new connection (the compiled chains' meaning)."""
    if direction == "egress" and proto == "udp" and dport == 67:
        return True
    for g in member.groups:
        group = groups.get(g)
        if group is None:
            continue
        rules = [r for r in group.rules if r.direction == direction]
        if direction == "egress" and not rules:
            return True  # Neutron's default egress rules
        if any(_rule_allows(r, g, remote, proto, dport, sets) for r in rules):
            return True
    return False


def member_sets(members: Sequence[Member]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for m in members:
        for g in m.groups:
            out.setdefault(g, set()).update(m.ips)
    return out


@dataclass(frozen=True)
class Entry:
    """A tracked connection's original direction, as far as the rules judge it."""

    zone: int
    proto: str  # tcp, udp, icmp or other
    saddr: str
    daddr: str
    dport: int | None


def stale(
    entries: Iterable[Entry],
    groups: Mapping[str, Group],
    members: Sequence[Member],
    everyone: Sequence[Member] | None = None,
) -> list[Entry]:
    """The entries of `members`' NICs that their rules no longer allow. `everyone`: the
    members of all hosts, whose addresses fill the remote-group sets (default: `members`)."""
    by_ip: dict[tuple[int, str], list[Member]] = {}
    for m in members:
        for ip in m.ips:
            by_ip.setdefault((zone(m.bridge), ip), []).append(m)
    sets = member_sets(members if everyone is None else everyone)
    out = []
    for e in entries:
        verdicts = []
        for m in by_ip.get((e.zone, e.saddr), []):
            verdicts.append(allows(m, groups, "egress", e.daddr, e.proto, e.dport, sets))
        for m in by_ip.get((e.zone, e.daddr), []):
            verdicts.append(allows(m, groups, "ingress", e.saddr, e.proto, e.dport, sets))
        if verdicts and not all(verdicts):
            out.append(e)
    return out


def prune(
    groups: Mapping[str, Group],
    members: Sequence[Member],
    everyone: Sequence[Member] | None = None,
) -> int:
    """Delete this machine's entries the rules no longer allow; the number deleted."""
    if not any(m.ips for m in members):
        return 0
    from pyroute2 import Conntrack

    deleted = 0
    with Conntrack() as ct:
        dumped = []
        for entry in list(ct.dump_entries()):
            t = entry.tuple_orig
            proto = PROTOCOLS.get(t.proto, "other")
            dport = t.dport if proto in ("tcp", "udp") else None
            dumped.append((Entry(entry.zone or 0, proto, t.saddr, t.daddr, dport), t))
        doomed = set(stale([e for e, _ in dumped], groups, members, everyone))
        for e, t in dumped:
            if e in doomed:
                with contextlib.suppress(Exception):  # gone meanwhile
                    ct.entry("del", tuple_orig=t, zone=e.zone or None)
                    deleted += 1
    return deleted
