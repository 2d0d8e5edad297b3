"""Security groups across hosts (#16): member records naming a catalog host, one ruleset per
host (its own members' chains, every host's addresses in the remote-group sets), the rebuild
that applies each over SSH as an argument list with the ruleset on stdin, removal of a host's
tables with its last member, and the conntrack listing of a host parsed and judged."""

from __future__ import annotations

import dataclasses
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from iacloud import ssh_run
from iacloud.errors import ProviderError
from iacloud.secgroups import compiler, enforce, facts, nft, remote
from iacloud.secgroups.compiler import Group, Member, compile_hosts, removal, zone
from iacloud.secgroups.conntrack import Entry, stale
from iacloud.secgroups.rules import Rule
from iacloud.site_hosts import CatalogHost, SshTarget

G1 = "sg-0123456789"
BR = "iacb0000000001"
SSH = SshTarget(target="root@198.18.0.2", ssh_config="/etc/iacloud/ssh_config")
SSH3 = SshTarget(target="root@198.18.0.3", ssh_config="/etc/iacloud/ssh_config")
GROUPS = {
    G1: Group(
        G1,
        (
            Rule(direction="ingress", protocol="icmp", remote_group="self"),
            Rule(direction="ingress", protocol="tcp", port_min=22),
        ),
    )
}
HERE = Member(BR, "52:54:00:00:00:01", "iacn0000000001", ("198.18.0.5",), (G1,))
THERE = Member(BR, "52:54:00:00:00:02", "iacn0000000002", ("198.18.0.6",), (G1,), host="h2")


def test_each_host_gets_its_own_members_chains_and_everyones_addresses() -> None:
    rulesets = compile_hosts(GROUPS, [HERE, THERE])
    assert set(rulesets) == {None, "h2"}
    here, there = rulesets[None].text, rulesets["h2"].text
    assert f"in_{HERE.key}" in here and f"in_{THERE.key}" not in here
    assert f"in_{THERE.key}" in there and f"in_{HERE.key}" not in there
    # remote_group = "self" on h2 allows the member on this machine too
    for text in (here, there):
        assert "elements = { 198.18.0.5, 198.18.0.6 }" in text
    assert "iacn0000000001" not in there and "iacn0000000002" not in here
    # the chains of one NIC are named alike wherever it is (the key leaves the host out)
    assert THERE.key == Member(BR, THERE.mac, THERE.device).key


def test_this_machine_always_and_applied_hosts_without_members_get_an_empty_ruleset() -> None:
    rulesets = compile_hosts(GROUPS, [THERE], hosts=["h3"])
    assert list(rulesets) == [None, "h2", "h3"]
    assert rulesets[None].text == "" and rulesets["h3"].text == ""
    assert compile_hosts(GROUPS, [])[None].text == ""


def test_a_bad_host_name_never_reaches_nft() -> None:
    with pytest.raises(ValueError):
        compiler.compile_ruleset(GROUPS, [Member(BR, THERE.mac, THERE.device, host="h2;x")])


def test_conntrack_sets_come_from_every_host() -> None:
    entries = [
        Entry(zone(BR), "icmp", "198.18.0.5", "198.18.0.6", None),  # from a group member
        Entry(zone(BR), "icmp", "198.18.0.9", "198.18.0.6", None),  # from outside: stale
        Entry(zone(BR), "tcp", "198.18.0.9", "198.18.0.6", 22),
    ]
    assert stale(entries, GROUPS, [THERE], [HERE, THERE]) == [entries[1]]
    # judged by h2's members alone, the member here is not in the set
    assert stale(entries, GROUPS, [THERE]) == entries[:2]


def test_conntrack_listing_of_a_host_parses_the_original_direction() -> None:
    text = (
        "icmp     1 29 src=198.18.0.5 dst=198.18.0.6 type=8 code=0 id=7 src=198.18.0.6 "
        f"dst=198.18.0.5 type=0 code=0 id=7 mark=0 zone={zone(BR)} use=1\n"
        "tcp      6 431999 ESTABLISHED src=198.18.0.9 dst=198.18.0.6 sport=5000 dport=22 "
        "src=198.18.0.6 dst=198.18.0.9 sport=22 dport=5000 [ASSURED] mark=0 use=1\n"
        "garbage\n"
        "udp      17 20 src=-D dst=198.18.0.6 sport=1 dport=53 mark=0 use=1\n"
    )
    assert remote.parse_entries(text) == [
        Entry(zone(BR), "icmp", "198.18.0.5", "198.18.0.6", None),
        Entry(0, "tcp", "198.18.0.9", "198.18.0.6", 22),
    ]


# ---- facts ---------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IACLOUD_SECGROUPS_DIR", str(tmp_path))
    return tmp_path


