"""HOT resource types mapped onto iacloud's: each OS::* resource becomes one of our resources,
or is merged into another one (a Subnet is its Net's `cidr`, a RouterInterface an entry of its
Router's `networks`, a VolumeAttachment an entry of its Server's `volumes`). References to a
merged resource are redirected to the one that holds it, and `get_attr` names are translated
(`hot_attributes`).

Properties that would change behaviour and have no equivalent are errors; harmless ones
(names, descriptions, availability zones) are accepted and reported as notes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import yaml

from iacloud.loading.hot_functions import HotError
from iacloud.loading.hot_mapping import (
    GROUP,
    INDEX,
    Entry,
    Translation,
    has_function,
    is_catalog_name,
    notes_as_diagnostics,
    redirect,
    referenced,
)
from iacloud.loading.hot_network import NetworkTypes

_NOT_HOST = re.compile(r"[^A-Za-z0-9.-]+")


class _Mapper(NetworkTypes):
    def server(self, e: Entry) -> None:
        out = e.out = {"type": "server"}
        networks: list[Any] = []
        groups: list[Any] = []
        fmt = e.properties.get("user_data_format")

        def image(v: Any) -> None:
            out["image"] = self.named_or_ref(v, "image", "OS::Glance::WebImage")

        def key_name(v: Any) -> None:
            if is_catalog_name(v):
                out["key_name"] = v  # a key pair of the site catalog
            else:
                out["ssh_keys"] = [self.public_key(v, "key_name")]

        def nets(v: Any) -> None:
            if not isinstance(v, list):
                raise HotError("networks must be a list", "networks")
            for i, item in enumerate(v):
                networks.append(self.server_nic(e, item, f"networks[{i}]"))

        def user_data_format(v: Any) -> None:
            if v not in ("RAW", "SOFTWARE_CONFIG", "HEAT_CFNTOOLS"):
                raise HotError(
                    f"user_data_format {v!r} is not one of RAW, SOFTWARE_CONFIG, HEAT_CFNTOOLS",
                    "user_data_format",
                )
            if v == "SOFTWARE_CONFIG":
                self.note(
                    e,
                    "user_data_format",
                    "SOFTWARE_CONFIG: the config is passed as plain cloud-init user data "
                    "(no software deployments, no os-collect-config)",
                )
            if v == "HEAT_CFNTOOLS":
                self.note(
                    e,
                    "user_data_format",
                    "HEAT_CFNTOOLS: user_data is passed as plain "
                    "cloud-init data, without heat-cfntools",
                )

        def name(v: Any) -> None:
            if not isinstance(v, str):
                out["hostname"] = v
                return
            # as Nova does: a server name becomes a host name with other characters as "-"
            host = INDEX.join(_NOT_HOST.sub("-", part) for part in v.split(INDEX)).strip("-.")
            if host != v:
                self.note(e, "name", f"the host name is {host!r} (from {v!r})")
            if host:
                out["hostname"] = host[:63]

        def flavor(v: Any) -> None:
            if not is_catalog_name(v):
                raise HotError(f"flavor must be a flavor name of the site catalog, found {v!r}",
                               "flavor")  # fmt: skip
            out["flavor"] = v

        def block_devices(v: Any) -> None:
            self.block_devices(e, v, out)

        def security_groups(v: Any) -> None:
            groups[:] = self.group_refs(v, "security_groups")

        def config_drive(v: Any) -> None:
            self.note(e, "config_drive", "every server gets a NoCloud seed drive anyway")

        self.take(
            e,
            {
                "image": image,
                "flavor": flavor,
                "key_name": key_name,
                "networks": nets,
                "user_data": "user_data",
                "user_data_format": user_data_format,
                "name": name,
                "config_drive": config_drive,
                "block_device_mapping": block_devices,
                "block_device_mapping_v2": block_devices,
                "security_groups": security_groups,
            },
            harmless=(
                "availability_zone",
                "scheduler_hints",
                "diskConfig",
                "software_config_transport",
                "user_data_update_policy",
                "image_update_policy",
                "flavor_update_policy",
                "reservation_id",
                "deployment_swift_data",
            ),
        )
        if groups:  # Heat: the groups of the ports the server makes, not of given ports
            for nic in networks:
                if "network" in nic:
                    nic["security_groups"] = list(groups)
                else:
                    implicit = self.result.resources.get(nic.pop("implicit", ""))
                    if implicit is not None:
                        implicit["security_groups"] = list(groups)
        for nic in networks:
            nic.pop("implicit", None)
        if fmt is None and "user_data" in e.properties:
            self.note(e, "user_data", "user_data is passed to cloud-init as it is (RAW)")
        if networks:
            out["networks"] = networks

    def block_devices(self, e: Entry, value: Any, out: dict[str, Any]) -> None:
        """block_device_mapping(_v2): a boot volume (boot_index 0 or device vda: a volume of
        the template, or a new one from `image` of `volume_size` GiB) and data volumes."""
        if not isinstance(value, list):
            raise HotError("block_device_mapping must be a list", "block_device_mapping")
        for i, item in enumerate(value):
            path = f"block_device_mapping[{i}]"
            if not isinstance(item, dict):
                raise HotError("a block device is a map", path)
            extra = set(item) - {
                "boot_index",
                "volume_id",
                "image",
                "image_id",
                "volume_size",
                "device_name",
                "delete_on_termination",
                "device_type",
                "disk_bus",
                "source_type",
                "destination_type",
            }
            if extra:
                raise HotError(f"'{sorted(extra)[0]}' in a block device is not supported", path)
            if item.get("destination_type", "volume") != "volume":
                raise HotError("only volume block devices are supported", path)
            boot = item.get("boot_index") in (0, "0") or item.get("device_name") in (
                "vda",
                "/dev/vda",
            )
            image = item.get("image", item.get("image_id"))
            if item.get("volume_id") is not None:
                ref: Any = {
                    "get_resource": self.target(item["volume_id"], path, "OS::Cinder::Volume")
                }
            elif image is not None and item.get("volume_size") is not None:
                volume = f"{e.name}-disk{i}"
                if volume in self.entries or volume in self.result.resources:
                    raise HotError(f"the implicit volume {volume!r} clashes with a resource", path)
                self.result.resources[volume] = {
                    "type": "volume",
                    "image": {"get_resource": self.target(image, path, "OS::Glance::WebImage")},
                    "size_gib": item["volume_size"],
                    **({"count": e.count} if e.count is not None else {}),
                }
                ref = {"get_resource": f"{volume}[{INDEX}]" if e.count is not None else volume}
            else:
                raise HotError("a block device needs volume_id, or image and volume_size", path)
            if "delete_on_termination" in item:
                self.note(
                    e,
                    "block_device_mapping",
                    "delete_on_termination: volumes are "
                    "resources of their own, deleted with the stack",
                )
            if boot:
                if "boot_volume" in out or "image" in e.properties:
                    raise HotError("a server boots from one image or one volume", path)
                out["boot_volume"] = ref
            else:
                out.setdefault("volumes", []).append(ref)

    def public_key(self, v: Any, path: str) -> Any:
        """A key_name (a KeyPair of the template, possibly chosen by `if`) as its public key."""
        if isinstance(v, dict) and len(v) == 1 and isinstance(v.get("if"), list):
            cond, *branches = v["if"]
            return {"if": [cond, *(self.public_key(b, path) for b in branches)]}
        return {"get_attr": [self.target(v, path, "OS::Nova::KeyPair"), "public_key"]}

    def server_nic(self, e: Entry, item: Any, path: str) -> Any:
        if not isinstance(item, dict):
            raise HotError(f"a network entry must be a map, found {item!r}", path)
        extra = set(item) - {"network", "port", "fixed_ip", "subnet", "uuid", "tag", "floating_ip"}
        if extra:
            raise HotError(f"'{sorted(extra)[0]}' in a server's networks is not supported", path)
        if "port" in item:
            if set(item) - {"port", "tag", "floating_ip"}:
                raise HotError("a network entry with a port takes nothing else", path)
            port_name = self.target(item["port"], path, "OS::Neutron::Port")
            self.associate(item, path, {"get_resource": port_name}, e)
            return {"port": {"get_resource": port_name}}
        if "floating_ip" in item and "fixed_ip" not in item:
            raise HotError(
                "a floating IP reaches a port: give this network entry a fixed_ip (or a port)",
                path,
            )
        net_value = item.get("network", item.get("uuid"))
        if net_value is not None and "fixed_ip" not in item:
            if is_catalog_name(net_value):
                return {"site_network": net_value}  # resolved by the loader (catalog_refs)
            return {"network": self.ref(net_value, path, "OS::Neutron::Net")}
        if net_value is None and "subnet" in item:
            subnet = self.target(item["subnet"], path, "OS::Neutron::Subnet")
            net = self.entries[subnet].into
            if net is None:
                raise HotError(f"subnet {subnet!r} has no network", path)
        else:
            net = self.target(net_value, path, "OS::Neutron::Net")
        if "fixed_ip" in item:
            # Heat makes an implicit port for a fixed address: so do we, as a port resource
            port = f"{e.name}-nic{path[len('networks[') : -1]}"
            if port in self.entries or port in self.result.resources:
                raise HotError(f"the implicit port {port!r} clashes with a resource", path)
            self.result.resources[port] = {
                "type": "port",
                "network": {"get_resource": net},
                "ip": item["fixed_ip"],
                **({"count": e.count} if e.count is not None else {}),
            }
            ref = {"get_resource": f"{port}[%index%]" if e.count is not None else port}
            self.associate(item, path, ref, e)
            return {"port": ref, "implicit": port}
        return {"network": {"get_resource": net}}

    def associate(self, item: dict[str, Any], path: str, port: Any, e: Entry) -> None:
        """A network entry's `floating_ip`: the floating IP reaches this entry's port."""
        if "floating_ip" not in item:
            return
        if e.count is not None:
            raise HotError("floating IPs of servers in a ResourceGroup are not supported", path)
        fip = self.target(item["floating_ip"], f"{path}.floating_ip", "OS::Neutron::FloatingIP")
        holder = self.entries[fip].out
        if holder is None:
            raise HotError(f"floating IP {fip!r} could not be mapped", path)
        if "port" in holder:
            raise HotError(f"floating IP {fip!r} is associated twice", path)
        holder["port"] = port

    def volume(self, e: Entry) -> None:
        out = e.out = {"type": "volume"}

        def image(v: Any) -> None:
            out["image"] = self.named_or_ref(v, "image", "OS::Glance::WebImage")

        def snapshot(v: Any) -> None:
            if "volume_snapshot" not in self.types:
                no("snapshot_id")(v)
            out["snapshot"] = self.ref(v, "snapshot_id", "OS::Cinder::VolumeSnapshot")

        def no(what: str) -> Callable[[Any], None]:
            def refuse(v: Any) -> None:
                raise HotError(
                    f"volumes from a {what} are not supported: iacloud makes volumes from "
                    "images and from volume snapshots of the template (snapshot_id)",
                    what,
                )

            return refuse

        self.take(
            e,
            {
                "size": "size_gib",
                "image": image,
                "snapshot_id": snapshot,
                "source_volid": no("source_volid"),
                "backup_id": no("backup_id"),
            },
            harmless=("availability_zone", "volume_type"),
        )

    def snapshot(self, e: Entry) -> None:
        if "volume_snapshot" not in self.types:
            raise HotError("volume snapshots are not available (no volume_snapshot type)", "")
        e.out = {"type": "volume_snapshot"}
        e.out["volume"] = self.ref(e.properties.get("volume"), "volume", "OS::Cinder::Volume")
        self.take(e, {"volume": None, "force": None})
        if e.properties.get("force") is False:
            self.note(
                e,
                "force",
                "a snapshot of a volume in use is always taken (quiesced "
                "through the guest agent where it runs)",
            )

    def attachment(self, e: Entry) -> None:
        props = e.properties
        extra = set(props) - {"instance_uuid", "volume_id", "mountpoint"}
        if extra:
            raise HotError(f"property '{sorted(extra)[0]}' is not supported", sorted(extra)[0])
        server, s_each = self.member(
            e, props.get("instance_uuid"), "instance_uuid", "OS::Nova::Server"
        )
        volume, v_each = self.member(e, props.get("volume_id"), "volume_id", "OS::Cinder::Volume")
        if e.count is not None and not s_each:
            raise HotError(
                "a ResourceGroup of attachments attaches member %index% of a group of "
                "volumes to member %index% of a group of servers",
                "instance_uuid",
                "instance_uuid: {get_attr: [SERVERS, resource.%index%]}",
            )
        if e.count is None and self.entries[server].count is not None:
            raise HotError(
                "attaching a volume to one member of a ResourceGroup is not supported",
                "instance_uuid",
                "attach to every member with a ResourceGroup of attachments",
            )
        if props.get("mountpoint") is not None:
            self.note(e, "mountpoint", "the device name is chosen by iacloud (vdb, vdc, ...)")
        e.into = server
        holder = self.entries[server].out
        assert holder is not None
        ref = f"{volume}[{INDEX}]" if v_each else volume
        holder.setdefault("volumes", []).append({"get_resource": ref})

    def image(self, e: Entry) -> None:
        out = e.out = {"type": "image"}

        def disk_format(v: Any) -> None:
            if v not in ("qcow2", "raw"):
                raise HotError(f"disk_format {v!r}: iacloud images are qcow2 or raw", "disk_format")
            out["format"] = v

        def container_format(v: Any) -> None:
            if v != "bare":
                raise HotError("container_format must be 'bare'", "container_format")

        def checksum(v: Any) -> None:
            self.note(
                e,
                "checksum",
                "Glance's MD5 checksum is not verified (iacloud checks "
                "sha256, which http(s) locations need)",
            )

        self.take(
            e,
            {
                "location": "source",
                "disk_format": disk_format,
                "container_format": container_format,
                "checksum": checksum,
            },
            harmless=(
                "min_disk",
                "min_ram",
                "is_public",
                "visibility",
                "protected",
                "os_distro",
                "os_version",
                "architecture",
                "owner",
                "extra_properties",
            ),
        )
        if "format" not in out:
            raise HotError(
                "disk_format is required: image formats are never guessed", "disk_format"
            )

    def keypair(self, e: Entry) -> None:
        e.out = {"type": "keypair"}

        def key_type(v: Any) -> None:
            if v != "ssh":
                raise HotError("only ssh key pairs are supported", "type")

        self.take(
            e,
            {
                "public_key": "public_key",
                "save_private_key": "save_private_key",
                "type": key_type,
                "name": "key_name",
            },
            harmless=("user",),
        )

    def random_string(self, e: Entry) -> None:
        out = e.out = {"type": "random_string"}

        def classes(v: Any) -> None:
            if not isinstance(v, list):
                raise HotError("character_classes must be a list", "character_classes")
            out["character_classes"] = v

        def sequences(v: Any) -> None:
            if not isinstance(v, list):
                raise HotError("character_sequences must be a list", "character_sequences")
            out["character_sequences"] = v

        self.take(
            e,
            {
                "length": "length",
                "character_classes": classes,
                "character_sequences": sequences,
                "salt": "salt",
            },
        )

    def software_config(self, e: Entry) -> None:
        """A SoftwareConfig is its `config` text wherever the template names it (a server's
        user_data with user_data_format SOFTWARE_CONFIG): no resource of its own."""
        config = e.properties.get("config")
        if config is None:
            raise HotError("a SoftwareConfig needs its config", "config")
        extra = set(e.properties) - {"config", "group", "inputs", "outputs", "options"}
        if extra:
            raise HotError(f"property '{sorted(extra)[0]}' is not supported", sorted(extra)[0])
        for key in ("inputs", "outputs", "options"):
            if e.properties.get(key):
                self.note(e, key, f"'{key}' is accepted and has no effect (no deployments)")
        e.inline = config

    def cloud_config(self, e: Entry) -> None:
        """A CloudConfig is `#cloud-config` and its map as YAML, wherever the template names
        it; the map must be plain data (functions inside it cannot be rendered ahead)."""
        extra = set(e.properties) - {"cloud_config"}
        if extra:
            raise HotError(f"property '{sorted(extra)[0]}' is not supported", sorted(extra)[0])
        data = e.properties.get("cloud_config") or {}
        if not isinstance(data, dict):
            raise HotError("cloud_config must be a map", "cloud_config")
        if has_function(data):
            raise HotError(
                "functions inside cloud_config are not supported",
                "cloud_config",
                "write the #cloud-config text with str_replace in an OS::Heat::SoftwareConfig",
            )
        e.inline = "#cloud-config\n" + yaml.safe_dump(data, sort_keys=False)

    def none(self, e: Entry) -> None:
        e.out = {"type": "none"}
        if e.properties:
            self.note(e, "", "OS::Heat::None ignores its properties")


HANDLERS: dict[str, Callable[[_Mapper, Entry], None]] = {
    "OS::Nova::Server": _Mapper.server,
    "OS::Nova::KeyPair": _Mapper.keypair,
    "OS::Neutron::Net": _Mapper.net,
    "OS::Neutron::Subnet": _Mapper.subnet,
    "OS::Neutron::Port": _Mapper.port,
    "OS::Neutron::SecurityGroup": _Mapper.security_group,
    "OS::Neutron::FloatingIP": _Mapper.floating_ip,
    "OS::Neutron::FloatingIPAssociation": _Mapper.floating_ip_association,
    "OS::Neutron::Router": _Mapper.router,
    "OS::Neutron::RouterInterface": _Mapper.router_interface,
    "OS::Cinder::Volume": _Mapper.volume,
    "OS::Cinder::VolumeAttachment": _Mapper.attachment,
    "OS::Cinder::VolumeSnapshot": _Mapper.snapshot,
    "OS::Glance::WebImage": _Mapper.image,
    "OS::Heat::RandomString": _Mapper.random_string,
    "OS::Heat::None": _Mapper.none,
    "OS::Heat::SoftwareConfig": _Mapper.software_config,
    "OS::Heat::CloudConfig": _Mapper.cloud_config,
}
SUPPORTED = (*HANDLERS, GROUP)
# handled in this order: what others merge into comes first
_ORDER = (
    "OS::Heat::SoftwareConfig",
    "OS::Heat::CloudConfig",
    "OS::Glance::WebImage",
    "OS::Nova::KeyPair",
    "OS::Heat::RandomString",
    "OS::Heat::None",
    "OS::Neutron::Net",
    "OS::Neutron::Subnet",
    "OS::Neutron::Router",
    "OS::Neutron::RouterInterface",
    "OS::Neutron::SecurityGroup",
    "OS::Neutron::Port",
    "OS::Neutron::FloatingIP",
    "OS::Neutron::FloatingIPAssociation",
    "OS::Cinder::Volume",
    "OS::Cinder::VolumeSnapshot",
    "OS::Nova::Server",
    "OS::Cinder::VolumeAttachment",
)
PENDING: dict[str, str] = {}


def translate(raw: dict[str, Entry], types: frozenset[str]) -> Translation:
    """Every entry mapped (errors collected per resource), then references redirected."""
    mapper = _Mapper(raw, types)
    result = mapper.result
    order = sorted(raw.values(), key=lambda e: _ORDER.index(e.hot_type))
    failed: set[str] = set()
    for entry in order:
        try:
            HANDLERS[entry.hot_type](mapper, entry)
        except HotError as exc:
            result.problems.append((f"resources.{entry.name}", exc))
            failed.add(entry.name)
    for entry in raw.values():
        net = entry.hot_type == "OS::Neutron::Net" and entry.out is not None
        if net and "cidr" not in (entry.out or {}) and entry.name not in failed:
            problem = HotError(
                "the network has no OS::Neutron::Subnet: an iacloud network needs its subnet's cidr"
            )
            result.problems.append((f"resources.{entry.name}", problem))
    mapper.floating_ip_routers()
    result.failed = failed
    for entry in raw.values():
        if entry.out is None or entry.name in failed:
            continue
        out = dict(entry.out)
        if entry.count is not None:
            out["count"] = entry.count
        deps = [
            redirect(raw, d)
            for d in entry.depends_on
            if d not in raw or raw[d].inline is None  # a config is text, not a resource
        ]
        deps = [d for d in dict.fromkeys(deps) if d != entry.name]
        if deps:
            out["depends_on"] = deps
        result.resources[entry.name] = out
    return result


__all__ = [
    "GROUP",
    "HANDLERS",
    "PENDING",
    "SUPPORTED",
    "Entry",
    "notes_as_diagnostics",
    "referenced",
    "translate",
]
