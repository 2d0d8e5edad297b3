"""Issue 10 item 14: paths in provider settings are absolute, normalized and free of control
characters; files iacloud writes by name lie under directories it owns; image sources outside
the stack's directory tree need image_roots / IACLOUD_IMAGE_ROOTS."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from iacloud import paths
from iacloud.cli.main import cli
from iacloud.providers.libvirt.settings import LibvirtSettings
from iacloud.providers.netlink.settings import NetlinkSettings


@pytest.mark.parametrize(
    "value",
    ["/etc/passwd", "/run/iacloud/../../etc/passwd", "/run/iacloud", "relative/cache",
     "/run/iacloud/virt\ntype", "/run/iacloud//virt-type"],
)  # fmt: skip
def test_virt_type_cache_outside_owned_directories_is_refused(value: str) -> None:
    with pytest.raises(ValidationError):
        LibvirtSettings(virt_type_cache=value)


def test_virt_type_cache_default_and_data_dir_are_accepted(data_dir: Path) -> None:
    assert LibvirtSettings().virt_type_cache == "/run/iacloud/virt-type"
    assert LibvirtSettings(virt_type_cache=f"{data_dir}/virt-type")


@pytest.mark.parametrize(
    "value", ["../../../etc", "/var/lib/iacloud/net\0x", "/var/lib/iacloud/net\nx", "/etc/net",
              "/var/lib/iacloud/./net", "~/net"],
)  # fmt: skip
def test_netlink_state_dir_is_confined(value: str) -> None:
    with pytest.raises(ValidationError):
        NetlinkSettings(state_dir=value)


def test_netlink_state_dir_under_an_owned_root(data_dir: Path) -> None:
    assert NetlinkSettings(state_dir="/var/lib/iacloud/shared-net").state_dir
    assert NetlinkSettings(state_dir=f"{data_dir}/net").state_dir


@pytest.mark.parametrize(
    "value", ["/var/lib/iacloud/po\x01ol", "/etc/iacloud-pool", "/", "/var", "/usr/local/pool",
              "relative/dir", "/srv/pool/"],
)  # fmt: skip
def test_pool_path_is_checked(value: str) -> None:
    with pytest.raises(ValidationError):
        LibvirtSettings(pool_path=value)
    assert LibvirtSettings(pool_path="/tmp/h-test/pool").pool_path == "/tmp/h-test/pool"


def test_bad_settings_path_in_a_stack_is_a_diagnostic(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        'version = 1\nname = "p"\n[provider.libvirt]\nvirt_type_cache = "/etc/passwd"\n'
    )
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1
    assert "provider.libvirt, field 'virt_type_cache'" in result.output
    assert "under a directory iacloud owns" in result.output


IMAGE_STACK = """version = 1
name = "img"
[resources.base]
type = "image"
source = "{source}"
format = "raw"
"""


def plan(stack_dir: Path, source: str, extra: str = "") -> str:
    path = stack_dir / "s.toml"
    path.write_text(IMAGE_STACK.format(source=source) + extra)
    state = stack_dir.parent / f"{stack_dir.name}-state.db"
    result = CliRunner().invoke(cli, ["plan", "--no-refresh", "--state", str(state), str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.output


@pytest.fixture
def stack_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("IACLOUD_IMAGE_ROOTS", raising=False)
    d = tmp_path / "stack"
    d.mkdir()
    (d / "ok.raw").write_bytes(b"\0" * 512)
    return d


@pytest.mark.parametrize("source", ["/etc/shadow", "file:///etc/shadow", "../outside.raw"])
def test_image_source_outside_the_stack_tree_is_refused(stack_dir: Path, source: str) -> None:
    out = plan(stack_dir, source)
    assert "outside the stack's directory tree" in out
    assert "resources.base, field 'source'" in out


def test_symlink_out_of_the_tree_is_refused(stack_dir: Path) -> None:
    (stack_dir / "link.raw").symlink_to("/etc/hostname")
    assert "which resolves to /etc/hostname" in plan(stack_dir, "link.raw")


def test_image_source_inside_the_tree_or_a_root_is_planned(
    stack_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "1 to create" in plan(stack_dir, "ok.raw")
    outside = stack_dir.parent / "images"
    outside.mkdir()
    (outside / "x.raw").write_bytes(b"\0" * 512)
    assert "outside" in plan(stack_dir, str(outside / "x.raw"))
    setting = f'[provider.libvirt]\nimage_roots = ["{outside}"]\n'
    assert "1 to create" in plan(stack_dir, str(outside / "x.raw"), setting)
    monkeypatch.setenv("IACLOUD_IMAGE_ROOTS", str(outside))
    assert "1 to create" in plan(stack_dir, str(outside / "x.raw"))


def test_stack_tree_is_the_git_working_tree(stack_dir: Path) -> None:
    repo = stack_dir.parent
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "images").mkdir()
    (repo / "images" / "x.raw").write_bytes(b"\0" * 512)
    assert paths.stack_tree(stack_dir) == repo.resolve()
    assert "1 to create" in plan(stack_dir, "../images/x.raw")
