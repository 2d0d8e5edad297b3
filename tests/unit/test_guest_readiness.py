"""Servers from real cloud images, without a host: readiness verdicts from console text and
`cloud-init status`, console sanitizing, network-config, dnsmasq leases, addresses by MAC,
domain XML (guest agent channel, q35 seed bus), and which deletes may skip the graceful
shutdown."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from iacloud import netfacts
from iacloud.errors import ProviderError
from iacloud.providers.libvirt import addresses, console, domain_xml, readiness, seed
from iacloud.providers.libvirt.domain_xml import Disk, DomainSpec, Nic, NicRecord, ServerRecord
from iacloud.providers.libvirt.settings import LibvirtSettings
from iacloud.providers.libvirt.tags import OwnerTag

FINAL = (
    "[  105.601234] cloud-init[612]: Cloud-init v. 22.4.2 finished at Sat, 28 Nov 2026 "
    "13:40:01 +0000. Datasource DataSourceNoCloud [seed=/dev/sr0][dsmode=net].  "
    "Up 105.55 seconds"
)
HOST_KEYS = """\
<14>Nov 28 13:40:00 cloud-init: #############################################################
-----BEGIN SSH HOST KEY FINGERPRINTS-----
256 SHA256:Yx8bqN4yL3nS2yF0cWz1t5K9d7QmV3r2pA6uE1oZ0bI root@alpha (ECDSA)
256 SHA256:c2bQ9mXo0pT4y7R1eW6aZ3vN8kL5jH2gF0dS9aQ1wE4 root@alpha (ED25519)
-----END SSH HOST KEY FINGERPRINTS-----
-----BEGIN SSH HOST KEY KEYS-----
ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= root@alpha
ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFake root@alpha
-----END SSH HOST KEY KEYS-----
"""


# ------------------------------------------------------------------ readiness from the console
def test_cloud_init_final_line_is_ready():
    v = readiness.from_console("booting\n" + FINAL + "\n", "auto")
    assert v.ready and "22.4.2" in v.how and "105.55" in v.how
    assert readiness.from_console(FINAL, "cloud-init").ready
    assert readiness.from_console(FINAL, "console") is readiness.WAITING
    assert readiness.from_console("[  3.1] Booting\n", "auto") is readiness.WAITING


def test_ready_line_counts_for_auto_and_console_only():
    text = "IACLOUD-READY hostname=web-0 addresses=eth0=198.18.0.10/24 macs=eth0=52:54:00:aa:bb:cc"
    assert readiness.from_console(text, "auto").ready
    assert readiness.from_console(text, "console").ready
    assert readiness.from_console(text, "cloud-init") is readiness.WAITING


def test_cloud_init_errors_fail_with_cloud_inits_words():
    text = "\n".join(
        [
            "[   98.1] cloud-init[600]: 2026-11-28 13:40:00,1 - util.py[WARNING]: Failed running "
            "/var/lib/cloud/instance/scripts/runcmd [1]",
            "[   98.2] cloud-init[600]: 2026-11-28 13:40:00,2 - cc_scripts_user.py[WARNING]: "
            "Failed to run module scripts-user (scripts in /var/lib/cloud/instance/scripts)",
            FINAL,
        ]
    )
    v = readiness.from_console(text, "auto")
    assert not v.ready
    assert v.failed and "Failed to run module scripts-user" in v.failed
    assert "[   98.2]" not in v.failed  # the console's timestamp prefix is dropped


def test_a_finish_without_the_seed_is_a_failure():
    text = FINAL.replace("DataSourceNoCloud [seed=/dev/sr0][dsmode=net]", "DataSourceNone")
    v = readiness.from_console(text, "auto")
    assert v.failed and "NoCloud seed" in v.failed


# ------------------------------------------------------------------ cloud-init status (agent)
@pytest.mark.parametrize(
    ("out", "ready", "failed"),
    [
        (
            "status: done\ntime: Sat, 28 Nov 2026\ndetail:\nDataSourceNoCloud [seed=/dev/sr0]\n",
            True,
            None,
        ),
        ("status: running\ntime: x\ndetail:\nRunning in stage: modules-final\n", False, None),
        (
            "status: error\ntime: x\ndetail:\n('scripts_user', RuntimeError('Runparts: 1 failures "
            "(runcmd) in 1 attempted commands'))\n",
            False,
            "Runparts: 1 failures",
        ),
        (
            "status: error\nextended_status: error\nerrors:\n\t- Failed to run module cc_x\n",
            False,
            "Failed to run module cc_x",
        ),
        ("status: not started\n", False, None),
    ],
)
def test_cloud_init_status(out, ready, failed):
    st = readiness.parse_status(out)
    assert st is not None
    v = readiness.from_status(st)
    assert v.ready is ready
    if failed:
        assert v.failed and failed in v.failed
    else:
        assert v.failed is None


def test_status_output_without_a_status_is_no_answer():
    assert readiness.parse_status("bash: cloud-init: command not found\n") is None


# ------------------------------------------------------------------ the wait loop
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


class Agent:
    def __init__(self, after: int, verdict: readiness.Verdict) -> None:
        self.calls, self.after, self.verdict = 0, after, verdict

    def poll(self, mode: str) -> readiness.Verdict:
        self.calls += 1
        return self.verdict if self.calls >= self.after else readiness.WAITING


def test_wait_times_out_naming_what_it_awaited():
    clock = FakeClock()
    v = readiness.wait("auto", 10, lambda: "", lambda: True, None, 1, clock, clock.sleep)
    assert v.failed and "in 10s" in v.failed and "cloud-init" in v.failed
    assert "IACLOUD-READY" in v.failed


def test_wait_returns_when_the_agent_says_so_and_notices_a_stopped_guest():
    clock = FakeClock()
    agent = Agent(3, readiness.Verdict(ready=True, how="agent"))
    v = readiness.wait("agent", 100, lambda: "", lambda: True, agent, 1, clock, clock.sleep)
    assert v.ready and agent.calls == 3 and clock.now == 2
    v = readiness.wait("auto", 100, lambda: "", lambda: False, None, 1, clock, clock.sleep)
    assert v.failed and v.failed.startswith("stopped")


def test_console_mode_never_asks_the_agent():
    clock = FakeClock()
    agent = Agent(1, readiness.Verdict(ready=True))
    v = readiness.wait("console", 3, lambda: "", lambda: True, agent, 1, clock, clock.sleep)
    assert v.failed and agent.calls == 0


# ------------------------------------------------------------------ sanitizing
def test_sanitize_strips_escapes_control_characters_and_host_keys():
    raw = (
        "\x1b[0;32m  OK  \x1b[0m] Started ssh.service\r\n"
        "\x1b]0;title\x07bell\x07 and NUL\x00 here\n" + HOST_KEYS + "ci-info: | ssh-ed25519 | "
        "aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99 | - | e2e |\n"
        "login: \x1b[?25h\n"
    )
    lines = readiness.sanitize(raw)
    text = "\n".join(lines)
    assert "  OK  ] Started ssh.service" in lines
    assert "bell and NUL here" in lines
    assert "\x1b" not in text and "\x00" not in text and "\x07" not in text
    for secret in ("SHA256:", "AAAA", "BEGIN SSH HOST KEY", "aa:bb:cc:dd", "root@alpha"):
        assert secret not in text
    assert readiness.last_lines(raw, 1) == ["login:"]


# ------------------------------------------------------------------ network-config
def test_network_config_dhcp_static_and_hotplug_catch_all():
    text = seed.network_config(
        [
            seed.NicConfig("52:54:00:00:00:01"),
            seed.NicConfig(
                "52:54:00:00:00:02",
                address="198.18.44.60/24",
                gateway="198.18.44.1",
                dns=("198.18.44.53",),
                mtu=1400,
            ),
        ]
    )
    doc = yaml.safe_load(text)
    assert doc["version"] == 2
    eth = doc["ethernets"]
    assert eth["nic0"] == {"match": {"macaddress": "52:54:00:00:00:01"}, "dhcp4": True}
    assert eth["nic1"] == {
        "match": {"macaddress": "52:54:00:00:00:02"},
        "dhcp4": False,
        "addresses": ["198.18.44.60/24"],
        "routes": [{"to": "default", "via": "198.18.44.1"}],
        "nameservers": {"addresses": ["198.18.44.53"]},
        "mtu": 1400,
    }
    # catch-alls for NICs plugged in later, after the MAC entries in networkd's file order
    assert eth["zz-hotplug-en"] == {"match": {"name": "en*"}, "dhcp4": True}
    assert eth["zz-hotplug-eth"] == {"match": {"name": "eth*"}, "dhcp4": True}
    names = sorted(f"10-netplan-{k}.network" for k in eth)
    assert names.index("10-netplan-nic1.network") < names.index("10-netplan-zz-hotplug-en.network")
    assert 'name: "ens' not in text  # no NIC is ever matched by its guest name


def test_network_config_refuses_bad_values():
    with pytest.raises(ProviderError):
        seed.network_config(["52:54:00:00:00:0g"])
    with pytest.raises(ProviderError):
        seed.network_config([seed.NicConfig("52:54:00:00:00:01", address="198.18.0.1")])
    with pytest.raises(ValueError):
        seed.network_config(
            [seed.NicConfig("52:54:00:00:00:01", address="198.18.0.5/24", gateway="x\ny")]
        )


def test_seed_meta_data_has_the_instance_id_given():
    iso = seed.build_seed("0b0d5a44-6a6e-4d6e-9c2e-5b1f2b0e8a11", "alpha", None, [], [])
    files = seed.read_seed(iso)
    assert files is not None and files.meta_data is not None
    assert b"instance-id: 0b0d5a44-6a6e-4d6e-9c2e-5b1f2b0e8a11\n" in files.meta_data


# ------------------------------------------------------------------ leases and facts
def test_leases_latest_unexpired_per_mac():
    text = "\n".join(
        [
            "1000 52:54:00:00:00:01 198.18.44.10 old ff:00:01",  # expired
            "5000 52:54:00:00:00:01 198.18.44.11 a ff:00:02",
            "4000 52:54:00:00:00:01 198.18.44.12 a ff:00:03",  # a predecessor's, older
            "0 52:54:00:00:00:02 198.18.44.20 b *",  # infinite
            "6000 52:54:00:00:00:03 fd00::1 c *",  # not IPv4
            "garbage",
        ]
    )
    assert netfacts.parse_leases(text, now=2000) == {
        "52:54:00:00:00:01": "198.18.44.11",
        "52:54:00:00:00:02": "198.18.44.20",
    }


def test_facts_round_trip_and_refuse_bad_bridge_names(tmp_path, monkeypatch):
    monkeypatch.setenv("IACLOUD_NETFACTS_DIR", str(tmp_path))
    leases = tmp_path / "leases"
    leases.write_text("9999999999 52:54:00:00:00:01 198.18.44.11 a *\n")
    facts = netfacts.NetworkFacts("iacb0123456789", "198.18.44.0/24", "198.18.44.1",
                                  ["198.18.44.53"], None, True, str(leases))  # fmt: skip
    netfacts.write(facts)
    assert netfacts.read("iacb0123456789") == facts
    assert netfacts.leases(facts) == {"52:54:00:00:00:01": "198.18.44.11"}
    assert netfacts.read("../etc") is None and netfacts.read("nosuch") is None
    with pytest.raises(ValueError):
        netfacts.write(netfacts.NetworkFacts("../x", "198.18.44.0/24"))
    netfacts.remove("iacb0123456789")
    assert netfacts.read("iacb0123456789") is None


# ------------------------------------------------------------------ addresses by MAC
def test_addresses_by_mac_from_each_source_in_order():
    nics = [Nic("br1", "52:54:00:00:00:01"), Nic("br1", "52:54:00:00:00:02"),
            Nic("br2", "52:54:00:00:00:03"), Nic("br2", "52:54:00:00:00:04")]  # fmt: skip
    records = [NicRecord("52:54:00:00:00:04", "port", True, "br2/52:54:00:00:00:04/198.18.45.9")]
    leases = {("br1", "52:54:00:00:00:02"): "198.18.44.12", ("br1", "52:54:00:00:00:01"): "1.1.1.1"}
    got = addresses.by_mac(
        nics,
        records,
        {"52:54:00:00:00:01": ["198.18.44.30", "198.18.44.4"]},  # the agent
        {"52:54:00:00:00:03": ["198.18.45.3"]},  # the ready line
        lambda b, m: leases.get((b, m)),
    )
    assert got == {
        "52:54:00:00:00:01": ["198.18.44.4", "198.18.44.30"],  # the agent wins, sorted
        "52:54:00:00:00:02": ["198.18.44.12"],  # the lease
        "52:54:00:00:00:03": ["198.18.45.3"],
        "52:54:00:00:00:04": ["198.18.45.9"],  # the port's address
    }
    by_net = addresses.by_network(nics, got, {"br1": "lan", "br2": "lan2"}.get)
    assert by_net == {"lan": ["198.18.44.4", "198.18.44.12", "198.18.44.30"],
                      "lan2": ["198.18.45.3", "198.18.45.9"]}  # fmt: skip


def test_ready_line_addresses_are_matched_by_mac_not_name():
    r = console.parse_ready(
        "IACLOUD-READY hostname=t addresses=ens5=198.18.0.5/24,eth9=198.18.1.5/24 "
        "macs=ens5=52:54:00:AA:00:01"
    )
    assert r is not None and r.by_mac() == {"52:54:00:aa:00:01": ["198.18.0.5"]}


# ------------------------------------------------------------------ domain XML
def _spec(machine: str, bus: str) -> DomainSpec:
    record = ServerRecord(hostname="h", image=None, boot_volume=None, root="p/r", seed="p/s")
    return DomainSpec(
        name="s-a-1234", virt_type="qemu", machine=machine, vcpus=1, memory_mib=256,
        owner=OwnerTag("s", "1234", "a"), record=record,
        disks=[Disk("vda", "qcow2", "p", "r"),
               Disk("sda", "raw", "p", "s", device="cdrom", bus=bus)],
        nics=[Nic("br1", "52:54:00:00:00:01")], console_path="/tmp/c.log",
        uuid="0b0d5a44-6a6e-4d6e-9c2e-5b1f2b0e8a11",
    )  # fmt: skip


def test_domain_has_the_guest_agent_channel_and_our_uuid():
    root = ET.fromstring(domain_xml.build(_spec("pc", "ide")))
    targets = [t.get("name") for t in root.findall("devices/channel/target")]
    assert targets == ["org.qemu.guest_agent.0"]
    assert root.findtext("uuid") == "0b0d5a44-6a6e-4d6e-9c2e-5b1f2b0e8a11"
    assert root.find("devices/controller[@type='scsi']") is None


def test_q35_seed_is_a_scsi_cdrom_on_virtio_scsi_with_spare_root_ports():
    xml = domain_xml.build(_spec("q35", "scsi"))
    root = ET.fromstring(xml)
    cdrom = root.find("devices/disk[@device='cdrom']/target")
    assert cdrom is not None and cdrom.get("bus") == "scsi"
    assert root.find("devices/controller[@type='scsi']").get("model") == "virtio-scsi"
    ports = root.findall("devices/controller[@model='pcie-root-port']")
    assert len(ports) >= domain_xml.Q35_SPARE_PORTS + 2
    assert "sata" not in xml


def test_parse_reads_machine_and_agent_state():
    live = (
        domain_xml.build(_spec("q35", "scsi"))
        .replace('name="org.qemu.guest_agent.0"', 'name="org.qemu.guest_agent.0" state="connected"')
        .replace('machine="q35"', 'machine="pc-q35-7.2"')
    )
    parsed = domain_xml.parse(live)
    assert (parsed.machine, parsed.agent) == ("q35", "connected")
    assert domain_xml.parse(domain_xml.build(_spec("pc", "ide"))).agent == "disconnected"


# ------------------------------------------------------------------ settings
def test_ready_default_and_the_older_wait_ready_switch():
    assert LibvirtSettings().default_ready == "auto"
    assert LibvirtSettings(wait_ready=False).default_ready == "none"
    assert LibvirtSettings(ready="agent").default_ready == "agent"
    assert LibvirtSettings().boot_timeout >= 600  # a real image under emulation, loaded host
    with pytest.raises(ValueError):
        LibvirtSettings(wait_ready=False, ready="cloud-init")


def test_server_inputs_ready_changes_in_place_and_machine_replaces():
    from iacloud.providers.libvirt.server_inputs import ServerInputs
    from iacloud.schema import Disruption, field_update

    fields = ServerInputs.model_fields
    assert field_update(fields["ready"]) is Disruption.NONE
    assert field_update(fields["machine"]) is Disruption.REPLACE
    with pytest.raises(ValueError):
        ServerInputs(image="p/i.qcow2", ready="soon")


# ------------------------------------------------------------------ the agent probe
def _fake_agent(monkeypatch, replies):
    """guest_agent._command answering from `replies` (execute -> value or callable)."""
    from iacloud.providers.libvirt import guest_agent

    calls = []

    def command(dom, execute, **arguments):
        calls.append(execute)
        reply = replies.get(execute)
        return reply(arguments) if callable(reply) else reply

    monkeypatch.setattr(guest_agent, "_command", command)
    monkeypatch.setattr(guest_agent, "STATUS_EVERY", 0.0)
    return guest_agent, calls


def _exited(code, out=""):
    import base64

    return {"exited": True, "exitcode": code, "out-data": base64.b64encode(out.encode()).decode()}


def test_probe_runs_cloud_init_status_through_the_agent(monkeypatch):
    ga, calls = _fake_agent(monkeypatch, {
        "guest-exec": {"pid": 7},
        "guest-exec-status": _exited(0, "status: done\ndetail:\nDataSourceNoCloud\n"),
    })  # fmt: skip
    v = ga.Probe(object(), lambda: True).poll("auto")
    assert v.ready and "cloud-init status done" in v.how
    assert calls == ["guest-exec", "guest-exec-status"]
    ga, _ = _fake_agent(monkeypatch, {
        "guest-exec": {"pid": 7},
        "guest-exec-status": _exited(1, "status: error\ndetail:\n('scripts_user', boom)\n"),
    })  # fmt: skip
    v = ga.Probe(object(), lambda: True).poll("cloud-init")
    assert v.failed and "boom" in v.failed


def test_probe_without_cloud_init_or_exec_counts_the_agent_for_auto_only(monkeypatch):
    ga, _ = _fake_agent(monkeypatch, {"guest-exec": {"pid": 1},
                                      "guest-exec-status": _exited(127)})  # fmt: skip
    assert ga.Probe(object(), lambda: True).poll("auto").ready
    assert ga.Probe(object(), lambda: True).poll("cloud-init").failed
    ga, _ = _fake_agent(monkeypatch, {"guest-exec": None, "guest-ping": {}})
    assert ga.Probe(object(), lambda: True).poll("auto").ready
    assert ga.Probe(object(), lambda: True).poll("cloud-init") is readiness.WAITING
    # an agent that is not connected is never asked
    ga, calls = _fake_agent(monkeypatch, {"guest-ping": {}})
    assert ga.Probe(object(), lambda: False).poll("agent") is readiness.WAITING
    assert calls == []


def test_probe_waits_while_cloud_init_runs(monkeypatch):
    ga, _ = _fake_agent(monkeypatch, {"guest-exec": {"pid": 3},
                                      "guest-exec-status": {"exited": False}})  # fmt: skip
    probe = ga.Probe(object(), lambda: True)
    assert probe.poll("auto") is readiness.WAITING and probe.pid == 3


# ------------------------------------------------------------------ what the run deletes
def test_run_info_names_every_object_the_plan_deletes():
    from iacloud.executor import run_info, step_graph
    from iacloud.plan import Action, Change, Plan
    from iacloud.provider import Provider, ProviderSet, Registry, RunInfo, StackInfo

    def change(address: str, action: Action, id: str | None) -> Change:
        after = None if action is Action.DELETE else {}
        before = {} if id else None
        return Change(
            address=address, type="volume", provider="libvirt", action=action, id=id,
            before=before, after=after,
        )  # fmt: skip

    plan = Plan(
        stack="s", stack_file="s.toml", stack_id="1", lineage="l", serial=1, created_at="now",
        changes=[change("gone", Action.DELETE, "p/gone.raw"),
                 change("swapped", Action.DELETE_CREATE, "p/old.raw"),
                 change("rolled", Action.CREATE_DELETE, "p/prev.raw"),
                 change("kept", Action.UPDATE, "p/kept.raw"),
                 change("new", Action.CREATE, None)],
    )  # fmt: skip
    run = run_info(step_graph(plan, {}))
    assert run.deleting == {"p/gone.raw", "p/old.raw", "p/prev.raw"}

    class P(Provider):
        name = "p"

    providers = ProviderSet(Registry([P]), StackInfo("s", "1", Path("."), Path(".")), {})
    providers.begin_run(run)
    assert providers.run is run
    assert P(StackInfo("s", "1", Path("."), Path(".")), P.Settings()).run == RunInfo()


def test_lease_lookups_read_each_network_once(tmp_path, monkeypatch):
    monkeypatch.setenv("IACLOUD_NETFACTS_DIR", str(tmp_path))
    lease_file = tmp_path / "br1.leases"
    lease_file.write_text("0 52:54:00:00:00:01 198.18.44.11 a *\n")
    netfacts.write(netfacts.NetworkFacts("br1", "198.18.44.0/24", dhcp=True,
                                         leases=str(lease_file)))  # fmt: skip
    leases = addresses.Leases()
    assert leases("br1", "52:54:00:00:00:01") == "198.18.44.11"
    lease_file.unlink()  # kept for the rest of the read
    assert leases("br1", "52:54:00:00:00:01") == "198.18.44.11"
    assert leases("br1", "52:54:00:00:00:02") is None
    assert leases("nofacts", "52:54:00:00:00:01") is None
