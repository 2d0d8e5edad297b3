"""HOT templates: our own small templates, written from Heat's template guide, loaded the way
`iacloud validate` loads them (real libvirt/netlink/local schemas, no host), one per mapped type
and function; every refused construct gives a clear error; bad YAML fails cleanly and fast."""

from __future__ import annotations

import contextlib
import os
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iacloud import engine
from iacloud.errors import UserError
from iacloud.loading import hot_functions
from iacloud.loading.yaml_input import YamlError, parse_yaml
from iacloud.planner import PlanOptions
from iacloud.providers.local import KeyPairInputs, RandomStringInputs, random_value

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "image: {get_resource: img}"
HEAD = """\
heat_template_version: {version}
resources:
  img:
    type: OS::Glance::WebImage
    properties: {{location: tiny.qcow2, disk_format: qcow2, container_format: bare}}
  net:
    type: OS::Neutron::Net
  sub:
    type: OS::Neutron::Subnet
    properties: {{network: {{get_resource: net}}, cidr: 198.18.70.0/24}}
"""


@pytest.fixture
def tpl(tmp_path: Path):
    (tmp_path / "tiny.qcow2").write_bytes(b"")

    def write(body: str, version: str = "2021-04-16", head: bool = True, name: str = "t.yaml"):
        # resource lines (before the first other section) go under the head's `resources:`
        body = textwrap.dedent(body)
        sections = ("parameters:", "conditions:", "outputs:")
        lines, top = [], not head or body.startswith((" ", *sections))
        for line in body.splitlines(keepends=True):
            top = top or line.startswith(sections)
            lines.append(line if top or not line.strip() else "  " + line)
        text = (HEAD.format(version=version) if head else "") + "".join(lines)
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def load(path: Path, *params: str, env: tuple[Path, ...] = ()):
    return engine.Workspace(path).load(list(params), list(env))


def errors(path: Path, *params: str) -> str:
    with pytest.raises(UserError) as info:
        load(path, *params)
    return str(info.value)


# ---- types ------------------------------------------------------------------------------


def test_net_and_subnet_become_one_network(tpl) -> None:
    config = load(
        tpl("""\
          sub2:
            type: OS::Neutron::Net
          s2:
            type: OS::Neutron::Subnet
            properties:
              network: {get_resource: sub2}
              cidr: 198.18.71.0/24
              gateway_ip: 198.18.71.254
              enable_dhcp: false
              dns_nameservers: [198.18.71.53]
              allocation_pools: [{start: 198.18.71.10, end: 198.18.71.20}]
        """)
    )
    net = config.resources["sub2"].properties
    assert net == {
        "cidr": "198.18.71.0/24",
        "gateway": "198.18.71.254",
        "dhcp": False,
        "dns": ["198.18.71.53"],
        "dhcp_range": {"start": "198.18.71.10", "end": "198.18.71.20"},
    }
    assert config.resources["net"].type == "network"
    assert "sub" not in config.resources and "s2" not in config.resources


def test_router_interface_and_gateway_merge_into_router(tpl) -> None:
    config = load(
        tpl("""\
          ext:
            type: OS::Neutron::Net
            properties: {value_specs: {"router:external": true}}
          extsub:
            type: OS::Neutron::Subnet
            properties: {network: {get_resource: ext}, cidr: 198.18.72.0/24}
          r:
            type: OS::Neutron::Router
            properties:
              external_gateway_info:
                network: {get_resource: ext}
                enable_snat: false
                external_fixed_ips: [{ip_address: 198.18.72.7}]
          ri:
            type: OS::Neutron::RouterInterface
            properties: {router: {get_resource: r}, subnet: {get_resource: sub}}
          after:
            type: OS::Heat::None
            depends_on: ri
        """)
    )
    r = config.resources["r"]
    assert r.type == "router" and "ri" not in config.resources
    assert set(r.depends_on) == {"net", "ext"}
    assert config.resources["after"].depends_on == ("r",)


