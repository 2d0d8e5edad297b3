"""Reading the hosts' sides of a spanning network (#16, `span_read`): the strict parser of what
a host sends back (Hypothesis: any answer our script can print is read back exactly, and any
cut or garbled one is an error, never a guess), what makes a side whole, and the verdicts."""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iacloud import ssh_run
from iacloud.errors import ProviderError
from iacloud.providers.netlink import span, span_read
from iacloud.providers.netlink.names import NetworkNames
from iacloud.providers.netlink.span_read import HostSides, LinkState, SideReadError, Wanted
from iacloud.site_hosts import CatalogHost

TAG = "iacloud:s1:lan"
N = NetworkNames("iacb00000000ab")
VNI = span.vni(N.bridge)
LOCAL = "198.19.250.12"
PEERS = frozenset({"198.19.250.1", "198.19.250.11"})
WANT = Wanted(N, TAG, VNI, LOCAL, 1450, PEERS)

# what iproute2 6.1 prints (`ip -j -d link show dev X`, `bridge -j fdb show dev X`), trimmed
BRIDGE_JSON = (
    '[{"ifindex":2,"ifname":"iacb00000000ab","flags":["BROADCAST","MULTICAST","UP"],'
    '"mtu":1450,"qdisc":"noqueue","operstate":"DOWN","linkinfo":{"info_kind":"bridge",'
    '"info_data":{"forward_delay":1500,"hello_timer":0.00}},"ifalias":"iacloud:s1:lan"}]'
)
VXLAN_JSON = (
    '[{"ifindex":3,"ifname":"iacx00000000ab","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],'
    '"mtu":1450,"master":"iacb00000000ab","linkinfo":{"info_kind":"vxlan","info_data":'
    '{"id":VNI,"local":"198.19.250.12","port_range":{"low":0,"high":0},"port":4789,'
    '"learning":false},"info_slave_kind":"bridge","info_slave_data":{"state":"forwarding"}},'
    '"ifalias":"iacloud:s1:lan"}]'
).replace("VNI", str(VNI))
FDB_JSON = (
    '[{"mac":"5e:b0:a1:ab:cf:f0","flags":[],"master":"iacb00000000ab","state":"permanent"},'
    '{"mac":"00:00:00:00:00:00","dst":"198.19.250.1","flags":["self"],"state":"permanent"},'
    '{"mac":"00:00:00:00:00:00","dst":"198.19.250.11","flags":["self"],"state":"permanent"}]'
)
WHOLE = (
    f"@link {N.bridge}\n{BRIDGE_JSON}\n@link {N.vxlan}\n{VXLAN_JSON}\n"
    f"@fdb {N.vxlan}\n{FDB_JSON}\n@end\n"
)
PAIRS = [(N.bridge, N.vxlan)]


def test_a_whole_side_as_iproute2_prints_it() -> None:
    sides = span_read.parse(WHOLE, PAIRS)
    assert sides.links[N.vxlan] == LinkState(
        name=N.vxlan, kind="vxlan", up=True, mtu=1450, master=N.bridge, alias=TAG, vni=VNI,
        local=LOCAL, port=4789,
    )  # fmt: skip
    assert sides.peers == {N.vxlan: PEERS}
    assert span_read.problems(sides, WANT) == []


def test_missing_links_and_peers_are_named() -> None:
    gone = f"@link {N.bridge}\n{BRIDGE_JSON}\n@link {N.vxlan}\n[]\n@fdb {N.vxlan}\n[]\n@end\n"
    assert span_read.problems(span_read.parse(gone, PAIRS), WANT) == [f"vxlan {N.vxlan} missing"]
    fewer = WHOLE.replace(',{"mac":"00:00:00:00:00:00","dst":"198.19.250.11"', ',{"mac":"x"')
    assert (
        "peers ['198.19.250.1'], not" in span_read.problems(span_read.parse(fewer, PAIRS), WANT)[0]
    )


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"vni": VNI + 1}, "is not vxlan"),
        ({"local": "198.19.250.13"}, "is not vxlan"),
        ({"port": 8472}, "is not vxlan"),
        ({"master": None}, "is not up on"),
        ({"alias": "someone else"}, "is not up on"),
        ({"up": False}, "is not up on"),
        ({"mtu": 1500}, "has mtu 1500, not 1450"),
    ],
)
def test_each_wrong_detail_of_the_vxlan_device_breaks_the_side(
    change: dict[str, Any], needle: str
) -> None:
    sides = span_read.parse(WHOLE, PAIRS)
    x = sides.links[N.vxlan]
    sides.links[N.vxlan] = LinkState(**{**x.__dict__, **change})
    found = span_read.problems(sides, WANT)
    assert len(found) == 1 and needle in found[0], found


