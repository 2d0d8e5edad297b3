"""DNS names of servers on iacloud networks: host-local files that servers write and the
network's dnsmasq reads (Designate's job at its smallest).

A network with `dns_domain` runs its dnsmasq with `--hostsdir=<root>/<bridge>.hosts` (`root`
as in `iacloud.netfacts`) and `--expand-hosts`: dnsmasq watches that directory with inotify and
adds, changes and drops names as files come, change and go, without a restart or a signal.
Each server NIC on the bridge writes one file there, named after its MAC:

    # iacloud:<stack id>:<address>
    198.18.10.23 web-0

(the address the NIC has: its port's, else the DHCP lease dnsmasq granted, and the server's
host name as one RFC 1123 label; dnsmasq appends the domain). A server registers on every
network iacloud built, whether it has a `dns_domain` or not, so setting one later names the
servers already there. Removing a server removes its files; a file is only removed by the
owner written in it. Names are never taken from what a guest says in its DHCP request
(`--dhcp-ignore-names`): a guest cannot claim another's name.

The directory is world-readable (dnsmasq reads it after dropping root); host names and
addresses are not secret. This module imports no provider code; both providers import it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
from pathlib import Path

from iacloud import netfacts

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
LABEL = re.compile(_LABEL)
DOMAIN = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*")
_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_OWNER = re.compile(r"[A-Za-z0-9_.:\[\]-]{1,300}")
LABEL_RULE = "1-63 letters, digits and '-', not starting or ending with '-'"


def check_label(value: str) -> str:
    """A host name as one DNS label (RFC 1123, lower case), or ValueError."""
    label = value.lower() if isinstance(value, str) else ""
    if not LABEL.fullmatch(label):
        raise ValueError(f"{value!r} is not a DNS label ({LABEL_RULE})")
    return label


def check_domain(value: str) -> str:
    """A DNS domain: labels joined by dots, at most 253 characters, no trailing dot."""
    domain = value.lower() if isinstance(value, str) else ""
    if not DOMAIN.fullmatch(domain):
        raise ValueError(
            f"{value!r} is not a DNS domain (labels of {LABEL_RULE}, joined by '.', e.g. "
            "lab.internal)"
        )
    return domain


def host_label(hostname: str) -> str:
    """The label a server registers: its host name, or a dotted host name's first label."""
    return check_label(hostname.split(".", 1)[0])


def hosts_dir(bridge: str) -> Path | None:
    facts_path = netfacts.path_of(bridge)
    return None if facts_path is None else facts_path.with_name(f"{bridge}.hosts")


def ensure_dir(bridge: str) -> Path:
    directory = hosts_dir(bridge)
    if directory is None:
        raise ValueError(f"{bridge!r} is not a bridge name")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)  # dnsmasq reads it after dropping root
    return directory


def remove_dir(bridge: str) -> None:
    directory = hosts_dir(bridge)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


def _file(bridge: str, mac: str) -> Path | None:
    directory = hosts_dir(bridge)
    if directory is None or not _MAC.fullmatch(mac):
        return None
    return directory / mac.replace(":", "-")


def entry(ip: str, hostname: str, owner: str) -> str:
    """The text of one NIC's file (ValueError on anything that is not what it should be)."""
    if not _OWNER.fullmatch(owner):
        raise ValueError(f"{owner!r} is not an owner tag")
    return f"# {owner}\n{ipaddress.IPv4Address(ip)} {host_label(hostname)}\n"


def register(bridge: str, mac: str, ip: str, hostname: str, owner: str) -> bool:
    """Write (or rewrite) the NIC's file on an iacloud network; False when the bridge is no
    iacloud network (no facts) and nothing was written."""
    path = _file(bridge, mac.lower())
    if path is None or netfacts.read(bridge) is None:
        return False
    text = entry(ip, hostname, owner)
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return True
    ensure_dir(bridge)
    tmp = path.with_name(f".{path.name}.tmp")  # dnsmasq skips names starting with '.'
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


def unregister(bridge: str, mac: str, owner: str) -> None:
    """Remove the NIC's file if `owner` wrote it."""
    path = _file(bridge, mac.lower())
    if path is None:
        return
    try:
        first = path.read_text().splitlines()[:1]
    except OSError:
        return
    if first == [f"# {owner}"]:
        path.unlink(missing_ok=True)


def names(bridge: str) -> dict[str, str]:
    """{label: ip} of the files on a bridge (for reads and tests)."""
    directory = hosts_dir(bridge)
    out: dict[str, str] = {}
    if directory is None or not directory.is_dir():
        return out
    for f in sorted(directory.iterdir()):
        if f.name.startswith("."):
            continue
        with contextlib.suppress(OSError, ValueError):
            for line in f.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and not line.startswith("#"):
                    out[check_label(parts[1])] = str(ipaddress.IPv4Address(parts[0]))
    return out
