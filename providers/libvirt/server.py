"""The `server` resource type: a libvirt domain (Nova instance).

Create: a root disk (a qcow2 overlay of `image`, owned by the server, or the `boot_volume`
as it is), a NoCloud seed ISO volume (instance-id = the domain's uuid, chosen here, so it
changes exactly when the server is replaced), the domain (see `domain_xml`), then start and
wait until the guest is ready as `ready` says (see `readiness`; bounded by `boot_timeout`).
If any step fails, everything made so far is removed again.

Update, least disruptive first: `volumes` and `networks` are hot-plugged
(attach/detachDeviceFlags, LIVE|CONFIG on a running domain, CONFIG on a stopped one);
`vcpus`/`memory_mib` redefine the domain and, if it runs, restart it gracefully (ACPI
shutdown for `shutdown_timeout` seconds, then power-off); `power_state` starts or stops it;
`ready` changes nothing on the host (the device changes are in `domain_update`).
A running domain also has a persistent definition (its inactive XML, what it boots with next):
the read reports its vcpus, memory, networks and volumes as `next_boot`, and update sets each
definition right on its own: a device only one of them has or lacks is detached or attached
there alone (AFFECT_LIVE or AFFECT_CONFIG), and vcpus/memory that only the persistent one gets
wrong are redefined without a restart.
Delete powers the domain off at once unless a volume that outlives the server is attached
(not its own, not deleted in the same run: `Provider.run`); only then is a graceful shutdown
tried first.

`networks` entries: `{ network = ID }` (a network's id is its bridge), `{ bridge = NAME }`,
each with an optional `mac`, or `{ port = ID }`: a port id `<bridge>/<mac>/<ip>` is split here
(no call to the netlink provider) and the NIC goes on that bridge with that MAC; the seed's
network-config gives it the port's IP statically, with the prefix, gateway and DNS of the
network (`iacloud.netfacts`), or DHCP when the network's facts are unknown (its DHCP server
then hands out the port's IP); a `mac` beside a port is an error.
NICs without a `mac` or port get a stable one derived from the stack id, the address and the
NIC's position (52:54:00:xx:xx:xx). Domain names are '<stack>-<address>-<stack id prefix>'.
The metadata records how the inputs named each NIC (with the port id for a port) and the order
of the volumes, so a read reports `networks` and `volumes` exactly as they were written (a port
NIC no longer on the port's bridge with its MAC reads as a `bridge` entry); `user_data` and
`ssh_keys` live only in the NoCloud seed, so a read leaves them out (the engine keeps the
recorded values) and only import opens the seed ISO to recover them (with the host name of a
domain that has no iacloud record). The metadata says whether user_data was given at all,
since an empty user-data file may stand for "" or for none.

Security groups: a NIC's `security_groups` (group ids) make it a member of those groups
(`iacloud.secgroups`): the server writes one member record per such NIC (its bridge, MAC,
tap device, the port's address for a port NIC, else none: the ruleset then allows the DHCP
lease's) and the host's ruleset is rebuilt, before the domain first starts, so the guest is
filtered from its first packet. Every NIC iacloud makes gets its own tap name
(`<target dev='iacn...'>`, from the domain's uuid and the MAC) so rules bound to it stay
valid across restarts. Changing a NIC's groups is a live update (the NIC stays plugged).

`addresses` maps each NIC's network to the IPs it really has, matched by MAC (see
`addresses`: guest agent, ready line, dnsmasq lease, port): the key is the network's address
in its stack when the bridge carries a netlink tag (`/sys/class/net/<bridge>/ifalias` =
`iacloud:<stack_id>:<address>`), else the bridge name. The `hostname` attribute is what the
guest reports (agent, ready line), else the recorded one; the `hostname` input stays the
recorded one.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import libvirt

from iacloud import netfacts
from iacloud.errors import CleanupUnproven, Diagnostic, ProviderError
from iacloud.ids import PortId
from iacloud.provider import Collision, ObjectRef, Observed, TaggedObject
from iacloud.schema import Inputs
from iacloud.secgroups import facts

from . import (
    addresses,
    console,
    dns_names,
    domain_update,
    domain_xml,
    guest_agent,
    migration,
    nic_filter,
    readiness,
    remote_console,
    seed,
    storage,
)
from .base import LibvirtResource
from .connection import NO_DOMAIN, OPERATION_INVALID, failing, is_error
from .domain_xml import Disk, DomainSpec, Nic, NicRecord, ParsedDomain, ServerRecord
from .host_context import crosses_default_host
from .server_inputs import NetworkEntry, ServerInputs, port_places
from .storage import GiB
from .tags import OwnerTag, default_hostname, domain_name, parse_volume_name, volume_name

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")
READY_TAIL = 256 * 1024  # cloud-init's final stage and its errors are in the console's tail
SEED_LIMIT = 16 << 20  # a seed holds at most 1 MiB of user_data: a larger cdrom is no seed
UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
)
_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",  # running, waiting for I/O
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting-down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}
# a domain in these states runs with a live definition beside its persistent one
_ACTIVE = {
    libvirt.VIR_DOMAIN_RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED,
    libvirt.VIR_DOMAIN_PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN,
    libvirt.VIR_DOMAIN_PMSUSPENDED,
}


def derived_mac(stack_id: str, address: str, index: int, taken: set[str]) -> str:
    """A stable locally administered MAC (QEMU's 52:54:00 prefix) not already in `taken`."""
    salt = 0
    while True:
        h = hashlib.sha256(f"{stack_id}\0{address}\0{index}\0{salt}".encode()).digest()
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in h[:3])
        if mac not in taken:
            return mac
        salt += 1


