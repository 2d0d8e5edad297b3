"""End-to-end with a real cloud image (Debian 12, Debian's cloud-init, netplan/networkd,
openssh-server, qemu-guest-agent; `make cloud-image`) and DEFAULT readiness settings, through
the installed `iacloud` command on real libvirtd, netlink and dnsmasq.

One module-scoped stack boots the image twice, in one apply: server `a` on machine pc with a
DHCP NIC, server `b` on q35 on a fixed port (static address through network-config). The
checks, in the order a user would make them:
- apply succeeds with the default `ready = "auto"` and default timeouts;
- `addresses` is the address each guest really has: a namespace of the test on the network
  pings it and logs in with SSH using the key the stack gave (`ssh_keys`);
- over SSH: the hostname user-data set (which is also what the `hostname` attribute says, from
  the guest agent), a `write_files` file and a `runcmd` marker; b's address is static (no
  "dynamic" flag), from network-config, not from DHCP; the instance-id is the domain uuid;
- a second plan is empty and `drift` exits 0;
- a NIC hot-plugged into a on a second network gets a DHCP address, which `addresses` reports
  after a refresh and a namespace on that network pings; detaching it again leaves nothing;
- a volume_snapshot of a volume a uses, taken while a runs, is quiesced through the guest
  agent: a file a wrote there just before, without syncing, is in the snapshot;
- destroy leaves no domain, volume, link, namespace or dnsmasq of the stack.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from e2e_cli import CLOUD, IACLOUD, iacloud

libvirt = pytest.importorskip("libvirt")
pytest.importorskip("pyroute2")

from test_cli_network import Host, leftovers, ping  # noqa: E402

pytestmark = [
    pytest.mark.libvirt,
    pytest.mark.netlink,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not shutil.which("dnsmasq"), reason="needs dnsmasq"),
    pytest.mark.skipif(not shutil.which("ssh"), reason="needs openssh-client"),
]

LAN, LAN2 = "198.18.44", "198.18.45"
B_IP = f"{LAN}.60"
APPLY_TIMEOUT = 1500  # two emulated boots on a shared 2-core host; boot_timeout is 900

STACK = """
version = 1
name = "{name}"

[resources.img]
type = "image"
source = "{image}"
format = "qcow2"

[resources.lan]
type = "network"
cidr = "{lan}.0/24"
dns = ["{lan}.53"]

[resources.lan2]
type = "network"
cidr = "{lan2}.0/24"

[resources.bport]
type = "port"
network = {{ get_resource = "lan" }}
ip = "{b_ip}"

[resources.a]
type = "server"
image = {{ get_resource = "img" }}
memory_mib = 512
networks = {a_networks}
{a_ready}
{a_volumes}
ssh_keys = ["{key}"]
user_data = '''{user_data_a}'''

[resources.b]
type = "server"
image = {{ get_resource = "img" }}
machine = "q35"
memory_mib = 512
networks = [{{ port = {{ get_resource = "bport" }} }}]
ssh_keys = ["{key}"]
user_data = '''{user_data_b}'''
{extra}"""

USER_DATA = """#cloud-config
hostname: {host}
write_files:
  - path: /etc/iacloud-e2e
    content: "written by write_files {tag}\\n"
runcmd:
  - [sh, -c, "echo runcmd-{tag} > /var/tmp/iacloud-runcmd"]
"""

ONE_NIC = '[{ network = { get_resource = "lan" } }]'
TWO_NICS = '[{ network = { get_resource = "lan" } }, { network = { get_resource = "lan2" } }]'


class Lab:
    def __init__(self, path: Path, tag: str, key: Path, pool: str) -> None:
        self.path, self.tag, self.key, self.pool = path, tag, key, pool
        self.pub = key.with_suffix(".pub").read_text().strip()

    def write(
        self, a_networks: str = ONE_NIC, a_ready: str = "", a_volumes: str = "", extra: str = ""
    ) -> Path:
        text = STACK.format(
            name=f"e2ecloud-{self.tag}",
            image=CLOUD,
            lan=LAN,
            lan2=LAN2,
            b_ip=B_IP,
            key=self.pub,
            a_networks=a_networks,
            a_ready=a_ready,
            a_volumes=a_volumes,
            extra=extra,
            user_data_a=USER_DATA.format(host=f"alpha-{self.tag}", tag=self.tag),
            user_data_b=USER_DATA.format(host=f"beta-{self.tag}", tag=self.tag),
        )
        self.path.write_text(text + self.pool)
        return self.path

    def show(self) -> dict:
        return json.loads(iacloud("show", "--json", "--stack", str(self.path)))

    def ssh(self, ns: str, ip: str, command: str) -> str:
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, "ssh", "-i", str(self.key), "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR", f"debian@{ip}", command],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout


@pytest.fixture(scope="module")
def cloud_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One IACLOUD_DATA_DIR for the module: the stack's working files (netlink records, dnsmasq
    leases, console logs) must be the same for the fixture's apply and every test's commands."""
    return tmp_path_factory.mktemp("clouddata")


