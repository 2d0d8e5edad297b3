"""The libvirt connection of one run, and the translation of libvirt errors.

One connection is opened on first use and shared by every thread of the run: libvirt's
remote driver serialises concurrent calls itself, so only opening and closing need a lock. A
connection lost mid-run is reopened once (`Connection.get`); a step that lost it cannot prove
what it left (`unproven_on_loss`).
Errors are told apart by `libvirtError.get_error_code()`, never by message text.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import libvirt

from iacloud.errors import CleanupUnproven, ProviderError

F = TypeVar("F", bound=Callable[..., Any])

# libvirt prints every error to stderr unless a handler is set; ours are raised instead
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

NO_DOMAIN = (libvirt.VIR_ERR_NO_DOMAIN,)
NO_VOLUME = (libvirt.VIR_ERR_NO_STORAGE_VOL,)
NO_POOL = (libvirt.VIR_ERR_NO_STORAGE_POOL,)
OPERATION_INVALID = (libvirt.VIR_ERR_OPERATION_INVALID,)


def error_code(exc: libvirt.libvirtError) -> int:
    return exc.get_error_code() or 0


def is_error(exc: BaseException, codes: tuple[int, ...]) -> bool:
    return isinstance(exc, libvirt.libvirtError) and error_code(exc) in codes


@contextmanager
def failing(what: str) -> Iterator[None]:
    """Turn a libvirt error into a ProviderError saying what was being done."""
    try:
        yield
    except libvirt.libvirtError as exc:
        lost = " (the connection to libvirtd was lost)" if is_error(exc, CONNECTION_LOST) else ""
        raise ProviderError(f"{what}: {exc.get_error_message() or exc}{lost}") from exc


def is_local(uri: str) -> bool:
    """Whether libvirtd runs on this machine (so its files and bridges are ours to see)."""
    parts = urlsplit(uri)
    return not parts.hostname and "+ssh" not in parts.scheme and "+tcp" not in parts.scheme


# errors meaning the connection itself went away (libvirtd restarted or died), not the call
CONNECTION_LOST = (
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
)
_CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "an error on the socket",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "end of file: libvirtd closed it (restarted?)",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by the client",
}


def lost_connection(exc: BaseException | None) -> bool:
    """Whether `exc` or an exception it was raised from says the connection was lost."""
    seen = 0
    while exc is not None and seen < 20:
        if is_error(exc, CONNECTION_LOST):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


class Connection:
    """A lazily opened, reused libvirt connection. A connection found dead (libvirtd was
    restarted) is opened again once per run, and the loss is named; a second loss is an error,
    since a daemon that keeps going away cannot be worked with."""

    def __init__(
        self,
        uri: str,
        on_reconnect: Callable[[], None] | None = None,
        opener: Callable[[], libvirt.virConnect] | None = None,
    ) -> None:
        self.uri = uri
        # how to open it: libvirt.open, or a bounded open for another host (raises HostDown)
        self._opener = opener
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()
        self._on_reconnect = on_reconnect
        self.losses = 0  # connections of this run found dead
        self.lost: str | None = None  # why the last one died, when libvirt said
        self._close_reason: str | None = None

    def _closed(self, _conn: libvirt.virConnect, reason: int, _opaque: object) -> None:
        self._close_reason = _CLOSE_REASONS.get(reason, f"reason {reason}")

    def get(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is not None:
                if self._conn.isAlive():
                    return self._conn
                self.losses += 1
                self.lost = self._close_reason or "the connection is no longer alive"
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None
                if self._on_reconnect is not None:
                    self._on_reconnect()  # objects of the dead connection are useless
                if self.losses > 1:
                    raise ProviderError(
                        f"the connection to libvirt at {self.uri} was lost again "
                        f"({self.lost}) after one reconnect in this run; is libvirtd restarting?"
                    )
            try:
                conn = self._opener() if self._opener is not None else libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                after = f" after the connection was lost ({self.lost})" if self.losses else ""
                raise ProviderError(
                    f"cannot connect to libvirt at {self.uri}{after}: {exc.get_error_message()} "
                    "(is libvirtd running? try scripts/host-setup.sh or `iacloud doctor`)"
                ) from exc
            self._close_reason = None
            with contextlib.suppress(libvirt.libvirtError):
                conn.registerCloseCallback(self._closed, None)
            self._conn = conn
            return conn

    def dead(self) -> bool:
        """Whether the connection was opened and has died since."""
        with self._lock:
            conn = self._conn
        return conn is not None and not conn.isAlive()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                # a connection that died on its own needs no closing
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None


@contextmanager
def unproven_on_loss(connection: Connection) -> Iterator[None]:
    """Around a resource type's create, update and delete: when the connection to libvirtd was
    lost during the step (libvirtd restarted), nothing the step did or undid can be proven, so
    its failure becomes `CleanupUnproven` and the engine keeps its pending operation."""
    losses = connection.losses
    try:
        yield
    except CleanupUnproven:
        raise
    except Exception as exc:
        if not (lost_connection(exc) or connection.losses != losses or connection.dead()):
            raise
        raise CleanupUnproven(
            f"{exc}; the connection to libvirtd was lost during this step, so what it "
            "made cannot be proven removed"
        ) from exc
