"""Names of the site catalog in HOT templates: a server's flavor, image, key_name and
networks[].network, a volume's image, and the custom constraints nova.flavor, glance.image,
nova.keypair and neutron.network, each loaded the way a TOML stack with the same names loads."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from iacloud.errors import UserError
from iacloud.loading import load_stack
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
root_gib = 40
[images.debian-12]
source = "images/debian-12.qcow2"
format = "qcow2"
sha256 = "{SHA}"
[keypairs.alice]
public_key = "{KEY}"
[networks.public]
bridge = "br-ex"
cidr = "203.0.113.0/24"
gateway = "203.0.113.1"
"""
HEAD = "heat_template_version: 2018-08-31\n"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.discover()


@pytest.fixture
def site_file(tmp_path: Path) -> Path:
    path = tmp_path / "site" / "site.toml"
    path.parent.mkdir()
    path.write_text(SITE)
    return path


def _write(tmp_path: Path, name: str, body: str, head: str = HEAD) -> Path:
    path = tmp_path / name
    path.write_text(head + textwrap.dedent(body))
    return path


def _load(path: Path, registry: Registry, site: Path | None, *params: str):
    return load_stack(path, registry, list(params), (), read_site(site) if site else None)


def _shape(config) -> dict:
    return {a: (r.type, r.properties, r.depends_on) for a, r in config.resources.items()}


# (HOT resources, the TOML resources they mean)
SAME = [
    (
        "web: {type: OS::Nova::Server, properties: {flavor: m1.small, image: debian-12}}",
        '[resources.web]\ntype = "server"\nflavor = "m1.small"\nimage = "debian-12"\n',
    ),
    (
        "web: {type: OS::Nova::Server, properties: {image: debian-12, key_name: alice}}",
        '[resources.web]\ntype = "server"\nimage = "debian-12"\nkey_name = "alice"\n',
    ),
    (
        "web: {type: OS::Nova::Server, properties: {image: debian-12, "
        "networks: [{network: public}]}}",
        '[resources.web]\ntype = "server"\nimage = "debian-12"\n'
        'networks = [{network = "public"}]\n',
    ),
    (
        "data: {type: OS::Cinder::Volume, properties: {size: 3, image: debian-12}}",
        '[resources.data]\ntype = "volume"\nsize_gib = 3\nimage = "debian-12"\n',
    ),
]


@pytest.mark.parametrize(("hot", "toml"), SAME)
def test_catalog_names_map_as_in_toml(
    tmp_path: Path, registry: Registry, site_file: Path, hot: str, toml: str
) -> None:
    template = _write(tmp_path, "t.yaml", "resources:\n  " + hot + "\n")
    stack = _write(tmp_path, "t.toml", toml, head="version = 1\n")
    got = _shape(_load(template, registry, site_file))
    assert got == _shape(_load(stack, registry, site_file))
    assert any(t == "site_image" for t, _, _ in got.values())


def test_catalog_names_from_parameters(tmp_path: Path, registry: Registry, site_file: Path) -> None:
    template = _write(
        tmp_path,
        "t.yaml",
        """\
        parameters:
          flavor: {type: string, default: m1.small}
          key: {type: string, default: alice}
          net: {type: string, default: public}
        resources:
          web:
            type: OS::Nova::Server
            properties:
              flavor: {get_param: flavor}
              image: debian-12
              key_name: {get_param: key}
              networks: [{network: {get_param: net}}]
        """,
    )
    props = _load(template, registry, site_file, "flavor=m1.medium").resources["web"].properties
    assert (props["flavor"], props["vcpus"], props["memory_mib"]) == ("m1.medium", 2, 4096)
    assert props["ssh_keys"] == [KEY]
    assert props["networks"][0]["network"] == "br-ex"
    assert "key_name" not in props


ERRORS = [
    ("{flavor: m1.huge, image: debian-12}", "flavor 'm1.huge' is not in the site catalog"),
    ("{image: cirros}", "image 'cirros' is not in the site catalog"),
    ("{image: debian-12, key_name: bob}", "key pair 'bob' is not in the site catalog"),
    ("{flavor: {get_resource: x}, image: debian-12}", "a flavor is a name of the site catalog"),
    (
        "{image: debian-12, networks: [{network: public, fixed_ip: 203.0.113.9}]}",
        "OS::Neutron::Net",
    ),
]


