"""Storage pools: the default directory pool is created and started when missing.

Images, volumes, root overlays and seed ISOs all live in libvirt storage pools, so libvirt
(not iacloud) creates, uploads, resizes and deletes files, and relabels them for QEMU.
Only the default pool (setting `pool`) is ever created; a pool named in a resource's inputs
must already exist.
"""

from __future__ import annotations

import os
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import libvirt

from iacloud.errors import ProviderError

from .connection import NO_POOL, failing, is_error, is_local
from .tags import check_object_name


@dataclass(frozen=True)
class Pool:
    name: str
    path: str  # the directory of a dir pool (its volumes' paths are path/name)
    handle: libvirt.virStoragePool


def pool_xml(name: str, path: str) -> str:
    pool = ET.Element("pool", type="dir")
    ET.SubElement(pool, "name").text = name
    target = ET.SubElement(pool, "target")
    ET.SubElement(target, "path").text = path
    perms = ET.SubElement(target, "permissions")
    ET.SubElement(perms, "mode").text = "0711"  # QEMU must traverse it, nobody list it
    return ET.tostring(pool, encoding="unicode")


def target_path(handle: libvirt.virStoragePool) -> str:
    root = ET.fromstring(handle.XMLDesc(0))
    return root.findtext("target/path") or ""


def _untraversable_ancestor(path: str) -> str | None:
    """The first directory above `path` that QEMU (not root) could not pass through."""
    for parent in Path(path).parents:
        try:
            mode = parent.stat().st_mode
        except OSError:
            continue
        if not mode & 0o001:
            return str(parent)
    return None


class Pools:
    """The pools of one run, looked up once each."""

    def __init__(self, uri: str, default: str, default_path: str) -> None:
        self.uri = uri
        self.default = default
        self.default_path = default_path
        self._pools: dict[str, Pool] = {}
        self._paths: dict[str, str] = {}  # directory -> pool name
        self._listed = False
        self._lock = threading.Lock()

    def find(self, conn: libvirt.virConnect, name: str | None) -> Pool | None:
        """An active pool, or None when it does not exist (reads never create pools)."""
        name = check_object_name(name or self.default, "pool name")
        with self._lock:
            if name in self._pools:
                return self._pools[name]
            try:
                handle = conn.storagePoolLookupByName(name)
            except libvirt.libvirtError as exc:
                if is_error(exc, NO_POOL):
                    return None
                raise ProviderError(f"looking up pool {name}: {exc.get_error_message()}") from exc
            with failing(f"starting pool {name}"):
                if not handle.isActive():
                    handle.create(0)
            pool = Pool(name, target_path(handle), handle)
            self._pools[name] = pool
            self._paths[os.path.normpath(pool.path)] = name
            return pool

    def get(self, conn: libvirt.virConnect, name: str | None) -> Pool:
        """An active pool; the default pool is created when missing."""
        pool = self.find(conn, name)
        if pool is not None:
            return pool
        if name not in (None, self.default):
            raise ProviderError(f"storage pool {name!r} does not exist")
        return self._create_default(conn)

    def _create_default(self, conn: libvirt.virConnect) -> Pool:
        name, path = self.default, self.default_path
        with self._lock:
            if name in self._pools:
                return self._pools[name]
            # QEMU runs as an unprivileged user: refuse a pool it could not read from
            if is_local(self.uri) and (blocked := _untraversable_ancestor(path)):
                raise ProviderError(
                    f"QEMU cannot reach storage pool path {path}: {blocked} is not traversable "
                    f"by other users (chmod o+x {blocked}, or set pool_path elsewhere)"
                )
            with failing(f"creating storage pool {name} at {path}"):
                try:
                    handle = conn.storagePoolDefineXML(pool_xml(name, path), 0)
                except libvirt.libvirtError as exc:
                    if error := self._raced(conn, name, exc):
                        raise error from exc
                    handle = conn.storagePoolLookupByName(name)
                handle.build(0)  # mkdir; succeeds on an existing directory
                if not handle.isActive():
                    handle.create(0)
                handle.setAutostart(1)
            pool = Pool(name, target_path(handle), handle)
            self._pools[name] = pool
            self._paths[os.path.normpath(pool.path)] = name
            return pool

    @staticmethod
    def _raced(
        conn: libvirt.virConnect, name: str, exc: libvirt.libvirtError
    ) -> ProviderError | None:
        """None when another process defined the pool meanwhile (then it is simply used)."""
        try:
            conn.storagePoolLookupByName(name)
        except libvirt.libvirtError:
            return ProviderError(f"creating storage pool {name}: {exc.get_error_message()}")
        return None

    def name_of_path(self, conn: libvirt.virConnect, directory: str) -> str | None:
        """The pool whose directory is `directory` (to map a backing file to an image id);
        all pools are listed once per run, and again only when a directory is not found."""
        directory = os.path.normpath(directory)
        with self._lock:
            if directory in self._paths:
                return self._paths[directory]
            if self._listed:
                return None
            self._listed = True
            with failing("listing storage pools"):
                for handle in conn.listAllStoragePools(0):
                    try:
                        self._paths[os.path.normpath(target_path(handle))] = handle.name()
                    except libvirt.libvirtError:
                        continue  # a pool removed meanwhile
            return self._paths.get(directory)

    def forget(self) -> None:
        with self._lock:
            self._pools.clear()
            self._paths.clear()
            self._listed = False
