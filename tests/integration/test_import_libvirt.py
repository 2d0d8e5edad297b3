"""Import parity on a real libvirtd: an image, a volume and a server applied through the engine,
forgotten (as `iacloud state rm` does) and imported by id are recorded exactly as their create
recorded them (inputs, attributes, what is sensitive), and the next plan, refreshed, is empty.
A wrong id is a clean error that changes nothing.

Servers are created with power_state = "shutoff", so nothing boots: the image is an empty
qcow2 made here and the tests take seconds. Each test has a pool and a bridge of its own and
removes every domain and volume it made, also when it fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from iacloud import engine  # noqa: E402
from iacloud.errors import IacloudError  # noqa: E402
from iacloud.planner import PlanOptions  # noqa: E402
from iacloud.providers.libvirt.tags import NS, stack_prefix  # noqa: E402
from iacloud.state.model import ResourceState  # noqa: E402

pytestmark = pytest.mark.libvirt

URI = "qemu:///system"
IACLOUD = Path(sys.executable).parent / "iacloud"
ADMIN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHiddenAdminKeyForImportTests admin@lab"
OTHER_KEY = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCplain other@lab"
USER_DATA = "#!/bin/sh\necho 'imported <&> $HOME'\n"
FIXED_MAC = "52:54:00:aa:bb:01"


@dataclass
class Lab:
    dir: Path
    tag: str
    pool: str
    pool_path: Path
    bridge: str
    image: Path
    digest: str

    @property
    def name(self) -> str:
        return f"imp-{self.tag}"

    def write(self, body: str) -> Path:
        path = self.dir / "stack.toml"
        header = f'version = 1\nname = "{self.name}"\n'
        provider = (
            f'\n[provider.libvirt]\nuri = "{URI}"\npool = "{self.pool}"\n'
            f'pool_path = "{self.pool_path}"\nvirt_type = "qemu"\n'
        )
        path.write_text(header + body + provider)
        return path


def _purge(conn: libvirt.virConnect, lab: Lab) -> list[str]:
    """Remove every domain and volume of the lab; return what was still there."""
    left = []
    for dom in conn.listAllDomains(0):
        if dom.name().startswith(f"{lab.name}-"):
            left.append(f"domain {dom.name()}")
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    with contextlib.suppress(libvirt.libvirtError):
        pool = conn.storagePoolLookupByName(lab.pool)
        if pool.isActive():
            pool.refresh(0)
            for vol in pool.listAllVolumes(0):
                left.append(f"volume {vol.name()}")
                with contextlib.suppress(libvirt.libvirtError):
                    vol.delete(0)
            pool.destroy()
        pool.undefine()
    return left


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    try:
        conn = libvirt.open(URI)
    except libvirt.libvirtError as exc:
        pytest.skip(f"libvirtd not reachable at {URI}: {exc}")
    tag = uuid.uuid4().hex[:8]
    base = Path("/tmp") / f"iacimp-{tag}"  # /tmp is reachable by QEMU, unlike tmp_path
    base.mkdir(mode=0o755)
    bridge = f"iaci{tag}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    image = tmp_path / "empty.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    the_lab = Lab(
        tmp_path, tag, f"iacimp-{tag}", base / "pool", bridge, image,
        hashlib.sha256(image.read_bytes()).hexdigest(),
    )  # fmt: skip
    try:
        yield the_lab
    finally:
        stack = tmp_path / "stack.toml"
        destroyed = True
        if stack.is_file():
            try:  # destroy as a user would, then check through libvirt that nothing is left
                ws = engine.Workspace(stack)
                plan, _ = engine.destroy_plan(ws, the_lab.name)
                destroyed = engine.apply(ws, plan, command="destroy").ok
                ws.close()
            except Exception:
                destroyed = False
        left = _purge(conn, the_lab)
        conn.close()
        subprocess.run(["ip", "link", "del", bridge], check=False)
        shutil.rmtree(base, ignore_errors=True)
        assert destroyed and not left, left


def apply_stack(path: Path) -> engine.Workspace:
    ws = engine.Workspace(path)
    plan, _ = engine.make_plan(ws, ws.load(), PlanOptions())
    result = engine.apply(ws, plan)
    assert result.ok, [(o.step.change.address, o.error) for o in result.failed]
    return ws


def assert_same(created: ResourceState, imported: ResourceState) -> None:
    assert imported.id == created.id
    assert imported.inputs == created.inputs
    assert imported.attributes == created.attributes
    assert imported.sensitive_inputs == created.sensitive_inputs
    assert imported.sensitive_attributes == created.sensitive_attributes
    assert (imported.type, imported.provider, imported.dependencies) == (
        created.type, created.provider, created.dependencies,
    )  # fmt: skip
    assert imported.status == "IMPORT_COMPLETE"


def forget_and_import(ws: engine.Workspace, address: str) -> tuple[ResourceState, ResourceState]:
    """`state rm` then `import` by id; the recorded state before, and after (as read back)."""
    config = ws.load()
    created = ws.backend.snapshot(config.name).resources[address]
    engine.state_surgery(ws, config.name, "state rm", {address: None})
    assert address not in ws.backend.snapshot(config.name).resources
    engine.import_resource(ws, config, address, created.id)
    return created, ws.backend.snapshot(config.name).resources[address]


def assert_plan_empty(ws: engine.Workspace) -> None:
    plan, _ = engine.make_plan(ws, ws.load(), PlanOptions(refresh=True))
    assert plan.refreshed
    assert not plan.drift, plan.drift
    assert not plan.has_changes, [(c.address, c.action, c.fields) for c in plan.actionable()]


IMAGE = """
[resources.base]
type = "image"
source = "empty.qcow2"
format = "qcow2"
sha256 = "{digest}"
"""


def test_import_image(lab: Lab) -> None:
    # the sha256 spelled in capitals: import must give back the inputs as written
    ws = apply_stack(lab.write(IMAGE.format(digest=lab.digest.upper())))
    created, imported = forget_and_import(ws, "base")
    assert created.inputs == {
        "source": "empty.qcow2", "format": "qcow2", "sha256": lab.digest.upper(), "pool": None,
    }  # fmt: skip
    assert_same(created, imported)
    assert imported.attributes["sha256"] == lab.digest
    assert_plan_empty(ws)


def test_import_image_without_record_reports_its_own_bytes(lab: Lab) -> None:
    """An image whose create record is gone (made elsewhere, say): the source is unknown, so
    the volume's own file is reported with the bytes' hash, and the plan replaces it."""
    ws = apply_stack(lab.write(IMAGE.format(digest=lab.digest)))
    created = ws.backend.snapshot(lab.name).resources["base"]
    records = Path(os.environ["IACLOUD_DATA_DIR"]) / "stacks"
    for record in records.glob("*/images/*.inputs.json"):
        record.unlink()
    engine.state_surgery(ws, lab.name, "state rm", {"base": None})
    imported = engine.import_resource(ws, ws.load(), "base", created.id)
    path = created.attributes["path"]
    assert imported.inputs == {
        "source": Path(path).as_uri(), "format": "qcow2", "sha256": lab.digest, "pool": None,
    }  # fmt: skip
    assert imported.attributes == created.attributes
    plan, _ = engine.make_plan(ws, ws.load(), PlanOptions())
    (change,) = plan.actionable()
    assert change.action.is_replace and [f.field for f in change.fields] == ["source"]


VOLUMES = (
    IMAGE
    + """