def _nic_configs(nics: Sequence[tuple[NetworkEntry, str]]) -> list[seed.NicConfig]:
    """network-config of each NIC: a port's static address with its network's prefix, gateway
    and DNS when the network's facts are known (`iacloud.netfacts`), else DHCP (a port's
    network with DHCP hands out the port's address anyway)."""
    out = []
    for entry, mac in nics:
        facts = netfacts.read(entry.ifname) if entry.port is not None else None
        if facts is None or entry.port is None:
            out.append(seed.NicConfig(mac))
            continue
        ip = PortId.parse(entry.port).ip
        out.append(
            seed.NicConfig(
                mac,
                address=f"{ip}/{facts.prefixlen}",
                gateway=facts.gateway,
                dns=tuple(facts.dns),
                mtu=facts.mtu,
            )
        )
    return out


def network_label(bridge: str, local: bool) -> str:
    """The network's address when a netlink network tagged the bridge, else the bridge."""
    if local:
        try:
            alias = Path("/sys/class/net", bridge, "ifalias").read_text().strip()
        except OSError:
            alias = ""
        parts = alias.split(":", 2)
        if len(parts) == 3 and parts[0] == "iacloud" and parts[2]:
            return parts[2]
    return bridge


def _state_name(code: int) -> str:
    return _STATES.get(code, "unknown")


def _definition_inputs(
    parsed: ParsedDomain, filtered: frozenset[str] | None = None
) -> dict[str, Any]:
    """The inputs one definition of a domain (live or persistent) holds: vcpus, memory_mib,
    networks and volumes, in the shape the inputs were written (the definition's own record).
    filtered: the MACs whose member records exist (`iacloud.secgroups.facts`) for the host the
    domain is on; a NIC with groups that has none (the host was rebooted, the file removed, a
    move cut off) reads as having no groups, a port NIC as a plain bridge NIC, so the next
    plan writes them again. None: not checked."""
    record = parsed.record
    by_mac = {n.mac: n for n in parsed.nics}
    networks: list[dict[str, Any]] = []
    seen: set[str] = set()
    for rec in record.nics if record else ():
        nic = by_mac.get(rec.mac)
        if nic is None:
            continue  # detached behind our back: the read shows it missing
        seen.add(nic.mac)
        if rec.key == "port":
            port = rec.port or ""
            # the NIC still where the port puts it, and its member record (which binds the
            # port's groups to its tap) in place; else it reads as a plain bridge NIC, so the
            # plan shows the difference and the update puts both right
            same = port_places(port, nic.bridge, nic.mac) and (
                filtered is None or nic.mac in filtered
            )
            entry = {"port": port} if same else {"bridge": nic.bridge, "mac": nic.mac}
        else:
            entry = {rec.key: nic.bridge, "mac": nic.mac if rec.explicit_mac else None}
        groups = list(rec.groups)
        entry["security_groups"] = groups if filtered is None or nic.mac in filtered else []
        networks.append(NetworkEntry(**entry).model_dump(mode="json"))
    for nic in parsed.nics:
        if nic.mac not in seen:
            networks.append(NetworkEntry(bridge=nic.bridge, mac=nic.mac).model_dump(mode="json"))
    own = {record.root, record.seed} if record else set()
    attached = [d.id or d.path or d.target for d in parsed.disks if d.device == "disk"]
    attached = [a for a in attached if a not in own]
    listed = [v for v in (record.volumes if record else ()) if v in attached]
    volumes = listed + [a for a in attached if a not in listed]
    return {
        "vcpus": parsed.vcpus,
        "memory_mib": parsed.memory_mib,
        "networks": networks,
        "volumes": volumes,
    }


