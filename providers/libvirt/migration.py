"""Moving a server from one catalog host to another through libvirt migration (issue #16).

Storage is not shared between hosts, so the disks travel with the guest:

1. on the target, every disk of the server (root disk or boot volume, attached data volumes)
   is created empty with the same pool, name, size and format; a disk that is an overlay of an
   image copy (`host_context`) gets the target's copy of that image as its backing, copied from
   the source host's copy when the target has none. The seed ISO is copied over as it is
   (read-only devices are not mirrored by QEMU);
2. libvirt migrates the domain (managed direct migration: this process talks to both
   libvirtds) with PERSIST_DEST and UNDEFINE_SOURCE, mirroring every disk over NBD
   (NON_SHARED_DISK: the whole disk; libvirt cannot mirror only the top layer, NON_SHARED_INC,
   of a disk that names a pool volume: it checks the target by file path); the migration and
   disk streams go to the target's underlay address, since the hosts' own names need not
   resolve; the destination XML carries the target's console log path;
3. only after libvirt says it is done are the source's disks and seed removed.

A running server moves live. A stopped one is started paused (its CPUs never run), migrated
the same way, and powered off on the target: QEMU is what copies the disks, so a stopped server
moves with the same guarantees and no second copy path.

A migration that fails leaves the guest on the source (libvirt's guarantee; a stopped one is
stopped again) and removes what step 1 made on the target. A disk that is an overlay of
something other than an image copy (a volume snapshot, which stays on its host) cannot move.
"""

from __future__ import annotations

import contextlib
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from iacloud.errors import ProviderError

from . import storage
from .connection import failing
from .domain_xml import ParsedDomain
from .host_context import COPY_PREFIX, HostContext, copy_between
from .pool import Pool
from .tags import format_of

FLAGS = (
    libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    | libvirt.VIR_MIGRATE_NON_SHARED_DISK
)


def destination_xml(xml: str, console: str) -> str:
    """The domain's migratable XML with the target's console log path."""
    root = ET.fromstring(xml)
    for tag in ("serial", "console"):
        for source in root.findall(f"devices/{tag}/source"):
            if source.get("path"):
                source.set("path", console)
        for log in root.findall(f"devices/{tag}/log"):
            if log.get("file"):
                log.set("file", console)
    return ET.tostring(root, encoding="unicode")


@dataclass(frozen=True)
class _Disk:
    target: str  # vda, vdb, ...
    volume: libvirt.virStorageVol  # on the source
    made: libvirt.virStorageVol  # its empty twin on the target


def migrate(
    dom: libvirt.virDomain,
    parsed: ParsedDomain,
    source: HostContext,
    target: HostContext,
    console: str,
) -> None:
    """Move the domain `dom` (`parsed`: its XML) from `source` to `target`, running or not."""
    address = target.entry.underlay_address if target.entry is not None else None
    if address is None:
        raise ProviderError(
            f"host {target.label} has no underlay address for the migration stream "
            '(set underlay = "IP" on it in the site catalog)'
        )
    if source.uri == target.uri:
        raise ProviderError(f"hosts {source.label} and {target.label} are one libvirtd")
    record = parsed.record
    if record is None or not record.seed:
        raise ProviderError(f"domain {parsed.name} has no seed of iacloud's")
    running = dom.isActive()
    made: list[libvirt.virStorageVol] = []
    started = False
    try:
        disks = []
        for disk in parsed.disks:
            if disk.device != "disk":
                continue
            if disk.pool is None or disk.volume is None:
                raise ProviderError(
                    f"disk {disk.target} of {parsed.name} is not a pool volume: it cannot move"
                )
            src = _volume(source, disk.pool, disk.volume)
            twin = _twin(source, target, disk.pool, src)
            made.append(twin)
            disks.append(_Disk(disk.target, src, twin))
        seed_pool, seed_name = storage.split_id(record.seed)
        src_seed = _volume(source, seed_pool, seed_name)
        seed_info = storage.info(source.pools.get(source.conn(), seed_pool), src_seed)
        size = seed_info.physical or seed_info.capacity
        dst_seed_pool = _pool(target, seed_pool)
        _clear(dst_seed_pool, seed_name)
        seed = storage.create(
            dst_seed_pool,
            storage.volume_xml(seed_name, size, "raw", mode="0644"),
            f"seed {seed_name} on {target.label}",
        )
        made.append(seed)
        storage.upload(target.conn(), seed, storage.download(source.conn(), src_seed), size)
        if not running:
            # a paused QEMU copies the disks; the guest's CPUs never run
            with failing(f"starting {parsed.name} paused on {source.label} to move it"):
                dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
            started = True
        params = {
            libvirt.VIR_MIGRATE_PARAM_DEST_XML: destination_xml(
                dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE), console
            ),
            libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: [d.target for d in disks],
            libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{address}",
            libvirt.VIR_MIGRATE_PARAM_DISKS_URI: f"tcp://{address}",
        }
        flags = FLAGS | (libvirt.VIR_MIGRATE_LIVE if running else libvirt.VIR_MIGRATE_PAUSED)
        try:
            moved = dom.migrate3(target.conn(), params, flags)
        except libvirt.libvirtError as exc:
            raise ProviderError(
                f"migrating {parsed.name} from {source.label} to {target.label}: "
                f"{exc.get_error_message() or exc} (it is still on {source.label})"
            ) from exc
    except BaseException:
        if started:
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
        for vol in made:
            with contextlib.suppress(Exception):
                storage.delete(vol)
        raise
    if started:
        with failing(f"stopping {parsed.name} on {target.label} after moving it"):
            moved.destroy()
    for vol in (*(d.volume for d in disks), src_seed):
        with contextlib.suppress(ProviderError):
            storage.delete(vol)