def test_server_port_volume_attachment_keypair(tpl) -> None:
    config = load(
        tpl(
            """\
          key:
            type: OS::Nova::KeyPair
            properties: {name: k, public_key: "ssh-ed25519 AAAAC3 t@h"}
          p:
            type: OS::Neutron::Port
            properties:
              network: {get_resource: net}
              fixed_ips: [{ip_address: 198.18.70.9}]
              mac_address: "52:54:00:aa:bb:cc"
          v:
            type: OS::Cinder::Volume
            properties: {size: 2, image: {get_resource: img}}
          s:
            type: OS::Nova::Server
            properties:
              name: db1
              IMAGE
              key_name: {get_resource: key}
              networks:
                - {port: {get_resource: p}}
                - {network: {get_resource: net}, fixed_ip: 198.18.70.8}
              user_data: "#cloud-config\\n"
              user_data_format: SOFTWARE_CONFIG
              config_drive: true
              metadata: {role: db}
          a:
            type: OS::Cinder::VolumeAttachment
            properties:
              instance_uuid: {get_resource: s}
              volume_id: {get_resource: v}
              mountpoint: /dev/vdb
        """.replace("IMAGE", IMAGE)
        )
    )
    res = config.resources
    assert res["p"].properties["ip"] == "198.18.70.9" and res["p"].properties["mac"]
    assert res["v"].type == "volume" and res["v"].properties["size_gib"] == 2
    assert res["s-nic1"].type == "port" and res["s-nic1"].properties["ip"] == "198.18.70.8"
    assert res["s"].properties["hostname"] == "db1"
    assert res["s"].properties["user_data"] == "#cloud-config\n"
    assert set(res["s"].depends_on) >= {"p", "v", "key", "img", "s-nic1"}
    assert res["key"].type == "keypair"
    notes = " ".join(str(n) for n in config.notes)
    assert "config_drive" in notes and "mountpoint" in notes and "metadata" in notes


def test_resource_group_counts_and_attributes(tpl) -> None:
    config = load(
        tpl(
            """\
          rnd:
            type: OS::Heat::RandomString
            properties: {length: 8}
          g:
            type: OS::Heat::ResourceGroup
            properties:
              count: 3
              index_var: "@i"
              resource_def:
                type: OS::Nova::Server
                properties:
                  name: n-@i
                  IMAGE
                  networks: [{network: {get_resource: net}}]
                  user_data: {str_replace: {template: "x $P", params: {$P: {get_resource: rnd}}}}
        outputs:
          refs: {value: {get_attr: [g, refs]}}
          one: {value: {get_attr: [g, resource.1, first_address]}}
          all: {value: {get_attr: [g, networks]}}
        """.replace("IMAGE", IMAGE)
        )
    )
    assert [a for a in config.resources if a.startswith("g[")] == ["g[0]", "g[1]", "g[2]"]
    assert config.resources["g[2]"].properties["hostname"] == "n-2"
    assert "rnd" in config.resources["g[0]"].depends_on
    from iacloud import expressions as ex

    assert config.outputs["refs"].value == ex.GetResource("g")
    assert config.outputs["one"].value == ex.GetAttr("g", 1, "first_address")
    assert config.outputs["all"].value == ex.GetAttr("g", None, "addresses")


def test_get_attr_names_are_translated(tpl) -> None:
    from iacloud import expressions as ex

    config = load(
        tpl(
            """\
          p:
            type: OS::Neutron::Port
            properties: {network: {get_resource: net}, fixed_ips: [{ip_address: 198.18.70.9}]}
          s:
            type: OS::Nova::Server
            properties: {IMAGE, networks: [{port: {get_resource: p}}]}
          k:
            type: OS::Nova::KeyPair
        outputs:
          ip: {value: {get_attr: [p, fixed_ips, 0, ip_address]}}
          mac: {value: {get_attr: [p, mac_address]}}
          first: {value: {get_attr: [s, first_address]}}
          net: {value: {get_attr: [s, addresses, net, 0, addr]}}
          cidr: {value: {get_attr: [sub, cidr]}}
          private: {value: {get_attr: [k, private_key]}}
        """.replace("IMAGE", IMAGE)
        )
    )
    out = {n: o.value for n, o in config.outputs.items()}
    assert out["ip"] == ex.GetAttr("p", None, "ip")
    assert out["mac"] == ex.GetAttr("p", None, "mac")
    assert out["first"] == ex.GetAttr("s", None, "first_address")
    assert out["net"] == ex.GetAttr("s", None, "addresses", ("net", 0))
    assert out["cidr"] == ex.GetAttr("net", None, "cidr")
    assert out["private"] == ex.GetAttr("k", None, "private_key")


# ---- functions and conditions -----------------------------------------------------------

