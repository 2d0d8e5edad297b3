"""The API on a real libvirtd: a stack with a volume created through `iacloud serve` to
CREATE_COMPLETE, seen in libvirt, then deleted through the API, leaving the pool empty."""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_server import wait_op

libvirt = pytest.importorskip("libvirt")

pytestmark = pytest.mark.libvirt


@pytest.fixture
def ap_pool() -> Iterator[tuple[str, Path]]:
    name = f"ap-{uuid.uuid4().hex[:8]}"
    base = Path("/tmp") / name
    base.mkdir(mode=0o755)
    yield name, base / "pool"
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


def _volumes(pool: str) -> list[str]:
    conn = libvirt.open("qemu:///system")
    try:
        p = conn.storagePoolLookupByName(pool)
        p.refresh(0)
        return sorted(v.name() for v in p.listAllVolumes(0))
    finally:
        conn.close()


def test_a_volume_stack_through_the_api(serve, ap_pool: tuple[str, Path]) -> None:
    pool, pool_path = ap_pool
    template = f"""version = 1

[resources.disk]
type = "volume"
size_gib = 1

[outputs.path]
value = {{ get_attr = ["disk", "path"] }}

[provider.libvirt]
pool = "{pool}"
pool_path = "{pool_path}"
"""
    server = serve()
    c = server.client()
    r = c.post("/v1/pa/stacks", json={"stack_name": "vol", "template": template})
    assert r.status_code == 202, r.text
    op = wait_op(c, r.headers["Location"], timeout=120)
    assert op["status"] == "COMPLETE", op
    stack = c.get("/v1/pa/stacks/vol").json()
    assert stack["status"] == "CREATE_COMPLETE"
    (volume,) = _volumes(pool)
    path = c.get("/v1/pa/stacks/vol/outputs").json()["outputs"]["path"]
    assert path == str(pool_path / volume) and Path(path).exists()

    gone = c.delete("/v1/pa/stacks/vol")
    assert wait_op(c, gone.headers["Location"], timeout=120)["status"] == "COMPLETE"
    assert _volumes(pool) == []
    assert c.get("/v1/pa/stacks/vol").status_code == 404
