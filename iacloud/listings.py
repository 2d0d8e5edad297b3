"""A provider's per-run memory of what it listed from the host, shared by the reads of its types.

A provider instance lives for one run. Its reads and orphan searches (`read`, `list_tagged`)
may ask for the same host listing several times (every domain, every link); `HostListings`
keeps each one after the first fetch. Every create, update, delete and import runs inside
`changing()` (the base class `iacloud.provider.ResourceType` wraps them): the listings are
dropped when it starts and when it ends, and a listing taken while a change runs, or that a
change overlapped, is used once and not kept. So a change, or a read after it, never sees a
listing older than the change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


class HostListings:
    """Subclasses add one method per listing, each calling `_once(key, fetch)`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[Hashable, Any] = {}
        self._generation = 0  # moves at the start and the end of every change
        self._changes = 0  # changes under way

    def _once(self, key: Hashable, fetch: Callable[[], T]) -> T:
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
