"""The netlink provider's host-free parts: input models, names, subnet defaults, dnsmasq args,
and the checks across a stack's networks, ports and routers made when it is loaded."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from iacloud.config import StackConfig
from iacloud.errors import UserError
from iacloud.loading import load_stack
from iacloud.provider import Registry
from iacloud.providers.netlink import dnsmasq, names
from iacloud.providers.netlink.network_inputs import NetworkInputs, identity, resolve
from iacloud.providers.netlink.port import PortInputs, parse_port_id, port_id
from iacloud.providers.netlink.records import NetworkFiles
from iacloud.providers.netlink.router import RouterInputs
from iacloud.providers.netlink.subnet import plan_subnet
from iacloud.schema import Disruption, field_flag, field_update


@pytest.mark.parametrize(
    "name, ok",
    [
        ("eth0", True),
        ("br-lan.10", True),
        ("a" * 15, True),
        ("a" * 16, False),
        ("", False),
        (".", False),
        ("..", False),
        ("../etc", False),
        ("eth 0", False),
        ("eth0;rm", False),
        ("eth:0", False),
    ],
)
def test_interface_names(name: str, ok: bool) -> None:
    if ok:
        assert names.validate_ifname(name) == name
    else:
        with pytest.raises(ValueError):
            names.validate_ifname(name)


def test_generated_names_fit_the_kernel() -> None:
    bridge = names.bridge_name("stack", "lan[12]", "{}")
    n = names.NetworkNames(bridge)
    ns = names.router_namespace("stack", "r")
    for name in (bridge, n.dhcp_veth, n.dhcp_inner, n.vlan, n.vxlan, *names.router_leg(ns, bridge)):
        assert len(name) <= 15 and names.validate_ifname(name)
    assert n.dhcp_namespace == "iacloud-dhcp-" + bridge[4:]
    assert names.NetworkNames("br0").dhcp_namespace.startswith("iacloud-dhcp-")
    assert names.is_router_namespace(ns)


def test_tags() -> None:
    assert names.parse_tag(names.tag("s1", "web[0]")) == ("s1", "web[0]")
    assert names.parse_tag("something else") is None
    assert names.parse_tag(None) is None
    assert names.parse_tag("iacloud::x") is None


def test_default_mac_is_stable_and_local() -> None:
    mac = names.default_mac("s", "p")
    assert mac == names.default_mac("s", "p") != names.default_mac("s", "q")
    assert mac.startswith("52:54:00:")


@pytest.mark.parametrize(
    "cidr, gateway, server, start, end",
    [
        ("198.18.10.0/24", "198.18.10.1", "198.18.10.254", "198.18.10.10", "198.18.10.253"),
        ("198.18.0.0/29", "198.18.0.1", "198.18.0.6", "198.18.0.2", "198.18.0.5"),
        ("198.18.10.0/26", "198.18.10.1", "198.18.10.62", "198.18.10.10", "198.18.10.61"),
    ],
)
def test_subnet_defaults(cidr: str, gateway: str, server: str, start: str, end: str) -> None:
    plan = plan_subnet(cidr)
    assert (str(plan.gateway), str(plan.server), str(plan.range_start), str(plan.range_end)) == (
        gateway,
        server,
        start,
        end,
    )


def test_default_range_avoids_the_gateway_and_the_server() -> None:
    plan = plan_subnet("198.18.10.0/24", gateway="198.18.10.254")
    assert str(plan.server) == "198.18.10.253"
    assert str(plan.range_end) == "198.18.10.252"
    plan = plan_subnet("198.18.10.0/24", gateway="198.18.10.200")
    assert (str(plan.range_start), str(plan.range_end)) == ("198.18.10.10", "198.18.10.199")


def test_network_inputs_normal_form() -> None:
    a = NetworkInputs(cidr="198.18.10.0/24", dhcp_range=["198.18.10.20", "198.18.10.30"])
    b = NetworkInputs(
        cidr="198.18.10.0/24", dhcp_range={"start": "198.18.10.20", "end": "198.18.10.30"}
    )
    assert a == b
    _, resolved = resolve(NetworkInputs(cidr="198.18.10.0/24"))
    assert resolved["gateway"] == "198.18.10.1"
    assert resolved["dhcp_range"] == {"start": "198.18.10.10", "end": "198.18.10.253"}
    seg = NetworkInputs(
        cidr="198.18.10.0/24",
        segment={"vxlan": 7, "remotes": ["198.19.0.9", "198.19.0.10", "198.19.0.9"]},
    ).segment
    assert seg.remotes == ["198.19.0.9", "198.19.0.10"]


def test_bridge_name_changes_with_replacing_inputs_only() -> None:
    def bridge(**kw: object) -> str:
        _, resolved = resolve(NetworkInputs(**kw))
        return names.bridge_name("s", "lan", identity(resolved))

    base = bridge(cidr="198.18.10.0/24")
    assert bridge(cidr="198.18.10.0/24", dns=["198.18.0.53"], mtu=1400) == base
    assert bridge(cidr="198.18.10.0/24", gateway="198.18.10.1") == base  # the default, spelled out
    assert bridge(cidr="198.18.11.0/24") != base
    assert bridge(cidr="198.18.10.0/24", gateway="198.18.10.2") != base


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({"cidr": "198.18.10.1/24"}, "host bits"),
        ({"cidr": "198.18.10.0"}, "no prefix length"),
        ({"cidr": "2001:db8::/64"}, "not an IPv4 CIDR"),
        ({"cidr": "198.18.10.0/30"}, "DHCP needs at least"),
        ({"cidr": "198.18.10.0/24", "gateway": "198.18.11.1"}, "not a host address"),
        ({"cidr": "198.18.10.0/24", "dhcp_range": ["198.18.10.1", "198.18.10.9"]}, "the gateway"),
        ({"cidr": "198.18.10.0/24", "dhcp_range": ["198.18.10.9", "198.18.10.254"]}, "DHCP server"),
        ({"cidr": "198.18.10.0/24", "dhcp_range": ["198.18.10.9", "198.18.10.5"]}, "above its end"),
        ({"cidr": "198.18.10.0/24", "dhcp_range": ["198.18.10.9"]}, "exactly two"),
        ({"cidr": "198.18.10.0/24", "dns": ["dns.example"]}, "not an IPv4 address"),
        ({"cidr": "198.18.10.0/24", "mtu": 20}, "greater than or equal"),
        ({"cidr": "198.18.10.0/24", "segment": {"vlan": 5000, "uplink": "eth0"}}, "4094"),
        ({"cidr": "198.18.10.0/24", "segment": {"vlan": 5, "uplink": "../x"}}, "interface name"),
        ({"cidr": "198.18.10.0/24", "segment": {"vxlan": 5}}, "either remotes"),
        ({"cidr": "198.18.10.0/24", "segment": {"vxlan": 5, "group": "198.19.0.1"}}, "multicast"),
        ({"cidr": "198.18.10.0/24", "colour": "red"}, "Extra inputs"),
    ],
)
def test_network_inputs_errors(inputs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        NetworkInputs(**inputs)


def test_network_update_policy() -> None:
    fields = NetworkInputs.model_fields
    assert {k for k, f in fields.items() if field_update(f) is Disruption.LIVE} == {
        "dhcp",
        "dhcp_range",
        "dns",
        "mtu",
        "external",
        "dns_domain",
        "hosts",
    }
    assert {k for k, f in fields.items() if field_flag(f, "computed_default")} == {
        "gateway",
        "dhcp_range",
        "mtu",
        "hosts",
    }
    port_live = {"security_groups", "device"}  # the port's filtering, not its address
    assert all(
        field_update(f) is (Disruption.LIVE if k in port_live else Disruption.REPLACE)
        for k, f in PortInputs.model_fields.items()
    )
    assert field_update(RouterInputs.model_fields["networks"]) is Disruption.LIVE
    assert field_update(RouterInputs.model_fields["external"]) is Disruption.LIVE


def test_port_inputs_and_ids() -> None:
    port = PortInputs(network="iacb0123456789", ip="198.18.10.5", mac="52:54:00:AB:CD:EF")
    assert port.mac == "52:54:00:ab:cd:ef"
    pid = port_id(port.network, port.mac, port.ip)
    assert pid == "iacb0123456789/52:54:00:ab:cd:ef/198.18.10.5"
    assert parse_port_id(pid) == ("iacb0123456789", "52:54:00:ab:cd:ef", "198.18.10.5")
    for bad in ("a/b", "br0/52:54:00:ab:cd:ef/198.18.10.500", "../x/52:54:00:ab:cd:ef/1.2.3.4"):
        with pytest.raises(ValueError):
            parse_port_id(bad)
    for mac in ("01:00:5e:00:00:01", "00:00:00:00:00:00", "52-54-00-ab-cd-ef"):
        with pytest.raises(ValidationError):
            PortInputs(network="br0", ip="198.18.10.5", mac=mac)


def test_router_inputs() -> None:
    assert RouterInputs(networks=["b", "a"]).networks == ["a", "b"]
    with pytest.raises(ValidationError, match="twice"):
        RouterInputs(networks=["a", "a"])
    with pytest.raises(ValidationError):
        RouterInputs(networks=[])


def test_dnsmasq_arguments_read_back(tmp_path: Path) -> None:
    cfg = dnsmasq.DhcpConfig(
        interface="iacv0123456789",
        range_start="198.18.10.10",
        range_end="198.18.10.253",
        netmask="255.255.255.0",
        gateway="198.18.10.1",
        dns=("198.18.0.53", "198.18.0.54"),
        mtu=1400,
        hosts=(("52:54:00:00:00:01", "198.18.10.5"),),
        lease_time=3600,
        user="nobody",
    )
    args = dnsmasq.build_args(cfg, NetworkFiles(tmp_path / "br"), "/usr/sbin/dnsmasq")
    assert "--conf-file=/dev/null" in args and "--port=0" in args
    assert dnsmasq.parse_args(args) == {
        "range": ("198.18.10.10", "198.18.10.253"),
        "gateway": "198.18.10.1",
        "dns": ["198.18.0.53", "198.18.0.54"],
        "mtu": 1400,
        "hosts": [("52:54:00:00:00:01", "198.18.10.5")],
        "domain": None,
    }


# ---- checks across resources, at load time -----------------------------------------------------

NETWORKS = """
version = 1
name = "cross"

