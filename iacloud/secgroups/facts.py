"""Security groups and their members as host-local files: what the ruleset is built from.

    <root>/groups/<group id>.json      {"id", "stack_id", "address", "rules": [...]}
    <root>/members/<name>.json         {"source", "stack_id", "address", "bridge", "mac",
                                        "device", "ips", "groups", "host", "ssh"}
    <root>/hosts/<host>.json           {"name", "ssh"}: a catalog host holding our tables

A group is written by the netlink provider's `security_group`; a member by whatever owns a
NIC: the libvirt provider for a server NIC (its tap, MAC, the port's address if any, its
groups), the netlink provider for a `port` with groups (its MAC and address, and the device
that takes it, if one is named). Records of one NIC (same bridge and MAC) are merged when
the ruleset is built: groups and addresses unite, the device is whichever names one. A NIC
with groups but no known address is allowed the address its DHCP lease holds when the
ruleset is built (`iacloud.netfacts`), else only DHCP itself.

A member's `host` is the site catalog host its NIC is on (None: this machine), with the SSH
target that reaches the host's network side (`ssh`): each host gets the ruleset of its own
members. While a server migrates, a copy of each of its records (source "moving") names the
host it goes to, so that host filters the NIC from the guest's first frame there.
A host file says our tables were applied there, with the SSH target to reach it, so
the tables are removed when the host's last member goes, even after every member record that
named the target is gone.

<root> is `$IACLOUD_SECGROUPS_DIR`, else /run/iacloud/secgroups: like the nft tables it
describes, it does not outlive a reboot. One host-wide file lock (`<root>/.lock`) serializes
every change and rebuild, across threads and processes; files are written by rename.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from iacloud import netfacts
from iacloud.secgroups.compiler import Group, Member
from iacloud.secgroups.rules import GROUP_ID, Rule
from iacloud.site_hosts import HOST_NAME, SshTarget
from iacloud.validators import is_interface_name, is_unicast_mac

DEFAULT_ROOT = "/run/iacloud/secgroups"


def root() -> Path:
    return Path(os.environ.get("IACLOUD_SECGROUPS_DIR") or DEFAULT_ROOT)


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """The host-wide lock around a change of the facts and the rebuild that follows."""
    d = root()
    d.mkdir(parents=True, exist_ok=True, mode=0o755)
    with open(d / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---- groups --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupRecord:
    id: str
    stack_id: str | None
    address: str | None
    rules: tuple[Rule, ...]


def _group_path(group_id: str) -> Path:
    if not GROUP_ID.fullmatch(group_id):
        raise ValueError(f"{group_id!r} is not a security group id")
    return root() / "groups" / f"{group_id}.json"


def group_id(stack_id: str, address: str) -> str:
    return "sg-" + hashlib.sha256(f"{stack_id}\0{address}".encode()).hexdigest()[:10]


def write_group(record: GroupRecord) -> None:
    _write(
        _group_path(record.id),
        {
            "id": record.id,
            "stack_id": record.stack_id,
            "address": record.address,
            "rules": [r.model_dump(mode="json") for r in record.rules],
        },
    )


def remove_group(group_id: str) -> None:
    _group_path(group_id).unlink(missing_ok=True)


def read_group(group_id: str) -> GroupRecord | None:
    try:
        data = _read(_group_path(group_id))
    except ValueError:
        return None
    return _group(data) if data else None


def _group(data: dict[str, Any]) -> GroupRecord | None:
    try:
        rules = tuple(Rule.model_validate(r) for r in data.get("rules") or [])
        gid = data["id"]
    except (ValidationError, KeyError, TypeError):
        return None  # damaged: reads as absent
    if not isinstance(gid, str) or not GROUP_ID.fullmatch(gid):
        return None
    return GroupRecord(gid, data.get("stack_id"), data.get("address"), rules)


def groups() -> list[GroupRecord]:
    d = root() / "groups"
    if not d.is_dir():
        return []
    out = []
    for f in sorted(d.glob("sg-*.json")):
        data = _read(f)
        rec = _group(data) if data else None
        if rec is not None and f.name == f"{rec.id}.json":
            out.append(rec)
    return out


# ---- members -------------------------------------------------------------------------------


MOVING = "moving"  # a migrating server's records, copied with the host it goes to
SOURCES = ("server", "port", MOVING)


@dataclass(frozen=True)
class MemberRecord:
    source: str  # SOURCES
    stack_id: str
    address: str
    bridge: str
    mac: str
    device: str | None
    ips: tuple[str, ...]
    groups: tuple[str, ...]
    host: str | None = None  # the catalog host the NIC is on; None: this machine
    ssh: SshTarget | None = None  # how the host's network side is reached (with `host`)

    @property
    def name(self) -> str:
        key = f"{self.source}\0{self.stack_id}\0{self.address}\0{self.bridge}\0{self.mac}"
        return f"{self.source}-{hashlib.sha256(key.encode()).hexdigest()[:20]}"


def write_member(record: MemberRecord) -> None:
    ssh = record.ssh.model_dump(mode="json") if record.ssh is not None else None
    _write(root() / "members" / f"{record.name}.json", record.__dict__ | {"ssh": ssh})


def remove_members(source: str, stack_id: str, address: str) -> None:
    for rec in members():
        if (rec.source, rec.stack_id, rec.address) == (source, stack_id, address):
            (root() / "members" / f"{rec.name}.json").unlink(missing_ok=True)


def _member(data: dict[str, Any]) -> MemberRecord | None:
    try:
        rec = MemberRecord(
            source=str(data["source"]),
            stack_id=str(data["stack_id"]),
            address=str(data["address"]),
            bridge=str(data["bridge"]),
            mac=str(data["mac"]),
            device=data.get("device"),
            ips=tuple(data.get("ips") or ()),
            groups=tuple(data.get("groups") or ()),
            host=data.get("host"),
            ssh=None if data.get("ssh") is None else SshTarget.model_validate(data["ssh"]),
        )
    except (KeyError, TypeError, ValidationError):
        return None
    valid = (
        rec.source in SOURCES
        and is_interface_name(rec.bridge)
        and is_unicast_mac(rec.mac)
        and (rec.device is None or is_interface_name(rec.device))
        and all(isinstance(g, str) and GROUP_ID.fullmatch(g) for g in rec.groups)
        and all(_ipv4(ip) for ip in rec.ips)
        and (rec.host is None) == (rec.ssh is None)
        and (rec.host is None or (isinstance(rec.host, str) and HOST_NAME.fullmatch(rec.host)))
    )
    return rec if valid else None


def _ipv4(value: object) -> bool:
    try:
        return isinstance(value, str) and str(ipaddress.IPv4Address(value)) == value
    except ValueError:
        return False


def members() -> list[MemberRecord]:
    d = root() / "members"
    if not d.is_dir():
        return []
    out = []
    for f in sorted(d.glob("*.json")):
        data = _read(f)
        rec = _member(data) if data else None
        if rec is not None and f.name == f"{rec.name}.json":
            out.append(rec)
    return out


def merged(records: list[MemberRecord]) -> list[Member]:
    """One `Member` per NIC (bridge, MAC) that has groups and a device to filter, on the host
    its device is on; a NIC migrating is also a member on the host it goes to."""
    by_nic: dict[tuple[str, str], list[MemberRecord]] = {}
    for rec in records:
        by_nic.setdefault((rec.bridge, rec.mac), []).append(rec)
    leases: dict[str, dict[str, str]] = {}
    out = []
    for (bridge, mac), recs in sorted(by_nic.items()):
        groups_ = sorted({g for r in recs for g in r.groups})
        # the record naming the device (the server's) knows where the NIC is; a port's does
        # not. A migrating NIC is also on the host its "moving" record names.
        places: dict[str | None, str] = {}
        for r in sorted(recs, key=lambda r: r.source == MOVING):
            if r.device and (r.source == MOVING or not places):
                places.setdefault(r.host, r.device)
        if not groups_ or not places:
            continue
        ips = {ip for r in recs for ip in r.ips}
        if not ips:
            if bridge not in leases:
                facts = netfacts.read(bridge)
                leases[bridge] = netfacts.leases(facts) if facts else {}
            if mac in leases[bridge]:
                ips.add(leases[bridge][mac])
        for host, device in places.items():
            out.append(Member(bridge, mac, device, tuple(sorted(ips)), tuple(groups_), host))
    return out


# ---- hosts ---------------------------------------------------------------------------------


def _host_path(name: str) -> Path:
    if not HOST_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a host name")
    return root() / "hosts" / f"{name}.json"


def targets(records: list[MemberRecord]) -> dict[str, SshTarget]:
    """The SSH target of every host that holds our tables or has a member (a member's target
    wins: it is the site catalog's of the latest write)."""
    out = applied()
    for rec in records:
        if rec.host is not None and rec.ssh is not None:
            out[rec.host] = rec.ssh
    return out


def applied() -> dict[str, SshTarget]:
    """The catalog hosts our tables were applied on, with their SSH targets."""
    d = root() / "hosts"
    out: dict[str, SshTarget] = {}
    if not d.is_dir():
        return out
    for f in sorted(d.glob("*.json")):
        data = _read(f)
        try:
            name = str((data or {})["name"])
            ssh = SshTarget.model_validate((data or {})["ssh"])
        except (KeyError, TypeError, ValidationError):
            continue
        if HOST_NAME.fullmatch(name) and f.name == f"{name}.json":
            out[name] = ssh
    return out


def mark_applied(name: str, ssh: SshTarget) -> None:
    _write(_host_path(name), {"name": name, "ssh": ssh.model_dump(mode="json")})


def unmark_applied(name: str) -> None:
    _host_path(name).unlink(missing_ok=True)


def group_map(records: list[GroupRecord]) -> dict[str, Group]:
    return {r.id: Group(r.id, r.rules) for r in records}
