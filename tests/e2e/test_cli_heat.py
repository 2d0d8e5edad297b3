"""End to end through the installed `iacloud` command on real libvirtd and netlink: the HOT
example examples/heat/two-servers.yaml (a private and an "external" Net + Subnet, a Router with
its RouterInterface and gateway, two SecurityGroups, a Port with a FloatingIP and its
association, two servers from the tiny image, a Volume with its VolumeAttachment, a KeyPair
chosen by a condition), applied, read back, planned again (empty), checked for drift, and
destroyed clean; and examples/heat/group.yaml (a ResourceGroup of servers, each with a volume)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from e2e_cli import ROOT, TINY, iacloud

libvirt = pytest.importorskip("libvirt")

pytestmark = [
    pytest.mark.libvirt,
    pytest.mark.netlink,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not shutil.which("dnsmasq"), reason="needs dnsmasq"),
]

TEMPLATE = ROOT / "examples" / "heat" / "two-servers.yaml"
NET, PUBLIC = "198.18.62", "198.18.63"  # /24s of 198.18.0.0/15 of this test's own
POOL = "iacloud"  # HOT has no provider settings: the provider's default pool
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeatTemplateEndToEndTestKeyOnly0123456789 t@h"


def _pool_exists(conn) -> bool:
    try:
        conn.storagePoolLookupByName(POOL)
    except libvirt.libvirtError:
        return False
    return True


@pytest.fixture
def heat_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if not TINY.exists():
        pytest.skip("no tiny image: make image")
    monkeypatch.setenv("IACLOUD_STATE", str(tmp_path / "state.db"))
    conn = libvirt.open("qemu:///system")
    pool_before = _pool_exists(conn)
    args = [str(TEMPLATE), "-p", f"cidr={NET}.0/24", "-p", f"db_ip={NET}.10"]
    args += ["-p", f"public_cidr={PUBLIC}.0/24", "-p", f"router_ip={PUBLIC}.2"]
    args += ["-p", f"public_ip={PUBLIC}.10", "-p", f"admin_key={KEY}"]
    try:
        yield args
    finally:
        with contextlib.suppress(AssertionError):
            iacloud("destroy", "--auto-approve", *args)
        if not pool_before and _pool_exists(conn):  # leave no pool the test made
            pool = conn.storagePoolLookupByName(POOL)
            if pool.isActive():
                pool.refresh(0)
                if not pool.listAllVolumes(0):
                    pool.destroy()
                    pool.undefine()
            else:
                pool.undefine()
        conn.close()


def test_heat_template_applies_and_destroys_clean(heat_stack: list[str]) -> None:
    args = heat_stack
    iacloud("validate", *args)
    iacloud("apply", "--auto-approve", "-j", "2", *args)
    stack = ["--stack", args[0]]
    shown = json.loads(iacloud("show", "--json", *stack))
    res = shown["resources"]
    assert {"image", "net", "router", "db_port", "web", "db", "data"} <= set(res)
    assert not {"subnet", "router_interface", "data_attachment"} & set(res)
    assert res["admin"]["type"] == "keypair"  # condition key_given: a key was passed
    assert res["web"]["inputs"]["ssh_keys"] == "(sensitive)"  # admin_key is hidden
    assert res["data"]["id"] in res["db"]["inputs"]["volumes"]  # the VolumeAttachment
    assert res["router"]["inputs"]["networks"] == [res["net"]["id"]]  # the RouterInterface
    assert res["router"]["inputs"]["external"]["network"] == res["public"]["id"]
    # the security groups: the port's, and the server's on the NIC it makes
    assert res["db_port"]["inputs"]["security_groups"] == [res["db_sg"]["id"], res["web_sg"]["id"]]
    assert res["web"]["inputs"]["networks"][0]["security_groups"] == [res["web_sg"]["id"]]
    # the FloatingIPAssociation: the floating IP reaches db's port through the router
    assert res["db_public"]["inputs"]["port"] == res["db_port"]["id"]
    assert res["db_public"]["inputs"]["router"] == res["router"]["id"]
    public = json.loads(iacloud("output", "db_public_address", "--json", "--stack", args[0]))
    assert public == f"{PUBLIC}.10"
    db_ip = json.loads(iacloud("output", "db_address", "--json", *stack))
    assert db_ip == f"{NET}.10"
    web_ip = json.loads(iacloud("output", "web_address", "--json", *stack))
    assert isinstance(web_ip, str) and web_ip.startswith(f"{NET}.") and web_ip != db_ip
    # idempotent: the next plan is empty, and nothing drifted
    iacloud("plan", "--detailed-exitcode", *args, code=0)
    iacloud("drift", *args, code=0)

    bridge = res["net"]["id"]
    uuids = [res["web"]["id"], res["db"]["id"]]
    iacloud("destroy", "--auto-approve", *args)
    assert json.loads(iacloud("show", "--json", *stack))["resources"] == {}
    conn = libvirt.open("qemu:///system")
    try:
        left = {d.UUIDString() for d in conn.listAllDomains(0)}
    finally:
        conn.close()
    assert not left & set(uuids)
    assert not Path("/sys/class/net", bridge).exists()


def test_heat_resource_group_with_a_volume_each(tmp_path: Path, monkeypatch) -> None:
    """examples/heat/group.yaml with two members: each server boots with its own volume, the
    random string is made once; then destroyed clean."""
    if not TINY.exists():
        pytest.skip("no tiny image: make image")
    monkeypatch.setenv("IACLOUD_STATE", str(tmp_path / "state.db"))
    args = [str(ROOT / "examples" / "heat" / "group.yaml"), "-p", "count=2"]
    conn = libvirt.open("qemu:///system")
    pool_before = _pool_exists(conn)
    try:
        iacloud("apply", "--auto-approve", "-j", "2", *args)
        res = json.loads(iacloud("show", "--json", "--stack", args[0]))["resources"]
        for i in (0, 1):
            assert res[f"nodes[{i}]"]["inputs"]["volumes"] == [res[f"data[{i}]"]["id"]]
        assert res["token"]["attributes"]["value"] == "(sensitive)"
        addresses = json.loads(iacloud("output", "addresses", "--json", "--stack", args[0]))
        assert len(addresses) == 2 and all(a.startswith("198.18.61.") for a in addresses)
        iacloud("plan", "--detailed-exitcode", *args, code=0)
        uuids = {res["nodes[0]"]["id"], res["nodes[1]"]["id"]}
    finally:
        iacloud("destroy", "--auto-approve", *args)
        left = {d.UUIDString() for d in conn.listAllDomains(0)}
        if not pool_before and _pool_exists(conn):
            pool = conn.storagePoolLookupByName(POOL)
            pool.refresh(0)
            if not pool.listAllVolumes(0):
                pool.destroy()
                pool.undefine()
        conn.close()
    assert not left & uuids


CATALOG_TEMPLATE = """\
heat_template_version: 2021-04-16
parameters:
  size: {type: string, default: m1.small, constraints: [{custom_constraint: nova.flavor}]}
  ext: {type: string, default: public, constraints: [{custom_constraint: neutron.network}]}
