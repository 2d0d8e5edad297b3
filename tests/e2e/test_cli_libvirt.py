"""End-to-end through the installed `iacloud` command on a real libvirtd: boot a server from
the tiny test image, see its ready line with the hostname from the stack, check that a second
plan is empty, change memory (a restart) and a volume (live), then destroy and check through
libvirt that nothing tagged with the stack remains."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from e2e_cli import IACLOUD, TINY, iacloud

libvirt = pytest.importorskip("libvirt")

pytestmark = pytest.mark.libvirt


STACK = """
version = 1
name = "{name}"

[parameters.memory]
type = "number"
default = 128

[resources.img]
type = "image"
source = "{image}"
format = "qcow2"

[resources.disk]
type = "volume"
size_gib = {size}

[resources.vm]
type = "server"
image = {{ get_resource = "img" }}
memory_mib = {{ get_param = "memory" }}
hostname = "e2e-{tag}"
volumes = [{{ get_resource = "disk" }}]
user_data = "#!/bin/sh\\necho 'user-data ran <&;> {tag}'"

[outputs.console]
value = {{ get_attr = ["vm", "console_log"] }}
"""


@pytest.fixture
def stack(tmp_path: Path, e2e_pool: str):
    if not TINY.is_file():
        pytest.skip("build/images/tiny.qcow2 is missing: run `make image`")
    tag = uuid.uuid4().hex[:8]
    path = tmp_path / "e2e.toml"

    def write(size: int = 1) -> Path:
        text = STACK.format(name=f"e2e-{tag}", image=TINY, size=size, tag=tag)
        path.write_text(text + e2e_pool)
        return path

    write()
    yield write, tag
    # destroy even when the test failed, then check through libvirt that nothing is left
    subprocess.run([str(IACLOUD), "destroy", "--auto-approve", str(path)], capture_output=True,
                   timeout=600)  # fmt: skip


def tagged_objects(stack_id: str) -> list[str]:
    conn = libvirt.open("qemu:///system")
    try:
        found = [d.name() for d in conn.listAllDomains() if stack_id in (d.XMLDesc(0) or "")]
        for pool in conn.listAllStoragePools():
            if pool.isActive():
                pool.refresh(0)
                found += [v.name() for v in pool.listAllVolumes(0) if stack_id[:8] in v.name()]
        return found
    finally:
        conn.close()


def test_boot_change_and_destroy_through_the_cli(stack):
    write, tag = stack
    path = write()
    assert "valid (3 resources)" in iacloud("validate", str(path))
    assert "3 to create" in iacloud("plan", "--detailed-exitcode", str(path), code=2)
    iacloud("apply", "--auto-approve", "-j", "2", str(path))

    console = json.loads(iacloud("output", "console", "--json", "--stack", str(path)))
    log = Path(console).read_text(errors="replace")
    assert f"IACLOUD-READY hostname=e2e-{tag}" in log
    assert f"user-data ran <&;> {tag}" in log
    assert "No changes" in iacloud("plan", "--detailed-exitcode", str(path))

    shown = json.loads(iacloud("show", "--json", "--stack", str(path)))
    stack_id = shown["stack_id"]
    assert tagged_objects(stack_id)

    # a bigger volume is a live change; more memory a restart; both shown as such
    write(size=2)
    plan = json.loads(iacloud("plan", "--json", "-p", "memory=192", str(path)))
    kinds = {c["address"]: (c["action"], c["disruption"]) for c in plan["changes"]}
    assert kinds["disk"] == ("update", "live") and kinds["vm"] == ("update", "restart")
    assert plan["max_disruption"] == "restart"
    out = iacloud("apply", "--auto-approve", "--max-disruption", "live", "-p", "memory=192",
                  str(path), code=1)  # fmt: skip
    assert "beyond --max-disruption live" in out
    iacloud("apply", "--auto-approve", "-p", "memory=192", str(path))
    assert "No changes" in iacloud("plan", "-p", "memory=192", str(path))
    conn = libvirt.open("qemu:///system")
    try:
        dom = conn.lookupByUUIDString(shown["resources"]["vm"]["id"])
        assert dom.maxMemory() == 192 * 1024
    finally:
        conn.close()

    # a domain removed behind iacloud's back is reported and recreated by the next apply
    conn = libvirt.open("qemu:///system")
    try:
        dom = conn.lookupByUUIDString(shown["resources"]["vm"]["id"])
        dom.destroy()
        dom.undefine()
    finally:
        conn.close()
    out = iacloud("plan", "-p", "memory=192", str(path))
    assert "vm (server): missing" in out and "deleted outside iacloud" in out
    assert "1 to create" in out
    iacloud("apply", "--auto-approve", "-p", "memory=192", str(path))
    assert "No changes" in iacloud("plan", "-p", "memory=192", str(path))

    assert "3 to delete" in iacloud("destroy", "--auto-approve", str(path))
    assert tagged_objects(stack_id) == []
