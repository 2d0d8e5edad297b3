"""SNAT for a router's external leg: one nftables table inside the router's namespace.

nftables rulesets belong to a network namespace, so the table lives in the router's namespace
and the host's own ruleset is never read or changed; removing the namespace removes the table.
The `nft` command is run in the namespace with `nsenter` (see `netns`), as an argument list,
with the ruleset on stdin. Every value in the ruleset is a validated IPv4 address or CIDR or an
interface name iacloud derived from a hash (see `names`), so no user text reaches nft.

The ruleset rewrites the source of packets from the router's internal networks leaving through
the external leg to the router's external address (`snat to`, not `masquerade`: the address is
fixed, and a firewall upstream can name it). Written as "declare, delete, declare with content"
in one `nft -f` transaction, so it replaces any previous version atomically.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network

from iacloud.errors import ProviderError
from iacloud.providers.netlink import netns

TABLE = "iacloud_snat"
TIMEOUT = 10.0


@dataclass(frozen=True)
class SnatRule:
    """Packets from `sources` leaving through `interface` get the source address `to`."""

    interface: str
    sources: frozenset[IPv4Network]
    to: str

    def same_as(self, other: SnatRule | None) -> bool:
        """nft merges adjacent prefixes of a set (two /24s read back as one /23): compare the
        address ranges, not the spelling."""
        return (
            other is not None
            and (self.interface, self.to) == (other.interface, other.to)
            and _collapsed(self.sources) == _collapsed(other.sources)
        )


def _collapsed(nets: Iterable[IPv4Network]) -> list[IPv4Network]:
    return list(ipaddress.collapse_addresses(nets))


def binary() -> str:
    path = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if not path:
        raise ProviderError(
            "nft is not installed: a router with external.snat = true needs it "
            "(Debian/Ubuntu: apt install nftables)"
        )
    return path


def ruleset(rule: SnatRule) -> str:
    sources = ", ".join(str(n) for n in sorted(rule.sources))
    return (
        f"table ip {TABLE}\n"
        f"delete table ip {TABLE}\n"
        f"table ip {TABLE} {{\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f'    oifname "{rule.interface}" ip saddr {{ {sources} }} snat to {rule.to}\n'
        "  }\n"
        "}\n"
    )


def nft(namespace: str, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run nft inside the namespace (bounded); `floating_nat` uses it too."""
    try:
        return subprocess.run(
            netns.exec_args(namespace, [binary(), *args]),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProviderError(f"cannot run nft in {namespace}: {exc}") from exc


def apply(namespace: str, rule: SnatRule) -> None:
    result = nft(namespace, ["-f", "-"], ruleset(rule))
    if result.returncode != 0:
        raise ProviderError(f"nft in {namespace} refused the SNAT rule: {result.stderr.strip()}")


def remove(namespace: str) -> None:
    """Drop the table; a table that does not exist is fine (declared first, then deleted)."""
    result = nft(namespace, ["-f", "-"], f"table ip {TABLE}\ndelete table ip {TABLE}\n")
    if result.returncode != 0:
        raise ProviderError(f"nft in {namespace} cannot remove {TABLE}: {result.stderr.strip()}")


def read(namespace: str) -> SnatRule | None:
    """The SNAT rule in the namespace's table, or None when there is no table or no such rule
    (something else was put there by hand)."""
    result = nft(namespace, ["-j", "list", "table", "ip", TABLE])
    if result.returncode != 0:
        return None
    try:
        items = json.loads(result.stdout)["nftables"]
    except (ValueError, KeyError, TypeError):
        return None
    for item in items:
        rule = item.get("rule") if isinstance(item, dict) else None
        if isinstance(rule, dict) and rule.get("chain") == "postrouting":
            parsed = _parse_rule(rule.get("expr") or [])
            if parsed is not None:
                return parsed
    return None


def _parse_rule(exprs: list) -> SnatRule | None:
    interface, sources, to = None, None, None
    for e in exprs:
        if not isinstance(e, dict):
            return None
        if "snat" in e:
            to = (e["snat"] or {}).get("addr")
        elif "match" in e:
            left, right = e["match"].get("left", {}), e["match"].get("right")
            if left == {"meta": {"key": "oifname"}}:
                interface = right
            elif left == {"payload": {"protocol": "ip", "field": "saddr"}}:
                sources = _networks(right)
    if not (isinstance(interface, str) and isinstance(to, str) and sources):
        return None
    return SnatRule(interface, frozenset(sources), to)


def _networks(value: object) -> list[IPv4Network] | None:
    """A match's right side: an address, a prefix, or a set of them."""
    items = value["set"] if isinstance(value, dict) and "set" in value else [value]
    out = []
    for item in items:
        try:
            if isinstance(item, dict) and "prefix" in item:
                out.append(IPv4Network(f"{item['prefix']['addr']}/{item['prefix']['len']}"))
            elif isinstance(item, str):
                out.append(IPv4Network(item))
            else:
                return None
        except (ValueError, KeyError, TypeError):
            return None
    return out
