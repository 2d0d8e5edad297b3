"""What one run's reads list of the host, each at most once: the link table and the namespaces.

`iacloud drift` reads networks and routers in bulk and then asks every type for its tagged
objects: without this, one run dumped the links three times (network read, network and router
orphan search) and listed the namespaces as often. A provider instance (one per run, shared by
its resource types) keeps one `Listings`:

- `links()`: one RTM_GETLINK dump of the root namespace (`LinkTable.dump`);
- `namespaces()`: the named network namespaces (/run/netns).

Only `read` and `list_tagged` use it. Every create, update, delete and import runs inside
`changing()` (the `changes_host` decorator): the listings are dropped when it starts and when it
ends, and a listing taken while a change runs, or that a change overlapped, is used once and
not kept. So a change, or a read after it, never sees a listing older than the change.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from iacloud.providers.netlink import netns
from iacloud.providers.netlink.links import LinkTable

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class Listings:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[str, Any] = {}
        self._generation = 0  # moves at the start and the end of every change
        self._changes = 0  # changes under way

    def links(self) -> LinkTable:
        return self._once("links", LinkTable.dump)

    def namespaces(self) -> frozenset[str]:
        return self._once("namespaces", lambda: frozenset(netns.list_namespaces()))

    def _once(self, key: str, fetch: Callable[[], T]) -> T:
        with self._lock:
            if key in self._kept:
                return self._kept[key]
            generation = self._generation
        value = fetch()
        with self._lock:
            if self._changes == 0 and generation == self._generation:
                return self._kept.setdefault(key, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()

    @contextmanager
    def changing(self) -> Iterator[None]:
        with self._lock:
            self._changes += 1
            self._generation += 1
            self._kept.clear()
        try:
            yield
        finally:
            with self._lock:
                self._changes -= 1
                self._generation += 1
                self._kept.clear()


def changes_host(method: F) -> F:
    """For a resource type's create, update, delete and import: run inside `changing()`."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self.provider.listings.changing():
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
