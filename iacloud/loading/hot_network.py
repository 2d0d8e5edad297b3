"""Neutron's types mapped onto ours: a Net with its one Subnet becomes a `network`, a Router
with its RouterInterfaces a `router` (each interface's subnet an entry of `networks`, the
external gateway its `external`), a Port a `port` (one fixed address), a SecurityGroup a
`security_group` (rules in our terms), a FloatingIP with its FloatingIPAssociation (or a server
network's `floating_ip`) a `floating_ip`."""

from __future__ import annotations

from typing import Any

from iacloud.loading.hot_functions import HotError
from iacloud.loading.hot_mapping import Entry, MapperBase, ref_name

# Neutron's protocol numbers for the protocols a rule can name
_PROTOCOLS = {"6": "tcp", "17": "udp", "1": "icmp"}


class NetworkTypes(MapperBase):
    def net(self, e: Entry) -> None:
        e.out = {"type": "network"}

        def admin_state_up(v: Any) -> None:
            if v is not True:
                raise HotError("admin_state_up false is not supported", "admin_state_up")

        def name(v: Any) -> None:
            if isinstance(v, str):
                self.net_names[v] = e.name
            self.note(e, "name", "the network is named after its resource in iacloud")

        def value_specs(v: Any) -> None:
            if not isinstance(v, dict) or set(v) - {"router:external"}:
                raise HotError("value_specs: only 'router:external' is supported", "value_specs")
            if "router:external" in v:
                e.out["external"] = v["router:external"]  # type: ignore[index]

        self.take(
            e,
            {"admin_state_up": admin_state_up, "name": name, "value_specs": value_specs},
            harmless=("shared", "dns_domain", "availability_zone_hints"),
        )

    def subnet(self, e: Entry) -> None:
        net = self.target(
            e.properties.get("network", e.properties.get("network_id")),
            "network",
            "OS::Neutron::Net",
        )
        holder = self.entries[net].out
        if holder is None:
            raise HotError(f"network {net!r} could not be mapped", "network")
        if "cidr" in holder:
            raise HotError(
                f"network {net!r} has a second subnet: iacloud networks have one subnet each",
                "network",
                "make a second OS::Neutron::Net for the second subnet",
            )
        if "gateway_ip" in e.properties and e.properties["gateway_ip"] in (None, ""):
            raise HotError(
                "a subnet without a gateway is not supported: an iacloud network has one",
                "gateway_ip",
                "leave gateway_ip out for the first host address",
            )
        out: dict[str, Any] = {}
        e.out = out

        def ip_version(v: Any) -> None:
            if v not in (4, "4"):
                raise HotError("only IPv4 subnets are supported (ip_version 4)", "ip_version")

        def pools(v: Any) -> None:
            if not isinstance(v, list) or len(v) != 1 or not isinstance(v[0], dict):
                raise HotError(
                    "allocation_pools: exactly one pool {start, end}", "allocation_pools"
                )
            out["dhcp_range"] = {"start": v[0].get("start"), "end": v[0].get("end")}

        self.take(
            e,
            {
                "network": None,
                "network_id": None,
                "cidr": "cidr",
                "ip_version": ip_version,
                "gateway_ip": "gateway",
                "enable_dhcp": "dhcp",
                "dns_nameservers": "dns",
                "allocation_pools": pools,
            },
        )
        if "cidr" not in out:
            raise HotError("a subnet needs a cidr", "cidr")
        holder.update(out)
        e.out = None
        e.into = net

    def router(self, e: Entry) -> None:
        out = e.out = {"type": "router", "networks": []}

        def gateway(v: Any) -> None:
            if not isinstance(v, dict):
                raise HotError("external_gateway_info must be a map", "external_gateway_info")
            extra = set(v) - {"network", "enable_snat", "external_fixed_ips"}
            if extra:
                raise HotError(
                    f"external_gateway_info: '{sorted(extra)[0]}' is not supported",
                    "external_gateway_info",
                )
            net = self.target(v.get("network"), "external_gateway_info.network", "OS::Neutron::Net")
            ips = v.get("external_fixed_ips")
            if not (
                isinstance(ips, list)
                and len(ips) == 1
                and isinstance(ips[0], dict)
                and ips[0].get("ip_address") is not None
            ):
                raise HotError(
                    "external_gateway_info needs external_fixed_ips with one ip_address: "
                    "iacloud routers take a fixed address on the external network",
                    "external_gateway_info",
                )
            ext = {"network": {"get_resource": net}, "ip": ips[0]["ip_address"]}
            if "enable_snat" in v:
                ext["snat"] = v["enable_snat"]
            out["external"] = ext

        def admin_state_up(v: Any) -> None:
            if v is not True:
                raise HotError("admin_state_up false is not supported", "admin_state_up")

        self.take(
            e,
            {"external_gateway_info": gateway, "admin_state_up": admin_state_up},
            harmless=("availability_zone_hints", "l3_agent_ids", "ha", "distributed"),
        )

    def router_interface(self, e: Entry) -> None:
        props = e.properties
        router = self.target(
            props.get("router", props.get("router_id")), "router", "OS::Neutron::Router"
        )
        extra = set(props) - {"router", "router_id", "subnet", "subnet_id"}
        if extra:
            raise HotError(
                f"property '{sorted(extra)[0]}' of OS::Neutron::RouterInterface is not "
                "supported: a router joins a subnet",
                sorted(extra)[0],
            )
        subnet = self.target(
            props.get("subnet", props.get("subnet_id")), "subnet", "OS::Neutron::Subnet"
        )
        net = self.entries[subnet].into
        e.into = router
        holder = self.entries[router].out
        assert holder is not None
        holder["networks"].append({"get_resource": net})

    def port(self, e: Entry) -> None:
        out = e.out = {"type": "port"}

        def network(v: Any) -> None:
            out["network"] = self.ref(v, "network", "OS::Neutron::Net")

        def fixed_ips(v: Any) -> None:
            if not (
                isinstance(v, list)
                and len(v) == 1
                and isinstance(v[0], dict)
                and v[0].get("ip_address") is not None
            ):
                raise HotError(
                    "fixed_ips needs exactly one entry with an ip_address: an iacloud port "
                    "is one fixed address",
                    "fixed_ips",
                )
            out["ip"] = v[0]["ip_address"]
            if "network" not in out and v[0].get("subnet") is not None:
                subnet = self.target(v[0]["subnet"], "fixed_ips[0].subnet", "OS::Neutron::Subnet")
                out["network"] = {"get_resource": self.entries[subnet].into}

        def security_groups(v: Any) -> None:
            groups = self.group_refs(v, "security_groups")
            if groups:
                out["security_groups"] = groups

        def admin_state_up(v: Any) -> None:
            if v is not True:
                raise HotError("admin_state_up false is not supported", "admin_state_up")

        self.take(
            e,
            {
                "network": network,
                "network_id": network,
                "fixed_ips": fixed_ips,
                "mac_address": "mac",
                "security_groups": security_groups,
                "admin_state_up": admin_state_up,
            },
            harmless=("device_owner", "device_id", "dns_name"),
        )
        if "ip" not in out:
            raise HotError(
                "a port needs fixed_ips with an ip_address: iacloud ports are fixed addresses",
                "fixed_ips",
                "or leave the port out and give the server {network: ...}",
            )

    def group_refs(self, value: Any, path: str) -> list[Any]:
        """A list of security groups of the template (Neutron's "default" does not exist)."""
        if not isinstance(value, list):
            raise HotError("security_groups must be a list", path)
        if value and "security_group" not in self.types:
            raise HotError("security groups are not available (no security_group type)", path)
        refs = []
        for i, group in enumerate(value):
            if group == "default":
                raise HotError(
                    "iacloud has no 'default' security group",
                    f"{path}[{i}]",
                    "declare an OS::Neutron::SecurityGroup and name it with get_resource",
                )
            refs.append(self.ref(group, f"{path}[{i}]", "OS::Neutron::SecurityGroup"))
        return refs

    def security_group(self, e: Entry) -> None:
        if "security_group" not in self.types:
            raise HotError("security groups are not available (no security_group type)", "")
        out = e.out = {"type": "security_group", "rules": []}

        def rules(v: Any) -> None:
            if not isinstance(v, list):
                raise HotError("rules must be a list", "rules")
            out["rules"] = [self.rule(r, f"rules[{i}]") for i, r in enumerate(v)]

        self.take(e, {"rules": rules, "description": "description"})

    def rule(self, value: Any, path: str) -> Any:
        """A Neutron rule in our terms: protocol numbers and null as names, the port range as
        port_min/port_max, remote_ip_prefix / remote_group_id (or remote_mode alone: this
        group) as the remote."""
        if not isinstance(value, dict):
            raise HotError("a rule is a map", path)
        known = {
            "direction",
            "ethertype",
            "protocol",
            "port_range_min",
            "port_range_max",
            "remote_ip_prefix",
            "remote_group_id",
            "remote_mode",
            "description",
        }
        extra = set(value) - known
        if extra:
            raise HotError(f"'{sorted(extra)[0]}' in a rule is not supported", path)
        if value.get("ethertype", "IPv4") != "IPv4":
            raise HotError("only IPv4 rules are supported (ethertype IPv4)", path)
        rule: dict[str, Any] = {"direction": value.get("direction", "ingress")}
        protocol = value.get("protocol")
        protocol = _PROTOCOLS.get(str(protocol), protocol) if protocol is not None else "any"
        rule["protocol"] = protocol
        for ours, hot in (("port_min", "port_range_min"), ("port_max", "port_range_max")):
            if value.get(hot) is not None:
                rule[ours] = value[hot]
        if value.get("remote_ip_prefix") is not None:
            rule["remote_cidr"] = value["remote_ip_prefix"]
        if value.get("remote_group_id") is not None:
            rule["remote_group"] = self.ref(
                value["remote_group_id"], f"{path}.remote_group_id", "OS::Neutron::SecurityGroup"
            )
        elif value.get("remote_mode") == "remote_group_id":
            rule["remote_group"] = "self"
        return rule

    def floating_ip(self, e: Entry) -> None:
        if "floating_ip" not in self.types:
            raise HotError("floating IPs are not available (no floating_ip type)", "")
        out = e.out = {"type": "floating_ip"}

        def network(v: Any) -> None:
            out["network"] = self.ref(v, "floating_network", "OS::Neutron::Net")

        def port(v: Any) -> None:
            out["port"] = self.ref(v, "port_id", "OS::Neutron::Port")

        def fixed_ip(v: Any) -> None:
            self.note(e, "fixed_ip_address", "an iacloud port has one address: it is that one")

        self.take(
            e,
            {
                "floating_network": network,
                "floating_network_id": network,
                "floating_ip_address": "ip",
                "port_id": port,
                "fixed_ip_address": fixed_ip,
            },
        )
        if "network" not in out:
            raise HotError("a floating IP needs its floating_network", "floating_network")

    def floating_ip_association(self, e: Entry) -> None:
        props = e.properties
        extra = set(props) - {"floatingip_id", "port_id", "fixed_ip_address"}
        if extra:
            raise HotError(f"property '{sorted(extra)[0]}' is not supported", sorted(extra)[0])
        fip = self.target(props.get("floatingip_id"), "floatingip_id", "OS::Neutron::FloatingIP")
        holder = self.entries[fip].out
        if holder is None:
            raise HotError(f"floating IP {fip!r} could not be mapped", "floatingip_id")
        if "port" in holder:
            raise HotError(f"floating IP {fip!r} is associated twice", "port_id")
        holder["port"] = self.ref(props.get("port_id"), "port_id", "OS::Neutron::Port")
        e.into = fip

    def floating_ip_routers(self) -> None:
        """Heat makes a floating IP depend on the router that serves it; so does iacloud, by
        naming that router: the template's router with a gateway on the floating IP's network
        (and a leg on its port's network, when several have such a gateway)."""
        routers = [
            e
            for e in self.entries.values()
            if e.hot_type == "OS::Neutron::Router" and e.out is not None and "external" in e.out
        ]
        for fip in self.entries.values():
            if fip.hot_type != "OS::Neutron::FloatingIP" or fip.out is None:
                continue
            found = [r for r in routers if r.out["external"]["network"] == fip.out["network"]]
            port = ref_name(fip.out.get("port"))
            port_out = self.entries[port].out if port in self.entries else None
            if len(found) > 1 and port_out is not None:
                found = [r for r in found if port_out.get("network") in r.out["networks"]]
            if len(found) == 1:
                fip.out.setdefault("router", {"get_resource": found[0].name})