[resources.lan]
type = "network"
cidr = "198.18.10.0/24"

[resources.lan2]
type = "network"
cidr = "198.18.11.0/24"
dhcp = false

[resources.ext]
type = "network"
cidr = "198.19.0.0/24"
dhcp_range = ["198.19.0.100", "198.19.0.200"]
external = true
"""


def _load(tmp_path: Path, text: str) -> StackConfig:
    path = tmp_path / "cross.toml"
    path.write_text(NETWORKS + text)
    return load_stack(path, Registry.discover())


def _errors(tmp_path: Path, text: str) -> list[tuple[str | None, str | None, str]]:
    """(address, field, message) of every diagnostic; each names the stack file."""
    with pytest.raises(UserError) as info:
        _load(tmp_path, text)
    assert all(d.file == str(tmp_path / "cross.toml") for d in info.value.diagnostics)
    return [(d.address, d.field, d.message) for d in info.value.diagnostics]


def _port(name: str, ip: str, network: str = "lan", extra: str = "") -> str:
    return (
        f'\n[resources.{name}]\ntype = "port"\nnetwork = {{ get_resource = "{network}" }}\n'
        f'ip = "{ip}"\n{extra}\n'
    )


def test_a_consistent_stack_loads(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        _port("p1", "198.18.10.5", extra='mac = "52:54:00:00:00:01"')
        + _port("p2", "198.18.10.6")
        + _port("p3", "198.18.11.5", "lan2", 'mac = "52:54:00:00:00:01"')  # another network
        + _port("p4", "198.18.10.7", extra='mac = "52:54:00:00:00:02"')
        + """