def record(mac: str, host: str | None, device: str | None = "iacn0000000009") -> facts.MemberRecord:
    return facts.MemberRecord(
        "server", "stack", "srv", BR, mac, device, ("198.18.0.7",), (G1,),
        host, SSH if host else None,
    )  # fmt: skip


def test_member_records_keep_host_and_target(root: Path) -> None:
    facts.write_member(record("52:54:00:00:00:07", "h2"))
    facts.write_member(record("52:54:00:00:00:08", None))
    recs = {r.mac: r for r in facts.members()}
    assert recs["52:54:00:00:00:07"].host == "h2" and recs["52:54:00:00:00:07"].ssh == SSH
    assert recs["52:54:00:00:00:08"].host is None
    assert {m.mac: m.host for m in facts.merged(facts.members())} == {
        "52:54:00:00:00:07": "h2",
        "52:54:00:00:00:08": None,
    }
    assert facts.targets(facts.members()) == {"h2": SSH}


def test_a_port_record_takes_the_host_of_the_server_nic_holding_it(root: Path) -> None:
    port = facts.MemberRecord("port", "stack", "p", BR, "52:54:00:00:00:07", None,
                              ("198.18.0.7",), (G1,))  # fmt: skip
    facts.write_member(port)
    facts.write_member(record("52:54:00:00:00:07", "h2", device="iacn0000000007"))
    (merged,) = facts.merged(facts.members())
    assert merged.host == "h2" and merged.device == "iacn0000000007"


def test_a_record_with_a_host_but_no_target_reads_as_damaged(root: Path) -> None:
    facts.write_member(record("52:54:00:00:00:07", "h2"))
    (path,) = (root / "members").glob("*.json")
    path.write_text(path.read_text().replace('"ssh": {', '"sshx": {'))
    assert facts.members() == []


def test_applied_hosts_are_marked_and_unmarked(root: Path) -> None:
    facts.mark_applied("h2", SSH)
    assert facts.applied() == {"h2": SSH}
    facts.unmark_applied("h2")
    assert facts.applied() == {}


# ---- rebuild over SSH ----------------------------------------------------------------------


class FakeSsh:
    """subprocess.run for ssh: records each remote argv and its stdin."""

    def __init__(self, sysctl: str = "1") -> None:
        self.calls: list[tuple[list[str], str | None]] = []
        self.sysctl = sysctl

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        remote_argv = argv[argv.index("--") + 1 :]
        self.calls.append((remote_argv, kwargs.get("input")))
        out = self.sysctl + "\n" if remote_argv[0] == "cat" else ""
        return subprocess.CompletedProcess(argv, 0, out, "")

    def commands(self) -> list[list[str]]:
        return [argv for argv, _ in self.calls]