resources:
  web:
    type: OS::Nova::Server
    properties:
      flavor: {get_param: size}
      image: tiny
      key_name: alice
      networks: [{network: {get_param: ext}}]
  disk:
    type: OS::Cinder::Volume
    deletion_policy: Retain
    properties: {size: 1, image: tiny}
"""


def test_heat_template_names_the_site_catalog(tmp_path: Path, monkeypatch) -> None:
    """A template naming a flavor, an image, a key pair and an external network of a site
    file, planned through the CLI on the real host: the server gets the flavor's sizes, the
    key and the network's bridge, server and volume share one site image, Retain is a rule;
    a misspelled flavor parameter is refused by its custom constraint, and convert keeps the
    names."""
    if not TINY.exists():
        pytest.skip("no tiny image: make image")
    monkeypatch.setenv("IACLOUD_STATE", str(tmp_path / "state.db"))
    sha = hashlib.sha256(TINY.read_bytes()).hexdigest()
    site = tmp_path / "site.toml"
    site.write_text(
        f'version = 1\n[flavors."m1.small"]\nvcpus = 1\nmemory_mib = 256\n'
        f'[images.tiny]\nsource = "{TINY}"\nformat = "qcow2"\nsha256 = "{sha}"\n'
        f'[keypairs.alice]\npublic_key = "{KEY}"\n'
        '[networks.public]\nbridge = "h2tbrnone"\ncidr = "198.18.64.0/24"\n'
        'gateway = "198.18.64.1"\n'
    )
    template = tmp_path / "cat.yaml"
    template.write_text(CATALOG_TEMPLATE)
    plan = json.loads(iacloud("plan", "--json", "--site", str(site), str(template)))
    changes = {c["address"]: c for c in plan["changes"]}
    assert sorted(changes) == ["disk", "site-image-tiny", "web"]
    assert all(c["action"] == "create" for c in changes.values())
    web = changes["web"]["after"]
    assert (web["flavor"], web["vcpus"], web["memory_mib"]) == ("m1.small", 1, 256)
    assert web["ssh_keys"] == [KEY]
    assert web["networks"][0]["network"] == "h2tbrnone"
    assert changes["disk"]["lifecycle"]["deletion_policy"] == "retain"
    out = iacloud("validate", "--site", str(site), str(template), "-p", "size=m1.smal", code=1)
    assert "is not a flavor of the site catalog" in out and "did you mean 'm1.small'" in out
    text = iacloud("convert", "--site", str(site), str(template))
    assert 'image = "tiny"' in text and 'key_name = "alice"' in text
    assert 'deletion_policy = "retain"' in text
