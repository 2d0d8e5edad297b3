"""The `network` resource's inputs (Neutron's net + subnet in one): the subnet, DHCP, DNS,
MTU, an optional VLAN or VXLAN segment and the site hosts it spans; and the subnet plan with
the computed defaults (gateway, DHCP range) that a read reports."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from iacloud import netnames
from iacloud.providers.netlink import names
from iacloud.providers.netlink.subnet import (
    MIN_DHCP_PREFIX,
    SubnetPlan,
    ipv4,
    ipv4_network,
    plan_subnet,
)
from iacloud.schema import Disruption, Inputs, prop
from iacloud.site_hosts import HOST_NAME, HOST_NAME_RULE


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DhcpRange(_Model):
    """`{ start = IP, end = IP }` or `[start, end]`."""

    start: str
    end: str

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise ValueError("dhcp_range as a list needs exactly two addresses: [start, end]")
            return {"start": value[0], "end": value[1]}
        return value

    @field_validator("start", "end")
    @classmethod
    def _ip(cls, v: str) -> str:
        return ipv4(v)


class VlanSegment(_Model):
    """An 802.1Q sub-interface of `uplink` (which iacloud neither creates nor changes)."""

    vlan: int = Field(ge=1, le=4094)
    uplink: str

    @field_validator("uplink")
    @classmethod
    def _uplink(cls, v: str) -> str:
        return names.validate_ifname(v)


class VxlanSegment(_Model):
    """A VXLAN device: unicast `remotes` (one FDB entry each) or a multicast `group`."""

    vxlan: int = Field(ge=1, le=16777215)
    local: str | None = None
    remotes: list[str] = []
    group: str | None = None
    port: int = Field(4789, ge=1, le=65535)
    uplink: str | None = None  # the underlay device; needed with a multicast group

    @field_validator("local")
    @classmethod
    def _local(cls, v: str | None) -> str | None:
        return None if v is None else ipv4(v)

    @field_validator("uplink")
    @classmethod
    def _uplink(cls, v: str | None) -> str | None:
        return None if v is None else names.validate_ifname(v)

    @field_validator("remotes")
    @classmethod
    def _remotes(cls, v: list[str]) -> list[str]:
        out = sorted({ipv4(x) for x in v}, key=ipaddress.IPv4Address)  # order has no meaning
        for x in out:
            if ipaddress.IPv4Address(x).is_multicast:
                raise ValueError(f"remote {x} is a multicast address (use group = ...)")
        return out

    @field_validator("group")
    @classmethod
    def _group(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = ipv4(v)
        if not ipaddress.IPv4Address(v).is_multicast:
            raise ValueError(f"group {v} is not a multicast address (224.0.0.0/4)")
        return v

    @model_validator(mode="after")
    def _one_way(self) -> VxlanSegment:
        if bool(self.remotes) == bool(self.group):
            raise ValueError("a vxlan segment needs either remotes = [...] or group = ...")
        return self


class NetworkInputs(Inputs):
    cidr: str = prop(update=Disruption.REPLACE, description="IPv4 subnet, e.g. 198.18.10.0/24")
    gateway: str | None = prop(
        None,
        update=Disruption.REPLACE,
        computed_default=True,
        description="default: the first host address",
    )
    dhcp: bool = prop(True, update=Disruption.LIVE)
    dhcp_range: DhcpRange | None = prop(None, update=Disruption.LIVE, computed_default=True)
    dns: list[str] = prop([], update=Disruption.LIVE, description="DNS servers handed out")
    mtu: int | None = prop(None, update=Disruption.LIVE, computed_default=True, ge=68, le=65535)
    segment: VlanSegment | VxlanSegment | None = prop(None, update=Disruption.REPLACE)
    # An uplink network (Neutron's router:external): its gateway is an outside router's, so an
    # iacloud router joins it only through `external = {...}` (an address of its own, a default
    # route and SNAT), never as an internal leg that would take the gateway address.
    external: bool = prop(False, update=Disruption.LIVE)
    # Servers on the network are resolvable as HOSTNAME.<dns_domain> through its dnsmasq
    # (`iacloud.netnames`, `dns`). Changing it restarts its dnsmasq processes (live).
    dns_domain: str | None = prop(
        None, update=Disruption.LIVE, description="e.g. lab.internal: servers get DNS names"
    )
    # The site catalog hosts its servers run on (filled at plan time from their placements,
    # `iacloud.placement`): the network reaches each over VXLAN (`span`); adding a host
    # extends it live.
    hosts: list[str] = prop([], update=Disruption.LIVE, computed_default=True, max_length=64)

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        return ipv4_network(v)

    @field_validator("gateway")
    @classmethod
    def _gateway(cls, v: str | None) -> str | None:
        return None if v is None else ipv4(v)

    @field_validator("dns")
    @classmethod
    def _dns(cls, v: list[str]) -> list[str]:
        return [ipv4(x) for x in v]

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        for h in v:
            if not HOST_NAME.fullmatch(h):
                raise ValueError(f"host {h!r} is not {HOST_NAME_RULE}")
        return sorted(set(v))

    @field_validator("dns_domain")
    @classmethod
    def _dns_domain(cls, v: str | None) -> str | None:
        return None if v is None else netnames.check_domain(v)

    @model_validator(mode="after")
    def _subnet(self) -> NetworkInputs:
        prefix = int(self.cidr.split("/")[1])
        if prefix > MIN_DHCP_PREFIX and (self.dhcp or self.dhcp_range):
            raise ValueError(
                f"DHCP needs at least a /{MIN_DHCP_PREFIX} (gateway, server and a client); "
                f"{self.cidr} is too small: set dhcp = false"
            )
        plan_subnet(self.cidr, self.gateway, _range_tuple(self.dhcp_range))
        if self.dns_domain and not self.dhcp:
            raise ValueError(
                "dns_domain needs dhcp = true: the network's DHCP server (dnsmasq) answers "
                "the names"
            )
        return self


def _range_tuple(r: DhcpRange | None) -> tuple[str, str] | None:
    return (r.start, r.end) if r else None


def resolve(inputs: NetworkInputs) -> tuple[SubnetPlan, dict[str, Any]]:
    """The subnet plan and the inputs with computed defaults (gateway, DHCP range) filled in,
    in the shape a read reports. mtu stays as given: None means the kernel's choice."""
    plan = plan_subnet(inputs.cidr, inputs.gateway, _range_tuple(inputs.dhcp_range))
    resolved = inputs.model_dump()
    resolved["gateway"] = str(plan.gateway)
    resolved["dhcp_range"] = (
        {"start": str(plan.range_start), "end": str(plan.range_end)}
        if plan.range_start is not None
        else None
    )
    return plan, resolved


def identity(resolved: dict[str, Any]) -> str:
    """The replace-forcing inputs, hashed into the bridge name (see `names`)."""
    keys = ("cidr", "gateway", "segment")
    return json.dumps({k: resolved[k] for k in keys}, sort_keys=True)


def plan_of(record: dict[str, Any]) -> SubnetPlan:
    """The subnet plan of a network's record (ports and routers use it)."""
    inputs = record["inputs"]
    r = inputs.get("dhcp_range")
    return plan_subnet(inputs["cidr"], inputs.get("gateway"), (r["start"], r["end"]) if r else None)
