"""Migration (#16) between the real lab hosts: a running tiny guest on h1 with a data volume
moves to h2 when its `host` changes; the plan calls it `update, live`; the guest keeps running
(the uptime it prints on its console goes on from where it was, it does not start again near
zero), keeps its UUID, what it wrote on its volume on h1 is in the volume on h2, it is gone
from h1 with its disks, and the next plan is empty. A stopped server moves too and stays
stopped, and a detached volume is streamed over. A server on the provider's own libvirtd
cannot migrate to a catalog host: the plan replaces it and says why, and --max-disruption live
refuses that."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from lab import HOSTS, on, run_stack, site_text, uri, workdir

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "build" / "images" / "tiny.qcow2"
TICK = (
    "#!/bin/sh\n"
    # a mark on the data volume, written on the first host, read back on the second
    "mark=\"IACMARK $(cut -d' ' -f1 /proc/uptime)\"\n"
    'for d in /dev/vd[b-z]; do echo "$mark" > $d; done; sync; echo "$mark"\n'
    "while true; do echo UPTIME $(cut -d' ' -f1 /proc/uptime); sleep 1; done &\n"
)
UPTIME = re.compile(r"UPTIME (\d+\.\d+)")
MARK = re.compile(r"IACMARK \d+\.\d+")


def stack(host: str, stopped_host: str = "h1") -> str:
    return f"""
version = 1
name = "mg"
[resources.tiny]
type = "image"
source = "{TINY}"
format = "qcow2"
[resources.data]
type = "volume"
size_gib = 1
format = "raw"
[resources.m]
type = "server"
image = {{ get_resource = "tiny" }}
memory_mib = 128
host = "{host}"
volumes = [{{ get_resource = "data" }}]
user_data = {json.dumps(TICK)}
[resources.spare]
type = "volume"
size_gib = 1
host = "{stopped_host}"
[resources.off]
type = "server"
image = {{ get_resource = "tiny" }}
memory_mib = 128
host = "{stopped_host}"
power_state = "shutoff"
"""


def iacloud(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_stack(work, "mg.toml", *args)


def console(host: str, dom: str) -> str:
    """The console log of domain `dom` on `host` (its own file: older guests' logs of the
    same stack name are never read)."""
    return on(host, "cat", f"/var/log/libvirt/qemu/{dom}.console.log")


def wait_uptime(host: str, dom: str, above: float = 0.0, timeout: float = 90) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = [float(u) for u in UPTIME.findall(console(host, dom)) if float(u) > above]
        if seen:
            return max(seen)
        time.sleep(2)
    raise AssertionError(f"no uptime above {above} on {host}'s console of {dom}")


def domains(host: str, active: bool = True) -> dict[str, str]:
    conn = libvirt.open(uri(HOSTS[host]))
    try:
        return {d.name(): d.UUIDString() for d in conn.listAllDomains(0) if d.isActive() == active}
    finally:
        conn.close()


def volumes(host: str) -> list[str]:
    conn = libvirt.open(uri(HOSTS[host]))
    try:
        return list(conn.storagePoolLookupByName("iacloud").listVolumes())
    finally:
        conn.close()


def head(host: str, name: str, size: int = 4096) -> bytes:
    """The first bytes of volume `name` in the host's pool."""
    conn = libvirt.open(uri(HOSTS[host]))
    try:
        vol = conn.storagePoolLookupByName("iacloud").storageVolLookupByName(name)
        stream = conn.newStream(0)
        vol.download(stream, 0, size, 0)
        got = b""
        while len(got) < size:
            chunk = stream.recv(size - len(got))
            if not isinstance(chunk, bytes) or not chunk:
                break
            got += chunk
        stream.finish()
        return got
    finally:
        conn.close()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = workdir(tmp_path_factory, "mg", mg=stack("h1"))
    yield path
    iacloud(path, "destroy", "--auto-approve")