FUNCTION_CASES = [
    ("{list_join: ['-', [a, b]]}", "a-b"),
    ("{str_replace: {template: 'x $A', params: {$A: 1}}}", "x 1"),
    ("{str_replace_strict: {template: 'x $A', params: {$A: 1}}}", "x 1"),
    ("{repeat: {template: {p: <%x%>}, for_each: {<%x%>: [1, 2]}}}", [{"p": "1"}, {"p": "2"}]),
    ("{str_split: [',', 'a,b,c']}", ["a", "b", "c"]),
    ("{str_split: [',', 'a,b,c', 2]}", "c"),
    ("{map_merge: [{a: 1, b: 2}, {a: 3}]}", {"a": 3, "b": 2}),
    (
        "{map_replace: [{k1: v1, k2: v2}, {keys: {k1: K1}, values: {v2: V2}}]}",
        {"K1": "v1", "k2": "V2"},
    ),
    ("{list_concat: [[a], [b, c]]}", ["a", "b", "c"]),
    ("{list_concat_unique: [[a, b], [b, c]]}", ["a", "b", "c"]),
    ("{digest: [sha256, abc]}", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    ("{contains: [b, [a, b]]}", True),
    ("{filter: [[b], [a, b, c]]}", ["a", "c"]),
    ("{if: [big, yes-big, not-big]}", "yes-big"),
    ("{if: [{not: big}, 1, 2]}", 2),
    ("{if: [{and: [big, {or: [false, {equals: [{get_param: n}, 5]}]}]}, 1, 2]}", 1),
    ("[{if: [{not: big}, gone]}, kept]", ["kept"]),
    ("{get_param: OS::stack_name}", "t"),
    ("{get_param: OS::project_id}", "iacloud"),
    ("{get_file: data/hello.txt}", "hello\n"),
]


@pytest.mark.parametrize(("expression", "expected"), FUNCTION_CASES)
def test_function(tpl, tmp_path: Path, expression: str, expected: object) -> None:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "hello.txt").write_text("hello\n")
    path = tpl(
        f"""\
        parameters:
          n: {{type: number, default: 5}}
        conditions:
          big: {{equals: [{{get_param: n}}, 5]}}
        outputs:
          x: {{value: {expression}}}
        """,
        head=False,
    )
    text = "heat_template_version: 2021-04-16\nresources: {}\n" + path.read_text()
    path.write_text(text)
    assert load(path).outputs["x"].value == expected


def test_stack_id_is_stable_per_name() -> None:
    a = hot_functions.pseudo_value("OS::stack_id", "lab")
    assert a == hot_functions.pseudo_value("OS::stack_id", "lab")
    assert a != hot_functions.pseudo_value("OS::stack_id", "lab2")


def test_conditions_leave_out_resources_and_outputs(tpl) -> None:
    path = tpl("""\
          extra:
            type: OS::Heat::None
            condition: wanted
          other:
            type: OS::Heat::None
            depends_on: [extra]
        parameters:
          want: {type: boolean, default: "no"}
        conditions:
          wanted: {get_param: want}
        outputs:
          o: {value: {get_resource: extra}, condition: wanted}
        """)
    config = load(path)
    assert "extra" not in config.resources and "o" not in config.outputs
    assert config.resources["other"].depends_on == ()
    config = load(path, "want=true")
    assert "extra" in config.resources and "o" in config.outputs


def test_toml_stacks_get_the_new_functions(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        "version = 1\n[outputs.x]\n"
        "value = { map_merge = [{ a = 1 }, { if = [{ equals = [1, 1] }, { b = 2 }, {}] }] }\n"
    )
    assert load(path).outputs["x"].value == {"a": 1, "b": 2}


def test_environment_file_parameters_and_defaults(tpl, tmp_path: Path) -> None:
    path = tpl("""\
        parameters:
          size: {type: number, default: 1}
          names: {type: comma_delimited_list, default: "a,b"}
        outputs:
          size: {value: {get_param: size}}
          names: {value: {get_param: names}}
        """)
    env = tmp_path / "env.yaml"
    env.write_text(
        "parameter_defaults:\n  size: '3'\n  unrelated: 1\nparameters:\n  names: x,y,z\n"
    )
    config = load(path, env=(env,))
    assert config.outputs["size"].value == 3
    assert config.outputs["names"].value == ["x", "y", "z"]
    env.write_text("parameters:\n  nope: 1\n")
    with pytest.raises(UserError, match="unknown parameter 'nope'"):
        load(path, env=(env,))


# ---- what is refused ---------------------------------------------------------------------

