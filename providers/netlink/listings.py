"""What one run's reads list of the host, each at most once: the link table and the namespaces.

`iacloud drift` reads networks and routers in bulk and then asks every type for its tagged
objects: without this, one run dumped the links three times (network read, network and router
orphan search) and listed the namespaces as often. A provider instance (one per run, shared by
its resource types) keeps one `Listings`:

- `links()`: one RTM_GETLINK dump of the root namespace (`LinkTable.dump`);
- `namespaces()`: the named network namespaces (/run/netns).

Only `read` and `list_tagged` use it; how changes drop it is in `iacloud.listings`.
"""

from __future__ import annotations

from iacloud.listings import HostListings
from iacloud.providers.netlink import netns
from iacloud.providers.netlink.links import LinkTable


class Listings(HostListings):
    def links(self) -> LinkTable:
        return self._once("links", LinkTable.dump)

    def namespaces(self) -> frozenset[str]:
        return self._once("namespaces", lambda: frozenset(netns.list_namespaces()))


__all__ = ["Listings"]
