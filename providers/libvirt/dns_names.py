"""A server's DNS names on iacloud networks: each NIC registers `HOSTNAME -> address` in its
network's hosts directory (`iacloud.netnames`), which the network's dnsmasq serves under the
network's `dns_domain` and re-reads by itself (inotify): names come and go with servers live.

The address is the NIC's port's fixed address, else the DHCP lease the network's dnsmasq
granted to its MAC (by create's end a guest that is waited for has one). A NIC whose address is
not known yet (`ready = "none"` and no lease so far, a NIC hot-plugged a moment ago) registers
at the next apply that updates or starts the server. Registration happens on every iacloud
network, so a `dns_domain` set later names the servers already on it.

Called at the end of create and update and before delete; the only shared thing is the
directory, whose files carry their owner (`iacloud:<stack id>:<address>`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from iacloud import netfacts, netnames
from iacloud.errors import ProviderError
from iacloud.ids import PortId

from .domain_xml import Nic, NicRecord


def owner(stack_id: str, address: str) -> str:
    return f"iacloud:{stack_id}:{address}"


def check(hostname: str) -> str:
    """The label a host name registers as, or a clear error."""
    try:
        return netnames.host_label(hostname)
    except ValueError as exc:
        raise ProviderError(f"hostname {hostname!r} cannot be a DNS name: {exc}") from None


def _fixed(records: Sequence[NicRecord]) -> dict[str, str]:
    out = {}
    for r in records:
        if r.port:
            try:
                out[r.mac] = PortId.parse(r.port).ip
            except ValueError:
                continue
    return out


def register(
    who: str, hostname: str, nics: Iterable[Nic], records: Sequence[NicRecord] = ()
) -> None:
    """Register each NIC whose address is known (`records`: how the inputs named each NIC, for
    the ports' fixed addresses)."""
    check(hostname)
    fixed = _fixed(records)
    leases: dict[str, dict[str, str]] = {}
    for nic in nics:
        facts = netfacts.read(nic.bridge)
        if facts is None:
            continue  # not an iacloud network
        ip = fixed.get(nic.mac)
        if ip is None:
            if nic.bridge not in leases:
                leases[nic.bridge] = netfacts.leases(facts)
            ip = leases[nic.bridge].get(nic.mac)
        if ip is None:
            continue
        try:
            netnames.register(nic.bridge, nic.mac, ip, hostname, who)
        except (OSError, ValueError) as exc:
            raise ProviderError(f"cannot register the DNS name of NIC {nic.mac}: {exc}") from exc


def unregister(who: str, nics: Iterable[Nic]) -> None:
    for nic in nics:
        try:
            netnames.unregister(nic.bridge, nic.mac, who)
        except OSError as exc:
            raise ProviderError(f"cannot remove the DNS name of NIC {nic.mac}: {exc}") from exc
