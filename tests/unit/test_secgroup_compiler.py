"""The security group ruleset compiler (a pure function -> nft text), the conntrack verdicts
that mirror it, and the member records merged per NIC."""

from __future__ import annotations

import pytest

from iacloud.secgroups import conntrack, facts
from iacloud.secgroups.compiler import Group, Member, compile_ruleset, removal, zone
from iacloud.secgroups.rules import Rule

G1, G2 = "sg-0123456789", "sg-abcdefabcd"
WEB = Member("iacb0000000001", "52:54:00:00:00:01", "iacn0000000001", ("198.18.0.5",), (G1,))
DB = Member("iacb0000000001", "52:54:00:00:00:02", "iacn0000000002", (), (G1, G2))
GROUPS = {
    G1: Group(
        G1,
        (
            Rule(direction="ingress", protocol="tcp", port_min=22, remote_cidr="198.18.0.0/28"),
            Rule(direction="ingress", protocol="icmp", remote_group="self"),
        ),
    ),
    G2: Group(G2, (Rule(direction="egress", protocol="udp", port_min=53, port_max=54),)),
}


def chain(text: str, name: str, family: str | None = None) -> list[str]:
    lines = text.splitlines()
    first = lines.index(f"table {family} iacloud {{") if family else 0
    start = lines.index(f"  chain {name} {{", first)
    end = lines.index("  }", start)
    return [line.strip() for line in lines[start + 1 : end]]


def test_no_member_no_tables() -> None:
    assert compile_ruleset(GROUPS, []).text == ""
    assert removal() == (
        "table bridge iacloud\ndelete table bridge iacloud\n"
        "table inet iacloud\ndelete table inet iacloud\n"
    )


def test_whole_ruleset_replaces_both_tables_first() -> None:
    text = compile_ruleset(GROUPS, [WEB, DB]).text
    assert text.startswith(removal())
    assert text.count("table bridge iacloud {") == 1 and text.count("table inet iacloud {") == 1


def test_anti_spoofing_binds_mac_and_addresses_to_the_port() -> None:
    text = compile_ruleset(GROUPS, [WEB]).text
    spoof = chain(text, f"spoof_{WEB.key}")
    assert spoof[0] == "ether saddr != 52:54:00:00:00:01 drop"
    assert "ether type arp arp saddr ip != { 0.0.0.0, 198.18.0.5 } drop" in spoof
    assert "ether type ip ip saddr { 198.18.0.5 } accept" in spoof
    assert "ether type ip udp sport 67 udp dport 68 drop" in spoof  # no DHCP server
    assert spoof[-1] == "drop"
    assert f'iifname vmap {{ "iacn0000000001" : jump spoof_{WEB.key} }}' in text
    # a NIC without a known address may only do DHCP
    no_ip = chain(compile_ruleset(GROUPS, [DB]).text, f"spoof_{DB.key}")
    assert not any("ip saddr {" in line for line in no_ip)


def test_stateful_chains_and_rules() -> None:
    text = compile_ruleset(GROUPS, [WEB, DB]).text
    inbound = chain(text, f"in_{WEB.key}")
    assert inbound[:3] == [
        "ct state established,related accept",
        "ct state invalid drop",
        "udp sport 67 udp dport 68 accept",
    ]
    assert (
        "meta nfproto ipv4 meta l4proto tcp tcp dport 22 ip saddr 198.18.0.0/28 accept "
        f'comment "{G1}:0"'
    ) in inbound
    assert (
        f'meta nfproto ipv4 meta l4proto icmp ip saddr @sg_0123456789 accept comment "{G1}:1"'
        in inbound
    )
    assert inbound[-1] == "drop"
    # remote_group = "self": a set of the group's members' addresses
    assert "set sg_0123456789 {" in text and "elements = { 198.18.0.5 }" in text
    # egress: G1 has no egress rules -> Neutron's allow-all default; G2's rule returns
    out_db = chain(text, f"out_{DB.key}")
    assert f'meta nfproto ipv4 return comment "{G1}:egress-default"' in out_db
    assert f'meta nfproto ipv4 meta l4proto udp udp dport 53-54 return comment "{G2}:0"' in out_db
    assert out_db[0] == "ct state established,related return"


def test_each_bridge_tracks_in_a_zone_of_its_own() -> None:
    other = Member("iacb0000000002", "52:54:00:00:00:03", "iacn0000000003", (), (G1,))
    text = compile_ruleset(GROUPS, [WEB, DB, other]).text
    (line,) = chain(text, "prerouting", "inet")[1:]
    assert line == (
        f'ct zone set iifname map {{ "iacb0000000001" : {zone(WEB.bridge)}, '
        f'"iacb0000000002" : {zone(other.bridge)} }}'
    )
    assert zone(WEB.bridge) != zone(other.bridge) and 1 <= zone(WEB.bridge) <= 65534


