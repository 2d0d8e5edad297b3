"""The site catalog: reading site.toml (good files, bad files, generated files), which file is
used (--site, IACLOUD_SITE, defaults), names resolved in stacks, custom constraints."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from toml_text import toml_value

from iacloud import site as site_mod
from iacloud.diff import diff_inputs, normalize_inputs
from iacloud.errors import UserError
from iacloud.loading import load_stack
from iacloud.loading.catalog_refs import SITE_IMAGE_TYPE, site_image_name
from iacloud.loading.site_file import load_site, read_site
from iacloud.provider import Registry
from iacloud.providers.libvirt.server import Server
from iacloud.schema import Disruption, max_disruption

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "site.toml"
SHA = "72e8b4fef20d4b86b132e81d4c7c30724c878a8000dc002bc51bc2088c93006c"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKq2b2Ym9nVv0b3Vb2Jvb2Jvb2Jvb2Jvb2Jvb2Jvb2Jv alice@lap"

SITE = f"""
version = 1
[flavors."m1.tiny"]
vcpus = 1
memory_mib = 512
root_gib = 1
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
sha256 = "{SHA.upper()}"
[images."ubuntu-22.04"]
source = "https://example.org/u.img"
format = "qcow2"
sha256 = "{SHA}"
[keypairs.alice]
public_key = "{KEY}"
[networks.public]
bridge = "br-ex"
cidr = "203.0.113.0/24"
gateway = "203.0.113.1"
"""


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.discover()


@pytest.fixture
def site_file(tmp_path: Path) -> Path:
    path = tmp_path / "site" / "site.toml"
    path.parent.mkdir()
    path.write_text(SITE)
    return path


def _messages(exc: pytest.ExceptionInfo[UserError]) -> list[str]:
    return [str(d) for d in exc.value.diagnostics]


# ------------------------------------------------------------------ reading


def test_example_site_file_is_the_classic_m1_set() -> None:
    site = read_site(EXAMPLE)
    got = {n: (f.vcpus, f.memory_mib, f.root_gib) for n, f in site.flavors.items()}
    assert got == {
        "m1.tiny": (1, 512, 1),
        "m1.small": (1, 2048, 20),
        "m1.medium": (2, 4096, 40),
        "m1.large": (4, 8192, 80),
        "m1.xlarge": (8, 16384, 160),
    }
    assert not site.images and not site.keypairs and not site.networks


def test_good_file_reads_every_section(site_file: Path) -> None:
    site = read_site(site_file)
    assert site.flavors["m1.small"].memory_mib == 2048
    image = site.images["debian-12"]
    # relative to the site file's directory; sha256 kept lower-case
    assert image.source == str(site_file.parent / "images" / "debian-12.qcow2")
    assert image.sha256 == SHA
    assert site.images["ubuntu-22.04"].source == "https://example.org/u.img"
    assert site.keypairs["alice"].public_key == KEY
    assert site.networks["public"].bridge == "br-ex"


BAD = [
    # (file text, expected in the message, expected field)
    ("version = 2", "unsupported site file version", "version"),
    ("", "missing required field 'version'", "version"),
    ("version = 1\n[flavors.x]\nvcpu = 1\nmemory_mib = 512", "did you mean 'vcpus'", "vcpu"),
    (
        "version = 1\n[flavors.x]\nvcpus = 0\nmemory_mib = 512",
        "greater than or equal to 1",
        "vcpus",
    ),
    ('version = 1\n[flavors.x]\nvcpus = "2"\nmemory_mib = 512', "valid integer", "vcpus"),
    ('version = 1\n[flavors."bad name"]\nvcpus = 1\nmemory_mib = 9', "invalid name", None),
    (
        'version = 1\n[images.x]\nsource = "a.qcow2"\nformat = "qcow2"\nsha256 = "abc"',
        "64 hexadecimal digits",
        "sha256",
    ),
    (f'version = 1\n[images.x]\nsource = "a.img"\nsha256 = "{SHA}"', "missing", "format"),
    (
        f'version = 1\n[images.x]\nsource = "a"\nformat = "vmdk"\nsha256 = "{SHA}"',
        "qcow2",
        "format",
    ),
    (
        f'version = 1\n[images.x]\nsource = "ftp://h/a"\nformat = "raw"\nsha256 = "{SHA}"',
        "http(s)",
        "source",
    ),
    ('version = 1\n[keypairs.a]\npublic_key = "hello"', "OpenSSH public key", "public_key"),
    ('version = 1\n[keypairs.a]\npublic_key = "ssh-rsa AAAA\\nssh-rsa BBBB"', "OpenSSH", None),
    ('version = 1\n[networks.p]\nbridge = "br ex"\ncidr = "10.0.0.0/24"', "bridge name", "bridge"),
    ('version = 1\n[networks.p]\nbridge = "brx"\ncidr = "10.0.0.1/24"', "IPv4 subnet", "cidr"),
    (
        'version = 1\n[networks.p]\nbridge = "b"\ncidr = "10.0.0.0/24"\ngateway = "10.0.1.1"',
        "not a host address",
        None,
    ),
    ('version = 1\n[hosts.h1]\nuri = "http://h1/system"', "scheme 'http'", "uri"),
    ('version = 1\n[hosts.H1]\nuri = "qemu:///system"', "invalid name", None),
    ("version = 1\nflavors = 3", "valid dictionary", "flavors"),
    ("version = 1\n[flavors]\nx = 3", "expected a table", None),
    ("version = 1\nhello = 1", "unknown field 'hello'", "hello"),
    ("version = 1\n[flavors.x\n", "invalid TOML", None),
    ("version = 1\nversion = 1\n", "duplicate key", None),
]


@pytest.mark.parametrize("text,message,field", BAD)
def test_bad_site_file_names_file_and_field(
    tmp_path: Path, text: str, message: str, field: str | None
) -> None:
    path = tmp_path / "site.toml"
    path.write_text(text)
    with pytest.raises(UserError) as exc:
        read_site(path)
    found = [d for d in exc.value.diagnostics if message in str(d)]
    assert found, _messages(exc)
    assert all(d.file == str(path) for d in exc.value.diagnostics)
    if field is not None:
        assert found[0].field == field, str(found[0])


def test_every_bad_entry_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(
        'version = 1\n[flavors.a]\nvcpus = 0\nmemory_mib = 512\n[flavors."b.c"]\nvcpus = 1\n'
    )
    with pytest.raises(UserError) as exc:
        read_site(path)
    where = {(d.address, d.field) for d in exc.value.diagnostics}
    assert ("flavors.a", "vcpus") in where
    assert ('flavors."b.c"', "memory_mib") in where


def test_site_files_are_bounded_like_stack_files(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_text("version = 1\n# " + "x" * (17 << 20))
    with pytest.raises(UserError, match="more than the limit"):
        read_site(big)
    deep = tmp_path / "deep.toml"
    deep.write_text("version = 1\nx = " + "[" * 200 + "]" * 200)
    with pytest.raises(UserError, match="nest"):
        read_site(deep)
    with pytest.raises(UserError, match="directory"):
        read_site(tmp_path)


_names = st.sampled_from(["m1.tiny", "x", "bad name", "debian-12", "", "a" * 70, "ü"])
_scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=80),
    st.booleans(),
    st.floats(allow_nan=True),
    st.just(SHA),
    st.just(KEY),
    st.sampled_from(["qcow2", "raw", "br-ex", "203.0.113.0/24", "203.0.113.1"]),
)
_fields = st.sampled_from(
    [
        "vcpus",
        "memory_mib",
        "root_gib",
        "source",
        "format",
        "sha256",
        "public_key",
        "bridge",
        "cidr",
        "gateway",
        "description",
        "extra",
    ]
)
_entries = st.dictionaries(_fields, st.one_of(_scalars, st.lists(_scalars, max_size=3)), max_size=6)
_site_docs = st.fixed_dictionaries(
    {"version": st.one_of(st.just(1), _scalars)},
    optional={
        section: st.dictionaries(_names, st.one_of(_entries, _scalars), max_size=4)
        for section in ("flavors", "images", "keypairs", "networks", "hosts", "other")
    },
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=_site_docs)
def test_generated_site_files_read_or_fail_cleanly(tmp_path: Path, doc: dict) -> None:
    path = tmp_path / "site.toml"
    lines = []
    for key, value in doc.items():
        if key == "version" and isinstance(value, float) and value != value:
            value = "nan"
        lines.append(f"{json.dumps(key)} = {toml_value(value)}")
    path.write_text("\n".join(lines), encoding="utf-8")
    started = time.monotonic()
    try:
        site = read_site(path)
    except UserError as exc:
        assert exc.diagnostics
        assert all(d.file == str(path) for d in exc.diagnostics)
    else:
        assert site.path == path
    assert time.monotonic() - started < 2


# ------------------------------------------------------------------ which file


def test_precedence_site_option_then_env_then_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, site_file: Path
) -> None:
    system = tmp_path / "etc" / "site.toml"
    monkeypatch.setattr(site_mod, "SYSTEM_SITE", system)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    user = tmp_path / "xdg" / "iacloud" / "site.toml"
    other = tmp_path / "other.toml"
    other.write_text("version = 1\n")

    monkeypatch.delenv("IACLOUD_SITE")
    assert load_site(None) is None  # nothing anywhere: no catalog
    user.parent.mkdir(parents=True)
    user.write_text("version = 1\n[flavors.u]\nvcpus = 1\nmemory_mib = 64\n")
    assert set(load_site(None).flavors) == {"u"}
    system.parent.mkdir(parents=True)
    system.write_text("version = 1\n[flavors.s]\nvcpus = 1\nmemory_mib = 64\n")
    assert set(load_site(None).flavors) == {"s"}  # /etc first
    monkeypatch.setenv("IACLOUD_SITE", str(site_file))
    assert "m1.small" in load_site(None).flavors  # the environment over the defaults
    assert load_site(other).flavors == {}  # --site over the environment
    monkeypatch.setenv("IACLOUD_SITE", "")
    assert load_site(None) is None  # empty: no catalog, defaults not looked at
    monkeypatch.setenv("IACLOUD_SITE", str(tmp_path / "missing.toml"))
    with pytest.raises(UserError, match=r"site file not found.*IACLOUD_SITE"):
        load_site(None)
    with pytest.raises(UserError, match=r"site file not found.*--site"):
        load_site(tmp_path / "missing.toml")


def test_site_option_and_env_on_the_cli(
    run, tmp_path: Path, site_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = tmp_path / "s.toml"
    stack.write_text(
        'version = 1\n[resources.web]\ntype = "server"\nflavor = "m1.small"\n'
        'boot_volume = "default/v.qcow2"\n'
    )
    out = run("validate", str(stack), code=1)
    assert "names the site catalog, and there is none" in out
    run("validate", "--site", str(site_file), str(stack))
    monkeypatch.setenv("IACLOUD_SITE", str(site_file))
    run("validate", str(stack))
    shown = json.loads(run("site", "show", "--json"))
    assert shown["file"] == str(site_file) and shown["origin"] == "IACLOUD_SITE"
    assert shown["flavors"]["m1.small"]["memory_mib"] == 2048
    assert shown["networks"]["public"]["cidr"] == "203.0.113.0/24"
    text = run("site", "show", "--site", str(EXAMPLE))
    assert "m1.xlarge  8      16384       160" in text
    assert "from --site" in text


# ------------------------------------------------------------------ names in stacks


def _load(tmp_path: Path, registry: Registry, text: str, site: Path | None, *params: str):
    path = tmp_path / "stack.toml"
    path.write_text("version = 1\n" + text)
    catalog = read_site(site) if site is not None else None
    return load_stack(path, registry, list(params), (), catalog)


def _errors(tmp_path: Path, registry: Registry, text: str, site: Path | None, *params: str):
    with pytest.raises(UserError) as exc:
        _load(tmp_path, registry, text, site, *params)
    return exc.value.diagnostics


SERVER = '[resources.web]\ntype = "server"\nimage = "debian-12"\n'


def test_flavor_sets_the_server_sizes(tmp_path: Path, registry: Registry, site_file: Path) -> None:
    config = _load(tmp_path, registry, SERVER + 'flavor = "m1.small"\ncount = 2\n', site_file)
    props = config.resources["web[1]"].properties
    assert (props["vcpus"], props["memory_mib"], props["root_gib"]) == (1, 2048, 20)
    assert props["flavor"] == "m1.small"


def test_flavor_of_a_server_booted_from_a_volume(
    tmp_path: Path, registry: Registry, site_file: Path
) -> None:
    text = '[resources.web]\ntype = "server"\nboot_volume = "p/v.qcow2"\nflavor = "m1.small"\n'
    props = _load(tmp_path, registry, text, site_file).resources["web"].properties
    assert (props["vcpus"], props["memory_mib"]) == (1, 2048) and "root_gib" not in props


def test_flavor_from_a_parameter(tmp_path: Path, registry: Registry, site_file: Path) -> None:
    text = '[parameters.size]\ntype = "string"\ndefault = "m1.tiny"\n' + SERVER
    text += 'flavor = { get_param = "size" }\n'
    props = _load(tmp_path, registry, text, site_file, "size=m1.medium").resources["web"].properties
    assert (props["vcpus"], props["memory_mib"], props["flavor"]) == (2, 4096, "m1.medium")


def test_flavor_problems(tmp_path: Path, registry: Registry, site_file: Path) -> None:
    (d,) = _errors(tmp_path, registry, SERVER + 'flavor = "m1.smal"\n', site_file)
    assert (d.address, d.field) == ("resources.web", "flavor")
    assert "not in the site catalog" in d.message and d.hint == "did you mean 'm1.small'?"
    (d,) = _errors(tmp_path, registry, SERVER + 'flavor = "m1.small"\nvcpus = 4\n', site_file)
    assert d.field == "vcpus" and "cannot be given as well" in d.message
    ref = '[resources.v]\ntype = "volume"\nsize_gib = 1\n'
    (d,) = _errors(
        tmp_path, registry, ref + SERVER + 'flavor = { get_resource = "v" }\n', site_file
    )
    assert "known at load time" in d.message
    (d,) = _errors(
        tmp_path, registry, SERVER.replace("debian-12", "p/x.qcow2") + 'flavor = "m1.tiny"\n', None
    )
    assert "there is none" in d.message and "IACLOUD_SITE" in d.hint


def test_flavor_change_plans_restart_and_live_grow(
    tmp_path: Path, registry: Registry, site_file: Path
) -> None:
    def inputs(flavor: str) -> dict:
        config = _load(tmp_path, registry, SERVER + f'flavor = "{flavor}"\n', site_file)
        props = dict(config.resources["web"].properties)
        props["image"] = "default/iacsite-debian-12-72e8b4fef20d.qcow2"  # as applied
        return normalize_inputs(Server, props)

    changes = {c.field: c for c in diff_inputs(Server, inputs("m1.small"), inputs("m1.medium"))}
    assert {f: c.disruption for f, c in changes.items()} == {
        "vcpus": Disruption.RESTART,
        "memory_mib": Disruption.RESTART,
        "root_gib": Disruption.LIVE,
        "flavor": Disruption.NONE,
    }
    assert not any(c.forces_replacement for c in changes.values())
    assert max_disruption([c.disruption for c in changes.values()]) is Disruption.RESTART


def test_plan_of_a_flavor_server(run, tmp_path: Path, site_file: Path) -> None:
    stack = tmp_path / "s.toml"
    stack.write_text("version = 1\n" + SERVER + 'flavor = "m1.small"\n')
    plan = json.loads(run("plan", "--no-refresh", "--json", "--site", str(site_file), str(stack)))
    by_address = {c["address"]: c for c in plan["changes"]}
    web = by_address["web"]["after"]
    assert (web["vcpus"], web["memory_mib"], web["root_gib"]) == (1, 2048, 20)
    assert web["image"] == {"__unknown__": {"get_resource": "site-image-debian-12"}}
    image = by_address["site-image-debian-12"]
    assert image["type"] == SITE_IMAGE_TYPE and image["after"]["sha256"] == SHA


def test_catalog_images_become_one_shared_site_image(
    tmp_path: Path, registry: Registry, site_file: Path
) -> None:
    text = SERVER + "count = 2\n"
    text += '[resources.data]\ntype = "volume"\nsize_gib = 30\nimage = "ubuntu-22.04"\n'
    text += '[resources.disk2]\ntype = "volume"\nsize_gib = 30\nimage = "ubuntu-22.04"\n'
    config = _load(tmp_path, registry, text, site_file)
    deb, ubu = site_image_name("debian-12"), site_image_name("ubuntu-22.04")
    assert deb == "site-image-debian-12"
    assert ubu.startswith("site-image-ubuntu-22_04-")
    sites = [r for r in config.resources.values() if r.type == SITE_IMAGE_TYPE]
    assert sorted(r.address for r in sites) == sorted([deb, ubu])
    assert config.resources[deb].properties == {
        "name": "debian-12",
        "source": str(site_file.parent / "images" / "debian-12.qcow2"),
        "format": "qcow2",
        "sha256": SHA,
    }
    assert config.resources["web[0]"].depends_on == (deb,)
    assert config.resources["disk2"].depends_on == (ubu,)


def test_image_ids_and_references_are_left_alone(
    tmp_path: Path, registry: Registry, site_file: Path
) -> None:
    text = '[resources.base]\ntype = "image"\nsource = "x.qcow2"\nformat = "qcow2"\n'
    text += '[resources.a]\ntype = "server"\nimage = { get_resource = "base" }\n'
    text += '[resources.b]\ntype = "server"\nimage = "default/some.qcow2"\n'
    config = _load(tmp_path, registry, text, site_file)
    assert config.resources["b"].properties["image"] == "default/some.qcow2"
    assert not any(r.type == SITE_IMAGE_TYPE for r in config.resources.values())


def test_image_problems(tmp_path: Path, registry: Registry, site_file: Path) -> None:
    (d,) = _errors(tmp_path, registry, SERVER.replace("debian-12", "debian-11"), site_file)
    assert d.field == "image" and d.hint == "did you mean 'debian-12'?"
    # a stack may not declare site images itself (their sources are trusted)
    text = '[resources.x]\ntype = "site_image"\nname = "x"\nsource = "/etc/shadow"\n'
    text += f'format = "raw"\nsha256 = "{SHA}"\n'
    (d,) = _errors(tmp_path, registry, text, site_file)
    assert "reserved for the site catalog" in d.message and d.field == "type"
    # the name a catalog image takes is not free for the stack's own resources
    text = SERVER + '[resources.site-image-debian-12]\ntype = "volume"\nsize_gib = 1\n'
    (d,) = _errors(tmp_path, registry, text, site_file)
    assert d.address == "resources.site-image-debian-12"


def test_key_pairs_by_name(tmp_path: Path, registry: Registry, site_file: Path) -> None:
    other = "ssh-rsa AAAAB3NzaC1yc2E bob@host"
    text = SERVER + f'ssh_keys = ["alice", "{other}"]\n'
    props = _load(tmp_path, registry, text, site_file).resources["web"].properties
    assert props["ssh_keys"] == [KEY, other]
    # HOT's key_name: in front of ssh_keys, and gone as a field
    props = (
        _load(tmp_path, registry, SERVER + 'key_name = "alice"\n', site_file)
        .resources["web"]
        .properties
    )
    assert props["ssh_keys"] == [KEY] and "key_name" not in props
    (d,) = _errors(tmp_path, registry, SERVER + 'ssh_keys = ["alcie"]\n', site_file)
    assert d.field == "ssh_keys[0]" and d.hint == "did you mean 'alice'?"
    (d,) = _errors(tmp_path, registry, SERVER + 'key_name = "bob"\n', site_file)
    assert d.field == "key_name" and "key pair 'bob' is not in the site catalog" in d.message


def test_networks_by_name(tmp_path: Path, registry: Registry, site_file: Path) -> None:
    text = SERVER + 'networks = [{ network = "public" }, { network = "br-lab" }]\n'
    props = _load(tmp_path, registry, text, site_file).resources["web"].properties
    assert [n["network"] for n in props["networks"]] == ["br-ex", "br-lab"]


def test_without_names_the_document_is_untouched(tmp_path: Path, registry: Registry) -> None:
    text = '[resources.web]\ntype = "server"\nimage = "p/x.qcow2"\nvcpus = 2\n'
    config = _load(tmp_path, registry, text, None)
    assert config.resources["web"].properties == {"image": "p/x.qcow2", "vcpus": 2}


# ------------------------------------------------------------------ custom constraints


def _param(kind: str, default: str | list, ptype: str = "string", hidden: bool = False) -> str:
    text = f'[parameters.p]\ntype = "{ptype}"\ndefault = {toml_value(default)}\n'
    if hidden:
        text += "hidden = true\n"
    return text + f'constraints = [{{ custom_constraint = "{kind}" }}]\n'


@pytest.mark.parametrize(
    "kind,good,bad,suggestion",
    [
        ("nova.flavor", "m1.small", "m1.smal", "m1.small"),
        ("glance.image", "ubuntu-22.04", "ubuntu-22.4", "ubuntu-22.04"),
        ("nova.keypair", "alice", "alcie", "alice"),
        ("neutron.network", "public", "pubic", "public"),
    ],
)
def test_catalog_custom_constraints(
    tmp_path: Path, registry: Registry, site_file: Path, kind, good, bad, suggestion
) -> None:
    _load(tmp_path, registry, _param(kind, good), site_file)
    (d,) = _errors(tmp_path, registry, _param(kind, bad), site_file)
    assert (d.address, d.field) == ("parameters.p", "constraints[0]")
    assert f"violates custom_constraint {kind}" in d.message
    assert f"did you mean '{suggestion}'?" in d.message
    assert str(site_file) in d.message
    (d,) = _errors(tmp_path, registry, _param(kind, good), None)
    assert "without a site catalog" in d.message


def test_custom_constraints_on_lists_hidden_values_and_syntax(
    tmp_path: Path, registry: Registry, site_file: Path
) -> None:
    (d,) = _errors(tmp_path, registry, _param("nova.keypair", ["alice", "eve"], "list"), site_file)
    assert '"eve" is not a key pair' in d.message
    (d,) = _errors(tmp_path, registry, _param("nova.flavor", "s3cr3t-x", hidden=True), site_file)
    assert "s3cr3t-x" not in str(d)
    _load(tmp_path, registry, _param("ip_addr", "198.18.0.1"), None)
    _load(tmp_path, registry, _param("net_cidr", "198.18.0.0/15"), None)
    _load(tmp_path, registry, _param("mac_addr", "52:54:00:AA:bb:01"), None)
    for kind, bad in (("ip_addr", "1.2.3"), ("net_cidr", "x/33"), ("mac_addr", "52:54")):
        (d,) = _errors(tmp_path, registry, _param(kind, bad), None)
        assert f"violates custom_constraint {kind}" in d.message
    (d,) = _errors(tmp_path, registry, _param("nova.server", "x"), site_file)
    assert "unsupported custom_constraint 'nova.server'" in d.message
    assert "nova.flavor" in d.message
    found = _errors(tmp_path, registry, _param("nova.flavor", "m1.tiny", "number"), site_file)
    assert any("applies to string or list parameters" in d.message for d in found)