def move_volume(source: HostContext, target: HostContext, volume_id: str) -> str:
    """Move a volume no domain uses from `source` to `target` by streaming its bytes as they
    are on disk; the path it has on the target. An overlay's header names its backing file,
    so it moves only when the target's copy of that image has the same path."""
    pool_name, name = storage.split_id(volume_id)
    src = _volume(source, pool_name, name)
    info = storage.info(source.pools.get(source.conn(), pool_name), src)
    twin = _twin(source, target, pool_name, src)
    try:
        made = storage.info(_pool(target, pool_name), twin)
        if made.backing_path != info.backing_path:
            raise ProviderError(
                f"volume {volume_id} is an overlay of {info.backing_path} on {source.label} "
                f"and would be one of {made.backing_path} on {target.label}: only a running "
                "server's migration can move it"
            )
        size = info.physical if info.physical is not None else info.allocation
        storage.upload(target.conn(), twin, storage.download(source.conn(), src), size)
    except BaseException:
        with contextlib.suppress(Exception):
            storage.delete(twin)
        raise
    storage.delete(src)
    return made.path


def _twin(
    source: HostContext, target: HostContext, pool_name: str, src: libvirt.virStorageVol
) -> libvirt.virStorageVol:
    """An empty volume on `target` shaped like `src`, for the migration to mirror into."""
    info = storage.info(source.pools.get(source.conn(), pool_name), src)
    backing = None
    if info.backing_path:
        base = os.path.basename(info.backing_path)
        if not base.startswith(COPY_PREFIX):
            raise ProviderError(
                f"volume {info.id} is an overlay of {info.backing_path}, which stays on "
                f"{source.label}: it cannot move"
            )
        path, _ = copy_between(source, target, base)
        backing = (path, base.rpartition(".")[2])
    fmt = format_of(info.name) or info.format
    if fmt not in ("qcow2", "raw"):
        raise ProviderError(f"volume {info.id} has no format iacloud knows ({fmt})")
    pool = _pool(target, pool_name)
    _clear(pool, info.name)
    return storage.create(
        pool,
        storage.volume_xml(info.name, info.capacity, fmt, backing=backing),
        f"disk {info.name} on {target.label}",
    )


def _pool(ctx: HostContext, name: str) -> Pool:
    """The target's pool `name`: the host's default pool is made when missing (a host that
    holds nothing of iacloud's yet), another one must exist."""
    if name == ctx.pools.default:
        return ctx.pools.get(ctx.conn(), None)
    pool = ctx.pools.find(ctx.conn(), name)
    if pool is None:
        raise ProviderError(f"pool {name} is not on {ctx.label}: the disks in it cannot move")
    return pool


def _clear(pool: Pool, name: str) -> None:
    """Remove what an interrupted move left on the target: while the domain is still on the
    source, the source's disks are the real ones."""
    storage.delete(storage.lookup(pool, name))


def _volume(ctx: HostContext, pool_name: str, name: str) -> libvirt.virStorageVol:
    pool = ctx.pools.find(ctx.conn(), pool_name)
    vol = storage.lookup(pool, name) if pool is not None else None
    if pool is None or vol is None:
        raise ProviderError(f"volume {pool_name}/{name} is not on {ctx.label}")
    return vol
