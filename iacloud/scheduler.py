"""Placement of servers on hosts, Nova's filter-and-weigh: filters drop the hosts that cannot
take a server, weighers rank the rest, and every decision carries the reasons a plan shows.

Pure: it sees hosts as numbers (capacity, what is placed, labels, whether they answer) and
servers as requests, and touches nothing. The planner feeds it what the providers read from
the hosts and records the result in state, so a placement is made once and kept.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum


class GroupPolicy(str, Enum):
    """A server group's policy (Nova's names)."""

    AFFINITY = "affinity"
    ANTI_AFFINITY = "anti-affinity"
    SOFT_AFFINITY = "soft-affinity"
    SOFT_ANTI_AFFINITY = "soft-anti-affinity"


@dataclass(frozen=True)
class Ratios:
    """Allocation ratios and reservations; the defaults are Nova's initial ones."""

    cpu: float = 4.0
    ram: float = 1.0
    disk: float = 1.0
    reserved_memory_mib: int = 512
    reserved_vcpus: int = 0
    reserved_disk_gib: int = 0


@dataclass(frozen=True)
class Host:
    """A host as the scheduler sees it: real resources, what is placed there, labels."""

    name: str
    vcpus: int
    memory_mib: int
    disk_gib: int | None  # None: not known yet (its pool is made on first use), not filtered
    up: bool = True
    down_reason: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    ratios: Ratios = Ratios()
    used_vcpus: int = 0
    used_memory_mib: int = 0
    used_disk_gib: int = 0

    @property
    def free_vcpus(self) -> float:
        return (self.vcpus - self.ratios.reserved_vcpus) * self.ratios.cpu - self.used_vcpus

    @property
    def free_memory_mib(self) -> float:
        usable = self.memory_mib * self.ratios.ram - self.ratios.reserved_memory_mib
        return usable - self.used_memory_mib

    @property
    def free_disk_gib(self) -> float:
        if self.disk_gib is None:
            return math.inf
        usable = (self.disk_gib - self.ratios.reserved_disk_gib) * self.ratios.disk
        return usable - self.used_disk_gib

    def taking(self, req: Request) -> Host:
        return replace(
            self,
            used_vcpus=self.used_vcpus + req.vcpus,
            used_memory_mib=self.used_memory_mib + req.memory_mib,
            used_disk_gib=self.used_disk_gib + req.disk_gib,
        )


@dataclass(frozen=True)
class Group:
    """A server group: its policy and the hosts its placed members are on, by member."""

    name: str
    policy: GroupPolicy
    members: Mapping[str, str] = field(default_factory=dict)  # server address -> host


@dataclass(frozen=True)
class Request:
    """One server to place."""

    address: str
    vcpus: int
    memory_mib: int
    disk_gib: int = 0
    host: str | None = None  # the stack names the host: only that one is considered
    labels: Mapping[str, str] = field(default_factory=dict)  # e.g. {"zone": "a"}
    group: str | None = None


@dataclass(frozen=True)
class Placement:
    address: str
    host: str
    why: str  # "h2: most free RAM (3.5 GiB); h1 excluded: anti-affinity with web[0]"


class NoValidHost(Exception):
    """No host can take the server; the message says what each host lacked."""

    def __init__(self, address: str, excluded: Mapping[str, str]) -> None:
        self.address = address
        self.excluded = dict(excluded)
        lacks = "; ".join(f"{h}: {why}" for h, why in sorted(excluded.items())) or "no hosts"
        super().__init__(f"no host can take {address}: {lacks}")


def _gib(mib: float) -> str:
    return f"{mib / 1024:.1f} GiB"


def _group_exclusion(host: Host, req: Request, group: Group | None) -> str | None:
    if group is None:
        return None
    placed = {a: h for a, h in group.members.items() if a != req.address}
    if group.policy is GroupPolicy.ANTI_AFFINITY:
        clash = sorted(a for a, h in placed.items() if h == host.name)
        if clash:
            return f"anti-affinity with {', '.join(clash)} (group {group.name})"
    if group.policy is GroupPolicy.AFFINITY and placed:
        there = sorted(set(placed.values()))
        if host.name not in there:
            return f"affinity: group {group.name} is on {', '.join(there)}"
    return None


