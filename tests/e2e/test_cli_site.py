"""The site catalog on a real libvirtd, through the CLI: a server sized by a catalog flavor and
booted from a catalog image (the tiny test image with its real sha256); the image is uploaded
once and shared by a second stack; a flavor with a larger root disk grows the running server's
disk in place; destroying both stacks leaves no domain or stack volume, and the site image
stays in the pool (it belongs to the site)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from e2e_cli import IACLOUD, TINY, iacloud

libvirt = pytest.importorskip("libvirt")

pytestmark = pytest.mark.libvirt

GiB = 1 << 30


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _site(path: Path) -> Path:
    path.write_text(
        f"""version = 1
[flavors."m1.tiny"]
vcpus = 1
memory_mib = 512
root_gib = 1
[flavors."m1.tiny-2g"]
vcpus = 1
memory_mib = 512
root_gib = 2
[images.tiny]
source = "{TINY}"
format = "qcow2"
sha256 = "{_sha256(TINY)}"
"""
    )
    return path


def _volumes(pool_name: str) -> dict[str, int]:
    conn = libvirt.open("qemu:///system")
    try:
        pool = conn.storagePoolLookupByName(pool_name)
        pool.refresh(0)
        return {v.name(): v.info()[1] for v in pool.listAllVolumes(0)}
    finally:
        conn.close()


def _domains(prefix: str) -> list[str]:
    conn = libvirt.open("qemu:///system")
    try:
        return [d.name() for d in conn.listAllDomains() if d.name().startswith(prefix + "-")]
    finally:
        conn.close()


def test_catalog_flavor_and_image_apply_share_grow_and_destroy_clean(
    tmp_path: Path, e2e_pool: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = e2e_pool.split('pool = "', 1)[1].split('"', 1)[0]
    site = _site(tmp_path / "site.toml")
    name = f"e2esite-{uuid.uuid4().hex[:8]}"
    web = tmp_path / "web.toml"
    web_text = f"""version = 1
name = "{name}"
[parameters.size]
type = "string"
default = "m1.tiny"
constraints = [{{ custom_constraint = "nova.flavor" }}]
[resources.web]
type = "server"
flavor = {{ get_param = "size" }}
image = "tiny"
{e2e_pool}"""
    web.write_text(web_text)
    other = tmp_path / "other.toml"
    other.write_text(
        f'version = 1\nname = "{name}-b"\n[resources.disk]\ntype = "volume"\nsize_gib = 1\n'
        f'image = "tiny"\n{e2e_pool}'
    )
    try:
        iacloud("apply", "--auto-approve", "--site", str(site), str(web))
        (domain,) = _domains(name)
        conn = libvirt.open("qemu:///system")
        try:
            dom = conn.lookupByName(domain)
            _, _, memory_kib, vcpus, _ = dom.info()
            xml = ET.fromstring(dom.XMLDesc(0))
        finally:
            conn.close()
        assert (vcpus, memory_kib) == (1, 512 * 1024)
        site_images = [v for v in _volumes(pool) if v.startswith("iacsite-tiny-")]
        assert site_images == [f"iacsite-tiny-{_sha256(TINY)[:12]}.qcow2"]
        backing = xml.find("devices/disk[@device='disk']/backingStore/source")
        assert backing is not None and backing.get("file", "").endswith(site_images[0])
        root = next(v for v in _volumes(pool) if v.endswith(".root.qcow2"))
        assert _volumes(pool)[root] == 1 * GiB  # the flavor's root_gib

        # a second stack names the same image: it is adopted, not uploaded again
        monkeypatch.setenv("IACLOUD_SITE", str(site))
        iacloud("apply", "--auto-approve", str(other))
        assert [v for v in _volumes(pool) if v.startswith("iacsite-")] == site_images

        # a flavor with a larger root disk: the running server's disk grows, nothing restarts
        plan = json.loads(iacloud("plan", "--json", "-p", "size=m1.tiny-2g", str(web)))
        (change,) = [c for c in plan["changes"] if c["address"] == "web"]
        assert change["action"] == "update"
        assert {f["field"]: f["disruption"] for f in change["fields"]} == {
            "root_gib": "live",
            "flavor": "none",
        }
        iacloud("apply", "--auto-approve", "-p", "size=m1.tiny-2g", str(web))
        assert _volumes(pool)[root] == 2 * GiB
        assert _domains(name) == [domain]
        out = iacloud("plan", "--detailed-exitcode", "-p", "size=m1.tiny-2g", str(web))
        assert "No changes" in out

        iacloud("destroy", "--auto-approve", "-p", "size=m1.tiny-2g", str(web))
        iacloud("destroy", "--auto-approve", str(other))
        assert _domains(name) == []
        left = sorted(_volumes(pool))
        assert left == site_images, "only the site image stays after destroy"
    finally:
        for args in (["-p", "size=m1.tiny-2g", str(web)], [str(other)]):
            subprocess.run([str(IACLOUD), "destroy", "--auto-approve", "--site", str(site), *args],
                           capture_output=True, timeout=600)  # fmt: skip
