"""Names of everything the netlink provider creates, and the ownership tag they carry.

Every name is derived from a hash, never from user text, so it is short (Linux interface names
are at most 15 bytes), safe in paths and argument lists, and found again after a crash:

- network bridge, the network's id: `iacb` + 10 hex of (stack id, address, cidr, gateway,
  segment). S below stands for those 10 hex digits.
- DHCP veth: `iacd` + S on the bridge, `iacv` + S in the namespace `iacloud-dhcp-` + S.
- segment: VLAN sub-interface `iacq` + S, VXLAN device `iacx` + S.
- router namespace, the router's id: `iacloud-rtr-` + 10 hex of (stack id, address).
- router leg: `iacr` + L on the bridge, `iacv` + L in the router, L = 10 hex of (router id,
  bridge).
- router gateway leg (its `external` network): `iacg` + G on the bridge, `iacv` + G in the
  router, G = 10 hex of (router id, bridge, "external").

The bridge name also hashes the inputs that force a replacement, so a replaced network gets a
new id: servers and ports that name the old id then see a change instead of silently keeping a
NIC on a bridge that was deleted under them (and create-before-destroy would not collide).

The ownership tag `iacloud:<stack id>:<address>` is the IFLA_IFALIAS of every link in the root
namespace (bridge, bridge ends of veths, VLAN and VXLAN devices).
"""

from __future__ import annotations

import hashlib
import re

from iacloud.validators import INTERFACE_NAME_RULE, is_interface_name

TAG_PREFIX = "iacloud"
ALIAS_MAX = 255  # IFALIASZ - 1

BRIDGE_PREFIX = "iacb"
DHCP_VETH_PREFIX = "iacd"
INNER_VETH_PREFIX = "iacv"
VLAN_PREFIX = "iacq"
VXLAN_PREFIX = "iacx"
ROUTER_LEG_PREFIX = "iacr"
ROUTER_GW_PREFIX = "iacg"
DHCP_NS_PREFIX = "iacloud-dhcp-"
ROUTER_NS_PREFIX = "iacloud-rtr-"

_OWN_BRIDGE = re.compile(r"iacb([0-9a-f]{10})")
_ROUTER_NS = re.compile(r"iacloud-rtr-[0-9a-f]{10}")


def digest(*parts: str) -> str:
    """10 hex digits (40 bits) of a SHA-256 over the parts; NUL-separated so ("a", "bc") and
    ("ab", "c") differ."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:10]


def validate_ifname(name: str) -> str:
    """An interface name a user gave (an uplink, a network id): `iacloud.validators`."""
    if not is_interface_name(name):
        raise ValueError(f"'{name}' is not a valid interface name ({INTERFACE_NAME_RULE})")
    return name


def is_router_namespace(name: str) -> bool:
    return bool(_ROUTER_NS.fullmatch(name))


def tag(stack_id: str, address: str) -> str:
    return f"{TAG_PREFIX}:{stack_id}:{address}"


def parse_tag(alias: str | None) -> tuple[str, str] | None:
    """(stack id, address) of an ownership tag, or None for any other alias."""
    if not alias:
        return None
    parts = alias.split(":", 2)
    if len(parts) != 3 or parts[0] != TAG_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def bridge_name(stack_id: str, address: str, identity: str) -> str:
    return BRIDGE_PREFIX + digest(stack_id, address, identity)


def bridge_suffix(bridge: str) -> str:
    """The 10 hex digits shared by a network's auxiliary objects. A bridge iacloud did not name
    (an imported one) gets a hash of its name instead."""
    m = _OWN_BRIDGE.fullmatch(bridge)
    return m.group(1) if m else digest(bridge)


class NetworkNames:
    """The names of one network's objects, all derived from its bridge name."""

    def __init__(self, bridge: str) -> None:
        self.bridge = validate_ifname(bridge)
        s = bridge_suffix(bridge)
        self.dhcp_namespace = DHCP_NS_PREFIX + s
        self.dhcp_veth = DHCP_VETH_PREFIX + s  # enslaved to the bridge
        self.dhcp_inner = INNER_VETH_PREFIX + s  # in the namespace, holds the server address
        self.vlan = VLAN_PREFIX + s
        self.vxlan = VXLAN_PREFIX + s


def router_namespace(stack_id: str, address: str) -> str:
    return ROUTER_NS_PREFIX + digest(stack_id, address)


def router_leg(router_ns: str, bridge: str) -> tuple[str, str]:
    """(bridge end, router end) of the veth pair joining a router to a network."""
    d = digest(router_ns, bridge)
    return ROUTER_LEG_PREFIX + d, INNER_VETH_PREFIX + d


def router_gateway_leg(router_ns: str, bridge: str) -> tuple[str, str]:
    """(bridge end, router end) of the veth pair joining a router to its external network."""
    d = digest(router_ns, bridge, "external")
    return ROUTER_GW_PREFIX + d, INNER_VETH_PREFIX + d


def default_mac(stack_id: str, address: str) -> str:
    """A locally administered unicast MAC under QEMU's 52:54:00 prefix, stable per resource."""
    h = digest(stack_id, address, "mac")[:6]
    return "52:54:00:" + ":".join(h[i : i + 2] for i in range(0, 6, 2))


def port_record(stack_id: str, address: str) -> str:
    """File name of a port's reservation record in its network's state directory."""
    return "port-" + digest(stack_id, address) + ".json"


def floating_record(stack_id: str, address: str) -> str:
    """File name of a floating IP's record in its external network's state directory."""
    return "fip-" + digest(stack_id, address) + ".json"
