"""The libvirt provider against a real libvirtd: images, volumes and servers.

Each test gets its own stack id, so every object it makes carries a tag no other test shares;
a finalizer removes whatever still carries that tag (checked through libvirt) even when the
test failed. All volumes live in one throw-away pool under /tmp, removed at the end.
Server tests boot build/images/tiny.qcow2 (built with scripts/build-image.sh when missing)
under QEMU emulation, one or two guests at a time; without the image they are skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

libvirt = pytest.importorskip("libvirt")

from iacloud.errors import ProviderError  # noqa: E402
from iacloud.provider import ObjectRef, StackInfo  # noqa: E402
from iacloud.providers.libvirt import LibvirtProvider, LibvirtSettings, domain_xml  # noqa: E402
from iacloud.providers.libvirt import seed as seed_mod  # noqa: E402
from iacloud.providers.libvirt.storage import GiB  # noqa: E402
from iacloud.providers.libvirt.tags import NS, stack_prefix  # noqa: E402

pytestmark = pytest.mark.libvirt

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "build" / "images" / "tiny.qcow2"
URI = "qemu:///system"


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def conn() -> Iterator[libvirt.virConnect]:
    try:
        c = libvirt.open(URI)
    except libvirt.libvirtError as exc:
        pytest.skip(f"libvirtd not reachable at {URI}: {exc}")
    yield c
    c.close()


@pytest.fixture(scope="session")
def test_pool(conn: libvirt.virConnect) -> Iterator[tuple[str, str]]:
    """A pool of this session only, in a directory QEMU can reach (/tmp is o+x)."""
    name = f"iactest-{uuid.uuid4().hex[:8]}"
    base = Path("/tmp") / name
    base.mkdir(mode=0o755)
    base.chmod(0o755)
    path = base / "pool"
    yield name, str(path)
    with contextlib.suppress(libvirt.libvirtError):
        pool = conn.storagePoolLookupByName(name)
        pool.refresh(0)
        for vol in pool.listAllVolumes(0):
            vol.delete(0)
        if pool.isActive():
            pool.destroy()
        pool.undefine()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_image() -> Path:
    if not TINY.is_file():
        script = ROOT / "scripts" / "build-image.sh"
        if not script.is_file():
            pytest.skip("no tiny image and no scripts/build-image.sh")
        proc = subprocess.run(
            ["bash", str(script), str(TINY)], capture_output=True, text=True, timeout=600
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot build the tiny image: {proc.stderr[-500:]}")
    return TINY


def _objects_of(conn: libvirt.virConnect, pool_name: str, stack_id: str) -> list[str]:
    """Every domain and volume carrying this stack's tag, as libvirt sees them."""
    found = []
    for dom in conn.listAllDomains(0):
        owner = ET.fromstring(dom.XMLDesc(0)).find(f"metadata/{{{NS}}}owner")
        if owner is not None and owner.get("stack_id") == stack_id:
            found.append(f"domain {dom.name()}")
    with contextlib.suppress(libvirt.libvirtError):
        pool = conn.storagePoolLookupByName(pool_name)
        pool.refresh(0)
        prefix = f"iac-{stack_prefix(stack_id)}-"
        found += [
            f"volume {v.name()}" for v in pool.listAllVolumes(0) if v.name().startswith(prefix)
        ]
    return found


def _purge(conn: libvirt.virConnect, pool_name: str, stack_id: str) -> None:
    for dom in conn.listAllDomains(0):
        owner = ET.fromstring(dom.XMLDesc(0)).find(f"metadata/{{{NS}}}owner")
        if owner is not None and owner.get("stack_id") == stack_id:
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                dom.undefine()
    with contextlib.suppress(libvirt.libvirtError):
        pool = conn.storagePoolLookupByName(pool_name)
        pool.refresh(0)
        for vol in pool.listAllVolumes(0):
            if vol.name().startswith(f"iac-{stack_prefix(stack_id)}-"):
                vol.delete(0)


