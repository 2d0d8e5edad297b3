"""The serial console log of a server on another host: QEMU writes it there (virtlogd), and it
is read over the host's SSH (`CatalogHost.ssh`, an argument list with every word quoted), the
same way the network side reaches that host. Bounded: a tail of at most `limit` bytes and a
timeout; a host without an SSH target, or one that does not answer, reads as an empty log."""

from __future__ import annotations

import subprocess
from pathlib import Path

from iacloud.site_hosts import CatalogHost

TIMEOUT = 10.0  # seconds for one read


def read_tail(entry: CatalogHost | None, path: Path, limit: int) -> str:
    if entry is None or entry.ssh is None:
        return ""
    argv = entry.ssh.argv("tail", "-c", str(int(limit)), str(path), connect_timeout=5)
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if done.returncode != 0:
        return ""
    return done.stdout[-limit:].decode("utf-8", errors="replace")
