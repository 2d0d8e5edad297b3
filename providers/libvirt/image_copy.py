"""Images on the hosts that need them (issue #16): the default host is the image service; a
root disk or volume made from an image on another host is backed by a copy of the image in
that host's pool.

The copy has the image's own volume name, in the target host's pool of the image's pool
name when the host has one, else in the host's default pool:
- the name is the ownership tag: the orphan search lists a copy as a part of the image
  (`TaggedObject.part`, "copy on host NAME"), an orphan exactly when the stack no longer
  records the image; a site catalog image's copy keeps its `iacsite-` name, which the
  orphan search leaves alone, as it does the original;
- who deletes copies: the image's delete removes its copies from every catalog host (a
  stack's image); a site catalog image and its copies are kept, as destroy keeps the image;
- a second server or volume on that host finds the copy and uses it: one copy per host.

The copy is streamed through libvirt (download from the default host, upload to the
target's pool; nothing touches a local file), hashed on the way; it must match the sha256
recorded when the image was uploaded (or the one the site image's name carries). A copy that
fails the check, or is cut off, is deleted.
"""

from __future__ import annotations

import contextlib
import re
import threading
from pathlib import Path

import libvirt

from iacloud.errors import ProviderError

from . import storage
from .connection import failing
from .host_context import HostContext
from .pool import Pool
from .tags import SITE_VOLUME_PREFIX

_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()
_SITE_SHA = re.compile(r"[0-9a-f]{64}")


def _lock(uri: str, image_id: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((uri, image_id), threading.Lock())


def expected_sha(data_dir: Path, name: str) -> str | None:
    """The sha256 the image had when it was uploaded: its record, or a site image's name."""
    with contextlib.suppress(OSError):
        recorded = (data_dir / "images" / f"{name}.sha256").read_text().strip()
        if recorded:
            return recorded
    if name.startswith(SITE_VOLUME_PREFIX):
        for part in name.split("."):
            for word in part.split("-"):
                if _SITE_SHA.fullmatch(word):
                    return word
    return None


def ensure_copy(
    source: HostContext, target: HostContext, image_id: str, data_dir: Path, what: str = "image"
) -> tuple[str, str, int]:
    """(path, format, virtual size) of `image_id` on `target`, copied there from `source`
    unless it is there already."""
    if target is source:
        return source.image_file(image_id, what)
    pool_name, name = storage.split_id(image_id, f"{what} id")
    with _lock(target.uri, image_id):
        pool = _target_pool(target, pool_name, create=True)
        assert pool is not None
        if storage.lookup(pool, name) is None:
            _copy(source, target, pool_name, pool, name, expected_sha(data_dir, name))
        return target.image_file(f"{pool.name}/{name}", what)


def _target_pool(target: HostContext, pool_name: str, create: bool) -> Pool | None:
    """The pool of that name on the host, else the host's default pool."""
    conn = target.conn()
    pool = target.pools.find(conn, pool_name)
    if pool is None:
        pool = target.pools.get(conn, None) if create else target.pools.find(conn, None)
    return pool


def _copy(
    source: HostContext,
    target: HostContext,
    pool_name: str,
    pool: Pool,
    name: str,
    sha: str | None,
) -> None:
    """Stream the image `pool_name/name` of the default host into `pool` of `target`."""
    src_pool = source.pools.find(source.conn(), pool_name)
    src = storage.lookup(src_pool, name) if src_pool else None
    if src_pool is None or src is None:
        raise ProviderError(f"image {pool_name}/{name} does not exist on the default host")
    info = storage.info(src_pool, src)
    size = info.physical if info.physical is not None else info.allocation
    # created raw so libvirt writes nothing into it; the bytes are the image's file as it is
    vol = storage.create(
        pool,
        storage.volume_xml(name, max(size, 1), "raw", mode="0444"),
        f"copy of image {name} on host {target.name}",
    )
    try:
        storage.upload(
            target.conn(), vol, storage.download(source.conn(), src), size, expect_sha256=sha
        )
        with failing(f"refreshing pool {pool.name} on host {target.name}"):
            pool.handle.refresh(0)  # libvirt re-reads the copied file's format and sizes
    except BaseException as exc:
        with contextlib.suppress(libvirt.libvirtError, ProviderError):
            storage.delete(vol)
        if isinstance(exc, ProviderError):
            raise ProviderError(f"copying image {name} to host {target.name}: {exc}") from exc
        raise


def delete_copies(contexts: list[HostContext], pool_name: str, name: str) -> None:
    """Remove an image's copies from the hosts other than the default one (the first)."""
    for context in contexts[1:]:
        pool = _target_pool(context, pool_name, create=False)
        if pool is not None:
            storage.delete(storage.lookup(pool, name))