@pytest.fixture
def fake(root: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSsh:
    ssh = FakeSsh()
    monkeypatch.setattr(ssh_run.subprocess, "run", ssh)
    applied_here: list[str] = []
    monkeypatch.setattr(nft, "apply", applied_here.append)
    monkeypatch.setattr(enforce.conntrack, "prune", lambda *a: 0)
    return ssh


def test_rebuild_applies_a_hosts_ruleset_over_ssh_on_stdin(fake: FakeSsh) -> None:
    with enforce.change():
        facts.write_group(facts.GroupRecord(G1, "stack", "g", GROUPS[G1].rules))
        facts.write_member(record("52:54:00:00:00:07", "h2"))
    assert ["cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"] in fake.commands()
    (text,) = [stdin for argv, stdin in fake.calls if argv == ["nft", "-f", "-"]]
    assert text is not None and text.startswith(removal()) and "iacn0000000009" in text
    # conntrack listed on the host (its members have addresses)
    assert ["conntrack", "-L", "-f", "ipv4"] in fake.commands()
    assert facts.applied() == {"h2": SSH}
    # no value is spliced into a shell string: every word is its own argument
    assert all(" " not in word for argv in fake.commands() for word in argv)


def test_the_last_member_of_a_host_removes_its_tables(fake: FakeSsh) -> None:
    with enforce.change():
        facts.write_group(facts.GroupRecord(G1, "stack", "g", GROUPS[G1].rules))
        facts.write_member(record("52:54:00:00:00:07", "h2"))
    fake.calls.clear()
    with enforce.change():
        facts.remove_members("server", "stack", "srv")
    assert fake.calls == [(["nft", "-f", "-"], removal())]
    assert facts.applied() == {}


def test_a_host_without_bridge_netfilter_is_refused(fake: FakeSsh) -> None:
    fake.sysctl = "0"
    refused = pytest.raises(ProviderError, match=r"host h2.*bridge-nf-call-iptables = 0")
    with refused, enforce.change():
        facts.write_group(facts.GroupRecord(G1, "stack", "g", GROUPS[G1].rules))
        facts.write_member(record("52:54:00:00:00:07", "h2"))
    assert not any(argv[:2] == ["nft", "-f"] for argv in fake.commands())


def test_expected_rules_cover_every_host(fake: FakeSsh) -> None:
    with enforce.change():
        facts.write_group(facts.GroupRecord(G1, "stack", "g", GROUPS[G1].rules))
        facts.write_member(record("52:54:00:00:00:07", "h2"))
    (member,) = facts.merged(facts.members())
    assert enforce.expected().expected[G1] == {0: {f"in_{member.key}"}, 1: {f"in_{member.key}"}}


# ---- a filtered server migrating ------------------------------------------------------------


@dataclass
class Target:
    """The parts of a HostContext that `nic_filter.placement` reads."""

    name: str
    entry: CatalogHost
    local: bool = False


H3 = Target("h3", CatalogHost(uri="qemu+ssh://root@198.18.0.3/system", ssh=SSH3))


def test_a_nic_filtered_through_its_port_is_filtered_on_both_hosts_while_it_moves(
    fake: FakeSsh,
) -> None:
    from iacloud.providers.libvirt import nic_filter

    mac = "52:54:00:00:00:07"
    with enforce.change():
        facts.write_group(facts.GroupRecord(G1, "stack", "g", GROUPS[G1].rules))
        # the server's record holds the tap and host, the port's the groups
        facts.write_member(
            dataclasses.replace(record(mac, "h2", device="iacn0000000007"), groups=())
        )
        facts.write_member(facts.MemberRecord("port", "stack", "p", BR, mac, None,
                                              ("198.18.0.7",), (G1,)))  # fmt: skip
    fake.calls.clear()
    assert nic_filter.stage_move("stack", "srv", H3)  # type: ignore[arg-type]
    # h3 gets the NIC's chains (same tap) before the guest arrives; h2 keeps them meanwhile
    on = {m.host: m.device for m in facts.merged(facts.members())}
    assert on == {"h2": "iacn0000000007", "h3": "iacn0000000007"}
    texts = [stdin for argv, stdin in fake.calls if argv == ["nft", "-f", "-"]]
    assert len(texts) == 2 and all(t and "iacn0000000007" in t for t in texts)  # h2, h3
    assert set(facts.applied()) == {"h2", "h3"}
    assert facts.targets(facts.members())["h3"] == SSH3
    # a failed move: h3 loses them (its table is removed), h2 still filters
    nic_filter.unstage_move("stack", "srv")
    assert [m.host for m in facts.merged(facts.members())] == ["h2"]
    assert set(facts.applied()) == {"h2"}


def test_after_the_move_only_the_new_host_filters_the_nic(fake: FakeSsh) -> None:
    from iacloud.providers.libvirt import nic_filter

    with enforce.change():
        facts.write_group(facts.GroupRecord(G1, "stack", "g", GROUPS[G1].rules))
        facts.write_member(record("52:54:00:00:00:07", "h2", device="iacn0000000007"))
    assert nic_filter.stage_move("stack", "srv", H3)  # type: ignore[arg-type]
    # what the server's sync on the target writes: its record with h3, the copy gone
    with enforce.change():
        facts.remove_members("server", "stack", "srv")
        facts.remove_members(facts.MOVING, "stack", "srv")
        facts.write_member(dataclasses.replace(
            record("52:54:00:00:00:07", "h3", device="iacn0000000007"), ssh=SSH3))  # fmt: skip
    assert [m.host for m in facts.merged(facts.members())] == ["h3"]
    assert set(facts.applied()) == {"h3"}
    # deleting the server takes any copy with it
    assert nic_filter.stage_move("stack", "srv", H3)  # type: ignore[arg-type]
    nic_filter.drop("stack", "srv")
    assert facts.members() == [] and facts.applied() == {}


def test_a_server_without_member_records_stages_nothing(fake: FakeSsh) -> None:
    from iacloud.providers.libvirt import nic_filter

    assert not nic_filter.stage_move("stack", "srv", H3)  # type: ignore[arg-type]
    assert fake.calls == [] and facts.members() == []


def test_a_read_counts_a_nic_filtered_only_where_its_records_say_it_is(root: Path) -> None:
    from iacloud.providers.libvirt import nic_filter

    mac = "52:54:00:00:00:07"
    facts.write_member(record(mac, "h2", device="iacn0000000007"))
    assert nic_filter.filtered_macs("stack", "srv", host="h2") == {mac}
    # found on h3 (a run cut off after the migration, before the records followed): the NIC
    # reads as unfiltered, so the next plan updates it and the records are written for h3
    assert nic_filter.filtered_macs("stack", "srv", host="h3") == frozenset()
    assert nic_filter.filtered_macs("stack", "srv", host=None) == frozenset()


def test_copies_left_by_a_cut_off_move_make_the_nics_read_unfiltered(fake: FakeSsh) -> None:
    from iacloud.providers.libvirt import nic_filter

    mac = "52:54:00:00:00:07"
    with enforce.change():
        facts.write_group(facts.GroupRecord(G1, "stack", "g", GROUPS[G1].rules))
        facts.write_member(record(mac, "h2", device="iacn0000000007"))
    assert nic_filter.stage_move("stack", "srv", H3)  # type: ignore[arg-type]
    # wherever the domain is found, the copies make the plan write the records again
    for host in ("h2", "h3"):
        assert nic_filter.filtered_macs("stack", "srv", host=host) == frozenset()


# ---- placement: a port carries its server's host to the network -----------------------------


def test_a_server_taking_a_port_makes_the_ports_network_span_its_host(tmp_path: Path) -> None:
    from iacloud.loading import load_stack
    from iacloud.placement import place
    from iacloud.provider import Registry
    from iacloud.scheduler import Host
    from iacloud.state.model import Snapshot

    path = tmp_path / "s.toml"
    path.write_text("""version = 1
name = "s"
[resources.lan]
type = "network"
cidr = "198.18.82.0/24"
[resources.pb]
type = "port"
network = { get_resource = "lan" }
ip = "198.18.82.50"
[resources.a]
type = "server"
image = "iacloud/img.qcow2"
host = "h1"
networks = [{ network = { get_resource = "lan" } }]
[resources.b]
type = "server"
image = "iacloud/img.qcow2"
host = "h2"
networks = [{ port = { get_resource = "pb" } }]
""")
    registry = Registry.discover()
    config = load_stack(path, registry)
    snapshot = Snapshot(stack="s", stack_id="id", lineage="l", serial=0)
    up = [Host(n, vcpus=4, memory_mib=4096, disk_gib=100, up=True) for n in ("h1", "h2")]
    result = place(config, snapshot, registry, ["h1", "h2"], lambda: up)
    assert result.config.resources["lan"].properties["hosts"] == ["h1", "h2"]
    assert "hosts" not in result.config.resources["pb"].properties


# ---- the server's plan-time check ----------------------------------------------------------


def _server_check(tmp_path: Path, ssh: bool, networks: list[dict[str, Any]],
                  host: str = "h2", prior_host: str | None = None) -> list[str]:  # fmt: skip
    from iacloud.provider import Observed, StackInfo
    from iacloud.providers.libvirt import LibvirtProvider
    from iacloud.providers.libvirt.server import Server
    from iacloud.providers.libvirt.server_inputs import ServerInputs
    from iacloud.providers.libvirt.settings import LibvirtSettings

    uri = "qemu+libssh2://root@198.19.250.{}/system?sshauth=privkey&keyfile=/k"
    hosts = {
        n: CatalogHost(uri=uri.format(10 + i), ssh=SSH if ssh else None)
        for i, n in enumerate(("h1", "h2"), 1)
    }
    stack = StackInfo("s", "0123456789abcdef", tmp_path, tmp_path, hosts)
    server = Server(LibvirtProvider(stack, LibvirtSettings()))
    inputs = ServerInputs(image="iacloud/img.qcow2", host=host, networks=networks)
    prior = None if prior_host is None else Observed("x", {"host": prior_host}, {})
    return [d.message for d in server.check("srv", inputs, prior)]


PORT = "iacb0000000001/52:54:00:00:00:07/198.18.0.7"


def test_a_catalog_host_takes_ports_and_groups_when_it_has_an_ssh_target(tmp_path: Path) -> None:
    nics = [{"port": PORT, "security_groups": [G1]}]
    assert _server_check(tmp_path, True, nics) == []
    (refused,) = _server_check(tmp_path, False, nics)
    assert "no ssh target" in refused
    # a NIC without either needs no ssh (the network's own checks ask for it)
    assert _server_check(tmp_path, False, [{"bridge": BR}]) == []


def test_a_server_with_groups_may_move_to_a_host_with_an_ssh_target(tmp_path: Path) -> None:
    grouped = [{"bridge": BR, "security_groups": [G1]}]
    assert _server_check(tmp_path, True, grouped, host="h2", prior_host="h1") == []
    assert _server_check(tmp_path, True, [{"port": PORT}], host="h2", prior_host="h1") == []
    (refused,) = _server_check(tmp_path, False, grouped, host="h2", prior_host="h1")
    assert "no ssh target" in refused
