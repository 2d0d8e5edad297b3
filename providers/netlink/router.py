"""The `router` resource: a namespace that routes between networks (a Neutron router).

Each listed network gets a leg: a veth pair whose bridge end (`iacr…`, tagged) is a port of
the network's bridge and whose router end (`iacv…`) holds that network's gateway address.
IPv4 forwarding is switched on inside the router's namespace only; the host's own forwarding
setting is never touched. Legs are added and removed live when `networks` changes. The optional
`external` gateway leg, with its default route and SNAT, is in `gateway`.

The router's id is its namespace name. A namespace cannot carry an alias, so ownership lives in
the legs' aliases and in `<state_dir>/routers/<namespace>.json`, which also keeps the
`external` table (its address and SNAT setting are not visible from outside the namespace).

Reading observes the namespace (one listing) and the legs (one link dump for all routers),
both taken once per run and shared with networks and the orphan search (`listings`); the
addresses inside each namespace are not read, which would cost one netlink socket per router.
A router with SNAT costs one `nft` run more, to see that its rule is in place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from ipaddress import IPv4Address
from typing import Any

from pydantic import field_validator, model_validator
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from iacloud.errors import Diagnostic, ProviderError
from iacloud.provider import Collision, ObjectRef, Observed, TaggedObject
from iacloud.providers.netlink import gateway, links, names, netns
from iacloud.providers.netlink.base import NetlinkResource
from iacloud.providers.netlink.gateway import ExternalGateway
from iacloud.providers.netlink.links import LinkTable
from iacloud.providers.netlink.network_inputs import plan_of
from iacloud.providers.netlink.records import read_json, write_json
from iacloud.providers.netlink.subnet import SubnetPlan
from iacloud.schema import Disruption, Inputs, prop

_ROUTER_SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    "net/ipv6/conf/all/disable_ipv6": "1",
    "net/ipv6/conf/default/disable_ipv6": "1",
}
_EXTERNAL_AS_LEG = (
    "network {} is external: its gateway belongs to the outside router, so a router joins it "
    "with external = {{ network = ..., ip = ... }}, not in networks"
)


class RouterInputs(Inputs):
    networks: list[str] = prop(
        update=Disruption.LIVE, min_length=1, description="ids of the networks to join"
    )
    external: ExternalGateway | None = prop(
        None, update=Disruption.LIVE, description="a gateway leg on an external network, SNAT"
    )

    @field_validator("networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        seen = set()
        for x in v:
            names.validate_ifname(x)
            if x in seen:
                raise ValueError(f"network {x} is listed twice")
            seen.add(x)
        return sorted(v)  # the order of legs means nothing; one normal form keeps plans empty

    @model_validator(mode="after")
    def _external_apart(self) -> RouterInputs:
        if self.external is not None and self.external.network in self.networks:
            raise ValueError(
                f"network {self.external.network} is both in networks and the external network"
            )
        return self


class Router(NetlinkResource):
    type_name = "router"
    replace_collisions = (
        Collision("the router's namespace and its legs, named after the stack id and address"),
    )
    Inputs = RouterInputs
    attributes = ("id", "namespace", "interfaces", "addresses", "external_ip")

    def check(self, address: str, inputs: Inputs, prior: Observed | None) -> list[Diagnostic]:
        """Overlapping subnets cannot be routed between, and the external network must be one
        that fits; checked for the networks whose record exists already."""
        assert isinstance(inputs, RouterInputs)
        plans = self._known_plans(inputs.networks)
        out = [
            Diagnostic(message, address=address, field="networks") for message in _overlaps(plans)
        ]
        for bridge in inputs.networks:
            record = self.state.network(bridge).read_record()
            if record and record["inputs"].get("external"):
                out.append(
                    Diagnostic(_EXTERNAL_AS_LEG.format(bridge), address=address, field="networks")
                )
        ext = inputs.external
        record = self.state.network(ext.network).read_record() if ext else None
        if ext and record:
            with contextlib.suppress(Exception):  # a damaged record: create reports it
                found = gateway.problems(
                    f"network {ext.network}",
                    plan_of(record),
                    record["inputs"],
                    IPv4Address(ext.ip),
                    {f"network {b}": p for b, p in plans.items()},
                )
                out += [Diagnostic(m, address=address, field=f) for f, m in found]
            for fip in self.state.network(ext.network).read_floating():
                if fip["ip"] == ext.ip:
                    taken = f"{ext.ip} on network {ext.network} is already taken by floating IP"
                    out.append(
                        Diagnostic(
                            f"{taken} '{fip.get('address')}'", address=address, field="external.ip"
                        )
                    )
        return out

    def _known_plans(self, bridges: list[str]) -> dict[str, SubnetPlan]:
        out = {}
        for bridge in bridges:
            record = self.state.network(bridge).read_record()
            if record:
                with contextlib.suppress(Exception):
                    out[bridge] = plan_of(record)
        return out

    # ---- read ----------------------------------------------------------------------------

    def _owner_tag(self, ns: str, address: str) -> str:
        record = read_json(self.state.router(ns))
        if (
            record
            and isinstance(record.get("stack_id"), str)
            and isinstance(record.get("address"), str)
        ):
            return names.tag(record["stack_id"], record["address"])
        return names.tag(self.stack.id, address)

    @staticmethod
    def _legs(table: LinkTable, ns: str, tag: str) -> dict[str, links.Link]:
        """The router's legs by network: tagged bridge ends that are ports of a bridge and
        carry the name this router gives its leg on that bridge."""
        out = {}
        for link in table.by_alias.get(tag, []):
            bridge = table.name_of(link.master)
            if bridge and link.kind == "veth" and link.name == names.router_leg(ns, bridge)[0]:
                out[bridge] = link
        return out

    def read(self, refs: Sequence[ObjectRef]) -> dict[str, Observed]:
        table = self.provider.listings.links()
        namespaces = self.provider.listings.namespaces()
        out = {}
        for ref in refs:
            ns = (
                ref.id if ref.id is not None else names.router_namespace(self.stack.id, ref.address)
            )
            if not names.is_router_namespace(ns) or ns not in namespaces:
                continue
            out[ref.address] = self._observe(ns, table, ref.address)
        return out

    def _observe(self, ns: str, table: LinkTable, address: str) -> Observed:
        tag = self._owner_tag(ns, address)
        bridges = sorted(self._legs(table, ns, tag))
        plans = self._known_plans(bridges)
        external = gateway.observe(table, ns, tag, self._recorded_external(ns), plans)
        return Observed(
            id=ns,
            inputs={"networks": bridges, "external": external},
            attributes={
                "id": ns,
                "namespace": ns,
                "interfaces": {b: names.router_leg(ns, b)[1] for b in bridges},
                "addresses": {b: f"{p.gateway}/{p.prefixlen}" for b, p in plans.items()},
                "external_ip": external["ip"] if external else None,
            },
        )

    def _recorded_external(self, ns: str) -> dict[str, Any] | None:
        external = (read_json(self.state.router(ns)) or {}).get("external")
        return external if isinstance(external, dict) else None

    def _read_one(self, address: str, ns: str) -> Observed:
        observed = self.read([ObjectRef(address=address, id=ns)]).get(address)
        if observed is None:
            raise ProviderError(f"router namespace {ns} vanished right after it was set up")
        return observed

    # ---- create / update / delete --------------------------------------------------------

    def create(self, address: str, inputs: Inputs) -> Observed:
        assert isinstance(inputs, RouterInputs)
        ns = names.router_namespace(self.stack.id, address)
        tag = links.set_alias_checked(names.tag(self.stack.id, address))
        plans, ext_plan = self._plans(inputs)
        try:
            # the record first: an interrupted create is still found and torn down
            self._write_record(ns, self.stack.id, address, inputs)
            netns.create(ns)
            netns.write_sysctls(ns, _ROUTER_SYSCTLS)
            self._converge_legs(ns, tag, plans)
            gateway.converge(ns, tag, inputs.external, ext_plan, plans, had_snat=False)
        except BaseException:
            with contextlib.suppress(Exception):
                self._teardown(ns, tag)
            raise
        return self._read_one(address, ns)

    def update(
        self, address: str, prior: Observed, inputs: Inputs, changed: frozenset[str]
    ) -> Observed:
        assert isinstance(inputs, RouterInputs)
        ns = prior.id
        if not netns.exists(ns):
            raise ProviderError(f"router namespace {ns} does not exist (removed outside iacloud?)")
        plans, ext_plan = self._plans(inputs)
        tag = self._owner_tag(ns, address)
        before = self._recorded_external(ns)
        record = read_json(self.state.router(ns)) or {}
        self._write_record(
            ns, record.get("stack_id", self.stack.id), record.get("address", address), inputs
        )
        self._converge_legs(ns, tag, plans)
        had_snat = bool(before and before.get("snat"))
        gateway.converge(ns, tag, inputs.external, ext_plan, plans, had_snat)
        return self._read_one(address, ns)

    def _write_record(self, ns: str, stack_id: str, address: str, inputs: RouterInputs) -> None:
        external = inputs.external.model_dump() if inputs.external else None
        write_json(
            self.state.router(ns),
            {"stack_id": stack_id, "address": address, "external": external},
        )

    def delete(self, address: str, prior: Observed) -> None:
        ns = prior.id
        if not names.is_router_namespace(ns):
            return
        self._teardown(ns, self._owner_tag(ns, address))

    def import_(self, address: str, id: str) -> Observed:
        if not names.is_router_namespace(id):
            raise ProviderError(f"'{id}' is not a router id (iacloud-rtr-<10 hex digits>)")
        observed = self.read([ObjectRef(address=address, id=id)]).get(address)
        if observed is None:
            raise ProviderError(f"there is no router namespace {id}")
        return observed

    def list_tagged(self) -> list[TaggedObject]:
        table = self.provider.listings.links()
        owners: dict[str, tuple[str, str]] = {}
        for link in table.by_index.values():  # a router's legs name their namespace's owner
            bridge = table.name_of(link.master)
            if link.owner and bridge:
                ns = names.router_namespace(*link.owner)
                if link.name in (
                    names.router_leg(ns, bridge)[0],
                    names.router_gateway_leg(ns, bridge)[0],
                ):
                    owners[ns] = link.owner
        out = []
        for ns in sorted(self.provider.listings.namespaces()):
            if not names.is_router_namespace(ns):
                continue
            record = read_json(self.state.router(ns)) or {}
            owner = owners.get(ns) or (record.get("stack_id"), record.get("address"))
            out.append(TaggedObject("router", ns, owner[0], owner[1]))
        return out

    # ---- the pieces ----------------------------------------------------------------------

    def _record_of(self, bridge: str) -> dict[str, Any]:
        record = self.state.network(bridge).read_record()
        if record is None:
            raise ProviderError(
                f"network {bridge} is unknown in {self.state.root} (a router joins networks "
                f"whose records share its state_dir)"
            )
        return record

    def _plans(self, inputs: RouterInputs) -> tuple[dict[str, SubnetPlan], SubnetPlan | None]:
        """The subnets of the internal networks and of the external one, from their records;
        ProviderError, before anything is changed, when they do not fit together."""
        plans: dict[str, SubnetPlan] = {}
        for bridge in inputs.networks:
            record = self._record_of(bridge)
            if record["inputs"].get("external"):
                raise ProviderError(_EXTERNAL_AS_LEG.format(bridge))
            plans[bridge] = plan_of(record)
        problems = _overlaps(plans)
        ext = inputs.external
        ext_plan = None
        if ext is not None:
            record = self._record_of(ext.network)
            ext_plan = plan_of(record)
            found = gateway.problems(
                f"network {ext.network}",
                ext_plan,
                record["inputs"],
                IPv4Address(ext.ip),
                {f"network {b}": p for b, p in plans.items()},
            )
            problems += [m for _, m in found]
        if problems:
            raise ProviderError("; ".join(problems))
        return plans, ext_plan

    def _converge_legs(self, ns: str, tag: str, plans: dict[str, SubnetPlan]) -> None:
        wanted = sorted(plans)
        added: list[tuple[str, str]] = []
        with IPRoute() as ipr:
            table = LinkTable.dump()
            current = self._legs(table, ns, tag)
            for bridge, leg in current.items():
                if bridge not in plans:
                    links.delete(ipr, leg.name)  # the router end goes with it
            for bridge in wanted:
                if bridge in current:
                    continue
                br = table.bridge(bridge)
                if br is None:
                    raise ProviderError(f"network {bridge} does not exist (no such bridge)")
                host, inner = names.router_leg(ns, bridge)
                for other in table.slaves.get(br.index, ()):
                    if other.name.startswith(names.ROUTER_LEG_PREFIX) and other.name != host:
                        raise ProviderError(
                            f"network {bridge} already has a router ({other.name}, "
                            f"'{other.alias}') holding its gateway {plans[bridge].gateway}"
                        )
                links.delete(ipr, host)
                try:
                    ipr.link(
                        "add",
                        ifname=host,
                        kind="veth",
                        peer={"ifname": inner, "net_ns_fd": ns},
                    )
                    index = links.index_of(ipr, host)
                    ipr.link("set", index=index, ifalias=tag)
                    links.disable_ipv6(host)
                    ipr.link("set", index=index, mtu=br.mtu)
                    ipr.link("set", index=index, master=br.index, state="up")
                except NetlinkError as exc:
                    raise links.netlink_error(f"cannot join {bridge} to router {ns}", exc) from exc
                added.append((bridge, inner))
            mtus = {bridge: table.by_name[bridge].mtu for bridge, _ in added}
        if not added:
            return
        with netns.socket(ns) as nsr:
            for bridge, inner in added:
                plan = plans[bridge]
                index = links.index_of(nsr, inner)
                try:
                    nsr.addr(
                        "add", index=index, address=str(plan.gateway), prefixlen=plan.prefixlen
                    )
                    nsr.link("set", index=index, mtu=mtus[bridge], state="up")
                except NetlinkError as exc:
                    raise links.netlink_error(f"cannot address {inner} in {ns}", exc) from exc

    def _teardown(self, ns: str, tag: str) -> None:
        # Legs first: deleting a veth end removes the pair at once, while a removed namespace
        # is dismantled by the kernel later and its pairs would linger for a moment.
        with IPRoute() as ipr:
            table = LinkTable.dump()
            for leg in self._legs(table, ns, tag).values():
                links.delete(ipr, leg.name)
            found = gateway.find_leg(table, ns, tag)
            if found is not None:
                links.delete(ipr, found[1].name)
        netns.remove(ns)  # the SNAT table lives in the namespace and goes with it
        self.state.router(ns).unlink(missing_ok=True)


def _overlaps(plans: dict[str, SubnetPlan]) -> list[str]:
    items = sorted(plans.items())
    out = []
    for i, (a, pa) in enumerate(items):
        for b, pb in items[i + 1 :]:
            if pa.cidr.overlaps(pb.cidr):
                out.append(f"networks {a} ({pa.cidr}) and {b} ({pb.cidr}) overlap")
    return out
