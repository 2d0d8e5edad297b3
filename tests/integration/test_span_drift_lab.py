"""Drift of a network's sides on the hosts it spans (#16) on the real lab hosts: a network
spanning h1 and h2; its VXLAN device deleted on h2 (over SSH, as an operator would) makes
`iacloud drift` report the network modified (its `hosts` lack h2) and `plan` show a live update,
and `apply` makes h2's side again (links, MTU and FDB peers); an FDB entry deleted on h2 is
found and repaired the same way; a host that cannot be read makes the network unknown, not
drifted; the next plan is empty; destroy leaves no `iac*` link on any host."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab import (
    HOSTS,
    LAB_DIR,
    NODE,
    fdb_peers,
    links_of,
    on,
    run_stack,
    site_text,
    workdir,
)

STACK = f"""
version = 1
name = "ndspan"
[provider.netlink]
underlay = "{NODE}"
[resources.lan]
type = "network"
cidr = "198.18.79.0/24"
hosts = ["h1", "h2"]
"""
SITE = site_text()


def iacloud(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_stack(work, "nd.toml", *args)


def drift(work: Path) -> tuple[int, dict[str, Any]]:
    done = iacloud(work, "drift", "--json")
    assert done.returncode in (0, 2), done.stdout + done.stderr
    report = json.loads(done.stdout)
    return done.returncode, next(r for r in report["resources"] if r["address"] == "lan")


def lan_change(work: Path) -> dict[str, Any]:
    done = iacloud(work, "plan", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return next(c for c in json.loads(done.stdout)["changes"] if c["address"] == "lan")


def h2_side_is_whole(vx: str, br: str) -> None:
    assert br in links_of("h2") and vx in links_of("h2")
    shown = on("h2", "ip", "-d", "link", "show", "dev", vx)
    assert "mtu 1450" in shown and f"master {br}" in shown and "dstport 4789" in shown
    assert fdb_peers(on("h2", "bridge", "fdb", "show", "dev", vx)) == {NODE, HOSTS["h1"]}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = workdir(tmp_path_factory, "nd", nd=STACK)
    try:
        yield path
    finally:  # also when a test failed: nothing of this stack stays on any host
        (path / "site.toml").write_text(SITE)
        iacloud(path, "destroy", "--auto-approve")


@pytest.fixture(scope="module")
def names(work: Path) -> tuple[str, str]:
    done = iacloud(work, "apply", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    state = json.loads(iacloud(work, "state", "show", "lan", "--json").stdout)
    br = str(state["id"])
    return br, "iacx" + br[4:]


def test_applied_network_is_in_sync(work: Path, names: tuple[str, str]) -> None:
    br, vx = names
    h2_side_is_whole(vx, br)
    code, lan = drift(work)
    assert code == 0 and lan["status"] == "in-sync", lan
    assert lan_change(work)["action"] == "no-op"


def test_a_deleted_vxlan_device_on_h2_is_drift_and_apply_repairs_it(
    work: Path, names: tuple[str, str]
) -> None:
    br, vx = names
    on("h2", "ip", "link", "del", "dev", vx)
    assert vx not in links_of("h2")
    code, lan = drift(work)
    assert code == 2 and lan["status"] == "modified", lan
    assert lan["differences"] == [
        {"attribute": "hosts", "recorded": ["h1", "h2"], "actual": ["h1"], "sensitive": False,
         "suppressed": False, "effective": []}
    ]  # fmt: skip
    change = lan_change(work)
    assert change["action"] == "update" and change["disruption"] == "live", change
    assert change["after"]["hosts"] == ["h1", "h2"]
    done = iacloud(work, "apply", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    h2_side_is_whole(vx, br)
    assert lan_change(work)["action"] == "no-op"
    assert drift(work)[0] == 0


def test_a_deleted_fdb_entry_on_h2_is_drift_and_apply_repairs_it(
    work: Path, names: tuple[str, str]
) -> None:
    br, vx = names
    on("h2", "bridge", "fdb", "del", "00:00:00:00:00:00", "dev", vx, "dst", HOSTS["h1"])
    assert fdb_peers(on("h2", "bridge", "fdb", "show", "dev", vx)) == {NODE}
    code, lan = drift(work)
    assert code == 2 and [d["actual"] for d in lan["differences"]] == [["h1"]], lan
    done = iacloud(work, "apply", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    h2_side_is_whole(vx, br)
    assert lan_change(work)["action"] == "no-op"


def test_a_host_that_cannot_be_read_makes_the_network_unknown(
    work: Path, names: tuple[str, str]
) -> None:
    # h2 reached without the lab's ssh_config (no key, no known host): ssh itself fails, as
    # for a host that is down; its underlay address stays the same
    unreachable = SITE.replace(
        f'ssh = {{ target = "h2", ssh_config = "{LAB_DIR}/ssh_config" }}',
        f'ssh = {{ target = "root@{HOSTS["h2"]}", known_hosts = "/dev/null" }}',
    )
    assert unreachable != SITE
    (work / "site.toml").write_text(unreachable)
    try:
        code, lan = drift(work)
        assert code == 0 and lan["status"] == "unknown", lan
        assert "host h2 cannot be reached over ssh" in lan["reason"], lan
        assert lan_change(work)["action"] == "no-op"
    finally:
        (work / "site.toml").write_text(SITE)


def test_destroy_leaves_no_link_on_any_host(work: Path, names: tuple[str, str]) -> None:
    br, vx = names
    done = iacloud(work, "destroy", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    for host in HOSTS:
        assert not links_of(host), (host, links_of(host))
    local = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert br not in local and vx not in local
