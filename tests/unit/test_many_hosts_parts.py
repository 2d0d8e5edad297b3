"""The pure parts of the many-hosts work (#16): SSH command words reach the remote shell as
exactly those words, VXLAN ids and members of a spanning network, underlay addresses, and the
destination XML of a live migration."""

from __future__ import annotations

import hashlib
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iacloud.errors import ProviderError
from iacloud.provider import HostDown, ObjectRef, Observed, StackInfo
from iacloud.providers.libvirt import LibvirtProvider
from iacloud.providers.libvirt.host_context import copy_digest, copy_name
from iacloud.providers.libvirt.migration import destination_xml
from iacloud.providers.libvirt.settings import LibvirtSettings
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


class _Offline(LibvirtProvider):
    """The provider's per-host fan-out without libvirt: each host's job runs on that host's
    context; h3 is down."""

    def per_host(self, jobs):  # type: ignore[no-untyped-def]
        out = {}
        for host, job in jobs.items():
            if host == "h3":
                out[host] = HostDown("connection refused")
                continue
            with self.on(host):
                out[host] = job()
        return out


def test_a_read_looks_for_what_is_missing_on_its_host_on_the_others(tmp_path: Path) -> None:
    hosts = {n: CatalogHost(uri=LAB.replace("11", str(10 + i))) for i, n in enumerate(
        ("h1", "h2", "h3"), 1)}  # fmt: skip
    stack = StackInfo("s", "0123456789abcdef", tmp_path, tmp_path, hosts)
    provider = _Offline(stack, LibvirtSettings())
    # where each object really is: `moved` was recorded on h1 by a run cut off mid-move
    world: dict[str | None, set[str]] = {None: {"old"}, "h1": {"kept"}, "h2": {"moved"}}
    asked: list[tuple[str | None, tuple[str, ...]]] = []

    def read(refs):  # type: ignore[no-untyped-def]
        here = provider.here.name
        asked.append((here, tuple(r.address for r in refs)))
        return {
            r.address: Observed(r.id or "", {"host": here}, {})
            for r in refs
            if r.address in world[here]
        }

    refs = [
        ObjectRef("kept", "k", {"host": "h1"}),
        ObjectRef("moved", "m", {"host": "h1"}),
        ObjectRef("gone", "g", {"host": "h2"}),
        ObjectRef("old", "o", {}),
        ObjectRef("far", "f", {"host": "h3"}),
    ]
    out = provider.read_by_host(refs, read)
    assert out["kept"].inputs == {"host": "h1"}
    assert out["moved"].inputs == {"host": "h2"}  # found where the move left it
    assert out["old"].inputs == {"host": None}
    assert "gone" not in out  # on no host: gone
    assert out["far"].unknown and "h3 is down" in out["far"].unknown
    # the first pass asked h1, h2 and the default host (h3 is down); then only the missing
    # ones are looked for, on every host that answers
    assert {h for h, _ in asked[:3]} == {None, "h1", "h2"}
    again = asked[3:]
    assert all(set(addrs) == {"moved", "gone"} for _, addrs in again), asked
    assert {h for h, _ in again} == {None, "h1", "h2"}


def test_a_move_makes_the_targets_default_pool_and_needs_any_other() -> None:
    from types import SimpleNamespace

    from iacloud.providers.libvirt import migration

    made: list[str] = []

    class Pools:
        default = "iacloud"

        def get(self, conn: object, name: str | None) -> str:
            made.append(name or self.default)
            return "default-pool"

        def find(self, conn: object, name: str) -> None:
            return None  # a host that holds nothing of iacloud's yet

    ctx = SimpleNamespace(pools=Pools(), conn=lambda: None, label="h2")
    assert migration._pool(ctx, "iacloud") == "default-pool" and made == ["iacloud"]  # type: ignore[arg-type]
    with pytest.raises(ProviderError, match="pool fast is not on h2"):
        migration._pool(ctx, "fast")  # type: ignore[arg-type]


@given(st.binary(max_size=64), st.sampled_from(["qcow2", "raw"]))
def test_an_image_copys_name_gives_back_its_digest(data: bytes, fmt: str) -> None:
    digest = hashlib.sha256(data).hexdigest()
    assert copy_digest(f"iacloud/{copy_name(digest, fmt)}") == digest[:32]


@pytest.mark.parametrize(
    "volume_id",
    [
        "iacloud/iac-0123abcd-data.qcow2",
        "iacloud/iacsite-copy-xyz.qcow2",
        "iacloud/iacsite-copy-" + "0" * 31 + ".qcow2",
        "iacloud/iacsite-debian.qcow2",
    ],
)
def test_other_volumes_have_no_copy_digest(volume_id: str) -> None:
    assert copy_digest(volume_id) is None
