"""Rebuilding iacloud's rulesets from every group and member, under the host lock.

Callers change the facts and rebuild inside one `facts.locked()` block (`change`), so steps of
parallel runs, and of several stacks, never interleave a write and a rebuild. A rebuild:
reads all groups and members, compiles one ruleset per host (this machine's, and one for each
catalog host with members or still holding our tables), checks each host with members can
filter bridged traffic statefully, applies each ruleset atomically and prunes conntrack.
This machine is done first, as before; a catalog host is reached over its SSH target
(`remote`). A host without filtered NICs left has its tables removed (and, for a catalog
host, its mark in the facts), so removing its last member removes our table there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from iacloud.errors import ProviderError
from iacloud.secgroups import bridge_nf, compiler, conntrack, facts, nft, remote

BRIDGE_NF = bridge_nf.BRIDGE_NF


def bridged_conntrack() -> str | None:
    """Why bridged IPv4 cannot be tracked by conntrack here, or None when it can."""
    try:
        value: str | None = BRIDGE_NF.read_text().strip()
    except OSError:
        value = None
    return bridge_nf.problem(value)


def current() -> tuple[dict[str, compiler.Group], list[compiler.Member]]:
    return facts.group_map(facts.groups()), facts.merged(facts.members())


def rebuild() -> compiler.Ruleset:
    """Call with `facts.locked()` held. Returns this machine's ruleset."""
    groups, members = current()
    targets = facts.targets(facts.members())
    rulesets = compiler.compile_hosts(groups, members, facts.applied())
    split = compiler.by_host(members)
    local = split.get(None, [])
    if local:
        problem = bridged_conntrack()
        if problem:
            raise ProviderError(f"security groups cannot be enforced on this host: {problem}")
    nft.apply(rulesets[None].text)
    conntrack.prune(groups, local, members)
    failed = []
    for name, ruleset in rulesets.items():
        if name is None:
            continue
        ssh = targets.get(name)
        if ssh is None:  # a member whose record lost its target: nothing reaches the host
            failed.append(f"host {name}: no SSH target recorded")
            continue
        try:
            _rebuild_host(remote.Host(name, ssh), ruleset, groups, split.get(name, []), members)
        except ProviderError as exc:
            failed.append(str(exc))
    if failed:
        raise ProviderError("security groups: " + "; ".join(failed))
    return rulesets[None]


def _rebuild_host(
    host: remote.Host,
    ruleset: compiler.Ruleset,
    groups: dict[str, compiler.Group],
    own: list[compiler.Member],
    everyone: list[compiler.Member],
) -> None:
    if not own:
        remote.apply(host, "")
        facts.unmark_applied(host.name)
        return
    problem = remote.bridged_conntrack(host)
    if problem:
        raise ProviderError(f"security groups cannot be enforced on host {host.name}: {problem}")
    # marked first: a ruleset that half-arrived is still removed when the last member goes
    facts.mark_applied(host.name, host.ssh)
    remote.apply(host, ruleset.text)
    remote.prune(host, groups, own, everyone)


@contextlib.contextmanager
def change(force: bool = False) -> Iterator[None]:
    """Change facts inside the block; when it ends without error, the rulesets are rebuilt if
    what they are made of changed (a server NIC on a port without groups records its tap,
    which filters nothing until the port has groups), or always with `force` (a group's
    update also repairs a ruleset changed by hand; a lease may have appeared)."""
    with facts.locked():
        before = None if force else current()
        yield
        if force or current() != before:
            rebuild()


def expected() -> compiler.Ruleset:
    """The rules the current facts put in nft, on every host: the chains are named by the
    member's key, so one host's never clash with another's (for a read to compare with
    `rule_comments`)."""
    groups, members = current()
    out = compiler.Ruleset("")
    for host, ruleset in compiler.compile_hosts(groups, members).items():
        if host is None:
            out.text = ruleset.text
        for gid, rules in ruleset.expected.items():
            for i, chains in rules.items():
                out.expected.setdefault(gid, {}).setdefault(i, set()).update(chains)
    return out


def rule_comments() -> dict[str, set[str]]:
    """{chain: comments of its rules} in the inet tables of this machine and of every
    catalog host with members (read over SSH; an unreachable host reads as holding none, so
    its rules read as missing)."""
    out = nft.rule_comments(nft.read())
    _, members = current()
    targets = facts.targets(facts.members())
    for name in sorted({m.host for m in members if m.host is not None}):
        ssh = targets.get(name)
        if ssh is None:
            continue
        try:
            tables = remote.read(remote.Host(name, ssh))
        except ProviderError:
            continue
        for chain, comments in nft.rule_comments(tables).items():
            out.setdefault(chain, set()).update(comments)
    return out
