"""Rebuilding iacloud's ruleset from every group and member on the host, under the host lock.

Callers change the facts and rebuild inside one `facts.locked()` block (`change`), so steps of
parallel runs, and of several stacks, never interleave a write and a rebuild. A rebuild:
reads all groups and members, compiles, checks the kernel can filter bridged traffic
statefully (when any NIC is filtered), applies the ruleset atomically and prunes conntrack.
With no filtered NIC left the tables are removed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from iacloud.errors import ProviderError
from iacloud.secgroups import compiler, conntrack, facts, nft

BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


def bridged_conntrack() -> str | None:
    """Why bridged IPv4 cannot be tracked by conntrack here, or None when it can."""
    try:
        value = BRIDGE_NF.read_text().strip()
    except OSError:
        return (
            "br_netfilter is not loaded, so bridged traffic never reaches conntrack "
            "(modprobe br_netfilter; sysctl -w net.bridge.bridge-nf-call-iptables=1)"
        )
    if value != "1":
        return (
            "net.bridge.bridge-nf-call-iptables = 0, so bridged traffic never reaches conntrack "
            "(sysctl -w net.bridge.bridge-nf-call-iptables=1)"
        )
    return None


def current() -> tuple[dict[str, compiler.Group], list[compiler.Member]]:
    return facts.group_map(facts.groups()), facts.merged(facts.members())


def rebuild() -> compiler.Ruleset:
    """Call with `facts.locked()` held."""
    groups, members = current()
    ruleset = compiler.compile_ruleset(groups, members)
    if members:
        problem = bridged_conntrack()
        if problem:
            raise ProviderError(f"security groups cannot be enforced on this host: {problem}")
    nft.apply(ruleset.text)
    conntrack.prune(groups, members)
    return ruleset


@contextlib.contextmanager
def change(force: bool = False) -> Iterator[None]:
    """Change facts inside the block; when it ends without error, the ruleset is rebuilt if
    what it is made of changed (a server NIC on a port without groups records its tap, which
    filters nothing until the port has groups), or always with `force` (a group's update
    also repairs a ruleset changed by hand; a lease may have appeared)."""
    with facts.locked():
        before = None if force else current()
        yield
        if force or current() != before:
            rebuild()


def expected() -> compiler.Ruleset:
    """The ruleset the current facts make (for a read to compare with what nft holds)."""
    groups, members = current()
    return compiler.compile_ruleset(groups, members)