REFUSED = [
    ("  x:\n    type: OS::Trove::Instance\n", "unsupported resource type 'OS::Trove::Instance'"),
    ("  x:\n    type: lib/web.yaml\n", "nested templates are not supported"),
    (
        "  x:\n    type: OS::Neutron::SecurityGroup\n"
        "    properties: {rules: [{ethertype: IPv6, protocol: tcp}]}\n",
        "only IPv4 rules",
    ),
    ("  x:\n    type: OS::Neutron::FloatingIP\n", "needs its floating_network"),
    (
        "  f:\n    type: OS::Neutron::FloatingIP\n    properties: {floating_network: public}\n",
        "of a OS::Neutron::Net in this template",
    ),
    ("  x:\n    type: OS::Heat::None\n    deletion_policy: Snapshot\n", "'Snapshot'"),
    ("  x:\n    type: OS::Heat::None\n    external_id: abc\n", "external_id is not supported"),
    (
        "  s3:\n    type: OS::Neutron::Subnet\n"
        "    properties: {network: {get_resource: net}, cidr: 198.18.9.0/24}\n",
        "has a second subnet",
    ),
    ("  n2:\n    type: OS::Neutron::Net\n", "has no OS::Neutron::Subnet"),
    (
        "  n3:\n    type: OS::Neutron::Net\n  s3:\n    type: OS::Neutron::Subnet\n"
        "    properties: {network: {get_resource: n3}, cidr: 198.18.9.0/24, gateway_ip: null}\n",
        "a subnet without a gateway",
    ),
    ("  s:\n    type: OS::Nova::Server\n    properties: {flavor: m1.small}\n", "site catalog"),
    ("  s:\n    type: OS::Nova::Server\n    properties: {image: cirros}\n", "site catalog"),
    (
        "  s:\n    type: OS::Nova::Server\n    properties: {admin_pass: x}\n",
        "property 'admin_pass' of OS::Nova::Server is not supported",
    ),
    (
        "  s:\n    type: OS::Nova::Server\n    properties: {user_data_format: ZIP}\n",
        "user_data_format 'ZIP'",
    ),
    (
        "  p:\n    type: OS::Neutron::Port\n    properties: {network: {get_resource: net}}\n",
        "a port needs fixed_ips",
    ),
    (
        "  p:\n    type: OS::Neutron::Port\n    properties: {network: {get_resource: net}, "
        "fixed_ips: [{ip_address: 198.18.70.9}], security_groups: [default]}\n",
        "iacloud has no 'default' security group",
    ),
    (
        "  v:\n    type: OS::Cinder::Volume\n    properties: {size: 1, backup_id: abc}\n",
        "iacloud makes volumes from images and from volume snapshots",
    ),
    (
        "  v:\n    type: OS::Cinder::Volume\n    properties: {size: 1, snapshot_id: abc}\n",
        "of a OS::Cinder::VolumeSnapshot in this template",
    ),
    (
        "  n6:\n    type: OS::Neutron::Net\n  s:\n    type: OS::Neutron::Subnet\n"
        "    properties: {network: {get_resource: n6}, ip_version: 6, cidr: 'fd00::/64'}\n",
        "only IPv4",
    ),
    (
        "  i:\n    type: OS::Glance::WebImage\n"
        "    properties: {location: x.qcow2, disk_format: vmdk}\n",
        "disk_format 'vmdk'",
    ),
    (
        "  x:\n    type: OS::Heat::None\n    properties: {a: {yaql: {expression: '1'}}}\n",
        "yaql expressions are not supported",
    ),
    (
        "  x:\n    type: OS::Heat::None\n    properties: {a: {Fn::Join: [',', [a]]}}\n",
        "CloudFormation functions",
    ),
    (
        "  x:\n    type: OS::Heat::None\n    properties: {a: {get_file: /etc/passwd}}\n",
        "is not a relative path",
    ),
    (
        "  x:\n    type: OS::Heat::None\n    properties: {a: {get_file: ../secret}}\n",
        "outside the template's directory",
    ),
    (
        "  x:\n    type: OS::Heat::None\n    properties: {a: {get_file: link/secret}}\n",
        "outside the template's directory",
    ),
    ("  x:\n    type: OS::Heat::None\n    condition: nope\n", "unknown condition 'nope'"),
    ("  x:\n    type: OS::Heat::None\n    bogus: 1\n", "unknown key 'bogus' in a resource"),
    (
        "  g:\n    type: OS::Heat::ResourceGroup\n"
        "    properties: {resource_def: {type: OS::Heat::ResourceGroup}}\n",
        "inside a ResourceGroup",
    ),
    (
        "outputs:\n  o: {value: {get_attr: [net, segments]}}\n",
        "attribute 'segments' of OS::Neutron::Net",
    ),
    (
        "outputs:\n  o: {value: {str_replace_strict: {template: a, params: {b: c}}}}\n",
        "'b' is not in the template",
    ),
]


@pytest.mark.parametrize(("body", "message"), REFUSED)
def test_refused_constructs(tpl, tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "secret").write_text("s")
    inner = tmp_path / "inner"
    inner.mkdir(exist_ok=True)
    (inner / "t.yaml").write_text("")
    if not (inner / "link").exists():
        (inner / "link").symlink_to(tmp_path)
    path = tpl(body, name="inner/t.yaml")
    (inner / "tiny.qcow2").write_bytes(b"")
    if body.startswith("outputs"):
        path.write_text(HEAD.format(version="2021-04-16") + body)
    text = errors(path)
    assert message in text
    assert "Traceback" not in text


