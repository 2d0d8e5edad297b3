"""A network's DNS server for its `dns_domain`: a second dnsmasq, without DHCP, in the
network's DHCP namespace, on the DHCP server's address (port 53).

It answers `HOSTNAME.<dns_domain>` from the hosts directory servers register in
(`iacloud.netnames`), which it watches with inotify: a name comes and goes the moment its file
does, with no signal and no restart. Queries outside the domain are refused (`--no-resolv`,
`--local=/<domain>/`: nothing is forwarded, the namespace has no way out anyway).

Why a process of its own rather than DNS in the DHCP server: dnsmasq gives a DHCP lease the
name a hosts file has for its address and keeps it with the lease, so a name would outlive its
server until the lease expires (seen with dnsmasq 2.90). Without DHCP there are no leases and
the hosts directory alone decides. It also keeps the DHCP server's restart on every port
change away from DNS. A change of `dns_domain` restarts both (the DHCP server hands out the
domain name): a few milliseconds without answers, leases kept, so the `live` class.

The DHCP server hands out the domain name and, when the network has no `dns` of its own, this
server's address as the DNS server (`network_dhcp.dhcp_config`).
"""

from __future__ import annotations

from typing import Any

from iacloud import netnames
from iacloud.providers.netlink import dnsmasq, netns
from iacloud.providers.netlink.names import NetworkNames
from iacloud.providers.netlink.records import NetworkFiles


def build_args(
    n: NetworkNames, files: NetworkFiles, domain: str, hosts_dir: str, user: str, program: str
) -> list[str]:
    dns = files.dns()
    return [
        program,
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        f"--interface={n.dhcp_inner}",
        "--except-interface=lo",
        "--bind-dynamic",
        f"--domain={domain}",
        f"--local=/{domain}/",  # answered here only, never forwarded
        "--expand-hosts",  # the files hold bare host names
        f"--hostsdir={hosts_dir}",
        f"--pid-file={dns.pid}",
        f"--log-facility={dns.log}",
        f"--user={user}",
    ]


def served_domain(files: NetworkFiles, namespace: str) -> str | None:
    """The domain the network's DNS server answers for, if it runs in the namespace."""
    found = dnsmasq.running(files.dns())
    if found is None or not netns.process_in(found[0], namespace):
        return None
    domain: Any = dnsmasq.parse_args(found[1])["domain"]
    return domain if isinstance(domain, str) else None


def converge(
    n: NetworkNames, files: NetworkFiles, domain: str | None, user: str, rebuilt: bool
) -> None:
    """Run the DNS server with exactly the wanted arguments (domain None: none at all).
    rebuilt: the namespace or its veth was made anew, so a running server is restarted."""
    dns = files.dns()
    if domain is None:
        dnsmasq.stop(dns)
        return
    hosts_dir = str(netnames.ensure_dir(n.bridge))
    running = dnsmasq.running(dns)
    program = running[1][0] if running else dnsmasq.binary()
    args = build_args(n, files, domain, hosts_dir, user, program)
    if (
        running
        and not rebuilt
        and running[1] == args
        and netns.process_in(running[0], n.dhcp_namespace)
    ):
        return
    dnsmasq.stop(dns)
    dnsmasq.start(n.dhcp_namespace, args, dns)


def stop(files: NetworkFiles, search: bool = False) -> None:
    dnsmasq.stop(files.dns(), search=search)