@pytest.fixture
def data_dir(cloud_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Overrides the conftest's per-test data dir with the module's."""
    monkeypatch.setenv("IACLOUD_DATA_DIR", str(cloud_data))
    monkeypatch.delenv("IACLOUD_STATE", raising=False)
    return cloud_data


@pytest.fixture
def image_roots(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Overrides the conftest's: the stack (in a tmp dir) reads the cloud image from its
    directory, which IACLOUD_CLOUD_IMAGE may have put outside build/images."""
    monkeypatch.setenv("IACLOUD_IMAGE_ROOTS", str(CLOUD.parent))
    return CLOUD.parent


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, cloud_data: Path):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IACLOUD_DATA_DIR", str(cloud_data))
        mp.setenv("IACLOUD_IMAGE_ROOTS", str(CLOUD.parent))
        mp.delenv("IACLOUD_STATE", raising=False)
        yield from _lab(tmp_path_factory)


def _lab(tmp_path_factory: pytest.TempPathFactory):
    if not CLOUD.is_file():
        pytest.fail(f"{CLOUD} is missing: run `make cloud-image` (or set IACLOUD_CLOUD_IMAGE)")
    tmp = tmp_path_factory.mktemp("cloud")
    tag = uuid.uuid4().hex[:6]
    key = tmp / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"e2e-{tag}",
                    "-f", str(key)], check=True, timeout=30)  # fmt: skip
    pool_name = f"iace2e-{tag}"
    base = Path("/tmp") / pool_name
    base.mkdir(mode=0o755)
    pool = f'\n[provider.libvirt]\npool = "{pool_name}"\npool_path = "{base}/pool"\n'
    lab = Lab(tmp / "cloud.toml", tag, key, pool)
    host = Host(tag)
    seen: dict = {"stack_id": None, "bridges": set()}
    lab.write()
    t0 = time.monotonic()
    try:
        iacloud("apply", "--auto-approve", "-j", "4", str(lab.path), timeout=APPLY_TIMEOUT)
        lab.apply_seconds = time.monotonic() - t0
        shown = lab.show()
        seen["stack_id"] = shown["stack_id"]
        seen["bridges"] |= {shown["resources"][n]["id"] for n in ("lan", "lan2")}
        yield lab, host, seen
    finally:
        host.cleanup()
        subprocess.run([str(IACLOUD), "destroy", "--auto-approve", str(lab.path)],
                       capture_output=True, timeout=600)  # fmt: skip
        conn = libvirt.open("qemu:///system")
        try:
            p = conn.storagePoolLookupByName(pool_name)
            if p.isActive():
                p.destroy()
            p.undefine()
        except libvirt.libvirtError:
            pass
        finally:
            conn.close()
        shutil.rmtree(base, ignore_errors=True)
    assert host.leftovers() == []


def test_real_image_boots_with_default_readiness_and_reports_real_addresses(lab):
    lab, host, _ = lab
    print(f"\napply of 2 Debian cloud servers (pc + q35), default settings: "
          f"{lab.apply_seconds:.0f}s")  # fmt: skip
    res = lab.show()["resources"]
    a, b = res["a"]["attributes"], res["b"]["attributes"]
    (a_ip,) = a["addresses"]["lan"]
    assert b["addresses"] == {"lan": [B_IP]}
    assert a_ip.startswith(f"{LAN}.") and a_ip != B_IP
    assert a["hostname"] == f"alpha-{lab.tag}"  # what user-data set, reported by the agent
    assert b["hostname"] == f"beta-{lab.tag}"

    ns = host.client(res["lan"]["id"], f"{LAN}.250/24")
    for ip in (a_ip, B_IP):
        r = ping(ns, ip)
        assert r.returncode == 0, r.stdout + r.stderr

    out = lab.ssh(ns, a_ip, "hostname; cat /etc/iacloud-e2e /var/tmp/iacloud-runcmd; "
                  "ip -4 -o addr show scope global; "
                  "cat /var/lib/cloud/data/instance-id")  # fmt: skip
    assert out.splitlines()[0] == f"alpha-{lab.tag}"
    assert f"written by write_files {lab.tag}" in out
    assert f"runcmd-{lab.tag}" in out
    assert f"inet {a_ip}/24" in out and "dynamic" in out  # DHCP, matched by MAC
    assert res["a"]["id"] in out  # instance-id = the domain's uuid

    out = lab.ssh(ns, B_IP, "hostname; cat /var/tmp/iacloud-runcmd; "
                  "ip -4 -o addr show scope global; ip route show default; "
                  "cat /sys/class/dmi/id/product_name 2>/dev/null; "
                  "cat /var/lib/cloud/data/instance-id")  # fmt: skip
    assert out.splitlines()[0] == f"beta-{lab.tag}"
    assert f"runcmd-{lab.tag}" in out
    line = next(ln for ln in out.splitlines() if f"inet {B_IP}/24" in ln)
    assert "dynamic" not in line, line  # static, from network-config
    assert f"default via {LAN}.1" in out
    assert res["b"]["id"] in out

    assert "No changes" in iacloud("plan", "--detailed-exitcode", str(lab.path))
    iacloud("drift", str(lab.path))