VERSIONED = [
    ("2015-10-15", "{map_merge: [{a: 1}]}", "needs 2016-04-08 or later"),
    ("2014-10-16", "{repeat: {template: a, for_each: {a: [1]}}}", "needs 2015-04-30"),
    ("2016-10-14", "{list_concat: [[a]]}", "needs 2017-09-01"),
    ("2017-09-01", "{if: [true, a]}", "two arguments needs heat_template_version 2021-04-16"),
    ("2016-04-08", "{if: [true, a, b]}", "needs 2016-10-14"),
]


@pytest.mark.parametrize(("version", "expression", "message"), VERSIONED)
def test_functions_follow_the_template_version(
    tpl, version: str, expression: str, message: str
) -> None:
    path = tpl(f"outputs:\n  o: {{value: {expression}}}\n", version=version)
    assert message in errors(path)


def test_versions_by_date_and_name(tpl) -> None:
    assert load(tpl("", version="wallaby")).name == "t"
    assert load(tpl("", version="2013-05-23")).name == "t"
    text = errors(tpl("", version="2019-01-01"))
    assert "unknown heat_template_version '2019-01-01'" in text
    assert "2013-05-23" in text and "2021-04-16 (wallaby)" in text


def test_diagnostics_carry_lines(tpl) -> None:
    path = tpl("""\
          s:
            type: OS::Nova::Server
            properties:
              networks: [{network: {get_resource: nett}}]
        """)
    text = errors(path)
    assert "t.yaml, line 14, resources.s, field 'networks[0]'" in text, text


# ---- bad YAML -----------------------------------------------------------------------------

BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9)
)
BAD_YAML = [
    (BOMB, "expands to more than"),
    ("a: &a [1, *a]\n", "recursive alias"),
    ("[" * 5000 + "]" * 5000, "nested more than 64"),
    ("a: !!python/object/apply:os.system [id]\n", "YAML tag !!python/object/apply:os.system"),
    ("a: !!binary aGk=\n", "!!binary is not allowed"),
    ("a: 1\na: 2\n", "duplicate key 'a'"),
    ("a: [1\n", "invalid YAML"),
    ("a: 1\n---\nb: 2\n", "one YAML document"),
    ("- just\n- a list\n", "a YAML map"),
]


@pytest.mark.parametrize(("text", "message"), BAD_YAML)
def test_bad_yaml_fails_cleanly_and_fast(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    started = time.monotonic()
    result = errors(path)
    assert time.monotonic() - started < 2
    assert message in result


def test_non_utf8_and_huge_templates(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_bytes(b"heat_template_version: 2013-05-23\ndescription: \xff\n")
    assert "not a UTF-8 text file" in errors(path)
    with open(path, "wb") as f:
        f.truncate(17 << 20)
    started = time.monotonic()
    assert "more than the limit" in errors(path)
    assert time.monotonic() - started < 2


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="ab:-[]{}&*!?,'\"\n #|>%@`", max_size=200))
def test_yaml_reader_never_escapes(text: str) -> None:
    started = time.monotonic()
    with contextlib.suppress(YamlError, ValueError):
        parse_yaml(text)
    assert time.monotonic() - started < 2


# ---- the local provider --------------------------------------------------------------------


def test_random_string_honours_classes() -> None:
    inputs = RandomStringInputs.model_validate(
        {
            "length": 12,
            "character_classes": [{"class": "digits", "min": 5}],
            "character_sequences": [{"sequence": "!", "min": 2}],
        }
    )
    value = random_value(inputs)
    assert len(value) == 12 and sum(c.isdigit() for c in value) >= 5 and value.count("!") >= 2
    assert random_value(inputs) != value


def test_keypair_generates_a_private_key_only_when_asked(tmp_path: Path) -> None:
    from iacloud.provider import StackInfo
    from iacloud.providers.local import LocalProvider

    provider = LocalProvider(StackInfo("s", "id", tmp_path, tmp_path), LocalProvider.Settings())
    kp = provider.resource("keypair")
    made = kp.create("k", KeyPairInputs(save_private_key=True))
    assert made.attributes["public_key"].startswith("ssh-ed25519 ")
    assert "PRIVATE KEY" in made.attributes["private_key"]
    assert "private_key" in type(kp).sensitive_attributes
    assert kp.create("k", KeyPairInputs()).attributes["private_key"] == ""