@pytest.mark.parametrize(("props", "message"), ERRORS)
def test_unknown_catalog_names_are_clear_errors(
    tmp_path: Path, registry: Registry, site_file: Path, props: str, message: str
) -> None:
    template = _write(
        tmp_path,
        "t.yaml",
        "resources:\n  x: {type: OS::Heat::None}\n"
        f"  web: {{type: OS::Nova::Server, properties: {props}}}\n",
    )
    with pytest.raises(UserError) as info:
        _load(template, registry, site_file)
    assert message in str(info.value)
    assert "t.yaml" in str(info.value) and "resources.web" in str(info.value)


def test_catalog_names_without_a_catalog(tmp_path: Path, registry: Registry) -> None:
    template = _write(
        tmp_path,
        "t.yaml",
        "resources:\n  web: {type: OS::Nova::Server, properties: {flavor: m1.small}}\n",
    )
    with pytest.raises(UserError, match="names the site catalog, and there is none"):
        _load(template, registry, None)


# (constraint, a value the catalog has, one it has not)
CONSTRAINTS = [
    ("nova.flavor", "m1.small", "m1.smal", "did you mean 'm1.small'"),
    ("glance.image", "debian-12", "cirros", "is not an image of the site catalog"),
    ("nova.keypair", "alice", "bob", "is not a key pair of the site catalog"),
    ("neutron.network", "public", "private", "is not a network of the site catalog"),
]


@pytest.mark.parametrize(("constraint", "good", "bad", "message"), CONSTRAINTS)
def test_custom_constraints_are_checked_against_the_catalog(
    tmp_path: Path,
    registry: Registry,
    site_file: Path,
    constraint: str,
    good: str,
    bad: str,
    message: str,
) -> None:
    template = _write(
        tmp_path,
        "t.yaml",
        f"""\
        parameters:
          p:
            type: string
            constraints:
              - custom_constraint: {constraint}
        resources:
          x: {{type: OS::Heat::None}}
        """,
    )
    assert _load(template, registry, site_file, f"p={good}").parameters["p"] == good
    with pytest.raises(UserError) as info:
        _load(template, registry, site_file, f"p={bad}")
    text = str(info.value)
    assert "parameters.p" in text and message in text
    with pytest.raises(UserError, match="cannot be checked without a site catalog"):
        _load(template, registry, None, f"p={good}")


def test_other_custom_constraints_stay_notes(tmp_path: Path, registry: Registry) -> None:
    template = _write(
        tmp_path,
        "t.yaml",
        """\
        parameters:
          p:
            type: string
            default: anything
            constraints: [{custom_constraint: nova.host}]
        resources:
          x: {type: OS::Heat::None}
        """,
    )
    config = _load(template, registry, None)
    assert any("custom_constraint 'nova.host' is not checked" in n.message for n in config.notes)


def test_cli_plan_of_a_template_with_a_site_file(run, tmp_path: Path, site_file: Path) -> None:
    template = _write(
        tmp_path,
        "web.yaml",
        """\
        parameters:
          flavor: {type: string, default: m1.small, constraints: [{custom_constraint: nova.flavor}]}
        resources:
          web:
            type: OS::Nova::Server
            properties:
              flavor: {get_param: flavor}
              image: debian-12
              key_name: alice
              networks: [{network: public}]
          data:
            type: OS::Cinder::Volume
            properties: {size: 2, image: debian-12}
        """,
    )
    args = ("plan", "--no-refresh", "--json", "--site", str(site_file), str(template))
    plan = json.loads(run(*args, "-p", "flavor=m1.medium"))
    by_address = {c["address"]: c for c in plan["changes"]}
    assert set(by_address) == {"web", "data", "site-image-debian-12"}
    web = by_address["web"]["after"]
    assert (web["vcpus"], web["memory_mib"], web["root_gib"]) == (2, 4096, 40)
    assert web["ssh_keys"] == [KEY]
    assert web["networks"][0]["network"] == "br-ex"
    assert by_address["site-image-debian-12"]["after"]["sha256"] == SHA
    out = run(*args, "-p", "flavor=m1.tiny", code=1)
    assert "m1.tiny" in out and "site catalog" in out
