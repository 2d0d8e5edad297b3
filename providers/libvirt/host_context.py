"""One libvirt host as a run uses it (issue #16): its connection, pools, listings and the
virtualization it offers. The provider has one context per host it touches: the default one
(`[provider.libvirt] uri`, where images live) and one per site catalog host a server or volume
names in its `host` input.

Operations run "on" a host: `LibvirtProvider.on(name)` makes that host's context the current
one of the calling thread, so the code of the resource types (`self.conn`, the provider's
`pools` and `listings`) reaches the right libvirtd without passing the host through every
function. A step runs in one thread from start to end, so the context cannot leak into
another step.

Images are copied to a host that needs one (`copy_image`): streamed from the default host into
the host's pool as a volume named by the content's sha256 (`iacsite-copy-<sha256>.<format>`),
checked on the way, and found again by that name instead of copied twice. Like a catalog image,
such a copy is the host's, shared by every stack, and kept by destroy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import libvirt

from iacloud.errors import ProviderError
from iacloud.site_hosts import CatalogHost

from . import storage
from .connection import Connection, is_local
from .listings import Listings
from .pool import Pool, Pools
from .remote_host import open_bounded
from .tags import SITE_VOLUME_PREFIX

COPY_PREFIX = f"{SITE_VOLUME_PREFIX}copy-"
CONNECT_TIMEOUT = 5.0  # seconds to reach another host's libvirtd (a bounded open)
_copy_locks: dict[tuple[str, str], threading.Lock] = {}
_copy_locks_guard = threading.Lock()


class HostContext:
    """A host's connection (opened on first use, shared by the run's threads), pools and
    listings. `name` is None for the default host."""

    def __init__(
        self, name: str | None, uri: str, pool: str, pool_path: str, entry: CatalogHost | None
    ) -> None:
        self.name = name
        self.uri = uri
        self.entry = entry
        opener = None
        if entry is not None and not entry.is_local:

            def opener() -> libvirt.virConnect:
                return open_bounded(entry, CONNECT_TIMEOUT)

        self.connection = Connection(uri, on_reconnect=self.forget, opener=opener)
        self.pools = Pools(uri, pool, pool_path)
        self.listings = Listings()
        self.virt_type: str | None = None
        self.lock = threading.Lock()

    @property
    def label(self) -> str:
        return self.name or "the default host"

    @property
    def local(self) -> bool:
        """Whether libvirtd runs on this machine (its files and bridges are ours to see)."""
        return is_local(self.uri)

    def conn(self) -> libvirt.virConnect:
        return self.connection.get()

    def forget(self) -> None:
        """The connection was reopened: pool and domain handles of the old one are dead."""
        self.listings.clear()
        self.pools.forget()

    def close(self) -> None:
        self.forget()
        self.connection.close()


def crosses_default_host(before: object, after: str | None) -> bool:
    """Whether a change of `host` from `before` (a recorded value) to `after` leaves or
    reaches the provider's own libvirtd (None): no migration makes that move."""
    return after != before and (before is None or after is None)


def is_copy(volume_id: str) -> bool:
    """Whether a volume id names a host's copy of an image."""
    return volume_id.rpartition("/")[2].startswith(COPY_PREFIX)


def copy_name(sha256: str, fmt: str) -> str:
    return f"{COPY_PREFIX}{sha256[:32]}.{fmt}"


def copy_digest(volume_id: str) -> str | None:
    """The sha256 prefix a host's image copy is named by; None for any other volume."""
    name = volume_id.rpartition("/")[2]
    if not name.startswith(COPY_PREFIX):
        return None
    digest = name[len(COPY_PREFIX) :].partition(".")[0]
    return digest if len(digest) == 32 and all(c in "0123456789abcdef" for c in digest) else None


def _lock_for(host: str, name: str) -> threading.Lock:
    with _copy_locks_guard:
        return _copy_locks.setdefault((host, name), threading.Lock())


def copy_image(
    source: HostContext,
    target: HostContext,
    image_id: str,
    fmt: str,
    sha256: Callable[[], str],
) -> tuple[str, int]:
    """(path on `target`, virtual size) of image `image_id` of `source`, copied into the
    target's default pool when it is not there yet. `sha256` gives the image's content hash
    (recorded when it was uploaded, else read)."""
    pool_name, name = storage.split_id(image_id, "image id")
    src_pool = source.pools.find(source.conn(), pool_name)
    src_vol = storage.lookup(src_pool, name) if src_pool else None
    if src_pool is None or src_vol is None:
        raise ProviderError(f"image {image_id} does not exist on {source.label}")
    digest = sha256()
    return _ensure_copy(source, src_pool, src_vol, target, copy_name(digest, fmt), digest)


def copy_between(source: HostContext, target: HostContext, name: str) -> tuple[str, int]:
    """(path on `target`, virtual size) of the image copy `name` (an `iacsite-copy-*` volume
    of `source`'s default pool), copied from `source` when `target` has none. The bytes are
    checked against the hash in the name: a live migration brings the backing of the disks it
    moves this way, so the image itself need not be read again."""
    digest = copy_digest(name)
    if digest is None:
        raise ProviderError(f"{name} is not an image copy")
    src_pool = source.pools.get(source.conn(), None)
    src_vol = storage.lookup(src_pool, name)
    if src_vol is None:
        raise ProviderError(f"image copy {name} is not on {source.label}")
    return _ensure_copy(source, src_pool, src_vol, target, name, digest)


def _ensure_copy(
    source: HostContext,
    src_pool: Pool,
    src_vol: libvirt.virStorageVol,
    target: HostContext,
    copy: str,
    digest: str,
) -> tuple[str, int]:
    """The target's volume `copy` (made from `src_vol` when missing, its sha256 checked to
    start with `digest`): (path, virtual size)."""
    conn = target.conn()
    pool = target.pools.get(conn, None)
    with _lock_for(target.uri, copy):
        vol = storage.lookup(pool, copy)
        if vol is None:
            src_info = storage.info(src_pool, src_vol)
            size = src_info.physical if src_info.physical is not None else src_info.allocation
            vol = storage.create(
                pool,
                # raw, so libvirt writes nothing into it; the bytes come from the upload
                storage.volume_xml(copy, max(size, 1), "raw", mode="0444"),
                f"copy of {src_info.id} on {target.label}",
            )
            try:
                chunks = storage.download(source.conn(), src_vol)
                got = storage.upload(conn, vol, chunks, size)
                if not got.startswith(digest.lower()):
                    raise ProviderError(
                        f"copy of {src_info.id} on {target.label}: sha256 {got}, "
                        f"expected {digest.lower()}"
                    )
                pool.handle.refresh(0)
                vol = pool.handle.storageVolLookupByName(copy)
            except BaseException:
                storage.delete(vol)
                raise
        info = storage.info(pool, vol)
    return info.path, info.capacity
