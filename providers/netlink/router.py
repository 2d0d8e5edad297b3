"""The `router` resource: a namespace that routes between networks (a Neutron router, no NAT).

Each listed network gets a leg: a veth pair whose bridge end (`iacr…`, tagged) is a port of
the network's bridge and whose router end (`iacv…`) holds that network's gateway address.
IPv4 forwarding is switched on inside the router's namespace only; the host's own forwarding
setting is never touched. Legs are added and removed live when `networks` changes.

The router's id is its namespace name. A namespace cannot carry an alias, so ownership lives in
the legs' aliases and in `<state_dir>/routers/<namespace>.json`.

Reading observes the namespace (one listing) and the legs (one link dump for all routers); the
addresses inside each namespace are not read, which would cost one netlink socket per router.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from pydantic import field_validator
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from iacloud.errors import Diagnostic, ProviderError
from iacloud.provider import ObjectRef, Observed, TaggedObject
from iacloud.providers.netlink import links, names, netns
from iacloud.providers.netlink.base import NetlinkResource
from iacloud.providers.netlink.links import LinkTable
from iacloud.providers.netlink.network import plan_of
from iacloud.providers.netlink.records import read_json, write_json
from iacloud.providers.netlink.subnet import SubnetPlan
from iacloud.schema import Disruption, Inputs, prop

_ROUTER_SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    "net/ipv6/conf/all/disable_ipv6": "1",
    "net/ipv6/conf/default/disable_ipv6": "1",
}


class RouterInputs(Inputs):
    networks: list[str] = prop(
        update=Disruption.LIVE, min_length=1, description="ids of the networks to join"
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


class Router(NetlinkResource):
    type_name = "router"
    Inputs = RouterInputs
    attributes = ("id", "namespace", "interfaces", "addresses")

    def check(self, address: str, inputs: Inputs, prior: Observed | None) -> list[Diagnostic]:
        """Overlapping subnets cannot be routed between; checked for the networks whose record
        exists already."""
        assert isinstance(inputs, RouterInputs)
        plans = self._known_plans(inputs.networks)
        return [
            Diagnostic(message, address=address, field="networks") for message in _overlaps(plans)
        ]

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
        with IPRoute() as ipr:
            table = LinkTable.dump(ipr)
        namespaces = netns.list_namespaces()
        out = {}
        for ref in refs:
            ns = (
                ref.id if ref.id is not None else names.router_namespace(self.stack.id, ref.address)
            )
            if not names.is_router_namespace(ns) or ns not in namespaces:
                continue
            out[ref.address] = self._observe(
                ns, self._legs(table, ns, self._owner_tag(ns, ref.address))
            )
        return out

    def _observe(self, ns: str, legs: dict[str, links.Link]) -> Observed:
        bridges = sorted(legs)
        plans = self._known_plans(bridges)
        return Observed(
            id=ns,
            inputs={"networks": bridges},
            attributes={
                "id": ns,
                "namespace": ns,
                "interfaces": {b: names.router_leg(ns, b)[1] for b in bridges},
                "addresses": {b: f"{p.gateway}/{p.prefixlen}" for b, p in plans.items()},
            },
        )

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
        try:
            write_json(self.state.router(ns), {"stack_id": self.stack.id, "address": address})
            netns.create(ns)
            netns.write_sysctls(ns, _ROUTER_SYSCTLS)
            self._converge(ns, tag, inputs.networks)
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
        self._converge(ns, self._owner_tag(ns, address), inputs.networks)
        return self._read_one(address, ns)

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
        with IPRoute() as ipr:
            table = LinkTable.dump(ipr)
        owners: dict[str, tuple[str, str]] = {}
        for link in table.by_index.values():  # a router's legs name their namespace's owner
            bridge = table.name_of(link.master)
            if link.owner and bridge and link.name.startswith(names.ROUTER_LEG_PREFIX):
                ns = names.router_namespace(*link.owner)
                if link.name == names.router_leg(ns, bridge)[0]:
                    owners[ns] = link.owner
        out = []
        for ns in sorted(netns.list_namespaces()):
            if not names.is_router_namespace(ns):
                continue
            record = read_json(self.state.router(ns)) or {}
            owner = owners.get(ns) or (record.get("stack_id"), record.get("address"))
            out.append(TaggedObject("router", ns, owner[0], owner[1]))
        return out

    # ---- the pieces ----------------------------------------------------------------------

    def _converge(self, ns: str, tag: str, wanted: list[str]) -> None:
        plans: dict[str, SubnetPlan] = {}
        for bridge in wanted:
            record = self.state.network(bridge).read_record()
            if record is None:
                raise ProviderError(
                    f"network {bridge} is unknown in {self.state.root} (a router joins networks "
                    f"whose records share its state_dir)"
                )
            plans[bridge] = plan_of(record)
        problems = _overlaps(plans)
        if problems:
            raise ProviderError("; ".join(problems))

        added: list[tuple[str, str]] = []
        with IPRoute() as ipr:
            table = LinkTable.dump(ipr)
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
            table = LinkTable.dump(ipr)
            for leg in self._legs(table, ns, tag).values():
                links.delete(ipr, leg.name)
        netns.remove(ns)
        self.state.router(ns).unlink(missing_ok=True)


def _overlaps(plans: dict[str, SubnetPlan]) -> list[str]:
    items = sorted(plans.items())
    out = []
    for i, (a, pa) in enumerate(items):
        for b, pb in items[i + 1 :]:
            if pa.cidr.overlaps(pb.cidr):
                out.append(f"networks {a} ({pa.cidr}) and {b} ({pb.cidr}) overlap")
    return out
