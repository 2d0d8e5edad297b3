"""The netlink provider: isolated Linux bridges as networks, DHCP reservations as ports, and
namespaces as routers, built with pyroute2 (netlink) and dnsmasq. It never shells out to `ip`.
Links are read with a small rtnetlink decoder of its own (`links`), in one dump per run for all
reads (`listings`).

Ids the other providers rely on:
- network: the bridge name (`iacb` + 10 hex); a server NIC attaches to the bridge of that name.
- port: `<bridge>/<mac>/<ip>`, e.g. `iacb0123456789/52:54:00:ab:cd:ef/198.18.10.5`. None of the
  three parts can contain '/'; `iacloud.ids.PortId` parses it. A NIC with that MAC on that
  bridge gets that address from the network's DHCP server.
- router: its namespace name (`iacloud-rtr-` + 10 hex).
- security_group: `sg-` + 10 hex; NICs and ports list it in `security_groups`.
- floating_ip: `<external bridge>/<ip>` (see `floating_ip`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from iacloud.errors import Diagnostic
from iacloud.provider import Check, Provider, ProviderSettings, StackInfo
from iacloud.providers.netlink.crosscheck import check_stack as cross_check
from iacloud.providers.netlink.floating_ip import FloatingIp
from iacloud.providers.netlink.listings import Listings as NetlinkListings
from iacloud.providers.netlink.network import Network
from iacloud.providers.netlink.port import Port, parse_port_id, port_id
from iacloud.providers.netlink.records import StateDir
from iacloud.providers.netlink.router import Router
from iacloud.providers.netlink.security_group import SecurityGroup
from iacloud.providers.netlink.settings import NetlinkSettings
from iacloud.stack_view import ResourceView

__all__ = [
    "FloatingIp",
    "NetlinkProvider",
    "NetlinkSettings",
    "Network",
    "Port",
    "Router",
    "SecurityGroup",
    "parse_port_id",
    "port_id",
]


class NetlinkProvider(Provider):
    name = "netlink"
    Settings = NetlinkSettings
    resource_types = (Network, Port, Router, SecurityGroup, FloatingIp)
    Listings = NetlinkListings  # the run's link dump and namespace listing, for reads
    listings: NetlinkListings

    def __init__(self, stack: StackInfo, settings: ProviderSettings) -> None:
        super().__init__(stack, settings)
        self._network_locks: dict[str, threading.RLock] = {}

    @classmethod
    def check_stack(cls, resources: Mapping[str, ResourceView]) -> list[Diagnostic]:
        return cross_check(resources)

    @classmethod
    def doctor(cls, settings: ProviderSettings) -> list[Check]:
        from iacloud.providers.netlink.doctor import checks

        return checks()

    @property
    def state(self) -> StateDir:
        assert isinstance(self.settings, NetlinkSettings)
        return StateDir(Path(self.settings.state_path(self.stack)).absolute())

    def close(self) -> None:
        self.listings.clear()

    def network_lock(self, bridge: str) -> threading.RLock:
        """Serializes changes to one network's DHCP configuration (a port created while another
        is deleted must not restart dnsmasq with a stale reservation list). Across processes the
        engine's state lock already keeps two runs apart."""
        with self._lock:
            return self._network_locks.setdefault(bridge, threading.RLock())
