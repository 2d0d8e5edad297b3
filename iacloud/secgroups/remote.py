"""iacloud's tables on a catalog host (issue #16), reached over the host's SSH target.

Everything runs as an argument list through `ssh_run` (each word quoted for the remote
shell), never a shell string with values spliced in: `nft -f -` with the ruleset on stdin,
`nft -j list table ...` to read it back, `cat` of the bridge-nf sysctl, and the host's
`conntrack` tool (Debian's conntrack package) to list and delete tracked connections. The
ruleset text is `compiler`'s, made from validated values, exactly what this machine applies.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from iacloud import ssh_run
from iacloud.errors import ProviderError
from iacloud.provider import Check
from iacloud.secgroups import conntrack
from iacloud.secgroups.bridge_nf import BRIDGE_NF, problem
from iacloud.secgroups.compiler import FAMILIES, TABLE, Group, Member, removal
from iacloud.site_hosts import SshTarget
from iacloud.ssh_run import SshFailed, last_line

TIMEOUT = 30.0
CONNECT_TIMEOUT = 5
NO_COMMAND = 127  # the remote shell's exit status for a command it cannot find
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Host:
    """A catalog host by name and the SSH target of its network side."""

    name: str
    ssh: SshTarget


def run(host: Host, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`argv` on the host; a failed ssh (not the command) is a ProviderError."""
    try:
        return ssh_run.run(
            host.ssh, *argv, stdin=stdin, timeout=TIMEOUT, connect_timeout=CONNECT_TIMEOUT
        )
    except SshFailed as exc:
        raise ProviderError(f"host {host.name}: ssh failed: {exc}") from None


def bridged_conntrack(host: Host) -> str | None:
    """Why bridged IPv4 cannot be tracked on the host, or None when it can."""
    done = run(host, "cat", str(BRIDGE_NF))
    return problem(done.stdout.strip() if done.returncode == 0 else None)


def apply(host: Host, text: str) -> None:
    """Replace our tables on the host with `text` (one transaction); empty: remove them."""
    done = run(host, "nft", "-f", "-", stdin=text or removal())
    if done.returncode == NO_COMMAND:
        raise ProviderError(f"host {host.name}: nft is not installed (apt install nftables)")
    if done.returncode != 0:
        raise ProviderError(
            f"host {host.name}: nft refused iacloud's security group ruleset: "
            + last_line(done.stderr)
        )


def read(host: Host) -> dict[str, list[dict[str, Any]]]:
    """{family: the table's items} on the host, as `nft.read` here."""
    out: dict[str, list[dict[str, Any]]] = {}
    for family in FAMILIES:
        done = run(host, "nft", "-j", "list", "table", family, TABLE)
        if done.returncode != 0:
            continue
        try:
            items = json.loads(done.stdout)["nftables"]
        except (ValueError, KeyError, TypeError):
            continue
        out[family] = [i for i in items if isinstance(i, dict)]
    return out


def _ipv4(value: str | None) -> bool:
    try:
        ipaddress.IPv4Address(value or "")
    except ValueError:
        return False
    return True


def parse_entries(text: str) -> list[conntrack.Entry]:
    """`conntrack -L -f ipv4` lines as entries: the first src/dst/dport are the original
    direction's; `zone=` is printed only for a zone other than 0."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        proto = words[0] if words[0] in ("tcp", "udp", "icmp") else "other"
        fields: dict[str, str] = {}
        for word in words[1:]:
            key, sep, value = word.partition("=")
            if sep and key not in fields:
                fields[key] = value
        if not (_ipv4(fields.get("src")) and _ipv4(fields.get("dst"))):
            continue  # only addresses go back to the host's command line
        dport = fields.get("dport")
        zone = fields.get("zone", "0")
        out.append(
            conntrack.Entry(
                int(zone) if zone.isdigit() else 0,
                proto,
                fields["src"],
                fields["dst"],
                int(dport) if proto in ("tcp", "udp") and dport and dport.isdigit() else None,
            )
        )
    return out


def prune(
    host: Host, groups: Mapping[str, Group], members: Sequence[Member], everyone: Sequence[Member]
) -> int:
    """Delete the host's entries its rules no longer allow; the number of deletions run.
    A host without the conntrack tool keeps its entries (doctor says so): the new rules then
    stop only new connections."""
    if not any(m.ips for m in members):
        return 0
    done = run(host, "conntrack", "-L", "-f", "ipv4")
    if done.returncode == NO_COMMAND:
        log.warning("host %s has no conntrack tool: established connections outlive "
                    "removed rules (apt install conntrack)", host.name)  # fmt: skip
        return 0
    if done.returncode != 0:
        raise ProviderError(f"host {host.name}: conntrack -L failed: {last_line(done.stderr)}")
    deleted = 0
    for e in sorted(set(conntrack.stale(parse_entries(done.stdout), groups, members, everyone)),
                    key=repr):  # fmt: skip
        argv = ["conntrack", "-D", "-f", "ipv4", "-s", e.saddr, "-d", e.daddr]
        if e.proto != "other":
            argv += ["-p", e.proto]
        if e.dport is not None:
            argv += ["--dport", str(e.dport)]
        if e.zone:
            argv += ["-w", str(e.zone)]
        run(host, *argv)  # gone meanwhile: conntrack says so and exits 1, which is fine
        deleted += 1
    return deleted


def checks(host: Host) -> list[Check]:
    """What enforcing security groups needs on the host, for `iacloud doctor`: bridged IPv4
    reaching conntrack, and the conntrack tool (nft is among the network tools)."""
    try:
        why = bridged_conntrack(host)
        tool = run(host, "conntrack", "--version")
    except ProviderError as exc:
        return [Check("security groups", "fail", f"could not check over ssh: {exc}")]
    out = [
        Check("security groups", "ok", "bridged IPv4 reaches conntrack (bridge-nf-call-iptables "
              "= 1): security groups of NICs on this host are enforced here")
        if why is None
        else Check("security groups", "warn", f"{why}: a NIC on this host that lists security "
                   "groups fails to apply", "on the host: modprobe br_netfilter && sysctl -w "
                   "net.bridge.bridge-nf-call-iptables=1 (keep both in /etc/modules-load.d/ "
                   "and /etc/sysctl.d/)")
    ]  # fmt: skip
    if tool.returncode != 0:
        out.append(
            Check("conntrack", "warn", "the conntrack tool is missing: a removed security group "
                  "rule does not end established connections", "apt-get install conntrack "
                  "(on the host)")
        )  # fmt: skip
    return out