def test_changing_ready_is_an_update_that_leaves_the_guest_alone(lab):
    lab, _, _ = lab
    before = lab.show()["resources"]["a"]["id"]
    lab.write(a_ready='ready = "agent"')
    out = iacloud("plan", "--detailed-exitcode", str(lab.path), code=2)
    assert "~ a (server)" in out and "1 to update, 0 to replace, 0 to delete" in out, out
    iacloud("apply", "--auto-approve", str(lab.path))
    assert lab.show()["resources"]["a"]["id"] == before
    lab.write()


def test_hotplugged_nic_comes_up_and_detaches_cleanly(lab):
    lab, host, _ = lab
    lab.write(a_networks=TWO_NICS)
    iacloud("apply", "--auto-approve", str(lab.path))
    ns2 = host.client(lab.show()["resources"]["lan2"]["id"], f"{LAN2}.250/24")
    deadline = time.monotonic() + 180
    addrs: list[str] = []
    while time.monotonic() < deadline:
        iacloud("apply", "--refresh-only", "--auto-approve", str(lab.path))
        addrs = lab.show()["resources"]["a"]["attributes"]["addresses"].get("lan2", [])
        if addrs:
            break
        time.sleep(5)
    assert len(addrs) == 1, "the hot-plugged NIC got no address"
    assert addrs[0].startswith(f"{LAN2}.")
    r = ping(ns2, addrs[0])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "No changes" in iacloud("plan", "--detailed-exitcode", str(lab.path))

    lab.write(a_networks=ONE_NIC)
    iacloud("apply", "--auto-approve", str(lab.path))
    a = lab.show()["resources"]["a"]
    assert len(a["attributes"]["macs"]) == 1
    assert list(a["attributes"]["addresses"]) == ["lan"]
    assert ping(ns2, addrs[0]).returncode != 0
    assert "No changes" in iacloud("plan", "--detailed-exitcode", str(lab.path))
    iacloud("drift", str(lab.path))


DISK = """
[resources.disk]
type = "volume"
size_gib = 1
"""
SNAPSHOT = """
[resources.snap]
type = "volume_snapshot"
volume = { get_resource = "disk" }
"""
ATTACHED = 'volumes = [{ get_resource = "disk" }]'


def test_a_snapshot_of_a_volume_in_use_is_quiesced_through_the_guest_agent(lab, tmp_path):
    lab, host, _ = lab
    lab.write(a_volumes=ATTACHED, extra=DISK)
    iacloud("apply", "--auto-approve", str(lab.path))
    res = lab.show()["resources"]
    a_id = res["a"]["id"]
    (a_ip,) = res["a"]["attributes"]["addresses"]["lan"]
    ns = host.client(res["lan"]["id"], f"{LAN}.251/24")
    # a filesystem on the hot-plugged volume (vdb), and a file written into it, not synced:
    # ext4 keeps its data in the guest's page cache for up to 30 s
    lab.ssh(ns, a_ip, "sudo mkfs.ext4 -q /dev/vdb && sudo mkdir -p /mnt/d && "
            "sudo mount /dev/vdb /mnt/d && sync && "
            f"echo 'written by {lab.tag}' | sudo tee /mnt/d/marker >/dev/null")  # fmt: skip
    t0 = time.monotonic()
    lab.write(a_volumes=ATTACHED, extra=DISK + SNAPSHOT)
    iacloud("apply", "--auto-approve", str(lab.path))
    print(f"\nsnapshot of a volume in use, {time.monotonic() - t0:.1f}s after the write")
    res = lab.show()["resources"]
    snap = res["snap"]["attributes"]
    assert snap["consistency"] == "quiesced"
    assert res["a"]["id"] == a_id and res["a"]["attributes"]["power_state"] == "running"
    raw = tmp_path / "snap.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", snap["path"], str(raw)],
                   check=True, timeout=120)  # fmt: skip
    out = subprocess.run(["debugfs", "-R", "cat /marker", str(raw)], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert f"written by {lab.tag}" in out.stdout, out.stdout + out.stderr
    # thawed: the guest writes again; then the volume is unmounted and detached
    lab.ssh(ns, a_ip, "echo again | sudo tee /mnt/d/again >/dev/null && sync && "
            "sudo umount /mnt/d")  # fmt: skip
    assert "No changes" in iacloud("plan", "--detailed-exitcode", str(lab.path))
    lab.write()
    iacloud("apply", "--auto-approve", str(lab.path))
    assert lab.show()["resources"]["a"]["id"] == a_id


def test_destroy_leaves_nothing(lab):
    lab, _, seen = lab
    t0 = time.monotonic()
    iacloud("destroy", "--auto-approve", str(lab.path))
    print(f"\ndestroy of the cloud stack: {time.monotonic() - t0:.1f}s")
    assert leftovers(seen["stack_id"], seen["bridges"], None) == []
