"""Links of one namespace as read in a single dump, and the few link operations the resources use.

`LinkTable` turns one RTM_GETLINK dump into plain `Link` records indexed by name, ifindex, alias
and master, so a bulk read answers every question about hundreds of networks from one
netlink round trip.
"""

from __future__ import annotations

import errno
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from iacloud.errors import ProviderError
from iacloud.providers.netlink import names


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str | None  # "bridge", "veth", "vlan", "vxlan", None for physical
    alias: str | None
    master: int | None
    mtu: int
    up: bool
    data: dict[str, Any] = field(default_factory=dict, compare=False)  # IFLA_INFO_DATA

    @property
    def owner(self) -> tuple[str, str] | None:
        return names.parse_tag(self.alias)


# Kinds whose IFLA_INFO_DATA we read. Decoding a bridge's (some 45 attributes) for every
# bridge on the host would double the cost of a dump; pyroute2 decodes lazily, on access.
_DATA_KINDS = ("vlan", "vxlan")


def _link(msg: Any) -> Link:
    info = msg.get("IFLA_LINKINFO")
    kind = info.get("IFLA_INFO_KIND") if info else None
    data: dict[str, Any] = {}
    if kind in _DATA_KINDS and info.get("IFLA_INFO_DATA"):
        data = dict(info.get("IFLA_INFO_DATA")["attrs"])
        if msg.get("IFLA_LINK") is not None:
            data["IFLA_LINK"] = msg.get("IFLA_LINK")
    return Link(
        index=msg["index"],
        name=msg.get("IFLA_IFNAME"),
        kind=kind,
        alias=msg.get("IFLA_IFALIAS"),
        master=msg.get("IFLA_MASTER"),
        mtu=msg.get("IFLA_MTU"),
        up=bool(msg["flags"] & 1),
        data=data,
    )


def get(ipr: IPRoute, name: str | None = None, index: int | None = None) -> Link | None:
    """One link by name or index (one RTM_GETLINK), None if there is none."""
    try:
        found = ipr.link("get", ifname=name) if name is not None else ipr.link("get", index=index)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise
    return _link(found[0]) if found else None


class LinkTable:
    """One dump of the links of a namespace."""

    def __init__(self, links: Iterable[Link]) -> None:
        self.by_index: dict[int, Link] = {}
        self.by_name: dict[str, Link] = {}
        self.by_alias: dict[str, list[Link]] = defaultdict(list)
        self.slaves: dict[int, list[Link]] = defaultdict(list)
        for link in links:
            self.by_index[link.index] = link
            self.by_name[link.name] = link
            if link.alias:
                self.by_alias[link.alias].append(link)
            if link.master:
                self.slaves[link.master].append(link)

    @classmethod
    def dump(cls, ipr: IPRoute) -> LinkTable:
        """Every link: one RTM_GETLINK dump, whatever the number of objects asked about."""
        return cls(_link(m) for m in ipr.get_links())

    @classmethod
    def fetch(cls, ipr: IPRoute, wanted: Iterable[str]) -> LinkTable:
        """Only the named links, and the links they refer to (a VLAN's or VXLAN's uplink), one
        RTM_GETLINK each: for operations on one object, whose cost must not grow with the
        number of links on the host. Agrees with `dump` on every link it holds."""
        found = [link for link in (get(ipr, name) for name in wanted) if link is not None]
        known = {link.index for link in found}
        for link in list(found):
            for ref in (link.data.get("IFLA_LINK"), link.data.get("IFLA_VXLAN_LINK")):
                if ref and ref not in known:
                    other = get(ipr, index=ref)
                    if other is not None:
                        found.append(other)
                        known.add(ref)
        return cls(found)

    def get(self, name: str) -> Link | None:
        return self.by_name.get(name)

    def bridge(self, name: str) -> Link | None:
        link = self.by_name.get(name)
        return link if link and link.kind == "bridge" else None

    def name_of(self, index: int | None) -> str | None:
        link = self.by_index.get(index) if index else None
        return link.name if link else None


def netlink_error(what: str, exc: NetlinkError) -> ProviderError:
    return ProviderError(f"{what}: {os.strerror(exc.code) if exc.code else exc}")


def index_of(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def delete(ipr: IPRoute, name: str) -> None:
    """Delete a link by name; a link already gone is fine."""
    index = index_of(ipr, name)
    if index is None:
        return
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise netlink_error(f"cannot delete link {name}", exc) from exc


def set_alias_checked(alias: str) -> str:
    if len(alias.encode()) > names.ALIAS_MAX:
        raise ProviderError(
            f"ownership tag '{alias[:60]}...' is longer than {names.ALIAS_MAX} bytes"
        )
    return alias


def disable_ipv6(name: str) -> None:
    """Keep the host out of the network: no IPv6 link-local address on the bridge or on the
    bridge ends of veths. Kernels without IPv6 have no such entry."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as f:
            f.write("1")
    except FileNotFoundError:
        pass
