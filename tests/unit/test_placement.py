"""Placement at plan time (iacloud.placement): servers get a host (named, recorded, or chosen
by the scheduler), volumes follow their server, and every refusal names file, resource and
field. Hosts are the scheduler's plain numbers here; tests/integration/test_placement_lab.py
plans against real lab hosts."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iacloud.errors import UserError
from iacloud.loading import load_stack
from iacloud.placement import annotate, place
from iacloud.plan import Action, Change, Plan, ReasonCode
from iacloud.provider import Registry
from iacloud.scheduler import Host
from iacloud.state.model import ResourceState, Snapshot

REGISTRY = Registry.discover()
EMPTY = Snapshot(stack="s", stack_id="id", lineage="l", serial=0)


def stack(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text('version = 1\nname = "s"\n' + body)
    return path


def servers(count: int, memory: int = 256, extra: str = "") -> str:
    return f"""
[resources.data]
type = "volume"
count = {count}
size_gib = 1

[resources.web]
type = "server"
count = {count}
image = "iacloud/img.qcow2"
memory_mib = {memory}
volumes = [{{ get_resource = "data[%index%]" }}]
{extra}
"""


GROUP = """
[resources.spread]
type = "server_group"
policy = "{policy}"
"""


def hosts(*names: str, memory: int = 4096, up: bool = True) -> list[Host]:
    return [Host(n, vcpus=4, memory_mib=memory, disk_gib=100, up=up) for n in names]


def planned(path: Path, host_list: list[Host], snapshot: Snapshot = EMPTY) -> tuple:
    config = load_stack(path, REGISTRY)
    reads: list[int] = []

    def read() -> list[Host]:
        reads.append(1)
        return host_list

    result = place(config, snapshot, REGISTRY, [h.name for h in host_list], read)
    props = {a: rc.properties for a, rc in result.config.resources.items()}
    return props, result.why, len(reads)


def test_without_hosts_nothing_is_placed_and_nothing_is_read(tmp_path: Path) -> None:
    config = load_stack(stack(tmp_path, servers(2)), REGISTRY)
    result = place(config, EMPTY, REGISTRY, [], lambda: pytest.fail("read hosts"))
    assert result.config is config and result.why == {}


def test_anti_affinity_spreads_and_volumes_follow(tmp_path: Path) -> None:
    body = GROUP.format(policy="anti-affinity") + servers(
        2, extra='server_group = { get_resource = "spread" }'
    )
    props, why, reads = planned(stack(tmp_path, body), hosts("h1", "h2"))
    assert reads == 1
    assert {props["web[0]"]["host"], props["web[1]"]["host"]} == {"h1", "h2"}
    for i in (0, 1):
        assert props[f"data[{i}]"]["host"] == props[f"web[{i}]"]["host"]
    second = props["web[1]"]["host"]
    assert "excluded: anti-affinity with web[0]" in why["web[1]"] and why["web[1]"].startswith(
        f"{second}: "
    )


def test_affinity_keeps_the_group_together(tmp_path: Path) -> None:
    body = GROUP.format(policy="affinity") + servers(
        3, extra='server_group = { get_resource = "spread" }'
    )
    props, _, _ = planned(stack(tmp_path, body), hosts("h1", "h2", "h3"))
    assert len({props[f"web[{i}]"]["host"] for i in range(3)}) == 1


def test_a_full_host_makes_the_scheduler_choose_another(tmp_path: Path) -> None:
    full = Host("h1", vcpus=4, memory_mib=4096, disk_gib=100, used_memory_mib=3500)
    props, why, _ = planned(stack(tmp_path, servers(1, memory=512)), [full, *hosts("h2")])
    assert props["web[0]"]["host"] == "h2"
    assert "h1 excluded: 0.1 GiB RAM free, needs 0.5 GiB" in why["web[0]"]


def test_a_stack_that_fits_nowhere_fails_naming_what_each_host_lacked(tmp_path: Path) -> None:
    path = stack(tmp_path, servers(1, memory=8192))
    down = Host("h2", vcpus=4, memory_mib=4096, disk_gib=100, up=False, down_reason="timeout")
    with pytest.raises(UserError) as err:
        planned(path, [*hosts("h1"), down])
    text = str(err.value)
    assert str(path) in text and "resources.web[0]" in text and "field 'host'" in text
    assert "h1: 3.5 GiB RAM free, needs 8.0 GiB" in text and "h2: down (timeout)" in text


def test_a_recorded_placement_is_kept_without_reading_hosts(tmp_path: Path) -> None:
    path = stack(tmp_path, servers(1))
    rs = ResourceState(
        address="web[0]",
        type="server",
        provider="libvirt",
        id="x",
        inputs={"host": "h2"},
        attributes={},
    )
    snap = EMPTY.model_copy(update={"serial": 1, "resources": {"web[0]": rs}})
    props, why, reads = planned(path, hosts("h1", "h2"), snap)
    assert props["web[0]"]["host"] == "h2" and why == {} and reads == 0


def test_a_named_host_wins_over_the_recorded_one(tmp_path: Path) -> None:
    props, why, reads = planned(stack(tmp_path, servers(1, extra='host = "h1"')), hosts("h1", "h2"))
    assert props["web[0]"]["host"] == "h1" and reads == 0 and why == {}


@pytest.mark.parametrize(
    ("extra", "site_hosts", "message"),
    [
        ('host = "h9"', ["h1", "h2"], "unknown host 'h9'; the site catalog's hosts: h1, h2"),
        ('host = "h1"', [], "the site catalog has no [hosts] table"),
        ('server_group = "abc"', ["h1"], "must refer to one server_group resource"),
    ],
)
def test_bad_host_references_are_clear_errors(
    tmp_path: Path, extra: str, site_hosts: list[str], message: str
) -> None:
    path = stack(tmp_path, servers(1, extra=extra))
    config = load_stack(path, REGISTRY)
    with pytest.raises(UserError) as err:
        place(config, EMPTY, REGISTRY, site_hosts, lambda: hosts(*site_hosts))
    assert message in str(err.value) and "resources.web[0]" in str(err.value)


def test_a_volume_naming_another_host_than_its_server_is_an_error(tmp_path: Path) -> None:
    body = servers(1, extra='host = "h1"').replace(
        "size_gib = 1\n", 'size_gib = 1\nhost = "h2"\n', 1
    )
    config = load_stack(stack(tmp_path, body), REGISTRY)
    with pytest.raises(UserError) as err:
        place(config, EMPTY, REGISTRY, ["h1", "h2"], lambda: hosts("h1", "h2"))
    assert "names host h2 but is used by a server on h1" in str(err.value)
    assert "resources.data[0]" in str(err.value)
    same = load_stack(stack(tmp_path, body.replace('host = "h2"', 'host = "h1"')), REGISTRY)
    result = place(same, EMPTY, REGISTRY, ["h1", "h2"], lambda: hosts("h1", "h2"))
    assert result.config.resources["data[0]"].properties["host"] == "h1"


def test_the_plan_carries_the_reason() -> None:
    change = Change(address="web[0]", type="server", provider="libvirt", action=Action.CREATE)
    plan = Plan(
        stack="s", stack_file="s.toml", stack_id="i", lineage="l", serial=0, created_at="now",
        changes=[change],
    )  # fmt: skip
    out = annotate(plan, {"web[0]": "h2: most free RAM (3.5 GiB)"})
    assert out.changes[0].why[0].code is ReasonCode.PLACED
    assert out.changes[0].reasons == ["placed on h2: most free RAM (3.5 GiB)"]


@settings(max_examples=40, deadline=None)
@given(
    count=st.integers(1, 5),
    memories=st.lists(st.sampled_from([1024, 2048, 4096]), min_size=2, max_size=4),
    policy=st.sampled_from(["anti-affinity", "affinity", "soft-anti-affinity"]),
)
def test_placement_never_breaks_a_hard_policy_or_capacity(
    tmp_path_factory: pytest.TempPathFactory, count: int, memories: list[int], policy: str
) -> None:
    tmp = tmp_path_factory.mktemp("p")
    body = GROUP.format(policy=policy) + servers(
        count, memory=512, extra='server_group = { get_resource = "spread" }'
    )
    host_list = [Host(f"h{i}", 4, m, 100) for i, m in enumerate(memories)]
    try:
        props, _, _ = planned(stack(tmp, body), host_list)
    except UserError as exc:
        assert "no host can take" in str(exc)
        assert policy == "anti-affinity" or count * 512 > max(memories) - 512
        return
    placed = [props[f"web[{i}]"]["host"] for i in range(count)]
    if policy == "anti-affinity":
        assert len(set(placed)) == count
    if policy == "affinity":
        assert len(set(placed)) == 1
    for h in host_list:
        assert placed.count(h.name) * 512 <= h.memory_mib - 512


def test_a_server_made_before_the_site_had_hosts_stays_where_it_is(tmp_path: Path) -> None:
    path = stack(tmp_path, servers(1))
    rs = ResourceState(
        address="web[0]", type="server", provider="libvirt", id="x", inputs={}, attributes={}
    )
    snap = EMPTY.model_copy(update={"serial": 1, "resources": {"web[0]": rs}})
    props, why, reads = planned(path, hosts("h1", "h2"), snap)
    assert "host" not in props["web[0]"] and why == {} and reads == 0
    assert "host" not in props["data[0]"]  # its volume stays with it
