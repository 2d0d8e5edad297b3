"""The `[provider.netlink]` table of a stack file."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator

from iacloud import paths
from iacloud.provider import ProviderSettings, StackInfo
from iacloud.providers.netlink.subnet import ipv4

_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


class NetlinkSettings(ProviderSettings):
    # Where each network keeps its record, its ports' reservations and dnsmasq's lease, pid and
    # log files (one directory per bridge). Default: the stack's data dir / "netlink". Stacks
    # whose routers or ports join another stack's networks must share one state_dir. iacloud
    # writes there as root, so it must be an absolute, normalized path under a directory
    # iacloud owns (iacloud.paths.owned_roots).
    state_dir: str | None = None
    # dnsmasq drops root for this user once its sockets and files are open.
    dhcp_user: str = "nobody"
    lease_time: int = Field(3600, ge=120, description="DHCP lease time in seconds")
    # This machine's address on the underlay between the site's hosts: where networks that
    # span hosts (`hosts`, issue #16) send VXLAN to and from the network node.
    underlay: str | None = None

    @field_validator("underlay")
    @classmethod
    def _underlay(cls, value: str | None) -> str | None:
        return None if value is None else ipv4(value)

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, value: str | None) -> str | None:
        return None if value is None else paths.check_owned(value)

    @field_validator("dhcp_user")
    @classmethod
    def _user(cls, value: str) -> str:
        if not _USER.fullmatch(value):
            raise ValueError(f"'{value}' is not a valid user name")
        return value

    def state_path(self, stack: StackInfo) -> Path:
        if self.state_dir is None:
            return stack.data_dir / "netlink"
        return Path(self.state_dir)