# ---- the examples ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["two-servers.yaml", "group.yaml"])
def test_examples_validate_and_plan(name: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("IACLOUD_STATE", str(tmp_path / "state.db"))
    ws = engine.Workspace(ROOT / "examples" / "heat" / name)
    env = (
        [ROOT / "examples" / "heat" / "two-servers.env.yaml"] if name == "two-servers.yaml" else []
    )
    config = ws.load([], env)
    plan, _ = engine.make_plan(ws, config, PlanOptions(refresh=False))
    assert plan.changes and all(c.action.value == "create" for c in plan.changes)
    if name == "two-servers.yaml":
        assert config.resources["data"].properties["size_gib"] == 2  # parameter_defaults
        assert config.resources["db_port"].properties["ip"] == "198.18.60.20"  # parameters
        assert "admin" not in config.resources  # condition key_given is false


def test_heat_functions_are_not_reached_by_symlinked_templates(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.txt").write_text("secret")
    d = tmp_path / "d"
    d.mkdir()
    os.symlink(outside / "x.txt", d / "x.txt")
    with pytest.raises(hot_functions.HotError, match="outside"):
        hot_functions.read_file(d, "x.txt", "")


def test_random_string_is_kept_and_never_printed(tmp_path: Path, run, monkeypatch) -> None:
    """A HOT RandomString (local provider) applied with a fake resource that uses its value:
    the value is made once, kept across plans (no change), and masked wherever it lands."""
    monkeypatch.setenv("IACLOUD_STATE", str(tmp_path / "state.db"))
    path = tmp_path / "r.yaml"
    path.write_text(
        "heat_template_version: 2018-08-31\n"
        "resources:\n"
        "  pw: {type: OS::Heat::RandomString, properties: {length: 20}}\n"
        "  k: {type: OS::Nova::KeyPair}\n"
        "outputs:\n"
        "  pw: {value: {get_resource: pw}}\n"
    )
    run("apply", "--auto-approve", str(path))
    run("plan", "--detailed-exitcode", str(path), code=0)
    import json

    shown = json.loads(run("show", "--json", "--stack", str(path)))
    value = shown["resources"]["pw"]["attributes"]["value"]
    assert value == "(sensitive)"
    assert shown["resources"]["k"]["attributes"]["public_key"].startswith("ssh-ed25519 ")
    secret = json.loads(run("output", "pw", "--json", "--stack", str(path)))
    assert isinstance(secret, str) and len(secret) == 20
    toml = tmp_path / "uses.toml"
    toml.write_text(
        'version = 1\nname = "r"\n[resources.pw]\ntype = "random_string"\nlength = 20\n'
        '[resources.t]\ntype = "fake_thing"\ntags = [{ get_attr = ["pw", "value"] }]\n'
    )
    run("apply", "--auto-approve", str(toml))
    shown = json.loads(run("show", "--json", "--stack", str(toml)))
    assert shown["resources"]["t"]["inputs"]["tags"] == "(sensitive)"
    assert secret not in run("show", "--stack", str(toml))


def test_a_group_of_attachments_gives_each_server_its_volume(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("IACLOUD_STATE", str(tmp_path / "state.db"))
    config = load(ROOT / "examples" / "heat" / "group.yaml", "count=2")
    assert config.resources["nodes[1]"].properties["volumes"][0].address == "data[1]"
    assert "data[1]" in config.resources["nodes[1]"].depends_on
    assert "data[0]" not in config.resources["nodes[1]"].depends_on
    assert not any(a.startswith("attachments") for a in config.resources)


@pytest.mark.parametrize(
    ("attach", "message"),
    [
        (
            "{instance_uuid: {get_attr: [g, resource.%index%]}, volume_id: {get_resource: v}}",
            "name the member",
        ),
        (
            "{instance_uuid: {get_resource: s}, volume_id: {get_attr: [v, resource.%index%]}}",
            "a ResourceGroup of attachments attaches member",
        ),
    ],
)
def test_group_attachments_refused(tpl, attach: str, message: str) -> None:
    path = tpl(f"""\
          g:
            type: OS::Heat::ResourceGroup
            properties:
              count: 2
              resource_def: {{type: OS::Nova::Server, properties: {{{IMAGE}}}}}
          s:
            type: OS::Nova::Server
            properties: {{{IMAGE}}}
          v:
            type: OS::Heat::ResourceGroup
            properties:
              count: 2
              resource_def: {{type: OS::Cinder::Volume, properties: {{size: 1}}}}
          a:
            type: OS::Heat::ResourceGroup
            properties:
              count: 2
              resource_def:
                type: OS::Cinder::VolumeAttachment
                properties: {attach}
        """)
    assert message in errors(path)


def test_toml_stack_with_a_heat_environment(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        'version = 1\n[parameters.names]\ntype = "list"\ndefault = []\n'
        '[outputs.o]\nvalue = { get_param = "names" }\n'
    )
    env = tmp_path / "env.yml"
    env.write_text("parameter_defaults: {names: 'a,b', other_template_param: 1}\n")
    assert load(path, env=(env,)).outputs["o"].value == ["a", "b"]


# YAML's line breaks include NEL and the separators: PyYAML does not read those back as written
TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=20)
PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63) + 1, 2**63 - 1) | TEXT,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(TEXT.filter(bool), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None)
@given(PLAIN)
def test_yaml_reader_reads_back_what_yaml_wrote(value: object) -> None:
    import yaml

    text = yaml.safe_dump({"v": value}, allow_unicode=True)
    assert parse_yaml(text)[0] == {"v": value}


