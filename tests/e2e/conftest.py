"""End-to-end fixtures: a libvirt pool of the test's own, removed afterwards, so the tests
leave no pool behind (the provider's default pool is for users)."""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def e2e_pool() -> Iterator[str]:
    """A `[provider.libvirt]` table naming a throw-away pool under /tmp (QEMU can reach it)."""
    libvirt = pytest.importorskip("libvirt")
    name = f"iace2e-{uuid.uuid4().hex[:8]}"
    base = Path("/tmp") / name
    base.mkdir(mode=0o755)
    yield f'\n[provider.libvirt]\npool = "{name}"\npool_path = "{base}/pool"\n'
    conn = libvirt.open("qemu:///system")
    try:
        with contextlib.suppress(libvirt.libvirtError):
            pool = conn.storagePoolLookupByName(name)
            if pool.isActive():
                pool.refresh(0)
                for vol in pool.listAllVolumes(0):
                    vol.delete(0)
                pool.destroy()
            pool.undefine()
    finally:
        conn.close()
    shutil.rmtree(base, ignore_errors=True)
