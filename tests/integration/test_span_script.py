"""The script that makes a host's side of a spanning network (#16, `span._ENSURE`) repairs any
half-made side, and the read-back (`span_read`) judges it: run in a network namespace of this
machine made for the test (the same `sh -c SCRIPT sh ARGS` a host runs over SSH), against a
side missing its VXLAN device, its bridge, an FDB peer, or with a VXLAN device of another VNI
or MTU; each time the side reads back whole, and running it again changes nothing."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from iacloud.providers.netlink import span, span_read
from iacloud.providers.netlink.names import NetworkNames

NS = f"ndspan{os.getpid()}"
N = NetworkNames("iacb00000000e1")
TAG = "iacloud:nd:lan"
LOCAL = "10.250.0.2"
PEERS = ["10.250.0.1", "10.250.0.3"]
WANT = span_read.Wanted(N, TAG, span.vni(N.bridge), LOCAL, 1450, frozenset(PEERS))


def sh(script: str, *args: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", NS, "sh", "-c", script, "sh", *args],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def ensure() -> None:
    sh(span._ENSURE, N.bridge, N.vxlan, str(WANT.vni), LOCAL, "1450", TAG, *PEERS)


def read() -> span_read.HostSides:
    return span_read.parse(sh(span_read._READ, N.bridge, N.vxlan), [(N.bridge, N.vxlan)])


def problems() -> list[str]:
    return span_read.problems(read(), WANT)


def indexes() -> str:
    """The namespace's links by index: a link made again gets another."""
    return sh("ip -o link show | cut -d: -f1,2")


@pytest.fixture
def netns() -> Iterator[None]:
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        yield
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)


@pytest.mark.parametrize(
    "damage",
    [
        f"ip link del dev {N.vxlan}",
        f"ip link del dev {N.bridge}",
        f"bridge fdb del 00:00:00:00:00:00 dev {N.vxlan} dst {PEERS[0]}",
        f"bridge fdb append 00:00:00:00:00:00 dev {N.vxlan} dst 10.250.0.9",
        f"ip link set dev {N.vxlan} mtu 1400",
        f"ip link set dev {N.vxlan} down",
        f"ip link set dev {N.vxlan} nomaster",
        f"ip link del dev {N.vxlan}; ip link add {N.vxlan} type vxlan id 7 local {LOCAL} "
        "dstport 4789",
        f"ip link del dev {N.vxlan}; ip link add {N.vxlan} type vxlan id {span.vni(N.bridge)} "
        "local 10.250.0.8 dstport 4789",
    ],
)
def test_the_script_repairs_a_half_made_side(netns: None, damage: str) -> None:
    assert problems() == [f"bridge {N.bridge} missing", f"vxlan {N.vxlan} missing"]
    ensure()
    assert problems() == []
    sh(damage)
    assert problems() != []
    ensure()
    assert problems() == []
    before = read(), indexes()
    ensure()  # again: nothing is made again or changed
    assert (read(), indexes()) == before
