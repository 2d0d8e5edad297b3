"""The base classes keep the provider contracts: host-changing steps drop the run's listings."""

from __future__ import annotations

from pathlib import Path

import pytest

from iacloud.listings import HostListings
from iacloud.provider import Observed, Provider, ProviderSettings, ResourceType, StackInfo
from iacloud.schema import Inputs


class _Listings(HostListings):
    def __init__(self) -> None:
        super().__init__()
        self.fetches = 0

    def things(self) -> int:
        def fetch() -> int:
            self.fetches += 1
            return self.fetches

        return self._once("things", fetch)


class _Thing(ResourceType):
    type_name = "test_thing"
    Inputs = Inputs

    def create(self, address: str, inputs: Inputs) -> Observed:
        # a listing taken during the change is used once, never kept
        seen = self.provider.listings.things()
        assert self.provider.listings.things() == seen + 1
        return Observed(id=address, inputs={}, attributes={})

    def delete(self, address: str, prior: Observed) -> None:
        raise RuntimeError("boom")


class _Provider(Provider):
    name = "test"
    resource_types = (_Thing,)
    Listings = _Listings
    listings: _Listings


def _provider(tmp_path: Path) -> _Provider:
    stack = StackInfo(name="s", id="0" * 32, directory=tmp_path, data_dir=tmp_path)
    return _Provider(stack, ProviderSettings())


def test_create_drops_listings_kept_before_and_during(tmp_path: Path) -> None:
    provider = _provider(tmp_path)
    thing = provider.resource("test_thing")
    assert provider.listings.things() == 1
    assert provider.listings.things() == 1  # kept
    thing.create("test_thing.a", Inputs())
    assert provider.listings.things() == 4  # neither the one before nor those during are kept


def test_failed_change_drops_listings_too(tmp_path: Path) -> None:
    provider = _provider(tmp_path)
    provider.listings.things()
    with pytest.raises(RuntimeError):
        provider.resource("test_thing").delete("test_thing.a", Observed("x", {}, {}))
    assert provider.listings.things() == 2


def test_wrapped_once_per_class() -> None:
    class _Sub(_Thing):
        pass

    assert _Sub.create is _Thing.create
    assert getattr(_Thing.create, "_changes_host", False)
    assert getattr(_Thing.delete, "_changes_host", False)


def test_check_stack_sees_literals_and_references_never_expression_nodes() -> None:
    from iacloud import expressions as ex
    from iacloud.config import ResourceConfig
    from iacloud.stack_view import Computed, Reference, ResourceView, is_known

    seen: dict[str, ResourceView] = {}

    class _Checking(_Provider):
        @classmethod
        def check_stack(cls, resources):  # type: ignore[no-untyped-def,override]
            seen.update(resources)
            return []

    props = {
        "network": ex.GetResource("lan"),
        "bridge": ex.GetAttr("lan", 2, "bridge", ("x", 0)),
        "name": ex.StrReplace("n-$id", {"$id": ex.GetResource("lan")}),
        "ip": "198.18.0.5",
        "tags": [{"k": ex.GetResource("b")}, 1],
    }
    rc = ResourceConfig("p", "p", None, "test_thing", "test", props, ("lan",))
    assert _Checking.validate_stack({"p": rc}) == []
    view = seen["p"]
    assert (view.address, view.type) == ("p", "test_thing")
    assert view.properties["network"] == Reference("lan")
    assert view.properties["bridge"] == Reference("lan[2]", "bridge", ("x", 0))
    assert view.properties["name"] == Computed((Reference("lan"),))
    assert view.properties["ip"] == "198.18.0.5" and is_known(view.properties["ip"])
    assert view.properties["tags"] == [{"k": Reference("b")}, 1]
    assert not is_known(view.properties["tags"])
