"""Servers and volumes on the site's hosts (#16), through the CLI against the real lab hosts
(scripts/lab-hosts.sh): a stack with servers on h1 and h2 and a volume that follows its server
is applied, each object checked in its host's own libvirtd, the image copied once per host;
re-plan is empty and drift in sync across hosts; with h2's libvirtd stopped, h2's server is
"unknown" and the rest is still planned; destroy leaves nothing of the stack on either host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from lab import HOSTS, lab, run_stack, uri, workdir

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "build" / "images" / "tiny.qcow2"
COPY = "iacsite-copy-"

STACK = f"""
version = 1
name = "rh"

[resources.tiny]
type = "image"
source = "{TINY}"
format = "qcow2"

[resources.data]
type = "volume"
size_gib = 1

[resources.a]
type = "server"
image = {{ get_resource = "tiny" }}
memory_mib = 128
host = "h1"
volumes = [{{ get_resource = "data" }}]

[resources.b]
type = "server"
image = {{ get_resource = "tiny" }}
memory_mib = 128
host = "h2"
"""
MORE = """
[resources.c]
type = "server"
image = { get_resource = "tiny" }
memory_mib = 128
host = "h1"
"""


def objects(addr: str) -> tuple[list[str], list[str]]:
    """(domain names, volume names in pool iacloud) on a lab host."""
    conn = libvirt.open(uri(addr))
    try:
        domains = sorted(d.name() for d in conn.listAllDomains(0))
        try:
            pool = conn.storagePoolLookupByName("iacloud")
            pool.refresh(0)
            volumes = sorted(pool.listVolumes())
        except libvirt.libvirtError:
            volumes = []
        return domains, volumes
    finally:
        conn.close()


def remove_copies() -> None:
    for addr in HOSTS.values():
        conn = libvirt.open(uri(addr))
        try:
            pool = conn.storagePoolLookupByName("iacloud")
            for name in pool.listVolumes():
                if name.startswith(COPY):
                    pool.storageVolLookupByName(name).delete(0)
        except libvirt.libvirtError:
            pass
        finally:
            conn.close()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = workdir(tmp_path_factory, "rh", rh=STACK)
    remove_copies()
    yield path
    lab("up", str(len(HOSTS)))
    iacloud(path, "destroy", "--auto-approve")
    remove_copies()


def iacloud(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_stack(work, "rh.toml", *args)


def h2_libvirtd() -> int:
    for pid in subprocess.run(
        ["ip", "netns", "pids", "iaclab-h2"], capture_output=True, text=True, check=True
    ).stdout.split():
        if Path(f"/proc/{pid}/comm").read_text().strip() == "libvirtd":
            return int(pid)
    raise AssertionError("no libvirtd in iaclab-h2")


def test_servers_and_volumes_land_on_their_hosts(work: Path) -> None:
    done = iacloud(work, "apply", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    (h1_domains, h1_volumes), (h2_domains, h2_volumes) = objects(HOSTS["h1"]), objects(HOSTS["h2"])
    assert [d for d in h1_domains if d.startswith("rh-a-")] and not any(
        d.startswith("rh-b-") for d in h1_domains
    )
    assert [d for d in h2_domains if d.startswith("rh-b-")]
    # the volume follows the server it is attached to; the image is copied once per host
    assert any(v.endswith("-data.qcow2") for v in h1_volumes)
    assert not any(v.endswith("-data.qcow2") for v in h2_volumes)
    assert sum(v.startswith(COPY) for v in h1_volumes) == 1
    assert sum(v.startswith(COPY) for v in h2_volumes) == 1
    state = json.loads(iacloud(work, "plan", "--json").stdout)
    assert not [c for c in state["changes"] if c["action"] != "no-op"]
    drift = iacloud(work, "drift")
    assert drift.returncode == 0 and "In sync: 4 of 4" in drift.stdout, drift.stdout


def test_a_down_host_makes_its_servers_unknown_and_the_rest_is_planned(work: Path) -> None:
    (work / "rh.toml").write_text(STACK + MORE)
    os.kill(h2_libvirtd(), signal.SIGTERM)
    time.sleep(1)
    done = iacloud(work, "plan", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    unknown = [d for d in plan["drift"] if d["kind"] == "unknown"]
    assert [d["address"] for d in unknown] == ["b"] and "host h2 is down" in unknown[0]["reason"]
    # its sshd answers: the reason says it is the daemon, not the transport
    assert "libvirtd is not running" in unknown[0]["reason"], unknown[0]["reason"]
    actions = {c["address"]: c["action"] for c in plan["changes"]}
    assert actions["c"] == "create" and actions["b"] == "no-op"
    text = iacloud(work, "plan").stdout
    assert "Not reachable" in text and "b (server): host h2 is down" in text
    drift = iacloud(work, "drift")
    assert "b not checked: host h2 is down" in drift.stdout + drift.stderr
    lab("up", str(len(HOSTS)))  # h2's libvirtd back: b is found as it was
    again = json.loads(iacloud(work, "plan", "--json").stdout)
    assert not [d for d in again["drift"] if d["kind"] == "unknown"]
    (work / "rh.toml").write_text(STACK)


def test_destroy_leaves_nothing_of_the_stack_on_either_host(work: Path) -> None:
    # the stack's volumes carry its tag: iac-<first 8 of the stack id>-...
    ids = [d for d in objects(HOSTS["h1"])[0] if d.startswith("rh-")]
    assert ids
    tag = "iac-" + ids[0].rsplit("-", 1)[1][:8] + "-"
    done = iacloud(work, "destroy", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    for addr in HOSTS.values():
        domains, volumes = objects(addr)
        assert not [d for d in domains if d.startswith("rh-")]
        assert not [v for v in volumes if v.startswith(tag)]
