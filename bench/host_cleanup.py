"""Clean-up shared by the benchmarks that make objects on the real host."""

from __future__ import annotations

import contextlib

import libvirt


def remove_pool(conn: libvirt.virConnect, name: str) -> None:
    """A benchmark's throw-away pool, with anything still in it."""
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError:
        return  # never made
    with contextlib.suppress(libvirt.libvirtError):
        if pool.isActive():
            pool.refresh(0)
            for vol in pool.listAllVolumes(0):
                with contextlib.suppress(libvirt.libvirtError):
                    vol.delete(0)
            pool.destroy()
    with contextlib.suppress(libvirt.libvirtError):
        pool.undefine()
