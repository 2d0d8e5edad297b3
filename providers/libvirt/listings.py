"""What one run's reads list of the libvirt host, each at most once.

`iacloud drift` reads every type in bulk and then asks every type for its tagged objects.
Without this, one run fetched every domain's XML twice (server read, server orphan search) and
refreshed and listed every pool of the host five times or more (image and volume reads, the
image, volume and server orphan searches). A provider instance (one per run, shared by its
resource types) keeps one `Listings`:

- `domains()`: every domain (one listAllDomains);
- `domain_states()`: their states by UUID (one getAllDomainStats);
- `domain(dom)`: a domain's XML, parsed (one XMLDesc per domain), None once it is undefined;
- `persistent_domain(dom)`: its persistent (inactive) definition, parsed, the same way; the
  server read asks for it only for a running domain (a shut-off domain has only that one);
- `pools()`: the active pools (one listAllStoragePools, and each pool's XML for its path);
- `volumes(pool, refresh)`: a pool's volumes by name (one listAllVolumes), None when the pool
  was removed or stopped since it was listed.

Pool refreshes: only a pool that holds the stack's objects (a pool its reads look in, and the
provider's default pool) is refreshed, once per run, before it is listed. Other stacks' pools
are listed as libvirt knows them, never refreshed by a read. A read does not need the refresh
for what it reports: a volume's XML is re-read from its file on every XMLDesc (a size changed
by `qemu-img resize` shows), and a volume whose file was removed by hand answers
VIR_ERR_NO_STORAGE_VOL, which the reads take as missing. What a pool that is not refreshed
hides are files added to or removed from its directory behind libvirt's back: they appear in
(or leave) the orphan and unmanaged listings only once something refreshes that pool.

Only `read` and `list_tagged` use it; how changes drop it is in `iacloud.listings`.
"""

from __future__ import annotations

import contextlib

import libvirt

from iacloud.errors import ProviderError
from iacloud.listings import HostListings

from .connection import NO_DOMAIN, NO_POOL, OPERATION_INVALID, failing, is_error
from .domain_xml import ParsedDomain, parse
from .pool import Pool, target_path


class Listings(HostListings):
    # ------------------------------------------------------------ domains
    def domains(self, conn: libvirt.virConnect) -> list[libvirt.virDomain]:
        def fetch() -> list[libvirt.virDomain]:
            with failing("listing domains"):
                return conn.listAllDomains(0)

        return self._once("domains", fetch)

    def domain_states(self, conn: libvirt.virConnect) -> dict[str, int]:
        def fetch() -> dict[str, int]:
            with failing("reading domain states"):
                stats = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0)
            return {dom.UUIDString(): s.get("state.state", 0) for dom, s in stats}

        return self._once("domain states", fetch)

    def domain(self, dom: libvirt.virDomain) -> ParsedDomain | None:
        """The domain's XML, parsed; None when it was undefined since it was listed."""
        return self._once(("domain", dom.UUIDString()), lambda: _parsed(dom, 0))

    def persistent_domain(self, dom: libvirt.virDomain) -> ParsedDomain | None:
        """The domain's persistent definition (what it boots with next), parsed; None when it
        was undefined since it was listed."""
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE
        return self._once(("persistent domain", dom.UUIDString()), lambda: _parsed(dom, flags))

    # ------------------------------------------------------------ storage
    def pools(self, conn: libvirt.virConnect) -> list[Pool]:
        """Every active pool (a pool removed while it is listed is left out)."""

        def fetch() -> list[Pool]:
            with failing("listing storage pools"):
                flags = libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE
                handles = conn.listAllStoragePools(flags)
            pools = []
            for handle in handles:
                try:
                    pools.append(Pool(handle.name(), target_path(handle), handle))
                except libvirt.libvirtError as exc:
                    if not is_error(exc, NO_POOL + OPERATION_INVALID):
                        raise ProviderError(
                            f"reading pool {handle.name()}: {exc.get_error_message()}"
                        ) from exc
            return pools

        return self._once("pools", fetch)

    def volumes(self, pool: Pool, refresh: bool) -> dict[str, libvirt.virStorageVol] | None:
        """The pool's volumes by name, in one call; None when the pool was removed or stopped
        meanwhile. refresh: refresh the pool first (once per run), for a pool of this stack."""
        if not refresh:  # a refreshed listing is as good
            with self._lock:
                if ("volumes", pool.name, True) in self._kept:
                    return self._kept[("volumes", pool.name, True)]

        def fetch() -> dict[str, libvirt.virStorageVol] | None:
            if refresh:
                # refused while an upload runs: the listing is still right for our volumes
                with contextlib.suppress(libvirt.libvirtError):
                    pool.handle.refresh(0)
            try:
                return {vol.name(): vol for vol in pool.handle.listAllVolumes(0)}
            except libvirt.libvirtError as exc:
                if is_error(exc, NO_POOL + OPERATION_INVALID):
                    return None  # undefined, or stopped: not active any more
                raise ProviderError(
                    f"listing volumes of pool {pool.name}: {exc.get_error_message()}"
                ) from exc

        return self._once(("volumes", pool.name, refresh), fetch)


def _parsed(dom: libvirt.virDomain, flags: int) -> ParsedDomain | None:
    try:
        return parse(dom.XMLDesc(flags))
    except libvirt.libvirtError as exc:
        if is_error(exc, NO_DOMAIN):
            return None
        raise ProviderError(f"reading domain {dom.name()}: {exc.get_error_message()}") from exc


__all__ = ["Listings"]
