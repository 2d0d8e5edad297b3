"""`iacloud hosts` and `iacloud doctor` against two real lab hosts (scripts/lab-hosts.sh): each
is read through its own libvirtd over SSH, in parallel; a stopped libvirtd makes its host
"down" with the reason while the other is still listed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from lab import HOSTS, LAB_DIR, lab, site_text, uri

from iacloud.hosts import host_states
from iacloud.loading.site_file import read_site
from iacloud.providers.libvirt import LibvirtProvider

PROBE = "hs-probe"
OWNER = "https://iacloud.dev/xmlns/owner/1"


def iacloud(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "iacloud.cli.main", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    lab("up", str(len(HOSTS)))
    path = tmp_path_factory.mktemp("hs") / "site.toml"
    path.write_text(site_text())
    yield path
    conn = libvirt.open(uri(HOSTS["h1"]))
    try:
        conn.lookupByName(PROBE).undefine()
    except libvirt.libvirtError:
        pass
    finally:
        conn.close()
    lab("up", str(len(HOSTS)))  # a test that stopped a libvirtd leaves it running again


def listing(site: Path) -> dict[str, dict]:
    done = iacloud("hosts", "--site", str(site), "--json")
    assert done.returncode == 0, done.stderr
    return {h["name"]: h for h in json.loads(done.stdout)["hosts"]}


def test_hosts_lists_real_capacity_and_use(site: Path) -> None:
    before = listing(site)
    mem_total_mib = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    for name in HOSTS:
        h = before[name]
        assert h["state"] == "up" and h["hostname"] == f"iaclab-{name}", h
        assert h["capacity"]["vcpus"] == os.cpu_count()  # a lab host is this machine's CPUs
        assert abs(h["capacity"]["memory_mib"] - mem_total_mib) <= 1
        assert h["labels"] == {"zone": f"z{name[-1]}"}
    conn = libvirt.open(uri(HOSTS["h1"]))
    try:
        dom = conn.defineXML(
            f"<domain type='qemu'><name>{PROBE}</name><memory unit='MiB'>96</memory>"
            "<vcpu>2</vcpu><metadata><iacloud:owner xmlns:iacloud='" + OWNER + "' stack='hs' "
            "stack_id='hs000000' address='web'/></metadata>"
            "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices/></domain>"
        )
        during = listing(site)
        dom.undefine()
    finally:
        conn.close()
    after = listing(site)
    use0, use1 = before["h1"]["use"], during["h1"]["use"]
    assert use1["domains"] == use0["domains"] + 1
    assert use1["iacloud_domains"] == use0["iacloud_domains"] + 1
    assert use1["vcpus"] == use0["vcpus"] + 2 and use1["memory_mib"] == use0["memory_mib"] + 96
    assert during["h2"]["use"] == before["h2"]["use"]  # h2 is another libvirtd
    assert after["h1"]["use"] == use0
    text = iacloud("hosts", "--site", str(site))
    assert text.returncode == 0 and "h1" in text.stdout and "zone=z1" in text.stdout


def test_hosts_are_read_in_parallel(site: Path) -> None:
    catalog = read_site(site)

    def timed(names: list[str]) -> float:
        one = type(catalog)(path=site, hosts={n: catalog.hosts[n] for n in names})
        best = float("inf")
        for _ in range(3):
            start = time.monotonic()
            states = host_states(one, LibvirtProvider)
            best = min(best, time.monotonic() - start)
            assert all(s.up for s in states)
        return best

    t1, t2, both = timed(["h1"]), timed(["h2"]), timed(["h1", "h2"])
    print(f"\nhosts read: h1 {t1:.3f} s, h2 {t2:.3f} s, both in parallel {both:.3f} s "
          f"({both / max(t1, t2):.2f}x the slowest)")  # fmt: skip
    assert both < 1.5 * max(t1, t2) + 0.1


def _libvirtd_pid(name: str) -> int:
    for line in lab("status").splitlines():
        fields = line.split()
        if fields and fields[0] == name:
            return int(next(f for f in fields if f.startswith("libvirtd=")).split("=")[1])
    raise AssertionError(f"no libvirtd for {name} in lab status")


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_stopped_libvirtd_makes_its_host_down_and_doctor_says_how_to_fix(site: Path) -> None:
    good = iacloud("doctor", "--site", str(site), "--json")
    checks = {c["name"]: c for c in json.loads(good.stdout)}
    for name in HOSTS:
        assert checks[f"host {name}: libvirtd"]["status"] == "ok"
        assert checks[f"host {name}: virtualization"]["status"] == "ok"
        assert checks[f"host {name}: ssh"]["status"] == "ok"
        assert checks[f"host {name}: network tools"]["status"] in ("ok", "fail")
        pool = checks[f"host {name}: pool"]
        assert pool["status"] == "ok" or "pool-define-as iacloud" in pool["fix"]

    pid = _libvirtd_pid("h2")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    try:
        start = time.monotonic()
        hosts = listing(site)
        took = time.monotonic() - start
        assert hosts["h1"]["state"] == "up"
        assert hosts["h2"]["state"] == "down" and hosts["h2"]["reason"], hosts["h2"]
        assert took < 30
        text = iacloud("hosts", "--site", str(site))
        assert "h2: down: " in text.stdout
        broken = iacloud("doctor", "--site", str(site), "--json")
        assert broken.returncode != 0
        checks = {c["name"]: c for c in json.loads(broken.stdout)}
        assert checks["host h2: libvirtd"]["status"] == "fail"
        assert checks["host h2: libvirtd"]["fix"]
        assert checks["host h2: ssh"]["status"] == "ok"  # sshd still answers
        assert checks["host h1: libvirtd"]["status"] == "ok"
        print(f"\nh2 down: {hosts['h2']['reason']} (listing took {took:.2f} s)")
    finally:
        lab("up", str(len(HOSTS)))
    assert listing(site)["h2"]["state"] == "up"


def test_doctor_for_a_host_with_a_wrong_key(site: Path, tmp_path: Path) -> None:
    bad = tmp_path / "site.toml"
    bad.write_text(
        f'version = 1\n[hosts.hx]\nuri = "{uri(HOSTS["h1"], Path("/etc/hostname"))}"\n'
        f'ssh = {{ target = "root@{HOSTS["h1"]}", identity = "/etc/hostname", '
        f'known_hosts = "{LAB_DIR / "known_hosts"}" }}\n'
    )
    done = iacloud("doctor", "--site", str(bad), "--json")
    checks = {c["name"]: c for c in json.loads(done.stdout)}
    assert done.returncode != 0
    assert checks["host hx: libvirtd"]["status"] == "fail", checks["host hx: libvirtd"]
    assert (
        checks["host hx: ssh"]["status"] == "fail" and "BatchMode" in checks["host hx: ssh"]["fix"]
    )
    print(f"\nwrong key: {checks['host hx: libvirtd']['message']}")
    hosts = listing(bad)
    assert hosts["hx"]["state"] == "down"
