"""The provider's files in its state directory: what the kernel cannot tell us.

An isolated bridge has no address, so a network's cidr and gateway are not observable; they are
kept in `<state_dir>/<bridge>/network.json`, written before anything is created so an
interrupted create is still understood. The same directory holds the network's port
reservations (`ports/port-<hash>.json`, one file per port, so ports created in parallel never
rewrite each other's lines), the floating IPs taken from it (`floating/fip-<hash>.json`, on an
external network) and dnsmasq's pid, lease and log files. Routers keep
`<state_dir>/routers/<namespace>.json` (a namespace cannot carry an alias).

Every file is written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from iacloud.providers.netlink import names


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError):
        return None  # a damaged record reads as no record: the object is rebuilt or reported
    return data if isinstance(data, dict) else None


class StateDir:
    """Paths under the provider's state directory. Names come from `names`, validated
    interface names included, so no user text becomes a path component unchecked."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def network(self, bridge: str) -> NetworkFiles:
        return NetworkFiles(self.root / names.validate_ifname(bridge))

    def router(self, namespace: str) -> Path:
        return self.root / "routers" / f"{namespace}.json"

    def routers(self) -> Iterator[Path]:
        d = self.root / "routers"
        if d.is_dir():
            yield from sorted(d.glob("iacloud-rtr-*.json"))

    def networks(self) -> Iterator[NetworkFiles]:
        if self.root.is_dir():
            for d in sorted(self.root.iterdir()):
                if d.is_dir() and d.name != "routers":
                    yield NetworkFiles(d)


_PORT_KEYS = ("stack_id", "address", "mac", "ip")
_FLOATING_KEYS = ("stack_id", "address", "ip")


class NetworkFiles:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.record = directory / "network.json"
        self.ports = directory / "ports"
        self.floating = directory / "floating"
        self.pid = directory / "dnsmasq.pid"
        self.leases = directory / "dnsmasq.leases"
        self.log = directory / "dnsmasq.log"

    @property
    def bridge(self) -> str:
        return self.dir.name

    def read_record(self) -> dict[str, Any] | None:
        return read_json(self.record)

    def write_record(self, data: dict[str, Any]) -> None:
        write_json(self.record, data)

    def port(self, stack_id: str, address: str) -> Path:
        return self.ports / names.port_record(stack_id, address)

    def read_ports(self) -> list[dict[str, Any]]:
        """Every reservation on this network, in a stable order."""
        if not self.ports.is_dir():
            return []
        out = []
        for f in sorted(self.ports.glob("port-*.json")):
            data = read_json(f)
            if data and all(isinstance(data.get(k), str) for k in _PORT_KEYS):
                out.append(data)
        return out

    def floating_ip(self, stack_id: str, address: str) -> Path:
        return self.floating / names.floating_record(stack_id, address)

    def read_floating(self) -> list[dict[str, Any]]:
        """Every floating IP taken from this network, in a stable order."""
        if not self.floating.is_dir():
            return []
        out = []
        for f in sorted(self.floating.glob("fip-*.json")):
            data = read_json(f)
            if data and all(isinstance(data.get(k), str) for k in _FLOATING_KEYS):
                out.append(data)
        return out

    def dns(self) -> DnsFiles:
        return DnsFiles(self.dir)

    def remove_dhcp_files(self) -> None:
        for f in (self.pid, self.leases, self.log, self.dns().pid, self.dns().log):
            f.unlink(missing_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class DnsFiles:
    """The pid and log file of a network's DNS server (a second dnsmasq, see `dns`), in the
    network's directory; the same attributes `dnsmasq` uses for the DHCP server's."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.pid = directory / "dns.pid"
        self.log = directory / "dns.log"
        self.leases = directory / "dns.leases"  # never written: the DNS server has no DHCP
