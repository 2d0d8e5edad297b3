"""The netlink provider's host-free parts: input models, names, subnet defaults, dnsmasq args."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from iacloud.providers.netlink import dnsmasq, names
from iacloud.providers.netlink.network import NetworkInputs, identity, resolve
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
    }
    assert {k for k, f in fields.items() if field_flag(f, "computed_default")} == {
        "gateway",
        "dhcp_range",
        "mtu",
    }
    assert all(field_update(f) is Disruption.REPLACE for f in PortInputs.model_fields.values())
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
    }
