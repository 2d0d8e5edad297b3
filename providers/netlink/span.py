"""A network spanning the site's hosts (issue #16): the same bridge on every host where its
servers are, joined to the network node's bridge by VXLAN with unicast peers.

The network node is this machine (where iacloud runs): the bridge, dnsmasq, routers and
floating IPs stay here. A network whose `hosts` input (filled at plan time from its servers'
placements, `iacloud.placement`) names catalog hosts gets:

- here: a VXLAN device `iacx<S>` on its bridge (VNI derived from the bridge name, so stable and
  the same everywhere), `local` = the node's underlay address (`[provider.netlink] underlay`);
- on each such host, over its SSH (one `sh -c` with a fixed script of ours and every value an
  argument of its own, quoted): the bridge `iacb<S>` and `iacx<S>` with `local` = the host's
  underlay address, `nolearning`, tagged with the network's alias;
- everywhere, one all-zero FDB entry per other member (head-end replication over unicast,
  no multicast), full mesh, rewritten whole on each change, so a host added or removed changes
  every member's peers live;
- an MTU 50 bytes below the underlay's 1500 (the VXLAN overhead) on the bridges and VXLAN
  devices, handed to guests by dnsmasq (DHCP option 26), unless the network sets `mtu`.

Hosts whose URI is this machine's (`qemu:///system`) need nothing: they share this bridge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from iacloud import ssh_run
from iacloud.errors import ProviderError
from iacloud.providers.netlink import links
from iacloud.providers.netlink.names import NetworkNames
from iacloud.site_hosts import CatalogHost
from iacloud.ssh_run import SshFailed, last_line

VXLAN_PORT = 4789
OVERHEAD = 50  # outer Ethernet, IPv4, UDP and VXLAN headers
SPAN_MTU = 1500 - OVERHEAD
SSH_TIMEOUT = 30.0  # seconds for one host's side
ZERO_MAC = "00:00:00:00:00:00"

# run on a member host as `sh -c SCRIPT sh BRIDGE VXLAN VNI LOCAL MTU TAG [PEER...]`
_ENSURE = r"""set -e
b=$1 x=$2 vni=$3 local=$4 mtu=$5 tag=$6
shift 6
ip link show dev "$b" >/dev/null 2>&1 || ip link add "$b" type bridge
ip link set dev "$b" alias "$tag"
echo 1 > "/proc/sys/net/ipv6/conf/$b/disable_ipv6" 2>/dev/null || true
# a device of that name made otherwise (another VNI, underlay or port) is made again
d=$(ip -d link show dev "$x" 2>/dev/null) || d=
case $d in
*" vxlan id $vni local $local "*" dstport 4789 "*) ;;
*)  [ -z "$d" ] || ip link del dev "$x"
    ip link add "$x" type vxlan id "$vni" local "$local" dstport 4789 nolearning ;;
esac
ip link set dev "$x" alias "$tag" mtu "$mtu" master "$b"
ip link set dev "$b" mtu "$mtu"
for d in $(bridge fdb show dev "$x" | sed -n 's/^00:00:00:00:00:00 dst \([0-9.]*\).*/\1/p'); do
    bridge fdb del 00:00:00:00:00:00 dev "$x" dst "$d"
done
for p; do bridge fdb append 00:00:00:00:00:00 dev "$x" dst "$p"; done
ip link set dev "$x" up
ip link set dev "$b" up
"""
# `sh -c SCRIPT sh BRIDGE VXLAN TAG`: removes them when they carry the network's tag
_REMOVE = r"""b=$1 x=$2 tag=$3
for l in "$x" "$b"; do
    if [ "$(cat "/sys/class/net/$l/ifalias" 2>/dev/null)" = "$tag" ]; then ip link del dev "$l"; fi
done
true
"""
# `sh -c SCRIPT sh BRIDGE VXLAN TAG`: prints "up" when both exist with the tag
_PROBE = r"""b=$1 x=$2 tag=$3
[ "$(cat "/sys/class/net/$b/ifalias" 2>/dev/null)" = "$tag" ] &&
[ "$(cat "/sys/class/net/$x/ifalias" 2>/dev/null)" = "$tag" ] &&
m=$(cat "/sys/class/net/$x/master/ifindex" 2>/dev/null) &&
[ "$m" = "$(cat "/sys/class/net/$b/ifindex")" ] &&
echo up || true
"""


@dataclass(frozen=True)
class Member:
    """A host the network reaches over VXLAN: its name, underlay address and catalog entry."""

    name: str
    underlay: str
    entry: CatalogHost


def vni(bridge: str) -> int:
    """The network's VXLAN id, derived from its bridge name: the same on every member."""
    return int(bridge[4:], 16) % 16_777_214 + 1


