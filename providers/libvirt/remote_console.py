"""The serial console log of a server on another host: QEMU writes it there (virtlogd), and it
is read over the host's SSH (`ssh_run`, an argument list with every word quoted), the
same way the network side reaches that host. Bounded: a tail of at most `limit` bytes and a
timeout; a host without an SSH target, or one that does not answer, reads as an empty log.
The log goes with its server (`remove`, on delete and after a migration), so a later server
of the same name never shows an old one's lines."""

from __future__ import annotations

import re
from pathlib import Path

from iacloud import ssh_run
from iacloud.site_hosts import CatalogHost
from iacloud.ssh_run import SshFailed

TIMEOUT = 10.0  # seconds for one read
LOG_DIR = Path("/var/log/libvirt/qemu")  # exists wherever libvirt runs QEMU
_LOG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,200}\.console\.log")


def log_path(domain: str) -> Path:
    return LOG_DIR / f"{domain}.console.log"


def remove(entry: CatalogHost | None, path: Path) -> bool:
    """Delete a server's console log on its host; False when it could not be (no SSH target,
    no answer): a log is left behind, nothing else."""
    if entry is None or entry.ssh is None:
        return False
    if path.parent != LOG_DIR or not _LOG_NAME.fullmatch(path.name):
        raise ValueError(f"{path} is not a server's console log")
    try:
        done = ssh_run.run(entry.ssh, "rm", "-f", "--", str(path), timeout=TIMEOUT)
    except SshFailed:
        return False
    return done.returncode == 0


def read_tail(entry: CatalogHost | None, path: Path, limit: int) -> str:
    if entry is None or entry.ssh is None:
        return ""
    try:
        done = ssh_run.run(entry.ssh, "tail", "-c", str(int(limit)), str(path), timeout=TIMEOUT)
    except SshFailed:
        return ""
    return done.stdout[-limit:] if done.returncode == 0 else ""
