"""The id formats providers hand each other through references, parsed in one place.

A port's id `<bridge>/<mac>/<ip>` names its network's bridge, its MAC and its address, so a
server NIC given a port id needs no lookup; a volume or image id `<pool>/<name>` names the
libvirt storage pool and volume. Each is a frozen value: `parse` checks a string (ValueError
saying what is wrong) and `str()` gives it back in canonical form.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from iacloud.validators import is_interface_name, is_unicast_mac


@dataclass(frozen=True)
class PortId:
    bridge: str
    mac: str  # lower-case, unicast
    ip: str  # canonical dotted IPv4

    def __str__(self) -> str:
        return f"{self.bridge}/{self.mac}/{self.ip}"

    @classmethod
    def parse(cls, value: object) -> PortId:
        parts = value.split("/") if isinstance(value, str) else []
        if len(parts) != 3:
            raise ValueError(f"{value!r} is not a port id (<bridge>/<mac>/<ip>)")
        bridge, mac, ip = parts
        if not is_interface_name(bridge):
            raise ValueError(f"{bridge!r} in port id {value!r} is not a bridge name")
        mac = mac.lower()
        if not is_unicast_mac(mac):
            raise ValueError(f"{mac!r} in port id {value!r} is not a unicast MAC address")
        try:
            ip = str(ipaddress.IPv4Address(ip))
        except ValueError:
            raise ValueError(f"{ip!r} in port id {value!r} is not an IPv4 address") from None
        return cls(bridge, mac, ip)


@dataclass(frozen=True)
class VolumeId:
    """A storage volume's id; its two names are checked by the provider that owns them."""

    pool: str
    name: str

    def __str__(self) -> str:
        return f"{self.pool}/{self.name}"

    @classmethod
    def parse(cls, value: object) -> VolumeId:
        if not isinstance(value, str) or value.count("/") != 1:
            raise ValueError(f"{value!r} is not a volume id (<pool>/<name>)")
        pool, name = value.split("/")
        return cls(pool, name)


__all__ = ["PortId", "VolumeId"]
