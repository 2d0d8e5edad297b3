"""State backends: the interface every backend keeps, and `open_backend` choosing one by URL.

Terms: a stack's state has a stable `stack_id` and a `lineage` (both made at first use) and a
`serial` that each run which changes state increments. Old versions stay readable. A run writes
small transactions (one pending operation, one result), never the whole state.
"""

from __future__ import annotations

import abc
import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from iacloud.errors import IacloudError, UserError
from iacloud.state.model import (
    Event,
    LockInfo,
    PendingOperation,
    ResourceState,
    Snapshot,
    StackHistory,
    StateVersion,
)

__all__ = [
    "Event",
    "LockHeld",
    "LockInfo",
    "PendingOperation",
    "ResourceState",
    "Snapshot",
    "StackHistory",
    "StateBackend",
    "StateError",
    "StateVersion",
    "current_user",
    "open_backend",
]


def current_user() -> str:
    """Who a lock names as its holder."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (containers)
        return str(os.getuid())


class StateError(IacloudError):
    """The state store is unreadable, corrupt or of an unknown format."""


class LockHeld(IacloudError):
    """Another run holds the stack's lock."""

    def __init__(self, stack: str, info: LockInfo) -> None:
        self.info = info
        super().__init__(
            f"the state of stack '{stack}' is locked: {info.describe()}; "
            "wait for it, pass --lock-timeout, or remove a stale lock with "
            f"'iacloud state unlock {info.id}'"
        )


class StateBackend(abc.ABC):
    """Where stacks' state lives. All methods are safe to call from one thread at a time;
    the executor writes from its scheduling thread only."""

    @abc.abstractmethod
    def snapshot(self, stack: str, serial: int | None = None) -> Snapshot:
        """The state at `serial` (default: current), including pending operations. A stack never
        applied gives serial 0 with a fresh stack_id and lineage (not yet stored)."""

    @abc.abstractmethod
    def begin_version(self, stack: str, command: str, stack_id: str, lineage: str) -> int:
        """Open a new version (serial + 1), carrying every resource of the previous one."""

    @abc.abstractmethod
    def record_pending(self, stack: str, op: PendingOperation, event: Event) -> None:
        """Durably note that a step is about to touch a host, with its IN_PROGRESS event."""

    @abc.abstractmethod
    def record_result(
        self,
        stack: str,
        serial: int,
        address: str,
        resource: ResourceState | None,
        event: Event,
    ) -> None:
        """In one transaction: store the resource's new state (None: it was deleted) in version
        `serial`, drop its pending operation, append the event."""

    @abc.abstractmethod
    def record_failure(self, stack: str, address: str, event: Event, keep_pending: bool) -> None:
        """A step failed: append the FAILED event; drop its pending operation unless the provider
        could not say whether the object exists (keep_pending)."""

    def record_event(self, stack: str, event: Event) -> None:
        """Append an event that changes no resource (a stack-level one: ROLLBACK_IN_PROGRESS).
        A failure record that keeps every pending operation is exactly that."""
        self.record_failure(stack, event.address, event, keep_pending=True)

    @abc.abstractmethod
    def finish_version(
        self, stack: str, serial: int, status: str, outputs: dict[str, Any] | None
    ) -> None:
        """Close a version with its final status and the stack's outputs."""

    @abc.abstractmethod
    def versions(self, stack: str) -> list[StateVersion]: ...

    @abc.abstractmethod
    def events(self, stack: str, limit: int | None = None) -> list[Event]:
        """Events oldest first (the last `limit` of them)."""

    @abc.abstractmethod
    def stacks(self) -> list[str]: ...

    @abc.abstractmethod
    def acquire_lock(self, stack: str, operation: str, timeout: float) -> LockInfo:
        """Take the stack's lock, waiting up to `timeout` seconds; raise LockHeld otherwise.
        A lock whose holder process is dead on this host is taken over."""

    @abc.abstractmethod
    def release_lock(self, stack: str) -> None: ...

    @abc.abstractmethod
    def lock_info(self, stack: str) -> LockInfo | None: ...

    @abc.abstractmethod
    def force_unlock(self, stack: str, lock_id: str | None = None) -> LockInfo | None:
        """Remove the stack's lock. With `lock_id`, only that lock: a lock some later run took
        in the meantime raises StateError instead of being removed under it."""

    # Whole-history copies for 'iacloud state push/pull'. The step-wise methods above cannot
    # express them: a copy keeps every version's own times, commands and statuses, and each
    # resource's interval of serials, verbatim.

    @abc.abstractmethod
    def export_history(self, stack: str) -> StackHistory | None:
        """The stack's whole stored history, or None if the stack was never stored."""

    @abc.abstractmethod
    def import_history(self, history: StackHistory) -> None:
        """Replace the stack's stored history with `history`, in one transaction."""

    @abc.abstractmethod
    def ensure_store(self) -> None:
        """Make the store now if it does not exist yet (reads never make it): `iacloud serve`
        keeps tables of its own beside the state's, in the same database."""

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        """Release connections."""

    @contextmanager
    def locked(self, stack: str, operation: str, timeout: float = 0.0) -> Iterator[LockInfo]:
        info = self.acquire_lock(stack, operation, timeout)
        try:
            yield info
        finally:
            self.release_lock(stack)


def open_backend(url: str | None, stack_dir: Path, read_only: bool = False) -> StateBackend:
    """Open the backend `url` names: `sqlite:///abs/path.db`, a plain path, None for
    `.iacloud/state.db` beside the stack file, or `postgresql://...` (state/postgres.py).
    A read-only backend refuses every write and never takes the lock (drift runs while an
    apply holds it)."""
    from iacloud.state.sqlite import SQLiteBackend

    if url is None:
        return SQLiteBackend(stack_dir / ".iacloud" / "state.db", read_only)
    if url.startswith("sqlite:///"):
        return SQLiteBackend(Path(url[len("sqlite://") :]), read_only)
    if url.startswith(("postgres://", "postgresql://")):
        from iacloud.state.postgres import PostgresBackend

        return PostgresBackend(url, read_only)
    if "://" in url:
        from iacloud.state.pg_url import mask_url

        raise UserError(
            f"state URL '{mask_url(url)}': unknown scheme (expected sqlite:///PATH, a path, or "
            "postgresql://...)"
        )
    return SQLiteBackend(Path(url), read_only)
