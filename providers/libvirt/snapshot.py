"""The `volume_snapshot` resource type: a point-in-time copy of a volume (a Cinder snapshot).

A snapshot is a qcow2 volume of its own, `iac-<stack>-<address>.snap.qcow2`, in the pool of
the volume it copies, holding the whole disk as it was (flattened: it needs neither the volume
nor the volume's image afterwards). The copy is made by libvirt, in one of two ways:

- **no running domain uses the volume**: `virStorageVolCreateXMLFrom`, libvirt's storage
  driver cloning the volume into the new one (`qemu-img convert`, both formats stated). The
  format libvirt sees in the source must be the one its name declares, so a raw volume whose
  guest wrote an image header into it is refused rather than read as that format.
- **a running domain has it attached**: a block copy. The snapshot volume is created empty
  first; `virDomainBlockCopy` (REUSE_EXT, full chain, TRANSIENT_JOB) makes QEMU mirror the disk
  into it, guest writes included; once the mirror is ready (`<mirror ready='yes'>`),
  `virDomainBlockJobAbort` *without* PIVOT ends it. QEMU documents that cancelling a ready
  mirror leaves the target a point-in-time copy of the source at that instant, and the guest
  goes on with its own disk, which was never switched away (`blockcopy`). When the guest
  agent answers, the guest's filesystems are frozen (`virDomainFSFreeze`: flushed and held
  still) for the instant the copy ends, and thawed right after: the copy is then
  filesystem-consistent.
  Without an agent (or one that refuses to freeze) it is crash-consistent (what the guest has
  not written out is not in it), as a Cinder snapshot of an in-use volume is. The attribute
  `consistency` says which: "offline" (no running guest used the volume), "quiesced" or
  "crash-consistent".

Why a block copy rather than an external disk-only snapshot followed by a block commit: the
snapshot would move the disk onto a new overlay file in both of the domain's definitions
(turning the volume disk into a file path that a server read reports as another volume), the
guest would write into that temporary overlay until the active commit pivots back, and a
failure half-way leaves the domain on the overlay. A block copy leaves the domain's
definition and its disk chain exactly as they were at every instant; a failure is undone by
aborting the job and deleting the half-made volume.

A volume made from a snapshot (`snapshot = { get_resource = ... }` on a volume) is a qcow2
overlay on it, so the snapshot must outlive it. Deleting a snapshot that a volume is made
from is refused: at plan time when the volume stays in the plan (`check_delete`), and at
delete time for any volume of any active pool whose backing file is the snapshot (volumes of
other stacks, or ones left out of state), unless this run deletes that volume too.

On a site catalog host (issue #16) a snapshot is made, read and deleted on its volume's host,
given by its `host` input: placement (`iacloud.placement`) sets it to the volume's host, and
puts a volume made from the snapshot on the same host. Import looks for it on every host
(`host_import`).

What libvirt cannot show, the volume a snapshot was taken from and its consistency, is
recorded beside the stack's data (data_dir/snapshots/<name>.inputs.json, see `base`);
`created_at` is the time the copy was completed (the file's modification time: nothing writes
a snapshot afterwards).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone

import libvirt
from pydantic import field_validator

from iacloud.errors import CleanupUnproven, Diagnostic, ProviderError
from iacloud.provider import ObjectRef, Observed, Remaining, TaggedObject
from iacloud.schema import Disruption, Inputs, prop
from iacloud.site_hosts import HOST_NAME

from . import storage
from .base import StorageResource
from .blockcopy import FORMAT, block_copy
from .connection import NO_POOL, NO_VOLUME, failing, is_error
from .pool import Pool
from .tags import parse_volume_name, stack_prefix, volume_name

ROLE = "snap"


def _volume_id(value: str) -> str:
    try:
        storage.split_id(value)
    except ProviderError as exc:
        raise ValueError(str(exc)) from None
    return value


class SnapshotInputs(Inputs):
    volume: str = prop(update=Disruption.REPLACE, description="the id of the volume to copy")
    host: str | None = prop(
        None,
        update=Disruption.REPLACE,
        computed_default=True,
        pattern=HOST_NAME.pattern,
        description="the site catalog host of the volume: named here, or its volume's (set by "
        "the planner)",
    )

    @field_validator("volume")
    @classmethod
    def _volume(cls, value: str) -> str:
        return _volume_id(value)


def created_at(mtime: float | None) -> str | None:
    if mtime is None:
        return None
    return datetime.fromtimestamp(mtime, timezone.utc).isoformat(timespec="seconds")


def dependents_message(address: str, snapshot_id: str, volumes: Sequence[str]) -> str:
    """Why a snapshot cannot be deleted, naming it and the volumes made from it."""
    one = len(volumes) == 1
    return (
        f"cannot delete volume snapshot {address} ({snapshot_id}): "
        f"{'volume' if one else 'volumes'} {', '.join(volumes)} "
        f"{'is a copy-on-write overlay' if one else 'are copy-on-write overlays'} on it "
        f"and would lose {'its' if one else 'their'} data; "
        f"delete {'that volume' if one else 'those volumes'} first"
    )


class VolumeSnapshot(StorageResource):
    type_name = "volume_snapshot"
    placement = "follows"  # its volume's host (iacloud.placement)
    on_hosts = True  # import looks on every host (host_import)
    Inputs = SnapshotInputs
    attributes = (
        "id",
        "path",
        "capacity_bytes",
        "size_bytes",
        "volume",
        "created_at",
        "consistency",
    )
    # a new snapshot holds the volume as it is then: the old point in time is lost
    replace_disruption = Disruption.DATA_LOSS
    role = ROLE
    records = "snapshots"

    # ---------------------------------------------------------------- plan time
    def check_delete(
        self, address: str, prior: Observed, remaining: Mapping[str, Remaining]
    ) -> list[Diagnostic]:
        users = [
            r.address
            for r in remaining.values()
            if r.type == "volume" and prior.id and r.inputs.get("snapshot") == prior.id
        ]
        if not users:
            return []
        return [
            Diagnostic(
                dependents_message(address, prior.id, users),
                address=address,
                hint=f"delete or replace {', '.join(users)} in the same plan, or keep {address}",
            )
        ]

    def home_pool(self, ref: ObjectRef) -> str:
        """A snapshot lives in its volume's pool."""
        volume = ref.inputs.get("volume")
        if isinstance(volume, str):
            with contextlib.suppress(ProviderError):
                return storage.split_id(volume)[0]
        return self.provider.settings.pool

    def candidate_names(self, ref: ObjectRef) -> list[str]:
        return [volume_name(self.provider.stack.id, ref.address, FORMAT, ROLE)]

    # ---------------------------------------------------------------- create
    def create(self, address: str, inputs: Inputs) -> Observed:
        assert isinstance(inputs, SnapshotInputs)
        with self.provider.on(inputs.host):
            return self._create(address, inputs)

    def _create(self, address: str, inputs: SnapshotInputs) -> Observed:
        conn = self.conn
        pool_name, src_name, src_format = self.provider.volume_ref(inputs.volume)
        pool = self.provider.pools.get(conn, pool_name)
        src = storage.lookup(pool, src_name)
        if src is None:
            where = self.provider.here.label
            raise ProviderError(f"volume {inputs.volume} does not exist on {where}")
        source = storage.info(pool, src)
        name = volume_name(self.provider.stack.id, address, FORMAT, ROLE)
        if storage.lookup(pool, name) is not None:
            raise ProviderError(f"volume {pool.name}/{name} already exists")
        xml = storage.volume_xml(name, source.capacity, FORMAT)
        users = self.provider.running_users(source.id, source.path)
        consistency = "offline"
        if users:
            dom, target = users[0]
            vol = storage.create(pool, xml, f"snapshot volume {name}")
            try:
                quiesced = block_copy(dom, target, vol.path(), inputs.volume)
                consistency = "quiesced" if quiesced else "crash-consistent"
            except CleanupUnproven:
                raise  # QEMU may still write into it: left for the next plan to find
            except BaseException:
                storage.delete(vol)
                raise
        else:
            if source.format is not None and source.format != src_format:
                raise ProviderError(
                    f"volume {inputs.volume} is named {src_format} but libvirt reads it as "
                    f"{source.format}: refusing to copy it as {source.format}"
                )
            with failing(f"copying volume {inputs.volume} into {pool.name}/{name}"):
                vol = pool.handle.createXMLFrom(xml, src, 0)
        try:
            record = {"volume": inputs.volume, "consistency": consistency}
            self.save_inputs(name, record)
            return self._observe(pool, vol, record)
        except BaseException:
            storage.delete(vol)
            self.drop_inputs(name)
            raise

    # ---------------------------------------------------------------- read
    def _observe(
        self, pool: Pool, vol: libvirt.virStorageVol, record: Mapping[str, object]
    ) -> Observed:
        """`record`: what create recorded (the source volume, the consistency)."""
        info = storage.info(pool, vol)
        volume, consistency = record.get("volume"), record.get("consistency")
        source = volume if isinstance(volume, str) else None
        inputs: dict[str, object] = {"volume": source} if source else {}
        if self.provider.here.name is not None:
            inputs["host"] = self.provider.here.name
        return Observed(
            id=info.id,
            inputs=inputs,
            attributes={
                "id": info.id,
                "path": info.path,
                "capacity_bytes": info.capacity,
                "size_bytes": info.physical if info.physical is not None else info.allocation,
                "volume": source,
                "created_at": created_at(info.mtime),
                "consistency": consistency if isinstance(consistency, str) else None,
            },
        )

    def _record(self, name: str) -> dict[str, object]:
        """What create recorded of a snapshot; empty when nothing was."""
        record = self.load_inputs(name) or {}
        return record if isinstance(record.get("volume"), str) else {}

    def read(self, refs: Sequence[ObjectRef]) -> dict[str, Observed]:
        """Every snapshot, read on its host (the hosts in parallel)."""
        return self.provider.read_by_host(refs, self._read_here)

    def _read_here(self, refs: Sequence[ObjectRef]) -> dict[str, Observed]:
        def observe(pool: Pool, vol: libvirt.virStorageVol, ref: ObjectRef) -> Observed:
            record = self._record(vol.name()) or {"volume": ref.inputs.get("volume")}
            return self._observe(pool, vol, record)

        return self.observe_located(refs, observe)

    def import_(self, address: str, id: str) -> Observed:
        pool_name, name = storage.split_id(id)
        pool = self.provider.pools.find(self.conn, pool_name)
        vol = storage.lookup(pool, name) if pool else None
        if pool is None or vol is None:
            raise ProviderError(f"no volume {id}")
        tag = parse_volume_name(name)
        if tag is None or tag.role != ROLE:
            raise ProviderError(
                f"cannot import {id} as a volume snapshot: "
                + (self.wrong_role(name) or "its name does not end in .snap.qcow2")
            )
        record = self._record(name)
        if not record:
            raise ProviderError(
                f"cannot import {id} as a volume snapshot: nothing records which volume it was "
                f"taken from (its record {self.record_path(name)} is missing: it was made for "
                "another stack, or that stack's data was removed)"
            )
        return self._observe(pool, vol, record)

    # ---------------------------------------------------------------- update, delete
    def update(
        self, address: str, prior: Observed, inputs: Inputs, changed: frozenset[str]
    ) -> Observed:
        raise ProviderError("a volume snapshot cannot change in place; it is replaced")

    def delete(self, address: str, prior: Observed) -> None:
        if not prior.id:
            return
        with self.provider.on(prior.inputs.get("host")):
            self._delete(address, prior)

    def _delete(self, address: str, prior: Observed) -> None:
        pool_name, name = storage.split_id(prior.id)
        pool = self.provider.pools.find(self.conn, pool_name)
        vol = storage.lookup(pool, name) if pool is not None else None
        if pool is not None and vol is not None:
            path = storage.info(pool, vol).path
            going = self.provider.run.deleting
            users = [label for id, label in self._overlays_on(path) if id not in going]
            if users:
                raise ProviderError(dependents_message(address, prior.id, users))
            storage.delete(vol)
        self.drop_inputs(name)

    def _overlays_on(self, path: str) -> Iterator[tuple[str, str]]:
        """(id, label) of every volume of every active pool whose backing file is `path`; the
        label adds its resource address when this stack made it. Pools are refreshed first: a
        delete must not miss a volume created since libvirt last looked."""
        listings = self.provider.listings
        wanted = os.path.normpath(path)
        own = stack_prefix(self.provider.stack.id)
        for pool in listings.pools(self.conn):
            for vol_name, vol in (listings.volumes(pool, refresh=True) or {}).items():
                try:
                    info = storage.info(pool, vol)
                except libvirt.libvirtError as exc:
                    if is_error(exc, NO_VOLUME + NO_POOL):
                        continue  # removed meanwhile
                    raise ProviderError(
                        f"reading volume {pool.name}/{vol_name}: {exc.get_error_message()}"
                    ) from exc
                if info.backing_path and os.path.normpath(info.backing_path) == wanted:
                    tag = parse_volume_name(vol_name)
                    ours = tag is not None and tag.prefix == own
                    yield info.id, f"{info.id} ({tag.address})" if ours and tag else info.id

    def list_tagged(self) -> list[TaggedObject]:
        return self.provider.on_every_host(
            lambda: [t for t in self.tagged_volumes((ROLE,)) if t.stack_id is not None]
        )
