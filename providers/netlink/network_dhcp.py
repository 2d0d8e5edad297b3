"""A network's DHCP side: a namespace joined to the bridge by a veth, the DHCP server address
on its inner end and dnsmasq running there with exactly the wanted arguments (the network's
record and its ports' reservations); and the facts servers on the bridge read (`netfacts`)."""

from __future__ import annotations

import ipaddress
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from iacloud import netfacts
from iacloud.errors import ProviderError
from iacloud.providers.netlink import dns, dnsmasq, links, netns
from iacloud.providers.netlink.base import NetlinkResource
from iacloud.providers.netlink.links import LinkTable
from iacloud.providers.netlink.names import NetworkNames
from iacloud.providers.netlink.network_inputs import plan_of
from iacloud.providers.netlink.records import NetworkFiles

_NO_IPV6 = {"net/ipv6/conf/all/disable_ipv6": "1", "net/ipv6/conf/default/disable_ipv6": "1"}


def dhcp_config(
    names_: NetworkNames, files: NetworkFiles, record: dict[str, Any], user: str, lease_time: int
) -> dnsmasq.DhcpConfig:
    plan = plan_of(record)
    inputs = record["inputs"]
    hosts = sorted(
        {
            (p["mac"], p["ip"])
            for p in files.read_ports()
            if plan.is_host(ipaddress.IPv4Address(p["ip"]))
        }
    )
    domain = inputs.get("dns_domain")
    own_dns = str(plan.server) if domain and not inputs.get("dns") else None
    return dnsmasq.DhcpConfig(
        interface=names_.dhcp_inner,
        range_start=str(plan.range_start),
        range_end=str(plan.range_end),
        netmask=plan.netmask,
        gateway=str(plan.gateway),
        dns=tuple(inputs.get("dns") or ()),
        mtu=inputs.get("mtu"),
        hosts=tuple(hosts),
        lease_time=lease_time,
        user=user,
        domain=domain,
        own_dns=own_dns,
    )


def converge(n: NetworkNames, files: NetworkFiles, tag: str, user: str, lease_time: int) -> None:
    """Make the DHCP side match the network's record: torn down when dhcp is off, else the
    namespace, the veth, the server address and a dnsmasq running with exactly the wanted
    arguments, each created or fixed only if it is missing or wrong."""
    record = files.read_record()
    if not record or not record["inputs"].get("dhcp"):
        teardown(n, files)
        return
    plan = plan_of(record)
    assert plan.server is not None
    # A namespace made anew (removed by hand, say) cannot hold the old veth's far end.
    rebuilt = not netns.exists(n.dhcp_namespace)
    netns.create(n.dhcp_namespace)
    netns.write_sysctls(n.dhcp_namespace, _NO_IPV6)
    with IPRoute() as ipr:
        table = LinkTable.fetch([n.bridge, n.dhcp_veth])
        bridge = table.by_name[n.bridge]
        veth = table.get(n.dhcp_veth)
        if rebuilt or veth is None or veth.master != bridge.index:
            links.delete(ipr, n.dhcp_veth)
            rebuilt = True
            try:
                ipr.link(
                    "add",
                    ifname=n.dhcp_veth,
                    kind="veth",
                    peer={"ifname": n.dhcp_inner, "net_ns_fd": n.dhcp_namespace},
                )
                index = links.index_of(ipr, n.dhcp_veth)
                ipr.link("set", index=index, ifalias=tag)
                links.disable_ipv6(n.dhcp_veth)
                ipr.link("set", index=index, mtu=bridge.mtu)
                ipr.link("set", index=index, master=bridge.index, state="up")
            except NetlinkError as exc:
                raise links.netlink_error(f"cannot create DHCP veth {n.dhcp_veth}", exc) from exc
    with netns.socket(n.dhcp_namespace) as nsr:
        index = links.index_of(nsr, n.dhcp_inner)
        if index is None:
            raise ProviderError(f"{n.dhcp_inner} is missing in {n.dhcp_namespace}")
        links.ensure_address(nsr, index, str(plan.server), plan.prefixlen, bridge.mtu)

    cfg = dhcp_config(n, files, record, user, lease_time)
    args = dnsmasq.build_args(cfg, files, dnsmasq.binary())
    running = dnsmasq.running(files)
    if not (
        running
        and not rebuilt
        and running[1] == args
        and netns.process_in(running[0], n.dhcp_namespace)
    ):
        dnsmasq.stop(files)
        dnsmasq.start(n.dhcp_namespace, args, files)
    domain = record["inputs"].get("dns_domain")
    dns.converge(n, files, domain, user, rebuilt)


