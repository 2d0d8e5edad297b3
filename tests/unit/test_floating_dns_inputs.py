"""Floating IPs and DNS names without a host: input models, the nft rules and their read-back,
address allocation, the load-time checks, the DNS server's arguments and the hosts files."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest
from pydantic import ValidationError

from iacloud import netfacts, netnames
from iacloud.errors import UserError
from iacloud.loading import load_stack
from iacloud.provider import Registry
from iacloud.providers.netlink import dns, dnsmasq, floating_nat
from iacloud.providers.netlink.floating_ip import (
    FloatingIpInputs,
    allocate,
    floating_id,
    ip_problem,
    parse_floating_id,
)
from iacloud.providers.netlink.names import NetworkNames
from iacloud.providers.netlink.network_inputs import NetworkInputs
from iacloud.providers.netlink.records import NetworkFiles
from iacloud.providers.netlink.subnet import plan_subnet
from iacloud.schema import Disruption, field_flag, field_update

BRIDGE = "iacb0123456789"
PORT = f"{BRIDGE}/52:54:00:00:00:01/198.18.10.5"

# ---- floating_ip inputs -----------------------------------------------------------------------


def test_floating_ip_inputs_and_update_policy() -> None:
    fip = FloatingIpInputs(network="iacb9999999999", port=PORT.upper().replace("IACB", "iacb"))
    assert fip.port == PORT and fip.ip is None and fip.router is None
    fields = FloatingIpInputs.model_fields
    assert field_update(fields["port"]) is Disruption.LIVE  # re-pointing is live
    assert field_update(fields["router"]) is Disruption.LIVE
    assert field_update(fields["network"]) is Disruption.REPLACE
    assert field_update(fields["ip"]) is Disruption.REPLACE
    assert {k for k, f in fields.items() if field_flag(f, "computed_default")} == {"ip", "router"}


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({"network": "../x"}, "interface name"),
        ({"network": "ext", "ip": "198.19.0.300"}, "not an IPv4 address"),
        ({"network": "ext", "port": "ext/198.18.10.5"}, "not a port id"),
        ({"network": "ext", "port": "ext/01:00:5e:00:00:01/198.18.10.5"}, "unicast MAC"),
        ({"network": "ext", "router": "iacloud-rtr-xyz"}, "not a router id"),
        ({"network": "ext", "fixed_ip": "198.18.10.5"}, "Extra inputs"),
    ],
)
def test_floating_ip_input_errors(inputs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FloatingIpInputs(**inputs)


def test_floating_ip_ids() -> None:
    assert floating_id(BRIDGE, "198.19.0.5") == f"{BRIDGE}/198.19.0.5"
    assert parse_floating_id(f"{BRIDGE}/198.19.0.5") == (BRIDGE, "198.19.0.5")
    for bad in (BRIDGE, f"{BRIDGE}/x", f"{BRIDGE}/198.19.0.5/1", "a b/198.19.0.5"):
        with pytest.raises(ValueError):
            parse_floating_id(bad)


# ---- allocation -------------------------------------------------------------------------------


def test_allocation_is_the_lowest_free_address_outside_the_dhcp_range() -> None:
    plan = plan_subnet("198.19.0.0/24", None, ("198.19.0.2", "198.19.0.200"))
    assert allocate(plan, True, set()) == IPv4Address("198.19.0.201")  # .1 gateway, range
    assert allocate(plan, False, set()) == IPv4Address("198.19.0.2")  # no DHCP: no range
    taken = {IPv4Address("198.19.0.2"), IPv4Address("198.19.0.3")}
    assert allocate(plan, False, taken) == IPv4Address("198.19.0.4")
    tiny = plan_subnet("198.19.0.0/30")  # .1 gateway, .2 the only other host
    assert allocate(tiny, False, set()) == IPv4Address("198.19.0.2")
    assert allocate(tiny, False, {IPv4Address("198.19.0.2")}) is None


def test_explicit_floating_address_problems() -> None:
    plan = plan_subnet("198.19.0.0/24", None, ("198.19.0.100", "198.19.0.200"))
    where = "network 'ext'"
    assert ip_problem(plan, True, IPv4Address("198.19.0.50"), where) is None
    assert "inside the DHCP range" in ip_problem(plan, True, IPv4Address("198.19.0.150"), where)
    assert ip_problem(plan, False, IPv4Address("198.19.0.150"), where) is None
    assert "gateway" in ip_problem(plan, False, IPv4Address("198.19.0.1"), where)
    assert "outside" in ip_problem(plan, False, IPv4Address("198.18.0.5"), where)


# ---- the nft rules ----------------------------------------------------------------------------

NAT = floating_nat.FloatingNat("198.19.0.5", "198.18.10.5", "iacv0123456789")


def test_nft_ruleset_text() -> None:
    assert floating_nat.ruleset(NAT) == (
        "table ip iacloud_fip_198_19_0_5\n"
        "delete table ip iacloud_fip_198_19_0_5\n"
        "table ip iacloud_fip_198_19_0_5 {\n"
        "  chain prerouting {\n"
        "    type nat hook prerouting priority dstnat; policy accept;\n"
        "    ip daddr 198.19.0.5 dnat to 198.18.10.5\n"
        "  }\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat - 1; policy accept;\n"
        '    oifname "iacv0123456789" ip saddr 198.18.10.5 snat to 198.19.0.5\n'
        "  }\n"
        "}\n"
    )
    assert floating_nat.removal("198.19.0.5") == (
        "table ip iacloud_fip_198_19_0_5\ndelete table ip iacloud_fip_198_19_0_5\n"
    )
    assert floating_nat.floating_of_table("iacloud_fip_198_19_0_5") == "198.19.0.5"
    assert floating_nat.floating_of_table("iacloud_snat") is None
    assert floating_nat.floating_of_table("iacloud_fip_x") is None


def _rule(table: str, chain: str, *exprs: dict) -> dict:
    return {"rule": {"family": "ip", "table": table, "chain": chain, "expr": list(exprs)}}


def _match(left: dict, right: str) -> dict:
    return {"match": {"op": "==", "left": left, "right": right}}


DADDR = {"payload": {"protocol": "ip", "field": "daddr"}}
SADDR = {"payload": {"protocol": "ip", "field": "saddr"}}
OIF = {"meta": {"key": "oifname"}}
T = "iacloud_fip_198_19_0_5"
DNAT = _rule(T, "prerouting", _match(DADDR, "198.19.0.5"), {"dnat": {"addr": "198.18.10.5"}})
SNAT = _rule(
    T,
    "postrouting",
    _match(OIF, "iacv0123456789"),
    _match(SADDR, "198.18.10.5"),
    {"snat": {"addr": "198.19.0.5"}},
)


def test_nft_read_back() -> None:
    """What `nft -j list ruleset ip` prints for our table (nft 1.0.6) reads back as the rule
    that was written; a table missing a rule, or with another address, reads as absent."""
    meta = {"metainfo": {"version": "1.0.6"}}
    snat_table = _rule(
        "iacloud_snat", "postrouting", _match(OIF, "x"), {"snat": {"addr": "1.2.3.4"}}
    )
    assert floating_nat.parse([meta, DNAT, SNAT, snat_table]) == {"198.19.0.5": NAT}
    assert floating_nat.parse([DNAT]) == {}
    assert floating_nat.parse([SNAT]) == {}
    moved = _rule(T, "prerouting", _match(DADDR, "198.19.0.6"), {"dnat": {"addr": "198.18.10.5"}})
    assert floating_nat.parse([moved, SNAT]) == {}
    extra = _rule(T, "prerouting", _match(DADDR, "198.19.0.5"), {"counter": {}}, {"dnat": {}})
    assert floating_nat.parse([extra, SNAT]) == {}


# ---- load-time checks -------------------------------------------------------------------------

STACK = """
version = 1
name = "fipcheck"

