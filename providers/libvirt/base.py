"""What the libvirt resource types share: typed access to the provider, and storage reads.

Images and volumes are both storage volumes told apart by the role in their names
(`tags.volume_name`); reading either is one `listAllVolumes()` per pool, whatever the
number of objects asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import libvirt

from iacloud.provider import ObjectRef, ResourceType, TaggedObject

from . import storage
from .pool import Pool
from .tags import FORMATS, parse_volume_name, stack_prefix, volume_name

if TYPE_CHECKING:
    from . import LibvirtProvider


class LibvirtResource(ResourceType):
    provider: LibvirtProvider

    @property
    def conn(self) -> libvirt.virConnect:
        return self.provider.conn()

    def observed_pool(self, actual: str, recorded: Any) -> str | None:
        """Report the pool as the inputs wrote it: None meant the default pool."""
        if recorded is None and actual == self.provider.settings.pool:
            return None
        return actual

    def tag_stack_id(self, prefix: str) -> str:
        """Volume names carry 8 characters of the stack id: this stack's id when they match."""
        own = self.provider.stack.id
        return own if stack_prefix(own) == prefix else prefix

    def tagged_volumes(self, roles: tuple[str | None, ...]) -> list[TaggedObject]:
        out = []
        for pool in self.provider.all_pools():
            for name in storage.list_volumes(pool):
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
                pool_name = ref.inputs.get("pool") or self.provider.settings.pool
                names = self.candidate_names(ref)
            by_pool.setdefault(pool_name, []).append((ref, names))
        found = {}
        for pool_name, wanted in by_pool.items():
            pool = self.provider.pools.find(self.conn, pool_name)
            if pool is None:
                continue
            volumes = storage.list_volumes(pool)
            for ref, names in wanted:
                for name in names:
                    if name in volumes:
                        found[ref.address] = (pool, volumes[name], ref)
                        break
        return found