def members(names: Sequence[str], hosts: Mapping[str, CatalogHost]) -> list[Member]:
    """The catalog hosts of `names` that are not this machine, each checked for what the
    spanning needs (SSH, an underlay address)."""
    out = []
    for name in sorted(set(names)):
        entry = hosts.get(name)
        if entry is None:
            raise ProviderError(f"unknown host {name!r} in the network's hosts")
        if entry.is_local:
            continue
        if entry.ssh is None:
            raise ProviderError(
                f"host {name} has no ssh target: the network cannot reach it (add ssh = ...)"
            )
        underlay = entry.underlay_address
        if underlay is None:
            raise ProviderError(
                f'host {name} has no underlay address: set underlay = "IP" on it in the '
                "site catalog (the address VXLAN reaches it at)"
            )
        out.append(Member(name, underlay, entry))
    return out


def run(member: Member, script: str, *args: str, timeout: float = SSH_TIMEOUT) -> str:
    """`sh -c SCRIPT sh ARGS` on the member over its SSH target, within `timeout` seconds:
    its output, or a ProviderError that says which host and why."""
    assert member.entry.ssh is not None
    try:
        done = ssh_run.run(member.entry.ssh, "sh", "-c", script, "sh", *args, timeout=timeout)
    except SshFailed as exc:  # the script never ran
        raise ProviderError(f"host {member.name} cannot be reached over ssh: {exc}") from None
    if done.returncode != 0:
        raise ProviderError(f"host {member.name}: exit {done.returncode}: {last_line(done.stderr)}")
    return done.stdout


def ensure(
    n: NetworkNames,
    tag: str,
    node: str | None,
    wanted: Sequence[Member],
    gone: Sequence[Member],
    mtu: int,
) -> None:
    """Make the network span exactly `wanted` (and the network node): every member's bridge,
    VXLAN device and peers; `gone` members' sides removed."""
    for m in gone:
        remove(m, n, tag)
    if not wanted:
        _remove_local(n)
        return
    if node is None:
        raise ProviderError(
            "a network spanning hosts needs the network node's underlay address: "
            'set underlay = "IP" in [provider.netlink]'
        )
    ids = vni(n.bridge)
    everyone = [node, *(m.underlay for m in wanted)]
    _ensure_local(n, tag, ids, node, [a for a in everyone if a != node], mtu)
    for m in wanted:
        peers = [a for a in everyone if a != m.underlay]
        run(m, _ENSURE, n.bridge, n.vxlan, str(ids), m.underlay, str(mtu), tag, *peers)


def remove(member: Member, n: NetworkNames, tag: str) -> None:
    run(member, _REMOVE, n.bridge, n.vxlan, tag)


def present(member: Member, n: NetworkNames, tag: str) -> bool:
    """Whether the member's side exists (bridge and VXLAN device, tagged, enslaved)."""
    return run(member, _PROBE, n.bridge, n.vxlan, tag).strip() == "up"


def _ensure_local(
    n: NetworkNames, tag: str, ids: int, local: str, peers: Sequence[str], mtu: int
) -> None:
    with IPRoute() as ipr:
        bridge = links.index_of(ipr, n.bridge)
        if bridge is None:
            raise ProviderError(f"bridge {n.bridge} does not exist")
        try:
            index = links.index_of(ipr, n.vxlan)
            if index is None:
                ipr.link("add", ifname=n.vxlan, kind="vxlan", vxlan_id=ids,
                         vxlan_local=local, vxlan_port=VXLAN_PORT, vxlan_learning=0)  # fmt: skip
                index = links.index_of(ipr, n.vxlan)
                links.disable_ipv6(n.vxlan)
            ipr.link("set", index=index, ifalias=tag)
            ipr.link("set", index=index, mtu=mtu)
            ipr.link("set", index=bridge, mtu=mtu)
            ipr.link("set", index=index, master=bridge, state="up")
            have = {
                e.get_attr("NDA_DST")
                for e in ipr.fdb("dump", ifindex=index)
                if e.get_attr("NDA_LLADDR") == ZERO_MAC
            }
            for dst in sorted(have - set(peers)):
                ipr.fdb("del", ifindex=index, lladdr=ZERO_MAC, dst=dst)
            for dst in sorted(set(peers) - have):
                ipr.fdb("append", ifindex=index, lladdr=ZERO_MAC, dst=dst)
        except NetlinkError as exc:
            raise links.netlink_error(f"cannot span {n.bridge} over VXLAN", exc) from exc


def _remove_local(n: NetworkNames) -> None:
    with IPRoute() as ipr:
        links.delete(ipr, n.vxlan)
