"""Point-in-time copies of a disk a running domain is using: a libvirt block copy, ended
without pivot (why this rather than a disk-only snapshot and block commit: see `snapshot`).

`block_copy` makes QEMU mirror the disk into an existing, empty qcow2 file (REUSE_EXT, the
destination's format stated, TRANSIENT_JOB), waits until the mirror is ready (`<mirror
ready='yes'>` in the live XML), freezes the guest's filesystems through its agent when one
answers, ends the job with `virDomainBlockJobAbort` (no PIVOT: the guest keeps its disk),
thaws, and checks that no job is left. A job that cannot be shown gone is `CleanupUnproven`.
"""

from __future__ import annotations

import contextlib
import time
import xml.etree.ElementTree as ET

import libvirt

from iacloud.errors import CleanupUnproven, ProviderError

from . import domain_xml
from .connection import failing, is_error

FORMAT = "qcow2"
COPY_TIMEOUT = 3600.0  # a block copy that is not ready by then is given up
COPY_FLAGS = libvirt.VIR_DOMAIN_BLOCK_COPY_REUSE_EXT | libvirt.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB
# what a guest agent that cannot freeze answers: the copy is then crash-consistent
NO_FREEZE = (
    libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
    libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
    libvirt.VIR_ERR_OPERATION_FAILED,
    libvirt.VIR_ERR_OPERATION_INVALID,
)
THAW_ATTEMPTS = 5


def copy_destination_xml(path: str) -> str:
    """The `<disk>` a block copy writes into: our qcow2 volume's file, its format stated (with
    REUSE_EXT and no format libvirt would probe the file)."""
    disk = ET.Element("disk", type="file", device="disk")
    ET.SubElement(disk, "source", file=path)
    ET.SubElement(disk, "driver", name="qemu", type=FORMAT)
    return ET.tostring(disk, encoding="unicode")


def mirror_state(xml: str, target: str) -> str | None:
    """The state of the block copy of disk `target` in a domain's live XML: "ready" once the
    mirror caught up, "copying" before, None when the disk has no mirror (no job, or it ended)."""
    root = ET.fromstring(xml)
    for disk in root.findall("devices/disk"):
        el = disk.find("target")
        if el is None or el.get("dev") != target:
            continue
        mirror = disk.find("mirror")
        if mirror is None:
            return None
        return "ready" if mirror.get("ready") == "yes" else "copying"
    return None


def block_copy(dom: libvirt.virDomain, target: str, dest: str, what: str) -> bool:
    """Copy disk `target` of running domain `dom` into the file `dest` (an empty qcow2 volume
    of the same size) as it is at one instant: a full block copy, ended without pivot once
    the mirror is ready, with the guest's filesystems frozen for that instant when its agent
    can. Whether they were (quiesced). Raises CleanupUnproven when the job cannot be shown
    to be gone."""
    with failing(f"starting a block copy of volume {what} (disk {target} of {dom.name()})"):
        dom.blockCopy(target, copy_destination_xml(dest), {}, COPY_FLAGS)
    try:
        _wait_ready(dom, target, what)
        frozen = _freeze(dom)
    except BaseException:
        _end_copy(dom, target, what)
        raise
    try:
        _end_copy(dom, target, what)
    finally:
        if frozen:
            _thaw(dom)
    return frozen


def _agent_connected(dom: libvirt.virDomain) -> bool:
    try:
        return domain_xml.parse(dom.XMLDesc(0)).agent == "connected"
    except libvirt.libvirtError:
        return False


def _freeze(dom: libvirt.virDomain) -> bool:
    """Freeze the guest's filesystems through its agent; False when there is no agent or it
    cannot (then nothing is frozen)."""
    if not _agent_connected(dom):
        return False
    try:
        return dom.fsFreeze(None, 0) > 0
    except libvirt.libvirtError as exc:
        if not is_error(exc, NO_FREEZE):
            raise ProviderError(
                f"freezing the filesystems of {dom.name()}: {exc.get_error_message()}"
            ) from exc
        with contextlib.suppress(libvirt.libvirtError):
            dom.fsThaw(None, 0)  # a freeze that failed half-way thaws what it froze
        return False


def _thaw(dom: libvirt.virDomain) -> None:
    """Thaw what `_freeze` froze; a guest left frozen is an error that says how to thaw it."""
    for attempt in range(THAW_ATTEMPTS):
        try:
            dom.fsThaw(None, 0)
            return
        except libvirt.libvirtError as exc:
            if attempt == THAW_ATTEMPTS - 1:
                raise ProviderError(
                    f"thawing the filesystems of {dom.name()} after the snapshot: "
                    f"{exc.get_error_message()}; they may still be frozen "
                    f"(`virsh domfsthaw {dom.name()}`)"
                ) from exc
            time.sleep(1)


def _wait_ready(dom: libvirt.virDomain, target: str, what: str) -> None:
    deadline = time.monotonic() + COPY_TIMEOUT
    pause = 0.02
    while True:
        with failing(f"watching the block copy of volume {what}"):
            state = mirror_state(dom.XMLDesc(0), target)
        if state == "ready":
            return
        if state is None:
            raise ProviderError(
                f"the block copy of volume {what} (disk {target} of {dom.name()}) ended before "
                "it was complete (did the domain stop?)"
            )
        if time.monotonic() > deadline:
            raise ProviderError(
                f"the block copy of volume {what} was not complete after {COPY_TIMEOUT:g}s"
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


def _end_copy(dom: libvirt.virDomain, target: str, what: str) -> None:
    """End the copy job without pivot (the guest keeps its disk), and make sure it is gone."""
    try:
        dom.blockJobAbort(target, 0)
    except libvirt.libvirtError as exc:
        if not is_error(exc, (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_NO_DOMAIN)):
            raise CleanupUnproven(
                f"ending the block copy of volume {what}: {exc.get_error_message()}"
            ) from exc
    try:
        state = mirror_state(dom.XMLDesc(0), target)
    except libvirt.libvirtError as exc:
        if is_error(exc, (libvirt.VIR_ERR_NO_DOMAIN,)):
            return
        raise CleanupUnproven(f"checking the block copy of volume {what}: {exc}") from exc
    if state is not None:
        raise CleanupUnproven(
            f"the block copy of volume {what} (disk {target} of {dom.name()}) is still running"
        )
