"""`iacloud convert TEMPLATE.yaml`: for every template in examples/heat/ and our own test
templates (conditions both ways, catalog names, deletion_policy, configs as
user_data, hidden parameters, ResourceGroups, get_attr), the TOML written plans exactly as the
template does (same addresses, actions, inputs; planned without refresh against empty state,
which reads no host); bad templates get the same clean errors as `validate`."""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import libvirt
import pytest

from iacloud import engine
from iacloud.errors import UserError
from iacloud.planner import PlanOptions
from iacloud.render import plan_json

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
SHA = "ab" * 32
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleStackTestKeyOnly0123456789abcdefgh t@h"
SITE = f"""version = 1
[flavors."m1.small"]
vcpus = 1
memory_mib = 2048
root_gib = 20
[images.debian-12]
source = "/srv/d.qcow2"
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
heat_template_version: 2021-04-16
parameters:
  big: {type: boolean, default: false}
  secret: {type: string, default: s3cret, hidden: true}
  size: {type: string, default: m1.small, constraints: [{custom_constraint: nova.flavor}]}
conditions:
  is_big: {equals: [{get_param: big}, true]}
  not_big: {not: is_big}
resources:
"""
OWN = {
    "catalog": """\
web:
  type: OS::Nova::Server
  properties:
    flavor: {get_param: size}
    image: debian-12
    key_name: alice
    networks: [{network: public}]
    availability_zone: nova
disk:
  type: OS::Cinder::Volume
  deletion_policy: Retain
  properties: {size: 2, image: debian-12}
""",
    "conditions": """\
net:
  type: OS::Neutron::Net
sub:
  type: OS::Neutron::Subnet
  properties: {network: {get_resource: net}, cidr: 198.18.72.0/24}
extra:
  type: OS::Cinder::Volume
  condition: is_big
  properties: {size: {if: [is_big, 3, 1]}}
small:
  type: OS::Heat::None
  condition: not_big
pw:
  type: OS::Heat::RandomString
  properties: {length: 12, salt: {get_param: secret}}
cfg:
  type: OS::Heat::SoftwareConfig
  properties:
    group: script
    config:
      str_replace:
        template: "#!/bin/sh\\necho $N\\n"
        params: {$N: {get_param: "OS::stack_name"}}
vm:
  type: OS::Nova::Server
  properties:
    image: debian-12
    networks: [{network: {get_resource: net}}]
    user_data: {get_resource: cfg}
    user_data_format: SOFTWARE_CONFIG
    metadata: {role: test}
outputs:
  extra_id:
    condition: is_big
    value: {get_resource: extra}
  addr:
    value: {get_attr: [vm, first_address]}
  pw:
    value: {get_attr: [pw, value]}
""",
    "group": """\
net:
  type: OS::Neutron::Net
sub:
  type: OS::Neutron::Subnet
  properties: {network: {get_resource: net}, cidr: 198.18.73.0/24}
vols:
  type: OS::Heat::ResourceGroup
  properties:
    count: 2
    resource_def: {type: OS::Cinder::Volume, properties: {size: 1}}
web:
  type: OS::Heat::ResourceGroup
  properties:
    count: 2
    index_var: "%i%"
    resource_def:
      type: OS::Nova::Server
      properties:
        name: web-%i%
        image: debian-12
        networks: [{network: {get_resource: net}}]
att:
  type: OS::Heat::ResourceGroup
  properties:
    count: 2
    resource_def:
      type: OS::Cinder::VolumeAttachment
      properties:
        instance_uuid: {get_attr: [web, resource.%index%]}
        volume_id: {get_attr: [vols, resource.%index%]}
outputs:
  names: {value: {get_attr: [web, name]}}
  refs: {value: {get_attr: [web, refs]}}
""",
}


