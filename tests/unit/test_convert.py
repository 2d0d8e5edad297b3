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


HEAT_CASES = {
    "group": ("group.yaml", (), ()),
    "two-servers-defaults": ("two-servers.yaml", (), ()),
    "two-servers-env-and-key": (
        "two-servers.yaml",
        (f"admin_key={KEY}",),
        ("two-servers.env.yaml",),
    ),
}


@pytest.mark.parametrize("case", sorted(HEAT_CASES))
def test_a_heat_template_converts_to_a_stack_that_plans_the_same(tmp_path: Path, case: str) -> None:
    name, params, envs = HEAT_CASES[case]
    work = tmp_path / "examples" / "heat"
    work.mkdir(parents=True)
    for f in (ROOT / "examples" / "heat").iterdir():
        shutil.copy(f, work / f.name)
    (tmp_path / "build").symlink_to(ROOT / "build")
    source = work / name
    env_files = [work / e for e in envs]
    out = work / f"{source.stem}.toml"
    result = engine.convert(engine.Workspace(source), params, env_files, out)
    assert result.text.startswith(f"# Converted from {name} by 'iacloud convert'.\n")
    before = planned(source, params, tmp_path / "a.db", env_files=env_files)
    after = planned(out, params, tmp_path / "b.db", env_files=env_files)
    assert before and after == before
    if name == "two-servers.yaml":
        admin = any(c["address"] == "admin" for c in after)
        assert admin is bool(params)  # the condition decided with the parameters given
        assert ("Left out because their condition was false: resources.admin." in result.text) is (
            not params
        )