def test_diagnostics_point_at_the_heat_property(tpl) -> None:
    text = errors(tpl("  v:\n    type: OS::Cinder::Volume\n    properties:\n      size: 0\n"))
    assert "line 14, resources.v, field 'size_gib'" in text, text


def test_block_devices_boot_and_data_volumes(tpl) -> None:
    config = load(
        tpl("""\
          data:
            type: OS::Cinder::Volume
            properties: {size: 1}
          s:
            type: OS::Nova::Server
            properties:
              block_device_mapping_v2:
                - {boot_index: 0, image: {get_resource: img}, volume_size: 3}
                - {volume_id: {get_resource: data}, delete_on_termination: false}
        """)
    )
    server = config.resources["s"].properties
    assert server["boot_volume"].address == "s-disk0"
    assert [v.address for v in server["volumes"]] == ["data"]
    disk = config.resources["s-disk0"]
    assert disk.type == "volume" and disk.properties["size_gib"] == 3


def test_software_and_cloud_configs_become_user_data(tpl) -> None:
    config = load(
        tpl(
            """\
          script:
            type: OS::Heat::SoftwareConfig
            properties:
              group: ungrouped
              config:
                str_replace: {template: "#!/bin/sh\\necho $N\\n", params: {$N: {get_param: n}}}
          cc:
            type: OS::Heat::CloudConfig
            properties:
              cloud_config: {packages: [nginx], runcmd: [[echo, hi]]}
          a:
            type: OS::Nova::Server
            depends_on: [script]
            properties:
              {IMAGE, user_data_format: SOFTWARE_CONFIG, user_data: {get_resource: script}}
          b:
            type: OS::Nova::Server
            properties: {IMAGE, user_data_format: SOFTWARE_CONFIG, user_data: {get_resource: cc}}
        parameters:
          n: {type: string, default: hello}
        outputs:
          text: {value: {get_attr: [script, config]}}
        """.replace("IMAGE", IMAGE)
        )
    )
    assert config.resources["a"].properties["user_data"] == "#!/bin/sh\necho hello\n"
    assert config.resources["a"].depends_on == ("img",)
    assert config.resources["b"].properties["user_data"].startswith("#cloud-config\npackages:")
    assert config.outputs["text"].value == "#!/bin/sh\necho hello\n"
    assert "script" not in config.resources and "cc" not in config.resources
    path = tpl(
        """\
          cc:
            type: OS::Heat::CloudConfig
            properties: {cloud_config: {password: {get_param: pw}}}
        parameters:
          pw: {type: string, default: x}
        """,
        name="u.yaml",
    )
    assert "functions inside cloud_config are not supported" in errors(path)


def test_server_names_become_host_names(tpl) -> None:
    config = load(
        tpl(f"""\
          s:
            type: OS::Nova::Server
            properties: {{{IMAGE}, name: web_server 1}}
          g:
            type: OS::Heat::ResourceGroup
            properties:
              count: 2
              resource_def: {{type: OS::Nova::Server, properties: {{{IMAGE}, name: "db_%index%"}}}}
        """)
    )
    assert config.resources["s"].properties["hostname"] == "web-server-1"
    assert config.resources["g[1]"].properties["hostname"] == "db-1"
    assert any("web-server-1" in str(n) for n in config.notes)


def test_fifo_and_device_templates_are_refused_unread(tmp_path: Path) -> None:
    fifo = tmp_path / "f.yaml"
    os.mkfifo(fifo)
    zero = tmp_path / "z.yaml"
    zero.symlink_to("/dev/zero")
    for path, what in ((fifo, "a FIFO"), (zero, "a character device")):
        started = time.monotonic()
        assert what in errors(path)
        assert time.monotonic() - started < 2
    env = tmp_path / "e.yaml"
    os.mkfifo(env)
    template = tmp_path / "t.yaml"
    template.write_text("heat_template_version: 2013-05-23\n")
    with pytest.raises(UserError, match="a FIFO"):
        load(template, env=(env,))


def test_references_chosen_by_if(tpl) -> None:
    path = tpl("""\
          img2:
            type: OS::Glance::WebImage
            properties: {location: tiny.qcow2, disk_format: raw, container_format: bare}
          s:
            type: OS::Nova::Server
            properties: {image: {if: [raw, {get_resource: img2}, {get_resource: img}]}}
        parameters:
          fmt: {type: string, default: qcow2}
        conditions:
          raw: {equals: [{get_param: fmt}, raw]}
        """)
    assert load(path).resources["s"].properties["image"].address == "img"
    assert load(path, "fmt=raw").resources["s"].properties["image"].address == "img2"


