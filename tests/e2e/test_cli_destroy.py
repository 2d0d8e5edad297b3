"""Destroy without needless waits, through the CLI on a real libvirtd: servers booted from an
empty volume (no OS, so nothing answers the ACPI power button) are destroyed in seconds with
the default shutdown_timeout of 60 s, because every disk they have goes with them; a server
whose boot volume stays (it outlives the server) is shut down gracefully first, which such a
guest ignores until shutdown_timeout, and only then powered off."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest
from e2e_cli import IACLOUD, iacloud

libvirt = pytest.importorskip("libvirt")

pytestmark = pytest.mark.libvirt

STACK = """
version = 1
name = "{name}"

[resources.boot]
type = "volume"
count = {count}
size_gib = 1

[resources.vm]
type = "server"
count = {servers}
boot_volume = {{ get_resource = "boot[%index%]" }}
memory_mib = 64
ready = "none"      # nothing will ever boot
"""


def domains(stack_name: str) -> list[str]:
    conn = libvirt.open("qemu:///system")
    try:
        return [d.name() for d in conn.listAllDomains() if d.name().startswith(stack_name + "-")]
    finally:
        conn.close()


@pytest.fixture
def write(tmp_path: Path, e2e_pool: str):
    name = f"e2edel-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "del.toml"

    def write_(count: int, servers: int, settings: str = "") -> Path:
        pool = e2e_pool if not settings else e2e_pool.rstrip("\n") + "\n" + settings + "\n"
        text = STACK.format(name=name, count=count, servers=servers)
        path.write_text(text + pool)
        return path

    write_.name = name  # type: ignore[attr-defined]
    try:
        yield write_
    finally:
        subprocess.run([str(IACLOUD), "destroy", "--auto-approve", str(path)],
                       capture_output=True, timeout=600)  # fmt: skip
    assert domains(name) == []


def test_destroy_of_servers_that_ignore_acpi_takes_seconds(write):
    path = write(count=2, servers=2)
    iacloud("apply", "--auto-approve", str(path))
    assert len(domains(write.name)) == 2
    t0 = time.monotonic()
    iacloud("destroy", "--auto-approve", str(path))
    elapsed = time.monotonic() - t0
    print(f"\ndestroy of 2 servers that ignore ACPI (shutdown_timeout 60 s): {elapsed:.1f}s")
    assert domains(write.name) == []
    assert elapsed < 15, f"destroy waited {elapsed:.1f}s: a graceful shutdown was tried"


def test_a_boot_volume_that_outlives_the_server_gets_a_graceful_shutdown_first(write):
    settings = "shutdown_timeout = 4"
    path = write(count=1, servers=1, settings=settings)
    iacloud("apply", "--auto-approve", str(path))
    path = write(count=1, servers=0, settings=settings)  # the server goes, its volume stays
    t0 = time.monotonic()
    iacloud("apply", "--auto-approve", str(path))
    elapsed = time.monotonic() - t0
    print(f"\ndelete of a server whose boot volume stays (shutdown_timeout 4 s): {elapsed:.1f}s")
    assert domains(write.name) == []
    assert elapsed >= 4, "the server was powered off without trying a graceful shutdown"