def test_a_running_server_moves_live_to_another_host(work: Path) -> None:
    done = iacloud(work, "apply", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    before = {n: u for n, u in domains("h1").items() if n.startswith("mg-m-")}
    assert before
    (dom,) = before
    ran = wait_uptime("h1", dom)
    mark = MARK.search(console("h1", dom))
    assert mark, "the guest wrote no mark on its volume"
    data = next(v for v in volumes("h1") if v.endswith("-data.raw"))
    spare = next(v for v in volumes("h1") if v.endswith("-spare.qcow2"))
    spare_bytes = head("h1", spare, 1 << 20)
    stopped = {n: u for n, u in domains("h1", active=False).items() if n.startswith("mg-off-")}
    assert stopped
    (work / "mg.toml").write_text(stack("h2", "h2"))
    plan = json.loads(iacloud(work, "plan", "--json").stdout)
    moves = {c["address"]: c for c in plan["changes"] if c["action"] != "no-op"}
    assert set(moves) == {"m", "off", "data", "spare"}
    for c in moves.values():
        assert (c["action"], c["disruption"], [f["field"] for f in c["fields"]]) == (
            "update",
            "live",
            ["host"],
        )
    done = iacloud(work, "apply", "--auto-approve", "--max-disruption", "live")
    assert done.returncode == 0, done.stdout + done.stderr
    after = {n: u for n, u in domains("h2").items() if n.startswith("mg-m-")}
    assert after == before  # the same domain (name and UUID), running on h2 now
    assert not [n for n in domains("h1") if n.startswith("mg-m-")]
    # it did not boot again: the uptime goes on from where it was on h1
    assert wait_uptime("h2", dom, above=ran) > ran
    # what it wrote on h1 came with its volume
    assert head("h2", data).startswith(mark.group(0).encode() + b"\n")
    # the stopped one is defined on h2 with its UUID, still stopped, and gone from h1
    assert {n: u for n, u in domains("h2", active=False).items() if n in stopped} == stopped
    assert not [n for n in domains("h1", active=False) if n.startswith("mg-off-")]
    # the detached volume was streamed over as it was
    assert head("h2", spare, 1 << 20) == spare_bytes
    left = [v for v in volumes("h1") if v.endswith(("-data.raw", "-spare.qcow2", ".root.qcow2",
                                                    ".seed.raw"))]  # fmt: skip
    assert not left  # the disks, seeds and the volumes went with them
    for address in ("m", "off", "data", "spare"):
        state = json.loads(iacloud(work, "state", "show", address, "--json").stdout)
        assert state["inputs"]["host"] == "h2", address
    again = json.loads(iacloud(work, "plan", "--json").stdout)
    assert not [c for c in again["changes"] if c["action"] != "no-op"]


def test_a_server_on_the_default_host_is_replaced_not_migrated(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text("version = 1\n")
    server = f"""
version = 1
name = "mgd"
[resources.tiny]
type = "image"
source = "{TINY}"
format = "qcow2"
[resources.d]
type = "server"
image = {{ get_resource = "tiny" }}
memory_mib = 64
power_state = "shutoff"
"""
    (tmp_path / "mgd.toml").write_text(server)
    try:
        done = run_stack(tmp_path, "mgd.toml", "apply", "--auto-approve")
        assert done.returncode == 0, done.stdout + done.stderr
        (tmp_path / "site.toml").write_text(site_text())
        (tmp_path / "mgd.toml").write_text(server + 'host = "h1"\n')
        plan = json.loads(run_stack(tmp_path, "mgd.toml", "plan", "--json").stdout)
        d = next(c for c in plan["changes"] if c["address"] == "d")
        assert d["action"] == "delete-then-create"
        why = [r for r in d["why"] if r["code"] == "not_in_place"]
        assert why and why[0]["fields"] == ["host"], d["why"]
        assert "provider's own libvirtd" in why[0]["detail"]
        refused = run_stack(tmp_path, "mgd.toml", "apply", "--auto-approve",
                            "--max-disruption", "live")  # fmt: skip
        assert refused.returncode != 0
        assert "beyond --max-disruption live" in refused.stdout + refused.stderr
        shown = json.loads(run_stack(tmp_path, "mgd.toml", "state", "show", "d", "--json").stdout)
        assert shown["inputs"].get("host") is None  # nothing changed
    finally:
        (tmp_path / "site.toml").write_text("version = 1\n")
        (tmp_path / "mgd.toml").write_text(server)
        run_stack(tmp_path, "mgd.toml", "destroy", "--auto-approve")
