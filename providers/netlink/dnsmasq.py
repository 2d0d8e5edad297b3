"""dnsmasq as one network's DHCP server: its argument list, start, stop and liveness.

Choices, and why:
- The whole configuration is on the command line, reservations included (`--dhcp-host`), with
  `--conf-file=/dev/null` so no host-wide /etc/dnsmasq.conf leaks in. dnsmasq drops root right
  after start-up and re-reads files on SIGHUP as that user, who cannot traverse a 0700 data
  dir; files given only on the command line are never re-read. And /proc/PID/cmdline then
  shows exactly what the running server does, so a read observes the real configuration.
- Any change (range, DNS, MTU, a port's reservation, dns_domain) therefore restarts dnsmasq
  instead of a SIGHUP: about 15 ms here; the lease file survives, so clients keep their
  addresses. Server names (a network's `dns_domain`) are served by a second dnsmasq without
  DHCP (`dns`), which re-reads its names by itself.
- dnsmasq daemonizes itself (no --keep-in-foreground): the parent exits once the server is
  set up, reporting configuration errors on stderr with a non-zero status, and the daemon
  outlives the iacloud process. It writes its pid file before dropping root.
- A pid is trusted only while /proc/PID/cmdline is dnsmasq with this network's --pid-file, so
  a recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iacloud.errors import ProviderError
from iacloud.providers.netlink import netns
from iacloud.providers.netlink.records import DnsFiles, NetworkFiles

START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class DhcpConfig:
    """What one network's dnsmasq serves."""

    interface: str  # the namespace end of the DHCP veth
    range_start: str
    range_end: str
    netmask: str
    gateway: str
    dns: tuple[str, ...]
    mtu: int | None
    hosts: tuple[tuple[str, str], ...]  # (mac, ip) reservations, sorted
    lease_time: int
    user: str
    domain: str | None = None  # handed out as the domain name (a network's dns_domain)
    own_dns: str | None = None  # handed out as the DNS server when `dns` is empty (`dns`)


def binary() -> str:
    path = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")
    if not path:
        raise ProviderError("dnsmasq is not installed (Debian/Ubuntu: apt install dnsmasq-base)")
    return path


def build_args(cfg: DhcpConfig, files: NetworkFiles | DnsFiles, program: str) -> list[str]:
    args = [
        program,
        "--conf-file=/dev/null",
        "--port=0",  # no DNS server: DHCP only
        "--no-resolv",
        "--no-hosts",
        f"--interface={cfg.interface}",
        "--except-interface=lo",
        "--bind-dynamic",
        "--dhcp-authoritative",
        f"--dhcp-range={cfg.range_start},{cfg.range_end},{cfg.netmask},{cfg.lease_time}",
        f"--dhcp-option=option:router,{cfg.gateway}",
    ]
    if cfg.dns:
        args.append("--dhcp-option=option:dns-server," + ",".join(cfg.dns))
    if cfg.own_dns:
        # by number, so a read does not take it for the `dns` input
        args.append(f"--dhcp-option=6,{cfg.own_dns}")
    if cfg.domain:
        args.append(f"--dhcp-option=option:domain-name,{cfg.domain}")
    if cfg.mtu:
        args.append(f"--dhcp-option=option:mtu,{cfg.mtu}")
    args += [f"--dhcp-host={mac},{ip}" for mac, ip in cfg.hosts]
    args += [
        f"--dhcp-leasefile={files.leases}",
        f"--pid-file={files.pid}",
        f"--log-facility={files.log}",
        "--quiet-dhcp",
        f"--user={cfg.user}",
    ]
    return args


