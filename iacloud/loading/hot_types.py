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
from dataclasses import dataclass, field
from typing import Any

import yaml

from iacloud.errors import Diagnostic
from iacloud.expressions import FUNCTIONS
from iacloud.loading.hot_functions import HotError, walk_functions

GROUP = "OS::Heat::ResourceGroup"
_NOT_HOST = re.compile(r"[^A-Za-z0-9.-]+")
INDEX = "%index%"


@dataclass
class Entry:
    """One HOT resource on its way to ours; `into` names the resource a merged one lives in."""

    name: str
    hot_type: str
    properties: dict[str, Any]
    depends_on: list[str]
    count: Any = None  # a ResourceGroup's count
    out: dict[str, Any] | None = None
    into: str | None = None
    inline: Any = None  # a software config: what get_resource of it stands for


@dataclass
class Translation:
    """What the types make of a template's resources."""

    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[tuple[str, HotError]] = field(default_factory=list)  # (address, error)
    failed: set[str] = field(default_factory=set)  # resources not mapped (reported)
    # (HOT resource, HOT property, our field): where a diagnostic about our field points
    renames: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[tuple[str, str, str]] = field(default_factory=list)  # (address, field, text)
    entries: dict[str, Entry] = field(default_factory=dict)


def _ref(value: Any) -> str | None:
    """The resource a `{get_resource: NAME}` names, else None."""
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("get_resource"), str):
        return str(value["get_resource"])
    return None


