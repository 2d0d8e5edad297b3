"""Domain XML for servers, built and parsed with ElementTree (never by string formatting).

Disks are `<disk type='volume'>` (pool + volume name, so the XML names the volume id
directly) with an explicit `<driver type=...>`; NICs are virtio `<interface type='bridge'>`;
the serial console goes to a file; a virtio-serial channel for the QEMU guest agent is always
there. The seed cdrom is IDE on pc and virtio-scsi on q35 (see `build`). The `<metadata>`
holds the ownership tag and, as its child, what the server was made from (image or boot
volume, its own root and seed volumes, host name, whether user_data was given, and the order
and kind of its networks and volumes as the inputs listed them), so a read can report inputs
in exactly the shape they were written. user_data and ssh_keys themselves are in the seed only.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from .tags import NS, OwnerTag, find_owner, owner_element, parse_owner


@dataclass(frozen=True)
class Disk:
    target: str  # vda, vdb, hdc...
    format: str  # qcow2 | raw: always explicit
    pool: str | None = None
    volume: str | None = None
    path: str | None = None  # for a `type='file'` disk attached by someone else
    device: str = "disk"  # disk | cdrom
    bus: str = "virtio"

    @property
    def id(self) -> str | None:
        return f"{self.pool}/{self.volume}" if self.pool and self.volume else None


@dataclass(frozen=True)
class Nic:
    bridge: str
    mac: str
    # the host-side tap device (`<target dev>`): chosen by iacloud for the NICs it makes, so
    # security group rules bound to it stay valid across restarts; None: libvirt's vnetN
    tap: str | None = None


@dataclass(frozen=True)
class NicRecord:
    """How the inputs named one NIC: `{network = ...}`, `{bridge = ...}` or `{port = ...}`, MAC
    given (or the port's) or not."""

    mac: str
    key: str  # "network" | "bridge" | "port"
    explicit_mac: bool
    port: str | None = None  # the port id, for key "port"
    groups: tuple[str, ...] = ()  # security group ids


@dataclass(frozen=True)
class ServerRecord:
    hostname: str
    image: str | None  # the image id the root overlay was made from
    boot_volume: str | None
    root: str  # volume id of the root disk
    seed: str  # volume id of the seed ISO
    nics: tuple[NicRecord, ...] = ()
    volumes: tuple[str, ...] = ()
    # whether the inputs gave user_data (an empty seed user-data may be "" or none at all);
    # None: not recorded (a domain defined before this was)
    user_data: bool | None = None


@dataclass
class DomainSpec:
    name: str
    virt_type: str  # kvm | qemu
    machine: str  # pc | q35
    vcpus: int
    memory_mib: int
    owner: OwnerTag
    record: ServerRecord
    disks: list[Disk]  # root first, then the seed cdrom, then data volumes
    nics: list[Nic]
    console_path: str
    uuid: str | None = None  # chosen by us, so the seed's instance-id can be the domain's uuid


@dataclass
class ParsedDomain:
    name: str
    uuid: str
    owner: OwnerTag | None
    record: ServerRecord | None
    vcpus: int
    memory_mib: int
    disks: list[Disk] = field(default_factory=list)
    nics: list[Nic] = field(default_factory=list)
    console_path: str | None = None
    machine: str = "pc"  # pc | q35, from libvirt's expanded machine type
    agent: str | None = None  # the guest agent channel's state: connected | disconnected


AGENT_CHANNEL = "org.qemu.guest_agent.0"
# free PCIe root ports on q35, so NICs and volumes can be hot-plugged (pc has a flat bus)
Q35_SPARE_PORTS = 8
Q35_FIXED_DEVICES = 6  # rng, virtio-scsi, virtio-serial, balloon, USB, one to spare


def _q(tag: str) -> str:
    return f"{{{NS}}}{tag}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def disk_element(disk: Disk) -> ET.Element:
    kind = "volume" if disk.volume else "file"
    el = ET.Element("disk", type=kind, device=disk.device)
    _sub(el, "driver", name="qemu", type=disk.format)
    if disk.volume:
        _sub(el, "source", pool=disk.pool or "", volume=disk.volume)
    else:
        _sub(el, "source", file=disk.path or "")
    _sub(el, "target", dev=disk.target, bus=disk.bus)
    if disk.device == "cdrom":
        _sub(el, "readonly")
    return el


def interface_element(nic: Nic) -> ET.Element:
    el = ET.Element("interface", type="bridge")
    _sub(el, "mac", address=nic.mac)
    _sub(el, "source", bridge=nic.bridge)
    if nic.tap:
        _sub(el, "target", dev=nic.tap)
    _sub(el, "model", type="virtio")
    return el


def metadata_element(owner: OwnerTag, record: ServerRecord, *, bare: bool = False) -> ET.Element:
    """The owner tag with the server record inside, every element in our namespace.
    `bare`: with no namespace at all, as `virDomainSetMetadata` wants it (libvirt then puts
    every element into the namespace it is given), so both forms read back the same."""
    el = owner_element(owner)
    srv = _sub(el, _q("server"), hostname=record.hostname, root=record.root, seed=record.seed)
    if record.image:
        srv.set("image", record.image)
    if record.boot_volume:
        srv.set("boot_volume", record.boot_volume)
    if record.user_data is not None:
        srv.set("user_data", "true" if record.user_data else "false")
    for nic in record.nics:
        el_nic = _sub(
            srv,
            _q("nic"),
            mac=nic.mac,
            key=nic.key,
            explicit_mac="true" if nic.explicit_mac else "false",
        )
        if nic.port is not None:
            el_nic.set("port", nic.port)
        for group in nic.groups:
            _sub(el_nic, _q("sg"), id=group)
    for vol in record.volumes:
        _sub(srv, _q("volume"), id=vol)
    if bare:
        for node in el.iter():
            node.tag = node.tag.rpartition("}")[2]
    return el


def to_string(el: ET.Element) -> str:
    return ET.tostring(el, encoding="unicode")


def build(spec: DomainSpec) -> str:
    dom = ET.Element("domain", type=spec.virt_type)
    _sub(dom, "name", spec.name)
    if spec.uuid:
        _sub(dom, "uuid", spec.uuid)
    _sub(dom, "title", f"iacloud {spec.owner.stack} {spec.owner.address}")
    meta = _sub(dom, "metadata")
    meta.append(metadata_element(spec.owner, spec.record))
    _sub(dom, "memory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "currentMemory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(spec.vcpus), placement="static")
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine=spec.machine)
    _sub(os_el, "boot", dev="hd")
    features = _sub(dom, "features")
    _sub(features, "acpi")  # the power button: graceful shutdown
    _sub(features, "apic")
    if spec.virt_type == "kvm":
        _sub(dom, "cpu", mode="host-passthrough")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    for disk in spec.disks:
        devices.append(disk_element(disk))
    for nic in spec.nics:
        devices.append(interface_element(nic))
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=spec.console_path)
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="file")
    _sub(console, "source", path=spec.console_path)
    _sub(console, "target", type="serial", port="0")
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    # the QEMU guest agent's port; libvirt picks the socket path. Harmless without an agent.
    channel = _sub(devices, "channel", type="unix")
    _sub(channel, "source", mode="bind")
    _sub(channel, "target", type="virtio", name=AGENT_CHANNEL)
    if any(d.bus == "scsi" for d in spec.disks):
        # a cdrom on virtio-scsi: the one bus both pc and q35 offer that the common cloud
        # kernels (Debian's cloud kernel has no AHCI driver) all have a driver for
        _sub(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    if spec.machine == "q35":
        # libvirt puts each PCIe device on a root port of its own and adds only as many as the
        # devices at define need; ports for the devices (ours and libvirt's own: USB, balloon,
        # virtio-serial) plus spare ones
        _sub(devices, "controller", type="pci", index="0", model="pcie-root")
        wanted = len(spec.disks) + len(spec.nics) + Q35_FIXED_DEVICES + Q35_SPARE_PORTS
        for i in range(1, wanted + 1):
            _sub(devices, "controller", type="pci", index=str(i), model="pcie-root-port")
    return to_string(dom)


def _parse_record(domain: ET.Element) -> ServerRecord | None:
    owner = find_owner(domain)
    srv = owner.find(_q("server")) if owner is not None else None
    if srv is None:
        return None
    nics = tuple(
        NicRecord(
            n.get("mac", ""),
            n.get("key", "bridge"),
            n.get("explicit_mac") == "true",
            n.get("port"),
            tuple(g.get("id", "") for g in n.findall(_q("sg"))),
        )
        for n in srv.findall(_q("nic"))
    )
    volumes = tuple(v.get("id", "") for v in srv.findall(_q("volume")))
    given = srv.get("user_data")
    return ServerRecord(
        hostname=srv.get("hostname", ""),
        image=srv.get("image"),
        boot_volume=srv.get("boot_volume"),
        root=srv.get("root", ""),
        seed=srv.get("seed", ""),
        nics=nics,
        volumes=volumes,
        user_data=None if given not in ("true", "false") else given == "true",
    )


def _memory_mib(el: ET.Element | None) -> int:
    if el is None or not el.text:
        return 0
    scale = {"KiB": 1 / 1024, "k": 1 / 1024, "MiB": 1, "M": 1, "GiB": 1024, "G": 1024}
    return round(int(el.text) * scale.get(el.get("unit", "KiB"), 1 / 1024))


def parse(xml: str) -> ParsedDomain:
    dom = ET.fromstring(xml)
    vcpu = dom.find("vcpu")
    parsed = ParsedDomain(
        name=dom.findtext("name") or "",
        uuid=dom.findtext("uuid") or "",
        owner=parse_owner(dom),
        record=_parse_record(dom),
        vcpus=int(vcpu.get("current") or vcpu.text or 0) if vcpu is not None else 0,
        memory_mib=_memory_mib(dom.find("memory")),
    )
    for el in dom.findall("devices/disk"):
        source, target, driver = el.find("source"), el.find("target"), el.find("driver")
        parsed.disks.append(
            Disk(
                target=target.get("dev", "") if target is not None else "",
                format=driver.get("type", "raw") if driver is not None else "raw",
                pool=source.get("pool") if source is not None else None,
                volume=source.get("volume") if source is not None else None,
                path=source.get("file") if source is not None else None,
                device=el.get("device", "disk"),
                bus=target.get("bus", "") if target is not None else "",
            )
        )
    for el in dom.findall("devices/interface"):
        mac, source, target = el.find("mac"), el.find("source"), el.find("target")
        bridge = (source.get("bridge") or source.get("network") or "") if source is not None else ""
        parsed.nics.append(
            Nic(
                bridge=bridge,
                mac=(mac.get("address", "") if mac is not None else ""),
                tap=target.get("dev") if target is not None else None,
            )
        )
    serial = dom.find("devices/serial[@type='file']/source")
    if serial is not None:
        parsed.console_path = serial.get("path")
    machine = dom.find("os/type")
    parsed.machine = "q35" if machine is not None and "q35" in machine.get("machine", "") else "pc"
    for target in dom.findall("devices/channel/target"):
        if target.get("name") == AGENT_CHANNEL:
            parsed.agent = target.get("state") or "disconnected"
    return parsed
