"""`LibvirtProvider.host(name)`: the default context without `[hosts]`, one context per catalog
host, a catalog host with the provider's own URI sharing the default one; nothing is opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from iacloud.errors import ProviderError
from iacloud.provider import ObjectRef, Observed, StackInfo
from iacloud.providers.libvirt import LibvirtProvider, LibvirtSettings
from iacloud.providers.libvirt.volume import Volume
from iacloud.site_hosts import CatalogHost

REMOTE = "qemu+tcp://198.19.250.12/system"


def provider(tmp_path: Path, hosts: dict[str, CatalogHost]) -> LibvirtProvider:
    stack = StackInfo("s", "0123456789abcdef", tmp_path, tmp_path / "data", hosts)
    return LibvirtProvider(stack, LibvirtSettings())


def test_without_hosts_everything_is_the_default_host(tmp_path: Path) -> None:
    p = provider(tmp_path, {})
    ctx = p.host(None)
    assert ctx is p.default_host and ctx.name is None
    assert (ctx.uri, ctx.pool) == ("qemu:///system", "iacloud")
    assert ctx.connection is p.connection and ctx.listings is p.listings and ctx.pools is p.pools
    assert p.host_contexts() == [ctx] and not p.many_hosts
    with pytest.raises(ProviderError, match=r"no \[hosts\] table"):
        p.host("h1")


def test_catalog_hosts_get_their_own_context(tmp_path: Path) -> None:
    p = provider(
        tmp_path,
        {
            "local": CatalogHost(uri="qemu:///system"),
            "h2": CatalogHost(uri=REMOTE, pool="p2"),
        },
    )
    assert p.host("local") is p.default_host  # same libvirtd and pool: shared
    h2 = p.host("h2")
    assert (h2.name, h2.uri, h2.pool, h2.is_local) == ("h2", REMOTE, "p2", False)
    assert h2.entry is not None and h2.entry.uri == REMOTE
    assert h2.connection is not p.connection and h2.listings is not p.listings
    assert h2.pools.default_path == "/var/lib/iacloud/pool"
    assert p.host_contexts() == [p.default_host, h2] and p.many_hosts
    with pytest.raises(ProviderError, match=r"'h9' is not in the site catalog.*h2, local"):
        p.host("h9")


def test_a_change_drops_every_hosts_listings(tmp_path: Path) -> None:
    p = provider(tmp_path, {"h2": CatalogHost(uri=REMOTE)})
    h2 = p.host("h2")
    h2.listings._once("k", lambda: 1)
    assert h2.listings._kept
    with p.changing("delete"):
        assert not h2.listings._kept


DOWN = "qemu+tcp://127.0.0.1:1/system"  # nothing listens on port 1: refused at once


def test_objects_on_a_host_that_refuses_are_unknown(tmp_path: Path) -> None:
    p = provider(tmp_path, {"h9": CatalogHost(uri=DOWN)})
    volumes = p.resource("volume")
    ref = ObjectRef("d", "iacloud/iac-01234567-d.qcow2", {"size_gib": 1, "host": "h9"})
    found = volumes.read([ref])
    assert found["d"].unknown is not None and found["d"].unknown.startswith(
        "h9: connection refused"
    )
    assert found["d"].id == ref.id and found["d"].inputs == dict(ref.inputs)
    # a host the catalog does not have: unknown too, saying so
    gone = ObjectRef("e", "iacloud/iac-01234567-e.qcow2", {"size_gib": 1, "host": "hx"})
    assert "'hx' is not in the site catalog" in (volumes.read([gone])["e"].unknown or "")


def test_steps_run_on_their_objects_host(tmp_path: Path) -> None:
    p = provider(tmp_path, {"h9": CatalogHost(uri=DOWN)})
    seen: list[str | None] = []

    class Probe(Volume):
        def delete(self, address: str, prior: Observed) -> None:
            seen.append(self.host.name)

    probe = Probe(p)
    probe.delete("d", Observed("iacloud/x.qcow2", {"host": "h9"}, {}))
    probe.delete("d", Observed("iacloud/x.qcow2", {}, {}))
    assert seen == ["h9", None]
    assert p.current_host() is p.default_host  # the scope ends with the step
