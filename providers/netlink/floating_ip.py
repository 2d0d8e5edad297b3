"""The `floating_ip` resource: an address of an external network that reaches a port's fixed
address through a router (Neutron's floating IP).

Inputs, as Heat's OS::Neutron::FloatingIP has them (floating_network, floating_ip_address,
port_id): `network` (an `external = true` network), `ip` (optional), `port` (optional: a
floating IP without a port is taken from the network but reaches nothing, as in Neutron), and
`router` (optional: the router whose external leg is on `network` and which joins the port's
network; found by those two facts when left out).

Why `ip` is optional and allocated: Neutron allocates, so a Heat user leaves it out. The choice
is deterministic (the lowest host address of the network that is not the gateway, the DHCP
server's, inside the DHCP range, a port's, a router's external address or another floating
IP's), is made under the network's lock at create, and is recorded: a later plan keeps it.

Why a port and not a server NIC: the NAT needs the fixed address before the guest runs, and a
port has one by definition; a DHCP NIC's address is only known from a lease, which may change
behind the rules. A server NIC gets a floating IP by taking a port (`networks = [{ port =
... }]`), as in Neutron, where a floating IP is associated with a port too.

On the host: the record `<state_dir>/<external bridge>/floating/fip-<hash>.json` (stack id,
address, ip, port, router), and, while it has a port, in the router's namespace the NAT table
and the /32 on the loopback of `floating_nat`. Changing `port` (or `router`) re-points the
address live: the table is replaced in one nft transaction (or dropped in the old router and
made in the new one), and the connections tracked for the address are dropped, so an open
connection does not stay with the old port. Reading checks the table and the address of each
associated floating IP (one `nft` run and one address dump per router): a table or address
removed by hand reads as `port` unset, which the next plan shows as drift and the next apply
puts back.

Id: `<external bridge>/<ip>`, e.g. `iacb0123456789/198.19.0.5`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from ipaddress import IPv4Address
from typing import Any

from pydantic import field_validator

from iacloud.errors import Diagnostic, ProviderError
from iacloud.ids import PortId
from iacloud.provider import ObjectRef, Observed, TaggedObject
from iacloud.providers.netlink import floating_nat, names, netns
from iacloud.providers.netlink.base import NetlinkResource
from iacloud.providers.netlink.floating_nat import FloatingNat
from iacloud.providers.netlink.links import LinkTable
from iacloud.providers.netlink.network_inputs import plan_of
from iacloud.providers.netlink.records import NetworkFiles, read_json, write_json
from iacloud.providers.netlink.subnet import SubnetPlan, address_problem, ipv4
from iacloud.schema import Disruption, Inputs, prop


class FloatingIpInputs(Inputs):
    network: str = prop(update=Disruption.REPLACE, description="the external network's id")
    ip: str | None = prop(
        None,
        update=Disruption.REPLACE,
        computed_default=True,
        description="default: allocated, the lowest free address outside the DHCP range",
    )
    port: str | None = prop(
        None, update=Disruption.LIVE, description="the port it reaches (a port id); none: kept"
    )
    router: str | None = prop(
        None,
        update=Disruption.LIVE,
        computed_default=True,
        description="the router doing the NAT; default: the one on both networks",
    )

    @field_validator("network")
    @classmethod
    def _network(cls, v: str) -> str:
        return names.validate_ifname(v)

    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        return None if v is None else ipv4(v)

    @field_validator("port")
    @classmethod
    def _port(cls, v: str | None) -> str | None:
        return None if v is None else str(PortId.parse(v))

    @field_validator("router")
    @classmethod
    def _router(cls, v: str | None) -> str | None:
        if v is not None and not names.is_router_namespace(v):
            raise ValueError(f"'{v}' is not a router id (iacloud-rtr-<10 hex digits>)")
        return v


def floating_id(bridge: str, ip: str) -> str:
    return f"{bridge}/{ip}"


def parse_floating_id(value: str) -> tuple[str, str]:
    """(bridge, ip) of a floating IP id; ValueError saying what is wrong."""
    parts = value.split("/") if isinstance(value, str) else []
    if len(parts) != 2:
        raise ValueError(f"{value!r} is not a floating IP id (<external bridge>/<ip>)")
    return names.validate_ifname(parts[0]), ipv4(parts[1])


def taken_addresses(
    files: NetworkFiles, routers: Sequence[dict[str, Any]], mine: tuple[str, str]
) -> dict[IPv4Address, str]:
    """Addresses of the network that someone holds, with who: ports, routers' external legs and
    other floating IPs (`mine`: this floating IP's (stack id, address), not counted)."""
    out: dict[IPv4Address, str] = {}
    for p in files.read_ports():
        out[IPv4Address(p["ip"])] = f"port '{p.get('address')}'"
    for r in routers:
        ext = r.get("external")
        if isinstance(ext, dict) and ext.get("network") == files.bridge and ext.get("ip"):
            with contextlib.suppress(ValueError):
                out[IPv4Address(ext["ip"])] = f"router '{r.get('address')}' (its external ip)"
    for f in files.read_floating():
        if (f.get("stack_id"), f.get("address")) != mine:
            out[IPv4Address(f["ip"])] = f"floating IP '{f.get('address')}'"
    return out


def allocate(plan: SubnetPlan, dhcp: bool, taken: set[IPv4Address]) -> IPv4Address | None:
    """The lowest host address that is free: not reserved (gateway, DHCP server), not taken,
    outside the DHCP range when DHCP is on. Steps over the range in one jump."""
    ip = plan.cidr.network_address + 1
    last = plan.cidr.broadcast_address - 1
    reserved = set(plan.reserved())
    while ip <= last:
        if dhcp and plan.in_dhcp_range(ip):
            assert plan.range_end is not None
            ip = plan.range_end + 1
            continue
        if ip not in reserved and ip not in taken:
            return ip
        ip += 1
    return None


def ip_problem(plan: SubnetPlan, dhcp: bool, ip: IPv4Address, where: str) -> str | None:
    """Why `ip` cannot be a floating IP of the network `where`, or None (at load time too)."""
    problem = address_problem(plan, ip, where)
    if problem is None and dhcp and plan.in_dhcp_range(ip):
        problem = (
            f"{ip} is inside the DHCP range of {where} ({plan.range_start} to "
            f"{plan.range_end}): its DHCP server could hand it to another host"
        )
    return problem


class FloatingIp(NetlinkResource):
    type_name = "floating_ip"
    Inputs = FloatingIpInputs
    attributes = (
        "id",
        "floating_ip_address",
        "fixed_ip_address",
        "network",
        "port",
        "router",
    )

    # ---- plan time -----------------------------------------------------------------------

    def check(self, address: str, inputs: Inputs, prior: Observed | None) -> list[Diagnostic]:
        """Against the external network's record, when it exists already."""
        assert isinstance(inputs, FloatingIpInputs)
        files = self.state.network(inputs.network)
        record = files.read_record()
        if record is None:
            return []
        return [
            Diagnostic(message, address=address, field=field)
            for field, message in self._problems(files, record, address, inputs.ip)
        ]

    def _routers(self) -> list[dict[str, Any]]:
        out = []
        for path in self.state.routers():
            data = read_json(path)
            if data:
                out.append({**data, "namespace": path.stem})
        return out

    def _problems(
        self, files: NetworkFiles, record: dict[str, Any], address: str, ip: str | None
    ) -> list[tuple[str, str]]:
        where = f"network {files.bridge}"
        if not record["inputs"].get("external"):
            return [("network", f"{where} is not an external network (set external = true on it)")]
        if ip is None:
            return []
        dhcp = bool(record["inputs"].get("dhcp"))
        problem = ip_problem(plan_of(record), dhcp, IPv4Address(ip), where)
        if problem:
            return [("ip", problem)]
        holder = taken_addresses(files, self._routers(), (self.stack.id, address)).get(
            IPv4Address(ip)
        )
        if holder:
            return [("ip", f"{ip} on {where} is already taken by {holder}")]
        return []

    # ---- the router ----------------------------------------------------------------------

    def _router_for(self, bridge: str, port: PortId, given: str | None) -> str:
        """The namespace of the router that has its external leg on `bridge` and a leg on the
        port's network (the given one, checked, or the only one there is)."""
        candidates = []
        for r in self._routers():
            ext = r.get("external")
            if isinstance(ext, dict) and ext.get("network") == bridge:
                candidates.append(r["namespace"])
        if given is not None and given not in candidates:
            raise ProviderError(
                f"router {given} has no external leg on network {bridge} "
                f"(give it external = {{ network = ..., ip = ... }})"
            )
        wanted = [given] if given is not None else candidates
        table = LinkTable.fetch(
            [port.bridge, bridge]
            + [names.router_leg(ns, port.bridge)[0] for ns in wanted]
            + [names.router_gateway_leg(ns, bridge)[0] for ns in wanted]
        )
        internal, external = table.bridge(port.bridge), table.bridge(bridge)
        if internal is None or external is None:
            missing = port.bridge if internal is None else bridge
            raise ProviderError(f"network {missing} does not exist (no such bridge)")
        fit = []
        for ns in wanted:
            leg = table.get(names.router_leg(ns, port.bridge)[0])
            gw = table.get(names.router_gateway_leg(ns, bridge)[0])
            if leg and gw and leg.master == internal.index and gw.master == external.index:
                fit.append(ns)
        if given is not None and not fit:
            raise ProviderError(
                f"router {given} does not join the port's network {port.bridge} "
                f"(or its external leg on {bridge} is missing)"
            )
        if not fit:
            raise ProviderError(
                f"no router joins both network {port.bridge} (the port's) and the external "
                f"network {bridge}: a floating IP reaches its port through such a router"
            )
        if len(fit) > 1:
            raise ProviderError(
                f"routers {', '.join(sorted(fit))} all join networks {port.bridge} and "
                f"{bridge}: name one with router = ..."
            )
        return fit[0]

    @staticmethod
    def _nat(ns: str, bridge: str, ip: str, port: str) -> FloatingNat:
        return FloatingNat(ip, PortId.parse(port).ip, names.router_gateway_leg(ns, bridge)[1])

    @staticmethod
    def _unset(ns: str | None, ip: str) -> None:
        if ns and netns.exists(ns):
            floating_nat.remove(ns, ip)
            floating_nat.remove_address(ns, ip)
            floating_nat.forget_connections(ns, ip)

    def _set(self, ns: str, bridge: str, ip: str, port: str) -> None:
        floating_nat.add_address(ns, ip)
        floating_nat.apply(ns, self._nat(ns, bridge, ip, port))

    # ---- read ----------------------------------------------------------------------------

    def read(self, refs: Sequence[ObjectRef]) -> dict[str, Observed]:
        floating: dict[str, list[dict[str, Any]]] = {}  # per network, read once
        found: dict[str, tuple[str, dict[str, Any]]] = {}
        for ref in refs:
            try:
                if ref.id is not None:
                    bridge, ip = parse_floating_id(ref.id)
                else:
                    bridge, ip = names.validate_ifname(ref.inputs.get("network", "")), ""
            except ValueError:
                continue
            if bridge not in floating:
                floating[bridge] = self.state.network(bridge).read_floating()
            record = self._match(floating[bridge], ref.address, ip)
            if record is not None:
                found[ref.address] = (bridge, record)
        namespaces = self.provider.listings.namespaces()
        nats: dict[str, dict[str, FloatingNat]] = {}
        held: dict[str, set[str]] = {}
        for _, record in found.values():
            ns = record.get("router")
            if isinstance(ns, str) and record.get("port") and ns not in nats:
                ok = names.is_router_namespace(ns) and ns in namespaces
                nats[ns] = floating_nat.read(ns) if ok else {}
                held[ns] = floating_nat.addresses(ns) if ok else set()
        return {
            address: self._observe(bridge, record, nats, held)
            for address, (bridge, record) in found.items()
        }

    def _match(self, records: list[dict[str, Any]], address: str, ip: str) -> dict[str, Any] | None:
        mine = [
            r for r in records if (r.get("stack_id"), r.get("address")) == (self.stack.id, address)
        ]
        if not ip:
            return mine[0] if mine else None
        same = [r for r in records if r["ip"] == ip]
        same.sort(key=lambda r: r not in mine)
        return same[0] if same else None

    def _observe(
        self,
        bridge: str,
        record: dict[str, Any],
        nats: dict[str, dict[str, FloatingNat]],
        held: dict[str, set[str]],
    ) -> Observed:
        ip = record["ip"]
        port, router = record.get("port"), record.get("router")
        in_place = False
        if isinstance(port, str) and isinstance(router, str):
            with contextlib.suppress(ValueError):
                expected = self._nat(router, bridge, ip, port)
                in_place = nats.get(router, {}).get(ip) == expected and ip in held.get(router, ())
        id = floating_id(bridge, ip)
        observed_port = port if in_place else None
        return Observed(
            id=id,
            inputs={"network": bridge, "ip": ip, "port": observed_port, "router": router},
            attributes={
                "id": id,
                "floating_ip_address": ip,
                "fixed_ip_address": PortId.parse(port).ip if in_place and port else None,
                "network": bridge,
                "port": observed_port,
                "router": router,
            },
        )

    def _read_one(self, address: str, bridge: str, ip: str) -> Observed:
        observed = self.read([ObjectRef(address=address, id=floating_id(bridge, ip))]).get(address)
        if observed is None:
            raise ProviderError(f"the record of floating IP {ip} vanished right after it was made")
        return observed

    # ---- create / update / delete --------------------------------------------------------

    def create(self, address: str, inputs: Inputs) -> Observed:
        assert isinstance(inputs, FloatingIpInputs)
        bridge = inputs.network
        files = self.state.network(bridge)
        port = PortId.parse(inputs.port) if inputs.port else None
        router = self._router_for(bridge, port, inputs.router) if port else inputs.router
        path = files.floating_ip(self.stack.id, address)
        with self.network_lock(bridge):
            record = files.read_record()
            if record is None:
                raise ProviderError(f"network {bridge} does not exist (no record in {files.dir})")
            problems = self._problems(files, record, address, inputs.ip)
            if problems:
                raise ProviderError("; ".join(message for _, message in problems))
            ip = inputs.ip
            if ip is None:
                taken = taken_addresses(files, self._routers(), (self.stack.id, address))
                found = allocate(plan_of(record), bool(record["inputs"].get("dhcp")), set(taken))
                if found is None:
                    raise ProviderError(f"network {bridge} has no free address left")
                ip = str(found)
            # the record first: an interrupted create is found again and undone
            write_json(
                path,
                {
                    "stack_id": self.stack.id,
                    "address": address,
                    "ip": ip,
                    "port": inputs.port,
                    "router": router,
                },
            )
        try:
            if router and inputs.port:
                self._set(router, bridge, ip, inputs.port)
        except BaseException:
            with contextlib.suppress(Exception):
                self._unset(router, ip)
            path.unlink(missing_ok=True)
            raise
        return self._read_one(address, bridge, ip)

    def update(
        self, address: str, prior: Observed, inputs: Inputs, changed: frozenset[str]
    ) -> Observed:
        assert isinstance(inputs, FloatingIpInputs)
        bridge, ip = parse_floating_id(prior.id)
        files = self.state.network(bridge)
        record = self._match(files.read_floating(), address, ip)
        if record is None:
            raise ProviderError(f"floating IP {ip} has no record (removed outside iacloud?)")
        port = PortId.parse(inputs.port) if inputs.port else None
        router = self._router_for(bridge, port, inputs.router) if port else inputs.router
        old, record_port = record.get("router"), record.get("port")
        if old and (old != router or not inputs.port):
            self._unset(old, ip)
        record.update(port=inputs.port, router=router)
        write_json(files.floating_ip(record["stack_id"], record["address"]), record)
        if router and inputs.port:
            self._set(router, bridge, ip, inputs.port)  # one nft transaction: live re-point
            if old == router and record_port != inputs.port:
                # connections opened before keep their NAT binding: drop them
                floating_nat.forget_connections(router, ip)
        return self._read_one(address, bridge, ip)

    def delete(self, address: str, prior: Observed) -> None:
        try:
            bridge, ip = parse_floating_id(prior.id)
        except ValueError:
            return
        files = self.state.network(bridge)
        with self.network_lock(bridge):
            record = self._match(files.read_floating(), address, ip)
            if record is None:
                return
            router = record.get("router")
            if isinstance(router, str) and names.is_router_namespace(router):
                self._unset(router, ip)
            files.floating_ip(record["stack_id"], record["address"]).unlink(missing_ok=True)

    def import_(self, address: str, id: str) -> Observed:
        try:
            bridge, ip = parse_floating_id(id)
        except ValueError as exc:
            raise ProviderError(str(exc)) from None
        observed = self.read([ObjectRef(address=address, id=id)]).get(address)
        if observed is None:
            raise ProviderError(f"no floating IP {ip} on network {bridge}")
        return observed

    def list_tagged(self) -> list[TaggedObject]:
        return [
            TaggedObject(
                "floating_ip",
                floating_id(files.bridge, r["ip"]),
                r.get("stack_id"),
                r.get("address"),
            )
            for files in self.state.networks()
            for r in files.read_floating()
        ]


__all__ = [
    "FloatingIp",
    "FloatingIpInputs",
    "allocate",
    "floating_id",
    "ip_problem",
    "parse_floating_id",
    "taken_addresses",
]
