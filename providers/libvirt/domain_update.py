"""In-place changes to a defined domain (the server's update): data disks and NICs attached
and detached in each definition (persistent, then live) on its own, the iacloud metadata,
vcpus and memory redefined, the root disk grown."""

from __future__ import annotations

import functools
import operator
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence

import libvirt

from iacloud.errors import ProviderError

from . import domain_xml, nic_filter, storage
from .connection import failing
from .domain_xml import Disk, Nic, NicRecord, ParsedDomain, ServerRecord
from .pool import Pools
from .server_inputs import NetworkEntry
from .storage import GiB
from .tags import NS, OwnerTag

DETACH_TIMEOUT = 30.0


def nic_record(entry: NetworkEntry, mac: str) -> NicRecord:
    """How the inputs named a NIC, for the domain's metadata."""
    return NicRecord(
        mac, entry.key, entry.fixed_mac is not None, entry.port, tuple(entry.security_groups)
    )


def next_target(used: set[str]) -> str:
    """The first free disk target after vda (vdb ... vdz, vdaa ...)."""
    for i in range(1, 26 * 27):
        name = "vd" + (chr(97 + i) if i < 26 else chr(96 + i // 26) + chr(97 + i % 26))
        if name not in used:
            return name
    raise ProviderError("no free disk target name")


def grow_root(
    conn: libvirt.virConnect, pools: Pools, dom: libvirt.virDomain, record: ServerRecord,
    root_gib: int,
) -> None:  # fmt: skip
    """The root disk made larger: through the running guest (blockResize, which QEMU
    announces to it) or the volume of a stopped one. A root disk never shrinks."""
    if record.image is None:
        raise ProviderError("root_gib sizes a root disk made from an image; this server boots "
                            "from a volume")  # fmt: skip
    pool_name, name = storage.split_id(record.root)
    pool = pools.find(conn, pool_name)
    vol = storage.lookup(pool, name) if pool is not None else None
    if pool is None or vol is None:
        raise ProviderError(f"root disk {record.root} does not exist")
    capacity = storage.info(pool, vol).capacity
    wanted = root_gib * GiB
    if wanted < capacity:
        raise ProviderError(
            f"a root disk cannot shrink (from {capacity / GiB:g} to {root_gib} GiB): "
            "keep root_gib (or the flavor's), or replace the server"
        )
    if wanted == capacity:
        return
    if dom.isActive():
        with failing(f"growing the root disk of {dom.name()}"):
            dom.blockResize("vda", wanted, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
    else:
        with failing(f"growing root disk {record.root}"):
            vol.resize(wanted, 0)


def affect_flags(dom: libvirt.virDomain) -> int:
    """Change the persistent definition, and the live one while the domain runs."""
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if dom.isActive():
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    return flags


def definitions(dom: libvirt.virDomain) -> list[tuple[int, ParsedDomain]]:
    """Each definition of the domain with the flag that changes it: the persistent one
    (what it boots with next) first, so a guest that does not release a device leaves at
    least its next boot right; then the live one while it runs."""
    inactive = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    out = [(libvirt.VIR_DOMAIN_AFFECT_CONFIG, domain_xml.parse(inactive))]
    if dom.isActive():
        out.append((libvirt.VIR_DOMAIN_AFFECT_LIVE, domain_xml.parse(dom.XMLDesc(0))))
    return out


def wait_gone(dom: libvirt.virDomain, gone: Callable[[ParsedDomain], bool], what: str) -> None:
    """A live detach completes when the guest releases the device: wait for it."""
    if not dom.isActive():
        return
    deadline = time.monotonic() + DETACH_TIMEOUT
    while not gone(domain_xml.parse(dom.XMLDesc(0))):
        if time.monotonic() > deadline:
            raise ProviderError(
                f"the guest of {dom.name()} did not release {what} in {DETACH_TIMEOUT:g}s"
            )
        time.sleep(0.2)


def update_volumes(
    dom: libvirt.virDomain,
    parsed: ParsedDomain,
    record: ServerRecord,
    wanted: Sequence[str],
    data_disk: Callable[[str, str], Disk],
) -> ServerRecord:
    """Detach and attach data disks in each definition (live, persistent) on its own, so
    a disk attached or detached in only one of them (`virsh attach-disk --config`) is
    restored there alone; a disk both lack is attached by one call, at one target."""
    own = {record.root, record.seed}

    def data_disks(p: ParsedDomain) -> dict[str, Disk]:
        disks = ((d.id or d.path or d.target, d) for d in p.disks if d.device == "disk")
        return {key: d for key, d in disks if key not in own}

    for flag, p in definitions(dom):
        for vid, disk in data_disks(p).items():
            if vid in wanted:
                continue
            with failing(f"detaching volume {vid} from {parsed.name}"):
                dom.detachDeviceFlags(domain_xml.to_string(domain_xml.disk_element(disk)), flag)
            if flag == libvirt.VIR_DOMAIN_AFFECT_LIVE:
                wait_gone(
                    dom,
                    lambda p, t=disk.target: all(d.target != t for d in p.disks),
                    f"volume {vid}",
                )
    each = [(flag, p, data_disks(p)) for flag, p in definitions(dom)]
    used = {d.target for _, p, _ in each for d in p.disks}
    for vid in wanted:
        lacking = [(flag, p) for flag, p, disks in each if vid not in disks]
        if not lacking:
            continue
        # where one definition has it already, the other gets it at the same target
        present = [disks[vid].target for _, _, disks in each if vid in disks]
        free = present and all(d.target != present[0] for _, p in lacking for d in p.disks)
        target = present[0] if free else next_target(used)
        used.add(target)
        disk = data_disk(vid, target)
        flags = functools.reduce(operator.or_, (flag for flag, _ in lacking))
        with failing(f"attaching volume {vid} to {parsed.name}"):
            dom.attachDeviceFlags(domain_xml.to_string(domain_xml.disk_element(disk)), flags)
    return ServerRecord(**{**record.__dict__, "volumes": tuple(wanted)})


def update_networks(
    dom: libvirt.virDomain,
    parsed: ParsedDomain,
    record: ServerRecord,
    resolved: Sequence[tuple[NetworkEntry, str]],
) -> ServerRecord:
    """Like volumes: each definition (live, persistent) is set right on its own; `resolved`:
    each wanted NIC with its MAC."""
    want = {mac: entry.ifname for entry, mac in resolved}
    for flag, p in definitions(dom):
        for nic in p.nics:
            if want.get(nic.mac) == nic.bridge:
                continue
            with failing(f"detaching NIC {nic.mac} from {parsed.name}"):
                dom.detachDeviceFlags(
                    domain_xml.to_string(domain_xml.interface_element(Nic(nic.bridge, nic.mac))),
                    flag,
                )
            if flag == libvirt.VIR_DOMAIN_AFFECT_LIVE:
                wait_gone(
                    dom,
                    lambda p, m=nic.mac: all(n.mac != m for n in p.nics),
                    f"NIC {nic.mac}",
                )
    have = [(flag, {n.mac for n in p.nics}) for flag, p in definitions(dom)]
    for entry, mac in resolved:
        lacking = [flag for flag, macs in have if mac not in macs]
        if lacking:
            nic = Nic(entry.ifname, mac, nic_filter.tap_name(parsed.uuid, mac))
            with failing(f"attaching NIC {mac} ({entry.ifname}) to {parsed.name}"):
                dom.attachDeviceFlags(
                    domain_xml.to_string(domain_xml.interface_element(nic)),
                    functools.reduce(operator.or_, lacking),
                )
    nics = tuple(nic_record(e, m) for e, m in resolved)
    return ServerRecord(**{**record.__dict__, "nics": nics})


def set_metadata(dom: libvirt.virDomain, owner: OwnerTag, record: ServerRecord) -> None:
    el = domain_xml.metadata_element(owner, record, bare=True)
    with failing(f"recording metadata of {dom.name()}"):
        dom.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            domain_xml.to_string(el),
            "iacloud",
            NS,
            affect_flags(dom),
        )


def redefine(conn: libvirt.virConnect, dom: libvirt.virDomain, vcpus: int, memory_mib: int) -> None:
    """The persistent definition with these vcpus and memory (effective from the next boot)."""
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    vcpu = root.find("vcpu")
    if vcpu is None:
        vcpu = ET.SubElement(root, "vcpu")
    vcpu.attrib.pop("current", None)
    vcpu.text = str(vcpus)
    for tag in ("memory", "currentMemory"):
        el = root.find(tag)
        if el is None:
            el = ET.SubElement(root, tag)
        el.set("unit", "MiB")
        el.text = str(memory_mib)
    with failing(f"redefining domain {dom.name()}"):
        conn.defineXML(ET.tostring(root, encoding="unicode"))
