"""What the netlink resource types share: the provider's stack, state directory and locks."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from iacloud.provider import ResourceType, StackInfo
from iacloud.providers.netlink.records import StateDir
from iacloud.providers.netlink.settings import NetlinkSettings

if TYPE_CHECKING:
    from iacloud.providers.netlink import NetlinkProvider


class NetlinkResource(ResourceType):
    provider: NetlinkProvider

    @property
    def stack(self) -> StackInfo:
        return self.provider.stack

    @property
    def settings(self) -> NetlinkSettings:
        return self.provider.settings  # type: ignore[return-value]

    @property
    def state(self) -> StateDir:
        return self.provider.state

    def network_lock(self, bridge: str) -> threading.RLock:
        return self.provider.network_lock(bridge)
