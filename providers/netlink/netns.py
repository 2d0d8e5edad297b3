"""Named network namespaces (/run/netns/NAME, as iproute2 makes them) through pyroute2.

Commands that must run inside a namespace (dnsmasq) are started as `nsenter --net=PATH -- ...`:
an argument list, and no Python code between fork and exec, which would not be safe in the
engine's thread pool (subprocess's preexec_fn is documented as unsafe with threads).
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterator, Mapping

from pyroute2 import NetNS, netns

from iacloud.errors import ProviderError

RUN_DIR = "/run/netns"


def path(name: str) -> str:
    return os.path.join(RUN_DIR, name)


def list_namespaces() -> set[str]:
    return set(netns.listnetns())


def exists(name: str) -> bool:
    return os.path.exists(path(name))


def create(name: str) -> None:
    """Create the namespace unless it exists, and bring its loopback up."""
    if not exists(name):
        try:
            netns.create(name)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise ProviderError(f"cannot create network namespace {name}: {exc}") from exc
    with NetNS(name, flags=0) as ns:
        ns.link("set", index=1, state="up")


def remove(name: str) -> None:
    """Remove the namespace if it exists. Links inside it go with it (a veth takes its peer)."""
    if exists(name):
        with contextlib.suppress(FileNotFoundError):  # removed meanwhile
            netns.remove(name)


@contextlib.contextmanager
def socket(name: str) -> Iterator[NetNS]:
    """A netlink socket inside the namespace (it stays bound there whichever thread uses it)."""
    if not exists(name):
        raise ProviderError(f"network namespace {name} does not exist")
    with NetNS(name, flags=0) as ns:
        yield ns


def write_sysctls(name: str, values: Mapping[str, str]) -> None:
    """Write /proc/sys entries (e.g. "net/ipv4/ip_forward") inside the namespace.

    /proc/sys/net shows the namespace of the calling thread, so the writes run in a thread of
    their own that enters the namespace and then ends: the caller's thread never moves. Missing
    entries (a kernel without IPv6) are skipped.
    """
    errors: list[BaseException] = []

    def run() -> None:
        try:
            netns.setns(name, flags=0)
            for key, value in values.items():
                try:
                    with open(os.path.join("/proc/sys", key), "w") as f:
                        f.write(value)
                except FileNotFoundError:
                    pass
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run, name=f"sysctl-{name}")
    t.start()
    t.join()
    if errors:
        raise ProviderError(f"cannot set sysctls in namespace {name}: {errors[0]}")


def exec_args(name: str, argv: list[str]) -> list[str]:
    """The argument list running argv inside the namespace."""
    return ["nsenter", f"--net={path(name)}", "--", *argv]


def inode(name: str) -> int | None:
    try:
        return os.stat(path(name)).st_ino
    except OSError:
        return None


def process_in(pid: int, name: str) -> bool:
    """Whether the process runs in the namespace (compares the namespace inodes)."""
    ino = inode(name)
    try:
        return ino is not None and os.stat(f"/proc/{pid}/ns/net").st_ino == ino
    except OSError:
        return False
