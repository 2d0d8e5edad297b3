"""One libvirt host as the provider's resource types see it: its connection, pools, listings and
virtualization type, and the volume look-ups that need them (issue #16).

`LibvirtProvider.host(name)` hands these out: name None (or a stack without a site `[hosts]`
table) is the default context, built from the provider's own settings (`uri`, `pool`,
`pool_path`): exactly the one host of a single-host site. A catalog host gets its own context
with its own lazily opened connection; a catalog host whose URI and pool are the provider's own
shares the default context (one connection, one set of listings).

Everything here runs against the context's connection only, so a remote host is never read
through this machine's files: `is_local` tells the few callers that may use local paths (a
file's sha256 read from disk, the console log file, sysfs bridges) whether they may.
"""

from __future__ import annotations

import functools
import threading

import libvirt

from iacloud.errors import ProviderError
from iacloud.site_hosts import CatalogHost

from . import storage, virt_type
from .connection import Connection, failing, is_local
from .domain_xml import parse
from .listings import Listings
from .pool import Pools
from .settings import LibvirtSettings
from .tags import format_of, parse_volume_name

# where a remote host's default pool is created when it is missing (the lab hosts and
# `iacloud doctor`'s advice use it too)
REMOTE_POOL_PATH = "/var/lib/iacloud/pool"
# how long opening a catalog host's connection may take before the host counts as down
CONNECT_TIMEOUT = 10.0


def _open_bounded(entry: CatalogHost, _uri: str) -> libvirt.virConnect:
    from .remote_host import open_bounded

    return open_bounded(entry, CONNECT_TIMEOUT)


class HostContext:
    """A host's connection, pools and listings, for the lifetime of one provider (one run)."""

    def __init__(
        self,
        name: str | None,
        uri: str,
        pool: str,
        pool_path: str,
        settings: LibvirtSettings,
        entry: CatalogHost | None = None,
    ) -> None:
        self.name = name  # None: the default host (the provider's own settings)
        self.uri = uri
        self.entry = entry
        self.settings = settings
        self.pool = pool  # this host's default pool
        opener = None
        if entry is not None and not entry.is_local:
            opener = functools.partial(_open_bounded, entry)
        self.connection = Connection(uri, on_reconnect=self._forget_handles, opener=opener)
        self.pools = Pools(uri, pool, pool_path)
        self.listings = Listings()
        self._virt_lock = threading.Lock()
        self._virt_type: str | None = None

    @classmethod
    def default(cls, settings: LibvirtSettings) -> HostContext:
        return cls(None, settings.uri, settings.pool, settings.pool_path, settings)

    @classmethod
    def of_entry(cls, name: str, entry: CatalogHost, settings: LibvirtSettings) -> HostContext:
        path = settings.pool_path if entry.is_local else REMOTE_POOL_PATH
        return cls(name, entry.uri, entry.pool, path, settings, entry)

    @property
    def label(self) -> str:
        """How messages name the host."""
        return f"host {self.name}" if self.name else f"libvirt at {self.uri}"

    @property
    def is_local(self) -> bool:
        """Whether libvirtd runs on this machine (its files and bridges are ours to see)."""
        return is_local(self.uri)

    def conn(self) -> libvirt.virConnect:
        return self.connection.get()

    def virt_type(self) -> str:
        """'kvm' or 'qemu', probed at most once per run (and cached across runs locally)."""
        with self._virt_lock:
            if self._virt_type is None:
                s = self.settings
                self._virt_type = virt_type.resolve(
                    self.conn(), self.uri, s.virt_type, s.virt_type_cache
                )
            return self._virt_type

    def volume_ref(self, volume_id: str) -> tuple[str, str, str]:
        """(pool, name, format) of an existing volume; its format must be in its name."""
        pool_name, name = storage.split_id(volume_id)
        fmt = format_of(name)
        if fmt is None:
            raise ProviderError(
                f"cannot tell the format of volume {volume_id} without probing it: "
                "its name must end in .qcow2 or .raw"
            )
        tag = parse_volume_name(name)
        if tag is not None and tag.role == "snap":
            # written to, it would change under the volumes made from it
            raise ProviderError(
                f"{volume_id} is a volume snapshot, which is read-only: make a volume from it "
                "(`snapshot = ...` on a volume) and use that"
            )
        pool = self.pools.find(self.conn(), pool_name)
        if pool is None or storage.lookup(pool, name) is None:
            raise ProviderError(f"volume {volume_id} does not exist{self._where()}")
        return pool_name, name, fmt

    def image_file(self, image_id: str, what: str = "image") -> tuple[str, str, int]:
        """(path, format, virtual size in bytes) of an image (or a volume snapshot: `what`),
        to back an overlay with."""
        pool_name, name = storage.split_id(image_id, f"{what} id")
        fmt = format_of(name)
        pool = self.pools.find(self.conn(), pool_name)
        vol = storage.lookup(pool, name) if pool else None
        if pool is None or vol is None:
            raise ProviderError(f"{what} {image_id} does not exist{self._where()}")
        if fmt is None:
            raise ProviderError(f"cannot tell the format of {what} {image_id}")
        info = storage.info(pool, vol)
        return info.path, fmt, info.capacity

    def running_users(self, volume_id: str, path: str) -> list[tuple[libvirt.virDomain, str]]:
        """Running domains that have the volume attached, with its target device there."""
        out = []
        with failing("listing running domains"):
            domains = self.conn().listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        for dom in domains:
            try:
                parsed = parse(dom.XMLDesc(0))
            except libvirt.libvirtError:
                continue  # stopped meanwhile
            for disk in parsed.disks:
                if disk.id == volume_id or (disk.path and disk.path == path):
                    out.append((dom, disk.target))
        return out

    def _where(self) -> str:
        return f" on host {self.name}" if self.name else ""

    def _forget_handles(self) -> None:
        """The connection was reopened: pool and domain handles of the old one are dead."""
        self.listings.clear()
        self.pools.forget()

    def close(self) -> None:
        self.listings.clear()
        self.pools.forget()
        self.connection.close()
