"""Placement at plan time (issue #16): which site host each server runs on, decided once and
recorded in state through its `host` input, and the hosts that follow from it.

Before the planner diffs anything, `place` fills in `host` on every resource whose type is
"placed" (servers): the host the stack names, else the one state recorded (a placement is
kept until the stack names another host, which is a live migration), else the scheduler's
choice (`iacloud.scheduler`), with the hosts read in parallel only when something must be
placed. Types that are "follows" (volumes, volume snapshots) take the host of the placed
resource that refers to them, or else of the "follows" resource they refer to (a snapshot its
volume's, a volume made from a snapshot the snapshot's); types that are "spans" (networks)
get the hosts of every placed resource that refers to them, directly or through a "via"
resource (a port: a server on h2 taking a port of a network makes the network span h2).
Without a [hosts] table in the site catalog nothing is placed and a stack that names a host is
an error. The reasons the scheduler gives go into the plan (`annotate`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from iacloud import expressions, scheduler
from iacloud.config import ResourceConfig, StackConfig
from iacloud.errors import Diagnostic, UserError
from iacloud.plan import Plan, Reason, ReasonCode
from iacloud.provider import Registry
from iacloud.state.model import Snapshot

PLACED, FOLLOWS, SPANS, VIA = "placed", "follows", "spans", "via"
GROUP_TYPE = "server_group"
GiB_MIB = 1024


@dataclass(frozen=True)
class Placed:
    """The stack with hosts filled in, and why each newly placed server went where it did."""

    config: StackConfig
    why: dict[str, str]


def _referenced(value: Any) -> set[str]:
    """The addresses of the resources an input value refers to."""
    out: set[str] = set()
    for node in expressions.walk(value):
        if isinstance(node, (expressions.GetResource, expressions.GetAttr)):
            out.add(node.address)
    return out


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


class _Pass:
    def __init__(
        self,
        config: StackConfig,
        snapshot: Snapshot,
        registry: Registry,
        hosts: Sequence[str],
    ) -> None:
        self.config = config
        self.snapshot = snapshot
        self.hosts = list(hosts)
        self.kind = {
            a: getattr(registry.types.get(rc.type), "placement", None)
            for a, rc in config.resources.items()
        }
        self.problems: list[Diagnostic] = []

    def problem(self, address: str, field: str, message: str) -> None:
        self.problems.append(
            Diagnostic(
                message, file=str(self.config.file), address=f"resources.{address}", field=field
            )
        )

    def named(self, address: str) -> str | None:
        """The host the stack names for `address`, checked against the catalog."""
        value = self.config.resources[address].properties.get("host")
        if value is None:
            return None
        if not isinstance(value, str):
            self.problem(
                address, "host", "must be a host name of the site catalog, not a reference"
            )
            return None
        if not self.hosts:
            self.problem(
                address,
                "host",
                f"names host {value!r}, but the site catalog has no [hosts] table: add the "
                "host there (README: Many hosts) or leave `host` out",
            )
            return None
        if value not in self.hosts:
            self.problem(
                address,
                "host",
                f"unknown host {value!r}; the site catalog's hosts: {', '.join(self.hosts)}",
            )
            return None
        return value

    def recorded(self, address: str) -> str | None:
        rs = self.snapshot.resources.get(address)
        host = rs.inputs.get("host") if rs is not None else None
        return host if isinstance(host, str) and host in self.hosts else None

    def on_default_host(self, address: str) -> bool:
        """Whether state has it on the provider's own libvirtd (made before the site had
        [hosts]): it stays there until the stack names a host."""
        rs = self.snapshot.resources.get(address)
        return rs is not None and rs.inputs.get("host") is None

    def group_of(self, address: str) -> str | None:
        value = self.config.resources[address].properties.get("server_group")
        if value is None:
            return None
        refs = _referenced(value)
        resources = self.config.resources
        groups = [a for a in refs if a in resources and resources[a].type == GROUP_TYPE]
        if len(groups) != 1:
            self.problem(
                address,
                "server_group",
                'must refer to one server_group resource of this stack: { get_resource = "NAME" }',
            )
            return None
        return groups[0]

    def policy(self, group: str) -> scheduler.GroupPolicy:
        value = self.config.resources[group].properties.get("policy", "anti-affinity")
        try:
            return scheduler.GroupPolicy(value)
        except ValueError:  # the type's own validation reports it with the allowed values
            return scheduler.GroupPolicy.ANTI_AFFINITY

    def request(self, address: str, group: str | None) -> scheduler.Request:
        props = self.config.resources[address].properties
        return scheduler.Request(
            address=address,
            vcpus=_int(props.get("vcpus"), 1),
            memory_mib=_int(props.get("memory_mib"), 256),
            disk_gib=_int(props.get("root_gib"), 0),
            group=group,
        )


def place(
    config: StackConfig,
    snapshot: Snapshot,
    registry: Registry,
    hosts: Sequence[str],
    read_hosts: Callable[[], Sequence[scheduler.Host]],
    ram_multiplier: float = 1.0,
) -> Placed:
    """Fill in `host`/`hosts` (see the module docstring). `hosts`: the catalog's host names
    (empty: no [hosts] table); `read_hosts` is called at most once, only when a server needs
    the scheduler. UserError naming file, resource and field for every problem."""
    p = _Pass(config, snapshot, registry, hosts)
    servers = [a for a, k in p.kind.items() if k == PLACED]
    decided: dict[str, str] = {}
    for address in servers:
        host = p.named(address) or p.recorded(address)
        if host is not None:
            decided[address] = host
    for address, kind in p.kind.items():
        if kind == FOLLOWS:
            p.named(address)
    if not hosts:
        if p.problems:
            raise UserError(p.problems)
        return Placed(config, {})
    member_of = {a: p.group_of(a) for a in servers}
    if p.problems:
        raise UserError(p.problems)
    groups = {
        g: scheduler.Group(
            g,
            p.policy(g),
            {a: decided[a] for a, grp in member_of.items() if grp == g and a in decided},
        )
        for g in sorted({g for g in member_of.values() if g is not None})
    }
    kept = {a for a in servers if a not in decided and p.on_default_host(a)}
    need = sorted(a for a in servers if a not in decided and a not in kept)
    why: dict[str, str] = {}
    if need:
        requests = [p.request(a, member_of[a]) for a in need]
        try:
            placed = scheduler.place_all(read_hosts(), requests, groups, ram_multiplier)
        except scheduler.NoValidHost as exc:
            raise UserError(
                [
                    Diagnostic(
                        str(exc),
                        file=str(config.file),
                        address=f"resources.{exc.address}",
                        field="host",
                    )
                ]
            ) from None
        for pl in placed:
            decided[pl.address] = pl.host
            why[pl.address] = pl.why
    resources = dict(config.resources)
    for address in servers:
        if address in decided:
            resources[address] = _with(resources[address], "host", decided[address])
    _follow(resources, p.kind, decided)
    _share_storage_hosts(resources, p.kind, snapshot, str(config.file))
    return Placed(replace(config, resources=resources), why)


def _with(rc: ResourceConfig, field: str, value: Any) -> ResourceConfig:
    if rc.properties.get(field) == value:
        return rc
    return replace(rc, properties={**rc.properties, field: value})


def _follow(
    resources: dict[str, ResourceConfig], kind: Mapping[str, str | None], decided: Mapping[str, str]
) -> None:
    """Hosts of the "follows" and "spans" resources, from the placed ones referring to them."""
    users: dict[str, set[str]] = {}
    for server, host in decided.items():
        refs = _referenced(resources[server].properties)
        for ref in list(refs):
            if kind.get(ref) == VIA:
                refs |= _referenced(resources[ref].properties)
        for ref in refs:
            users.setdefault(ref, set()).add(host)
    for address, k in kind.items():
        rc = resources[address]
        there = sorted(users.get(address, ()))
        if k == FOLLOWS and rc.properties.get("host") is None and len(there) == 1:
            resources[address] = _with(rc, "host", there[0])
        elif k == FOLLOWS and rc.properties.get("host") is None and len(there) > 1:
            raise UserError(
                [
                    Diagnostic(
                        f"is used by servers on different hosts ({', '.join(there)}); a volume "
                        "lives on one host: name `host` on the servers so they share one",
                        address=f"resources.{address}",
                        field="host",
                    )
                ]
            )
        elif k == FOLLOWS and there and rc.properties.get("host") not in (None, *there):
            raise UserError(
                [
                    Diagnostic(
                        f"names host {rc.properties['host']} but is used by a server on "
                        f"{', '.join(there)}; a volume lives on its server's host: leave "
                        "`host` out, or name the same one",
                        address=f"resources.{address}",
                        field="host",
                    )
                ]
            )
        elif k == SPANS and rc.properties.get("hosts") is None:
            resources[address] = _with(rc, "hosts", there)


def _label(host: str | None) -> str:
    return host if host is not None else "the default host"


def _share_storage_hosts(
    resources: dict[str, ResourceConfig], kind: Mapping[str, str | None], snapshot: Snapshot,
    file: str,
) -> None:  # fmt: skip
    """A "follows" resource referring to another one (a volume snapshot to its volume, a
    volume to the snapshot it is made from) is on that one's host: a snapshot is a copy
    libvirt makes inside the volume's pool, and a volume made from it is an overlay on its
    file. One without a host of its own (named, from a server, or recorded in state) takes it;
    two that disagree are an error, since no step could make one from the other."""
    follows = [a for a, k in kind.items() if k == FOLLOWS]
    where: dict[str, str | None] = {}
    for a in follows:
        host = resources[a].properties.get("host")
        if isinstance(host, str):
            where[a] = host
        elif a in snapshot.resources:  # made already: where it is (None: the default host)
            recorded = snapshot.resources[a].inputs.get("host")
            where[a] = recorded if isinstance(recorded, str) else None
    sources = {
        a: sorted(r for r in _referenced(resources[a].properties) if kind.get(r) == FOLLOWS)
        for a in follows
    }
    changed = True
    while changed:  # along chains: volume, its snapshot, a volume made from that
        changed = False
        for a in follows:
            known = [r for r in sources[a] if r in where]
            if a not in where and known:
                where[a] = where[known[0]]
                if where[a] is not None:
                    resources[a] = _with(resources[a], "host", where[a])
                changed = True
    problems = [
        Diagnostic(
            f"is on {_label(where[a])} but refers to {r}, which is on {_label(where[r])}: a "
            "volume, its snapshots and the volumes made from them are on one host",
            file=file,
            address=f"resources.{a}",
            field="host",
            hint=f"leave `host` out to follow {r}, or name the same host on both",
        )
        for a in follows
        if a in where
        for r in sources[a]
        if r in where and where[r] != where[a]
    ]
    if problems:
        raise UserError(problems)


def _placed(detail: str) -> Reason:
    return Reason(code=ReasonCode.PLACED, detail=detail)


def annotate(plan: Plan, why: Mapping[str, str]) -> Plan:
    """The plan with each newly placed server's reason (`ReasonCode.PLACED`) on its change."""
    if not why:
        return plan
    changes = [
        c.model_copy(
            update={"why": [*c.why, Reason(code=ReasonCode.PLACED, detail=why[c.address])]}
        )
        if c.address in why
        else c
        for c in plan.changes
    ]
    return plan.model_copy(update={"changes": changes})


def scheduler_hosts(states: Iterable[Any]) -> list[scheduler.Host]:
    """The scheduler's view of `iacloud.hosts.host_states`."""
    return [s.host for s in states]
