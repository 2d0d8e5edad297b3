"""Heat's custom constraints in HOT templates (nova.flavor, glance.image, nova.keypair,
neutron.network against the site catalog; others noted as not checked), and `iacloud plan` of
a template naming catalog entries, through the CLI with --site (no host touched)."""

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