class Env:
    """One test's stack: a provider, its resource types and handy checks."""

    def __init__(self, conn: libvirt.virConnect, pool: tuple[str, str], tmp: Path) -> None:
        self.conn = conn
        self.pool_name, self.pool_path = pool
        self.stack_id = str(uuid.uuid4())
        self.dir = tmp
        self.stack = StackInfo("t", self.stack_id, tmp, tmp / "data")
        self.provider = self.make_provider()

    def make_provider(self, **overrides: object) -> LibvirtProvider:
        settings = {
            "uri": URI,
            "pool": self.pool_name,
            "pool_path": self.pool_path,
            "boot_timeout": 90,
            "shutdown_timeout": 15,
            **overrides,
        }
        return LibvirtProvider(self.stack, LibvirtSettings(**settings))

    @property
    def image(self):
        return self.provider.resource("image")

    @property
    def volume(self):
        return self.provider.resource("volume")

    @property
    def server(self):
        return self.provider.resource("server")

    def leftovers(self) -> list[str]:
        return _objects_of(self.conn, self.pool_name, self.stack_id)

    def lookup_vol(self, vid: str) -> libvirt.virStorageVol:
        pool, name = vid.split("/")
        return self.conn.storagePoolLookupByName(pool).storageVolLookupByName(name)

    def qcow2(self, name: str, size: str = "64M", backing: Path | None = None) -> Path:
        path = self.dir / name
        argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
        if backing is not None:
            argv += ["-b", str(backing), "-F", "qcow2"]
        subprocess.run([*argv, str(path), size], check=True)
        return path


@pytest.fixture
def env(conn: libvirt.virConnect, test_pool: tuple[str, str], tmp_path: Path) -> Iterator[Env]:
    e = Env(conn, test_pool, tmp_path)
    try:
        yield e
    finally:
        e.provider.close()
        left = e.leftovers()
        _purge(conn, e.pool_name, e.stack_id)
        assert not left, f"the test left tagged objects behind: {left}"


@pytest.fixture
def bridge() -> Iterator[str]:
    """An isolated test bridge (no uplink, no forwarding) with a 198.18.0.0/15 address."""
    name = f"iact{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def volume_xml(env: Env, vid: str) -> ET.Element:
    return ET.fromstring(env.lookup_vol(vid).XMLDesc(0))


# ------------------------------------------------------------------ images
def test_image_upload_verifies_sha256(env: Env) -> None:
    src = env.qcow2("small.qcow2")
    digest = sha256_of(src)
    obs = env.image.create(
        "base", env.image.Inputs(source="small.qcow2", format="qcow2", sha256=digest)
    )
    assert obs.attributes["sha256"] == digest
    assert obs.attributes["virtual_size_bytes"] == 64 << 20
    assert obs.inputs == {"format": "qcow2", "pool": None}
    vol = env.lookup_vol(obs.id)
    assert hashlib.sha256(Path(vol.path()).read_bytes()).hexdigest() == digest
    # read by id and by tag, and import, all agree with what create recorded
    by_id = env.image.read([ObjectRef("base", obs.id, {"format": "qcow2", "sha256": digest})])
    by_tag = env.image.read([ObjectRef("base", None, {"format": "qcow2"})])
    assert by_id["base"] == obs
    assert by_tag["base"].id == obs.id
    # import also recovers what a read cannot see: the source and sha256 create was given
    imported = env.image.import_("base", obs.id)
    assert imported.attributes == obs.attributes
    assert imported.inputs == {**obs.inputs, "source": "small.qcow2", "sha256": digest}
    assert any(t.id == obs.id and t.address == "base" for t in env.image.list_tagged())
    env.image.delete("base", obs)
    assert env.image.read([ObjectRef("base", obs.id, {})]) == {}
    env.image.delete("base", obs)  # deleting what is gone succeeds


def test_image_wrong_sha256_leaves_nothing(env: Env) -> None:
    env.qcow2("small.qcow2")
    with pytest.raises(ProviderError, match="sha256 mismatch"):
        env.image.create(
            "base", env.image.Inputs(source="small.qcow2", format="qcow2", sha256="0" * 64)
        )
    assert env.leftovers() == []


def test_image_format_is_never_guessed(env: Env) -> None:
    with pytest.raises(ValidationError):
        env.image.Inputs(source="x.vmdk", format="vmdk")
    with pytest.raises(ValidationError):
        env.image.Inputs(source="x.qcow2")  # format is required
    # a raw file declared qcow2 is refused, not probed
    (env.dir / "raw.img").write_bytes(b"\0" * 65536)
    with pytest.raises(ProviderError, match="not a valid qcow2"):
        env.image.create("a", env.image.Inputs(source="raw.img", format="qcow2"))
    # a qcow2 whose backing file would let QEMU read any host file is refused
    base = env.qcow2("base.qcow2")
    env.qcow2("child.qcow2", backing=base)
    with pytest.raises(ProviderError, match="backing file"):
        env.image.create("b", env.image.Inputs(source="child.qcow2", format="qcow2"))
    # http(s) needs a sha256 (a plan-time check), and odd schemes are refused
    diags = env.image.check(
        "c", env.image.Inputs(source="https://example.com/x", format="raw"), None
    )
    assert diags and diags[0].field == "source"
    diags = env.image.check("c", env.image.Inputs(source="ftp://h/x", format="raw"), None)
    assert diags
    assert env.leftovers() == []


