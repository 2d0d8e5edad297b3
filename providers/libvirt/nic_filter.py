"""A server's NICs as security group members (`iacloud.secgroups`): what the server writes.

Each NIC with security groups, or on a port (whose own groups then filter it: the record binds
the port to the NIC's tap), gets a member record: bridge, MAC, tap device, the port's address
(a DHCP NIC has none: the ruleset takes its lease) and the NIC's groups. Every change goes
through `enforce.change`, which rebuilds the host's ruleset when what it is made of changed.
Tap devices are named by iacloud (`tap_name`, set as `<target dev>`), so a rule bound to one
holds across restarts of the domain. A server on a catalog host records that host and its SSH
target (`placement`): the host's own ruleset filters the NIC, applied there over SSH.
A server that migrates is filtered on the host it goes to before it leaves (`stage_move`):
its records are copied there, and `sync` after the move replaces both with the new host's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import libvirt

from iacloud.errors import ProviderError
from iacloud.ids import PortId
from iacloud.secgroups import enforce, facts
from iacloud.site_hosts import SshTarget

from . import domain_xml
from .domain_xml import NicRecord

if TYPE_CHECKING:
    from .host_context import HostContext

SOURCE = "server"


def tap_name(domain_uuid: str, mac: str) -> str:
    """The tap device of a NIC iacloud makes: stable for the domain's life (libvirt keeps
    'vnet' for the names it picks itself)."""
    return "iacn" + hashlib.sha256(f"{domain_uuid.lower()}\0{mac}".encode()).hexdigest()[:10]


def _taps(dom: libvirt.virDomain) -> dict[str, str]:
    """The tap of each NIC by MAC: the running definition's, else the persistent one's."""
    taps: dict[str, str] = {}
    for flags in (libvirt.VIR_DOMAIN_XML_INACTIVE, 0):
        if flags == 0 and not dom.isActive():
            continue
        for nic in domain_xml.parse(dom.XMLDesc(flags)).nics:
            if nic.tap:
                taps[nic.mac] = nic.tap
    return taps


def host_of(ctx: HostContext | None) -> str | None:
    """The host a member record names for a NIC on `ctx`: None for this machine's libvirtd."""
    if ctx is None or ctx.local or ctx.entry is None:
        return None
    return ctx.name


def placement(ctx: HostContext | None) -> tuple[str | None, SshTarget | None]:
    """Where the server's NICs are filtered: (None, None) for this machine's libvirtd, else
    the catalog host's name and SSH target."""
    if ctx is None or ctx.local or ctx.entry is None:
        return None, None
    if ctx.entry.ssh is None:
        raise ProviderError(
            f"host {ctx.name} has no ssh target: its security groups cannot be enforced "
            "(add ssh = ... to the host in the site catalog)"
        )
    return ctx.name, ctx.entry.ssh


def sync(
    stack_id: str,
    address: str,
    dom: libvirt.virDomain,
    nics: Sequence[NicRecord],
    ctx: HostContext | None = None,
) -> list[facts.MemberRecord]:
    """Write the member records of the server's bound NICs and remove its others. A server
    that has and had none leaves the ruleset (and nft) alone. `ctx`: the host the domain is
    on (None: this machine)."""
    bound = [n for n in nics if n.groups or n.key == "port"]
    if not bound and not has_members(stack_id, address):
        return []
    host, ssh = placement(ctx) if bound else (None, None)
    taps = _taps(dom)
    bridges = {n.mac: n.bridge for n in domain_xml.parse(dom.XMLDesc(0)).nics}
    members = []
    for rec in bound:
        if rec.mac not in bridges:
            continue
        ips: tuple[str, ...] = ()
        if rec.key == "port" and rec.port:
            with contextlib.suppress(ValueError):
                ips = (PortId.parse(rec.port).ip,)
        members.append(
            facts.MemberRecord(
                SOURCE, stack_id, address, bridges[rec.mac], rec.mac, taps.get(rec.mac), ips,
                rec.groups, host, ssh,
            )
        )  # fmt: skip
    with enforce.change():
        facts.remove_members(SOURCE, stack_id, address)
        facts.remove_members(facts.MOVING, stack_id, address)
        for m in members:
            facts.write_member(m)
    return members


def stage_move(stack_id: str, address: str, target: HostContext) -> bool:
    """Before the server migrates to `target`: its filtered NICs also filtered there (the
    tap names come with the domain), so the guest's first frame on the target meets its
    rules. False when it has no member records (nothing to do)."""
    own = [
        m
        for m in facts.members()
        if (m.source, m.stack_id, m.address) == (SOURCE, stack_id, address)
    ]
    if not own:
        return False
    host, ssh = placement(target)
    with enforce.change():
        for m in own:
            facts.write_member(dataclasses.replace(m, source=facts.MOVING, host=host, ssh=ssh))
    return True


def unstage_move(stack_id: str, address: str) -> None:
    """A move that failed: the server stays where it was, its copies on the target go."""
    with enforce.change():
        facts.remove_members(facts.MOVING, stack_id, address)


def learn_leases(members: Sequence[facts.MemberRecord]) -> None:
    """After the guest is up: a filtered NIC on DHCP is allowed the address of its lease,
    which exists only now, so the ruleset is rebuilt."""
    if any(m.groups and not m.ips for m in members):
        with enforce.change(force=True):
            pass


def has_members(stack_id: str, address: str) -> bool:
    return any(
        (m.source, m.stack_id, m.address) == (SOURCE, stack_id, address) for m in facts.members()
    )


def drop(stack_id: str, address: str) -> None:
    mine = {(SOURCE, stack_id, address), (facts.MOVING, stack_id, address)}
    if any((m.source, m.stack_id, m.address) in mine for m in facts.members()):
        with enforce.change():
            facts.remove_members(SOURCE, stack_id, address)
            facts.remove_members(facts.MOVING, stack_id, address)


def filtered_macs(
    stack_id: str,
    address: str,
    members: Sequence[facts.MemberRecord] | None = None,
    host: str | None = None,
) -> frozenset[str]:
    """The MACs of the server's NICs whose member records say they are on `host`, where the
    read found the domain (None: this machine). None at all while copies staged for a move
    remain: a run cut off mid-move then reads the NICs as unfiltered, and the update the next
    plan makes writes the records again for the host the server is on, copies removed."""
    mine = [
        m
        for m in (facts.members() if members is None else members)
        if (m.stack_id, m.address) == (stack_id, address)
    ]
    if any(m.source == facts.MOVING for m in mine):
        return frozenset()
    return frozenset(m.mac for m in mine if m.source == SOURCE and m.host == host)