[resources.r]
type = "router"
networks = [{ get_resource = "lan" }, { get_attr = ["lan2", "id"] }]
external = { network = { get_resource = "ext" }, ip = "198.19.0.2" }
""",
    )
    assert set(config.resources) >= {"p1", "p2", "p3", "p4", "r"}


@pytest.mark.parametrize(
    "ip, message",
    [
        ("198.18.11.5", "198.18.11.5 is outside network 'lan' (198.18.10.0/24)"),
        ("198.18.10.0", "198.18.10.0 is the network address of network 'lan' (198.18.10.0/24)"),
        ("198.18.10.255", "198.18.10.255 is the broadcast address of network 'lan'"),
        ("198.18.10.1", "198.18.10.1 is the gateway of network 'lan' (198.18.10.0/24)"),
        ("198.18.10.254", "198.18.10.254 is the DHCP server of network 'lan'"),
    ],
)
def test_port_address_must_be_a_free_host_of_its_network(
    tmp_path: Path, ip: str, message: str
) -> None:
    ((address, field, text),) = _errors(tmp_path, _port("p", ip))
    assert (address, field) == ("resources.p", "ip")
    assert text.startswith(message)


def test_port_gateway_follows_the_networks_own_gateway(tmp_path: Path) -> None:
    text = NETWORKS.replace(
        'cidr = "198.18.10.0/24"', 'cidr = "198.18.10.0/24"\ngateway = "198.18.10.9"'
    )
    path = tmp_path / "gw.toml"
    path.write_text(text + _port("p", "198.18.10.9") + _port("q", "198.18.10.1"))
    with pytest.raises(UserError) as info:
        load_stack(path, Registry.discover())
    assert [(d.address, d.message.split(" (")[0]) for d in info.value.diagnostics] == [
        ("resources.p", "198.18.10.9 is the gateway of network 'lan'")
    ]


def test_duplicate_ip_and_mac_among_ports_of_one_network(tmp_path: Path) -> None:
    mac = 'mac = "52:54:00:00:00:01"'
    found = _errors(
        tmp_path,
        _port("p1", "198.18.10.5", extra=mac)
        + _port("p2", "198.18.10.5")
        + _port("p3", "198.18.10.6", extra=mac.upper().replace("MAC", "mac")),
    )
    assert found == [
        ("resources.p2", "ip", "198.18.10.5 on network 'lan' is already taken by port 'p1'"),
        ("resources.p3", "mac", "52:54:00:00:00:01 on network 'lan' is already used by port 'p1'"),
    ]


def test_counted_ports_are_checked_per_instance(tmp_path: Path) -> None:
    counted = """
