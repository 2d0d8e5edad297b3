"""The NAT of one floating IP: an nftables table of its own inside the router's namespace.

Neutron's legacy router does the same with iptables in its qrouter namespace: packets to the
floating address are DNATed to the port's fixed address on the way in, and the port's packets
leaving through the router's external leg are SNATed to the floating address on the way out,
so the guest sees the outside address and the outside sees only the floating one.

One table per floating IP, named after its address (`iacloud_fip_198_19_0_5`), so each floating
IP is set, replaced and dropped atomically on its own (declare, delete, declare with content in
one `nft -f`), without rewriting its neighbours' rules. The postrouting chain has priority
`srcnat - 1`: the kernel runs NAT chains of one hook in priority order and the first that binds
a connection wins, so a port with a floating IP leaves with that address and not with the
router's own (`snat`, priority `srcnat`). Every value in the ruleset is a validated IPv4
address or an interface name iacloud derived from a hash, so no user text reaches nft.

Re-pointing (or removing) a floating IP also drops the connection-tracking entries that carry
its address (`forget_connections`, pyroute2's conntrack over netlink, in the router's namespace):
NAT is decided once per connection, so without that a connection opened before the move would
still reach the old port (and the old port's own connections would still leave as the floating
address) until they idle out. Neutron's l3 agent does the same with `conntrack -D`.

The floating address itself is a /32 on the router namespace's loopback (`LOOPBACK`): with the
kernel's default `arp_ignore = 0` the router answers ARP for it on the external leg, and an
address there is not touched when the router's gateway leg is re-addressed (which keeps
exactly one address on the leg).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from pyroute2 import netns as pyroute2_netns
from pyroute2.conntrack import Conntrack, NFCTAttrTuple
from pyroute2.netlink.exceptions import NetlinkError

from iacloud.errors import ProviderError
from iacloud.providers.netlink import links, netns, snat

TABLE_PREFIX = "iacloud_fip_"
LOOPBACK = "lo"
CONNTRACK_TIMEOUT = 10.0


@dataclass(frozen=True)
class FloatingNat:
    """Traffic to `floating` goes to `fixed`; `fixed`'s traffic leaving through `interface`
    (the router's end of its external leg) leaves as `floating`."""

    floating: str
    fixed: str
    interface: str


def table_name(floating: str) -> str:
    return TABLE_PREFIX + str(IPv4Address(floating)).replace(".", "_")


def floating_of_table(name: str) -> str | None:
    """The floating address a table of ours is named after; None for any other table."""
    if not name.startswith(TABLE_PREFIX):
        return None
    try:
        return str(IPv4Address(name[len(TABLE_PREFIX) :].replace("_", ".")))
    except ValueError:
        return None


def ruleset(nat: FloatingNat) -> str:
    table = table_name(nat.floating)
    floating, fixed = str(IPv4Address(nat.floating)), str(IPv4Address(nat.fixed))
    return (
        f"table ip {table}\n"
        f"delete table ip {table}\n"
        f"table ip {table} {{\n"
        "  chain prerouting {\n"
        "    type nat hook prerouting priority dstnat; policy accept;\n"
        f"    ip daddr {floating} dnat to {fixed}\n"
        "  }\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat - 1; policy accept;\n"
        f'    oifname "{nat.interface}" ip saddr {fixed} snat to {floating}\n'
        "  }\n"
        "}\n"
    )


def removal(floating: str) -> str:
    """Drops the table; one that does not exist is fine (declared first, then deleted)."""
    table = table_name(floating)
    return f"table ip {table}\ndelete table ip {table}\n"


def apply(namespace: str, nat: FloatingNat) -> None:
    result = snat.nft(namespace, ["-f", "-"], ruleset(nat))
    if result.returncode != 0:
        raise ProviderError(
            f"nft in {namespace} refused the rules of floating IP {nat.floating}: "
            f"{result.stderr.strip()}"
        )


def remove(namespace: str, floating: str) -> None:
    result = snat.nft(namespace, ["-f", "-"], removal(floating))
    if result.returncode != 0:
        raise ProviderError(
            f"nft in {namespace} cannot remove {table_name(floating)}: {result.stderr.strip()}"
        )


def read(namespace: str) -> dict[str, FloatingNat]:
    """Every complete floating IP table in the namespace, by floating address: one `nft` run
    for all of them. A table whose rules are not the two we write (edited by hand) is left
    out, as if it were gone."""
    result = snat.nft(namespace, ["-j", "list", "ruleset", "ip"])
    if result.returncode != 0:
        return {}
    try:
        items = json.loads(result.stdout)["nftables"]
    except (ValueError, KeyError, TypeError):
        return {}
    return parse(items)


def parse(items: list[Any]) -> dict[str, FloatingNat]:
    """`nft -j` items -> {floating: FloatingNat} for the tables of ours that are intact."""
    dnat: dict[str, tuple[str, str]] = {}  # table -> (daddr, to)
    snat_: dict[str, tuple[str, str, str]] = {}  # table -> (oifname, saddr, to)
    for item in items:
        rule = item.get("rule") if isinstance(item, dict) else None
        if not isinstance(rule, dict) or floating_of_table(str(rule.get("table"))) is None:
            continue
        fields = _fields(rule.get("expr") or [])
        if fields is None:
            continue
        table = str(rule["table"])
        if rule.get("chain") == "prerouting" and set(fields) == {"daddr", "dnat"}:
            dnat[table] = (fields["daddr"], fields["dnat"])
        elif rule.get("chain") == "postrouting" and set(fields) == {"oifname", "saddr", "snat"}:
            snat_[table] = (fields["oifname"], fields["saddr"], fields["snat"])
    out = {}
    for table, (daddr, fixed) in dnat.items():
        floating = floating_of_table(table)
        found = snat_.get(table)
        if found is None or floating is None:
            continue
        interface, saddr, to = found
        if daddr == floating and to == floating and saddr == fixed:
            out[floating] = FloatingNat(floating, fixed, interface)
    return out


def _fields(exprs: list[Any]) -> dict[str, str] | None:
    out = {}
    for e in exprs:
        if not isinstance(e, dict):
            return None
        if "dnat" in e or "snat" in e:
            kind = "dnat" if "dnat" in e else "snat"
            addr = (e[kind] or {}).get("addr")
            if not isinstance(addr, str):
                return None
            out[kind] = addr
        elif "match" in e:
            left, right = e["match"].get("left"), e["match"].get("right")
            if e["match"].get("op") != "==" or not isinstance(right, str):
                return None
            if left == {"meta": {"key": "oifname"}}:
                out["oifname"] = right
            elif left == {"payload": {"protocol": "ip", "field": "daddr"}}:
                out["daddr"] = right
            elif left == {"payload": {"protocol": "ip", "field": "saddr"}}:
                out["saddr"] = right
            else:
                return None
        else:
            return None
    return out


# ---- the floating address on the router's loopback ------------------------------------------


def addresses(namespace: str) -> set[str]:
    """The /32 addresses on the namespace's loopback (127.0.0.1/8 is not one of them)."""
    with netns.socket(namespace) as nsr:
        index = links.index_of(nsr, LOOPBACK)
        if index is None:
            return set()
        return {
            str(a.get_attr("IFA_ADDRESS"))
            for a in nsr.get_addr(index=index, family=2)
            if a["prefixlen"] == 32
        }


def add_address(namespace: str, floating: str) -> None:
    with netns.socket(namespace) as nsr:
        index = links.index_of(nsr, LOOPBACK)
        have = {
            str(a.get_attr("IFA_ADDRESS"))
            for a in nsr.get_addr(index=index, family=2)
            if a["prefixlen"] == 32
        }
        if floating in have:
            return
        try:
            nsr.addr("add", index=index, address=floating, prefixlen=32)
        except NetlinkError as exc:
            raise links.netlink_error(f"cannot add {floating} in {namespace}", exc) from exc


def remove_address(namespace: str, floating: str) -> None:
    if not netns.exists(namespace):
        return
    with netns.socket(namespace) as nsr:
        index = links.index_of(nsr, LOOPBACK)
        if index is None:
            return
        for a in nsr.get_addr(index=index, family=2):
            if a["prefixlen"] == 32 and str(a.get_attr("IFA_ADDRESS")) == floating:
                try:
                    nsr.addr("del", index=index, address=floating, prefixlen=32)
                except NetlinkError as exc:
                    raise links.netlink_error(
                        f"cannot remove {floating} in {namespace}", exc
                    ) from exc


def forget_connections(namespace: str, floating: str) -> int:
    """Drop the conntrack entries in the namespace whose original destination or reply
    destination is `floating` (connections to it, and its port's connections out); returns how
    many. The netlink socket must be opened inside the namespace: a thread of its own enters
    it and ends, so the caller's thread never moves (as `netns.write_sysctls`)."""
    if not netns.exists(namespace):
        return 0
    done: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            pyroute2_netns.setns(namespace, flags=0)
            ct = Conntrack()
            try:
                found = []
                for key in ("tuple_orig", "tuple_reply"):
                    match = NFCTAttrTuple(family=socket.AF_INET, daddr=floating)
                    found += list(ct.dump_entries(**{key: match}))
                for entry in found:
                    with contextlib.suppress(NetlinkError):  # gone meanwhile
                        ct.delete(entry)
                done.append(len(found))
            finally:
                ct.close()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run, name=f"conntrack-{namespace}", daemon=True)
    t.start()
    t.join(CONNTRACK_TIMEOUT)
    if t.is_alive():
        raise ProviderError(f"dropping the connections of {floating} in {namespace} timed out")
    if errors:
        raise ProviderError(
            f"cannot drop the connections of {floating} in {namespace}: {errors[0]}"
        )
    return done[0] if done else 0
