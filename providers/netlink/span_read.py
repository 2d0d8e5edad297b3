"""Reading back the hosts' own sides of spanning networks (issue #16, `span`).

A refresh asks each member host once (one SSH call per host, whatever the number of networks,
the hosts in parallel, each bounded by `READ_TIMEOUT`) for the links of its networks and the
FDB of their VXLAN devices, as `ip -j` / `bridge -j` print them. The answer is framed by our
fixed read-only script and parsed strictly: a truncated or garbled answer is an error, never
a guess. A side is whole when the bridge and the VXLAN device exist, carry the network's tag,
are up, the VXLAN device has the network's VNI, the host's underlay address, port 4789 and the
span MTU, is enslaved to the bridge, and its all-zero FDB entries are exactly the other members.

The verdicts (`check`): per network, the member hosts whose side is not whole (the network's
observed `hosts` lacks them, so the plan shows the live update that repairs them), or, when a
member could not be read, why (the network is then unknown, as a server on a down host is).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from iacloud.errors import ProviderError
from iacloud.providers.netlink import span
from iacloud.providers.netlink.names import NetworkNames
from iacloud.site_hosts import CatalogHost

READ_TIMEOUT = 15.0  # seconds for one host's answer (the connection itself: 5)
MAX_ANSWER = 4 << 20  # bytes: more than any host's few links and peers can print

# `sh -c SCRIPT sh BRIDGE VXLAN [BRIDGE VXLAN ...]`: read-only. A missing link prints `[]`
# (ip and bridge print nothing on stdout then); `@end` tells a whole answer from a cut one.
_READ = r"""while [ $# -ge 2 ]; do
    for l in "$1" "$2"; do
        printf '@link %s\n' "$l"
        ip -j -d link show dev "$l" 2>/dev/null || echo '[]'
    done
    printf '@fdb %s\n' "$2"
    bridge -j fdb show dev "$2" 2>/dev/null || echo '[]'
    shift 2
done
printf '@end\n'
"""


class SideReadError(ValueError):
    """A host's answer is not what our script prints."""


class _Json(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class _LinkInfo(_Json):
    info_kind: str = ""
    info_data: dict[str, Any] = Field(default_factory=dict)


class _VxlanData(_Json):
    id: int = Field(ge=0, le=(1 << 24) - 1)
    local: str | None = None
    port: int = Field(ge=0, le=65535)


class _Link(_Json):
    ifname: str
    flags: list[str]
    mtu: int = Field(ge=0)
    master: str | None = None
    ifalias: str | None = None
    linkinfo: _LinkInfo | None = None


class _FdbEntry(_Json):
    mac: str
    dst: str | None = None


_LINKS = TypeAdapter(list[_Link])
_FDB = TypeAdapter(list[_FdbEntry])


@dataclass(frozen=True)
class LinkState:
    """What a read needs of one link on a host."""

    name: str
    kind: str
    up: bool
    mtu: int
    master: str | None = None
    alias: str | None = None
    vni: int | None = None  # a VXLAN device's id, local address and port
    local: str | None = None
    port: int | None = None


@dataclass(frozen=True)
class HostSides:
    """One host's answer: its links among those asked (absent ones left out) and the all-zero
    FDB peers of each VXLAN device asked."""

    links: dict[str, LinkState] = field(default_factory=dict)
    peers: dict[str, frozenset[str]] = field(default_factory=dict)


def _no_constant(name: str) -> Any:
    raise SideReadError(f"not JSON: {name}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SideReadError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _json(text: str, where: str) -> Any:
    """Strict JSON: no NaN or Infinity, no duplicate keys, one document."""
    try:
        return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise SideReadError(f"{where}: not JSON ({exc.msg} at {exc.pos})") from None


def _link(name: str, raw: Any) -> LinkState | None:
    try:
        found = _LINKS.validate_python(raw)
    except ValidationError as exc:
        raise SideReadError(f"link {name}: {exc.errors()[0]['msg']}") from None
    if not found:
        return None
    if len(found) != 1 or found[0].ifname != name:
        raise SideReadError(f"link {name}: the answer names other links")
    link = found[0]
    info = link.linkinfo or _LinkInfo()
    state = LinkState(
        name=name, kind=info.info_kind, up="UP" in link.flags, mtu=link.mtu,
        master=link.master, alias=link.ifalias,
    )  # fmt: skip
    if info.info_kind != "vxlan":
        return state
    try:
        data = _VxlanData.model_validate(info.info_data)
    except ValidationError as exc:
        raise SideReadError(f"link {name}: vxlan {exc.errors()[0]['msg']}") from None
    return LinkState(**{**state.__dict__, "vni": data.id, "local": data.local, "port": data.port})


def _peers(name: str, raw: Any) -> frozenset[str]:
    try:
        entries = _FDB.validate_python(raw)
    except ValidationError as exc:
        raise SideReadError(f"fdb of {name}: {exc.errors()[0]['msg']}") from None
    return frozenset(e.dst for e in entries if e.mac == span.ZERO_MAC and e.dst)


def parse(text: str, pairs: Sequence[tuple[str, str]]) -> HostSides:
    """The answer of `_READ` run with `pairs` (bridge, VXLAN device), strictly: every section
    asked for exactly once, in order, each one JSON document, then `@end` and nothing else."""
    if len(text) > MAX_ANSWER:
        raise SideReadError(f"answer longer than {MAX_ANSWER} bytes")
    expected = [h for b, x in pairs for h in (f"@link {b}", f"@link {x}", f"@fdb {x}")]
    expected.append("@end")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    sections: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith("@"):
            sections.append((line, []))
        elif not sections:
            raise SideReadError("answer does not start with a section")
        else:
            sections[-1][1].append(line)
    heads = [h for h, _ in sections]
    if heads != expected:
        at = next(
            (i for i, h in enumerate(heads) if i >= len(expected) or h != expected[i]), len(heads)
        )
        got = heads[at] if at < len(heads) else "the end of the answer"
        want = expected[at] if at < len(expected) else "the end of the answer"
        raise SideReadError(f"expected {want!r}, got {got!r}")
    sides = HostSides()
    for head, body in sections[:-1]:
        kind, name = head[1:].split(" ", 1)
        document = "\n".join(body).strip()
        if not document:
            raise SideReadError(f"{head}: empty")
        raw = _json(document, head)
        if kind == "link":
            state = _link(name, raw)
            if state is not None:
                sides.links[name] = state
        else:
            sides.peers[name] = _peers(name, raw)
    if sections[-1][1]:
        raise SideReadError("text after '@end'")
    return sides


@dataclass(frozen=True)
class Wanted:
    """One network's side on one member, as `span.ensure` makes it."""

    names: NetworkNames
    tag: str
    vni: int
    local: str
    mtu: int
    peers: frozenset[str]


def problems(sides: HostSides, want: Wanted) -> list[str]:
    """What is wrong with the side (nothing: it is whole)."""
    n = want.names
    out = []
    b = sides.links.get(n.bridge)
    if b is None:
        out.append(f"bridge {n.bridge} missing")
    elif b.kind != "bridge" or b.alias != want.tag or not b.up:
        out.append(f"bridge {n.bridge} is not the network's up bridge")
    x = sides.links.get(n.vxlan)
    if x is None:
        out.append(f"vxlan {n.vxlan} missing")
    else:
        if (x.kind, x.vni, x.local, x.port) != ("vxlan", want.vni, want.local, span.VXLAN_PORT):
            out.append(f"{n.vxlan} is not vxlan {want.vni} from {want.local}")
        if x.master != n.bridge or x.alias != want.tag or not x.up:
            out.append(f"{n.vxlan} is not up on {n.bridge} with the network's tag")
        if x.mtu != want.mtu:
            out.append(f"{n.vxlan} has mtu {x.mtu}, not {want.mtu}")
        have = sides.peers.get(n.vxlan, frozenset())
        if have != want.peers:
            out.append(f"{n.vxlan} peers {sorted(have)}, not {sorted(want.peers)}")
    return out


def read_host(member: span.Member, names: Sequence[NetworkNames]) -> HostSides:
    """One SSH call: the sides of `names` on the member."""
    pairs = [(n.bridge, n.vxlan) for n in names]
    args = [name for pair in pairs for name in pair]
    return parse(span.run(member, _READ, *args, timeout=READ_TIMEOUT), pairs)


@dataclass(frozen=True)
class Spanned:
    """A network to check: its names, tag, recorded hosts and MTU."""

    names: NetworkNames
    tag: str
    hosts: Sequence[str]
    mtu: int


@dataclass
class Verdict:
    """One network's hosts: those whose side is broken (and how), or why it is unknown."""

    broken: dict[str, list[str]] = field(default_factory=dict)
    unknown: str | None = None


def _readable(names: Sequence[str], hosts: Mapping[str, CatalogHost]) -> list[span.Member]:
    """The members that can be read. A host this machine is, or one the catalog no longer
    describes well enough, is not asked: plan's checks report the latter."""
    out = []
    for name in names:
        try:
            out += span.members([name], hosts)
        except ProviderError:
            continue
    return out


def check(
    networks: Sequence[Spanned], hosts: Mapping[str, CatalogHost], node: str | None
) -> dict[str, Verdict]:
    """A verdict per network (by bridge name): every member host asked once, in parallel."""
    verdicts = {s.names.bridge: Verdict() for s in networks}
    if node is None:
        return verdicts  # nothing was spanned from here: the node's checks say so
    plans: dict[str, list[tuple[Spanned, Wanted]]] = {}
    members: dict[str, span.Member] = {}
    for s in networks:
        group = _readable(s.hosts, hosts)
        everyone = {node, *(m.underlay for m in group)}
        for m in group:
            members[m.name] = m
            want = Wanted(s.names, s.tag, span.vni(s.names.bridge), m.underlay, s.mtu,
                          frozenset(everyone - {m.underlay}))  # fmt: skip
            plans.setdefault(m.name, []).append((s, want))
    if not plans:
        return verdicts

    def ask(name: str) -> HostSides | str:
        try:
            return read_host(members[name], [w.names for _, w in plans[name]])
        except SideReadError as exc:
            return f"host {name} answered what is not a network side ({exc})"
        except ProviderError as exc:
            return str(exc)  # it names the host and why (`span.run`)

    with ThreadPoolExecutor(max_workers=min(len(plans), 16)) as pool:
        answers = dict(zip(plans, pool.map(ask, plans), strict=True))
    for name, answer in sorted(answers.items()):
        for s, want in plans[name]:
            verdict = verdicts[s.names.bridge]
            if isinstance(answer, str):
                verdict.unknown = verdict.unknown or answer
            elif wrong := problems(answer, want):
                verdict.broken[name] = wrong
    return verdicts
