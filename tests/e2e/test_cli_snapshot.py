"""Volume snapshots through the installed `iacloud` command on a real libvirtd: a volume, a
snapshot of it and a volume made from the snapshot apply, and the next plan is empty; a plan
that would delete the snapshot while the volume made from it stays is refused naming both; a
snapshot forgotten by `state rm` is adopted again by `iacloud import`; one deleted behind
iacloud's back is drift ("deleted outside"); a volume whose `image` names a snapshot is refused
by `validate`; destroy leaves nothing tagged. Nothing boots: it takes seconds."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from e2e_cli import IACLOUD, iacloud

libvirt = pytest.importorskip("libvirt")

pytestmark = pytest.mark.libvirt

STACK = """
version = 1
name = "{name}"

[resources.data]
type = "volume"
size_gib = 1

[resources.snap]
type = "volume_snapshot"
volume = {{ get_resource = "data" }}
{copy}
[outputs.taken]
value = {{ get_attr = ["snap", "created_at"] }}
"""
COPY = """
[resources.copy]
type = "volume"
size_gib = 1
{source} = {{ get_resource = "snap" }}
"""


def tagged(stack_id: str) -> list[str]:
    conn = libvirt.open("qemu:///system")
    try:
        found = []
        for pool in conn.listAllStoragePools():
            if pool.isActive():
                pool.refresh(0)
                found += [v.name() for v in pool.listAllVolumes(0) if stack_id[:8] in v.name()]
        return found
    finally:
        conn.close()


@pytest.fixture
def stack(tmp_path: Path, e2e_pool: str):
    name = f"sn-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "snap.toml"

    def write(copy: str | None = "snapshot") -> Path:
        body = COPY.format(source=copy) if copy else ""
        path.write_text(STACK.format(name=name, copy=body) + e2e_pool)
        return path

    write()
    yield write
    # destroyed even when the test failed (the pool fixture then removes what is left)
    subprocess.run([str(IACLOUD), "destroy", "--auto-approve", str(path)], capture_output=True,
                   timeout=300)  # fmt: skip


def test_snapshot_apply_refuse_import_drift_destroy(stack) -> None:
    path = stack()
    assert "valid (3 resources)" in iacloud("validate", str(path))
    iacloud("apply", "--auto-approve", str(path))
    assert "No changes" in iacloud("plan", "--detailed-exitcode", str(path))
    shown = json.loads(iacloud("show", "--json", "--stack", str(path)))
    stack_id = shown["stack_id"]
    snap = shown["resources"]["snap"]
    assert snap["id"].endswith("-snap.snap.qcow2")
    assert snap["attributes"]["volume"] == shown["resources"]["data"]["id"]
    assert shown["resources"]["copy"]["inputs"]["snapshot"] == snap["id"]
    taken = json.loads(iacloud("output", "taken", "--json", "--stack", str(path)))
    assert taken == snap["attributes"]["created_at"]

    # deleting the snapshot while the volume made from it stays: refused at plan time
    out = iacloud("plan", "--destroy", "--target", "snap", str(path), code=1)
    assert "cannot delete volume snapshot snap" in out and "volume copy" in out

    # forgotten and adopted again: recorded as its create recorded it
    iacloud("state", "rm", "snap", "--stack", str(path))
    out = iacloud("import", "snap", snap["id"], "--stack", str(path))
    assert f"Imported volume_snapshot {snap['id']} as snap." in out
    assert "No changes" in iacloud("plan", "--detailed-exitcode", str(path))
    again = json.loads(iacloud("state", "show", "snap", "--json", "--stack", str(path)))
    assert (again["inputs"], again["attributes"]) == (snap["inputs"], snap["attributes"])

    # a volume made from an image cannot name a snapshot: caught before anything is touched
    out = iacloud("validate", str(stack(copy="image")), code=1)
    assert "resources.copy" in out and "names snap, a volume_snapshot" in out

    # the volume made from it goes first; then the snapshot, deleted by hand, is drift
    iacloud("apply", "--auto-approve", str(stack(copy=None)))
    conn = libvirt.open("qemu:///system")
    try:
        conn.storageVolLookupByPath(snap["attributes"]["path"]).delete(0)
    finally:
        conn.close()
    report = json.loads(iacloud("drift", "--json", str(path), code=2))
    missing = [r for r in report["resources"] if r["status"] == "missing"]
    assert [r["address"] for r in missing] == ["snap"], report
    assert "deleted outside" in iacloud("plan", str(path))

    assert "to delete" in iacloud("destroy", "--auto-approve", str(path))
    assert tagged(stack_id) == []