@pytest.fixture(autouse=True)
def no_host(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("converting or planning opened libvirt")

    for name in ("open", "openReadOnly", "openAuth"):
        monkeypatch.setattr(libvirt, name, refuse)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(SITE)
    return path


def planned(path: Path, params, env, state: Path, site: Path) -> list:
    """The plan's changes as JSON (addresses, actions, inputs), without their ids."""
    ws = engine.Workspace(path, state_url=str(state), site_file=site)
    the_plan, _ = engine.make_plan(ws, ws.load(list(params), list(env)), PlanOptions(refresh=False))
    return [{k: v for k, v in c.items() if k != "id"} for c in plan_json(the_plan)["changes"]]


def same_plan(source: Path, params, env, tmp_path: Path, site: Path) -> str:
    out = source.with_name(f"{source.stem}-converted.toml")
    result = engine.convert(engine.Workspace(source, site_file=site), params, env, out)
    assert out.read_text() == result.text
    before = planned(source, params, env, tmp_path / "a.db", site)
    after = planned(out, params, env, tmp_path / "b.db", site)
    assert before and after == before
    tomllib.loads(result.text)  # it is TOML
    return result.text


EXAMPLES = {
    "two-servers.yaml": ((), ("two-servers.env.yaml",)),
    "two-servers.yaml+key": ((f"admin_key={KEY}",), ()),
    "group.yaml": ((), ()),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_examples_convert_to_the_same_plan(tmp_path: Path, site: Path, name: str) -> None:
    # beside the repository's build/, so relative image paths resolve the same
    work = tmp_path / "examples" / "heat"
    shutil.copytree(ROOT / "examples" / "heat", work)
    (tmp_path / "build").symlink_to(ROOT / "build")
    params, env = EXAMPLES[name]
    source = work / name.split("+")[0]
    text = same_plan(source, params, [work / e for e in env], tmp_path, site)
    assert text.startswith(f"# Converted from {source.name} by 'iacloud convert'.\n")


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("catalog", ()),
        ("conditions", ()),
        ("conditions", ("big=true",)),
        ("group", ()),
    ],
)
def test_own_templates_convert_to_the_same_plan(
    tmp_path: Path, site: Path, name: str, params: tuple[str, ...]
) -> None:
    source = tmp_path / f"{name}.yaml"
    source.write_text(HEAD + textwrap.indent(OWN[name], "  ").replace("  outputs:", "outputs:"))
    text = same_plan(source, params, (), tmp_path, site)
    data = tomllib.loads(text)
    if name == "catalog":
        web = data["resources"]["web"]
        assert (web["flavor"], web["image"], web["key_name"]) == (
            {"get_param": "size"},
            "debian-12",
            "alice",
        )
        assert web["networks"] == [{"network": "public"}]
        assert data["resources"]["disk"]["deletion_policy"] == "retain"
        assert "# from the template: availability_zone: " in text  # lossy: a comment
    if name == "conditions":
        # conditions kept as conditions: the TOML decides with the parameters it is given
        assert data["resources"]["extra"]["condition"] == {"equals": [{"get_param": "big"}, True]}
        assert "condition" in data["resources"]["small"]
        assert "condition" in data["outputs"]["extra_id"]
        assert data["parameters"]["secret"]["hidden"] is True
        assert "# from the template: metadata:" in text
        assert "SOFTWARE_CONFIG: the config is passed as plain cloud-init" in text


BAD = [
    (
        "heat_template_version: 2021-04-16\nresources:\n  x: {type: OS::Trove::Instance}\n",
        "unsupported resource type 'OS::Trove::Instance'",
    ),
    (
        "heat_template_version: 2021-04-16\nresources:\n  x:\n    type: OS::Heat::None\n"
        "    deletion_policy: Snapshot\n",
        "deletion_policy 'Snapshot' is not supported",
    ),
    ("heat_template_version: 1999-01-01\n", "heat_template_version"),
    ("a: [unclosed\n", "t.yaml"),
    (
        "heat_template_version: 2021-04-16\nresources:\n  s:\n    type: OS::Nova::Server\n"
        "    properties: {flavor: m1.huge}\n",
        "flavor 'm1.huge' is not in the site catalog",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_templates_get_the_validate_errors(
    tmp_path: Path, site: Path, run, text: str, message: str
) -> None:
    source = tmp_path / "t.yaml"
    source.write_text(text)
    with pytest.raises(UserError) as info:
        engine.Workspace(source, site_file=site).load()
    with pytest.raises(UserError) as converting:
        engine.convert(engine.Workspace(source, site_file=site), (), (), tmp_path / "o.toml")
    assert message in str(converting.value)
    assert str(converting.value) == str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.toml", "t.yaml"]
    out = run("convert", str(source), "--site", str(site), code=1)
    assert message in out