def test_a_bridge_that_is_not_the_networks_breaks_the_side() -> None:
    sides = span_read.parse(WHOLE, PAIRS)
    sides.links[N.bridge] = LinkState(N.bridge, "bridge", up=True, mtu=1450, alias="other")
    assert span_read.problems(sides, WANT) == [f"bridge {N.bridge} is not the network's up bridge"]


# ---- the parser, property-based -------------------------------------------------------------

ADDRESSES = st.builds("198.19.{}.{}".format, st.integers(0, 255), st.integers(0, 255))
NAMES = st.integers(0, (1 << 40) - 1).map(lambda i: NetworkNames(f"iacb{i:010x}"))
FLAGS = st.lists(st.sampled_from(["BROADCAST", "MULTICAST", "UP", "LOWER_UP"]), unique=True)


@st.composite
def link_json(draw: st.DrawFn, name: str, kind: str) -> tuple[dict[str, Any], LinkState]:
    flags = draw(FLAGS)
    mtu = draw(st.integers(68, 65535))
    master = draw(st.none() | st.just(f"iacb{name[4:]}"))
    alias = draw(st.none() | st.text(max_size=30))
    doc: dict[str, Any] = {"ifindex": draw(st.integers(1, 1 << 20)), "ifname": name,
                           "flags": flags, "mtu": mtu, "operstate": "UP"}  # fmt: skip
    if master is not None:
        doc["master"] = master
    if alias is not None:
        doc["ifalias"] = alias
    state = LinkState(name, kind, "UP" in flags, mtu, master, alias)
    if kind == "vxlan":
        vni, local, port = draw(st.integers(1, (1 << 24) - 1)), draw(ADDRESSES), 4789
        data = {"id": vni, "local": local, "port": port, "learning": False, "ttl": 0}
        state = LinkState(**{**state.__dict__, "vni": vni, "local": local, "port": port})
    else:
        data = {"stp_state": 0, "hello_timer": 0.0}
    doc["linkinfo"] = {"info_kind": kind, "info_data": data}
    return doc, state


@st.composite
def answers(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]], HostSides]:
    """An answer our script can print for some networks, and what it says."""
    nets = draw(st.lists(NAMES, min_size=1, max_size=4, unique_by=lambda n: n.bridge))
    text, pairs, sides = [], [], HostSides()
    for n in nets:
        pairs.append((n.bridge, n.vxlan))
        for name, kind in ((n.bridge, "bridge"), (n.vxlan, "vxlan")):
            text.append(f"@link {name}")
            if draw(st.booleans()):
                doc, state = draw(link_json(name, kind))
                text.append(json.dumps([doc], separators=(",", ":")))
                sides.links[name] = state
            else:
                text.append("[]")
        peers = draw(st.frozensets(ADDRESSES, max_size=4))
        other = [{"mac": "52:54:00:12:34:56", "flags": [], "master": n.bridge}]
        entries = other + [{"mac": span.ZERO_MAC, "dst": p, "flags": ["self"]} for p in peers]
        text += [f"@fdb {n.vxlan}", json.dumps(draw(st.permutations(entries)))]
        sides.peers[n.vxlan] = peers
    text.append("@end")
    return "\n".join(text) + "\n", pairs, sides


