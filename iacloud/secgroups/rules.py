"""A security group rule: direction, protocol, destination port range, remote (CIDR or group).

Validated with full matches: ports 1-65535 and only for tcp/udp, `port_max` not below
`port_min` (and only with it), an IPv4 CIDR parsed by `ipaddress` (host bits must be zero), a
remote group given as a group id or "self" (this group), never both remotes. A rule with no
remote allows any address. Port ranges are destination ports in both directions (Neutron's
meaning).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

GROUP_ID = re.compile(r"sg-[0-9a-f]{10}")
SELF = "self"
PORTED = ("tcp", "udp")


def check_group_id(value: object) -> str:
    if not isinstance(value, str) or not GROUP_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not a security group id (sg- and 10 hex digits)")
    return value


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    direction: Literal["ingress", "egress"]
    protocol: Literal["tcp", "udp", "icmp", "any"] = "any"
    port_min: int | None = Field(None, ge=1, le=65535)
    port_max: int | None = Field(None, ge=1, le=65535)
    remote_cidr: str | None = None
    remote_group: str | None = None

    @field_validator("remote_cidr")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            net = ipaddress.ip_network(value, strict=True)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a CIDR ({exc})") from None
        if net.version != 4:
            raise ValueError(f"{value!r} is not an IPv4 CIDR (networks are IPv4)")
        return str(net)

    @field_validator("remote_group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        if value is None or value == SELF:
            return value
        return check_group_id(value)

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.remote_cidr is not None and self.remote_group is not None:
            raise ValueError("give at most one of 'remote_cidr' and 'remote_group'")
        ported = self.port_min is not None or self.port_max is not None
        if ported and self.protocol not in PORTED:
            raise ValueError(f"port_min/port_max need protocol tcp or udp, not {self.protocol!r}")
        if self.port_max is not None and self.port_min is None:
            raise ValueError("port_max needs port_min")
        lo, hi = self.port_min, self.port_max
        if lo is not None and hi is not None and hi < lo:
            raise ValueError(f"port_max {self.port_max} is below port_min {self.port_min}")
        return self

    @property
    def ports(self) -> tuple[int, int] | None:
        if self.port_min is None:
            return None
        return self.port_min, self.port_max if self.port_max is not None else self.port_min

    def remote_group_of(self, group: str) -> str | None:
        """The remote group's id, with "self" resolved to `group`."""
        return group if self.remote_group == SELF else self.remote_group
