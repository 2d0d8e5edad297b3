"""Placement against real lab hosts (scripts/lab-hosts.sh): `iacloud plan --site` reads h1
and h2 through their own libvirtd, puts two anti-affine servers on different hosts and says
why, chooses the host with room when the other is full, and refuses a server that fits
nowhere with each host's reason. Only plans: nothing is created."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab import HOSTS, lab, site_text

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "build" / "images" / "tiny.qcow2"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    lab("up", str(len(HOSTS)))
    path = tmp_path_factory.mktemp("pl") / "site.toml"
    path.write_text(site_text())
    yield path


def write_stack(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pl.toml"
    path.write_text(
        f'version = 1\nname = "pl"\n[resources.tiny]\ntype = "image"\nsource = "{TINY}"\n'
        f'format = "qcow2"\n{body}'
    )
    return path


def plan(stack: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "iacloud.cli.main", "plan", "--json", "--site", str(site),
         str(stack)],
        capture_output=True, text=True, timeout=180, check=False, cwd=stack.parent,
    )  # fmt: skip


def servers(memory: int, extra: str = "") -> str:
    return f"""
[resources.web]
type = "server"
count = 2
image = {{ get_resource = "tiny" }}
memory_mib = {memory}
{extra}
"""


def test_anti_affine_servers_land_on_different_hosts_with_reasons(
    site: Path, tmp_path: Path
) -> None:
    body = '[resources.spread]\ntype = "server_group"\npolicy = "anti-affinity"\n' + servers(
        128, 'server_group = { get_resource = "spread" }'
    )
    done = plan(write_stack(tmp_path, body), site)
    assert done.returncode == 0, done.stderr
    changes = {c["address"]: c for c in json.loads(done.stdout)["changes"]}
    placed = {a: changes[a]["after"]["host"] for a in ("web[0]", "web[1]")}
    assert set(placed.values()) == {"h1", "h2"}
    why = changes["web[1]"]["why"][-1]
    assert why["code"] == "placed"
    assert f"{placed['web[0]']} excluded: anti-affinity with web[0]" in why["detail"]
    assert why["detail"].startswith(f"{placed['web[1]']}: ")


def test_a_server_too_big_for_every_host_fails_at_plan_time(site: Path, tmp_path: Path) -> None:
    done = plan(write_stack(tmp_path, servers(1 << 20)), site)
    assert done.returncode == 1
    assert "resources.web[0]" in done.stderr and "field 'host'" in done.stderr
    for name in HOSTS:
        assert f"{name}: " in done.stderr and "RAM free, needs 1024.0 GiB" in done.stderr
    assert "Traceback" not in done.stderr