@settings(max_examples=300, deadline=None)
@given(answers())
def test_every_answer_the_script_can_print_reads_back_exactly(
    case: tuple[str, list[tuple[str, str]], HostSides],
) -> None:
    text, pairs, sides = case
    assert span_read.parse(text, pairs) == sides


@settings(max_examples=300, deadline=None)
@given(answers(), st.data())
def test_a_cut_answer_is_an_error_never_a_guess(
    case: tuple[str, list[tuple[str, str]], HostSides], data: st.DataObject
) -> None:
    text, pairs, _ = case
    cut = data.draw(st.integers(0, len(text) - len("@end\n")))
    with pytest.raises(SideReadError):
        span_read.parse(text[:cut], pairs)


@settings(max_examples=300, deadline=None)
@given(answers(), st.data())
def test_a_garbled_answer_reads_or_fails_cleanly(
    case: tuple[str, list[tuple[str, str]], HostSides], data: st.DataObject
) -> None:
    text, pairs, _ = case
    at = data.draw(st.integers(0, len(text)))
    junk = data.draw(st.text(max_size=8))
    # the only error it may raise: anything else would crash a refresh
    with contextlib.suppress(SideReadError):
        span_read.parse(text[:at] + junk + text[at:], pairs)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_reads_or_fails_cleanly(text: str) -> None:
    with contextlib.suppress(SideReadError):
        span_read.parse(text, PAIRS)


@pytest.mark.parametrize(
    "bad",
    [
        WHOLE.replace("@end\n", ""),  # cut before its end
        WHOLE + "more\n",  # something after the end
        WHOLE.replace(f"@fdb {N.vxlan}", f"@fdb {N.bridge}"),  # not the section asked
        WHOLE.replace('"mtu":1450,"master"', '"mtu":"1450","master"'),  # a number as a string
        WHOLE.replace('"mtu":1450,"master"', '"mtu":NaN,"master"'),  # not JSON
        WHOLE.replace('"mtu":1450,"master"', '"mtu":1450,"mtu":1500,"master"'),  # twice
        WHOLE.replace(f'"ifname":"{N.vxlan}"', '"ifname":"eth0"'),  # another link
        WHOLE.replace(f"{VXLAN_JSON}", f"{VXLAN_JSON[:-1]},{VXLAN_JSON[1:]}"),  # two links
        WHOLE.replace(f"{FDB_JSON}", ""),  # a section without its document
        WHOLE.replace('"id":', '"id":-'),  # no such VNI
    ],
)
def test_strictly_not_what_the_script_prints(bad: str) -> None:
    with pytest.raises(SideReadError):
        span_read.parse(bad, PAIRS)


# ---- the verdicts: one SSH call per host, in parallel; unreadable means unknown ----------------

LAB = "qemu+libssh2://root@{}/system?sshauth=privkey&keyfile=/k"
HOSTS = {
    "h1": CatalogHost(uri=LAB.format("198.19.250.11"), ssh="root@198.19.250.11"),
    "h2": CatalogHost(uri=LAB.format("198.19.250.12"), ssh="root@198.19.250.12"),
    "local": CatalogHost(uri="qemu:///system"),
}
NODE = "198.19.250.1"


def fake_hosts(
    monkeypatch: pytest.MonkeyPatch, answer: dict[str, str | Exception]
) -> list[tuple[str, Sequence[str]]]:
    calls: list[tuple[str, Sequence[str]]] = []

    def run(member: span.Member, script: str, *args: str, timeout: float) -> str:
        assert script == span_read._READ and timeout == span_read.READ_TIMEOUT
        calls.append((member.name, args))
        reply = answer[member.name]
        if isinstance(reply, Exception):
            raise reply
        return reply

    monkeypatch.setattr(span, "run", run)
    return calls