def test_one_refused_resource_is_one_error(tpl) -> None:
    """What refers to a resource that could not be mapped is not reported again."""
    path = tpl("""\
          sg:
            type: OS::Trove::Instance
          x:
            type: OS::Heat::None
            depends_on: sg
        outputs:
          o: {value: {get_resource: sg}}
        """)
    with pytest.raises(UserError) as info:
        load(path)
    assert len(info.value.diagnostics) == 1


def test_volume_snapshot_and_a_volume_from_it(tpl) -> None:
    config = load(
        tpl("""\
          v:
            type: OS::Cinder::Volume
            properties: {size: 1}
          snap:
            type: OS::Cinder::VolumeSnapshot
            properties: {volume: {get_resource: v}, name: nightly}
          copy:
            type: OS::Cinder::Volume
            properties: {size: 1, snapshot_id: {get_resource: snap}}
        """)
    )
    assert config.resources["snap"].type == "volume_snapshot"
    assert config.resources["snap"].properties["volume"].address == "v"
    assert config.resources["copy"].properties["snapshot"].address == "snap"


def test_security_groups_and_floating_ips(tpl) -> None:
    from iacloud import expressions as ex

    config = load(
        tpl(f"""\
          ext:
            type: OS::Neutron::Net
            properties: {{value_specs: {{"router:external": true}}}}
          extsub:
            type: OS::Neutron::Subnet
            properties: {{network: {{get_resource: ext}}, cidr: 198.18.72.0/24}}
          r:
            type: OS::Neutron::Router
            properties:
              external_gateway_info:
                network: {{get_resource: ext}}
                external_fixed_ips: [{{ip_address: 198.18.72.2}}]
          ri:
            type: OS::Neutron::RouterInterface
            properties: {{router: {{get_resource: r}}, subnet: {{get_resource: sub}}}}
          admin:
            type: OS::Neutron::SecurityGroup
          sg:
            type: OS::Neutron::SecurityGroup
            properties:
              description: web
              rules:
                - {{protocol: tcp, port_range_min: 80, port_range_max: 81}}
                - {{protocol: 1, remote_mode: remote_group_id}}
                - {{remote_group_id: {{get_resource: admin}}, remote_mode: remote_group_id}}
                - {{direction: egress, protocol: udp, port_range_min: 53,
                    remote_ip_prefix: 198.18.0.0/16}}
          p:
            type: OS::Neutron::Port
            properties:
              network: {{get_resource: net}}
              fixed_ips: [{{ip_address: 198.18.70.9}}]
              security_groups: [{{get_resource: sg}}]
          fip:
            type: OS::Neutron::FloatingIP
            properties:
              {{floating_network: {{get_resource: ext}}, floating_ip_address: 198.18.72.9}}
          assoc:
            type: OS::Neutron::FloatingIPAssociation
            properties: {{floatingip_id: {{get_resource: fip}}, port_id: {{get_resource: p}}}}
          fip2:
            type: OS::Neutron::FloatingIP
            properties: {{floating_network: {{get_resource: ext}}}}
          s:
            type: OS::Nova::Server
            properties:
              {IMAGE}
              security_groups: [{{get_resource: admin}}]
              networks:
                - {{network: {{get_resource: net}}}}
                - {{network: {{get_resource: net}}, fixed_ip: 198.18.70.20,
                    floating_ip: {{get_resource: fip2}}}}
        outputs:
          public: {{value: {{get_attr: [fip, floating_ip_address]}}}}
        """)
    )
    res = config.resources
    assert res["sg"].type == "security_group"
    assert res["sg"].properties["rules"][:2] == [
        {"direction": "ingress", "protocol": "tcp", "port_min": 80, "port_max": 81},
        {"direction": "ingress", "protocol": "icmp", "remote_group": "self"},
    ]
    assert res["sg"].properties["rules"][2]["remote_group"] == ex.GetResource("admin")
    assert res["p"].properties["security_groups"] == [ex.GetResource("sg")]
    assert res["fip"].properties["port"] == ex.GetResource("p")
    assert res["fip"].properties["ip"] == "198.18.72.9"
    assert res["fip2"].properties["port"] == ex.GetResource("s-nic1")
    assert "assoc" not in res
    nics = res["s"].properties["networks"]
    assert nics[0]["security_groups"] == [ex.GetResource("admin")]
    assert res["s-nic1"].properties["security_groups"] == [ex.GetResource("admin")]
    assert config.outputs["public"].value == ex.GetAttr("fip", None, "floating_ip_address")
