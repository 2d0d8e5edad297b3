"""HOT deletion_policy as iacloud's lifecycle rule: Retain -> deletion_policy "retain" (as a
TOML stack writes it), Delete the default, Snapshot and anything else clear errors; a resource
merged into another (a Subnet into its Net) retains only with it. (More in test_hot_catalog.)"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from iacloud.errors import UserError
from iacloud.loading import load_stack
from iacloud.provider import Registry

NET = """\
  net:
    type: OS::Neutron::Net
    {net_policy}
  sub:
    type: OS::Neutron::Subnet
    {sub_policy}
    properties: {{network: {{get_resource: net}}, cidr: 198.18.71.0/24}}
"""


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.discover()


def _load(tmp_path: Path, registry: Registry, resources: str):
    path = tmp_path / "t.yaml"
    path.write_text(
        "heat_template_version: 2018-08-31\nresources:\n"
        + textwrap.indent(textwrap.dedent(resources), "  ")
    )
    return load_stack(path, registry, [], (), None)


def _retain(config, address: str) -> bool:
    rules = config.resources[address].lifecycle
    return rules is not None and rules.retain


# (the resource's deletion_policy line, retained)
POLICIES = [("", False), ("deletion_policy: Delete", False), ("deletion_policy: delete", False)]
POLICIES += [("deletion_policy: Retain", True), ("deletion_policy: retain", True)]


@pytest.mark.parametrize(("line", "retained"), POLICIES)
def test_deletion_policy_becomes_the_lifecycle_rule(
    tmp_path: Path, registry: Registry, line: str, retained: bool
) -> None:
    config = _load(
        tmp_path,
        registry,
        f"""\
        data:
          type: OS::Cinder::Volume
          {line}
          properties: {{size: 1}}
        """,
    )
    assert _retain(config, "data") is retained


def test_retain_is_what_a_toml_stack_writes(tmp_path: Path, registry: Registry) -> None:
    hot = _load(
        tmp_path,
        registry,
        """\
        data:
          type: OS::Cinder::Volume
          deletion_policy: Retain
          properties: {size: 1}
        """,
    )
    toml = tmp_path / "t.toml"
    toml.write_text(
        'version = 1\n[resources.data]\ntype = "volume"\nsize_gib = 1\ndeletion_policy = "retain"\n'
    )
    same = load_stack(toml, registry, [], (), None)
    assert hot.resources["data"].lifecycle == same.resources["data"].lifecycle


def test_retain_on_a_resource_group_retains_every_member(
    tmp_path: Path, registry: Registry
) -> None:
    config = _load(
        tmp_path,
        registry,
        """\
        disks:
          type: OS::Heat::ResourceGroup
          deletion_policy: Retain
          properties:
            count: 2
            resource_def: {type: OS::Cinder::Volume, properties: {size: 1}}
        """,
    )
    assert _retain(config, "disks[0]") and _retain(config, "disks[1]")


def test_a_merged_resource_retains_with_its_holder(tmp_path: Path, registry: Registry) -> None:
    both = NET.format(net_policy="deletion_policy: Retain", sub_policy="deletion_policy: Retain")
    assert _retain(_load(tmp_path, registry, both), "net")
    alone = NET.format(net_policy="", sub_policy="deletion_policy: Retain")
    with pytest.raises(UserError) as info:
        _load(tmp_path, registry, alone)
    text = str(info.value)
    assert "resources.sub" in text and "part of 'net'" in text
    assert "give 'net' deletion_policy Retain too" in text


BAD = [
    ("Snapshot", "deletion_policy 'Snapshot' is not supported: take a volume_snapshot"),
    ("Keep", "deletion_policy 'Keep' is not supported: Delete or Retain"),
    ("[Retain]", "is not supported: Delete or Retain"),
]


@pytest.mark.parametrize(("value", "message"), BAD)
def test_other_policies_are_clear_errors(
    tmp_path: Path, registry: Registry, value: str, message: str
) -> None:
    with pytest.raises(UserError) as info:
        _load(
            tmp_path,
            registry,
            f"""\
            data:
              type: OS::Cinder::Volume
              deletion_policy: {value}
              properties: {{size: 1}}
            """,
        )
    text = str(info.value)
    assert message in text and "resources.data" in text and "t.yaml, line 5" in text