[resources.web]
type = "port"
count = 3
network = { get_resource = "lan" }
ip = { str_replace = { template = "198.18.10.$I", params = { "$I" = "%index%" } } }

[resources.same]
type = "port"
count = 2
network = { get_resource = "lan" }
ip = "198.18.10.50"
"""
    assert _errors(tmp_path, counted) == [
        (
            "resources.web[0]",
            "ip",
            "198.18.10.0 is the network address of network 'lan' (198.18.10.0/24), "
            "not a host address",
        ),
        ("resources.web[1]", "ip", "198.18.10.1 is the gateway of network 'lan' (198.18.10.0/24)"),
        (
            "resources.same[1]",
            "ip",
            "198.18.10.50 on network 'lan' is already taken by port 'same[0]'",
        ),
    ]


def test_ports_on_a_literal_network_id_are_compared_with_each_other(tmp_path: Path) -> None:
    literal = 'network = "iacb0123456789"'
    text = _port("p1", "198.18.10.5").replace(
        'network = { get_resource = "lan" }', literal
    ) + _port("p2", "198.18.10.5").replace('network = { get_resource = "lan" }', literal)
    assert _errors(tmp_path, text) == [
        (
            "resources.p2",
            "ip",
            "198.18.10.5 on network iacb0123456789 is already taken by port 'p1'",
        )
    ]


def test_a_broken_field_is_reported_once_by_its_schema(tmp_path: Path) -> None:
    found = _errors(tmp_path, _port("p", "198.18.10.500") + _port("q", "198.18.10.5", "nosuch"))
    assert [(a, f) for a, f, _ in found] == [("resources.p", "ip"), ("resources.q", "network")]


ROUTER = """
[resources.r]
type = "router"
networks = [{{ get_resource = "lan" }}, {{ get_resource = "{second}" }}]
{extra}
"""


@pytest.mark.parametrize(
    "second, extra, expected",
    [
        (
            "lan",
            "",
            [("networks[1]", "network 'lan' is listed twice (also networks[0])")],
        ),
        (
            "half",
            '[resources.half]\ntype = "network"\ncidr = "198.18.10.128/25"\ndhcp = false',
            [
                (
                    "networks[1]",
                    "network 'half' (198.18.10.128/25) overlaps network 'lan' (198.18.10.0/24, "
                    "networks[0]): a router cannot route between overlapping subnets",
                )
            ],
        ),
        (
            "ext",
            "",
            [("networks[1]", "network 'ext' is external: its gateway belongs to the outside")],
        ),
        (
            "lan2",
            'external = { network = { get_resource = "lan2" }, ip = "198.18.11.2" }',
            [("external.network", "network 'lan2' is both in networks (networks[1])")],
        ),
        (
            "lan2",
            'external = { network = { get_resource = "other" }, ip = "198.19.1.2" }\n'
            '[resources.other]\ntype = "network"\ncidr = "198.19.1.0/24"\ndhcp = false',
            [("external.network", "network 'other' is not an external network")],
        ),
        (
            "lan2",
            'external = { network = { get_resource = "ext" }, ip = "198.19.0.1" }',
            [("external.ip", "198.19.0.1 is the gateway of network 'ext' (198.19.0.0/24)")],
        ),
        (
            "lan2",
            'external = { network = { get_resource = "ext" }, ip = "198.19.0.150" }',
            [("external.ip", "198.19.0.150 is inside the DHCP range of network 'ext'")],
        ),
        (
            "lan2",
            'external = { network = { get_resource = "ext" }, ip = "198.18.10.2" }',
            [("external.ip", "198.18.10.2 is outside network 'ext' (198.19.0.0/24)")],
        ),
    ],
)
def test_router_networks(
    tmp_path: Path, second: str, extra: str, expected: list[tuple[str, str]]
) -> None:
    found = _errors(tmp_path, ROUTER.format(second=second, extra=extra))
    assert [(a, f) for a, f, _ in found] == [("resources.r", f) for f, _ in expected]
    for (_, _, message), (_, start) in zip(found, expected, strict=True):
        assert message.startswith(start), message


def test_router_external_subnet_apart_from_internal_ones(tmp_path: Path) -> None:
    text = NETWORKS.replace('cidr = "198.19.0.0/24"', 'cidr = "198.18.0.0/16"').replace(
        'dhcp_range = ["198.19.0.100", "198.19.0.200"]', "dhcp = false"
    )
    path = tmp_path / "overlap.toml"
    path.write_text(
        text
        + ROUTER.format(
            second="lan2",
            extra='external = { network = { get_resource = "ext" }, ip = "198.18.0.2" }',
        )
    )
    with pytest.raises(UserError) as info:
        load_stack(path, Registry.discover())
    assert [(d.field, d.message) for d in info.value.diagnostics] == [
        (
            "external.network",
            "network 'ext' (198.18.0.0/16) overlaps network 'lan' (198.18.10.0/24), which the "
            "router also joins",
        ),
        (
            "external.network",
            "network 'ext' (198.18.0.0/16) overlaps network 'lan2' (198.18.11.0/24), which the "
            "router also joins",
        ),
    ]


def test_router_external_address_is_not_a_ports(tmp_path: Path) -> None:
    text = _port("p", "198.19.0.2", "ext") + ROUTER.format(
        second="lan2", extra='external = { network = { get_resource = "ext" }, ip = "198.19.0.2" }'
    )
    assert _errors(tmp_path, text) == [
        ("resources.r", "external.ip", "198.19.0.2 on network 'ext' is already taken by port 'p'")
    ]


def test_a_failing_provider_check_is_a_diagnostic(tmp_path: Path, monkeypatch) -> None:
    from iacloud.providers.netlink import NetlinkProvider

    def broken(resources):
        raise KeyError("oops")

    monkeypatch.setattr(NetlinkProvider, "validate_stack", classmethod(lambda cls, r: broken(r)))
    ((address, _, message),) = _errors(tmp_path, _port("p", "198.18.10.5"))
    assert address is None
    assert message == "provider 'netlink' failed to check the stack: KeyError: 'oops'"


def test_validate_and_plan_refuse_before_anything_exists(tmp_path: Path) -> None:
    """Through the installed command: exit 1, the located message, no traceback."""
    path = tmp_path / "cross.toml"
    path.write_text(NETWORKS + _port("p", "198.18.11.5"))
    for command in ("validate", "plan"):
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "iacloud"), command, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1, out
        assert "Traceback" not in out
        assert (
            f"{path}, resources.p, field 'ip': 198.18.11.5 is outside network 'lan' "
            "(198.18.10.0/24)" in out
        )
    assert not (tmp_path / ".iacloud").exists(), "plan touched state before refusing"


# ---- the link decoder ------------------------------------------------------------------------


def _nla(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def test_link_decoder_reads_what_a_link_holds() -> None:
    """An RTM_NEWLINK message as the kernel writes it (a VXLAN device enslaved to a bridge):
    the fields of a Link and the segment attributes `network` reads are decoded; anything
    else (statistics, a bridge's options, attributes this code does not know) is skipped."""
    from iacloud.providers.netlink.links import _decode

    info_data = b"".join(
        [
            _nla(1, struct.pack("=I", 4242)),  # IFLA_VXLAN_ID
            _nla(2, socket.inet_aton("239.1.1.1")),  # IFLA_VXLAN_GROUP
            _nla(3, struct.pack("=I", 7)),  # IFLA_VXLAN_LINK
            _nla(4, socket.inet_aton("198.19.7.1")),  # IFLA_VXLAN_LOCAL
            _nla(5, b"\x40"),  # IFLA_VXLAN_TTL: not read
            _nla(15, struct.pack("!H", 4789)),  # IFLA_VXLAN_PORT, network byte order
            _nla(99, b"\1\2\3"),  # unknown to this code
        ]
    )
    linkinfo = _nla(1, b"vxlan\0") + _nla(0x8000 | 2, info_data)  # INFO_KIND, nested INFO_DATA
    message = struct.pack("=BxHiII", 0, 1, 12, 0x1043, 0) + b"".join(
        [
            _nla(3, b"iacx0123456789\0"),  # IFLA_IFNAME
            _nla(4, struct.pack("=I", 1450)),  # IFLA_MTU
            _nla(10, struct.pack("=I", 9)),  # IFLA_MASTER
            _nla(20, b"iacloud:s1:net[0]\0"),  # IFLA_IFALIAS
            _nla(23, b"\0" * 200),  # IFLA_STATS64: skipped
            _nla(0x8000 | 18, linkinfo),  # IFLA_LINKINFO, nested
        ]
    )
    link = _decode(message, 0, len(message))
    assert (link.index, link.name, link.kind, link.alias, link.master, link.mtu, link.up) == (
        12,
        "iacx0123456789",
        "vxlan",
        "iacloud:s1:net[0]",
        9,
        1450,
        True,
    )
    assert link.owner == ("s1", "net[0]")
    assert link.data == {
        "IFLA_VXLAN_ID": 4242,
        "IFLA_VXLAN_GROUP": "239.1.1.1",
        "IFLA_VXLAN_LINK": 7,
        "IFLA_VXLAN_LOCAL": "198.19.7.1",
        "IFLA_VXLAN_PORT": 4789,
    }
    # a bridge that is down, without alias or master: its data is never decoded
    bridge = (
        struct.pack("=BxHiII", 0, 1, 3, 0x1002, 0)
        + _nla(3, b"br0\0")
        + _nla(18, _nla(1, b"bridge\0") + _nla(2, _nla(1, b"\0" * 8)))
    )
    link = _decode(bridge, 0, len(bridge))
    assert (link.name, link.kind, link.alias, link.master, link.up, link.data) == (
        "br0",
        "bridge",
        None,
        None,
        False,
        {},
    )
    # a truncated attribute ends the decoding instead of reading past the message
    cut = message[:-3]
    assert _decode(cut, 0, len(cut)).name == "iacx0123456789"