class Server(LibvirtResource):
    type_name = "server"
    placement = "placed"
    on_hosts, noun = True, "domain"  # import looks on every host (host_import)
    replace_collisions = (
        Collision("the libvirt domain name (stack name, address and stack id), its root disk "
                  "and seed volume names (stack id and address)"),
    )  # fmt: skip
    Inputs = ServerInputs
    attributes = (
        "id",
        "name",
        "addresses",
        "first_address",
        "macs",
        "power_state",
        "console_log",
        "hostname",
    )

    # ---------------------------------------------------------------- plan-time checks
    def check(self, address: str, inputs: Inputs, prior: Observed | None) -> list[Diagnostic]:
        assert isinstance(inputs, ServerInputs)
        if (inputs.image is None) == (inputs.boot_volume is None):
            return [
                Diagnostic(
                    "give exactly one of 'image' and 'boot_volume'", address=address, field="image"
                )
            ]
        if inputs.boot_volume is not None and inputs.root_gib is not None:
            return [
                Diagnostic(
                    "root_gib sizes a root disk made from 'image'; a boot volume has its own size",
                    address=address,
                    field="root_gib",
                )
            ]
        if inputs.boot_volume is not None and inputs.boot_volume in inputs.volumes:
            return [
                Diagnostic(
                    "the boot volume cannot also be in 'volumes'", address=address, field="volumes"
                )
            ]
        if (
            prior is not None
            and crosses_default_host(prior.inputs.get("host"), inputs.host)
            and (inputs.volumes or inputs.boot_volume)
        ):
            return [
                Diagnostic(
                    "migration moves a server between hosts of the site catalog; this one is on "
                    "(or goes to) the provider's own libvirtd, so it would be replaced, and its "
                    "volumes cannot follow a replacement: detach them first",
                    address=address,
                    field="host",
                )
            ]
        ctx = self.provider.host(inputs.host) if inputs.host is not None else None
        if ctx is not None and not ctx.local and ctx.entry is not None and ctx.entry.ssh is None:
            for i, entry in enumerate(inputs.networks):
                if entry.security_groups or entry.port is not None:
                    return [
                        Diagnostic(
                            f"host {inputs.host} has no ssh target: security groups and ports "
                            "are enforced there over SSH (add ssh = ... to the host)",
                            address=address,
                            field=f"networks[{i}]",
                        )
                    ]
        return []

    def not_in_place(self, address: str, inputs: Inputs, prior: Observed) -> dict[str, str]:
        assert isinstance(inputs, ServerInputs)
        if crosses_default_host(prior.inputs.get("host"), inputs.host):
            return {
                "host": "migration moves a server between hosts of the site catalog, and this "
                "one is on (or goes to) the provider's own libvirtd, so it is replaced there"
            }
        return {}

    # ---------------------------------------------------------------- helpers
    @property
    def settings(self) -> Any:
        return self.provider.settings

    def _name(self, address: str) -> str:
        stack = self.provider.stack
        return domain_name(stack.name, stack.id, address)

    def _console_path(self, name: str) -> Path:
        """Where QEMU writes the serial console: beside the stack's data on this machine; on
        another host in libvirt's own log directory, which every libvirt host has."""
        if not self.provider.here.local:
            return remote_console.log_path(name)
        return self.provider.stack.data_dir / "console" / f"{name}.log"

    def _console_text(self, path: Path | None) -> str:
        """The console log's tail: read here, or over the host's SSH (argument list)."""
        if path is None:
            return ""
        ctx = self.provider.here
        if ctx.local:
            return console.read_tail(path, READY_TAIL)
        return remote_console.read_tail(ctx.entry, path, READY_TAIL)

    def _lookup(self, id: str) -> libvirt.virDomain | None:
        conn = self.conn
        try:
            if _UUID.fullmatch(id):
                return conn.lookupByUUIDString(id)
            return conn.lookupByName(id)
        except libvirt.libvirtError as exc:
            if is_error(exc, NO_DOMAIN):
                return None
            raise ProviderError(f"looking up domain {id}: {exc.get_error_message()}") from exc

    def _resolve_nics(
        self, address: str, entries: Sequence[NetworkEntry], current: Sequence[NicRecord] = ()
    ) -> list[tuple[NetworkEntry, str]]:
        """Each entry with its MAC: given, kept from the NIC it had, or derived."""
        taken = {e.fixed_mac for e in entries if e.fixed_mac}
        reusable = [n for n in current if not n.explicit_mac]
        out = []
        for i, entry in enumerate(entries):
            mac = entry.fixed_mac
            if mac is None:
                for n in reusable:
                    if n.key == entry.key and n.mac not in taken:
                        mac = n.mac
                        reusable.remove(n)
                        break
            if mac is None:
                mac = derived_mac(self.provider.stack.id, address, i, taken)
            taken.add(mac)
            out.append((entry, mac))
        return out

    def _check_bridges(self, entries: Sequence[NetworkEntry]) -> None:
        if not self.provider.here.local:
            return  # libvirt reports a missing bridge when the domain starts
        for entry in entries:
            if not Path("/sys/class/net", entry.ifname, "bridge").is_dir():
                raise ProviderError(f"bridge {entry.ifname!r} does not exist on this host")

    def _data_disk(self, volume_id: str, target: str) -> Disk:
        pool_name, name, fmt = self.provider.volume_ref(volume_id)
        return Disk(target=target, format=fmt, pool=pool_name, volume=name)

    def _start(
        self, dom: libvirt.virDomain, address: str, console_path: str | None, ready: str | None
    ) -> None:
        if console_path and self.provider.here.local:
            console.reset(Path(console_path))
        with failing(f"starting server {address}"):
            dom.create()
        mode = ready or self.settings.default_ready
        if mode != "none":
            self._wait_ready(dom, address, Path(console_path) if console_path else None, mode)

    def _wait_ready(
        self, dom: libvirt.virDomain, address: str, path: Path | None, mode: str
    ) -> None:
        """Until the guest is ready as `mode` says (see `readiness`); a timeout, a stopped
        guest or cloud-init's errors raise, with the last console lines, sanitized."""
        timeout = self.settings.boot_timeout

        def alive() -> bool:
            try:
                return bool(dom.isActive())
            except libvirt.libvirtError:
                return False

        def connected() -> bool:
            try:
                return domain_xml.parse(dom.XMLDesc(0)).agent == "connected"
            except libvirt.libvirtError:
                return False

        def text() -> str:
            return self._console_text(path)

        verdict = readiness.wait(mode, timeout, text, alive, guest_agent.Probe(dom, connected))
        if verdict.failed is None:
            return
        tail = readiness.last_lines(text())
        raise ProviderError(
            f"server {address} {verdict.failed} (ready = {mode!r}; console log {path}"
            + (": ... " + " | ".join(tail) if tail else ", empty")
            + ")"
        )

    def _shutdown(self, dom: libvirt.virDomain) -> None:
        """Graceful ACPI shutdown, then power-off when the guest does not comply in time."""
        try:
            if not dom.isActive():
                return
            dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        except libvirt.libvirtError as exc:
            if not is_error(exc, OPERATION_INVALID + NO_DOMAIN):
                raise ProviderError(f"shutting down {dom.name()}: {exc}") from exc
        deadline = time.monotonic() + self.settings.shutdown_timeout
        while time.monotonic() < deadline:
            try:
                if not dom.isActive():
                    return  # off: no need to wait out the timeout
            except libvirt.libvirtError:
                return
            time.sleep(0.1)
        self._destroy(dom)

    @staticmethod
    def _destroy(dom: libvirt.virDomain) -> None:
        try:
            dom.destroy()
        except libvirt.libvirtError as exc:
            if not is_error(exc, OPERATION_INVALID + NO_DOMAIN):
                raise ProviderError(f"powering off {dom.name()}: {exc}") from exc

    def _remove(self, dom: libvirt.virDomain | None, volumes: Sequence[str]) -> None:
        """Remove a domain (hard) and the given volume ids; whatever is gone already is fine."""
        if dom is not None:
            self._destroy(dom)
            try:
                dom.undefineFlags(UNDEFINE_FLAGS)
            except libvirt.libvirtError as exc:
                if not is_error(exc, NO_DOMAIN):
                    raise ProviderError(f"undefining {dom.name()}: {exc}") from exc
        for vid in volumes:
            pool_name, name = storage.split_id(vid)
            pool = self.provider.pools.find(self.conn, pool_name)
            if pool is not None:
                storage.delete(storage.lookup(pool, name))

    # ---------------------------------------------------------------- create
    def create(self, address: str, inputs: Inputs) -> Observed:
        assert isinstance(inputs, ServerInputs)
        if problems := self.check(address, inputs, None):
            raise ProviderError(problems[0].message)
        with self.provider.on(inputs.host):
            return self._create(address, inputs)

    def _create(self, address: str, inputs: ServerInputs) -> Observed:
        local = self.provider.here.local
        stack = self.provider.stack
        conn = self.conn
        name = self._name(address)
        if self._lookup(name) is not None:
            raise ProviderError(f"a domain named {name} already exists")
        hostname = inputs.hostname or default_hostname(address)
        who = dns_names.owner(stack.id, address)
        dns_names.check(hostname)
        self._check_bridges(inputs.networks)
        nics = self._resolve_nics(address, inputs.networks)
        data_disks, used = [], {"vda"}
        for vid in inputs.volumes:
            target = domain_update.next_target(used)
            used.add(target)
            data_disks.append(self._data_disk(vid, target))
        virt_type = self.provider.virt_type()
        pool = self.provider.pools.get(conn, None)
        seed_name = volume_name(stack.id, address, "raw", "seed")
        root_name = volume_name(stack.id, address, "qcow2", "root")
        machine = inputs.machine or self.settings.machine
        cdrom_bus, cdrom_dev = ("ide", "hdc") if machine == "pc" else ("scsi", "sda")
        # the instance-id is the domain's uuid: new exactly when the server is (re)created
        dom_uuid = str(uuid.uuid4())
        made: list[str] = []
        dom = None
        try:
            # leftovers of an interrupted create carry this server's names: they are ours
            self._remove(None, [f"{pool.name}/{root_name}", f"{pool.name}/{seed_name}"])
            if inputs.image is not None:
                path, fmt, size = self.provider.backing_image(inputs.image)
                if inputs.root_gib is not None:
                    if inputs.root_gib * GiB < size:
                        raise ProviderError(
                            f"root_gib {inputs.root_gib} is smaller than image {inputs.image} "
                            f"({size / GiB:.1f} GiB virtual size)"
                        )
                    size = inputs.root_gib * GiB
                xml = storage.volume_xml(root_name, size, "qcow2", backing=(path, fmt))
                storage.create(pool, xml, f"root disk {root_name}")
                made.append(f"{pool.name}/{root_name}")
                root = Disk("vda", "qcow2", pool.name, root_name)
            else:
                assert inputs.boot_volume is not None
                root = self._data_disk(inputs.boot_volume, "vda")
            iso = seed.build_seed(
                dom_uuid, hostname, inputs.user_data, inputs.ssh_keys, _nic_configs(nics)
            )
            seed_vol = storage.create(
                pool, storage.volume_xml(seed_name, len(iso), "raw", mode="0644"), "seed ISO"
            )
            made.append(f"{pool.name}/{seed_name}")
            storage.upload(conn, seed_vol, [iso], len(iso))
            record = ServerRecord(
                hostname=hostname,
                image=inputs.image,
                boot_volume=inputs.boot_volume,
                root=root.id or "",
                seed=f"{pool.name}/{seed_name}",
                nics=tuple(domain_update.nic_record(e, m) for e, m in nics),
                volumes=tuple(inputs.volumes),
                user_data=inputs.user_data is not None,
            )
            console_path = self._console_path(name)
            if local:
                console.reset(console_path)
            spec = DomainSpec(
                name=name,
                uuid=dom_uuid,
                virt_type=virt_type,
                machine=machine,
                vcpus=inputs.vcpus,
                memory_mib=inputs.memory_mib,
                owner=OwnerTag(stack.name, stack.id, address),
                record=record,
                disks=[
                    root,
                    Disk(cdrom_dev, "raw", pool.name, seed_name, device="cdrom", bus=cdrom_bus),
                    *data_disks,
                ],
                nics=[Nic(e.ifname, m, nic_filter.tap_name(dom_uuid, m)) for e, m in nics],
                console_path=str(console_path),
            )
            with failing(f"defining domain {name}"):
                dom = conn.defineXML(domain_xml.build(spec))
            # filtered before the guest sends its first frame (on another host by its own
            # ruleset, applied there over SSH)
            members = nic_filter.sync(stack.id, address, dom, record.nics, self.provider.here)
            if inputs.power_state == "running":
                self._start(dom, address, str(console_path), inputs.ready)
                nic_filter.learn_leases(members)
            # the names are served by the network's dnsmasq on this machine, the network node,
            # wherever the guest runs (a spanning network's guests lease from it too)
            dns_names.register(who, hostname, spec.nics, record.nics)
            return self._observe(dom)
        except BaseException as exc:
            try:
                dns_names.unregister(who, [Nic(e.ifname, m) for e, m in nics])
                self._remove(dom, made)
                nic_filter.drop(stack.id, address)
            except Exception as cleanup:
                raise CleanupUnproven(f"{exc}; cleaning up failed too: {cleanup}") from exc
            raise

    # ---------------------------------------------------------------- read
    def _observe(
        self,
        dom: libvirt.virDomain,
        parsed: ParsedDomain | None = None,
        state: int | None = None,
        persistent: ParsedDomain | None = None,
        leases: addresses.Leases | None = None,
        members: list[facts.MemberRecord] | None = None,
    ) -> Observed:
        """The server as it runs (`parsed`: its live XML) and, for a running domain, the inputs
        its persistent definition holds (`persistent`, read here when `parsed` is not given).
        `leases`: a read's shared lease lookups (each network's lease file read once)."""
        if parsed is None:
            parsed = domain_xml.parse(dom.XMLDesc(0))
            if persistent is None and dom.isActive():
                persistent = domain_xml.parse(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        if state is None:
            state = dom.state(0)[0]
        record = parsed.record
        owner = parsed.owner
        filtered = (
            nic_filter.filtered_macs(
                self.provider.stack.id,
                owner.address,
                members,
                nic_filter.host_of(self.provider.here),
            )
            if owner is not None
            else frozenset()
        )
        definition = _definition_inputs(parsed, filtered)
        power = _state_name(state)
        local = self.provider.here.local
        running = power == "running"
        ready = console.last_ready(parsed.console_path) if running and local else None
        agent = running and parsed.agent == "connected"
        guest_ips = guest_agent.addresses(dom) if agent else None
        ips_by_mac = addresses.by_mac(
            parsed.nics,
            record.nics if record and running else (),
            guest_ips,
            ready.by_mac() if ready else None,
            # the leases are the network node's (this machine's dnsmasq), wherever the guest is
            (leases or addresses.Leases()) if running else (lambda _b, _m: None),
        )
        ip_map = addresses.by_network(
            parsed.nics, ips_by_mac, lambda bridge: network_label(bridge, True)
        )
        hostname = record.hostname if record else (ready.hostname if ready else None)
        # what the guest calls itself (user-data may have set another name than the record's)
        reported = (guest_agent.hostname(dom) if agent else None) or (
            ready.hostname if ready else None
        )
        inputs: dict[str, Any] = {**definition, "power_state": power}
        if self.provider.here.name is not None:
            inputs["host"] = self.provider.here.name
        if record is not None:
            inputs.update(
                image=record.image,
                boot_volume=record.boot_volume,
                hostname=hostname,
                machine=parsed.machine,
            )
        next_boot = None
        if persistent is not None and state in _ACTIVE:
            next_boot = _definition_inputs(persistent, filtered)
        return Observed(
            id=parsed.uuid,
            inputs=inputs,
            attributes={
                "id": parsed.uuid,
                "name": parsed.name,
                "addresses": ip_map,
                # Heat's first_address: the first address of the first NIC that has one
                "first_address": next((ips[0] for ips in ip_map.values() if ips), None),
                "macs": [n.mac for n in parsed.nics],
                "power_state": power,
                "console_log": parsed.console_path,
                "hostname": reported or hostname,
            },
            next_boot=next_boot,
        )

    def read(self, refs: Sequence[ObjectRef]) -> dict[str, Observed]:
        """Every server, read on its host (the hosts in parallel)."""
        return self.provider.read_by_host(refs, self._read_here)

    def _read_here(self, refs: Sequence[ObjectRef]) -> dict[str, Observed]:
        if not refs:
            return {}
        listings = self.provider.listings
        # one listing, one state query and one XML per domain, whatever the number of servers
        domains = listings.domains(self.conn)
        states = listings.domain_states(self.conn)
        by_uuid = {d.UUIDString().lower(): d for d in domains}
        leases = addresses.Leases()
        members = facts.members()  # once for all servers
        by_name = {d.name(): d for d in domains}
        out = {}
        for ref in refs:
            if ref.id:
                dom = by_uuid.get(ref.id.lower()) or (
                    None if _UUID.fullmatch(ref.id) else by_name.get(ref.id)
                )
            else:
                try:
                    dom = by_name.get(self._name(ref.address))
                except ProviderError:
                    dom = None
            if dom is None:
                continue
            parsed = listings.domain(dom)
            if parsed is None:
                continue  # undefined between the listing and now
            owner = parsed.owner
            if not ref.id and (
                owner is None
                or owner.stack_id != self.provider.stack.id
                or owner.address != ref.address
            ):
                continue  # a domain by that name that is not ours
            state = states.get(dom.UUIDString())
            # only a running domain has a persistent definition apart from the live one
            persistent = listings.persistent_domain(dom) if state in _ACTIVE else None
            try:
                out[ref.address] = self._observe(dom, parsed, state, persistent, leases, members)
            except libvirt.libvirtError as exc:  # its state, for a domain defined meanwhile
                if is_error(exc, NO_DOMAIN):
                    continue
                raise ProviderError(f"reading domain {dom.name()}: {exc}") from exc
        return out

    def present_here(self, id: str) -> bool:
        return self._lookup(id) is not None

    def import_(self, address: str, id: str) -> Observed:
        dom = self._lookup(id)
        if dom is None:
            raise ProviderError(f"no domain {id}")
        try:
            parsed = domain_xml.parse(dom.XMLDesc(0))
            state = dom.state(0)[0]
        except libvirt.libvirtError as exc:
            if is_error(exc, NO_DOMAIN):
                raise ProviderError(f"no domain {id}") from None
            raise ProviderError(f"reading domain {id}: {exc.get_error_message()}") from exc
        obs = self._observe(dom, parsed, state)
        found = self._seed_inputs(parsed)
        if parsed.record is not None:
            found.pop("hostname", None)  # the record's, which the read reports too
        elif found.get("hostname"):
            obs.attributes["hostname"] = found["hostname"]
        obs.inputs.update(found)
        return obs

    def _seed_inputs(self, parsed: ParsedDomain) -> dict[str, Any]:
        """user_data, ssh_keys and hostname as the server's NoCloud seed holds them.

        A domain iacloud made must still have its recorded seed: without it the inputs it was
        made from are lost, and guessing them would plan a replacement (and a new root disk).
        A domain without a record is searched for a cidata cdrom in a pool; with none, nothing
        is known of these fields and they are left out."""
        record = parsed.record
        if record is not None:
            files = self._read_seed(record.seed)
            if isinstance(files, str):
                raise ProviderError(
                    f"cannot import domain {parsed.name}: its NoCloud seed {record.seed} "
                    f"{files}, so its user_data and ssh_keys cannot be recovered"
                )
        else:
            cdroms = [d.id for d in parsed.disks if d.device == "cdrom" and d.id]
            found = (self._read_seed(vid) for vid in cdroms)
            files = next((f for f in found if not isinstance(f, str)), "")
            if isinstance(files, str):
                return {}
        hostname, keys = seed.parse_meta_data((files.meta_data or b"").decode(errors="replace"))
        out: dict[str, Any] = {"ssh_keys": keys, "hostname": hostname}
        raw = files.user_data or b""
        given = record.user_data if record is not None else None
        if given is None:  # not recorded: an empty or generated user-data means none was given
            try:
                generated = seed.user_data(None, keys)
            except ProviderError:
                generated = b""
            given = raw not in (b"", generated)
        with contextlib.suppress(UnicodeDecodeError):  # not text: no input made it, unknown
            out["user_data"] = raw.decode() if given else None
        return out

    def _read_seed(self, volume_id: str) -> seed.SeedFiles | str:
        """The files of a seed volume, or why there are none."""
        try:
            pool_name, name = storage.split_id(volume_id)
        except ProviderError:
            return "is not a volume id"
        pool = self.provider.pools.find(self.conn, pool_name)
        vol = storage.lookup(pool, name) if pool is not None else None
        if pool is None or vol is None:
            return "no longer exists"
        try:
            data = b"".join(storage.download(self.conn, vol, SEED_LIMIT))
        except ProviderError as exc:
            return f"cannot be read ({exc})"
        files = seed.read_seed(data)
        return files if files is not None else "is not an ISO labelled cidata"

    # ---------------------------------------------------------------- update
    def update(
        self, address: str, prior: Observed, inputs: Inputs, changed: frozenset[str]
    ) -> Observed:
        assert isinstance(inputs, ServerInputs)
        before = prior.inputs.get("host")
        if "host" in changed and inputs.host != before:
            self._move(address, prior, inputs)
            changed = changed - {"host"}
            if not changed:
                with self.provider.on(inputs.host):
                    dom = self._lookup(prior.id)
                    if dom is None:
                        raise ProviderError(
                            f"server {address} is not on {inputs.host} after moving"
                        )
                    return self._observe(dom)
            before = inputs.host
        with self.provider.on(before):
            return self._update(address, prior, inputs, changed)

    def _move(self, address: str, prior: Observed, inputs: ServerInputs) -> None:
        """Migrate the server, running or stopped, to `inputs.host` (see `migration`)."""
        source, target = (
            self.provider.host(prior.inputs.get("host")),
            self.provider.host(inputs.host),
        )
        if source.name is None or target.name is None:
            raise ProviderError("migration moves a server between catalog hosts")
        with self.provider.on(source.name):
            dom = self._lookup(prior.id)
            if dom is None:
                raise ProviderError(f"server {address} ({prior.id}) is not on {source.name}")
            parsed = domain_xml.parse(dom.XMLDesc(0))
            stack_id = self.provider.stack.id
            # its filtered NICs are filtered on the target before the guest runs there
            staged = nic_filter.stage_move(stack_id, address, target)
            console = remote_console.log_path(parsed.name)
            try:
                migration.migrate(dom, parsed, source, target, str(console))
            except BaseException:
                if staged:
                    nic_filter.unstage_move(stack_id, address)
                raise
            if parsed.console_path and Path(parsed.console_path) == console:
                remote_console.remove(source.entry, console)  # the log goes on on the target
        if parsed.record is not None and nic_filter.has_members(stack_id, address):
            # its member records name the new host; the copies staged there go
            with self.provider.on(target.name) as ctx:
                moved = self._lookup(prior.id)
                if moved is not None:
                    nic_filter.sync(stack_id, address, moved, parsed.record.nics, ctx)

    def _update(
        self, address: str, prior: Observed, inputs: Inputs, changed: frozenset[str]
    ) -> Observed:
        assert isinstance(inputs, ServerInputs)
        forbidden = changed & {
            "image", "boot_volume", "user_data", "ssh_keys", "hostname", "machine"
        }  # fmt: skip
        if forbidden:
            raise ProviderError(f"cannot change {', '.join(sorted(forbidden))} in place")
        dom = self._lookup(prior.id)
        if dom is None:
            raise ProviderError(f"server {address} ({prior.id}) no longer exists")
        parsed = domain_xml.parse(dom.XMLDesc(0))
        record = parsed.record
        if record is None or parsed.owner is None:
            raise ProviderError(f"domain {parsed.name} carries no iacloud metadata")
        want_running = inputs.power_state == "running"
        if not want_running and "power_state" in changed:
            self._shutdown(dom)  # first: later steps then need no restart
        if "volumes" in changed:
            record = domain_update.update_volumes(
                dom, parsed, record, inputs.volumes, self._data_disk
            )
        if "networks" in changed:
            self._check_bridges(inputs.networks)
            resolved = self._resolve_nics(address, inputs.networks, record.nics)
            record = domain_update.update_networks(dom, parsed, record, resolved)
        if record != parsed.record:
            domain_update.set_metadata(dom, parsed.owner, record)
        if "networks" in changed:
            nic_filter.sync(self.provider.stack.id, address, dom, record.nics, self.provider.here)
        if "root_gib" in changed and inputs.root_gib is not None:
            # before a restart below, so the guest's next boot sees the larger disk
            domain_update.grow_root(self.conn, self.provider.pools, dom, record, inputs.root_gib)
        if changed & {"vcpus", "memory_mib"}:
            live = domain_xml.parse(dom.XMLDesc(0)) if dom.isActive() else None
            # a restart only when the running domain has other values; a persistent definition
            # that alone differs is redefined, effective from the next boot
            restart = live is not None and (live.vcpus, live.memory_mib) != (
                inputs.vcpus,
                inputs.memory_mib,
            )
            if restart:
                self._shutdown(dom)
            domain_update.redefine(self.conn, dom, inputs.vcpus, inputs.memory_mib)
            if restart and want_running:
                self._start(dom, address, parsed.console_path, inputs.ready)
        if want_running and not dom.isActive():
            self._start(dom, address, parsed.console_path, inputs.ready)
        # DNS names: dropped for detached NICs, (re)registered for the others
        who = dns_names.owner(self.provider.stack.id, address)
        now = domain_xml.parse(dom.XMLDesc(0)).nics
        dns_names.unregister(who, [n for n in parsed.nics if n not in now])
        dns_names.register(who, record.hostname, now, record.nics)
        return self._observe(dom)

    # ---------------------------------------------------------------- delete
    def delete(self, address: str, prior: Observed) -> None:
        with self.provider.on(prior.inputs.get("host")):
            self._delete(address, prior)

    def _delete(self, address: str, prior: Observed) -> None:
        stack = self.provider.stack
        pool_name = self.provider.pools.default
        own = [
            f"{pool_name}/{volume_name(stack.id, address, 'qcow2', 'root')}",
            f"{pool_name}/{volume_name(stack.id, address, 'raw', 'seed')}",
        ]
        if prior.id and "/" in prior.id:
            # an orphaned root or seed volume listed by list_tagged
            self._remove(None, [prior.id])
            return
        dom = self._lookup(prior.id) if prior.id else None
        if dom is None:
            dom = self._lookup(self._name(address))
            if dom is not None:
                owner = domain_xml.parse(dom.XMLDesc(0)).owner
                if owner is None or owner.stack_id != stack.id or owner.address != address:
                    dom = None
        console_path = None
        if dom is not None:
            parsed = domain_xml.parse(dom.XMLDesc(0))
            console_path = parsed.console_path
            if parsed.record is not None:
                own = [v for v in (parsed.record.seed, parsed.record.root) if v]
                if parsed.record.boot_volume:
                    own = [parsed.record.seed]  # a boot volume belongs to its own resource
            dns_names.unregister(dns_names.owner(stack.id, address), parsed.nics)
            if self._outliving(parsed, own):
                # a graceful stop first, so a volume that outlives the server is clean
                self._shutdown(dom)
            # else nothing worth a clean shutdown survives: powered off at once (as Nova's
            # delete does), by _remove
        self._remove(dom, own)
        nic_filter.drop(stack.id, address)
        if console_path and Path(console_path).parent == self._console_path("x").parent:
            if self.provider.here.local:
                Path(console_path).unlink(missing_ok=True)
            else:
                remote_console.remove(self.provider.here.entry, Path(console_path))

    def _outliving(self, parsed: ParsedDomain, own: Sequence[str]) -> list[str]:
        """Disks of the domain that outlive it: neither its own (root, seed) nor deleted in
        this run (`Provider.run`). A disk attached by path, not as a volume, always does."""
        going = self.provider.run.deleting
        out = []
        for disk in parsed.disks:
            if disk.device != "disk":
                continue
            ref = disk.id or disk.path or disk.target
            if ref not in own and ref not in going:
                out.append(ref)
        return out

    # ---------------------------------------------------------------- orphans
    def list_tagged(self) -> list[TaggedObject]:
        """Tagged domains and disks on every host (the hosts in parallel)."""
        return self.provider.on_every_host(self._tagged_here)

    def _tagged_here(self) -> list[TaggedObject]:
        out = []
        listings = self.provider.listings
        for dom in listings.domains(self.conn):
            parsed = listings.domain(dom)
            if parsed is None:
                continue  # undefined meanwhile
            owner = parsed.owner
            out.append(
                TaggedObject(
                    self.type_name,
                    dom.UUIDString(),
                    owner.stack_id if owner else None,
                    owner.address if owner else None,
                    stack=owner.stack or None if owner else None,
                )
            )
        for pool, name in self.pool_volumes():
            tag = parse_volume_name(name)
            if tag is not None and tag.role in ("root", "seed"):
                out.append(
                    TaggedObject(
                        self.type_name,
                        f"{pool.name}/{name}",
                        self.tag_stack_id(tag.prefix),
                        tag.address,
                        part=tag.role,
                    )
                )
        return out