# ------------------------------------------------------------------ volumes
def test_volume_empty_and_overlay(env: Env) -> None:
    src = env.qcow2("small.qcow2")
    img = env.image.create("base", env.image.Inputs(source=str(src), format="qcow2"))
    empty = env.volume.create("data", env.volume.Inputs(size_gib=1, format="raw"))
    assert empty.attributes["capacity_bytes"] == GiB
    assert empty.inputs == {
        "size_gib": 1,
        "image": None,
        "snapshot": None,
        "format": "raw",
        "pool": None,
    }
    assert env.lookup_vol(empty.id).info()[1] == GiB

    over = env.volume.create("disk[0]", env.volume.Inputs(size_gib=1, image=img.id))
    assert over.inputs["image"] == img.id
    store = volume_xml(env, over.id).find("backingStore")
    assert store is not None
    assert store.findtext("path") == img.attributes["path"]
    assert store.find("format").get("type") == "qcow2"
    info = subprocess.run(
        ["qemu-img", "info", "-U", "-f", "qcow2", "--output=json", over.attributes["path"]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert '"backing-filename-format": "qcow2"' in info
    assert env.volume.import_("disk[0]", over.id) == over
    with pytest.raises(ProviderError):  # an overlay must be qcow2
        env.volume.create("bad", env.volume.Inputs(size_gib=1, image=img.id, format="raw"))
    for address, obs in (("disk[0]", over), ("data", empty)):
        env.volume.delete(address, obs)
    env.image.delete("base", img)


def test_volume_grows_in_place_and_never_shrinks(env: Env) -> None:
    obs = env.volume.create("data", env.volume.Inputs(size_gib=1))
    grown = env.volume.update("data", obs, env.volume.Inputs(size_gib=2), frozenset({"size_gib"}))
    assert grown.id == obs.id
    assert env.lookup_vol(obs.id).info()[1] == 2 * GiB
    assert grown.inputs["size_gib"] == 2
    diags = env.volume.check("data", env.volume.Inputs(size_gib=1), grown)
    assert diags and diags[0].field == "size_gib"
    assert env.volume.check("data", env.volume.Inputs(size_gib=3), grown) == []
    env.volume.delete("data", grown)


def test_bulk_read_by_id_and_tag_and_missing(env: Env) -> None:
    made = {
        f"v[{i}]": env.volume.create(f"v[{i}]", env.volume.Inputs(size_gib=1)) for i in range(3)
    }
    refs = [
        ObjectRef("v[0]", made["v[0]"].id, {}),
        ObjectRef("v[1]", None, {"format": "qcow2"}),  # an interrupted create: found by tag
        ObjectRef("v[2]", made["v[2]"].id, {}),
        ObjectRef("v[9]", None, {}),  # never made
    ]
    calls = {"n": 0}
    pool = env.provider.pools.find(env.provider.conn(), None)
    original = pool.handle.listAllVolumes

    def counting(flags: int = 0) -> list:
        calls["n"] += 1
        return original(flags)

    pool.handle.listAllVolumes = counting  # one listing per read, whatever the count
    try:
        found = env.volume.read(refs)
    finally:
        pool.handle.listAllVolumes = original
    assert calls["n"] == 1
    assert set(found) == {"v[0]", "v[1]", "v[2]"}
    tagged = {t.address: t for t in env.volume.list_tagged() if t.stack_id == env.stack_id}
    assert {a: t.id for a, t in tagged.items()} == {a: o.id for a, o in made.items()}
    assert found["v[1]"] == made["v[1]"]
    env.lookup_vol(made["v[2]"].id).delete(0)  # behind iacloud's back
    assert set(env.volume.read(refs)) == {"v[0]", "v[1]"}
    env.volume.delete("v[2]", made["v[2]"])  # already gone: fine
    for address in ("v[0]", "v[1]"):
        env.volume.delete(address, made[address])


# ------------------------------------------------------------------ names and escaping
def test_hostile_names_are_refused_or_carried_verbatim(env: Env) -> None:
    for bad in ("../etc/passwd", "pool/../x", "p/a/b", "p/.hidden", "p/x\0y", "p/"):
        with pytest.raises(ValidationError):
            env.server.Inputs(boot_volume=bad)
    with pytest.raises(ValidationError):
        env.volume.Inputs(size_gib=1, pool="../x")
    with pytest.raises(ValidationError):
        env.server.Inputs(image="p/i.qcow2", networks=[{"bridge": "br0;reboot"}])
    port = "iacb0123456789/52:54:00:AB:cd:ef/198.18.10.5"
    entry = env.server.Inputs(image="p/i.qcow2", networks=[{"port": port}]).networks[0]
    assert (entry.port, entry.ifname, entry.fixed_mac) == (
        port.lower(),
        "iacb0123456789",
        "52:54:00:ab:cd:ef",
    )
    for bad in (
        {"port": "br0;x/52:54:00:ab:cd:ef/198.18.10.5"},  # bridge name
        {"port": "br0/53:54:00:ab:cd:ef/198.18.10.5"},  # multicast MAC
        {"port": "br0/52:54:00:ab:cd:ef/198.18.10.500"},  # not IPv4
        {"port": "br0/52:54:00:ab:cd:ef"},  # two parts
        {"port": "br0/52:54:00:ab:cd:ef/198.18.10.5", "mac": "52:54:00:00:00:01"},
        {"port": "br0/52:54:00:ab:cd:ef/198.18.10.5", "network": "br0"},
    ):
        with pytest.raises(ValidationError):
            env.server.Inputs(image="p/i.qcow2", networks=[bad])
    with pytest.raises(ValidationError, match="same MAC"):
        env.server.Inputs(
            image="p/i.qcow2",
            networks=[{"port": port}, {"bridge": "br1", "mac": "52:54:00:ab:cd:ef"}],
        )
    with pytest.raises(ValidationError):
        env.server.Inputs(image="p/i.qcow2", hostname="x;y")
    with pytest.raises(ValidationError):
        env.server.Inputs(image="p/i.qcow2", ssh_keys=["ssh-ed25519 AAA\nrm -rf /"])
    for address in ("web<1>", "a'b", "x;y", "../up", "a/b"):
        with pytest.raises(ProviderError):
            env.volume.create(address, env.volume.Inputs(size_gib=1))
    with pytest.raises(ValidationError):
        LibvirtSettings(pool="a/b")
    with pytest.raises(ValidationError):
        LibvirtSettings(pool_path="relative/dir")
    # user data with XML and shell metacharacters reaches the seed byte for byte
    hostile = "#!/bin/sh\necho '<a>&amp;</a>' \"$(id)\"; `x` ]]> \\ \u00e9\n"
    iso = seed_mod.build_seed("iid-1", "web-0", hostile, ['ssh-ed25519 AAAA "q" k'], [])
    import pycdlib

    reader = pycdlib.PyCdlib()
    reader.open_fp(io.BytesIO(iso))
    out = io.BytesIO()
    reader.get_file_from_iso_fp(out, rr_path="/user-data")
    assert out.getvalue() == hostile.encode()
    meta = io.BytesIO()
    reader.get_file_from_iso_fp(meta, rr_path="/meta-data")
    assert 'public-keys:\n  - "ssh-ed25519 AAAA \\"q\\" k"' in meta.getvalue().decode()
    assert reader.pvd.volume_identifier.rstrip(b" ") == b"cidata"
    reader.close()
    # and metadata text is escaped by ElementTree, never interpolated
    from iacloud.providers.libvirt.tags import OwnerTag

    el = domain_xml.metadata_element(
        OwnerTag("t", "id", "web[0]"),
        domain_xml.ServerRecord("h", "p/a'<b>.qcow2", None, "p/r", "p/s"),
    )
    back = ET.fromstring(domain_xml.to_string(el))
    assert back.find(f"{{{NS}}}server").get("image") == "p/a'<b>.qcow2"
    assert env.leftovers() == []


# ------------------------------------------------------------------ servers
def _dom(env: Env, uuid_: str) -> libvirt.virDomain:
    return env.conn.lookupByUUIDString(uuid_)


def test_server_lifecycle(env: Env, tiny_image: Path, bridge: str, request) -> None:
    img = env.image.create("base", env.image.Inputs(source=str(tiny_image), format="qcow2"))
    data = env.volume.create("data", env.volume.Inputs(size_gib=1))
    # the bridge is labelled the way netlink networks label theirs
    Path(f"/sys/class/net/{bridge}/ifalias").write_text(f"iacloud:{env.stack_id}:lan\n")
    subprocess.run(["ip", "addr", "add", "198.18.99.1/24", "dev", bridge], check=True)
    dnsmasq = subprocess.Popen(
        ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", f"--interface={bridge}",
         "--bind-interfaces", "--dhcp-range=198.18.99.10,198.18.99.20,1h", "--no-resolv",
         "--no-hosts", f"--dhcp-leasefile={env.dir / 'leases'}", f"--pid-file={env.dir / 'pid'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    request.addfinalizer(lambda: (dnsmasq.terminate(), dnsmasq.wait(5)))
    user_data = "#!/bin/sh\necho 'user-data <ran> & said; $HOME'\n"
    inputs = env.server.Inputs(
        image=img.id,
        networks=[{"network": bridge}],
        volumes=[data.id],
        user_data=user_data,
    )
    t0 = time.monotonic()
    obs = env.server.create("web[0]", inputs)
    elapsed = time.monotonic() - t0
    print(f"\ncreate (define + start + boot to IACLOUD-READY): {elapsed:.2f}s")
    log = Path(obs.attributes["console_log"]).read_text()
    assert "user-data <ran> & said; $HOME" in log
    assert obs.attributes["hostname"] == "web-0"
    assert obs.attributes["power_state"] == "running"
    assert list(obs.attributes["addresses"]) == ["lan"]
    assert obs.attributes["addresses"]["lan"][0].startswith("198.18.99.")
    mac = obs.attributes["macs"][0]
    assert mac.startswith("52:54:00:")
    assert obs.inputs == {
        "image": img.id,
        "boot_volume": None,
        "vcpus": 1,
        "memory_mib": 256,
        "networks": [{"network": bridge, "bridge": None, "port": None, "mac": None}],
        "volumes": [data.id],
        "power_state": "running",
        "hostname": "web-0",
        "machine": "pc",
    }
    # the observed inputs are the create inputs minus what cannot be read back (and the
    # computed defaults the provider filled in)
    dumped = inputs.model_dump(mode="json")
    computed = ("hostname", "machine")
    assert {k: v for k, v in dumped.items() if k in obs.inputs and k not in computed} == {
        k: v for k, v in obs.inputs.items() if k not in computed
    }
    xml = _dom(env, obs.id).XMLDesc(0)
    assert "<domain type='qemu'" in xml or '<domain type="qemu"' in xml
    owner = ET.fromstring(xml).find(f"metadata/{{{NS}}}owner")
    assert (owner.get("stack"), owner.get("stack_id"), owner.get("address")) == (
        "t", env.stack_id, "web[0]",
    )  # fmt: skip
    # import also reads user_data and ssh_keys back from the seed, which a read leaves out
    imported = env.server.import_("web[0]", obs.id)
    assert imported.attributes == obs.attributes
    assert imported.inputs == {**obs.inputs, "user_data": user_data, "ssh_keys": []}
    assert env.server.read([ObjectRef("web[0]", None, {})])["web[0]"].id == obs.id
    tagged = [t for t in env.server.list_tagged() if t.stack_id == env.stack_id]
    assert {t.address for t in tagged} == {"web[0]"}

    # vcpus: a graceful restart, reported and observed
    before = _dom(env, obs.id).ID()
    t0 = time.monotonic()
    new = env.server.update(
        "web[0]", obs, inputs.model_copy(update={"vcpus": 2}), frozenset({"vcpus"})
    )
    print(f"vcpus change (shutdown + redefine + start + ready): {time.monotonic() - t0:.2f}s")
    assert new.inputs["vcpus"] == 2
    assert _dom(env, obs.id).ID() != before  # it was restarted
    assert new.attributes["power_state"] == "running"
    assert new.attributes["macs"] == [mac]  # a restart keeps the NIC

    # power_state: stop and start again
    off = env.server.update(
        "web[0]", new, inputs.model_copy(update={"vcpus": 2, "power_state": "shutoff"}),
        frozenset({"power_state"}),
    )  # fmt: skip
    assert off.inputs["power_state"] == "shutoff"
    assert not _dom(env, obs.id).isActive()

    env.server.delete("web[0]", off)
    assert env.server.read([ObjectRef("web[0]", obs.id, {})]) == {}
    env.server.delete("web[0]", off)  # already gone: fine
    assert [x for x in env.leftovers() if "root" in x or "seed" in x or "domain" in x] == []
    env.volume.delete("data", data)
    env.image.delete("base", img)


def test_hot_plug_volumes_and_nics_and_grow_without_restart(
    env: Env, tiny_image: Path, bridge: str
) -> None:
    img = env.image.create("base", env.image.Inputs(source=str(tiny_image), format="qcow2"))
    data = env.volume.create("data", env.volume.Inputs(size_gib=1))
    inputs = env.server.Inputs(image=img.id)
    obs = env.server.create("web[0]", inputs)
    dom = _dom(env, obs.id)
    domid = dom.ID()

    attached = env.server.update(
        "web[0]", obs, inputs.model_copy(update={"volumes": [data.id]}), frozenset({"volumes"})
    )
    assert attached.inputs["volumes"] == [data.id]
    assert dom.ID() == domid and dom.isActive()  # no restart
    live = domain_xml.parse(dom.XMLDesc(0))
    assert [d.id for d in live.disks if d.target == "vdb"] == [data.id]
    inactive = domain_xml.parse(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert data.id in [d.id for d in inactive.disks]  # and it survives a restart

    # growing a volume a running guest uses goes through QEMU (blockResize)
    grown = env.volume.update("data", data, env.volume.Inputs(size_gib=2), frozenset({"size_gib"}))
    assert grown.attributes["capacity_bytes"] == 2 * GiB
    assert dom.ID() == domid

    detached = env.server.update("web[0]", attached, inputs, frozenset({"volumes"}))
    assert detached.inputs["volumes"] == []
    assert dom.ID() == domid and dom.isActive()
    assert data.id not in [d.id for d in domain_xml.parse(dom.XMLDesc(0)).disks]

    # a NIC is hot-plugged too, with a stable derived MAC, and unplugged again
    nets = [{"bridge": bridge}]
    plugged = env.server.update(
        "web[0]", detached, env.server.Inputs(image=img.id, networks=nets), frozenset({"networks"})
    )
    assert plugged.inputs["networks"] == [
        {"network": None, "bridge": bridge, "port": None, "mac": None}
    ]
    assert dom.ID() == domid
    (mac,) = plugged.attributes["macs"]
    assert [n.mac for n in domain_xml.parse(dom.XMLDesc(0)).nics] == [mac]
    assert plugged.attributes["addresses"] == {bridge: []}  # no label, no DHCP: bridge name
    detached = env.server.update("web[0]", plugged, inputs, frozenset({"networks"}))
    assert detached.inputs["networks"] == [] and detached.attributes["macs"] == []
    assert dom.ID() == domid

    env.server.delete("web[0]", detached)
    env.volume.delete("data", grown)
    env.image.delete("base", img)


def test_out_of_band_undefine_and_failed_creates(env: Env, tiny_image: Path) -> None:
    img = env.image.create("base", env.image.Inputs(source=str(tiny_image), format="qcow2"))
    # a stopped server: defined, never booted
    t0 = time.monotonic()
    obs = env.server.create("db", env.server.Inputs(image=img.id, power_state="shutoff"))
    print(f"\ndefine (root overlay + seed + defineXML): {time.monotonic() - t0:.3f}s")
    assert obs.inputs["power_state"] == "shutoff"
    _dom(env, obs.id).undefine()  # behind iacloud's back
    assert env.server.read([ObjectRef("db", obs.id, {})]) == {}
    assert env.server.read([ObjectRef("db", None, {})]) == {}
    env.server.delete("db", obs)  # the domain is gone; its root and seed are removed too
    assert env.leftovers() == [f"volume {img.id.split('/')[1]}"]

    # a missing bridge fails the create before anything is made
    with pytest.raises(ProviderError, match="does not exist"):
        env.server.create("x", env.server.Inputs(image=img.id, networks=[{"bridge": "nosuchbr0"}]))
    # a guest that never becomes ready: the create fails and removes all it made
    blank = env.image.create(
        "blank", env.image.Inputs(source=str(env.qcow2("b.qcow2")), format="qcow2")
    )
    impatient = env.make_provider(boot_timeout=3)
    try:
        with pytest.raises(ProviderError, match="IACLOUD-READY"):
            impatient.resource("server").create("y", env.server.Inputs(image=blank.id))
    finally:
        impatient.close()
    assert sorted(env.leftovers()) == sorted(
        f"volume {i.split('/')[1]}" for i in (img.id, blank.id)
    )
    env.image.delete("blank", blank)
    env.image.delete("base", img)


def test_virt_type_auto_is_probed_once_and_cached(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from iacloud.providers.libvirt import virt_type

    cache = tmp_path / "virt-type"
    monkeypatch.setattr(virt_type, "HOST_SETUP_VERDICT", tmp_path / "none")  # really probe
    t0 = time.monotonic()
    first = virt_type.resolve(env.provider.conn(), "qemu:///system-test", "auto", str(cache))
    took = time.monotonic() - t0
    assert first in ("kvm", "qemu")
    virt_type._memo.clear()
    t0 = time.monotonic()
    assert (
        virt_type.resolve(env.provider.conn(), "qemu:///system-test", "auto", str(cache)) == first
    )
    assert time.monotonic() - t0 < 1.0
    print(f"\nvirt_type auto: {first} (first probe {took:.2f}s)")
    assert virt_type.resolve(env.provider.conn(), URI, "qemu", str(cache)) == "qemu"


# ------------------------------------------------------------------ one listing per run
@pytest.fixture
def other_pools(conn: libvirt.virConnect, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Makes pools of "another stack", each with one volume; all removed at the end."""
    made: list[str] = []

    def make() -> str:
        name = f"iactest-other-{uuid.uuid4().hex[:8]}"
        path = tmp_path / name
        path.mkdir(mode=0o755)
        xml = f"<pool type='dir'><name>{name}</name><target><path>{path}</path></target></pool>"
        pool = conn.storagePoolDefineXML(xml, 0)
        made.append(name)
        pool.create(0)
        pool.createXML(
            "<volume><name>other.raw</name><capacity>1048576</capacity>"
            "<target><format type='raw'/></target></volume>",
            0,
        )
        return name

    yield make
    for name in made:
        with contextlib.suppress(libvirt.libvirtError):
            pool = conn.storagePoolLookupByName(name)
            with contextlib.suppress(libvirt.libvirtError):
                if not pool.isActive():
                    pool.create(0)
                for vol in pool.listAllVolumes(0):
                    vol.delete(0)
                pool.destroy()
            pool.undefine()


def _count_calls(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts libvirt calls: per call name, and per object for the per-object calls."""
    calls: Counter = Counter()
    wrapped = {
        libvirt.virConnect: ("listAllDomains", "getAllDomainStats", "listAllStoragePools"),
        libvirt.virDomain: ("XMLDesc",),
        libvirt.virStoragePool: ("refresh", "listAllVolumes"),
    }
    for cls, names in wrapped.items():
        for name in names:
            real = getattr(cls, name)

            def counting(self, *args, _real=real, _name=name, **kwargs):
                if isinstance(self, libvirt.virConnect):
                    calls[_name] += 1
                else:
                    calls[_name, self.name()] += 1
                return _real(self, *args, **kwargs)

            monkeypatch.setattr(cls, name, counting)
    return calls


def test_a_run_lists_each_kind_of_host_data_once(
    env: Env, monkeypatch: pytest.MonkeyPatch, other_pools: Callable[[], str]
) -> None:
    """What `iacloud drift` asks of one provider (a bulk read per type, then every type's
    tagged objects) lists the domains once, reads each domain's XML once, lists each pool's
    volumes once, and refreshes only the stack's pool; another stack's pool is listed, never
    refreshed. A change drops the listings: reads after it see it."""
    img = env.image.create(
        "base", env.image.Inputs(source=str(env.qcow2("b.qcow2")), format="qcow2")
    )
    vol = env.volume.create("data", env.volume.Inputs(size_gib=1))
    srv = env.server.create("db", env.server.Inputs(image=img.id, power_state="shutoff"))
    other = other_pools()
    run = env.make_provider()  # a new run
    calls = _count_calls(monkeypatch)
    try:
        image, volume, server = (run.resource(t) for t in ("image", "volume", "server"))
        assert image.read([ObjectRef("base", img.id, {"format": "qcow2"})]) == {"base": img}
        assert volume.read([ObjectRef("data", vol.id, {})]) == {"data": vol}
        assert server.read([ObjectRef("db", srv.id, {})]) == {"db": srv}
        tagged = image.list_tagged() + volume.list_tagged() + server.list_tagged()
        ids = {t.id for t in tagged}
        assert {img.id, vol.id, srv.id, f"{other}/other.raw"} <= ids
        assert calls["listAllDomains"] == calls["getAllDomainStats"] == 1
        assert calls["listAllStoragePools"] == 1
        per_object = {k: n for k, n in calls.items() if isinstance(k, tuple)}
        assert all(n == 1 for n in per_object.values()), per_object
        assert ("XMLDesc", env.conn.lookupByUUIDString(srv.id).name()) in per_object
        assert ("listAllVolumes", other) in per_object
        assert {k[1] for k in per_object if k[0] == "refresh"} == {env.pool_name}

        # a change (here, in the same run) drops what was listed
        vol2 = volume.create("more", env.volume.Inputs(size_gib=1))
        assert vol2.id in {t.id for t in volume.list_tagged()}
        assert volume.read([ObjectRef("more", vol2.id, {})]) == {"more": vol2}
        volume.delete("more", vol2)
        assert vol2.id not in {t.id for t in volume.list_tagged()}
        assert volume.read([ObjectRef("more", vol2.id, {})]) == {}
        server.delete("db", srv)
        assert srv.id not in {t.id for t in server.list_tagged()}
        assert server.read([ObjectRef("db", srv.id, {})]) == {}
    finally:
        run.close()
    env.volume.delete("data", vol)
    env.image.delete("base", img)


def test_pools_and_domains_removed_while_listed_are_skipped(
    env: Env, monkeypatch: pytest.MonkeyPatch, other_pools: Callable[[], str]
) -> None:
    """Another stack's pool stopped, or stopped and undefined, between the pool listing and
    the listing of its volumes, and a domain undefined after the domain listing, are skipped
    by the orphan search (they no longer exist); a volume whose pool vanished reads missing."""
    vol = env.volume.create("data", env.volume.Inputs(size_gib=1))
    stopped, undefined = other_pools(), other_pools()
    xml = (
        f"<domain type='qemu'><name>iactest-gone-{uuid.uuid4().hex[:8]}</name>"
        "<memory unit='MiB'>32</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64'>hvm</type></os></domain>"
    )
    gone_domain = env.conn.defineXML(xml)
    gone_uuid = gone_domain.UUIDString()
    listings = env.provider.listings
    real_pools, real_domains = listings.pools, listings.domains
    removed: list[str] = []

    def pools_then_removed(conn: libvirt.virConnect) -> list:
        found = real_pools(conn)
        if not removed:
            assert {stopped, undefined} <= {p.name for p in found}
            env.conn.storagePoolLookupByName(stopped).destroy()
            pool = env.conn.storagePoolLookupByName(undefined)
            pool.destroy()
            pool.undefine()
            removed.append("pools")
        return found

    def domains_then_undefined(conn: libvirt.virConnect) -> list:
        found = real_domains(conn)
        if gone_uuid in {d.UUIDString() for d in found}:
            with contextlib.suppress(libvirt.libvirtError):
                gone_domain.undefine()
        return found

    monkeypatch.setattr(listings, "pools", pools_then_removed)
    monkeypatch.setattr(listings, "domains", domains_then_undefined)
    try:
        tagged = env.image.list_tagged() + env.volume.list_tagged() + env.server.list_tagged()
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            gone_domain.undefine()
    ids = {t.id for t in tagged}
    assert vol.id in ids
    assert removed and not {f"{stopped}/other.raw", f"{undefined}/other.raw"} & ids
    assert gone_uuid not in ids

    # the stack's own pool removed between two runs' listings: its volume reads missing
    mine = other_pools()
    in_mine = env.volume.create("elsewhere", env.volume.Inputs(size_gib=1, pool=mine))
    ref = ObjectRef("elsewhere", in_mine.id, {"pool": mine})
    assert env.volume.read([ref]) == {"elsewhere": in_mine}  # the pool's handle is kept
    pool = env.conn.storagePoolLookupByName(mine)
    pool.destroy()
    listings.clear()
    assert env.volume.read([ref]) == {}  # stopped
    pool.undefine()
    listings.clear()
    assert env.volume.read([ref]) == {}  # undefined
    env.volume.delete("data", vol)