def test_expected_chains_per_rule() -> None:
    ruleset = compile_ruleset(GROUPS, [WEB, DB])
    assert ruleset.expected[G1] == {
        0: {f"in_{WEB.key}", f"in_{DB.key}"},
        1: {f"in_{WEB.key}", f"in_{DB.key}"},
    }
    assert ruleset.expected[G2] == {0: {f"out_{DB.key}"}}


@pytest.mark.parametrize(
    "member",
    [
        Member("iacb0000000001", "52:54:00:00:00:01", 'x" drop', (), (G1,)),
        Member("iacb0000000001", "01:00:5e:00:00:01", "iacn1", (), (G1,)),
        Member("iacb0000000001", "52:54:00:00:00:01", "iacn1", ("1.2.3.4; drop",), (G1,)),
        Member("iacb0000000001", "52:54:00:00:00:01", "iacn1", (), ("sg-x }",)),
    ],
)
def test_nothing_unvalidated_reaches_nft(member: Member) -> None:
    with pytest.raises(ValueError):
        compile_ruleset(GROUPS, [member])


def test_conntrack_verdicts_follow_the_rules() -> None:
    members = [WEB, DB]
    sets = conntrack.member_sets(members)
    assert conntrack.allows(WEB, GROUPS, "ingress", "198.18.0.9", "tcp", 22, sets)
    assert not conntrack.allows(WEB, GROUPS, "ingress", "198.18.0.20", "tcp", 22, sets)
    assert not conntrack.allows(WEB, GROUPS, "ingress", "198.18.0.9", "tcp", 23, sets)
    assert conntrack.allows(DB, GROUPS, "ingress", "198.18.0.5", "icmp", None, sets)
    assert not conntrack.allows(DB, GROUPS, "ingress", "198.18.0.6", "icmp", None, sets)
    assert conntrack.allows(WEB, GROUPS, "egress", "203.0.113.1", "tcp", 443, sets)
    # DB is in G1 too, whose default egress allows everything
    assert conntrack.allows(DB, GROUPS, "egress", "203.0.113.1", "tcp", 443, sets)
    only_g2 = Member(DB.bridge, DB.mac, DB.device, (), (G2,))
    assert conntrack.allows(only_g2, GROUPS, "egress", "203.0.113.1", "udp", 53, sets)
    assert not conntrack.allows(only_g2, GROUPS, "egress", "203.0.113.1", "tcp", 443, sets)
    assert conntrack.allows(only_g2, GROUPS, "egress", "255.255.255.255", "udp", 67, sets)


def test_member_records_merge_per_nic(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("IACLOUD_SECGROUPS_DIR", str(tmp_path))
    monkeypatch.setenv("IACLOUD_NETFACTS_DIR", str(tmp_path / "nets"))
    port = facts.MemberRecord(
        "port", "s1", "p", "iacb0000000001", "52:54:00:00:00:01", None, ("198.18.0.5",), (G2,)
    )
    nic = facts.MemberRecord(
        "server", "s1", "web", "iacb0000000001", "52:54:00:00:00:01", "iacn1", (), (G1,)
    )
    lonely = facts.MemberRecord(
        "port", "s1", "q", "iacb0000000001", "52:54:00:00:00:09", None, ("198.18.0.9",), (G1,)
    )
    for rec in (port, nic, lonely):
        facts.write_member(rec)
    merged = facts.merged(facts.members())
    # the port brings the address and a group, the server NIC the device; a port with groups
    # that no NIC takes has nothing to filter
    assert merged == [
        Member("iacb0000000001", "52:54:00:00:00:01", "iacn1", ("198.18.0.5",), (G1, G2))
    ]
    facts.remove_members("server", "s1", "web")
    assert facts.merged(facts.members()) == []
    (tmp_path / "members" / "port-x.json").write_text('{"source": "port", "mac": "zz"}')
    assert len(facts.members()) == 2  # a damaged record is skipped


def test_a_group_another_stack_uses_cannot_be_deleted(tmp_path, monkeypatch) -> None:
    from iacloud.provider import Observed, StackInfo
    from iacloud.providers.netlink import NetlinkProvider, NetlinkSettings

    monkeypatch.setenv("IACLOUD_SECGROUPS_DIR", str(tmp_path))
    stack = StackInfo("lab", "s1", tmp_path, tmp_path)
    groups = NetlinkProvider(stack, NetlinkSettings()).resource("security_group")
    prior = Observed(G1, {"rules": []}, {"id": G1})
    mine = facts.MemberRecord("server", "s1", "web", "iacb1", "52:54:00:00:00:01", "t1", (), (G1,))
    facts.write_member(mine)
    assert groups.check_delete("sg", prior, {}) == []  # this stack's users go first
    theirs = facts.MemberRecord("port", "s2", "db", "iacb1", "52:54:00:00:00:02", None, (), (G1,))
    facts.write_member(theirs)
    (problem,) = groups.check_delete("sg", prior, {})
    assert "still in use by db of stack s2" in problem.message
