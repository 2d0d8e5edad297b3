"""The serial console log of a server: its readiness line and the addresses it reports.

Our test image prints, once booted:
    IACLOUD-READY hostname=<name> addresses=<if>=<ip/prefix>,... macs=<if>=<mac>,...
Addresses are matched to NICs by MAC (`by_mac`), never by the guest's interface names.
The log is emptied before each start, so the line found is always the current boot's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

READY = "IACLOUD-READY"
TAIL_BYTES = 64 * 1024  # the ready line is near the end of a short boot log


@dataclass(frozen=True)
class Ready:
    hostname: str
    addresses: dict[str, list[str]] = field(default_factory=dict)  # guest interface -> IPs
    macs: dict[str, str] = field(default_factory=dict)  # guest interface -> MAC

    def by_mac(self) -> dict[str, list[str]]:
        """IPs by MAC; interfaces the line gives no MAC for are left out."""
        out: dict[str, list[str]] = {}
        for ifname, ips in self.addresses.items():
            if ifname in self.macs:
                out.setdefault(self.macs[ifname], []).extend(ips)
        return out


def parse_ready(line: str) -> Ready | None:
    line = line.strip()
    if not line.startswith(READY):
        return None
    fields: dict[str, str] = {}
    for word in line[len(READY) :].split():
        key, sep, value = word.partition("=")
        if sep:
            fields[key] = value
    addresses: dict[str, list[str]] = {}
    for item in filter(None, fields.get("addresses", "").split(",")):
        ifname, sep, cidr = item.partition("=")
        if sep and ifname and cidr:
            addresses.setdefault(ifname, []).append(cidr.split("/")[0])
    macs: dict[str, str] = {}
    for item in filter(None, fields.get("macs", "").split(",")):
        ifname, sep, mac = item.partition("=")
        if sep and ifname and mac:
            macs[ifname] = mac.lower()
    return Ready(fields.get("hostname", ""), addresses, macs)


def read_tail(path: str | os.PathLike[str], size: int = TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            f.seek(max(0, end - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def last_ready(path: str | os.PathLike[str] | None) -> Ready | None:
    if not path:
        return None
    for line in reversed(read_tail(path).splitlines()):
        if (ready := parse_ready(line.replace("\r", ""))) is not None:
            return ready
    return None


def reset(path: Path) -> None:
    """Empty the log before a boot (creating it, and its directory, when missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb"):
        pass


def wait_ready(
    path: Path, timeout: float, alive: Callable[[], bool], interval: float = 0.2
) -> Ready | None:
    """The current boot's ready line, or None when `timeout` passed or the guest stopped."""
    deadline = time.monotonic() + timeout
    while True:
        if (ready := last_ready(path)) is not None:
            return ready
        if time.monotonic() >= deadline or not alive():
            return None
        time.sleep(interval)
