"""`iacloud convert`: the TOML it writes plans exactly as the source does (planned without
refresh against empty state, which reads no host), and what it refuses."""

from __future__ import annotations

import json
import shutil
import sys
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
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleStackTestKeyOnly0123456789abcdefgh t@h"
PARAMS = {
    "demo.toml": (),
    "cluster.toml": (f"ssh_key={KEY}",),
    "single-server.toml": (f"ssh_key={KEY}",),
    "two-tier.toml": (f"ssh_key={KEY}",),
}


@pytest.fixture(autouse=True)
def no_host(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("converting or planning opened libvirt")

    for name in ("open", "openReadOnly", "openAuth"):
        monkeypatch.setattr(libvirt, name, refuse)


def planned(
    path: Path,
    params: tuple[str, ...],
    state: Path,
    site: Path | None = None,
    env_files: list[Path] | None = None,
) -> list:
    """The plan's changes as JSON, without what names the file planned."""
    ws = engine.Workspace(path, state_url=str(state), site_file=site)
    config = ws.load(list(params), env_files or [])
    the_plan, _ = engine.make_plan(ws, config, PlanOptions(refresh=False))
    data = plan_json(the_plan)
    return [{k: v for k, v in change.items() if k not in ("id",)} for change in data["changes"]]


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_converting_gives_the_same_plan(tmp_path: Path, name: str) -> None:
    # beside the repository's stacks, so their relative image paths resolve the same
    work = tmp_path / "stacks"
    work.mkdir()
    source = work / name
    shutil.copy(ROOT / "stacks" / name, source)
    (tmp_path / "build").symlink_to(ROOT / "build")
    out = work / f"converted-{name}"
    params = PARAMS[name]
    result = engine.convert(engine.Workspace(source), params, (), out)
    assert out.read_text() == result.text
    assert result.text.startswith(f"# Converted from {name} by 'iacloud convert'.\n")
    assert tomllib.loads(result.text)["name"] == tomllib.loads(source.read_text()).get(
        "name", source.stem
    )
    before = planned(source, params, tmp_path / "a.db")
    after = planned(out, params, tmp_path / "b.db")
    assert before and after == before


def test_catalog_names_stay_names(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        'version = 1\n[flavors."m1.small"]\nvcpus = 1\nmemory_mib = 2048\nroot_gib = 20\n'
        '[images.debian-12]\nsource = "/srv/d.qcow2"\nformat = "qcow2"\n'
        f'sha256 = "{"ab" * 32}"\n'
    )
    source = tmp_path / "web.toml"
    source.write_text(
        'version = 1\n[resources.web]\ntype = "server"\nflavor = "m1.small"\nimage = "debian-12"\n'
    )
    out = tmp_path / "out.toml"
    result = engine.convert(engine.Workspace(source, site_file=site), (), (), out)
    web = tomllib.loads(result.text)["resources"]["web"]
    assert web == {"type": "server", "flavor": "m1.small", "image": "debian-12"}
    assert planned(out, (), tmp_path / "a.db", site) == planned(source, (), tmp_path / "b.db", site)


def test_an_invalid_source_is_refused_and_nothing_written(tmp_path: Path) -> None:
    source = tmp_path / "bad.toml"
    source.write_text('version = 1\n[resources.web]\ntype = "server"\nvcpu = 1\n')
    out = tmp_path / "out.toml"
    with pytest.raises(UserError, match="did you mean 'vcpus'"):
        engine.convert(engine.Workspace(source), (), (), out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.toml"]  # no temporary file left


def test_convert_command(run, tmp_path: Path) -> None:
    source = tmp_path / "s.toml"
    source.write_text('version = 1\n[resources.v]\ntype = "volume"\nsize_gib = 1\n')
    text = run("convert", str(source))
    assert '[resources.v]\ntype = "volume"\nsize_gib = 1\n' in text
    out = run("convert", str(source), "-o", str(tmp_path / "o.toml"))
    assert "Wrote" in out and (tmp_path / "o.toml").exists()
    err = run("convert", str(source), "-o", str(source), code=1)
    assert "would overwrite the template" in err
    assert json.loads(json.dumps(tomllib.loads((tmp_path / "o.toml").read_text())))["version"] == 1


HEAT = ROOT / "examples" / "heat"
TEMPLATES = sorted(p.name for p in HEAT.glob("*.yaml") if not p.name.endswith(".env.yaml"))
# each template's parameter sets: (-p values, -e files); conditions are tried both ways
HEAT_PARAMS: dict[str, list[tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "two-servers.yaml": [
        ((), ()),
        ((), ("two-servers.env.yaml",)),
        ((f"admin_key={KEY}", "data_size=3"), ("two-servers.env.yaml",)),
    ],
    "group.yaml": [((), ()), (("count=1",), ())],
}


def test_every_heat_example_has_parameter_sets() -> None:
    assert TEMPLATES and sorted(HEAT_PARAMS) == TEMPLATES


@pytest.mark.parametrize("name", TEMPLATES)
def test_converting_a_heat_example_gives_the_same_plans(tmp_path: Path, name: str) -> None:
    # at the same depth as in the repository, so that ../../build/images/... resolves the same
    work = tmp_path / "examples" / "heat"
    work.mkdir(parents=True)
    for path in HEAT.iterdir():
        shutil.copy(path, work / path.name)
    (tmp_path / "build").symlink_to(ROOT / "build")
    source, out = work / name, work / "converted.toml"
    sets = HEAT_PARAMS[name]
    first_params, first_env = sets[0]
    result = engine.convert(
        engine.Workspace(source), first_params, [work / e for e in first_env], out
    )
    assert result.text.startswith(f"# Converted from {name} by 'iacloud convert'.\n")
    assert tomllib.loads(out.read_text())["name"] == source.stem
    # converted once, the TOML keeps parameters and conditions: it plans as the template
    # does for every parameter set, not only the one it was converted with
    addresses = set()
    for i, (params, env) in enumerate(sets):
        envs = [work / e for e in env]
        before = planned(source, params, tmp_path / f"a{i}.db", env_files=envs)
        after = planned(out, params, tmp_path / f"b{i}.db", env_files=envs)
        assert before, (params, env)
        assert [c["address"] for c in after] == [c["address"] for c in before]
        assert after == before, (params, env)
        addresses.add(frozenset(c["address"] for c in after))
    assert len(addresses) == len(sets) or name != "two-servers.yaml" or len(addresses) == 2


def test_conditions_are_written_and_decided_in_toml(tmp_path: Path) -> None:
    source = tmp_path / "c.yaml"
    source.write_text(
        "heat_template_version: 2018-08-31\n"
        "parameters:\n  big: {type: boolean, default: false}\n"
        "conditions:\n  is_big: {get_param: big}\n  small: {not: is_big}\n"
        "resources:\n"
        "  extra: {type: OS::Cinder::Volume, condition: is_big, properties: {size: 1}}\n"
        "  data:\n    type: OS::Cinder::Volume\n"
        "    properties: {size: {if: [is_big, 10, 1]}}\n"
        "outputs:\n  extra: {condition: is_big, value: {get_resource: extra}}\n"
        "  small: {condition: small, value: yes}\n"
    )
    out = tmp_path / "c.toml"
    engine.convert(engine.Workspace(source), (), (), out)
    data = tomllib.loads(out.read_text())
    assert data["resources"]["extra"]["condition"] == {"get_param": "big"}
    assert data["outputs"]["small"]["condition"] == {"not": {"get_param": "big"}}
    for params in ((), ("big=true",)):
        a = engine.Workspace(source).load(list(params))
        b = engine.Workspace(out).load(list(params))
        assert sorted(a.resources) == sorted(b.resources)
        assert sorted(a.outputs) == sorted(b.outputs)
        assert a.resources["data"].properties == b.resources["data"].properties
    assert "extra" not in engine.Workspace(out).load([]).resources
    assert sorted(engine.Workspace(out).load(["big=true"]).outputs) == ["extra"]


def test_hidden_parameters_stay_hidden_and_their_outputs_sensitive(tmp_path: Path) -> None:
    source = tmp_path / "h.yaml"
    source.write_text(
        "heat_template_version: 2018-08-31\n"
        "parameters:\n  token: {type: string, hidden: true, default: s3cret}\n"
        "resources:\n  none: {type: OS::Heat::None}\n"
        "outputs:\n  token: {value: {list_join: ['-', [{get_param: token}, x]]}}\n"
        "  plain: {value: x, description: ''}\n"
    )
    text = engine.convert(engine.Workspace(source), (), (), tmp_path / "h.toml").text
    data = tomllib.loads(text)
    assert data["parameters"]["token"]["hidden"] is True
    assert data["outputs"]["token"]["sensitive"] is True
    assert data["outputs"]["plain"] == {"value": "x"}
    config = engine.Workspace(tmp_path / "h.toml").load([])
    assert config.outputs["token"].sensitive and not config.outputs["plain"].sensitive
    assert engine.Workspace(source).load([]).outputs["token"].sensitive
