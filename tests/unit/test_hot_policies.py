"""HOT's deletion_policy (Delete, Retain in any case; Snapshot refused) as our lifecycle rule
`deletion_policy = "retain"` on plain, grouped and merged resources, and depends_on /
update_policy as they are mapped (table-driven)."""

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
  {policy}
sub:
  type: OS::Neutron::Subnet
  properties: {{network: {{get_resource: net}}, cidr: 198.18.71.0/24}}
"""


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.discover()


@pytest.fixture
def load(tmp_path: Path, registry: Registry):
    def run(body: str, version: str = "2021-04-16"):
        path = tmp_path / "t.yaml"
        text = f"heat_template_version: {version}\nresources:\n"
        path.write_text(text + textwrap.indent(textwrap.dedent(body), "  "))
        return load_stack(path, registry, [], (), None)

    return run


# (deletion_policy line, template version, our rule: None for the default)
GOOD = [
    ("", "2013-05-23", None),
    ("deletion_policy: Delete", "2013-05-23", None),
    ("deletion_policy: Retain", "2013-05-23", "retain"),
    ("deletion_policy: retain", "2016-10-14", "retain"),
    ("deletion_policy: delete", "2021-04-16", None),
]


@pytest.mark.parametrize(("line", "version", "rule"), GOOD)
def test_deletion_policy_becomes_our_lifecycle_rule(load, line, version, rule) -> None:
    config = load(NET.format(policy=line), version)
    rules = config.resources["net"].lifecycle
    assert (rules.deletion_policy if rules else None) == rule


def test_retain_on_a_resource_group_applies_to_every_member(load) -> None:
    config = load(
        NET.format(policy="")
        + """\
vols:
  type: OS::Heat::ResourceGroup
  deletion_policy: Retain
  properties:
    count: 2
    resource_def: {type: OS::Cinder::Volume, properties: {size: 1}}
"""
    )
    for address in ("vols[0]", "vols[1]"):
        assert config.resources[address].lifecycle.retain


BAD = [
    ("deletion_policy: Snapshot", "deletion_policy 'Snapshot' is not supported"),
    ("deletion_policy: Keep", "deletion_policy 'Keep' is not supported"),
]


@pytest.mark.parametrize(("line", "message"), BAD)
def test_refused_deletion_policies_are_clear_errors(load, line, message) -> None:
    with pytest.raises(UserError) as info:
        load(NET.format(policy=line))
    text = str(info.value)
    assert message in text and "resources.net" in text and "line 5" in text


def test_depends_on_and_update_policy(load) -> None:
    config = load(
        NET.format(policy="")
        + """\
a:
  type: OS::Heat::None
  depends_on: net
  update_policy: {max_batch_size: 1}
b:
  type: OS::Heat::None
  depends_on: [a, sub]
"""
    )
    assert "net" in config.resources["a"].depends_on
    # a Subnet is its Net's cidr: depending on it is depending on the net
    assert set(config.resources["b"].depends_on) == {"a", "net"}
    assert any("update_policy" in str(n) for n in config.notes)
