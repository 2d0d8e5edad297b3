"""The `volume` resource type: a block device in a pool (Cinder), empty, an image overlay, or
made from a volume snapshot.

An overlay is a qcow2 volume whose backing file is an image or a volume snapshot (see
`snapshot`), written with the backing format stated in the volume XML (`<backingStore><format>`),
so QEMU never probes it. A volume made from a snapshot starts as the volume the snapshot copied
and shares the snapshot's blocks until it writes its own; the snapshot therefore cannot be
deleted while the volume exists.
`size_gib` grows in place: `virStorageVol.resize` when no running guest uses the volume,
`virDomain.blockResize` when one does (the guest sees the new size at once). Shrinking is
refused by `check()` at plan time. Changing image, snapshot, format or pool replaces the volume
and loses its data (the replacement disruption is data-loss).

Every input reads back from libvirt (the image or snapshot from the overlay's backing file, told
apart by the backing volume's name) except how the pool was written: none (the provider's
default) or a name. Create records that beside the stack's data (see `base`), so import gives
the inputs create was given.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Literal

import libvirt
from pydantic import field_validator

from iacloud.errors import Diagnostic, ProviderError
from iacloud.provider import Collision, ObjectRef, Observed, TaggedObject
from iacloud.schema import Disruption, Inputs, prop
from iacloud.site_hosts import HOST_NAME

from . import migration, storage
from .base import StorageResource
from .connection import failing
from .host_context import crosses_default_host, is_copy
from .pool import Pool
from .storage import GiB
from .tags import PoolName, format_of, parse_volume_name, volume_name


def _role(volume_id: str) -> str | None:
    """The role the name of a volume id declares ("image", "snap", ...), None for a volume."""
    tag = parse_volume_name(volume_id.rpartition("/")[2])
    return tag.role if tag is not None else None


class VolumeInputs(Inputs):
    size_gib: int = prop(update=Disruption.LIVE, ge=1, le=65536, description="grows in place")
    image: str | None = prop(None, update=Disruption.REPLACE, description="an image id")
    snapshot: str | None = prop(
        None,
        update=Disruption.REPLACE,
        description="a volume_snapshot id: the volume starts as that copy (an overlay on it)",
    )
    format: Literal["qcow2", "raw"] = prop("qcow2", update=Disruption.REPLACE)
    pool: PoolName | None = prop(
        None, update=Disruption.REPLACE, description="default: the provider's"
    )
    host: str | None = prop(
        None,
        update=Disruption.LIVE,
        computed_default=True,
        pattern=HOST_NAME.pattern,
        description="the site catalog host whose pool holds it: named here, or the host of "
        "the server it is attached to (set by the planner); a change between catalog hosts "
        "moves it (with its server's migration when one uses it), one to or from the "
        "provider's own libvirtd replaces it",
    )

    @field_validator("snapshot")
    @classmethod
    def _snapshot(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                storage.split_id(value, "snapshot id")
            except ProviderError as exc:
                raise ValueError(str(exc)) from None
            if _role(value) != "snap":
                raise ValueError(f"{value!r} is not a volume snapshot (a '*.snap.qcow2' volume)")
        return value


class Volume(StorageResource):
    type_name = "volume"
    placement = "follows"
    on_hosts = True  # import looks on every host (host_import)
    replace_collisions = (
        Collision("the volume name in its pool (stack id, address and format)",
                  unless=("format", "pool")),
    )  # fmt: skip
    Inputs = VolumeInputs
    attributes = ("id", "path", "capacity_bytes")
    replace_disruption = Disruption.DATA_LOSS
    role = None

    def check(self, address: str, inputs: Inputs, prior: Observed | None) -> list[Diagnostic]:
        assert isinstance(inputs, VolumeInputs)
        out = []
        before = prior.inputs.get("size_gib") if prior is not None else None
        if isinstance(before, int) and inputs.size_gib < before:
            out.append(
                Diagnostic(
                    f"a volume cannot shrink (from {before} to {inputs.size_gib} GiB)",
                    address=address,
                    field="size_gib",
                    hint=f"keep size_gib >= {before}, or replace the volume",
                )
            )
        if inputs.image is not None and inputs.snapshot is not None:
            out.append(
                Diagnostic(
                    "give at most one of 'image' and 'snapshot'", address=address, field="snapshot"
                )
            )
        elif inputs.image is not None and _role(inputs.image) == "snap":
            out.append(
                Diagnostic(
                    f"{inputs.image} is a volume snapshot, not an image",
                    address=address,
                    field="image",
                    hint="write `snapshot = ...` to make a volume from a snapshot",
                )
            )
        source = "an image" if inputs.image is not None else "a snapshot"
        if (inputs.image or inputs.snapshot) is not None and inputs.format != "qcow2":
            out.append(
                Diagnostic(
                    f"a volume made from {source} is a qcow2 overlay: format must be qcow2",
                    address=address,
                    field="format",
                )
            )
        return out

    def not_in_place(self, address: str, inputs: Inputs, prior: Observed) -> dict[str, str]:
        assert isinstance(inputs, VolumeInputs)
        if crosses_default_host(prior.inputs.get("host"), inputs.host):
            return {
                "host": "volumes move between hosts of the site catalog, and this one is on "
                "(or goes to) the provider's own libvirtd, so it is made anew there"
            }
        return {}

    # ---------------------------------------------------------------- create
    def create(self, address: str, inputs: Inputs) -> Observed:
        assert isinstance(inputs, VolumeInputs)
        if problems := self.check(address, inputs, None):
            raise ProviderError(problems[0].message)
        with self.provider.on(inputs.host):
            return self._create(address, inputs)

    def _create(self, address: str, inputs: VolumeInputs) -> Observed:
        conn = self.conn
        pool = self.provider.pools.get(conn, inputs.pool)
        name = volume_name(self.provider.stack.id, address, inputs.format)
        if storage.lookup(pool, name) is not None:
            raise ProviderError(f"volume {pool.name}/{name} already exists")
        capacity = inputs.size_gib * GiB
        backing = None
        for what, source in (("image", inputs.image), ("snapshot", inputs.snapshot)):
            if source is None:
                continue
            if what == "image":
                path, fmt, size = self.provider.backing_image(source)
            else:
                path, fmt, size = self.provider.image_file(source, what)
            if capacity < size:
                raise ProviderError(
                    f"size_gib {inputs.size_gib} is smaller than {what} {source} "
                    f"({math.ceil(size / GiB)} GiB)"
                )
            backing = (path, fmt)
        vol = storage.create(
            pool, storage.volume_xml(name, capacity, inputs.format, backing=backing), name
        )
        try:
            self.save_inputs(name, {"pool": inputs.pool})
            return self._observe(pool, vol, inputs.pool)
        except BaseException:
            storage.delete(vol)
            self.drop_inputs(name)
            raise

    # ---------------------------------------------------------------- read
    def _observe(self, pool: Pool, vol: libvirt.virStorageVol, recorded_pool: object) -> Observed:
        info = storage.info(pool, vol)
        image = snapshot = None
        if info.backing_path:
            owner = self.provider.pools.name_of_path(self.conn, os.path.dirname(info.backing_path))
            base = os.path.basename(info.backing_path)
            backing = f"{owner}/{base}" if owner else info.backing_path
            if owner and _role(backing) == "snap":
                snapshot = backing
            else:
                image = backing
        inputs: dict[str, object] = {
            "size_gib": math.ceil(info.capacity / GiB),
            "image": image,
            "snapshot": snapshot,
            "pool": self.observed_pool(pool.name, recorded_pool),
        }
        if fmt := format_of(info.name):
            inputs["format"] = fmt
        if self.provider.here.name is not None:
            inputs["host"] = self.provider.here.name
        return Observed(
            id=info.id,
            inputs=inputs,
            attributes={"id": info.id, "path": info.path, "capacity_bytes": info.capacity},
        )

    def read(self, refs: Sequence[ObjectRef]) -> dict[str, Observed]:
        """Every volume, read on its host (the hosts in parallel)."""
        return self.provider.read_by_host(refs, self._read_here)

    def _read_here(self, refs: Sequence[ObjectRef]) -> dict[str, Observed]:
        def observe(pool: Pool, vol: libvirt.virStorageVol, ref: ObjectRef) -> Observed:
            obs = self._observe(pool, vol, ref.inputs.get("pool"))
            image = obs.inputs.get("image")
            if isinstance(image, str) and is_copy(image):
                # on a catalog host a volume is backed by the host's copy of its image
                obs.inputs["image"] = ref.inputs.get("image")
            return obs

        return self.observe_located(refs, observe)

    def import_(self, address: str, id: str) -> Observed:
        pool_name, name = storage.split_id(id)
        pool = self.provider.pools.find(self.conn, pool_name)
        vol = storage.lookup(pool, name) if pool else None
        if pool is None or vol is None:
            raise ProviderError(f"no volume {id}")
        if format_of(name) is None:
            raise ProviderError(
                f"cannot tell the format of {id}: its name must end in .qcow2 or .raw"
            )
        if why := self.wrong_role(name):
            raise ProviderError(f"cannot import {id} as a volume: {why}")
        obs = self._observe(pool, vol, self.recorded_pool(pool_name, self.load_inputs(name)))
        image = obs.inputs.get("image")
        if isinstance(image, str) and is_copy(image):
            # on a catalog host: backed by the host's copy of one of the stack's images
            obs.inputs["image"] = self.provider.image_of_copy(image) or image
        return obs

    # ---------------------------------------------------------------- update
    def update(
        self, address: str, prior: Observed, inputs: Inputs, changed: frozenset[str]
    ) -> Observed:
        assert isinstance(inputs, VolumeInputs)
        host = prior.inputs.get("host")
        if "host" in changed and inputs.host != host:
            moved = self._move(address, prior, inputs)
            changed = changed - {"host"}
            if not changed:
                return moved
            host = inputs.host
        with self.provider.on(host):
            return self._update(address, prior, inputs, changed)

    def _move(self, address: str, prior: Observed, inputs: VolumeInputs) -> Observed:
        """Move the volume to `inputs.host`. One that a domain uses moves with that server's
        migration, the next step of this run (the server depends on it): it is recorded on
        the new host now, and a read finds it wherever it is should that step not finish."""
        source, target = (
            self.provider.host(prior.inputs.get("host")),
            self.provider.host(inputs.host),
        )
        if source.name is None or target.name is None:
            raise ProviderError("volumes move between catalog hosts")
        with self.provider.on(source.name):
            pool, vol = self._existing(prior.id, f"is not on {source.name}")
            info = storage.info(pool, vol)
            if self.provider.users(info.id, info.path, running=False):
                return Observed(
                    prior.id, {**prior.inputs, "host": target.name}, dict(prior.attributes)
                )
            migration.move_volume(source, target, prior.id)
        with self.provider.on(target.name):
            pool, vol = self._existing(prior.id, f"is not on {target.name} after moving")
            return self._observe(pool, vol, inputs.pool)

    def _existing(self, volume_id: str, missing: str) -> tuple[Pool, libvirt.virStorageVol]:
        """The pool and volume of `volume_id` on the current host, or an error: "volume ID
        `missing`"."""
        pool_name, name = storage.split_id(volume_id)
        pool = self.provider.pools.find(self.conn, pool_name)
        vol = storage.lookup(pool, name) if pool else None
        if pool is None or vol is None:
            raise ProviderError(f"volume {volume_id} {missing}")
        return pool, vol

    def _update(
        self, address: str, prior: Observed, inputs: Inputs, changed: frozenset[str]
    ) -> Observed:
        assert isinstance(inputs, VolumeInputs)
        if changed - {"size_gib"}:
            raise ProviderError(f"cannot change {', '.join(sorted(changed))} in place")
        pool, vol = self._existing(prior.id, "no longer exists")
        info = storage.info(pool, vol)
        new = inputs.size_gib * GiB
        if new < info.capacity:
            raise ProviderError(
                f"a volume cannot shrink (from {info.capacity} bytes to {new} bytes)"
            )
        if new > info.capacity:
            users = self.provider.running_users(info.id, info.path)
            if users:
                # a running guest holds the image open: only QEMU may grow it
                for dom, target in users:
                    with failing(f"growing {prior.id} in running domain {dom.name()}"):
                        dom.blockResize(target, new, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
            else:
                with failing(f"growing volume {prior.id}"):
                    vol.resize(new, 0)
            vol = pool.handle.storageVolLookupByName(vol.name())
        return self._observe(pool, vol, inputs.pool)

    def delete(self, address: str, prior: Observed) -> None:
        if not prior.id:
            return
        with self.provider.on(prior.inputs.get("host")):
            self._delete(prior)

    def _delete(self, prior: Observed) -> None:
        pool_name, name = storage.split_id(prior.id)
        pool = self.provider.pools.find(self.conn, pool_name)
        if pool is not None:
            storage.delete(storage.lookup(pool, name))
        self.drop_inputs(name)

    def list_tagged(self) -> list[TaggedObject]:
        return self.provider.on_every_host(lambda: self.tagged_volumes((None,)))
