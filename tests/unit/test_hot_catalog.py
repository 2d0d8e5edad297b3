"""HOT templates naming things of the site catalog (flavor, image, key_name, a server's
networks, a volume's image) load as a TOML stack naming them does; DeletionPolicy maps onto
our lifecycle rule. Names that are not in the catalog are errors naming file, resource, field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import tomllib
from test_site_catalog import KEY, SITE

from iacloud import engine
from iacloud.errors import UserError
from iacloud.loading import load_stack
from iacloud.loading.site_file import read_site
from iacloud.planner import PlanOptions
from iacloud.provider import Registry
from iacloud.render import plan_json

REGISTRY = Registry.discover()

TEMPLATE = """\
heat_template_version: 2018-08-31
parameters:
  flavor: {type: string, default: m1.small, constraints: [{custom_constraint: nova.flavor}]}
resources:
  data:
    type: OS::Cinder::Volume
    properties: {size: 1, image: debian-12}
  web:
    type: OS::Nova::Server
    properties:
      flavor: {get_param: flavor}
      image: debian-12
      key_name: alice
      networks: [{network: public}]
  attach:
    type: OS::Cinder::VolumeAttachment
    properties: {instance_uuid: {get_resource: web}, volume_id: {get_resource: data}}
"""


def load(tmp_path: Path, text: str, *params: str, site: bool = True):
    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent(text))
    catalog = None
    if site:
        site_path = tmp_path / "site" / "site.toml"
        site_path.parent.mkdir(exist_ok=True)
        site_path.write_text(SITE)
        catalog = read_site(site_path)
    return load_stack(path, REGISTRY, list(params), (), catalog)


def test_catalog_names_in_a_template_resolve_as_in_a_toml_stack(tmp_path: Path) -> None:
    config = load(tmp_path, TEMPLATE)
    web = config.resources["web"].properties
    assert (web["flavor"], web["vcpus"], web["memory_mib"], web["root_gib"]) == (
        "m1.small",
        1,
        2048,
        20,
    )
    assert web["ssh_keys"] == [KEY]
    assert web["networks"] == [{"network": "br-ex"}]
    site_image = config.resources["site-image-debian-12"]
    assert site_image.type == "site_image" and site_image.properties["name"] == "debian-12"
    assert "site-image-debian-12" in config.resources["data"].depends_on
    assert "site-image-debian-12" in config.resources["web"].depends_on
    medium = load(tmp_path, TEMPLATE, "flavor=m1.medium").resources["web"].properties
    assert (medium["vcpus"], medium["memory_mib"]) == (2, 4096)


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        ("image: debian-12\n", "image: debian-13\n", "image", "image 'debian-13' is not in"),
        ("key_name: alice", "key_name: bob", "key_name", "key pair 'bob' is not in"),
        ("network: public", "network: outside", "networks[0].network", "network 'outside'"),
        ("default: m1.small", "default: m9", "flavor", "is not a flavor of the site catalog"),
    ],
)
def test_names_not_in_the_catalog_are_errors(
    tmp_path: Path, old: str, new: str, field: str, message: str
) -> None:
    with pytest.raises(UserError) as err:
        load(tmp_path, TEMPLATE.replace(old, new, 1))
    text = str(err.value)
    assert "t.yaml" in text and message in text and field in text


def test_catalog_names_without_a_catalog_say_so(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        load(tmp_path, TEMPLATE, site=False)
    assert "names the site catalog, and there is none" in str(err.value)


@pytest.mark.parametrize(("policy", "retained"), [("Retain", True), ("Delete", False),
                                                   ("retain", True)])  # fmt: skip
def test_deletion_policy_maps_onto_the_lifecycle_rule(
    tmp_path: Path, policy: str, retained: bool
) -> None:
    text = f"""\
    heat_template_version: 2018-08-31
    resources:
      keep:
        type: OS::Heat::RandomString
        deletion_policy: {policy}
    """
    rules = load(tmp_path, text, site=False).resources["keep"].lifecycle
    assert (rules is not None and rules.retain) is retained


def test_deletion_policy_snapshot_is_refused_with_the_alternative(tmp_path: Path) -> None:
    text = """\
    heat_template_version: 2018-08-31
    resources:
      v:
        type: OS::Cinder::Volume
        deletion_policy: Snapshot
        properties: {size: 1}
    """
    with pytest.raises(UserError) as err:
        load(tmp_path, text, site=False)
    assert "deletion_policy 'Snapshot' is not supported" in str(err.value)
    assert "volume_snapshot" in str(err.value)


def test_a_template_naming_catalog_entries_converts_keeping_the_names(tmp_path: Path) -> None:
    source = tmp_path / "t.yaml"
    source.write_text(TEMPLATE)
    site = tmp_path / "site" / "site.toml"
    site.parent.mkdir()
    site.write_text(SITE)
    out = tmp_path / "t.toml"
    result = engine.convert(engine.Workspace(source, site_file=site), (), (), out)
    web = tomllib.loads(result.text)["resources"]["web"]
    assert web["image"] == "debian-12" and web["key_name"] == "alice"
    assert web["networks"] == [{"network": "public"}] and web["flavor"] == {"get_param": "flavor"}

    def plan(path: Path, state: str) -> list:
        ws = engine.Workspace(path, state_url=str(tmp_path / state), site_file=site)
        the_plan, _ = engine.make_plan(ws, ws.load([]), PlanOptions(refresh=False))
        return [{k: v for k, v in c.items() if k != "id"} for c in plan_json(the_plan)["changes"]]

    assert plan(out, "a.db") == plan(source, "b.db")
