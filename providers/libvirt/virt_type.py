"""`virt_type = "auto"`: decide, once per boot, whether guests run under KVM or QEMU emulation.

A readable /dev/kvm proves nothing: on nested or misconfigured hosts a KVM guest hangs. So
the probe boots a real guest with `-accel kvm` and a hard time limit: the host's kernel
with no root file system and `panic=-1 -no-reboot`, which with working KVM panics and exits
well under a second (a real-mode-only probe is not enough: some hosts run real mode and
stall in protected mode). Without a kernel in /boot a boot sector that writes to
isa-debug-exit is booted instead. Only when the probe succeeds is libvirt asked whether it
offers KVM too: asking first could itself hang for tens of seconds on such hosts.

The verdict is cached in a file (default /run/iacloud/virt-type, with the boot id, so a
reboot re-probes). The verdict of scripts/host-setup.sh (/run/iacloud/kvm-usable) is
honoured when it is from this boot. For a remote URI only libvirt is asked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import libvirt

from .connection import is_local

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 5.0  # seconds: working KVM needs well under one
HOST_SETUP_VERDICT = Path("/run/iacloud/kvm-usable")
_lock = threading.Lock()
_memo: dict[str, str] = {}


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _cached(cache: Path) -> str | None:
    boot = f"boot_id {_boot_id()}"
    try:
        lines = cache.read_text().splitlines()
        if len(lines) >= 2 and lines[1] == boot and lines[0] in ("kvm", "qemu"):
            return lines[0]
    except OSError:
        pass
    try:  # host-setup.sh writes "yes"/"no" in the same layout
        lines = HOST_SETUP_VERDICT.read_text().splitlines()
        if len(lines) >= 2 and lines[1] == boot and lines[0] in ("yes", "no"):
            return "kvm" if lines[0] == "yes" else "qemu"
    except OSError:
        pass
    return None


def _store(cache: Path, verdict: str) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
        tmp.write_text(f"{verdict}\nboot_id {_boot_id()}\n")
        os.replace(tmp, cache)
    except OSError as exc:  # an unwritable cache only costs a probe next time
        log.debug("cannot cache virt_type in %s: %s", cache, exc)


def _boot_sector() -> bytes:
    # mov al, 0 ; out 0xf4, al ; hlt ; jmp $  -> isa-debug-exit makes qemu exit with status 1
    code = bytes([0xB0, 0x00, 0xE6, 0xF4, 0xF4, 0xEB, 0xFE])
    return code + bytes(510 - len(code)) + b"\x55\xaa"


def _run_bounded(argv: list[str], timeout: float) -> int | None:
    """Exit status, or None when the process had to be killed."""
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)
        return None


def kvm_runs_a_guest(timeout: float = PROBE_TIMEOUT) -> bool:
    """Boot a throw-away guest with -accel kvm; True only if it ran to its end in time."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    base = [qemu, "-accel", "kvm", "-nodefaults", "-no-user-config", "-display", "none"]
    base += ["-monitor", "none", "-serial", "none", "-parallel", "none", "-no-reboot", "-m", "128"]
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    if kernels:
        argv = [*base, "-M", "q35", "-kernel", str(kernels[-1])]
        argv += ["-append", "console=ttyS0 panic=-1 quiet"]
        return _run_bounded(argv, timeout) == 0
    with tempfile.NamedTemporaryFile(suffix=".img") as f:
        f.write(_boot_sector())
        f.flush()
        argv = [*base, "-M", "pc", "-drive", f"file={f.name},format=raw,if=floppy,readonly=on"]
        argv += ["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-boot", "a"]
        return _run_bounded(argv, timeout) == 1


def libvirt_offers_kvm(conn: libvirt.virConnect) -> bool:
    try:
        conn.getDomainCapabilities(None, "x86_64", None, "kvm", 0)
    except libvirt.libvirtError:
        return False
    return True


def resolve(conn: libvirt.virConnect, uri: str, setting: str, cache_file: str) -> str:
    """The domain type to use: 'kvm' or 'qemu'."""
    if setting != "auto":
        return setting
    with _lock:
        if uri in _memo:
            return _memo[uri]
        if is_local(uri):
            cache = Path(cache_file)
            verdict = _cached(cache)
            if verdict is None:
                verdict = "kvm" if kvm_runs_a_guest() else "qemu"
                _store(cache, verdict)
            if verdict == "kvm" and not libvirt_offers_kvm(conn):
                verdict = "qemu"
        else:
            verdict = "kvm" if libvirt_offers_kvm(conn) else "qemu"
        _memo[uri] = verdict
        return verdict