class _Mapper:
    def __init__(self, raw: dict[str, Entry], types: frozenset[str]) -> None:
        self.entries = raw
        self.types = types  # our resource types installed
        self.result = Translation(entries=raw)
        self.net_names: dict[str, str] = {}  # a Net's `name` property -> its resource

    # -- helpers ---------------------------------------------------------------------------
    def note(self, entry: Entry, prop: str, text: str) -> None:
        self.result.notes.append((f"resources.{entry.name}", prop, text))

    def target(self, value: Any, path: str, *kinds: str) -> str:
        """The template resource a property names with get_resource, of one of `kinds`."""
        name = _ref(value)
        if name is None:
            if isinstance(value, (str, dict)):
                raise HotError(
                    f"expected {{get_resource: NAME}} of a {' or '.join(kinds)} in this "
                    f"template, found {value!r}",
                    path,
                    "things that exist outside the template (by name or id) come from the "
                    "site catalog, which iacloud does not have yet",
                )
            raise HotError(f"expected {{get_resource: NAME}}, found {value!r}", path)
        entry = self.entries.get(name)
        if entry is None:
            raise HotError(f"reference to unknown resource {name!r}", path)
        if entry.hot_type not in kinds:
            raise HotError(f"{name!r} is a {entry.hot_type}, expected a {' or '.join(kinds)}", path)
        return name

    def ref(self, value: Any, path: str, *kinds: str) -> Any:
        """`{get_resource: NAME}` of one of `kinds`, also when chosen by `if`."""
        if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("if"), list):
            cond, *branches = value["if"]
            return {"if": [cond, *(self.ref(b, path, *kinds) for b in branches)]}
        return {"get_resource": self.target(value, path, *kinds)}

    def take(
        self,
        entry: Entry,
        known: dict[str, Callable[[Any], None] | str | None],
        harmless: tuple[str, ...] = (),
    ) -> None:
        """Hand each property to its handler; harmless ones become notes, others errors."""
        for key, value in entry.properties.items():
            if value is None:
                continue
            if key in known:
                action = known[key]
                if callable(action):
                    action(value)
                elif isinstance(action, str):
                    assert entry.out is not None
                    entry.out[action] = value
                    self.result.renames.append((entry.name, key, action))
            elif key in harmless or key in ("name", "description", "tags", "metadata"):
                self.note(entry, key, f"'{key}' is accepted and has no effect")
            else:
                supported = ", ".join(sorted(known))
                raise HotError(
                    f"property '{key}' of {entry.hot_type} is not supported",
                    key,
                    f"supported: {supported}",
                )

    # -- per type --------------------------------------------------------------------------
    def server(self, e: Entry) -> None:
        out = e.out = {"type": "server"}
        networks: list[Any] = []
        fmt = e.properties.get("user_data_format")

        def image(v: Any) -> None:
            out["image"] = self.ref(v, "image", "OS::Glance::WebImage")

        def key_name(v: Any) -> None:
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
            raise HotError(
                f"flavor {v!r}: flavors come from the site catalog, which iacloud does not "
                "have yet",
                "flavor",
                "leave flavor out (1 vCPU, 256 MiB) until the site catalog is available",
            )

        def block_devices(v: Any) -> None:
            self.block_devices(e, v, out)

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
        extra = set(item) - {"network", "port", "fixed_ip", "subnet", "uuid", "tag"}
        if extra:
            raise HotError(f"'{sorted(extra)[0]}' in a server's networks is not supported", path)
        if "port" in item:
            if set(item) - {"port", "tag"}:
                raise HotError("a network entry with a port takes nothing else", path)
            return {"port": {"get_resource": self.target(item["port"], path, "OS::Neutron::Port")}}
        net_value = item.get("network", item.get("uuid"))
        if net_value is not None and "fixed_ip" not in item:
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
            return {"port": {"get_resource": f"{port}[%index%]" if e.count is not None else port}}
        return {"network": {"get_resource": net}}

    def net(self, e: Entry) -> None:
        e.out = {"type": "network"}

        def admin_state_up(v: Any) -> None:
            if v is not True:
                raise HotError("admin_state_up false is not supported", "admin_state_up")

        def name(v: Any) -> None:
            if isinstance(v, str):
                self.net_names[v] = e.name
            self.note(e, "name", "the network is named after its resource in iacloud")

        def value_specs(v: Any) -> None:
            if not isinstance(v, dict) or set(v) - {"router:external"}:
                raise HotError("value_specs: only 'router:external' is supported", "value_specs")
            if "router:external" in v:
                e.out["external"] = v["router:external"]  # type: ignore[index]

        self.take(
            e,
            {"admin_state_up": admin_state_up, "name": name, "value_specs": value_specs},
            harmless=("shared", "dns_domain", "availability_zone_hints"),
        )

    def subnet(self, e: Entry) -> None:
        net = self.target(
            e.properties.get("network", e.properties.get("network_id")),
            "network",
            "OS::Neutron::Net",
        )
        holder = self.entries[net].out
        if holder is None:
            raise HotError(f"network {net!r} could not be mapped", "network")
        if "cidr" in holder:
            raise HotError(
                f"network {net!r} has a second subnet: iacloud networks have one subnet each",
                "network",
                "make a second OS::Neutron::Net for the second subnet",
            )
        if "gateway_ip" in e.properties and e.properties["gateway_ip"] in (None, ""):
            raise HotError(
                "a subnet without a gateway is not supported: an iacloud network has one",
                "gateway_ip",
                "leave gateway_ip out for the first host address",
            )
        out: dict[str, Any] = {}
        e.out = out

        def ip_version(v: Any) -> None:
            if v not in (4, "4"):
                raise HotError("only IPv4 subnets are supported (ip_version 4)", "ip_version")

        def pools(v: Any) -> None:
            if not isinstance(v, list) or len(v) != 1 or not isinstance(v[0], dict):
                raise HotError(
                    "allocation_pools: exactly one pool {start, end}", "allocation_pools"
                )
            out["dhcp_range"] = {"start": v[0].get("start"), "end": v[0].get("end")}

        self.take(
            e,
            {
                "network": None,
                "network_id": None,
                "cidr": "cidr",
                "ip_version": ip_version,
                "gateway_ip": "gateway",
                "enable_dhcp": "dhcp",
                "dns_nameservers": "dns",
                "allocation_pools": pools,
            },
        )
        if "cidr" not in out:
            raise HotError("a subnet needs a cidr", "cidr")
        holder.update(out)
        e.out = None
        e.into = net

    def router(self, e: Entry) -> None:
        out = e.out = {"type": "router", "networks": []}

        def gateway(v: Any) -> None:
            if not isinstance(v, dict):
                raise HotError("external_gateway_info must be a map", "external_gateway_info")
            extra = set(v) - {"network", "enable_snat", "external_fixed_ips"}
            if extra:
                raise HotError(
                    f"external_gateway_info: '{sorted(extra)[0]}' is not supported",
                    "external_gateway_info",
                )
            net = self.target(v.get("network"), "external_gateway_info.network", "OS::Neutron::Net")
            ips = v.get("external_fixed_ips")
            if not (
                isinstance(ips, list)
                and len(ips) == 1
                and isinstance(ips[0], dict)
                and ips[0].get("ip_address") is not None
            ):
                raise HotError(
                    "external_gateway_info needs external_fixed_ips with one ip_address: "
                    "iacloud routers take a fixed address on the external network",
                    "external_gateway_info",
                )
            ext = {"network": {"get_resource": net}, "ip": ips[0]["ip_address"]}
            if "enable_snat" in v:
                ext["snat"] = v["enable_snat"]
            out["external"] = ext

        def admin_state_up(v: Any) -> None:
            if v is not True:
                raise HotError("admin_state_up false is not supported", "admin_state_up")

        self.take(
            e,
            {"external_gateway_info": gateway, "admin_state_up": admin_state_up},
            harmless=("availability_zone_hints", "l3_agent_ids", "ha", "distributed"),
        )

    def router_interface(self, e: Entry) -> None:
        props = e.properties
        router = self.target(
            props.get("router", props.get("router_id")), "router", "OS::Neutron::Router"
        )
        extra = set(props) - {"router", "router_id", "subnet", "subnet_id"}
        if extra:
            raise HotError(
                f"property '{sorted(extra)[0]}' of OS::Neutron::RouterInterface is not "
                "supported: a router joins a subnet",
                sorted(extra)[0],
            )
        subnet = self.target(
            props.get("subnet", props.get("subnet_id")), "subnet", "OS::Neutron::Subnet"
        )
        net = self.entries[subnet].into
        e.into = router
        holder = self.entries[router].out
        assert holder is not None
        holder["networks"].append({"get_resource": net})

    def port(self, e: Entry) -> None:
        out = e.out = {"type": "port"}

        def network(v: Any) -> None:
            out["network"] = self.ref(v, "network", "OS::Neutron::Net")

        def fixed_ips(v: Any) -> None:
            if not (
                isinstance(v, list)
                and len(v) == 1
                and isinstance(v[0], dict)
                and v[0].get("ip_address") is not None
            ):
                raise HotError(
                    "fixed_ips needs exactly one entry with an ip_address: an iacloud port "
                    "is one fixed address",
                    "fixed_ips",
                )
            out["ip"] = v[0]["ip_address"]
            if "network" not in out and v[0].get("subnet") is not None:
                subnet = self.target(v[0]["subnet"], "fixed_ips[0].subnet", "OS::Neutron::Subnet")
                out["network"] = {"get_resource": self.entries[subnet].into}

        def security_groups(v: Any) -> None:
            if v:
                raise HotError(
                    "security groups are not supported yet",
                    "security_groups",
                    "leave security_groups out until iacloud has security groups",
                )

        def admin_state_up(v: Any) -> None:
            if v is not True:
                raise HotError("admin_state_up false is not supported", "admin_state_up")

        self.take(
            e,
            {
                "network": network,
                "network_id": network,
                "fixed_ips": fixed_ips,
                "mac_address": "mac",
                "security_groups": security_groups,
                "admin_state_up": admin_state_up,
            },
            harmless=("device_owner", "device_id", "dns_name"),
        )
        if "ip" not in out:
            raise HotError(
                "a port needs fixed_ips with an ip_address: iacloud ports are fixed addresses",
                "fixed_ips",
                "or leave the port out and give the server {network: ...}",
            )

    def volume(self, e: Entry) -> None:
        out = e.out = {"type": "volume"}

        def image(v: Any) -> None:
            out["image"] = self.ref(v, "image", "OS::Glance::WebImage")

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

    def member(self, e: Entry, value: Any, path: str, kind: str) -> tuple[str, bool]:
        """A resource of `kind` named by get_resource, or, inside a ResourceGroup of the same
        count, member %index% of a group of them (`{get_attr: [GROUP, resource.%index%]}`):
        (name, per member)."""
        arg = value.get("get_attr") if isinstance(value, dict) and len(value) == 1 else None
        if not (isinstance(arg, list) and len(arg) == 2 and arg[1] == f"resource.{INDEX}"):
            name = self.target(value, path, kind)
            if self.entries[name].count is not None and e.count is not None:
                raise HotError(f"name the member: {{get_attr: [{name}, resource.%index%]}}", path)
            return name, False
        name = self.target({"get_resource": arg[0]}, path, kind)
        group = self.entries[name]
        if e.count is None or group.count is None:
            raise HotError(f"resource.%index% of {name!r} needs both to be ResourceGroups", path)
        if group.count != e.count:
            raise HotError(
                f"the group {name!r} and this one must have the same count",
                path,
                "give both the same count (the same parameter)",
            )
        return name, True

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
        if referenced(data) or _has_function(data):
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
    "OS::Neutron::Port",
    "OS::Cinder::Volume",
    "OS::Cinder::VolumeSnapshot",
    "OS::Nova::Server",
    "OS::Cinder::VolumeAttachment",
)
PENDING = {
    "OS::Neutron::SecurityGroup": "security groups",
    "OS::Neutron::SecurityGroupRule": "security groups",
    "OS::Neutron::FloatingIP": "floating IPs",
    "OS::Neutron::FloatingIPAssociation": "floating IPs",
}


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


def referenced(value: Any) -> set[str]:
    """The resource names a raw value refers to with get_resource / get_attr."""
    found: set[str] = set()

    def visit(key: str, arg: Any, where: str) -> Any:
        name = arg if key == "get_resource" else (arg[0] if isinstance(arg, list) and arg else None)
        if isinstance(name, str):
            found.add(name.split("[", 1)[0])
        return {key: arg}

    walk_functions(value, visit)
    return found


def _has_function(value: Any) -> bool:
    if isinstance(value, dict):
        if len(value) == 1 and next(iter(value)) in FUNCTIONS:
            return True
        return any(_has_function(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_function(v) for v in value)
    return False


def redirect(raw: dict[str, Entry], name: str) -> str:
    entry = raw.get(name)
    return entry.into if entry is not None and entry.into is not None else name


def notes_as_diagnostics(
    notes: list[tuple[str, str, str]], file: str, lines: dict[str, int]
) -> list[Diagnostic]:
    out = []
    for address, prop, text in notes:
        line = lines.get(f"{address}.{prop}") or lines.get(address)
        out.append(Diagnostic(text, file, address, prop or None, None, line))
    return out
