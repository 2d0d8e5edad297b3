"""Live migration of a running server from one catalog host to another (issue #16).

Storage is not shared between hosts, so the disks travel with the guest:

1. on the target, the server's image is made present (`LibvirtProvider.backing_image`: the
   host's content-named copy), its root disk is created as an empty overlay of the same name,
   size and format backed by that copy, and its seed ISO is copied over (read-only devices are
   not mirrored by QEMU);
2. libvirt migrates the running domain (managed direct migration: this process talks to both
   libvirtds) with LIVE, PERSIST_DEST and UNDEFINE_SOURCE, mirroring the root disk over NBD
   (NON_SHARED_DISK: the whole disk; libvirt cannot mirror only the top layer, NON_SHARED_INC,
   of a disk that names a pool volume: it checks the target by file path); the migration and
   disk streams go to the target's underlay address, since the hosts' own names need not
   resolve;
   the destination XML carries the target's pool and console log path;
3. only after libvirt says it is done are the source's root disk and seed removed.

A migration that fails leaves the guest running on the source (libvirt's guarantee) and removes
what step 1 made on the target. Attached data volumes would have to move with it; that is not
built, so a server with volumes is refused at plan time.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Callable

import libvirt

from iacloud.errors import ProviderError

from . import storage
from .domain_xml import ParsedDomain
from .host_context import HostContext

FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    | libvirt.VIR_MIGRATE_NON_SHARED_DISK
)


def destination_xml(xml: str, pool: str, console: str) -> str:
    """The domain's migratable XML with the target's pool and console log path."""
    root = ET.fromstring(xml)
    for source in root.findall("devices/disk[@type='volume']/source"):
        source.set("pool", pool)
    for tag in ("serial", "console"):
        for source in root.findall(f"devices/{tag}/source"):
            if source.get("path"):
                source.set("path", console)
        for log in root.findall(f"devices/{tag}/log"):
            if log.get("file"):
                log.set("file", console)
    return ET.tostring(root, encoding="unicode")


def migrate(
    dom: libvirt.virDomain,
    parsed: ParsedDomain,
    source: HostContext,
    target: HostContext,
    backing: Callable[[], tuple[str, str, int]],
    console: str,
) -> None:
    """Move the running domain `dom` (`parsed`: its XML) from `source` to `target`; `backing`
    gives (path, format, size) of its image on the target."""
    address = target.entry.underlay_address if target.entry is not None else None
    if address is None:
        raise ProviderError(
            f"host {target.label} has no underlay address for the migration stream "
            '(set underlay = "IP" on it in the site catalog)'
        )
    record = parsed.record
    if record is None or not record.root or not record.seed:
        raise ProviderError(f"domain {parsed.name} has no root disk and seed of iacloud's")
    dst_pool = target.pools.get(target.conn(), None)
    made: list[libvirt.virStorageVol] = []
    try:
        root_pool, root_name = storage.split_id(record.root)
        seed_pool, seed_name = storage.split_id(record.seed)
        src_root = _volume(source, root_pool, root_name)
        src_seed = _volume(source, seed_pool, seed_name)
        capacity = storage.info(source.pools.get(source.conn(), root_pool), src_root).capacity
        path, fmt, _ = backing()
        made.append(
            storage.create(
                dst_pool,
                storage.volume_xml(root_name, capacity, "qcow2", backing=(path, fmt)),
                f"root disk {root_name} on {target.label}",
            )
        )
        seed_info = storage.info(source.pools.get(source.conn(), seed_pool), src_seed)
        size = seed_info.physical or seed_info.capacity
        seed = storage.create(
            dst_pool,
            storage.volume_xml(seed_name, size, "raw", mode="0644"),
            f"seed {seed_name} on {target.label}",
        )
        made.append(seed)
        storage.upload(target.conn(), seed, storage.download(source.conn(), src_seed), size)
        params = {
            libvirt.VIR_MIGRATE_PARAM_DEST_XML: destination_xml(
                dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE), dst_pool.name, console
            ),
            libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: ["vda"],
            libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{address}",
            libvirt.VIR_MIGRATE_PARAM_DISKS_URI: f"tcp://{address}",
        }
        try:
            dom.migrate3(target.conn(), params, FLAGS)
        except libvirt.libvirtError as exc:
            raise ProviderError(
                f"migrating {parsed.name} from {source.label} to {target.label}: "
                f"{exc.get_error_message() or exc} (it still runs on {source.label})"
            ) from exc
    except BaseException:
        for vol in made:
            with contextlib.suppress(Exception):
                storage.delete(vol)
        raise
    for vol in (src_root, src_seed):
        with contextlib.suppress(ProviderError):
            storage.delete(vol)


def _volume(ctx: HostContext, pool_name: str, name: str) -> libvirt.virStorageVol:
    pool = ctx.pools.find(ctx.conn(), pool_name)
    vol = storage.lookup(pool, name) if pool is not None else None
    if pool is None or vol is None:
        raise ProviderError(f"volume {pool_name}/{name} is not on {ctx.label}")
    return vol