[resources.data]
type = "volume"
size_gib = 1
format = "raw"

[resources.disk]
type = "volume"
size_gib = 2
image = {{ get_resource = "base" }}
pool = "{pool}"
"""
)


def test_import_volume(lab: Lab) -> None:
    # `disk` names the provider's pool explicitly: import must not turn that into "default"
    ws = apply_stack(lab.write(VOLUMES.format(digest=lab.digest, pool=lab.pool)))
    for address in ("data", "disk"):
        created, imported = forget_and_import(ws, address)
        assert_same(created, imported)
    assert imported.inputs == {
        "size_gib": 2,
        "image": ws.backend.snapshot(lab.name).resources["base"].id,
        "snapshot": None,
        "format": "qcow2",
        "pool": lab.pool,
        "host": None,  # on the default host
    }
    assert_plan_empty(ws)


SERVERS = (
    VOLUMES
    + """
[parameters.admin_key]
type = "string"
hidden = true
default = "{admin_key}"

[resources.vm]
type = "server"
image = {{ get_resource = "base" }}
vcpus = 1
memory_mib = 64
power_state = "shutoff"
networks = [{{ bridge = "{bridge}", mac = "{mac}" }}, {{ network = "{bridge}" }}]
volumes = [{{ get_resource = "data" }}]
user_data = {user_data}
ssh_keys = [{{ get_param = "admin_key" }}, "{other_key}"]

[resources.vm2]
type = "server"
boot_volume = {{ get_resource = "disk" }}
memory_mib = 64
power_state = "shutoff"
hostname = "second.lab"
user_data = ""

