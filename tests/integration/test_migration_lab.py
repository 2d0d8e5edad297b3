"""Live migration (#16) between the real lab hosts: a running tiny guest on h1 moves to h2
when its `host` changes; the plan calls it `update, live`; the guest keeps running (the uptime
it prints on its console goes on from where it was, it does not start again near zero), keeps
its UUID, is gone from h1 with its disks, and the next plan is empty."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from lab import HOSTS, LAB_DIR, host_table, lab, run_stack, uri

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "build" / "images" / "tiny.qcow2"
TICK = "#!/bin/sh\nwhile true; do echo UPTIME $(cut -d' ' -f1 /proc/uptime); sleep 1; done &\n"
UPTIME = re.compile(r"UPTIME (\d+\.\d+)")


def stack(host: str) -> str:
    return f"""
version = 1
name = "mg"
[resources.tiny]
type = "image"
source = "{TINY}"
format = "qcow2"
[resources.m]
type = "server"
image = {{ get_resource = "tiny" }}
memory_mib = 128
host = "{host}"
user_data = {json.dumps(TICK)}
"""


def iacloud(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_stack(work, "mg.toml", *args)


def uptimes(host: str) -> list[float]:
    done = subprocess.run(
        ["ssh", "-F", str(LAB_DIR / "ssh_config"), host, "--",
         "tail -c 3000 /var/log/libvirt/qemu/mg-m-*.console.log"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return [float(m) for m in UPTIME.findall(done.stdout)]


def wait_uptime(host: str, above: float = 0.0, timeout: float = 90) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = [u for u in uptimes(host) if u > above]
        if seen:
            return max(seen)
        time.sleep(2)
    raise AssertionError(f"no uptime above {above} on {host}'s console")


def domains(host: str) -> dict[str, str]:
    conn = libvirt.open(uri(HOSTS[host]))
    try:
        return {d.name(): d.UUIDString() for d in conn.listAllDomains(0) if d.isActive()}
    finally:
        conn.close()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    lab("up", str(len(HOSTS)))
    path = tmp_path_factory.mktemp("mg")
    (path / "site.toml").write_text(
        "version = 1\n" + "".join(host_table(n, a) for n, a in HOSTS.items())
    )
    (path / "mg.toml").write_text(stack("h1"))
    yield path
    iacloud(path, "destroy", "--auto-approve")


def test_a_running_server_moves_live_to_another_host(work: Path) -> None:
    done = iacloud(work, "apply", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    before = {n: u for n, u in domains("h1").items() if n.startswith("mg-m-")}
    assert before
    ran = wait_uptime("h1")
    (work / "mg.toml").write_text(stack("h2"))
    plan = json.loads(iacloud(work, "plan", "--json").stdout)
    m = next(c for c in plan["changes"] if c["address"] == "m")
    assert (m["action"], m["disruption"]) == ("update", "live")
    assert [f["field"] for f in m["fields"]] == ["host"]
    done = iacloud(work, "apply", "--auto-approve", "--max-disruption", "live")
    assert done.returncode == 0, done.stdout + done.stderr
    after = {n: u for n, u in domains("h2").items() if n.startswith("mg-m-")}
    assert after == before  # the same domain (name and UUID), running on h2 now
    assert not [n for n in domains("h1") if n.startswith("mg-m-")]
    # it did not boot again: the uptime goes on from where it was on h1
    assert wait_uptime("h2", above=ran) > ran
    conn = libvirt.open(uri(HOSTS["h1"]))
    try:
        names = conn.storagePoolLookupByName("iacloud").listVolumes()
        left = [v for v in names if v.endswith(("-m.root.qcow2", "-m.seed.raw"))]
    finally:
        conn.close()
    assert not left  # its root disk and seed went with it
    state = json.loads(iacloud(work, "state", "show", "m", "--json").stdout)
    assert state["inputs"]["host"] == "h2"
    again = json.loads(iacloud(work, "plan", "--json").stdout)
    assert not [c for c in again["changes"] if c["action"] != "no-op"]
