"""What the libvirt resource types share: typed access to the provider, and storage reads.

Images, volumes and snapshots are all storage volumes told apart by the role in their names
(`tags.volume_name`); reading either is one `listAllVolumes()` per pool, whatever the
number of objects asked for, taken once per run for every type (`listings`).

A storage volume has no room for free-form metadata, so the inputs libvirt cannot show (an
image's source and given sha256, how a pool was written) are kept as a small JSON record
beside the stack's data (data_dir/<images|volumes>/<volume name>.inputs.json), written at
create and read back by import.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import libvirt

from iacloud.errors import ProviderError
from iacloud.provider import ObjectRef, Observed, ResourceType, TaggedObject

from . import storage
from .connection import NO_POOL, NO_VOLUME, is_error
from .host_import import import_on_hosts
from .pool import Pool
from .tags import FORMATS, SITE_VOLUME_PREFIX, parse_volume_name, stack_prefix, volume_name

if TYPE_CHECKING:
    from . import LibvirtProvider


class LibvirtResource(ResourceType):
    provider: LibvirtProvider
    # its objects may be on a site catalog host: import looks for them there (`host_import`)
    on_hosts: ClassVar[bool] = False
    noun: ClassVar[str] = "volume"  # what an id names, for import's messages

    @property
    def conn(self) -> libvirt.virConnect:
        return self.provider.conn()

    def present_here(self, id: str) -> bool:
        """Whether the current host has the object `id` (import's search of the hosts)."""
        raise NotImplementedError

    def import_given(self, address: str, id: str, given: Mapping[str, Any]) -> Observed:
        if not self.on_hosts:
            return self.import_(address, id)
        return import_on_hosts(
            self.provider, self.noun, id, given, self.present_here,
            lambda: self.import_(address, id),
        )  # fmt: skip

    def observed_pool(self, actual: str, recorded: Any) -> str | None:
        """Report the pool as the inputs wrote it: None meant the default pool."""
        if recorded is None and actual == self.provider.settings.pool:
            return None
        return actual

    def tag_stack_id(self, prefix: str) -> str:
        """Volume names carry 8 characters of the stack id: this stack's id when they match."""
        own = self.provider.stack.id
        return own if stack_prefix(own) == prefix else prefix

    def pool_volumes(self) -> Iterator[tuple[Pool, str]]:
        """(pool, volume name) of every volume of every active pool, for the orphan search.
        A pool removed or stopped meanwhile is skipped; of the pools, only the provider's
        default pool is refreshed (see `listings`)."""
        listings = self.provider.listings
        for pool in listings.pools(self.conn):
            volumes = listings.volumes(pool, refresh=pool.name == self.provider.settings.pool)
            for name in volumes or ():
                yield pool, name

    def tagged_volumes(self, roles: tuple[str | None, ...]) -> list[TaggedObject]:
        out = []
        for pool, name in self.pool_volumes():
            if name.startswith(SITE_VOLUME_PREFIX):
                continue  # the site's (a catalog image), not a stack's nor unmanaged
            tag = parse_volume_name(name)
            if tag is None:
                out.append(TaggedObject(self.type_name, f"{pool.name}/{name}", None, None))
            elif tag.role in roles:
                stack_id = self.tag_stack_id(tag.prefix)
                out.append(
                    TaggedObject(self.type_name, f"{pool.name}/{name}", stack_id, tag.address)
                )
        return out


class StorageResource(LibvirtResource):
    """Images and volumes: read in bulk, one volume listing per pool."""

    role: str | None = None
    records: str = "volumes"  # the data_dir subdirectory of this type's records

    # ------------------------------------------------------------ input records
    def record_dir(self) -> Path:
        return self.provider.stack.data_dir / self.records

    def record_path(self, name: str) -> Path:
        return self.record_dir() / f"{name}.inputs.json"

    def save_inputs(self, name: str, inputs: Mapping[str, Any]) -> None:
        """Record inputs libvirt cannot show, readable by root only (a source URL may carry a
        hidden value), written whole or not at all."""
        path = self.record_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(dict(inputs), f, sort_keys=True)
        os.replace(tmp, path)

    def load_inputs(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self.record_path(name).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def drop_inputs(self, name: str) -> None:
        with contextlib.suppress(OSError):
            self.record_path(name).unlink()

    def recorded_pool(self, actual: str, record: Mapping[str, Any] | None) -> str | None:
        """The pool as the inputs wrote it, when the record agrees with where the volume is."""
        written = record.get("pool") if record else None
        return self.observed_pool(actual, written if written == actual else None)

    def present_here(self, id: str) -> bool:
        try:
            pool_name, name = storage.split_id(id)
        except ProviderError:
            return False  # import_ says what is wrong with it, on the default host
        pool = self.provider.pools.find(self.conn, pool_name)
        return pool is not None and storage.lookup(pool, name) is not None

    def wrong_role(self, name: str) -> str | None:
        """Why a volume named by iacloud for another use cannot be imported as this type."""
        if name.startswith(SITE_VOLUME_PREFIX):
            return f"{name} is an image of the site catalog, shared by stacks"
        tag = parse_volume_name(name)
        if tag is None or tag.role == self.role:
            return None
        what = {
            "image": "the image",
            "root": "the root disk of server",
            "seed": "the NoCloud seed of server",
            "snap": "the volume snapshot",
        }.get(tag.role or "", "the volume")
        noun = {"image": "an image", "snap": "a volume snapshot"}.get(self.role or "", "a volume")
        return f"{name} is {what} {tag.address}, not {noun}"

    def home_pool(self, ref: ObjectRef) -> str:
        """The pool an object without a recorded id would be in."""
        return ref.inputs.get("pool") or self.provider.settings.pool

    def candidate_names(self, ref: ObjectRef) -> list[str]:
        """Names an object without a recorded id may have (its format may be unknown)."""
        fmt = ref.inputs.get("format")
        formats = [fmt] if fmt in FORMATS else list(FORMATS)
        return [volume_name(self.provider.stack.id, ref.address, f, self.role) for f in formats]

    def locate(
        self, refs: Sequence[ObjectRef]
    ) -> dict[str, tuple[Pool, libvirt.virStorageVol, ObjectRef]]:
        by_pool: dict[str, list[tuple[ObjectRef, list[str]]]] = {}
        for ref in refs:
            if ref.id:
                try:
                    pool_name, name = storage.split_id(ref.id)
                except Exception:
                    continue  # an id that cannot be ours is simply not found
                names = [name]
            else:
                pool_name = self.home_pool(ref)
                names = self.candidate_names(ref)
            by_pool.setdefault(pool_name, []).append((ref, names))
        found = {}
        for pool_name, wanted in by_pool.items():
            pool = self.provider.pools.find(self.conn, pool_name)
            if pool is None:
                continue
            volumes = self.provider.listings.volumes(pool, refresh=True)
            if volumes is None:
                continue  # the pool was removed meanwhile: so were its volumes
            for ref, names in wanted:
                for name in names:
                    if name in volumes:
                        found[ref.address] = (pool, volumes[name], ref)
                        break
        return found

    def observe_located(
        self,
        refs: Sequence[ObjectRef],
        observe: Callable[[Pool, libvirt.virStorageVol, ObjectRef], Observed],
    ) -> dict[str, Observed]:
        """`observe` each volume `locate` found; a volume (or its pool) removed since the
        listing, or whose file was removed behind libvirt's back, is missing."""
        out = {}
        for address, (pool, vol, ref) in self.locate(refs).items():
            try:
                out[address] = observe(pool, vol, ref)
            except libvirt.libvirtError as exc:
                if is_error(exc, NO_VOLUME + NO_POOL):
                    continue
                raise ProviderError(
                    f"reading volume {pool.name}/{vol.name()}: {exc.get_error_message()}"
                ) from exc
        return out
