"""The libvirt provider's host-free parts: names and ownership tags, domain XML written and read
back, NoCloud seeds built and read back; and the shared id formats and validators."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from iacloud.errors import ProviderError
from iacloud.ids import PortId, VolumeId
from iacloud.providers.libvirt import domain_xml, seed, tags
from iacloud.providers.libvirt.domain_xml import (
    Disk,
    DomainSpec,
    Nic,
    NicRecord,
    ServerRecord,
)
from iacloud.providers.libvirt.tags import OwnerTag
from iacloud.validators import is_interface_name, is_mac, is_unicast_mac

STACK_ID = "3fa2b1c4-0000-4000-8000-000000000001"


# ------------------------------------------------------------------ tags
@pytest.mark.parametrize(
    ("address", "role", "fmt", "name"),
    [
        ("data", None, "qcow2", "iac-3fa2b1c4-data.qcow2"),
        ("web[3]", "root", "qcow2", "iac-3fa2b1c4-web.3.root.qcow2"),
        ("web[0]", "seed", "raw", "iac-3fa2b1c4-web.0.seed.raw"),
        ("base_img", "image", "raw", "iac-3fa2b1c4-base_img.image.raw"),
    ],
)
def test_volume_names_round_trip(address: str, role: str | None, fmt: str, name: str) -> None:
    assert tags.volume_name(STACK_ID, address, fmt, role) == name
    parsed = tags.parse_volume_name(name)
    assert parsed == tags.VolumeName("3fa2b1c4", address, role, fmt)
    assert tags.format_of(name) == fmt


@pytest.mark.parametrize(
    "name", ["disk.qcow2", "iac-3fa2b1c4-web.root.vmdk", "iac--web.qcow2", "iac-x-web[0].raw"]
)
def test_foreign_volume_names_carry_no_tag(name: str) -> None:
    assert tags.parse_volume_name(name) is None


def test_names_refuse_what_could_escape() -> None:
    for bad in ("web/../x", "web[0", "", "we b"):
        with pytest.raises(ProviderError):
            tags.encode_address(bad)
    for bad in ("..", "a/b", ".hidden", "-opt", "a..b", "x" * 201, "a\0b"):
        with pytest.raises(ProviderError):
            tags.check_object_name(bad, "volume name")
    assert tags.check_object_name("disk-1.qcow2", "volume name") == "disk-1.qcow2"
    with pytest.raises(ProviderError):
        tags.domain_name("my stack", STACK_ID, "web")
    with pytest.raises(ProviderError):
        tags.volume_name(STACK_ID, "web", "vmdk")


def test_domain_names_and_default_hostnames() -> None:
    assert tags.domain_name("lab", STACK_ID, "web[0]") == "lab-web.0-3fa2b1c4"
    # a stack of the HTTP API is '<project>.<stack>' in state
    assert tags.domain_name("demo.lab", STACK_ID, "web") == "demo.lab-web-3fa2b1c4"
    for bad in ("demo.", ".lab", "a.b.c", "a..b"):
        with pytest.raises(ProviderError):
            tags.domain_name(bad, STACK_ID, "web")
    assert tags.default_hostname("web_front[2]") == "web-front-2"
    assert tags.default_hostname("_") == "server"


def test_owner_tag_round_trips_through_the_domain_metadata() -> None:
    domain = ET.Element("domain")
    ET.SubElement(domain, "metadata").append(tags.owner_element(OwnerTag("lab", STACK_ID, "a")))
    assert tags.parse_owner(ET.fromstring(ET.tostring(domain))) == OwnerTag("lab", STACK_ID, "a")
    assert tags.parse_owner(ET.Element("domain")) is None


# ------------------------------------------------------------------ domain XML
def test_domain_xml_round_trips_what_the_provider_records() -> None:
    record = ServerRecord(
        hostname="web-0",
        image="default/iac-3fa2b1c4-base.image.qcow2",
        boot_volume=None,
        root="default/iac-3fa2b1c4-web.0.root.qcow2",
        seed="default/iac-3fa2b1c4-web.0.seed.raw",
        nics=(
            NicRecord("52:54:00:00:00:01", "port", True, "br1/52:54:00:00:00:01/198.18.0.5"),
            NicRecord("52:54:00:00:00:02", "bridge", False, None, ("sg-0123456789",)),
        ),
        volumes=("default/iac-3fa2b1c4-data.qcow2",),
        user_data=True,
    )
    spec = DomainSpec(
        name="lab-web.0-3fa2b1c4", virt_type="qemu", machine="pc", vcpus=2, memory_mib=512,
        owner=OwnerTag("lab", STACK_ID, "web[0]"), record=record,
        disks=[Disk("vda", "qcow2", "default", "iac-3fa2b1c4-web.0.root.qcow2"),
               Disk("hdc", "raw", "default", "iac-3fa2b1c4-web.0.seed.raw", device="cdrom",
                    bus="ide"),
               Disk("vdb", "qcow2", "default", "iac-3fa2b1c4-data.qcow2")],
        nics=[Nic("br1", "52:54:00:00:00:01", "iacn0123456789"), Nic("br2", "52:54:00:00:00:02")],
        console_path="/var/lib/iacloud/c.log",
    )  # fmt: skip
    parsed = domain_xml.parse(domain_xml.build(spec))
    assert (parsed.name, parsed.vcpus, parsed.memory_mib) == ("lab-web.0-3fa2b1c4", 2, 512)
    assert parsed.owner == spec.owner and parsed.record == record
    assert [d.id for d in parsed.disks] == [d.id for d in spec.disks]
    assert [(d.device, d.format) for d in parsed.disks] == [
        ("disk", "qcow2"), ("cdrom", "raw"), ("disk", "qcow2")
    ]  # fmt: skip
    assert parsed.nics == spec.nics and parsed.console_path == spec.console_path
    assert parsed.machine == "pc"


def test_server_nic_security_groups_and_tap_names() -> None:
    from pydantic import ValidationError

    from iacloud.providers.libvirt.nic_filter import tap_name
    from iacloud.providers.libvirt.server_inputs import NetworkEntry, ServerInputs

    entry = NetworkEntry(network="br1", security_groups=["sg-0123456789"])
    assert entry.model_dump()["security_groups"] == ["sg-0123456789"]
    # without groups an entry keeps the shape recorded before groups existed
    assert NetworkEntry(network="br1").model_dump() == {
        "network": "br1", "bridge": None, "port": None, "mac": None
    }  # fmt: skip
    for bad in (["web"], ["sg-0123456789", "sg-0123456789"], ["sg-0123456789; x"]):
        with pytest.raises(ValidationError):
            NetworkEntry(network="br1", security_groups=bad)
    with pytest.raises(ValidationError):
        ServerInputs(
            networks=[{"network": "br1", "security_groups": [f"sg-{i:010x}" for i in range(17)]}]
        )
    uuid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    tap = tap_name(uuid, "52:54:00:00:00:01")
    assert tap == tap_name(uuid.upper(), "52:54:00:00:00:01") and len(tap) <= 15
    assert tap.startswith("iacn") and is_interface_name(tap)
    assert tap != tap_name(uuid, "52:54:00:00:00:02")
    el = domain_xml.interface_element(Nic("br1", "52:54:00:00:00:01", tap))
    assert el.find("target").get("dev") == tap


def test_domain_xml_escapes_what_it_is_given() -> None:
    # values reach the XML through ElementTree, never by string formatting
    spec = DomainSpec(
        name="a", virt_type="qemu", machine="pc", vcpus=1, memory_mib=64,
        owner=OwnerTag("s", "1", "a"),
        record=ServerRecord(hostname="h", image=None, boot_volume=None, root="p/r", seed="p/s"),
        disks=[], nics=[], console_path='/tmp/"><evil/>',
    )  # fmt: skip
    parsed = domain_xml.parse(domain_xml.build(spec))
    assert parsed.console_path == '/tmp/"><evil/>' and parsed.disks == []


def test_parse_reads_memory_in_any_unit_and_a_domain_without_our_tag() -> None:
    xml = "<domain><name>x</name><memory unit='GiB'>2</memory><vcpu>3</vcpu></domain>"
    parsed = domain_xml.parse(xml)
    assert (parsed.memory_mib, parsed.vcpus, parsed.owner, parsed.record) == (2048, 3, None, None)


# ------------------------------------------------------------------ seed
def test_seed_iso_round_trips_meta_and_user_data() -> None:
    keys = ["ssh-ed25519 AAAA user@host"]
    iso = seed.build_seed("i-1", "web-0", None, keys, ["52:54:00:00:00:01"])
    files = seed.read_seed(iso)
    assert files is not None and files.meta_data is not None and files.user_data is not None
    assert seed.parse_meta_data(files.meta_data.decode()) == ("web-0", keys)
    assert files.user_data.startswith(b"#cloud-config\nssh_authorized_keys:")
    given = seed.read_seed(seed.build_seed("i-1", "h", "#!/bin/sh\n", [], []))
    assert given is not None and given.user_data == b"#!/bin/sh\n"


def test_seed_refuses_bad_values_and_reads_no_foreign_image() -> None:
    assert seed.read_seed(b"not an iso" * 300) is None
    assert seed.read_seed(seed.build_iso({})) is not None
    for bad in ("-web", "web_0", "a" * 64, "a..b", ""):
        with pytest.raises(ProviderError):
            seed.check_hostname(bad)
    with pytest.raises(ProviderError):
        seed.check_ssh_key("ssh-ed25519 AAAA\nruncmd: [reboot]")
    with pytest.raises(ProviderError):
        seed.meta_data("i 1", "h", [])
    with pytest.raises(ProviderError):
        seed.network_config(["52:54:00:00:00:0G"])


# ------------------------------------------------------------------ ids and validators
def test_port_ids_parse_to_canonical_parts() -> None:
    port = PortId.parse("iacb0123456789/52:54:00:AB:CD:EF/198.18.10.5")
    assert port == PortId("iacb0123456789", "52:54:00:ab:cd:ef", "198.18.10.5")
    assert str(PortId.parse(str(port))) == str(port)
    for bad in (
        "br0/52:54:00:ab:cd:ef",
        "br0/52:54:00:ab:cd:ef/198.18.0.5/x",
        "-br/52:54:00:ab:cd:ef/198.18.0.5",
        "br0/53:54:00:ab:cd:ef/198.18.0.5",  # multicast
        "br0/00:00:00:00:00:00/198.18.0.5",
        "br0/52:54:00:ab:cd:ef/198.18.0.256",
        "br0/52:54:00:ab:cd:ef/198.18.010.5",  # leading zeros: ambiguous, refused
        None,
    ):
        with pytest.raises(ValueError):
            PortId.parse(bad)


def test_volume_ids_are_exactly_two_names() -> None:
    assert VolumeId.parse("default/disk.qcow2") == VolumeId("default", "disk.qcow2")
    assert str(VolumeId("p", "v")) == "p/v"
    for bad in ("disk", "a/b/c", 3):
        with pytest.raises(ValueError):
            VolumeId.parse(bad)


def test_shared_validators_match_whole_values() -> None:
    assert is_interface_name("iacb0123456789") and is_interface_name("br_0.10")
    for bad in (".", "..", "-x", ".x", "a" * 16, "br0\n", "br 0", "", None):
        assert not is_interface_name(bad)
    assert is_mac("52:54:00:ab:cd:ef") and not is_mac("52:54:00:ab:cd:ef\n")
    assert not is_mac("52:54:00:AB:CD:EF")  # canonical form only: callers lower-case first
    assert is_unicast_mac("52:54:00:ab:cd:ef")
    assert not is_unicast_mac("01:00:5e:00:00:01") and not is_unicast_mac("00:00:00:00:00:00")


# ------------------------------------------------------------------ site images
def test_site_image_volumes_are_named_by_content_and_owned_by_no_stack() -> None:
    from iacloud.providers.libvirt.site_image import SiteImageInputs, site_volume_name

    sha = "AB" * 32
    name = site_volume_name("ubuntu-22.04:lts", sha, "qcow2")
    assert name == "iacsite-ubuntu-22.04_lts-abababababab.qcow2"
    tags.check_object_name(name, "volume name")  # safe for libvirt and paths
    assert tags.parse_volume_name(name) is None  # no stack's tag
    assert tags.format_of(name) == "qcow2"
    ok = {"name": "tiny", "source": "/srv/t.qcow2", "format": "qcow2", "sha256": sha}
    SiteImageInputs(**ok)
    for bad in ({"sha256": None}, {"name": "../x"}, {"format": "vmdk"}):
        with pytest.raises(ValueError):
            SiteImageInputs(**{**ok, **bad})
