"""The serial console log of a server on a remote host (issue #16), read through libvirt alone.

A local server's log is a file in the stack's data directory (`console`). A remote host's
files are not ours to open, so there the log is a volume of the host's pool
(`iac-<stack>-<address>.console.raw`, beside the root disk and seed): QEMU writes the file,
and iacloud reads its tail with a bounded `virStorageVolDownload` (offset, length) over the
same connection, for the readiness wait and the ready line. Emptied before each start by
recreating the volume; removed with the server.
"""

from __future__ import annotations

import contextlib
import os

import libvirt

from iacloud.errors import ProviderError

from . import storage
from .host_context import HostContext
from .pool import Pool
from .tags import volume_name


def name_for(stack_id: str, address: str) -> str:
    return volume_name(stack_id, address, "raw", "console")


def path_in(pool: Pool, name: str) -> str:
    return f"{pool.path.rstrip('/')}/{name}"


def _locate(host: HostContext, path: str) -> tuple[Pool, str] | None:
    pool_name = host.pools.name_of_path(host.conn(), os.path.dirname(path))
    pool = host.pools.find(host.conn(), pool_name) if pool_name else None
    return (pool, os.path.basename(path)) if pool is not None else None


def reset(host: HostContext, path: str) -> None:
    """An empty log volume at `path` (in one of the host's pools), made anew."""
    found = _locate(host, path)
    if found is None:
        raise ProviderError(f"console log {path}: no pool of host {host.name} holds it")
    pool, name = found
    storage.delete(storage.lookup(pool, name))
    # readable by QEMU (which writes it) and by nobody else's guests
    storage.create(pool, storage.volume_xml(name, 0, "raw", mode="0600"), f"console log {name}")


def remove(host: HostContext, path: str) -> None:
    found = _locate(host, path)
    if found is not None:
        storage.delete(storage.lookup(found[0], found[1]))


def read_tail(host: HostContext, path: str, size: int) -> str:
    """The last `size` bytes of the log, decoded; "" when it cannot be read (yet)."""
    with contextlib.suppress(ProviderError, libvirt.libvirtError):
        found = _locate(host, path)
        if found is None:
            return ""
        pool, name = found
        vol = storage.lookup(pool, name)
        if vol is None:
            return ""
        length = vol.info()[1]  # a raw file's capacity is its size, read from the file
        offset = max(0, length - size)
        if length <= offset:
            return ""
        conn = host.conn()
        stream = conn.newStream(0)
        data = bytearray()
        try:
            vol.download(stream, offset, length - offset, 0)
            while len(data) < size:
                chunk = stream.recv(min(256 * 1024, size - len(data)))
                if not isinstance(chunk, bytes) or not chunk:
                    break
                data += chunk
            stream.finish()
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise
        return bytes(data).decode(errors="replace")
    return ""
