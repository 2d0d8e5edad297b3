"""Network facts by bridge: a small host-local index that one provider writes, another reads.

The netlink provider builds a network (bridge, subnet, dnsmasq); the libvirt provider puts
NICs on it by bridge name and needs to know, for that bridge, the subnet and gateway (static
network-config for a NIC on a fixed port) and where dnsmasq keeps its leases (the address a
guest really got, by MAC, without the guest's help). The netlink provider's own records live
in its per-stack `state_dir`, which the libvirt provider cannot find from a bridge name: a
network of another stack, or a stack with its own `state_dir`, would be invisible. So each
network also writes one small file here, keyed by what both providers share, the bridge:

    <root>/<bridge>.json   {"bridge", "cidr", "gateway", "dns", "mtu", "dhcp", "leases",
                            "stack_id", "address", "dns_domain"}

Beside it, `<root>/<bridge>.hosts/` holds the DNS names servers register (`iacloud.netnames`).

<root> is `$IACLOUD_NETFACTS_DIR`, else /run/iacloud/networks: /run, because bridges do not
survive a reboot either, so a fact never outlives its bridge by more than a run. Files are
written to a temporary name and renamed, and read as data only (no path in them is trusted
beyond reading a lease file; a bridge name is validated before it becomes a path).
This module imports no provider code; both providers import it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

_BRIDGE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")
DEFAULT_ROOT = "/run/iacloud/networks"


@dataclass(frozen=True)
class NetworkFacts:
    bridge: str
    cidr: str
    gateway: str | None = None
    dns: list[str] = field(default_factory=list)
    mtu: int | None = None
    dhcp: bool = False
    leases: str | None = None  # dnsmasq's lease file
    stack_id: str | None = None
    address: str | None = None
    dns_domain: str | None = None  # names of servers on it are served under this domain

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.cidr).prefixlen


def root() -> Path:
    return Path(os.environ.get("IACLOUD_NETFACTS_DIR") or DEFAULT_ROOT)


def _path(bridge: str) -> Path | None:
    if not _BRIDGE.fullmatch(bridge) or bridge in (".", ".."):
        return None
    return root() / f"{bridge}.json"


def path_of(bridge: str) -> Path | None:
    """The facts file of a bridge; None when `bridge` cannot be a bridge name."""
    return _path(bridge)


def write(facts: NetworkFacts) -> None:
    path = _path(facts.bridge)
    if path is None:
        raise ValueError(f"{facts.bridge!r} is not a bridge name")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(asdict(facts), sort_keys=True))
    os.replace(tmp, path)


def remove(bridge: str) -> None:
    path = _path(bridge)
    if path is not None:
        path.unlink(missing_ok=True)


def read(bridge: str) -> NetworkFacts | None:
    """The facts of a bridge; None when no iacloud network wrote any (or they are damaged)."""
    path = _path(bridge)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
        facts = NetworkFacts(**{k: data[k] for k in data if k in NetworkFacts.__dataclass_fields__})
        ipaddress.IPv4Network(facts.cidr)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return facts if facts.bridge == bridge else None


def parse_leases(text: str, now: float | None = None) -> dict[str, str]:
    """dnsmasq's lease file ("<expiry> <mac> <ip> <hostname> <client-id>" per line) as
    {mac: ip}: per MAC the most recently granted unexpired lease (a replaced guest with a new
    client id may leave its predecessor's lease until it expires; expiry 0 = infinite)."""
    now = time.time() if now is None else now
    best: dict[str, tuple[float, str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        expiry = int(parts[0])
        mac = parts[1].lower()
        try:
            ip = str(ipaddress.IPv4Address(parts[2]))
        except ValueError:
            continue  # an IPv6 lease, or garbage
        rank = float("inf") if expiry == 0 else float(expiry)
        if expiry != 0 and expiry < now:
            continue
        if mac not in best or rank > best[mac][0]:
            best[mac] = (rank, ip)
    return {mac: ip for mac, (_, ip) in best.items()}


def leases(facts: NetworkFacts, now: float | None = None) -> dict[str, str]:
    if not facts.dhcp or not facts.leases:
        return {}
    try:
        text = Path(facts.leases).read_text(errors="replace")
    except OSError:
        return {}
    return parse_leases(text, now)
