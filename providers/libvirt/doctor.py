"""Host checks for the libvirt provider: libvirtd reachable, usable virtualization, the slow
define symptom of an unmasked /dev/kvm on hosts where KVM cannot run guests, the pool path."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import libvirt

from iacloud.provider import Check

from . import virt_type
from .connection import is_local
from .settings import LibvirtSettings

_RESTART = "IACLOUD_RESTART_LIBVIRTD=1 bash scripts/host-setup.sh"
_KVM_MAJOR, _KVM_MINOR = 10, 232


def libvirtd_pids() -> list[int]:
    """The libvirtd processes of this network namespace: a daemon in another one (a lab host,
    a container) does not answer qemu:///system here."""
    ours = os.stat("/proc/self/ns/net").st_ino
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "libvirtd" and (
                    os.stat(entry / "ns" / "net").st_ino == ours
                ):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def kvm_as_libvirtd_sees_it(pid: int) -> str:
    """'device' (a real, openable /dev/kvm), 'masked' (mode-000 char device), 'open-mask'
    (a readable stand-in such as /dev/null: libvirt re-probes QEMU on every define),
    'file' (a regular file: guests fail to start) or 'absent'."""
    try:
        st = os.stat(f"/proc/{pid}/root/dev/kvm")
    except OSError:
        return "absent"
    if not stat.S_ISCHR(st.st_mode):
        return "file"
    if (os.major(st.st_rdev), os.minor(st.st_rdev)) == (_KVM_MAJOR, _KVM_MINOR):
        return "device"
    return "masked" if stat.S_IMODE(st.st_mode) == 0 else "open-mask"


def checks(settings: LibvirtSettings) -> list[Check]:
    out: list[Check] = []
    try:
        conn = libvirt.open(settings.uri)
    except libvirt.libvirtError as exc:
        return [
            Check(
                "libvirtd",
                "fail",
                f"cannot connect to {settings.uri}: {exc}",
                "bash scripts/host-setup.sh (installs and starts virtlogd and libvirtd)",
            )
        ]
    try:
        out.append(
            Check(
                "libvirtd",
                "ok",
                f"connected to {settings.uri} (libvirt "
                f"{conn.getLibVersion() // 1000000}.{conn.getLibVersion() // 1000 % 1000})",
            )
        )
        verdict = virt_type.resolve(
            conn, settings.uri, settings.virt_type, settings.virt_type_cache
        )
        if verdict == "kvm":
            out.append(Check("virtualization", "ok", "KVM runs guests"))
        else:
            why = (
                "/dev/kvm exists but a KVM guest does not run"
                if os.path.exists("/dev/kvm")
                else "no /dev/kvm"
            )
            out.append(
                Check("virtualization", "ok", f"QEMU emulation ({why}); guests are slower but work")
            )
            if is_local(settings.uri):
                out.extend(_mask_checks())
        out.append(_pool_check(settings))
    finally:
        conn.close()
    return out


def _mask_checks() -> list[Check]:
    out = []
    for pid in libvirtd_pids():
        seen = kvm_as_libvirtd_sees_it(pid)
        if seen in ("device", "open-mask"):
            out.append(
                Check(
                    "slow defines",
                    "fail",
                    f"libvirtd (pid {pid}) sees an openable /dev/kvm although KVM cannot run "
                    "guests: it re-probes QEMU with KVM on every domain define, and each "
                    "define takes ~40 s",
                    f"restart libvirtd with /dev/kvm masked by a mode-000 device: {_RESTART}",
                )
            )
        elif seen == "file":
            out.append(
                Check(
                    "slow defines",
                    "fail",
                    f"libvirtd (pid {pid}) sees /dev/kvm as a regular file: guests fail to start",
                    f"restart libvirtd: {_RESTART}",
                )
            )
        else:
            out.append(
                Check(
                    "slow defines",
                    "ok",
                    f"libvirtd (pid {pid}) has /dev/kvm masked: defines are fast",
                )
            )
    return out


def _pool_check(settings: LibvirtSettings) -> Check:
    path = Path(settings.pool_path)
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        return Check(
            "pool path",
            "fail",
            f"{probe} is not writable (pool {settings.pool})",
            "run as root or set pool_path in [provider.libvirt]",
        )
    return Check("pool path", "ok", f"{path} is usable (pool {settings.pool})")
