"""Names of the site catalog in HOT templates: a server's flavor, image, key_name and
networks, a volume's image, and the catalog's custom constraints, each resolved the way a TOML
stack resolves them (table-driven), and every misuse a clear error."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from iacloud.errors import UserError
from iacloud.loading import load_stack
from iacloud.loading.catalog_refs import site_image_name
from iacloud.loading.site_file import read_site
from iacloud.provider import Registry

SHA = "72e8b4fef20d4b86b132e81d4c7c30724c878a8000dc002bc51bc2088c93006c"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKq2b2Ym9nVv0b3Vb2Jvb2Jvb2Jvb2Jvb2Jvb2Jvb2Jv alice@lap"
SITE = f"""
version = 1
[flavors."m1.small"]
vcpus = 1
memory_mib = 2048
root_gib = 20
[flavors."m1.medium"]
vcpus = 2
memory_mib = 4096
[images.debian-12]
source = "debian-12.qcow2"
format = "qcow2"
sha256 = "{SHA}"
[keypairs.alice]
public_key = "{KEY}"
[networks.public]
bridge = "br-ex"
cidr = "203.0.113.0/24"
gateway = "203.0.113.1"
"""
HEAD = """\
heat_template_version: 2018-08-31
conditions:
  big: {equals: [{get_param: size}, m1.medium]}
parameters:
  size: {type: string, default: m1.small, constraints: [{custom_constraint: nova.flavor}]}
  img: {type: string, default: debian-12, constraints: [{custom_constraint: glance.image}]}
  key: {type: string, default: alice, constraints: [{custom_constraint: nova.keypair}]}
  ext: {type: string, default: public, constraints: [{custom_constraint: neutron.network}]}
resources:
  x: {type: OS::Glance::WebImage, properties: {location: x.qcow2, disk_format: qcow2}}
"""


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.discover()


@pytest.fixture
def load(tmp_path: Path, registry: Registry):
    site = tmp_path / "site.toml"
    site.write_text(SITE)
    catalog = read_site(site)

    def run(body: str, *params: str, with_site: bool = True):
        path = tmp_path / "t.yaml"
        path.write_text(HEAD + textwrap.indent(textwrap.dedent(body), "  "))
        return load_stack(path, registry, list(params), (), catalog if with_site else None)

    return run


IMG = site_image_name("debian-12")
# (server properties in HOT, what the loaded server holds)
GOOD = [
    ("{flavor: m1.medium}", {"flavor": "m1.medium", "vcpus": 2, "memory_mib": 4096}),
    ("{flavor: {get_param: size}}", {"flavor": "m1.small", "root_gib": 20}),
    ("{flavor: {if: [big, m1.medium, m1.small]}}", {"flavor": "m1.small", "vcpus": 1}),
    ("{image: {if: [big, {get_resource: x}, debian-12]}}", {"image": {"get_resource": IMG}}),
    ("{image: debian-12}", {"image": {"get_resource": IMG}}),
    ("{image: {get_param: img}}", {"image": {"get_resource": IMG}}),
    ("{key_name: alice}", {"ssh_keys": [KEY]}),
    ("{key_name: {get_param: key}}", {"ssh_keys": [KEY]}),
    ("{networks: [{network: public}]}", {"networks": [{"network": "br-ex"}]}),
    ("{networks: [{network: {get_param: ext}}]}", {"networks": [{"network": "br-ex"}]}),
]


@pytest.mark.parametrize(("props", "expected"), GOOD)
def test_catalog_names_on_a_server(load, props: str, expected: dict) -> None:
    config = load(f"web:\n  type: OS::Nova::Server\n  properties: {props}\n")
    got = config.resources["web"].properties
    for key, value in expected.items():
        assert _plain(got[key]) == value, key
    assert "key_name" not in got


def test_a_volume_from_a_catalog_image_shares_the_servers_site_image(load) -> None:
    config = load(
        """\
        disk:
          type: OS::Cinder::Volume
          properties: {size: 2, image: debian-12}
        web:
          type: OS::Nova::Server
          properties: {image: debian-12, flavor: m1.small}
        """
    )
    assert _plain(config.resources["disk"].properties["image"]) == {"get_resource": IMG}
    assert config.resources[IMG].type == "site_image"
    assert sum(1 for r in config.resources.values() if r.type == "site_image") == 1


BAD = [
    ("{flavor: m1.huge}", "flavor 'm1.huge' is not in the site catalog"),
    ("{image: debain-12}", "did you mean 'debian-12'"),
    ("{key_name: bob}", "key pair 'bob' is not in the site catalog"),
    ("{flavor: [1, 2]}", "a flavor is a name of the site catalog"),
    ("{image: {get_attr: [x, y]}}", "expected {get_resource: NAME}"),
]


@pytest.mark.parametrize(("props", "message"), BAD)
def test_misused_catalog_names_are_clear_errors(load, props: str, message: str) -> None:
    with pytest.raises(UserError) as info:
        load(f"web:\n  type: OS::Nova::Server\n  properties: {props}\n")
    text = str(info.value)
    assert message in text
    assert "resources.web" in text and "Traceback" not in text


def test_without_a_site_catalog_a_name_says_so(load) -> None:
    with pytest.raises(UserError) as info:
        load("web:\n  type: OS::Nova::Server\n  properties: {flavor: m1.small}\n", with_site=False)
    assert "names the site catalog, and there is none" in str(info.value)


CONSTRAINED = [
    ("size=m1.smal", "is not a flavor of the site catalog", "did you mean 'm1.small'"),
    ("img=debian", "is not an image of the site catalog", "debian-12"),
    ("key=bob", "is not a key pair of the site catalog", "alice"),
    ("ext=private", "is not a network of the site catalog", "public"),
]


@pytest.mark.parametrize(("param", "message", "hint"), CONSTRAINED)
def test_custom_constraints_are_checked_against_the_catalog(
    load, param: str, message: str, hint: str
) -> None:
    with pytest.raises(UserError) as info:
        load("n:\n  type: OS::Heat::None\n", param)
    text = str(info.value)
    assert message in text and hint in text


def _plain(value):
    """Expression nodes as their HOT-style dicts, to compare with literals."""
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        return dump()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    name = getattr(value, "name", None)
    if type(value).__name__ == "GetResource" and name is not None:
        return {"get_resource": name}
    return value
