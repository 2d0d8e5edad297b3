"""The pure parts of the many-hosts work (#16): SSH command words reach the remote shell as
exactly those words, VXLAN ids and members of a spanning network, underlay addresses, and the
destination XML of a live migration."""

from __future__ import annotations

import shlex
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iacloud.errors import ProviderError
from iacloud.providers.libvirt.migration import destination_xml
from iacloud.providers.netlink import span
from iacloud.site_hosts import CatalogHost, SshTarget

LAB = "qemu+libssh2://root@198.19.250.11/system?sshauth=privkey&keyfile=/k"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=40), min_size=1, max_size=6))
def test_ssh_words_reach_the_remote_shell_unchanged(words: list[str]) -> None:
    words = [w.replace("\x00", "") for w in words]  # no argv can hold NUL
    argv = SshTarget(target="root@h1").argv(*words)
    remote = argv[argv.index("--") + 1 :]
    # ssh joins these with spaces and the remote shell splits them again
    assert shlex.split(" ".join(remote)) == words


def test_vni_is_stable_nonzero_and_24_bit() -> None:
    ids = {span.vni(f"iacb{n:010x}") for n in (0, 1, 0xFFFFFFFFFF, 0xFB54D14E68)}
    assert all(1 <= v <= 16_777_215 for v in ids) and len(ids) == 4
    assert span.vni("iacbfb54d14e68") == span.vni("iacbfb54d14e68")


def test_underlay_address_defaults_to_an_ip_target() -> None:
    assert CatalogHost(uri=LAB).underlay_address == "198.19.250.11"
    named = CatalogHost(uri=LAB.replace("198.19.250.11", "h1.example"), ssh="root@198.19.250.21")
    assert named.underlay_address == "198.19.250.21"
    assert CatalogHost(uri=LAB, underlay="198.19.251.5").underlay_address == "198.19.251.5"
    assert CatalogHost(uri=LAB.replace("198.19.250.11", "h1.example")).underlay_address is None
    with pytest.raises(ValueError, match="not an IPv4 address"):
        CatalogHost(uri=LAB, underlay="h1; rm -rf /")


def test_span_members_skip_this_machine_and_need_ssh_and_an_underlay() -> None:
    hosts = {
        "local": CatalogHost(uri="qemu:///system"),
        "h1": CatalogHost(uri=LAB, ssh="root@198.19.250.11"),
        "h2": CatalogHost(uri=LAB),
        "h3": CatalogHost(uri=LAB.replace("198.19.250.11", "h3.example"), ssh="root@h3.example"),
    }
    assert [m.name for m in span.members(["h1", "local", "h1"], hosts)] == ["h1"]
    with pytest.raises(ProviderError, match="host h2 has no ssh target"):
        span.members(["h2"], hosts)
    with pytest.raises(ProviderError, match="host h3 has no underlay address"):
        span.members(["h3"], hosts)
    with pytest.raises(ProviderError, match="unknown host 'h9'"):
        span.members(["h9"], hosts)


def test_destination_xml_points_at_the_target_console() -> None:
    xml = """<domain><devices>
      <disk type='volume'><source pool='iacloud' volume='r.qcow2'/></disk>
      <disk type='volume' device='cdrom'><source pool='iacloud' volume='s.raw'/></disk>
      <serial type='file'><source path='/var/lib/iacloud/stacks/x/console/d.log'/></serial>
      <console type='file'><source path='/var/lib/iacloud/stacks/x/console/d.log'/></console>
    </devices></domain>"""
    out = ET.fromstring(destination_xml(xml, "/var/log/libvirt/qemu/d.console.log"))
    # the disks keep their pools: the target has pools of the same names
    assert {s.get("pool") for s in out.findall("devices/disk/source")} == {"iacloud"}
    assert {s.get("path") for s in out.findall("devices/*/source[@path]")} == {
        "/var/log/libvirt/qemu/d.console.log"
    }