def parse_args(argv: list[str]) -> dict[str, Any]:
    """What a running dnsmasq serves, read back from its command line (our own format)."""
    out: dict[str, Any] = {
        "dns": [],
        "hosts": [],
        "mtu": None,
        "range": None,
        "gateway": None,
        "domain": None,
    }
    for arg in argv[1:]:
        key, _, value = arg.partition("=")
        if key == "--dhcp-range":
            parts = value.split(",")
            if len(parts) >= 2:
                out["range"] = (parts[0], parts[1])
        elif key == "--dhcp-option":
            option, _, rest = value.partition(",")
            if option == "option:router":
                out["gateway"] = rest
            elif option == "option:dns-server":
                out["dns"] = [x for x in rest.split(",") if x]
            elif option == "option:mtu" and rest.isdigit():
                out["mtu"] = int(rest)
        elif key == "--domain":  # the DNS server's (`dns`)
            out["domain"] = value
        elif key == "--dhcp-host":
            mac, _, ip = value.partition(",")
            out["hosts"].append((mac, ip))
    return out


def cmdline(pid: int) -> list[str] | None:
    """The process's arguments; None when it is gone or a zombie (whose cmdline is empty)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:
        return None
    return raw.rstrip(b"\0").decode(errors="replace").split("\0")


def _ours(argv: list[str] | None, files: NetworkFiles | DnsFiles) -> bool:
    return bool(
        argv and os.path.basename(argv[0]) == "dnsmasq" and f"--pid-file={files.pid}" in argv
    )


def running(files: NetworkFiles | DnsFiles) -> tuple[int, list[str]] | None:
    """(pid, argv) of this network's dnsmasq if it runs."""
    try:
        pid = int(files.pid.read_text().strip())
    except (OSError, ValueError):
        return None
    argv = cmdline(pid)
    return (pid, argv) if argv is not None and _ours(argv, files) else None


def _strays(files: NetworkFiles | DnsFiles) -> list[int]:
    """dnsmasq processes of this network that its pid file does not name (a lost or
    overwritten pid file): found by their --pid-file argument."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _ours(cmdline(int(entry)), files):
            found.append(int(entry))
    return found


def start(namespace: str, args: list[str], files: NetworkFiles | DnsFiles) -> int:
    files.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    files.pid.unlink(missing_ok=True)
    try:
        result = subprocess.run(
            netns.exec_args(namespace, args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=START_TIMEOUT,
            start_new_session=True,  # not in our process group: Ctrl-C at the CLI spares it
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProviderError(f"cannot start dnsmasq in {namespace}: {exc}") from exc
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip() or f"exit {result.returncode}"
        raise ProviderError(f"dnsmasq in {namespace} failed to start: {message}")
    found = running(files)
    if found is None:
        raise ProviderError(f"dnsmasq in {namespace} exited right after starting (see {files.log})")
    return found[0]


def _exited(pid: int) -> bool:
    """Gone, or a zombie: its sockets are closed. (Its cmdline is empty earlier, from the
    moment an exiting process drops its memory, while it may still hold its sockets: a new
    dnsmasq started then cannot bind the DNS port.)"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] in (["Z"], ["X"])


def _wait_gone(pid: int, files: NetworkFiles | DnsFiles, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        argv = cmdline(pid)
        if (argv is None and _exited(pid)) or (argv is not None and not _ours(argv, files)):
            return True
        time.sleep(0.005)
    return False


def stop(files: NetworkFiles | DnsFiles, search: bool = False) -> None:
    """Stop this network's dnsmasq (SIGTERM, then SIGKILL); nothing running is fine. search:
    also stop any that the pid file does not name (costs a scan of /proc)."""
    found = running(files)
    pids = [found[0]] if found else []
    if search:
        pids += [p for p in _strays(files) if p not in pids]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in pids:
        if not _wait_gone(pid, files, STOP_TIMEOUT):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not _wait_gone(pid, files, STOP_TIMEOUT):
                raise ProviderError(f"dnsmasq (pid {pid}) does not exit")
    files.pid.unlink(missing_ok=True)


def leases(files: NetworkFiles | DnsFiles) -> list[dict[str, Any]]:
    """Current leases: [{mac, ip, expires}] (guest-chosen hostnames are left out on purpose)."""
    try:
        text = files.leases.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].isdigit():
            out.append({"mac": parts[1], "ip": parts[2], "expires": int(parts[0])})
    return out
