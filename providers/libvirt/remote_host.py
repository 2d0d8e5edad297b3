"""One catalog host through its libvirt URI: opened with a bounded connect, read for capacity
and use (`host_facts`), checked for `iacloud doctor`, and closed again.

libvirt.open has no timeout of its own, and an SSH transport to a host that drops packets
waits for the kernel's TCP timeout (minutes). So a remote URI's port is first probed with a
plain TCP connect bounded by `timeout` (which also tells "connection refused" from "timeout"
clearly), and the open itself runs in a worker thread that is given up on after `timeout`
(a late connection is closed by the worker). A failed open is classified by libvirt's error
code and domain, never by message text; an SSH transport failure is told apart from a
libvirtd that is not running by asking the host's shell, through its SSH target, whether a
libvirt socket exists.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit

import libvirt

from iacloud import ssh_run
from iacloud.provider import Check, HostDown, HostReading
from iacloud.site_hosts import CatalogHost
from iacloud.ssh_run import SshFailed

from .connection import NO_POOL, is_error
from .host_facts import read_host_facts
from .tags import NS

DEFAULT_PORTS = {
    "qemu+ssh": 22,
    "qemu+libssh2": 22,
    "qemu+libssh": 22,
    "qemu+tls": 16514,
    "qemu+tcp": 16509,
}
_AUTH = (
    libvirt.VIR_ERR_AUTH_FAILED,
    libvirt.VIR_ERR_AUTH_CANCELLED,
    libvirt.VIR_ERR_AUTH_UNAVAILABLE,
)
_NO_METADATA = (libvirt.VIR_ERR_NO_DOMAIN_METADATA,)
# the sockets a qemu:///system client reaches: libvirtd's, or virtqemud's (modular daemons)
LIBVIRT_SOCKETS = ("/run/libvirt/libvirt-sock", "/run/libvirt/virtqemud-sock")


def _probe_port(uri: str, timeout: float) -> None:
    parts = urlsplit(uri)
    port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    if not parts.hostname or port is None:
        return
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except ConnectionRefusedError:
        raise HostDown(f"connection refused ({parts.hostname} port {port})") from None
    except TimeoutError:
        raise HostDown(f"timeout: no answer from {parts.hostname} port {port} "
                       f"within {timeout:g} s") from None  # fmt: skip
    except OSError as exc:
        raise HostDown(
            f"unreachable ({parts.hostname} port {port}): {exc.strerror or exc}"
        ) from None


def _ssh_domain(exc: libvirt.libvirtError) -> bool:
    return exc.get_error_domain() in (libvirt.VIR_FROM_SSH, getattr(libvirt, "VIR_FROM_LIBSSH", -1))


def _no_libvirtd(host: CatalogHost, timeout: float) -> bool:
    """Whether the host's SSH answers and shows no libvirt daemon socket (monolithic or
    modular); False when SSH itself fails or the answer is unclear."""
    assert host.ssh is not None
    test = 'for s in "$@"; do [ -S "$s" ] && exit 0; done; exit 3'
    try:
        done = ssh_run.run(host.ssh, "sh", "-c", test, "sh", *LIBVIRT_SOCKETS,
                           timeout=timeout + 1, connect_timeout=timeout)  # fmt: skip
    except SshFailed:
        return False
    return done.returncode == 3


def describe_open_error(exc: libvirt.libvirtError) -> str:
    """A reason for a failed open: the kind from libvirt's error code and domain, then
    libvirt's own message for the detail."""
    detail = exc.get_error_message() or str(exc)
    if is_error(exc, _AUTH):
        return f"auth failed: {detail}"
    if _ssh_domain(exc):
        return f"ssh transport failed (auth or host key): {detail}"
    if is_error(exc, (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_NO_CONNECT)):
        return f"libvirtd not reachable: {detail}"
    return f"cannot connect: {detail}"


def open_bounded(host: CatalogHost, timeout: float) -> libvirt.virConnect:
    """A connection to the host's libvirtd within about `timeout` seconds, or HostDown."""
    _probe_port(host.uri, timeout)
    result: dict[str, object] = {}
    done = threading.Event()
    gave_up = threading.Event()
    lock = threading.Lock()

    def work() -> None:
        try:
            conn = libvirt.open(host.uri)
        except libvirt.libvirtError as exc:
            result["error"] = exc
        else:
            with lock:
                if gave_up.is_set():  # nobody waits any more: do not leak the connection
                    with contextlib.suppress(libvirt.libvirtError):
                        conn.close()
                    return
                result["conn"] = conn
        finally:
            done.set()

    threading.Thread(target=work, name="iacloud-host-open", daemon=True).start()
    if not done.wait(timeout):
        with lock:
            gave_up.set()
            conn = result.get("conn")
        if conn is None:
            raise HostDown(f"timeout: libvirtd did not answer within {timeout:g} s")
    error = result.get("error")
    if isinstance(error, libvirt.libvirtError):
        why = describe_open_error(error)
        if _ssh_domain(error) and host.ssh is not None and _no_libvirtd(host, timeout):
            # libssh2 reports a daemon that is not running behind a working sshd as a
            # transport failure: the host's own shell tells the two apart
            why = f"libvirtd is not running (its SSH answers, no libvirt socket): {why}"
        raise HostDown(why)
    conn = result["conn"]
    assert isinstance(conn, libvirt.virConnect)
    if not host.is_local:
        # calls on a connection whose host went silent fail after ~interval*(count+1) s
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(max(1, int(timeout / 2)), 1)
    return conn


