"""Storage volumes shared by images, volumes and servers: ids, XML, upload, delete.

A volume's id is "<pool>/<volume name>". Its format comes from its name (see `tags`), and
every volume XML written here states formats explicitly: the format of a new volume and,
for a copy-on-write overlay, the format of its backing file, so QEMU never guesses one.
"""

from __future__ import annotations

import contextlib
import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import libvirt

from iacloud.errors import ProviderError
from iacloud.ids import VolumeId

from .connection import NO_VOLUME, failing, is_error
from .pool import Pool
from .tags import check_object_name

GiB = 1 << 30
CHUNK = 1 << 20


@dataclass(frozen=True)
class VolumeInfo:
    """What a volume's XML says about it."""

    pool: str
    name: str
    path: str
    capacity: int
    allocation: int
    physical: int | None
    backing_path: str | None
    format: str | None = None  # the format libvirt found the volume in (it probes files)
    mtime: float | None = None  # when the file's contents last changed, in seconds

    @property
    def id(self) -> str:
        return f"{self.pool}/{self.name}"


def split_id(volume_id: str, what: str = "volume id") -> tuple[str, str]:
    """'pool/name' -> (pool, name), refusing anything that is not exactly that."""
    try:
        id = VolumeId.parse(volume_id)
    except ValueError:
        raise ProviderError(f"invalid {what} {volume_id!r}: expected 'POOL/VOLUME'") from None
    return check_object_name(id.pool, "pool name"), check_object_name(id.name, "volume name")


def parse_volume_xml(pool: str, xml: str) -> VolumeInfo:
    root = ET.fromstring(xml)

    def size(tag: str) -> int | None:
        el = root.find(tag)
        return int(el.text) if el is not None and el.text else None  # libvirt writes bytes

    return VolumeInfo(
        pool=pool,
        name=root.findtext("name") or "",
        path=root.findtext("target/path") or "",
        capacity=size("capacity") or 0,
        allocation=size("allocation") or 0,
        physical=size("physical"),
        backing_path=root.findtext("backingStore/path") or None,
        format=fmt.get("type") if (fmt := root.find("target/format")) is not None else None,
        mtime=_seconds(root.findtext("target/timestamps/mtime")),
    )


def _seconds(text: str | None) -> float | None:
    """A timestamp of volume XML ("1700000000.123456789"), or None."""
    try:
        return float(text) if text else None
    except ValueError:
        return None


def volume_xml(
    name: str,
    capacity: int,
    fmt: str,
    *,
    backing: tuple[str, str] | None = None,
    mode: str = "0600",
) -> str:
    """A new volume; `backing` = (path, format) makes a qcow2 overlay of that file."""
    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", unit="bytes").text = str(capacity)
    ET.SubElement(vol, "allocation", unit="bytes").text = "0"  # sparse
    target = ET.SubElement(vol, "target")
    ET.SubElement(target, "format", type=fmt)
    perms = ET.SubElement(target, "permissions")
    ET.SubElement(perms, "mode").text = mode
    if backing is not None:
        store = ET.SubElement(vol, "backingStore")
        ET.SubElement(store, "path").text = backing[0]
        ET.SubElement(store, "format", type=backing[1])
    return ET.tostring(vol, encoding="unicode")


def lookup(pool: Pool, name: str) -> libvirt.virStorageVol | None:
    try:
        return pool.handle.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if is_error(exc, NO_VOLUME):
            return None
        raise ProviderError(f"looking up volume {pool.name}/{name}: {exc}") from exc


def info(pool: Pool, vol: libvirt.virStorageVol) -> VolumeInfo:
    return parse_volume_xml(pool.name, vol.XMLDesc(0))


def create(pool: Pool, xml: str, what: str) -> libvirt.virStorageVol:
    with failing(f"creating {what} in pool {pool.name}"):
        return pool.handle.createXML(xml, 0)


def delete(vol: libvirt.virStorageVol | None) -> None:
    """Delete a volume; one that is already gone is fine."""
    if vol is None:
        return
    try:
        vol.delete(0)
    except libvirt.libvirtError as exc:
        if not is_error(exc, NO_VOLUME):
            raise ProviderError(f"deleting volume {vol.name()}: {exc.get_error_message()}") from exc


def upload(
    conn: libvirt.virConnect,
    vol: libvirt.virStorageVol,
    chunks: Iterable[bytes],
    size: int,
    expect_sha256: str | None = None,
) -> str:
    """Stream `size` bytes into a volume, hashing them on the way; returns the sha256.

    With `expect_sha256`, a mismatch aborts the stream before it is finished and raises;
    the caller deletes the volume."""
    digest = hashlib.sha256()
    stream = conn.newStream(0)
    sent = 0
    try:
        vol.upload(stream, 0, size, 0)
        for chunk in chunks:
            digest.update(chunk)
            view = memoryview(chunk)
            while view:
                n = stream.send(bytes(view))
                if n < 0:
                    raise ProviderError(f"uploading to volume {vol.name()} failed")
                view = view[n:]
            sent += len(chunk)
        if sent != size:
            raise ProviderError(f"source changed while uploading: {sent} of {size} bytes")
        actual = digest.hexdigest()
        if expect_sha256 is not None and actual != expect_sha256.lower():
            raise ProviderError(f"sha256 mismatch: expected {expect_sha256.lower()}, got {actual}")
        stream.finish()
    except BaseException as exc:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        if isinstance(exc, libvirt.libvirtError):
            raise ProviderError(f"uploading to volume {vol.name()}: {exc}") from exc
        raise
    return actual


def download(
    conn: libvirt.virConnect, vol: libvirt.virStorageVol, limit: int | None = None
) -> Iterator[bytes]:
    """A volume's bytes as they are on disk (no format interpretation), streamed through
    libvirt in chunks, so it works over a remote connection too. With `limit`, more bytes
    than that raise instead of being read."""
    stream = conn.newStream(0)
    received = 0
    try:
        vol.download(stream, 0, 0, 0)
        while True:
            chunk = stream.recv(CHUNK)
            if not isinstance(chunk, bytes) or not chunk:
                break
            received += len(chunk)
            if limit is not None and received > limit:
                raise ProviderError(f"volume {vol.name()} is larger than {limit} bytes")
            yield chunk
        stream.finish()
    except BaseException as exc:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        if isinstance(exc, libvirt.libvirtError):
            raise ProviderError(f"reading volume {vol.name()}: {exc}") from exc
        raise


def sha256_of(conn: libvirt.virConnect, vol: libvirt.virStorageVol, path: str | None) -> str:
    """The sha256 of a volume's bytes: one full read. `path`: the volume's file, when libvirtd
    runs on this host, read directly (about twice as fast as libvirt's stream); the stream
    is used otherwise, or when the file cannot be opened."""
    digest = hashlib.sha256()
    if path is not None:
        try:
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
            return digest.hexdigest()
        except OSError:
            digest = hashlib.sha256()
    for chunk in download(conn, vol):
        digest.update(chunk)
    return digest.hexdigest()


def file_chunks(f: BinaryIO) -> Iterable[bytes]:
    while chunk := f.read(CHUNK):
        yield chunk
