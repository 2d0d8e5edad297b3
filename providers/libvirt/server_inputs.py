"""The `server` resource's inputs: the schema of a server and of each of its NICs, with the
checks that need no host (ids, names, MACs, keys, hostnames)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from iacloud.errors import ProviderError
from iacloud.ids import PortId
from iacloud.schema import Disruption, Inputs, prop
from iacloud.secgroups.rules import check_group_id
from iacloud.site_hosts import HOST_NAME
from iacloud.validators import INTERFACE_NAME_RULE, is_interface_name, is_unicast_mac

from . import readiness, seed, storage


def _check_volume_id(value: str) -> str:
    try:
        storage.split_id(value)
    except ProviderError as exc:
        raise ValueError(str(exc)) from None
    return value


class NetworkEntry(BaseModel):
    """One NIC: `{ network = ID }` (a network resource's id: its bridge), `{ bridge = NAME }`, or
    `{ port = ID }` (a port resource's id `<bridge>/<mac>/<ip>`: the NIC gets that bridge and
    MAC, so the network's DHCP server hands it the port's IP)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    network: str | None = None
    bridge: str | None = None
    port: str | None = None
    mac: str | None = None
    security_groups: list[str] = []

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Without groups, an entry has the shape it had before groups existed (recorded
        states and plans compare equal)."""
        out = handler(self)
        if not out.get("security_groups"):
            out.pop("security_groups", None)
        return out

    @field_validator("security_groups")
    @classmethod
    def _groups(cls, value: list[str]) -> list[str]:
        for g in value:
            check_group_id(g)
        if len(set(value)) != len(value):
            raise ValueError("a security group may be listed only once per NIC")
        if len(value) > 16:
            raise ValueError("at most 16 security groups per NIC")
        return value

    @field_validator("network", "bridge")
    @classmethod
    def _ifname(cls, value: str | None) -> str | None:
        if value is not None:
            _check_bridge(value)
        return value

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str | None) -> str | None:
        return None if value is None else _check_mac(value)

    @field_validator("port")
    @classmethod
    def _port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return str(PortId.parse(value))

    @model_validator(mode="after")
    def _one_of(self) -> NetworkEntry:
        if sum(v is not None for v in (self.network, self.bridge, self.port)) != 1:
            raise ValueError("give exactly one of 'network', 'bridge' and 'port'")
        if self.port is not None and self.mac is not None:
            raise ValueError("a port brings its own MAC: leave out 'mac'")
        return self

    @property
    def key(self) -> str:
        if self.port is not None:
            return "port"
        return "network" if self.network is not None else "bridge"

    @property
    def ifname(self) -> str:
        if self.port is not None:
            return PortId.parse(self.port).bridge
        return self.network if self.network is not None else str(self.bridge)

    @property
    def fixed_mac(self) -> str | None:
        """The MAC this entry decides: given, or the port's."""
        return PortId.parse(self.port).mac if self.port is not None else self.mac


def port_places(port: str, bridge: str, mac: str) -> bool:
    """Whether a recorded port id puts a NIC on `bridge` with `mac`."""
    try:
        parsed = PortId.parse(port)
    except ValueError:
        return False
    return (parsed.bridge, parsed.mac) == (bridge, mac)


def _check_bridge(value: str) -> str:
    if not is_interface_name(value):
        raise ValueError(f"{value!r} is not a bridge name ({INTERFACE_NAME_RULE})")
    return value


def _check_mac(value: str) -> str:
    value = value.lower()
    if not is_unicast_mac(value):
        raise ValueError(f"{value!r} is not a unicast MAC address like 52:54:00:12:34:56")
    return value


class ServerInputs(Inputs):
    image: str | None = prop(None, update=Disruption.REPLACE, description="an image id")
    boot_volume: str | None = prop(None, update=Disruption.REPLACE, description="a volume id")
    vcpus: int = prop(1, update=Disruption.RESTART, ge=1, le=64)
    memory_mib: int = prop(256, update=Disruption.RESTART, ge=32, le=1 << 20)
    root_gib: int | None = prop(
        None,
        update=Disruption.LIVE,
        ge=1,
        le=65536,
        description="size of the root disk made from `image` (at least the image's virtual "
        "size); grows in place; default: the image's size",
    )
    flavor: str | None = prop(
        None,
        update=Disruption.NONE,
        max_length=63,
        description="the site catalog flavor that set vcpus, memory_mib and root_gib (set by "
        "the loader from `flavor = NAME`; a record, changes nothing by itself)",
    )
    host: str | None = prop(
        None,
        update=Disruption.LIVE,
        computed_default=True,
        pattern=HOST_NAME.pattern,
        description="the site catalog host it runs on: named here, or chosen by the scheduler "
        "at plan time and recorded; a change between catalog hosts is a migration "
        "(`migration`), one to or from the provider's own libvirtd a replacement",
    )
    server_group: str | None = prop(
        None,
        update=Disruption.NONE,
        max_length=64,
        description="the id of a server_group of this stack: its policy places the server "
        "(at plan time; a record afterwards, it moves nothing)",
    )
    networks: list[NetworkEntry] = prop([], update=Disruption.LIVE, max_length=16)
    volumes: list[str] = prop([], update=Disruption.LIVE, max_length=20)
    user_data: str | None = prop(None, update=Disruption.REPLACE, max_length=1 << 20)
    ssh_keys: list[str] = prop([], update=Disruption.REPLACE, max_length=64)
    power_state: Literal["running", "shutoff"] = prop("running", update=Disruption.LIVE)
    ready: readiness.ReadyMode | None = prop(
        None,
        update=Disruption.NONE,
        description="when a started server counts as ready: auto | cloud-init | agent | "
        "console | none; default: the provider's `ready`",
    )
    machine: Literal["pc", "q35"] | None = prop(
        None,
        update=Disruption.REPLACE,
        computed_default=True,
        description="QEMU machine type; default: the provider's `machine`",
    )
    hostname: str | None = prop(
        None,
        update=Disruption.REPLACE,
        computed_default=True,
        max_length=253,
        description="default: from the address, 'web-0' for web[0]",
    )

    @field_validator("image", "boot_volume")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        return None if value is None else _check_volume_id(value)

    @field_validator("networks")
    @classmethod
    def _networks(cls, value: list[NetworkEntry]) -> list[NetworkEntry]:
        macs = [e.fixed_mac for e in value if e.fixed_mac is not None]
        if len(set(macs)) != len(macs):
            raise ValueError("two NICs cannot have the same MAC (a 'mac' or a port's)")
        return value

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, value: list[str]) -> list[str]:
        for v in value:
            _check_volume_id(v)
        if len(set(value)) != len(value):
            raise ValueError("a volume may be attached only once")
        return value

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                seed.check_hostname(value)
            except ProviderError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("ssh_keys")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        for key in value:
            try:
                seed.check_ssh_key(key)
            except ProviderError as exc:
                raise ValueError(str(exc)) from None
        return value