def whole_on(host: str, nets: Sequence[NetworkNames], peers: Sequence[str]) -> str:
    """The answer of a host whose sides of `nets` are whole."""
    out = []
    for n in nets:
        doc, vx = json.loads(BRIDGE_JSON), json.loads(VXLAN_JSON)
        doc[0]["ifname"], vx[0]["ifname"], vx[0]["master"] = n.bridge, n.vxlan, n.bridge
        vx[0]["linkinfo"]["info_data"].update(
            id=span.vni(n.bridge), local=HOSTS[host].underlay_address
        )
        fdb = [{"mac": span.ZERO_MAC, "dst": p} for p in peers]
        out += [f"@link {n.bridge}", json.dumps(doc), f"@link {n.vxlan}", json.dumps(vx),
                f"@fdb {n.vxlan}", json.dumps(fdb)]  # fmt: skip
    return "\n".join([*out, "@end"]) + "\n"


def spanned(n: NetworkNames, hosts: Sequence[str]) -> span_read.Spanned:
    return span_read.Spanned(n, TAG, hosts, 1450)


def test_each_host_is_asked_once_for_all_its_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = N, NetworkNames("iacb00000000cd")
    h1, h2 = "198.19.250.11", "198.19.250.12"
    calls = fake_hosts(monkeypatch, {"h1": whole_on("h1", [a, b], [NODE, h2]),
                                     "h2": whole_on("h2", [a], [NODE, h1])})  # fmt: skip
    verdicts = span_read.check([spanned(a, ["h1", "h2", "local"]), spanned(b, ["h1"])], HOSTS, NODE)
    assert sorted(c[0] for c in calls) == ["h1", "h2"]
    assert dict(calls)["h1"] == (a.bridge, a.vxlan, b.bridge, b.vxlan)
    # b spans h1 alone: its side there peers with the node only, so h1's answer (peers NODE
    # and h2 for both networks) breaks b there, not a
    assert verdicts[a.bridge] == span_read.Verdict()
    assert list(verdicts[b.bridge].broken) == ["h1"] and verdicts[b.bridge].unknown is None


def test_a_host_that_cannot_be_read_makes_the_network_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    down = ProviderError("host h2 cannot be reached over ssh: Connection refused")
    fake_hosts(monkeypatch, {"h1": "garbage\n", "h2": down})
    verdicts = span_read.check([spanned(N, ["h2"])], HOSTS, NODE)
    assert verdicts[N.bridge].unknown == str(down)
    verdicts = span_read.check([spanned(N, ["h1"])], HOSTS, NODE)
    assert "host h1 answered what is not a network side" in str(verdicts[N.bridge].unknown)


def test_nothing_is_asked_without_remote_members(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_hosts(monkeypatch, {})
    assert span_read.check([spanned(N, ["local"])], HOSTS, NODE) == {N.bridge: span_read.Verdict()}
    assert span_read.check([spanned(N, ["h1"])], HOSTS, None) == {N.bridge: span_read.Verdict()}
    assert calls == []


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        (
            subprocess.CompletedProcess([], 255, "", "ssh: connect to host h2 port 22: refused\n"),
            "host h2 cannot be reached over ssh: ssh: connect to host h2 port 22: refused",
        ),
        (subprocess.CompletedProcess([], 1, "", "ip: oops\n"), "host h2: exit 1: ip: oops"),
        (
            subprocess.TimeoutExpired(["ssh"], 15.0),
            "host h2 cannot be reached over ssh: no answer within 15 s",
        ),
    ],
)
def test_ssh_failures_name_the_host(
    monkeypatch: pytest.MonkeyPatch, outcome: object, message: str
) -> None:
    seen: dict[str, Any] = {}

    def run(argv: list[str], **kw: Any) -> object:
        seen.update(kw, argv=argv)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(ssh_run.subprocess, "run", run)
    member = span.members(["h2"], HOSTS)[0]
    with pytest.raises(ProviderError, match=re.escape(message)):
        span_read.read_host(member, [N])
    assert seen["timeout"] == span_read.READ_TIMEOUT
    # the script and every name are words of their own after `--`: nothing is built as text
    words = seen["argv"][seen["argv"].index("--") + 1 :]
    assert [shlex.split(w) for w in words] == [
        ["sh"],
        ["-c"],
        [span_read._READ],
        ["sh"],
        [N.bridge],
        [N.vxlan],
    ]
