"""The `port` resource: a fixed MAC and IPv4 address on a network (a Neutron port).

A port is a DHCP reservation: `<state_dir>/<bridge>/ports/port-<hash>.json` holds its MAC, IP
and ownership (stack id, address), and the network's dnsmasq serves it as `--dhcp-host=MAC,IP`
(restarted on every change, see `dnsmasq`). A server NIC with that MAC on that bridge gets
that address.

Id: `<bridge>/<mac>/<ip>`, e.g. `iacb0123456789/52:54:00:ab:cd:ef/198.18.10.5`. Interface names,
MACs and IPv4 addresses cannot contain '/', so the libvirt provider splits it in three to learn
which bridge to attach the NIC to and which MAC to give it, without asking this provider.

Reading: a port exists while its record does and, if the network's dnsmasq runs, that dnsmasq
serves the reservation; a reservation that is not in effect reads as absent so the next apply
puts it back.

Security groups: `security_groups` lists groups whose rules filter the NIC that takes the port
(a server NIC on it, or `device`: an interface already on the bridge that iacloud did not
make, such as a namespace's or a container's veth). The port writes a member record (its MAC,
IP, groups and device) to the host's security group facts and the ruleset is rebuilt
(`iacloud.secgroups`); changing either field is a live update.

Uniqueness: `check` and `create` refuse an IP or MAC that another port's record on the same
network already holds (naming that port). Ports of one stack that are still to be created are
compared with each other, and with their network's subnet, at load time (`crosscheck`).
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Sequence
from typing import Any

from pydantic import field_validator
from pyroute2 import IPRoute

from iacloud.errors import Diagnostic, ProviderError
from iacloud.ids import PortId
from iacloud.provider import Collision, ObjectRef, Observed, TaggedObject
from iacloud.providers.netlink import dnsmasq, links, names
from iacloud.providers.netlink.base import NetlinkResource
from iacloud.providers.netlink.network_dhcp import sync_reservations
from iacloud.providers.netlink.network_inputs import plan_of
from iacloud.providers.netlink.records import NetworkFiles, write_json
from iacloud.providers.netlink.subnet import address_problem, ipv4
from iacloud.schema import Disruption, Inputs, prop
from iacloud.secgroups import enforce, facts
from iacloud.secgroups.rules import check_group_id
from iacloud.validators import is_mac, is_multicast_mac


def mac_address(value: str) -> str:
    """A canonical (lower-case) unicast MAC, or ValueError."""
    mac = value.lower() if isinstance(value, str) else ""
    if not is_mac(mac):
        raise ValueError(f"'{value}' is not a MAC address (six hex pairs, e.g. 52:54:00:12:34:56)")
    if is_multicast_mac(mac):
        raise ValueError(f"{mac} is a multicast MAC; a port needs a unicast one")
    if mac == "00:00:00:00:00:00":
        raise ValueError("00:00:00:00:00:00 is not a usable MAC")
    return mac


def port_id(bridge: str, mac: str, ip: str) -> str:
    return str(PortId(bridge, mac, ip))


def parse_port_id(id: str) -> tuple[str, str, str]:
    """(bridge, mac, ip) of a port id (`iacloud.ids.PortId`); ValueError if it is not one."""
    port = PortId.parse(id)
    return port.bridge, port.mac, port.ip


class PortInputs(Inputs):
    network: str = prop(update=Disruption.REPLACE, description="the network's id (its bridge)")
    ip: str = prop(update=Disruption.REPLACE)
    mac: str | None = prop(
        None,
        update=Disruption.REPLACE,
        computed_default=True,
        description="default: 52:54:00 and a hash of the stack id and address",
    )

    security_groups: list[str] = prop(
        [], update=Disruption.LIVE, max_length=16, description="security group ids"
    )
    device: str | None = prop(
        None,
        update=Disruption.LIVE,
        description="an interface on the bridge that takes this port (filtered by its groups)",
    )

    @field_validator("network")
    @classmethod
    def _network(cls, v: str) -> str:
        return names.validate_ifname(v)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str | None) -> str | None:
        return None if v is None else names.validate_ifname(v)

    @field_validator("security_groups")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        for g in v:
            check_group_id(g)
        if len(set(v)) != len(v):
            raise ValueError("a security group may be listed only once")
        return v

    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str) -> str:
        return ipv4(v)

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        return None if v is None else mac_address(v)


class Port(NetlinkResource):
    type_name = "port"
    # a server taking the port is on its network: the network spans the server's host
    placement = "via"
    replace_collisions = (Collision("the port's ip and mac on its network", unless=("network",)),)
    Inputs = PortInputs
    attributes = ("id", "ip", "mac", "network")

    # ---- plan time -----------------------------------------------------------------------

    def check(self, address: str, inputs: Inputs, prior: Observed | None) -> list[Diagnostic]:
        """Against the network's record, when it exists already: the address must be a free host
        address of its subnet. Nothing is said when the network is still to be created."""
        assert isinstance(inputs, PortInputs)
        files = self.state.network(inputs.network)
        if files.read_record() is None:
            return []
        mac = inputs.mac or names.default_mac(self.stack.id, address)
        return [
            Diagnostic(message, address=address, field=field)
            for field, message in self._problems(files, address, mac, inputs.ip)
        ]

    def _problems(
        self, files: NetworkFiles, address: str, mac: str, ip: str
    ) -> list[tuple[str, str]]:
        record = files.read_record()
        if record is None:
            return [("network", f"network {files.bridge} is unknown in {files.dir.parent}")]
        problem = address_problem(
            plan_of(record), ipaddress.IPv4Address(ip), f"network {files.bridge}"
        )
        if problem:
            return [("ip", problem)]
        out = []
        for other in files.read_ports():
            if (other.get("stack_id"), other.get("address")) == (self.stack.id, address):
                continue
            whose = f"port '{other.get('address')}'"
            if other.get("stack_id") != self.stack.id:
                whose += f" of stack {other.get('stack_id')}"
            if other["ip"] == ip:
                out.append(("ip", f"{ip} on network {files.bridge} is already reserved by {whose}"))
            if other["mac"] == mac:
                out.append(("mac", f"{mac} on network {files.bridge} is already used by {whose}"))
        for fip in files.read_floating():
            if fip["ip"] == ip:
                whose = f"floating IP '{fip.get('address')}'"
                out.append(("ip", f"{ip} on network {files.bridge} is already taken by {whose}"))
        return out

    # ---- read ----------------------------------------------------------------------------

    def read(self, refs: Sequence[ObjectRef]) -> dict[str, Observed]:
        ports: dict[str, list[dict[str, Any]]] = {}  # per network: one listing, one pid check
        served: dict[str, set[tuple[str, str]] | None] = {}
        out = {}
        for ref in refs:
            try:
                if ref.id is not None:
                    bridge, mac, ip = parse_port_id(ref.id)
                else:
                    bridge, mac, ip = names.validate_ifname(ref.inputs.get("network", "")), "", ""
            except ValueError:
                continue
            files = self.state.network(bridge)
            if bridge not in ports:
                ports[bridge] = files.read_ports()
                running = dnsmasq.running(files)
                served[bridge] = set(dnsmasq.parse_args(running[1])["hosts"]) if running else None
            record = self._match(ports[bridge], ref.address, mac, ip)
            if record is None:
                continue
            hosts = served[bridge]
            if hosts is not None and (record["mac"], record["ip"]) not in hosts:
                continue  # dnsmasq runs without it: not in effect
            out[ref.address] = self._observe(bridge, record, self._membership(ref.address))
        return out

    def _membership(self, address: str) -> facts.MemberRecord | None:
        for rec in facts.members():
            if (rec.source, rec.stack_id, rec.address) == ("port", self.stack.id, address):
                return rec
        return None

    def _set_membership(self, address: str, record: dict[str, Any], inputs: PortInputs) -> None:
        """Write (or remove) the port's member record and rebuild the ruleset. A port without
        groups that never had any leaves the ruleset (and nft) alone."""
        if not (inputs.security_groups or inputs.device) and self._membership(address) is None:
            return
        with enforce.change():
            facts.remove_members("port", self.stack.id, address)
            if inputs.security_groups or inputs.device:
                facts.write_member(
                    facts.MemberRecord(
                        "port",
                        self.stack.id,
                        address,
                        str(record["bridge"]),
                        record["mac"],
                        inputs.device,
                        (record["ip"],),
                        tuple(inputs.security_groups),
                    )
                )

    def _match(
        self, records: list[dict[str, Any]], address: str, mac: str, ip: str
    ) -> dict[str, Any] | None:
        """The record of a port: by MAC and IP when the id is known, else by ownership."""
        mine = [
            r for r in records if (r.get("stack_id"), r.get("address")) == (self.stack.id, address)
        ]
        if not mac:
            return mine[0] if mine else None
        same = [r for r in records if r["mac"] == mac and r["ip"] == ip]
        same.sort(key=lambda r: r not in mine)
        return same[0] if same else None

    @staticmethod
    def _observe(
        bridge: str, record: dict[str, Any], member: facts.MemberRecord | None = None
    ) -> Observed:
        mac, ip = record["mac"], record["ip"]
        id = port_id(bridge, mac, ip)
        return Observed(
            id=id,
            inputs={
                "network": bridge,
                "ip": ip,
                "mac": mac,
                "security_groups": list(member.groups) if member else [],
                "device": member.device if member else None,
            },
            attributes={"id": id, "ip": ip, "mac": mac, "network": bridge},
        )

    # ---- create / delete -----------------------------------------------------------------

    def create(self, address: str, inputs: Inputs) -> Observed:
        assert isinstance(inputs, PortInputs)
        bridge = inputs.network
        mac = inputs.mac or names.default_mac(self.stack.id, address)
        files = self.state.network(bridge)
        path = files.port(self.stack.id, address)
        record = {"stack_id": self.stack.id, "address": address, "mac": mac, "ip": inputs.ip}
        with self.network_lock(bridge):
            with IPRoute() as ipr:
                if links.index_of(ipr, bridge) is None:
                    raise ProviderError(f"network {bridge} does not exist (no such bridge)")
            problems = self._problems(files, address, mac, inputs.ip)
            if problems:
                raise ProviderError("; ".join(message for _, message in problems))
            write_json(path, record)
            try:
                sync_reservations(self, bridge, serve=True)
                self._set_membership(address, {**record, "bridge": bridge}, inputs)
            except BaseException:
                path.unlink(missing_ok=True)
                with contextlib.suppress(Exception):
                    sync_reservations(self, bridge)
                if self._membership(address) is not None:
                    with contextlib.suppress(Exception), enforce.change():
                        facts.remove_members("port", self.stack.id, address)
                raise
        return self._observe(bridge, record, self._membership(address))

    def update(
        self, address: str, prior: Observed, inputs: Inputs, changed: frozenset[str]
    ) -> Observed:
        assert isinstance(inputs, PortInputs)
        if changed - {"security_groups", "device"}:
            raise ProviderError("only security_groups and device of a port change in place")
        bridge, mac, ip = parse_port_id(prior.id)
        record = {"bridge": bridge, "mac": mac, "ip": ip}
        self._set_membership(address, record, inputs)
        return self._observe(bridge, record, self._membership(address))

    def delete(self, address: str, prior: Observed) -> None:
        try:
            bridge, mac, ip = parse_port_id(prior.id)
        except ValueError:
            return
        files = self.state.network(bridge)
        with self.network_lock(bridge):
            record = self._match(files.read_ports(), address, mac, ip)
            if record is None:
                return
            files.port(record["stack_id"], record["address"]).unlink(missing_ok=True)
            sync_reservations(self, bridge)
        if self._membership(address) is not None:
            with enforce.change():
                facts.remove_members("port", self.stack.id, address)

    def import_(self, address: str, id: str) -> Observed:
        try:
            bridge, mac, ip = parse_port_id(id)
        except ValueError as exc:
            raise ProviderError(str(exc)) from None
        record = self._match(self.state.network(bridge).read_ports(), address, mac, ip)
        if record is None:
            raise ProviderError(f"no reservation {mac} {ip} on network {bridge}")
        return self._observe(bridge, record, self._membership(address))

    def list_tagged(self) -> list[TaggedObject]:
        return [
            TaggedObject(
                "port",
                port_id(files.bridge, r["mac"], r["ip"]),
                r.get("stack_id"),
                r.get("address"),
            )
            for files in self.state.networks()
            for r in files.read_ports()
        ]
