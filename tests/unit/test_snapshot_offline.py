"""Volume snapshots without a host: the block copy's destination XML and mirror states, names,
input validation, the plan-time checks (a snapshot a kept volume is made from cannot be deleted;
references name the right kind of resource)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from pydantic import ValidationError

from iacloud.provider import Observed, Remaining, StackInfo
from iacloud.providers.libvirt import LibvirtProvider, LibvirtSettings, blockcopy, snapshot, tags
from iacloud.providers.libvirt.storage import parse_volume_xml
from iacloud.providers.libvirt.volume import VolumeInputs
from iacloud.stack_view import Computed, Reference, ResourceView

STACK_ID = "3fa2b1c4-0000-4000-8000-000000000001"
SNAP = "pool/iac-3fa2b1c4-snap.snap.qcow2"


@pytest.fixture
def provider(tmp_path: Path) -> LibvirtProvider:
    """Constructing the provider touches no host."""
    return LibvirtProvider(StackInfo("t", STACK_ID, tmp_path, tmp_path / "data"), LibvirtSettings())


def test_snapshot_names_round_trip() -> None:
    name = tags.volume_name(STACK_ID, "nightly[2]", "qcow2", "snap")
    assert name == "iac-3fa2b1c4-nightly.2.snap.qcow2"
    assert tags.parse_volume_name(name) == tags.VolumeName(
        "3fa2b1c4", "nightly[2]", "snap", "qcow2"
    )


def test_copy_destination_states_the_format_and_escapes_the_path() -> None:
    path = "/var/lib/iacloud/pool/a'<b>&.qcow2"
    disk = ET.fromstring(blockcopy.copy_destination_xml(path))
    assert (disk.tag, disk.get("type")) == ("disk", "file")
    assert disk.find("source").get("file") == path
    assert disk.find("driver").get("type") == "qcow2"  # REUSE_EXT must not probe it


def _domain(mirror: str | None) -> str:
    return (
        "<domain><devices>"
        "<disk type='volume'><source pool='p' volume='root.qcow2'/><target dev='vda'/></disk>"
        f"<disk type='volume'><source pool='p' volume='d.qcow2'/>{mirror or ''}"
        "<target dev='vdb'/></disk></devices></domain>"
    )


def test_mirror_state_follows_the_copy_of_one_disk() -> None:
    copying = "<mirror type='file' file='/x' job='copy'><format type='qcow2'/></mirror>"
    ready = "<mirror type='file' file='/x' job='copy' ready='yes'/>"
    assert blockcopy.mirror_state(_domain(None), "vdb") is None
    assert blockcopy.mirror_state(_domain(copying), "vdb") == "copying"
    assert blockcopy.mirror_state(_domain(ready), "vdb") == "ready"
    assert blockcopy.mirror_state(_domain(ready), "vda") is None  # another disk's copy
    assert blockcopy.mirror_state(_domain(ready), "vdz") is None


def test_volume_xml_gives_format_and_modification_time() -> None:
    xml = (
        "<volume><name>v.qcow2</name><capacity>1073741824</capacity>"
        "<allocation>200704</allocation><target><path>/p/v.qcow2</path>"
        "<format type='qcow2'/><timestamps><mtime>1700000000.5</mtime></timestamps>"
        "</target></volume>"
    )
    info = parse_volume_xml("p", xml)
    assert (info.format, info.mtime) == ("qcow2", 1700000000.5)
    assert snapshot.created_at(info.mtime) == "2023-11-14T22:13:20+00:00"
    assert snapshot.created_at(None) is None
    bare = parse_volume_xml("p", "<volume><name>v</name></volume>")
    assert (bare.format, bare.mtime) == (None, None)


def test_snapshot_and_volume_inputs_refuse_what_is_not_theirs() -> None:
    with pytest.raises(ValidationError):
        snapshot.SnapshotInputs(volume="no-pool")
    with pytest.raises(ValidationError):
        snapshot.SnapshotInputs(volume="pool/../etc")
    with pytest.raises(ValidationError, match="not a volume snapshot"):
        VolumeInputs(size_gib=1, snapshot="pool/iac-3fa2b1c4-data.qcow2")
    with pytest.raises(ValidationError):
        VolumeInputs(size_gib=1, snapshot="pool/a/b.snap.qcow2")
    assert VolumeInputs(size_gib=1, snapshot=SNAP).snapshot == SNAP


def test_volume_check_wants_one_source_and_qcow2(provider: LibvirtProvider) -> None:
    volume = provider.resource("volume")
    both = VolumeInputs(size_gib=1, image="pool/iac-3fa2b1c4-base.image.qcow2", snapshot=SNAP)
    assert [d.field for d in volume.check("v", both, None)] == ["snapshot"]
    raw = VolumeInputs(size_gib=1, snapshot=SNAP, format="raw")
    (diag,) = volume.check("v", raw, None)
    assert diag.field == "format" and "made from a snapshot" in diag.message
    image_is_snap = VolumeInputs(size_gib=1, image=SNAP)
    (diag,) = volume.check("v", image_is_snap, None)
    assert diag.field == "image" and "snapshot =" in (diag.hint or "")


def test_a_snapshot_a_kept_volume_is_made_from_cannot_be_deleted(
    provider: LibvirtProvider,
) -> None:
    snap = provider.resource("volume_snapshot")
    prior = Observed(SNAP, {"volume": "pool/iac-3fa2b1c4-data.qcow2"}, {})
    remaining = {
        "copy[0]": Remaining("copy[0]", "volume", "pool/c0.qcow2", {"snapshot": SNAP}),
        "copy[1]": Remaining("copy[1]", "volume", "pool/c1.qcow2", {"snapshot": SNAP}),
        "other": Remaining("other", "volume", "pool/o.qcow2", {"snapshot": "pool/x.snap.qcow2"}),
        "img": Remaining("img", "image", "pool/i.qcow2", {"snapshot": SNAP}),
    }
    (diag,) = snap.check_delete("snap", prior, remaining)
    assert diag.message.startswith(f"cannot delete volume snapshot snap ({SNAP}): volumes")
    assert "copy[0], copy[1] are copy-on-write overlays" in diag.message
    assert "copy[0], copy[1]" in (diag.hint or "")
    assert snap.check_delete("snap", prior, {"other": remaining["other"]}) == []
    # every other type lets its objects go (the hook's default)
    assert provider.resource("volume").check_delete("d", prior, remaining) == []


def _view(address: str, type_: str, **props: object) -> ResourceView:
    return ResourceView(address, type_, props)


def test_references_name_the_right_kind_of_resource() -> None:
    views = [
        _view("data", "volume", size_gib=1),
        _view("img", "image", source="x.qcow2", format="qcow2"),
        _view("snap", "volume_snapshot", volume=Reference("data")),
        _view("bad_snap", "volume_snapshot", volume=Reference("img")),
        _view("snap_of_net", "volume_snapshot", volume=Reference("lan")),
        _view("copy", "volume", size_gib=1, snapshot=Reference("snap")),
        _view("copy_by_id", "volume", size_gib=1, snapshot=Reference("snap", "id")),
        _view("wrong", "volume", size_gib=1, snapshot=Reference("data")),
        _view("as_image", "volume", size_gib=1, image=Reference("snap")),
        _view("fine", "volume", size_gib=1, image=Reference("img")),
        _view("computed", "volume", size_gib=1, snapshot=Computed((Reference("snap"),))),
        _view("part[0]", "volume_snapshot", volume=Reference("data")),
        _view("group", "volume", size_gib=1, snapshot=Reference("part")),
        _view("attr", "volume", size_gib=1, snapshot=Reference("data", "path")),
        _view("vm", "server", volumes=[Reference("data"), Reference("snap")]),
        _view("vm2", "server", boot_volume=Reference("snap")),
        _view("vm3", "server", boot_volume=Reference("copy"), volumes=[Reference("data")]),
    ]
    diags = LibvirtProvider.check_stack({v.address: v for v in views})
    got = {(d.address, d.field): d.message for d in diags}
    assert set(got) == {
        ("bad_snap", "volume"),
        ("snap_of_net", "volume"),
        ("wrong", "snapshot"),
        ("as_image", "image"),
        ("vm", "volumes"),
        ("vm2", "boot_volume"),
    }
    assert got[("bad_snap", "volume")] == "'volume' names img, an image; expected a volume"
    assert "a resource of another provider" in got[("snap_of_net", "volume")]
    assert got[("as_image", "image")].endswith("expected anything but a volume_snapshot")
    assert got[("vm", "volumes")].startswith("'volumes' names snap, a volume_snapshot")