[resources.lan]
type = "network"
cidr = "198.18.10.0/24"

[resources.ext]
type = "network"
cidr = "198.19.0.0/24"
dhcp_range = ["198.19.0.100", "198.19.0.200"]
external = true

[resources.p]
type = "port"
network = { get_resource = "lan" }
ip = "198.18.10.5"

[resources.r]
type = "router"
networks = [{ get_resource = "lan" }]
external = { network = { get_resource = "ext" }, ip = "198.19.0.2" }
"""


def _fip(name: str, extra: str) -> str:
    return f'\n[resources.{name}]\ntype = "floating_ip"\n{extra}\n'


def _errors(tmp_path: Path, text: str) -> list[tuple[str | None, str | None, str]]:
    path = tmp_path / "fip.toml"
    path.write_text(STACK + text)
    with pytest.raises(UserError) as info:
        load_stack(path, Registry.discover())
    return [(d.address, d.field, d.message) for d in info.value.diagnostics]


def test_a_floating_ip_stack_loads(tmp_path: Path) -> None:
    path = tmp_path / "fip.toml"
    path.write_text(
        STACK
        + _fip(
            "f",
            'network = { get_resource = "ext" }\nport = { get_resource = "p" }\n'
            'router = { get_resource = "r" }',
        )
        + _fip("spare", 'network = { get_resource = "ext" }\nip = "198.19.0.9"')
    )
    config = load_stack(path, Registry.discover())
    assert {"f", "spare"} <= set(config.resources)


def test_floating_ip_load_time_errors(tmp_path: Path) -> None:
    found = _errors(
        tmp_path,
        _fip("a", 'network = { get_resource = "lan" }')
        + _fip("b", 'network = { get_resource = "ext" }\nip = "198.19.0.150"')
        + _fip("c", 'network = { get_resource = "ext" }\nip = "198.19.0.2"')
        + _fip("d", 'network = { get_resource = "ext" }\nport = { get_resource = "p" }'),
    )
    assert found == [
        (
            "resources.a",
            "network",
            "network 'lan' is not an external network (set external = true on it)",
        ),
        (
            "resources.b",
            "ip",
            "198.19.0.150 is inside the DHCP range of network 'ext' (198.19.0.100 to "
            "198.19.0.200): its DHCP server could hand it to another host",
        ),
        (
            "resources.c",
            "ip",
            "198.19.0.2 on network 'ext' is already taken by router 'r' (its external ip)",
        ),
        (
            "resources.d",
            "router",
            "router 'r' of this stack joins both networks: name it with router = "
            '{ get_resource = "r" } so that it is made before the floating IP',
        ),
    ]


# ---- DNS names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, ok",
    [("web-0", True), ("WEB-0", True), ("a" * 63, True), ("a" * 64, False), ("-web", False),
     ("web-", False), ("web_0", False), ("web.0", False), ("", False), ("we b", False),
     ("web\n0", False), ("ä", False)],
)  # fmt: skip
def test_host_labels(value: str, ok: bool) -> None:
    if ok:
        assert netnames.check_label(value) == value.lower()
    else:
        with pytest.raises(ValueError, match="not a DNS label"):
            netnames.check_label(value)


def test_host_label_of_a_dotted_hostname() -> None:
    assert netnames.host_label("db.example.com") == "db"
    with pytest.raises(ValueError):
        netnames.host_label("db_1.example.com")


@pytest.mark.parametrize(
    "value, ok",
    [("lab.internal", True), ("Lab.Internal", True), ("internal", True), ("lab..internal", False),
     ("lab.internal.", False), (".lab", False), ("lab/x", False), ("a" * 64 + ".x", False),
     ("lab internal", False), ("x" + ".y" * 130, False)],
)  # fmt: skip
def test_dns_domains(value: str, ok: bool) -> None:
    if ok:
        assert NetworkInputs(cidr="198.18.10.0/24", dns_domain=value).dns_domain == value.lower()
    else:
        with pytest.raises(ValidationError, match="not a DNS domain"):
            NetworkInputs(cidr="198.18.10.0/24", dns_domain=value)


def test_dns_domain_needs_dhcp() -> None:
    with pytest.raises(ValidationError, match="dns_domain needs dhcp = true"):
        NetworkInputs(cidr="198.18.10.0/24", dhcp=False, dns_domain="lab.internal")


def test_dns_server_arguments(tmp_path: Path) -> None:
    n = NetworkNames(BRIDGE)
    files = NetworkFiles(tmp_path / BRIDGE)
    args = dns.build_args(n, files, "lab.internal", "/run/x.hosts", "nobody", "/usr/sbin/dnsmasq")
    assert args == [
        "/usr/sbin/dnsmasq",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        f"--interface={n.dhcp_inner}",
        "--except-interface=lo",
        "--bind-dynamic",
        "--domain=lab.internal",
        "--local=/lab.internal/",
        "--expand-hosts",
        "--hostsdir=/run/x.hosts",
        f"--pid-file={tmp_path / BRIDGE / 'dns.pid'}",
        f"--log-facility={tmp_path / BRIDGE / 'dns.log'}",
        "--user=nobody",
    ]
    assert not any(a.startswith("--dhcp") for a in args)  # no DHCP: no leases, no lease names
    assert dnsmasq.parse_args(args)["domain"] == "lab.internal"


def test_dhcp_server_hands_out_the_domain_and_itself(tmp_path: Path) -> None:
    cfg = dnsmasq.DhcpConfig(
        interface="iacv0123456789",
        range_start="198.18.10.10",
        range_end="198.18.10.253",
        netmask="255.255.255.0",
        gateway="198.18.10.1",
        dns=(),
        mtu=None,
        hosts=(),
        lease_time=3600,
        user="nobody",
        domain="lab.internal",
        own_dns="198.18.10.254",
    )
    args = dnsmasq.build_args(cfg, NetworkFiles(tmp_path / "br"), "/usr/sbin/dnsmasq")
    assert "--port=0" in args  # the DHCP server itself serves no DNS
    assert "--dhcp-option=6,198.18.10.254" in args
    assert "--dhcp-option=option:domain-name,lab.internal" in args
    assert dnsmasq.parse_args(args)["dns"] == []  # not taken for the `dns` input


def test_hosts_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("IACLOUD_NETFACTS_DIR", str(tmp_path))
    mac, who = "52:54:00:AA:bb:cc", "iacloud:s1:web[0]"
    assert not netnames.register(BRIDGE, mac, "198.18.10.23", "web-0", who)  # no such network
    netfacts.write(netfacts.NetworkFacts(bridge=BRIDGE, cidr="198.18.10.0/24"))
    assert netnames.register(BRIDGE, mac, "198.18.10.23", "Web-0", who)
    path = tmp_path / f"{BRIDGE}.hosts" / "52-54-00-aa-bb-cc"
    assert path.read_text() == "# iacloud:s1:web[0]\n198.18.10.23 web-0\n"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o755"
    assert netnames.names(BRIDGE) == {"web-0": "198.18.10.23"}
    netnames.unregister(BRIDGE, mac, "iacloud:s2:web[0]")  # not the owner: kept
    assert path.exists()
    netnames.unregister(BRIDGE, mac, who)
    assert not path.exists() and netnames.names(BRIDGE) == {}
    with pytest.raises(ValueError):
        netnames.entry("198.18.10.23", "web-0", "evil\n198.18.10.1 gw")
    with pytest.raises(ValueError):
        netnames.register(BRIDGE, mac, "198.18.10.23", "web_0", who)
    assert netnames.hosts_dir("../etc") is None


def test_doctor_warns_of_a_dnsmasq_without_inotify(tmp_path: Path, monkeypatch) -> None:
    from iacloud.providers.netlink import doctor

    fake = tmp_path / "dnsmasq"
    monkeypatch.setattr(doctor, "find", lambda program: str(fake))
    for options, status in (("IPv6 DHCP inotify dumpfile", "ok"), ("IPv6 no-inotify", "warn")):
        fake.write_text(
            "#!/bin/sh\necho 'Dnsmasq version 2.90  Copyright (c) 2000-2024 Simon Kelley'\n"
            f"echo 'Compile time options: {options}'\n"
        )
        fake.chmod(0o755)
        check = doctor.dnsmasq()
        assert check.status == status, check
    assert "dns_domain" in check.message and "inotify" in check.fix
