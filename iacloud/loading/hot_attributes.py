"""get_resource / get_attr of HOT resources as references to ours: a merged resource's
references go to the one that holds it (a Subnet's to its Net), a RandomString's get_resource is
its value, and attribute names and paths are translated (Heat's `first_address`, a port's
`[fixed_ips, 0, ip_address]`, a ResourceGroup's `refs` and `resource.N`, a Net's `name` as the
key of a server's `networks`)."""

from __future__ import annotations

import re
from typing import Any

from iacloud.loading.hot_functions import HotError, walk_functions
from iacloud.loading.hot_types import GROUP, Entry, redirect

# HOT attribute -> our attribute, per HOT type; a callable rewrites the whole path
_ATTRIBUTES: dict[str, dict[str, str]] = {
    "OS::Nova::Server": {
        "first_address": "first_address",
        "accessIPv4": "first_address",
        "networks": "addresses",
        "addresses": "addresses",
        "name": "name",
    },
    "OS::Neutron::Port": {"mac_address": "mac", "network_id": "network", "fixed_ips": "ip"},
    "OS::Neutron::Net": {},
    "OS::Neutron::Subnet": {"cidr": "cidr", "gateway_ip": "gateway"},
    "OS::Neutron::Router": {},
    "OS::Neutron::SecurityGroup": {},
    "OS::Neutron::FloatingIP": {
        "floating_ip_address": "floating_ip_address",
        "fixed_ip_address": "fixed_ip_address",
        "port_id": "port",
        "floating_network_id": "network",
        "router_id": "router",
    },
    "OS::Neutron::FloatingIPAssociation": {},
    "OS::Cinder::Volume": {},
    "OS::Cinder::VolumeSnapshot": {},
    "OS::Glance::WebImage": {},
    "OS::Nova::KeyPair": {
        "public_key": "public_key",
        "private_key": "private_key",
        "name": "key_name",
    },
    "OS::Heat::RandomString": {"value": "value"},
    "OS::Heat::None": {},
}


_RESOURCE_N = re.compile(r"resource\.(\d+)")


def rewrite_references(
    value: Any, raw: dict[str, Entry], net_names: dict[str, str], path: str, depth: int = 0
) -> Any:
    """get_resource / get_attr of HOT resources as references to ours."""

    def inline(entry: Entry, where: str) -> Any:
        if depth > 8:
            raise HotError("software configs refer to each other too deeply", where)
        return rewrite_references(entry.inline, raw, net_names, where, depth + 1)

    def visit(key: str, arg: Any, where: str) -> Any:
        if key == "get_resource":
            if not isinstance(arg, str):
                return {key: arg}
            entry = raw.get(arg.split("[", 1)[0])
            if entry is None:
                return {key: arg}
            if entry.inline is not None:
                return inline(entry, where)
            if entry.hot_type == "OS::Heat::RandomString":
                return {"get_attr": [arg, "value"]}
            if entry.hot_type == "OS::Nova::KeyPair":
                return {"get_attr": [arg, "key_name"]}
            return {key: redirect(raw, arg)}
        if not (isinstance(arg, list) and arg and isinstance(arg[0], str)):
            return {key: arg}
        name, rest = arg[0], list(arg[1:])
        entry = raw.get(name.split("[", 1)[0])
        if entry is None:
            return {key: arg}
        if entry.inline is not None:
            if rest != ["config"]:
                raise HotError(f"a {entry.hot_type} has one attribute: config", where)
            return inline(entry, where)
        if entry.hot_type == GROUP or (entry.count is not None and "[" not in name):
            return _group_attr(name, rest, entry, where, net_names)
        return {"get_attr": _member_attr(name, rest, entry, where, net_names)}

    return walk_functions(value, visit, path)


def _group_attr(
    name: str, rest: list[Any], entry: Entry, where: str, net_names: dict[str, str]
) -> Any:
    if not rest:
        raise HotError("get_attr of a ResourceGroup needs an attribute", where)
    attr, path = rest[0], rest[1:]
    if attr == "refs":
        if path:
            return {"get_resource": f"{name}[{path[0]}]"}
        return {"get_resource": name}
    if attr == "refs_map":
        raise HotError("refs_map is not supported: use refs", where)
    match = _RESOURCE_N.fullmatch(str(attr))
    if match:
        member = f"{name}[{match.group(1)}]"
        if not path:
            return {"get_resource": member}
        return {"get_attr": _member_attr(member, path, entry, where, net_names)}
    if attr in ("attributes", "removed_rsrc_list"):
        raise HotError(
            f"the ResourceGroup attribute '{attr}' is not supported",
            where,
            "get_attr [GROUP, ATTRIBUTE] gives the list of the members' values",
        )
    return {"get_attr": _member_attr(name, rest, entry, where, net_names)}


def _member_attr(
    name: str, rest: list[Any], entry: Entry, where: str, net_names: dict[str, str]
) -> list[Any]:
    if not rest:
        raise HotError("get_attr without an attribute (all attributes) is not supported", where)
    attr, path = str(rest[0]), list(rest[1:])
    table = _ATTRIBUTES.get(entry.hot_type, {})
    if attr not in table:
        known = ", ".join(table) or "none"
        raise HotError(
            f"attribute '{attr}' of {entry.hot_type} is not supported",
            where,
            f"supported: {known}",
        )
    ours = table[attr]
    target = entry.into if entry.into is not None else name
    if entry.hot_type == "OS::Neutron::Port" and attr == "fixed_ips":
        # [fixed_ips, 0, ip_address]: an iacloud port has one address
        if len(path) < 2 or path[0] not in (0, "0") or path[1] not in ("ip_address", "subnet_id"):
            raise HotError("fixed_ips is read as [PORT, fixed_ips, 0, ip_address]", where)
        return [target, "ip" if path[1] == "ip_address" else "network", *path[2:]]
    if entry.hot_type == "OS::Nova::Server" and attr in ("networks", "addresses") and path:
        path[0] = net_names.get(str(path[0]), path[0])
        if attr == "addresses" and len(path) >= 3 and path[2] == "addr":
            path = path[:2]  # Heat's {addr: IP} entries are our plain IPs
    return [target, ours, *path]
