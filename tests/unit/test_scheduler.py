"""The scheduler's filters, weighers and reasons, and its invariants over random hosts and
servers: never past a host's capacity, anti-affinity never shares a host, same input same plan."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iacloud.scheduler import (
    Group,
    GroupPolicy,
    Host,
    NoValidHost,
    Ratios,
    Request,
    exclusion,
    place_all,
    place_one,
)

GIB = 1024


def hosts3(**over: Host) -> list[Host]:
    base = {
        "h1": Host("h1", vcpus=4, memory_mib=8 * GIB, disk_gib=100),
        "h2": Host("h2", vcpus=4, memory_mib=16 * GIB, disk_gib=100),
        "h3": Host("h3", vcpus=4, memory_mib=4 * GIB, disk_gib=100),
    }
    base.update(over)
    return list(base.values())


def test_most_free_ram_wins_and_says_why() -> None:
    p = place_one(hosts3(), Request("web", vcpus=1, memory_mib=GIB))
    assert p.host == "h2"
    assert p.why.startswith("h2: most free RAM (15.5 GiB)")


def test_negative_multiplier_stacks() -> None:
    p = place_one(hosts3(), Request("web", vcpus=1, memory_mib=GIB), ram_multiplier=-1.0)
    assert p.host == "h3" and "stacking" in p.why


def test_nova_default_ratios_and_reserved_memory() -> None:
    h = Host("h", vcpus=2, memory_mib=2 * GIB, disk_gib=10)
    assert h.free_vcpus == 8  # cpu_allocation_ratio 4.0
    assert h.free_memory_mib == 2 * GIB - 512  # reserved_host_memory_mb 512, ram ratio 1.0
    assert exclusion(h, Request("big", vcpus=1, memory_mib=2 * GIB)) == (
        "1.5 GiB RAM free, needs 2.0 GiB"
    )
    assert exclusion(h, Request("wide", vcpus=9, memory_mib=64)) == "8 vCPUs free, needs 9"
    overcommit = Host("o", 2, 2 * GIB, 10, ratios=Ratios(ram=1.5, reserved_memory_mib=0))
    assert overcommit.free_memory_mib == 3 * GIB


def test_full_host_makes_the_next_one_chosen() -> None:
    full = Host("h2", vcpus=4, memory_mib=16 * GIB, disk_gib=100, used_memory_mib=15 * GIB)
    p = place_one(hosts3(h2=full), Request("web", vcpus=1, memory_mib=2 * GIB))
    assert p.host == "h1"
    assert "h2 excluded: 0.5 GiB RAM free, needs 2.0 GiB" in p.why


def test_nothing_fits_names_what_each_host_lacked() -> None:
    down = Host("h3", 4, 4 * GIB, 100, up=False, down_reason="libvirtd does not answer")
    with pytest.raises(NoValidHost) as err:
        place_one(hosts3(h3=down), Request("db", vcpus=1, memory_mib=32 * GIB))
    msg = str(err.value)
    assert msg.startswith("no host can take db: ")
    assert "h1: 7.5 GiB RAM free, needs 32.0 GiB" in msg
    assert "h2: 15.5 GiB RAM free, needs 32.0 GiB" in msg
    assert "h3: down (libvirtd does not answer)" in msg


def test_anti_affinity_spreads_and_explains() -> None:
    group = Group("g", GroupPolicy.ANTI_AFFINITY)
    reqs = [Request(f"web[{i}]", 1, GIB, group="g") for i in range(3)]
    placed = place_all(hosts3(), reqs, {"g": group})
    assert sorted(p.host for p in placed) == ["h1", "h2", "h3"]
    assert "h2 excluded: anti-affinity with web[0] (group g)" in placed[1].why
    with pytest.raises(NoValidHost, match="anti-affinity"):
        place_all(hosts3(), [*reqs, Request("web[3]", 1, GIB, group="g")], {"g": group})


def test_affinity_keeps_the_group_together() -> None:
    group = Group("g", GroupPolicy.AFFINITY)
    placed = place_all(hosts3(), [Request(f"db[{i}]", 1, GIB, group="g") for i in range(3)],
                       {"g": group})  # fmt: skip
    assert {p.host for p in placed} == {"h2"}


def test_soft_anti_affinity_prefers_spreading_but_does_not_fail() -> None:
    # equal hosts, so only the group weigher decides
    hosts = [Host(f"h{i}", 4, 8 * GIB, 100) for i in (1, 2)]
    group = Group("g", GroupPolicy.SOFT_ANTI_AFFINITY)
    placed = place_all(hosts, [Request(f"w[{i}]", 1, 256, group="g") for i in range(3)],
                       {"g": group})  # fmt: skip
    assert [p.host for p in placed][:2] in (["h1", "h2"], ["h2", "h1"])
    assert len(placed) == 3  # a third member shares a host instead of failing


def test_named_host_and_labels() -> None:
    hosts = [
        Host("h1", 4, 8 * GIB, 100, labels={"zone": "a"}),
        Host("h2", 4, 16 * GIB, 100, labels={"zone": "b"}),
    ]
    assert place_one(hosts, Request("x", 1, GIB, labels={"zone": "a"})).host == "h1"
    named = place_one(hosts, Request("y", 1, GIB, host="h1"))
    assert named.host == "h1" and named.why == "h1: named by the server"
    with pytest.raises(NoValidHost, match="h2: zone is 'b', not 'c'"):
        place_one(hosts, Request("z", 1, GIB, labels={"zone": "c"}))


def test_ties_break_by_name_whatever_the_order() -> None:
    a, b = Host("b", 2, 4 * GIB, 10), Host("a", 2, 4 * GIB, 10)
    assert place_one([a, b], Request("x", 1, GIB)).host == "a"
    assert place_one([b, a], Request("x", 1, GIB)).host == "a"


host_st = st.builds(
    Host,
    name=st.sampled_from(["h1", "h2", "h3", "h4"]),
    vcpus=st.integers(1, 16),
    memory_mib=st.integers(512, 64 * GIB),
    disk_gib=st.integers(1, 500),
    up=st.booleans(),
)
req_st = st.builds(
    Request,
    address=st.just(""),
    vcpus=st.integers(1, 8),
    memory_mib=st.integers(64, 16 * GIB),
    disk_gib=st.integers(0, 100),
    group=st.sampled_from([None, "anti"]),
)


@settings(max_examples=200, deadline=None)
@given(
    hosts=st.lists(host_st, min_size=1, max_size=4, unique_by=lambda h: h.name),
    reqs=st.lists(req_st, min_size=1, max_size=12),
)
def test_invariants(hosts: list[Host], reqs: list[Request]) -> None:
    reqs = [Request(f"s[{i}]", r.vcpus, r.memory_mib, r.disk_gib, group=r.group)
            for i, r in enumerate(reqs)]  # fmt: skip
    groups = {"anti": Group("anti", GroupPolicy.ANTI_AFFINITY)}
    try:
        placed = place_all(hosts, reqs, groups)
    except NoValidHost as err:
        assert err.excluded and set(err.excluded) == {h.name for h in hosts}
        return
    assert place_all(hosts, reqs, groups) == placed  # deterministic
    by_name = {h.name: h for h in hosts}
    for name, host in by_name.items():
        mine = [r for r, p in zip(reqs, placed, strict=True) if p.host == name]
        assert host.up or not mine
        assert sum(r.memory_mib for r in mine) <= host.free_memory_mib
        assert sum(r.vcpus for r in mine) <= host.free_vcpus
        assert sum(r.disk_gib for r in mine) <= host.free_disk_gib
    anti_hosts = [p.host for r, p in zip(reqs, placed, strict=True) if r.group == "anti"]
    assert len(anti_hosts) == len(set(anti_hosts))


def test_unknown_disk_is_not_filtered() -> None:
    fresh = Host("new", 2, 4 * GIB, disk_gib=None)
    assert exclusion(fresh, Request("x", 1, GIB, disk_gib=500)) is None