def teardown(n: NetworkNames, files: NetworkFiles, thorough: bool = False) -> None:
    """thorough: also look for a dnsmasq of this network that its pid file does not name
    (a scan of /proc: done on delete, not on every update of a network without DHCP)."""
    dnsmasq.stop(files, search=thorough)
    dns.stop(files, search=thorough)
    # The veth before the namespace: deleting one end removes the pair at once, while a
    # removed namespace is dismantled by the kernel later.
    with IPRoute() as ipr:
        links.delete(ipr, n.dhcp_veth)
    netns.remove(n.dhcp_namespace)
    files.remove_dhcp_files()


def publish_facts(files: NetworkFiles) -> None:
    """What servers on this bridge need to know (`iacloud.netfacts`): subnet, gateway, DNS,
    MTU and dnsmasq's lease file."""
    record = files.read_record()
    if not record:
        return
    inputs = record["inputs"]
    facts = netfacts.NetworkFacts(
        bridge=files.bridge,
        cidr=inputs["cidr"],
        gateway=inputs.get("gateway"),
        dns=list(inputs.get("dns") or ()),
        mtu=inputs.get("mtu"),
        dhcp=bool(inputs.get("dhcp")),
        leases=str(files.leases) if inputs.get("dhcp") else None,
        stack_id=record.get("stack_id"),
        address=record.get("address"),
        dns_domain=inputs.get("dns_domain"),
    )
    try:
        netfacts.write(facts)
    except OSError as exc:
        raise ProviderError(
            f"cannot publish the facts of network {files.bridge} in {netfacts.root()}: {exc}"
        ) from exc


def sync_reservations(resource: NetlinkResource, bridge: str, serve: bool = False) -> None:
    """After a port changed: restart the network's dnsmasq with the new reservation list, if it
    runs. serve: the port's step needs its reservation served, so a DHCP server that is down
    (killed) is started again and checked after, rather than the step reporting success with
    nothing serving it. Otherwise (a port deleted) a network whose DHCP is down is left alone;
    its own update starts the server with every reservation."""
    files = resource.state.network(bridge)
    n = NetworkNames(bridge)
    with resource.network_lock(bridge):
        record = files.read_record()
        if not record or not record["inputs"].get("dhcp"):
            return
        running = dnsmasq.running(files)
        if not running and not serve:
            return
        cfg = dhcp_config(
            n, files, record, resource.settings.dhcp_user, resource.settings.lease_time
        )
        args = dnsmasq.build_args(cfg, files, running[1][0] if running else dnsmasq.binary())
        if running is None or running[1] != args:
            if not netns.exists(n.dhcp_namespace):
                raise ProviderError(
                    f"the DHCP namespace {n.dhcp_namespace} of network {bridge} is gone: "
                    "apply again to rebuild the network's DHCP side"
                )
            dnsmasq.stop(files)
            dnsmasq.start(n.dhcp_namespace, args, files)
        if serve:
            check_dhcp_running(files, bridge)


def check_dhcp_running(files: NetworkFiles, bridge: str) -> None:
    """A step that depends on the network's dnsmasq checks it after acting: it may have been
    killed meanwhile, and the step must not then report success."""
    if dnsmasq.running(files) is None:
        raise ProviderError(
            f"the DHCP server (dnsmasq) of network {bridge} is not running after the step "
            f"(killed meanwhile? see {files.log}); apply again to restart it"
        )