def _iacloud_domains(conn: libvirt.virConnect) -> int:
    count = 0
    for dom in conn.listAllDomains(0):
        try:
            dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS, 0)
        except libvirt.libvirtError as exc:
            if is_error(exc, (*_NO_METADATA, libvirt.VIR_ERR_NO_DOMAIN)):
                continue
            raise
        count += 1
    return count


def read_host(host: CatalogHost, timeout: float) -> HostReading:
    conn = open_bounded(host, timeout)
    try:
        facts = read_host_facts(conn, host.pool)
        ours = _iacloud_domains(conn)
    except libvirt.libvirtError as exc:
        raise HostDown(f"reading the host failed: {exc.get_error_message() or exc}") from None
    except Exception as exc:  # ProviderError from host_facts: the host answered, then failed
        raise HostDown(f"reading the host failed: {exc}") from None
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()
    return HostReading(
        hostname=facts.hostname,
        vcpus=facts.vcpus,
        memory_mib=facts.memory_mib,
        disk_gib=facts.disk_gib,
        used_vcpus=facts.used_vcpus,
        used_memory_mib=facts.used_memory_mib,
        used_disk_gib=facts.used_disk_gib,
        domains=facts.domains,
        iacloud_domains=ours,
    )


def _offers(conn: libvirt.virConnect, virt_type: str) -> bool:
    try:
        conn.getDomainCapabilities(None, "x86_64", None, virt_type, 0)
    except libvirt.libvirtError:
        return False
    return True


def host_checks(host: CatalogHost, timeout: float) -> list[Check]:
    """libvirtd reachable through the URI, KVM or QEMU emulation offered, the pool."""
    try:
        conn = open_bounded(host, timeout)
    except HostDown as exc:
        return [Check("libvirtd", "fail", f"{host.uri}: {exc}", _connect_fix(host, str(exc)))]
    try:
        version = conn.getLibVersion()
        out = [
            Check(
                "libvirtd",
                "ok",
                f"connected (libvirt {version // 1000000}.{version // 1000 % 1000}, "
                f"host {conn.getHostname()})",
            )
        ]
        if _offers(conn, "kvm"):
            out.append(Check("virtualization", "ok", "KVM offered by libvirt"))
        elif _offers(conn, "qemu"):
            out.append(Check("virtualization", "ok", "QEMU emulation (no KVM): guests are slower"))
        else:
            out.append(
                Check(
                    "virtualization",
                    "fail",
                    "libvirt offers neither KVM nor QEMU emulation for x86_64",
                    "install qemu-system-x86 on the host and restart libvirtd",
                )
            )
        out.append(_pool_check(conn, host))
        return out
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def _pool_check(conn: libvirt.virConnect, host: CatalogHost) -> Check:
    try:
        pool = conn.storagePoolLookupByName(host.pool)
        active = pool.isActive()
    except libvirt.libvirtError as exc:
        if not is_error(exc, NO_POOL):
            return Check("pool", "fail", f"pool {host.pool}: {exc.get_error_message()}")
        return Check(
            "pool",
            "warn",
            f"pool {host.pool} does not exist",
            f"virsh -c '{host.uri}' pool-define-as {host.pool} dir --target "
            f"/var/lib/iacloud/pool && virsh -c '{host.uri}' pool-build {host.pool} && "
            f"virsh -c '{host.uri}' pool-start {host.pool} && "
            f"virsh -c '{host.uri}' pool-autostart {host.pool}",
        )
    if not active:
        return Check(
            "pool", "fail", f"pool {host.pool} is not active",
            f"virsh -c '{host.uri}' pool-start {host.pool}",
        )  # fmt: skip
    return Check("pool", "ok", f"pool {host.pool} is active")


def _connect_fix(host: CatalogHost, reason: str) -> str:
    if reason.startswith("connection refused"):
        return "start sshd (or libvirtd's TLS/TCP listener) on the host, or fix the URI's port"
    if reason.startswith("timeout") or reason.startswith("unreachable"):
        return "check the host is up and routable from here (firewall, address in the URI)"
    if reason.startswith(("auth", "ssh transport")):
        return ("check the key (keyfile=), known_hosts= and that the user may use libvirt "
                "(root or the libvirt group)")  # fmt: skip
    return "start libvirtd on the host (systemctl start libvirtd) and check the URI"
