"""Checks across a stack's networks, ports and routers, made at load time (`validate`, `plan`).

A port usually names its network as `{ get_resource = "lan" }`, whose id exists only after
apply, but the network's own inputs are in the same stack: the subnet a port must fit in is
known before anything is created. Without these checks a first apply would create the network
and then fail on the port. The rules are the ones `check` and `create` apply against the
networks' records (`subnet.address_problem`, `gateway.problems`), so the messages agree:

- a port's ip: inside its network's cidr, not the network or broadcast address, the gateway or
  the DHCP server; no two ports (or router gateway legs) of one network with the same ip, no
  two ports with the same explicit mac;
- a router: no network listed twice, no two networks with overlapping cidrs, no external
  network among its internal legs; its `external` network marked external, its address a free
  host address outside that network's DHCP range, its subnet apart from the internal ones;
- a floating IP: its network marked external, its ip (if given) a free host address outside
  the DHCP range, not held by a port or router of the stack; and when a router of the stack
  joins both its network and its port's, that router named in `router`: the engine orders
  steps by references only, so without it the floating IP could be made before the router.

What is not known from the stack alone (a network named by a literal id, a cidr computed by
get_attr, a default MAC that hashes the stack's id) is left to the plan-time `check`. A field
that failed its own schema was reported by the loader and is skipped here.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from pydantic import ValidationError

from iacloud.errors import Diagnostic
from iacloud.providers.netlink import gateway
from iacloud.providers.netlink.floating_ip import ip_problem
from iacloud.providers.netlink.network_inputs import NetworkInputs, resolve
from iacloud.providers.netlink.port import mac_address
from iacloud.providers.netlink.subnet import SubnetPlan, address_problem, ipv4
from iacloud.stack_view import Reference, ResourceView, is_known

# the fields a network's subnet is computed from
_SUBNET_FIELDS = ("cidr", "gateway", "dhcp", "dhcp_range", "external")
_LITERAL = "id:"  # key prefix of a network named by its id rather than a reference


@dataclass(frozen=True)
class _Network:
    label: str  # "network 'lan'"
    plan: SubnetPlan
    inputs: dict[str, Any]


@dataclass
class _Holders:
    """Who already took which address of one network, in file order."""

    ips: dict[IPv4Address, str] = field(default_factory=dict)
    macs: dict[str, str] = field(default_factory=dict)


def _network(rc: ResourceView) -> _Network | None:
    data = {k: rc.properties[k] for k in _SUBNET_FIELDS if k in rc.properties}
    if not is_known(data):
        return None  # computed from another resource: known at plan time only
    try:
        plan, resolved = resolve(NetworkInputs.model_validate(data))
    except (ValidationError, ValueError, TypeError):
        return None  # reported by the loader
    return _Network(f"network '{rc.address}'", plan, resolved)


def _key(value: Any) -> str | None:
    """Which network a reference names: its address in the stack, or `id:` + a literal id;
    None when it is neither (a counted network without index, a computed string)."""
    if isinstance(value, Reference) and (
        value.attribute is None or (value.attribute in ("id", "bridge") and not value.path)
    ):
        return value.address
    if isinstance(value, str):
        return _LITERAL + value
    return None


def _label(key: str, networks: Mapping[str, _Network]) -> str:
    if key in networks:
        return networks[key].label
    return f"network {key[len(_LITERAL) :]}" if key.startswith(_LITERAL) else f"network '{key}'"


def _ip(value: Any) -> IPv4Address | None:
    try:
        return IPv4Address(ipv4(value)) if isinstance(value, str) else None
    except ValueError:
        return None


def _mac(value: Any) -> str | None:
    try:
        return mac_address(value) if isinstance(value, str) else None
    except ValueError:
        return None


class _Checker:
    def __init__(self, resources: Mapping[str, ResourceView]) -> None:
        self.resources = resources
        self.networks = {
            address: net
            for address, rc in resources.items()
            if rc.type == "network" and (net := _network(rc)) is not None
        }
        self.holders: dict[str, _Holders] = {}
        self.out: list[Diagnostic] = []

    def report(self, address: str, field_: str, message: str) -> None:
        self.out.append(Diagnostic(message, address=address, field=field_))

    def take(
        self,
        key: str,
        address: str,
        what: str,
        ip: tuple[str, IPv4Address | None],
        mac: tuple[str, str | None] = ("", None),
    ) -> None:
        """Record that `what` holds the (field, value) ip and mac on the network; report what
        another resource holds already."""
        holders = self.holders.setdefault(key, _Holders())
        label = _label(key, self.networks)
        (ip_field, ip_value), (mac_field, mac_value) = ip, mac
        self.take_one(holders.ips, ip_value, address, ip_field, what, label, "taken")
        self.take_one(holders.macs, mac_value, address, mac_field, what, label, "used")

    def take_one(
        self,
        held: dict[Any, str],
        value: Any,
        address: str,
        field_: str,
        what: str,
        label: str,
        verb: str,
    ) -> None:
        if value is None:
            return
        if value in held:
            self.report(address, field_, f"{value} on {label} is already {verb} by {held[value]}")
        else:
            held[value] = what

    def port(self, address: str, props: Mapping[str, Any]) -> None:
        key = _key(props.get("network"))
        if key is None:
            return
        ip = _ip(props.get("ip"))
        net = self.networks.get(key)
        if ip is not None and net is not None:
            problem = address_problem(net.plan, ip, net.label)
            if problem:
                self.report(address, "ip", problem)
                ip = None  # not on the network: it takes nothing there
        what = f"port '{address}'"
        self.take(key, address, what, ("ip", ip), ("mac", _mac(props.get("mac"))))

    def router(self, address: str, props: Mapping[str, Any]) -> None:
        listed = props.get("networks")
        joined: dict[str, tuple[int, _Network | None]] = {}
        if isinstance(listed, list):
            for i, value in enumerate(listed):
                key = _key(value)
                if key is None:
                    continue
                if key in joined:
                    # a list of literal ids was validated whole by the schema, which said so
                    if not is_known(listed):
                        self.report(
                            address,
                            f"networks[{i}]",
                            f"{_label(key, self.networks)} is listed twice "
                            f"(also networks[{joined[key][0]}])",
                        )
                    continue
                net = self.networks.get(key)
                joined[key] = (i, net)
                if net is not None and net.inputs.get("external"):
                    self.report(
                        address,
                        f"networks[{i}]",
                        f"{net.label} is external: its gateway belongs to the outside router, "
                        f"so a router joins it with external = {{ network = ..., ip = ... }}",
                    )
            known = [(i, net) for i, net in joined.values() if net is not None]
            for (i, a), (j, b) in itertools.combinations(known, 2):
                if a.plan.cidr.overlaps(b.plan.cidr):
                    self.report(
                        address,
                        f"networks[{j}]",
                        f"{b.label} ({b.plan.cidr}) overlaps {a.label} ({a.plan.cidr}, "
                        f"networks[{i}]): a router cannot route between overlapping subnets",
                    )
        external = props.get("external")
        if isinstance(external, dict):
            # literal ids on both sides: the schema compared them already
            compared = is_known(listed) and is_known(external)
            self.external(address, external, joined, compared)

    def external(
        self,
        address: str,
        external: Mapping[str, Any],
        joined: Mapping[str, tuple[int, _Network | None]],
        compared: bool,
    ) -> None:
        key = _key(external.get("network"))
        if key is None:
            return
        ip = _ip(external.get("ip"))
        if key in joined:
            if compared:
                return
            self.report(
                address,
                "external.network",
                f"{_label(key, self.networks)} is both in networks "
                f"(networks[{joined[key][0]}]) and the external network",
            )
            return
        net = self.networks.get(key)
        if net is not None:
            internal = {n.label: n.plan for _, n in joined.values() if n is not None}
            found = gateway.problems(net.label, net.plan, net.inputs, ip, internal)
            for field_, message in found:
                self.report(address, field_, message)
            if any(f == "external.ip" for f, _ in found):
                ip = None
        self.take(key, address, f"router '{address}' (its external ip)", ("external.ip", ip))

    def floating_ip(self, address: str, props: Mapping[str, Any]) -> None:
        key = _key(props.get("network"))
        if key is None:
            return
        ip = _ip(props.get("ip"))
        net = self.networks.get(key)
        if net is not None:
            if not net.inputs.get("external"):
                self.report(
                    address,
                    "network",
                    f"{net.label} is not an external network (set external = true on it)",
                )
            elif ip is not None:
                problem = ip_problem(net.plan, bool(net.inputs.get("dhcp")), ip, net.label)
                if problem:
                    self.report(address, "ip", problem)
                    ip = None
        self.take(key, address, f"floating IP '{address}'", ("ip", ip))
        if props.get("router") is None and props.get("port") is not None:
            self.unnamed_router(address, key, props["port"])

    def unnamed_router(self, address: str, network: str, port: Any) -> None:
        """A router of the stack that would carry the floating IP must be named in it."""
        target = self.resources.get(port.address) if isinstance(port, Reference) else None
        if target is None or target.type != "port":
            return
        port_network = _key(target.properties.get("network"))
        for other, rc in self.resources.items():
            ext = rc.properties.get("external") if rc.type == "router" else None
            listed = rc.properties.get("networks")
            if not isinstance(ext, dict) or not isinstance(listed, list):
                continue
            if _key(ext.get("network")) == network and port_network in map(_key, listed):
                self.report(
                    address,
                    "router",
                    f"router '{other}' of this stack joins both networks: name it with "
                    f'router = {{ get_resource = "{other}" }} so that it is made before the '
                    f"floating IP",
                )
                return

    def run(self) -> list[Diagnostic]:
        for address, rc in self.resources.items():  # file order: the first holder keeps it
            if rc.type == "port":
                self.port(address, rc.properties)
            elif rc.type == "router":
                self.router(address, rc.properties)
            elif rc.type == "floating_ip":
                self.floating_ip(address, rc.properties)
        return self.out


def check_stack(resources: Mapping[str, ResourceView]) -> list[Diagnostic]:
    """Every problem between the stack's netlink resources (see the module docstring)."""
    return _Checker(resources).run()
