"""Import of servers, volumes and snapshots on site catalog hosts (issue #16), without
libvirt: which host import asks, what it records, and its errors (`host_import`); and the
placement of volume snapshots and the volumes made from them on their volume's host."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from iacloud.errors import ProviderError, UserError
from iacloud.loading import load_stack
from iacloud.placement import place
from iacloud.provider import HostDown, Observed, Registry
from iacloud.providers.libvirt.host_import import import_on_hosts
from iacloud.scheduler import Host
from iacloud.state.model import ResourceState, Snapshot

REGISTRY = Registry.discover()
EMPTY = Snapshot(stack="s", stack_id="id", lineage="l", serial=0)


class FakeHosts:
    """What import_on_hosts uses of the provider: the catalog, `on`, `per_host`."""

    def __init__(self, has: Mapping[str | None, bool | HostDown], hosts: list[str]) -> None:
        self.has = has
        self.stack = SimpleNamespace(hosts=dict.fromkeys(hosts))
        self.current: str | None = None
        self.asked: list[str | None] = []

    @contextmanager
    def on(self, name: str | None) -> Iterator[None]:
        before, self.current = self.current, name
        try:
            yield
        finally:
            self.current = before

    def per_host(self, jobs: Mapping[str | None, Callable[[], bool]]) -> dict[str | None, Any]:
        out: dict[str | None, Any] = {}
        for host, job in jobs.items():
            self.asked.append(host)
            down = self.has.get(host)
            if isinstance(down, HostDown):
                out[host] = down
                continue
            with self.on(host):
                out[host] = job()
        return out

    def present(self, id: str) -> bool:
        return self.has.get(self.current) is True

    def import_here(self) -> Observed:
        assert self.has.get(self.current) is True, f"imported from {self.current}"
        return Observed("x", {"size_gib": 1}, {"id": "x"})


def run(fake: FakeHosts, given: Mapping[str, Any] | None = None) -> Observed:
    return import_on_hosts(
        fake,  # type: ignore[arg-type]
        "volume", "iacloud/v.qcow2", given or {}, fake.present, fake.import_here,
    )  # fmt: skip


def test_found_on_a_catalog_host_records_that_host() -> None:
    fake = FakeHosts({"h2": True}, ["h1", "h2"])
    obs = run(fake)
    assert obs.inputs["host"] == "h2" and fake.asked == [None, "h1", "h2"]


def test_found_on_the_default_host_records_none() -> None:
    obs = run(FakeHosts({None: True}, ["h1"]))
    assert obs.inputs["host"] is None


def test_a_host_the_stack_names_is_the_only_one_asked() -> None:
    fake = FakeHosts({"h1": True, "h2": True}, ["h1", "h2"])
    obs = run(fake, {"host": "h1"})
    assert obs.inputs["host"] == "h1" and fake.asked == []


def test_not_on_the_host_the_stack_names_is_an_error_naming_it() -> None:
    fake = FakeHosts({"h1": True}, ["h1", "h2"])
    with pytest.raises(ProviderError, match=r"no volume iacloud/v.qcow2 on host h2 \(the stack"):
        run(fake, {"host": "h2"})
    assert fake.asked == []


def test_without_catalog_hosts_it_imports_from_the_default_host() -> None:
    fake = FakeHosts({None: True}, [])
    obs = run(fake)
    assert "host" not in obs.inputs and fake.asked == []


def test_found_nowhere_names_the_hosts_searched_and_those_down() -> None:
    fake = FakeHosts({"h2": HostDown("connection refused")}, ["h1", "h2"])
    with pytest.raises(ProviderError) as err:
        run(fake)
    text = str(err.value)
    assert "no volume iacloud/v.qcow2 on any host (searched the default host, h1)" in text
    assert "not reachable, so not searched: h2 (connection refused)" in text


def test_found_on_two_hosts_asks_to_name_one() -> None:
    with pytest.raises(ProviderError, match=r"on several hosts \(h1, h2\).*host = "):
        run(FakeHosts({"h1": True, "h2": True}, ["h1", "h2"]))


def test_the_engine_passes_what_the_stack_writes(tmp_path: Path) -> None:
    """`import_given` with a named host goes to that host (the libvirt base class)."""
    from iacloud.providers.libvirt.volume import Volume

    fake = FakeHosts({"h2": True}, ["h1", "h2"])
    vol = Volume.__new__(Volume)
    vol.provider = fake  # type: ignore[assignment]
    vol.present_here = fake.present  # type: ignore[method-assign]
    vol.import_ = lambda address, id: fake.import_here()  # type: ignore[method-assign]
    assert vol.import_given("d", "iacloud/v.qcow2", {"host": "h2"}).inputs["host"] == "h2"
    assert fake.asked == []


# ---------------------------------------------------------------- placement of snapshots
CHAIN = """
[resources.data]
type = "volume"
size_gib = 1
{data_host}

[resources.snap]
type = "volume_snapshot"
volume = {{ get_resource = "data" }}
{snap_host}

[resources.copy]
type = "volume"
size_gib = 1
snapshot = {{ get_resource = "snap" }}
{copy_host}
"""


def placed(tmp_path: Path, snapshot: Snapshot = EMPTY, **hosts: str) -> dict[str, Any]:
    body = CHAIN.format(
        **{
            f"{k}_host": f'host = "{hosts[k]}"' if k in hosts else ""
            for k in ("data", "snap", "copy")
        }
    )
    path = tmp_path / "s.toml"
    path.write_text('version = 1\nname = "s"\n' + body)
    config = load_stack(path, REGISTRY)
    names = ["h1", "h2"]
    result = place(
        config, snapshot, REGISTRY, names, lambda: [Host(n, 4, 4096, 100) for n in names]
    )
    return {a: rc.properties.get("host") for a, rc in result.config.resources.items()}


def test_a_snapshot_and_a_volume_made_from_it_follow_the_volume(tmp_path: Path) -> None:
    assert placed(tmp_path, data="h2") == {"data": "h2", "snap": "h2", "copy": "h2"}


def test_a_volume_in_state_on_a_host_takes_its_snapshot_there(tmp_path: Path) -> None:
    rs = ResourceState(
        address="data", type="volume", provider="libvirt", id="p/v", inputs={"host": "h1"},
        attributes={},
    )  # fmt: skip
    snap = EMPTY.model_copy(update={"serial": 1, "resources": {"data": rs}})
    assert placed(tmp_path, snap) == {"data": None, "snap": "h1", "copy": "h1"}


def test_without_hosts_named_all_stay_on_the_default_host(tmp_path: Path) -> None:
    assert placed(tmp_path) == {"data": None, "snap": None, "copy": None}


@pytest.mark.parametrize(
    ("hosts", "where"),
    [
        ({"data": "h2", "copy": "h1"}, "resources.copy"),
        ({"data": "h1", "snap": "h2"}, "resources.snap"),
    ],
)
def test_a_snapshot_or_its_volume_on_another_host_is_an_error(
    tmp_path: Path, hosts: dict[str, str], where: str
) -> None:
    with pytest.raises(UserError) as err:
        placed(tmp_path, **hosts)
    text = str(err.value)
    assert where in text and "field 'host'" in text and "are on one host" in text
