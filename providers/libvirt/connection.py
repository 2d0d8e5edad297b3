"""The libvirt connection of one run, and the translation of libvirt errors.

One connection is opened on first use and shared by every thread of the run: libvirt's
remote driver serialises concurrent calls itself, so only opening and closing need a lock.
Errors are told apart by `libvirtError.get_error_code()`, never by message text.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import libvirt

from iacloud.errors import ProviderError

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
        raise ProviderError(f"{what}: {exc.get_error_message() or exc}") from exc


def is_local(uri: str) -> bool:
    """Whether libvirtd runs on this machine (so its files and bridges are ours to see)."""
    parts = urlsplit(uri)
    return not parts.hostname and "+ssh" not in parts.scheme and "+tcp" not in parts.scheme


class Connection:
    """A lazily opened, reused libvirt connection."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()

    def get(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is not None and self._conn.isAlive():
                return self._conn
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise ProviderError(
                    f"cannot connect to libvirt at {self.uri}: {exc.get_error_message()} "
                    "(is libvirtd running? try scripts/host-setup.sh or `iacloud doctor`)"
                ) from exc
            return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                # a connection that died on its own needs no closing
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None