def exclusion(host: Host, req: Request, group: Group | None = None) -> str | None:
    """Why `host` cannot take `req` (the first filter that fails), or None if it can."""
    if req.host is not None and host.name != req.host:
        return f"the server asks for host {req.host}"
    if not host.up:
        return f"down ({host.down_reason})" if host.down_reason else "down"
    for key, want in sorted(req.labels.items()):
        have = host.labels.get(key)
        if have != want:
            return f"{key} is {have!r}, not {want!r}" if have is not None else f"no {key} label"
    if host.free_memory_mib < req.memory_mib:
        return f"{_gib(max(host.free_memory_mib, 0))} RAM free, needs {_gib(req.memory_mib)}"
    if host.free_vcpus < req.vcpus:
        return f"{max(host.free_vcpus, 0):g} vCPUs free, needs {req.vcpus}"
    if host.free_disk_gib < req.disk_gib:
        return f"{max(host.free_disk_gib, 0):g} GiB disk free, needs {req.disk_gib}"
    return _group_exclusion(host, req, group)


def _weights(
    hosts: Sequence[Host], req: Request, group: Group | None, ram_multiplier: float
) -> dict[str, float]:
    """Nova's normalized weighing: each weigher maps its raw values onto 0..1 across the
    candidates, times its multiplier, and the sums rank the hosts."""

    def normalized(raw: Mapping[str, float]) -> dict[str, float]:
        lo, hi = min(raw.values()), max(raw.values())
        span = hi - lo
        return {h: 0.0 if span == 0 else (v - lo) / span for h, v in raw.items()}

    total = {h.name: 0.0 for h in hosts}
    for name, w in normalized({h.name: h.free_memory_mib for h in hosts}).items():
        total[name] += ram_multiplier * w
    if group is not None and group.policy in (
        GroupPolicy.SOFT_ANTI_AFFINITY,
        GroupPolicy.SOFT_AFFINITY,
    ):
        members = [h for a, h in group.members.items() if a != req.address]
        count = {h.name: float(members.count(h.name)) for h in hosts}
        sign = -1.0 if group.policy is GroupPolicy.SOFT_ANTI_AFFINITY else 1.0
        for name, w in normalized(count).items():
            total[name] += sign * w
    return total


def place_one(
    hosts: Sequence[Host],
    req: Request,
    group: Group | None = None,
    ram_multiplier: float = 1.0,
) -> Placement:
    """The best host for `req`: filtered, weighed, ties broken by host name."""
    if not math.isfinite(ram_multiplier):
        raise ValueError("ram_multiplier must be a finite number")
    excluded: dict[str, str] = {}
    fit: list[Host] = []
    for host in hosts:
        why = exclusion(host, req, group)
        if why is None:
            fit.append(host)
        else:
            excluded[host.name] = why
    if not fit:
        raise NoValidHost(req.address, excluded)
    weights = _weights(fit, req, group, ram_multiplier)
    best = min(fit, key=lambda h: (-weights[h.name], h.name))
    if len(fit) == 1:
        chosen = "the only host that fits"
    elif ram_multiplier >= 0:
        chosen = f"most free RAM ({_gib(best.free_memory_mib)})"
    else:
        chosen = f"least free RAM that fits ({_gib(best.free_memory_mib)}), stacking"
    if req.host is not None:
        chosen = "named by the server"
    skipped = [f"{h} excluded: {w}" for h, w in sorted(excluded.items()) if req.host is None]
    return Placement(req.address, best.name, "; ".join([f"{best.name}: {chosen}", *skipped]))


def place_all(
    hosts: Iterable[Host],
    requests: Iterable[Request],
    groups: Mapping[str, Group] | None = None,
    ram_multiplier: float = 1.0,
) -> list[Placement]:
    """Place servers one after the other in the order given (the planner passes them sorted
    by address, so a plan is reproducible); each placement uses up its host's capacity and
    joins its group before the next is placed. NoValidHost for the first that fits nowhere."""
    by_name = {h.name: h for h in hosts}
    groups = dict(groups or {})
    placed: list[Placement] = []
    for req in requests:
        group = groups.get(req.group) if req.group is not None else None
        if req.group is not None and group is None:
            raise ValueError(f"{req.address}: unknown server group {req.group!r}")
        p = place_one(list(by_name.values()), req, group, ram_multiplier)
        by_name[p.host] = by_name[p.host].taking(req)
        if group is not None:
            groups[group.name] = replace(group, members={**group.members, req.address: p.host})
        placed.append(p)
    return placed
