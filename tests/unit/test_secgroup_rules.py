"""Property tests (Hypothesis) for security group rule validation: every accepted rule is
consistent (ports in range, only for tcp/udp, ordered; a canonical IPv4 CIDR; one remote at
most) and compiles to nft text with no character outside a small alphabet; every rejected
input is a pydantic ValidationError, never another exception."""

from __future__ import annotations

import contextlib
import ipaddress
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from iacloud.providers.netlink.security_group import SecurityGroupInputs
from iacloud.secgroups.compiler import Group, Member, compile_ruleset
from iacloud.secgroups.rules import Rule

G = "sg-0123456789"
MEMBER = Member("iacb0000000001", "52:54:00:00:00:01", "iacn0000000001", ("198.18.0.5",), (G,))
SAFE = re.compile(r'[A-Za-z0-9_ .,:;/@{}"!=\-\n]*')

ports = st.one_of(st.none(), st.integers(-5, 70000))
cidrs = st.one_of(
    st.none(),
    st.builds(
        lambda a, p: f"{ipaddress.IPv4Address(a)}/{p}",
        st.integers(0, 2**32 - 1),
        st.integers(0, 33),
    ),
    st.text(max_size=20),
    st.just("2001:db8::/32"),
)
groups = st.one_of(st.none(), st.just("self"), st.just(G), st.text(max_size=14))
raw_rules = st.fixed_dictionaries(
    {
        "direction": st.sampled_from(["ingress", "egress", "in", ""]),
        "protocol": st.sampled_from(["tcp", "udp", "icmp", "any", "sctp"]),
        "port_min": ports,
        "port_max": ports,
        "remote_cidr": cidrs,
        "remote_group": groups,
    }
)


@settings(max_examples=400, deadline=None)
@given(raw_rules)
def test_accepted_rules_are_consistent_and_compile_safely(raw: dict) -> None:
    try:
        rule = Rule.model_validate(raw)
    except ValidationError:
        return
    if rule.port_min is not None or rule.port_max is not None:
        assert rule.protocol in ("tcp", "udp")
        assert rule.port_min is not None and 1 <= rule.port_min <= 65535
        if rule.port_max is not None:
            assert rule.port_min <= rule.port_max <= 65535
    assert rule.remote_cidr is None or rule.remote_group is None
    if rule.remote_cidr is not None:
        net = ipaddress.IPv4Network(rule.remote_cidr)  # strict: host bits are zero
        assert str(net) == rule.remote_cidr
    text = compile_ruleset({G: Group(G, (rule,))}, [MEMBER]).text
    assert SAFE.fullmatch(text), text


@settings(max_examples=100, deadline=None)
@given(st.lists(raw_rules, max_size=4), st.text(max_size=40))
def test_group_inputs_validate_or_raise_a_validation_error(rules: list, text: str) -> None:
    with contextlib.suppress(ValidationError):
        SecurityGroupInputs.model_validate({"rules": rules, "description": text})


def test_examples() -> None:
    ok = Rule(direction="ingress", protocol="tcp", port_min=22)
    assert ok.ports == (22, 22) and ok.remote_group_of(G) is None
    assert Rule(direction="egress", remote_group="self").remote_group_of(G) == G
    for bad in (
        {"direction": "ingress", "protocol": "icmp", "port_min": 8},
        {"direction": "ingress", "protocol": "tcp", "port_max": 80},
        {"direction": "ingress", "protocol": "tcp", "port_min": 90, "port_max": 80},
        {"direction": "ingress", "protocol": "tcp", "port_min": 0},
        {"direction": "ingress", "remote_cidr": "198.18.0.1/24"},
        {"direction": "ingress", "remote_cidr": "198.18.0.0/24", "remote_group": "self"},
        {"direction": "ingress", "remote_group": "web"},
        {"direction": "ingress", "ports": 22},
    ):
        try:
            Rule.model_validate(bad)
        except ValidationError:
            continue
        raise AssertionError(f"accepted {bad}")
