"""The `network` resource: an isolated Linux bridge with one IPv4 subnet (Neutron net + subnet).

What exists on the host for one network (names in `names`):
- the bridge, tagged with the ownership alias. It has no host address and IPv6 is disabled on
  it, so the host takes no part in the network: no forwarding, no NAT, no link-local chatter;
- optionally a segment enslaved to the bridge: a VLAN sub-interface of an uplink, or a VXLAN
  device whose unicast remotes are all-zero FDB entries (head-end replication);
- with dhcp = true, a namespace joined to the bridge by a veth pair; its end holds the DHCP
  server address (see `subnet`) and dnsmasq runs there (`network_dhcp`, `dnsmasq`);
- `<state_dir>/<bridge>/`: the network's record, its ports' reservations, dnsmasq's files.

Reading: one link dump and one namespace listing for any number of networks (taken once per
run and shared with routers and the orphan search: `listings`), plus an FDB dump when a VXLAN
segment is seen, and per DHCP network its record, pid file and /proc cmdline (the arguments
dnsmasq really runs with). Create and update read back their one object with a few
RTM_GETLINKs by name instead, so applying N networks stays linear in N. `bench/
netlink_refresh.py` measures both.
A DHCP server that died (or lost its namespace or veth) is observed as `dhcp = false`: the next
plan then shows the in-place change dhcp false -> true and applying it restarts the server,
with no special case in the engine; a separate attribute would be invisible to the planner.
The attribute `dhcp_running` says the same thing for `iacloud show`.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Collection, Sequence
from typing import Any

from pydantic import BaseModel
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from iacloud import netfacts, netnames
from iacloud.errors import Diagnostic, ProviderError
from iacloud.provider import Collision, ObjectRef, Observed, TaggedObject
from iacloud.providers.netlink import (
    dns,
    dnsmasq,
    links,
    names,
    netns,
    network_dhcp,
    span,
    span_read,
)
from iacloud.providers.netlink.base import NetlinkResource
from iacloud.providers.netlink.links import Link, LinkTable
from iacloud.providers.netlink.names import NetworkNames
from iacloud.providers.netlink.network_inputs import (
    NetworkInputs,
    VlanSegment,
    VxlanSegment,
    identity,
    plan_of,
    resolve,
)
from iacloud.schema import Inputs


class Network(NetlinkResource):
    type_name = "network"
    placement = "spans"
    replace_collisions = (
        Collision("the subnet: two bridges with one cidr on a host conflict", unless=("cidr",)),
    )
    Inputs = NetworkInputs
    attributes = (
        "id",
        "bridge",
        "cidr",
        "gateway",
        "dhcp_namespace",
        "dhcp_server",
        "dhcp_running",
        "leases",
    )

    # ---- plan time -----------------------------------------------------------------------

    def check(self, address: str, inputs: Inputs, prior: Observed | None) -> list[Diagnostic]:
        assert isinstance(inputs, NetworkInputs)
        seg = inputs.segment
        if isinstance(seg, VxlanSegment) and seg.group and not seg.uplink:
            return [
                Diagnostic(
                    "a vxlan segment with a multicast group needs uplink = <underlay device>",
                    address=address,
                    field="segment.uplink",
                )
            ]
        try:
            spans = span.members(inputs.hosts, self.stack.hosts)
        except ProviderError as exc:
            return [Diagnostic(str(exc), address=address, field="hosts")]
        if spans and seg is not None:
            return [
                Diagnostic(
                    "a network with a segment cannot also span the site's hosts (its servers "
                    "are on " + ", ".join(m.name for m in spans) + ")",
                    address=address,
                    field="segment",
                )
            ]
        if spans and self.settings.underlay is None:
            return [
                Diagnostic(
                    "its servers are on other hosts ("
                    + ", ".join(m.name for m in spans)
                    + '): set underlay = "IP" (this machine\'s underlay address) in '
                    "[provider.netlink] so the network can reach them over VXLAN",
                    address=address,
                    field="hosts",
                )
            ]
        return []

    def _span(
        self, n: NetworkNames, tag: str, inputs: NetworkInputs, before: Sequence[str] = ()
    ) -> None:
        """The network's VXLAN side (see `span`): exactly its hosts, the others removed."""
        wanted = span.members(inputs.hosts, self.stack.hosts)
        gone = [m for m in span.members(before, self.stack.hosts) if m.name not in inputs.hosts]
        if wanted or gone:
            mtu = inputs.mtu or span.SPAN_MTU
            span.ensure(n, tag, self.settings.underlay, wanted, gone, mtu)

    # ---- read ----------------------------------------------------------------------------

    def read(self, refs: Sequence[ObjectRef]) -> dict[str, Observed]:
        return self._read(refs, targeted=False)

    def _read(self, refs: Sequence[ObjectRef], targeted: bool) -> dict[str, Observed]:
        """targeted: ask for each object's own links by name instead of dumping every link.
        Both see the same links (a network only ever looks at the bridge and the links it
        names), so they agree; create and update use it to stay O(1) on a host with many
        networks. Untargeted, the run's link dump and namespace listing are used (`listings`)."""
        listings = self.provider.listings
        if targeted and all(ref.id for ref in refs):
            wanted = []
            for ref in refs:
                with contextlib.suppress(ValueError):
                    n = NetworkNames(ref.id or "")
                    wanted += [n.bridge, n.dhcp_veth, n.vlan, n.vxlan]
            table = LinkTable.fetch(wanted)
            namespaces = frozenset(netns.list_namespaces())
        else:
            table = listings.links()
            namespaces = listings.namespaces()
        found: dict[str, Link] = {}
        for ref in refs:
            bridge = self._find(ref, table)
            if bridge is not None:
                found[ref.address] = bridge
        fdb = self._fdb(table, found.values(), targeted)
        # create and update have just made the hosts' sides (or failed): only a refresh asks
        verdicts = {} if targeted else self._host_sides(found)
        out: dict[str, Observed] = {}
        for ref in refs:
            bridge = found.get(ref.address)
            if bridge is None:
                continue
            verdict = verdicts.get(bridge.name) or span_read.Verdict()
            if verdict.unknown is not None:
                # as a server on a down host: left as recorded, and the plan says why
                out[ref.address] = Observed(bridge.name, dict(ref.inputs), dict(ref.attributes),
                                            unknown=verdict.unknown)  # fmt: skip
                continue
            out[ref.address] = self._observe(bridge, table, fdb, namespaces, verdict.broken)
        return out

    def _host_sides(self, found: dict[str, Link]) -> dict[str, span_read.Verdict]:
        """The spanning networks' sides on their member hosts (`span_read`), by bridge."""
        spanned = []
        for address, bridge in found.items():
            record = self.state.network(bridge.name).read_record() or {}
            recorded = record.get("inputs") or {}
            if recorded.get("hosts") and not recorded.get("segment"):
                tag = names.tag(self.stack.id, address)
                mtu = recorded.get("mtu") or span.SPAN_MTU
                spanned.append(
                    span_read.Spanned(NetworkNames(bridge.name), tag, recorded["hosts"], mtu)
                )
        if not spanned:
            return {}
        return span_read.check(spanned, self.stack.hosts, self.settings.underlay)

    def _find(self, ref: ObjectRef, table: LinkTable) -> Link | None:
        if ref.id is not None:
            try:
                names.validate_ifname(ref.id)
            except ValueError:
                return None  # no link can have that name
            return table.bridge(ref.id)
        candidates = [
            link
            for link in table.by_alias.get(names.tag(self.stack.id, ref.address), [])
            if link.kind == "bridge"
        ]
        if len(candidates) > 1:  # create-before-destroy left two: prefer the one these inputs name
            with contextlib.suppress(Exception):
                _, resolved = resolve(NetworkInputs.model_validate(ref.inputs))
                expected = names.bridge_name(self.stack.id, ref.address, identity(resolved))
                candidates.sort(key=lambda link: link.name != expected)
        return candidates[0] if candidates else None

    @staticmethod
    def _fdb(table: LinkTable, bridges: Any, targeted: bool) -> dict[int, list[str]]:
        """Unicast VXLAN remotes by device index: one FDB dump, and only if a VXLAN is seen."""
        vxlans = set()
        for bridge in bridges:
            vxlan = table.get(NetworkNames(bridge.name).vxlan)
            if vxlan is not None and vxlan.kind == "vxlan" and vxlan.master == bridge.index:
                vxlans.add(vxlan.index)
        if not vxlans:
            return {}
        with IPRoute() as ipr:
            if targeted:  # the kernel filters a dump by device: the host's other FDBs stay unread
                entries = [e for index in vxlans for e in ipr.fdb("dump", ifindex=index)]
            else:
                entries = list(ipr.fdb("dump"))
        out: dict[int, list[str]] = {}
        for entry in entries:
            if entry["ifindex"] in vxlans and entry.get("NDA_LLADDR") == "00:00:00:00:00:00":
                dst = entry.get("NDA_DST")
                if dst:
                    out.setdefault(entry["ifindex"], []).append(dst)
        return out

    def _observe(
        self,
        bridge: Link,
        table: LinkTable,
        fdb: dict[int, list[str]],
        namespaces: frozenset[str],
        broken: Collection[str] = (),
    ) -> Observed:
        n = NetworkNames(bridge.name)
        files = self.state.network(bridge.name)
        record = files.read_record()
        recorded: dict[str, Any] = record["inputs"] if record else {}

        running = dnsmasq.running(files)
        veth = table.get(n.dhcp_veth)
        dhcp_up = bool(
            running
            and n.dhcp_namespace in namespaces
            and veth is not None
            and veth.master == bridge.index
            and netns.process_in(running[0], n.dhcp_namespace)
        )
        inputs: dict[str, Any] = {}
        for key in ("cidr", "gateway"):  # an isolated bridge has no address to observe
            if key in recorded:
                inputs[key] = recorded[key]
        inputs["external"] = bool(recorded.get("external", False))  # a flag, only recorded
        inputs["dhcp"] = dhcp_up
        if dhcp_up and running:
            served = dnsmasq.parse_args(running[1])
            start_end = served["range"]
            inputs["dhcp_range"] = (
                {"start": start_end[0], "end": start_end[1]} if start_end else None
            )
            inputs["dns"] = served["dns"]
            inputs["dns_domain"] = dns.served_domain(files, n.dhcp_namespace)
        else:
            for key in ("dhcp_range", "dns", "dns_domain"):
                if key in recorded:
                    inputs[key] = recorded[key]
        inputs["mtu"] = bridge.mtu
        spanned = recorded.get("hosts") or []
        if spanned and not recorded.get("segment"):
            # the VXLAN device is the span's: the hosts are those its peers belong to (this
            # machine's side) whose own side is whole (`broken`: read over SSH, `span_read`)
            inputs["segment"] = None
            here = self._span_hosts(bridge, table, fdb, spanned)
            inputs["hosts"] = [h for h in here if h not in broken]
        else:
            inputs["segment"] = self._segment(bridge, table, fdb)

        server = None
        if record:
            with contextlib.suppress(Exception):
                plan = plan_of(record)
                server = str(plan.server) if plan.server else None
        attributes = {
            "id": bridge.name,
            "bridge": bridge.name,
            "cidr": recorded.get("cidr"),
            "gateway": recorded.get("gateway"),
            "dhcp_namespace": n.dhcp_namespace if n.dhcp_namespace in namespaces else None,
            "dhcp_server": server if dhcp_up else None,
            "dhcp_running": dhcp_up,
            "leases": dnsmasq.leases(files) if dhcp_up else [],
        }
        return Observed(id=bridge.name, inputs=inputs, attributes=attributes)

    def _span_hosts(
        self, bridge: Link, table: LinkTable, fdb: dict[int, list[str]], recorded: list[str]
    ) -> list[str]:
        """The recorded hosts whose underlay address is a peer of the span's VXLAN device."""
        s = table.get(NetworkNames(bridge.name).vxlan)
        if s is None or s.master != bridge.index:
            return []
        peers = set(fdb.get(s.index, []))
        out = []
        for name in recorded:
            entry = self.stack.hosts.get(name)
            if entry is None or entry.is_local or entry.underlay_address in peers:
                out.append(name)
        return sorted(out)

    @staticmethod
    def _segment(bridge: Link, table: LinkTable, fdb: dict[int, list[str]]) -> dict | None:
        """The segment device this network made (a VLAN or VXLAN port of another name is not
        the network's: it was added by hand, and delete would not remove it either)."""
        n = NetworkNames(bridge.name)
        for name in (n.vlan, n.vxlan):
            s = table.get(name)
            if s is None or s.master != bridge.index:
                continue
            if s.kind == "vlan":
                seg: dict[str, Any] = {
                    "vlan": s.data.get("IFLA_VLAN_ID"),
                    "uplink": table.name_of(s.data.get("IFLA_LINK")),
                }
                model: type[BaseModel] = VlanSegment
            elif s.kind == "vxlan":
                local = s.data.get("IFLA_VXLAN_LOCAL")
                group = s.data.get("IFLA_VXLAN_GROUP")
                seg = {
                    "vxlan": s.data.get("IFLA_VXLAN_ID"),
                    "local": local if local and local != "0.0.0.0" else None,
                    "remotes": fdb.get(s.index, []),
                    "group": group if group and group != "0.0.0.0" else None,
                    "port": s.data.get("IFLA_VXLAN_PORT"),
                    "uplink": table.name_of(s.data.get("IFLA_VXLAN_LINK")),
                }
                model = VxlanSegment
            else:
                continue
            try:  # the same normal form the inputs model gives (sorted remotes, defaults)
                return model.model_validate(seg).model_dump()
            except ValueError:
                return seg  # something odd was done by hand: report it as it is
        return None

    def _read_one(self, address: str, bridge: str) -> Observed:
        observed = self._read([ObjectRef(address=address, id=bridge)], targeted=True).get(address)
        if observed is None:
            raise ProviderError(f"bridge {bridge} vanished right after it was set up")
        return observed

    # ---- create / update / delete --------------------------------------------------------

    def create(self, address: str, inputs: Inputs) -> Observed:
        assert isinstance(inputs, NetworkInputs)
        _, resolved = resolve(inputs)
        if inputs.hosts and inputs.mtu is None:
            resolved["mtu"] = span.SPAN_MTU  # what dnsmasq hands out over VXLAN
        tag = links.set_alias_checked(names.tag(self.stack.id, address))
        bridge = names.bridge_name(self.stack.id, address, identity(resolved))
        n = NetworkNames(bridge)
        files = self.state.network(bridge)
        with self.network_lock(bridge):
            existing = links.get(bridge)
            if existing is not None and existing.alias not in (None, tag):
                raise ProviderError(
                    f"a link named {bridge} already exists and is not this network's "
                    f"(its alias is '{existing.alias}')"
                )
            had_dir = files.dir.exists()
            try:
                # The record first: an interrupted create is then found with its cidr.
                files.write_record(
                    {"stack_id": self.stack.id, "address": address, "inputs": resolved}
                )
                with IPRoute() as ipr:
                    self._ensure_bridge(ipr, bridge, tag, inputs.mtu)
                    if inputs.segment is not None:
                        self._ensure_segment(ipr, n, tag, inputs.segment, inputs.mtu)
                self._span(n, tag, inputs)
                network_dhcp.converge(
                    n, files, tag, self.settings.dhcp_user, self.settings.lease_time
                )
                network_dhcp.publish_facts(files)
                if inputs.dhcp:
                    network_dhcp.check_dhcp_running(files, bridge)
            except BaseException:
                with contextlib.suppress(Exception):
                    self._teardown(bridge, remove_dir=not had_dir)
                raise
        return self._read_one(address, bridge)

    def update(
        self, address: str, prior: Observed, inputs: Inputs, changed: frozenset[str]
    ) -> Observed:
        assert isinstance(inputs, NetworkInputs)
        _, resolved = resolve(inputs)
        bridge = prior.id
        n = NetworkNames(bridge)
        files = self.state.network(bridge)
        tag = names.tag(self.stack.id, address)
        with self.network_lock(bridge):
            with IPRoute() as ipr:
                table = LinkTable.dump()
                if table.bridge(bridge) is None:
                    raise ProviderError(
                        f"bridge {bridge} does not exist (deleted outside iacloud?)"
                    )
                if inputs.mtu is not None and table.by_name[bridge].mtu != inputs.mtu:
                    self._set_mtu(ipr, table, n, inputs.mtu)
            record = files.read_record() or {"stack_id": self.stack.id, "address": address}
            if resolved.get("mtu") is None:  # computed default: keep what the kernel chose
                resolved["mtu"] = (record.get("inputs") or {}).get("mtu")
            if inputs.hosts and inputs.mtu is None:
                resolved["mtu"] = span.SPAN_MTU  # what dnsmasq hands out over VXLAN
            before = (record.get("inputs") or {}).get("hosts") or prior.inputs.get("hosts") or []
            self._span(n, tag, inputs, before)
            record["inputs"] = resolved
            files.write_record(record)
            network_dhcp.converge(n, files, tag, self.settings.dhcp_user, self.settings.lease_time)
            network_dhcp.publish_facts(files)
            if inputs.dhcp:
                network_dhcp.check_dhcp_running(files, bridge)
        return self._read_one(address, bridge)

    def delete(self, address: str, prior: Observed) -> None:
        try:
            n = NetworkNames(prior.id)
        except ValueError:
            return  # not a name any link can have: nothing to delete
        with self.network_lock(prior.id):
            tag = names.tag(self.stack.id, address)
            for member in span.members(prior.inputs.get("hosts") or [], self.stack.hosts):
                span.remove(member, n, tag)
            self._teardown(prior.id)

    def import_(self, address: str, id: str) -> Observed:
        try:
            names.validate_ifname(id)
        except ValueError as exc:
            raise ProviderError(str(exc)) from None
        observed = self.read([ObjectRef(address=address, id=id)]).get(address)
        if observed is None:
            raise ProviderError(f"there is no bridge named {id}")
        return observed

    def list_tagged(self) -> list[TaggedObject]:
        table = self.provider.listings.links()
        out = []
        for link in table.by_index.values():
            if link.kind == "bridge":
                owner = link.owner
                out.append(
                    TaggedObject(
                        "network",
                        link.name,
                        owner[0] if owner else None,
                        owner[1] if owner else None,
                    )
                )
        return out

    # ---- the pieces ----------------------------------------------------------------------

    @staticmethod
    def _ensure_bridge(ipr: IPRoute, bridge: str, tag: str, mtu: int | None) -> None:
        if links.index_of(ipr, bridge) is None:
            try:
                ipr.link("add", ifname=bridge, kind="bridge")
            except NetlinkError as exc:
                raise links.netlink_error(f"cannot create bridge {bridge}", exc) from exc
        index = links.index_of(ipr, bridge)
        ipr.link("set", index=index, ifalias=tag)  # tagged before anything else is done to it
        links.disable_ipv6(bridge)
        if mtu is not None:
            ipr.link("set", index=index, mtu=mtu)
        ipr.link("set", index=index, state="up")

    @staticmethod
    def _ensure_segment(
        ipr: IPRoute, n: NetworkNames, tag: str, seg: VlanSegment | VxlanSegment, mtu: int | None
    ) -> None:
        bridge_index = links.index_of(ipr, n.bridge)
        uplink_index = None
        if seg.uplink is not None:
            uplink_index = links.index_of(ipr, seg.uplink)
            if uplink_index is None:
                raise ProviderError(f"segment uplink {seg.uplink} does not exist")
        try:
            if isinstance(seg, VlanSegment):
                name = n.vlan
                links.delete(ipr, name)  # a leftover of an interrupted create is rebuilt
                ipr.link("add", ifname=name, kind="vlan", link=uplink_index, vlan_id=seg.vlan)
            else:
                name = n.vxlan
                links.delete(ipr, name)
                spec: dict[str, Any] = {"vxlan_id": seg.vxlan, "vxlan_port": seg.port}
                if seg.local:
                    spec["vxlan_local"] = seg.local
                if seg.group:
                    spec["vxlan_group"] = seg.group
                if uplink_index is not None:
                    spec["vxlan_link"] = uplink_index
                ipr.link("add", ifname=name, kind="vxlan", **spec)
            index = links.index_of(ipr, name)
            ipr.link("set", index=index, ifalias=tag)
            links.disable_ipv6(name)
            if isinstance(seg, VxlanSegment):
                for remote in seg.remotes:
                    ipr.fdb("append", ifindex=index, lladdr="00:00:00:00:00:00", dst=remote)
            if mtu is not None:
                ipr.link("set", index=index, mtu=mtu)
            ipr.link("set", index=index, master=bridge_index, state="up")
        except NetlinkError as exc:
            if exc.code == errno.EOPNOTSUPP:
                what = "802.1Q VLAN (module 8021q)" if isinstance(seg, VlanSegment) else "VXLAN"
                raise ProviderError(f"this kernel has no {what} support") from exc
            raise links.netlink_error(f"cannot set up the segment of {n.bridge}", exc) from exc

    def _set_mtu(self, ipr: IPRoute, table: LinkTable, n: NetworkNames, mtu: int) -> None:
        """The bridge, every port of it (VLAN/VXLAN, veths, the hypervisor's taps) and the far
        ends of the veths iacloud made: a veth drops frames bigger than its peer's MTU."""
        bridge = table.by_name[n.bridge]
        targets = [bridge, *table.slaves.get(bridge.index, ())]
        try:
            for link in targets:
                ipr.link("set", index=link.index, mtu=mtu)
        except NetlinkError as exc:
            raise links.netlink_error(f"cannot set mtu {mtu} on {link.name}", exc) from exc
        inner: dict[str, str] = {}
        if netns.exists(n.dhcp_namespace):
            inner[n.dhcp_namespace] = n.dhcp_inner
        for link in targets:
            owner = link.owner
            if owner and link.name.startswith(names.ROUTER_LEG_PREFIX):
                ns = names.router_namespace(*owner)
                inner[ns] = names.router_leg(ns, n.bridge)[1]
            elif owner and link.name.startswith(names.ROUTER_GW_PREFIX):
                ns = names.router_namespace(*owner)
                inner[ns] = names.router_gateway_leg(ns, n.bridge)[1]
        for ns, ifname in inner.items():
            with contextlib.suppress(ProviderError), netns.socket(ns) as nsr:
                index = links.index_of(nsr, ifname)
                if index is not None:
                    nsr.link("set", index=index, mtu=mtu)

    def _teardown(self, bridge: str, remove_dir: bool = True) -> None:
        """Remove everything of the network; what is already gone is skipped."""
        n = NetworkNames(bridge)
        files = self.state.network(bridge)
        network_dhcp.teardown(n, files, thorough=True)
        with IPRoute() as ipr:
            for name in (n.vlan, n.vxlan, bridge):
                links.delete(ipr, name)
        netfacts.remove(bridge)
        netnames.remove_dir(bridge)
        if remove_dir:
            files.remove()
