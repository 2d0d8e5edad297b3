"""The dashboard on real libvirt (run under the host lock): the demo template (one server,
a pool and an address range of the test's own) planned, approved, applied to a booted
server whose console log page shows its ready line, then destroyed, leaving nothing."""

from __future__ import annotations

import contextlib
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dashboard_helpers import Served, login, shot

libvirt = pytest.importorskip("libvirt")

pytestmark = pytest.mark.libvirt

ROOT = Path(__file__).parent.parent.parent
IMAGE = ROOT / "build" / "images" / "tiny.qcow2"


@pytest.fixture
def db_pool() -> Iterator[tuple[str, Path]]:
    name = f"db-{uuid.uuid4().hex[:8]}"
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


@pytest.fixture
def cleanup(served: Served) -> Iterator[None]:
    """Whatever happens in the test, the stack is deleted through the API afterwards."""
    from iacloud.identity import IdentityStore

    yield
    with IdentityStore.open(served.state_url) as ids:
        token = ids.issue_token("alice", "demo").token
    c = httpx.Client(base_url=served.url, headers={"X-Auth-Token": token}, timeout=30)
    if c.get("/v1/demo/stacks/demo").status_code != 200:
        return
    location = c.delete("/v1/demo/stacks/demo").headers["Location"]
    deadline = time.monotonic() + 300
    while c.get(location).json()["status"] not in ("COMPLETE", "FAILED", "CANCELLED"):
        assert time.monotonic() < deadline
        time.sleep(1)


def _demo(pool: str, pool_path: Path) -> str:
    """stacks/demo.toml with the image by absolute path (the server writes templates to a
    directory of its own), an address range and a pool of this test's own."""
    text = (ROOT / "stacks" / "demo.toml").read_text()
    text = text.replace('source = "../build/images/tiny.qcow2"', f'source = "{IMAGE}"')
    text = text.replace('cidr = "198.18.10.0/24"', 'cidr = "198.19.215.0/24"')
    assert str(IMAGE) in text and "198.19.215.0/24" in text
    return text + f'\n[provider.libvirt]\npool = "{pool}"\npool_path = "{pool_path}"\n'


def _finished(page: Any, served: Served, timeout: float) -> None:
    """Wait for the operation of the page to end; COMPLETE, or fail with its error, log and
    the server's log."""
    page.wait_for_function(
        "() => ['COMPLETE', 'FAILED', 'CANCELLED'].includes("
        "document.getElementById('op-status').textContent.trim())", timeout=timeout * 1000,
    )  # fmt: skip
    status = page.locator("#op-status").inner_text().strip()
    if status != "COMPLETE":
        shot(page, "libvirt-failed")
        error, log = page.locator("#op-error").inner_text(), page.locator("#log").inner_text()
        pytest.fail(f"{status}: {error}\n{log}\n{served.log.read_text()[-3000:]}")


def test_the_demo_stack_on_libvirt(
    served: Served, context: Any, db_pool: tuple[str, Path], cleanup: None
) -> None:
    assert IMAGE.exists(), "make image first"
    pool, pool_path = db_pool
    page = context.new_page()
    login(page, served.url)
    page.click("#new-stack")
    page.fill("input[name=stack_name]", "demo")
    page.fill("textarea[name=template]", _demo(pool, pool_path))
    page.fill("textarea[name=parameters]", "server_count=1")
    page.click("#new-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/plans/[0-9a-f]+$"), timeout=60_000)
    addresses = set(page.locator("#changes tr.change td:nth-child(2)").all_inner_texts())
    assert addresses == {"tiny", "lan", "data[0]", "web[0]"}
    page.click("#approve")
    page.wait_for_url(re.compile(r".*/operations/[0-9a-f]+$"))
    _finished(page, served, 420)
    assert "web[0] (server) CREATE_COMPLETE" in page.locator("#log").inner_text()
    shot(page, "libvirt-apply-log")

    page.click("h1 a")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#topology g.node')]"
        ".every(n => n.classList.contains('status-complete'))"
    )
    assert page.locator("#topology g.node").count() == 4
    page.set_viewport_size({"width": 1000, "height": 640})
    shot(page, "libvirt-stack-top", full_page=False)
    page.set_viewport_size({"width": 1280, "height": 900})

    page.click("#resources a:text-is('web[0]')")
    assert page.locator("#power-state").inner_text() == "running"
    assert re.search(r"198\.19\.215\.\d+", page.locator("#addresses").inner_text())
    assert "IACLOUD-READY hostname=demo-web-0" in page.locator("#console").inner_text()
    shot(page, "libvirt-server")

    page.go_back()
    page.click("#plan-destroy")
    page.wait_for_url(re.compile(r".*/plans/[0-9a-f]+$"), timeout=60_000)
    assert "4 to delete" in page.locator("#plan-summary").inner_text()
    page.click("#approve")
    _finished(page, served, 420)
    conn = libvirt.open("qemu:///system")
    try:
        p = conn.storagePoolLookupByName(pool)
        p.refresh(0)
        assert p.listAllVolumes(0) == []
        assert not [d.name() for d in conn.listAllDomains(0) if "demo" in d.name()
                    and served.data_dir.name in str(d.XMLDesc(0))]  # fmt: skip
    finally:
        conn.close()