[resources.vm3]
type = "server"
image = {{ get_resource = "base" }}
memory_mib = 64
power_state = "shutoff"
ssh_keys = ["{other_key}"]
"""
)


def write_servers(lab: Lab) -> Path:
    values = {
        "digest": lab.digest,
        "pool": lab.pool,
        "admin_key": ADMIN_KEY,
        "bridge": lab.bridge,
        "mac": FIXED_MAC,
        "user_data": json.dumps(USER_DATA),
        "other_key": OTHER_KEY,
    }
    return lab.write(SERVERS.format(**values))


def test_import_server(lab: Lab) -> None:
    stack = write_servers(lab)
    ws = apply_stack(stack)
    created, imported = forget_and_import(ws, "vm")
    assert created.inputs["user_data"] == USER_DATA
    assert created.inputs["ssh_keys"] == [ADMIN_KEY, OTHER_KEY]
    assert created.inputs["hostname"] == "vm"
    assert [n["mac"] for n in created.inputs["networks"]] == [FIXED_MAC, None]
    assert "ssh_keys" in created.sensitive_inputs  # it holds a hidden parameter
    assert_same(created, imported)
    # vm2: a boot volume, an explicit host name and an empty (but given) user_data
    created, imported = forget_and_import(ws, "vm2")
    assert (created.inputs["user_data"], created.inputs["ssh_keys"]) == ("", [])
    assert_same(created, imported)
    # vm3: ssh_keys and no user_data (the seed's user-data is then a generated cloud-config)
    created, imported = forget_and_import(ws, "vm3")
    assert (created.inputs["user_data"], created.inputs["ssh_keys"]) == (None, [OTHER_KEY])
    assert_same(created, imported)
    assert_plan_empty(ws)
    # what import recorded is shown like anything else: the hidden key never
    shown = subprocess.run(
        [str(IACLOUD), "show", "--json", "--stack", str(stack)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "vm2" in shown.stdout and ADMIN_KEY not in shown.stdout + shown.stderr


def test_wrong_ids_are_clean_errors_and_change_nothing(lab: Lab) -> None:
    stack = write_servers(lab)
    ws = apply_stack(stack)
    config = ws.load()
    snap = ws.backend.snapshot(lab.name)
    ids = {a: rs.id for a, rs in snap.resources.items()}
    engine.state_surgery(ws, lab.name, "state rm", {a: None for a in ids})
    before = ws.backend.snapshot(lab.name)
    prefix = f"iac-{stack_prefix(snap.stack_id)}"
    root = f"{lab.pool}/{prefix}-vm.root.qcow2"
    wrong = [
        ("base", f"{lab.pool}/nothing.qcow2", "no image volume"),
        ("base", "no-such-pool/x.qcow2", "no image volume"),
        ("base", "a/b/c", "invalid image id"),
        ("base", "../etc/passwd", "invalid"),
        ("base", ids["data"], "not an image"),
        ("data", ids["base"], "not a volume"),
        ("data", root, "not a volume"),
        ("vm", str(uuid.uuid4()), "no domain"),
        ("vm", ids["data"], "no domain"),
    ]
    for address, bad, message in wrong:
        with pytest.raises(IacloudError, match=message):
            engine.import_resource(ws, config, address, bad)
    after = ws.backend.snapshot(lab.name)
    assert (after.serial, after.resources) == (before.serial, {})
    # through the CLI: one line saying what is wrong, exit 1, no traceback, no state written
    proc = subprocess.run(
        [str(IACLOUD), "import", "vm", str(uuid.uuid4()), "--stack", str(stack)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no domain" in proc.stderr and "Traceback" not in proc.stdout + proc.stderr
    assert ws.backend.snapshot(lab.name).serial == before.serial
    # a server whose seed is gone cannot tell its user_data and ssh_keys: an error, no guess
    conn = libvirt.open(URI)
    try:
        pool = conn.storagePoolLookupByName(lab.pool)
        pool.storageVolLookupByName(f"{prefix}-vm3.seed.raw").delete(0)
        with pytest.raises(IacloudError, match=r"NoCloud seed .*vm3.seed.raw no longer exists"):
            engine.import_resource(ws, config, "vm3", ids["vm3"])
        assert ws.backend.snapshot(lab.name).serial == before.serial
        conn.lookupByUUIDString(ids.pop("vm3")).undefine()  # what destroy would have removed
        pool.storageVolLookupByName(f"{prefix}-vm3.root.qcow2").delete(0)
    finally:
        conn.close()
    # the right ids still import, so the fixture's destroy finds everything
    for address, id in ids.items():
        engine.import_resource(ws, config, address, id)
    plan, _ = engine.make_plan(ws, ws.load(), PlanOptions())
    assert [(c.address, c.action.value) for c in plan.actionable()] == [("vm3", "create")]


def test_import_server_defined_before_metadata_said_whether_user_data_was_given(
    lab: Lab,
) -> None:
    """Older domains lack the user_data flag: import tells from the seed alone. A text and
    "no user_data, only keys" come back right; an empty user_data cannot be told from none."""
    ws = apply_stack(write_servers(lab))
    conn = libvirt.open(URI)
    try:
        for address in ("vm", "vm2", "vm3"):
            dom = conn.lookupByUUIDString(ws.backend.snapshot(lab.name).resources[address].id)
            meta = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS)
            assert re.search(r' user_data="(true|false)"', meta)
            old = re.sub(r' user_data="(true|false)"', "", meta)
            dom.setMetadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT, old, "iacloud", NS,
                libvirt.VIR_DOMAIN_AFFECT_CONFIG,
            )  # fmt: skip
    finally:
        conn.close()
    for address in ("vm", "vm3"):
        created, imported = forget_and_import(ws, address)
        assert_same(created, imported)
    created, imported = forget_and_import(ws, "vm2")
    assert (created.inputs["user_data"], imported.inputs["user_data"]) == ("", None)
