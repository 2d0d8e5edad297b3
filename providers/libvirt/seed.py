"""The NoCloud seed of a server: an ISO 9660 image labelled `cidata` (built with pycdlib).

Files (Rock Ridge and Joliet names, as cloud-init and the tiny test image read them):
- meta-data: `instance-id`, `local-hostname` and, when ssh_keys are given, `public-keys`
  (NoCloud hands those to cloud-init's ssh module whatever the user-data is);
- user-data: the server's `user_data`, byte for byte and never interpreted; when there is
  no user_data but there are ssh_keys, a `#cloud-config` with `ssh_authorized_keys`;
- network-config: version 2, one entry per NIC matched by MAC (never by name: real guests
  call them ens2, enp1s0, eth0...): DHCP, or for a NIC on a fixed port its static address,
  prefix, default route and DNS servers. Then catch-all entries (name en* and eth*, DHCP),
  which netplan renders after the MAC entries (networkd takes the first .network file that
  matches, in name order: nicN before zz-hotplug-*), so a NIC hot-plugged into the running
  guest later is configured by networkd the moment it appears, with no cloud-init run. Why
  not cloud-init's own hotplug support: it needs cloud-init >= 22.1 with the hotplug udev
  hook installed and enabled by user-data (`updates: network: when: [hotplug]`) and it
  re-renders the whole network configuration from the datasource on every event, which a
  NoCloud seed (fixed at create) cannot update. The catch-all needs nothing from the image
  but netplan (Debian, Ubuntu); where cloud-init renders network-config otherwise, the MAC
  entries still apply and a hot-plugged NIC is left to the image's own defaults.

Keys and MACs are written as JSON strings (valid YAML) so no value can break the document.

`read_seed` opens such an ISO again (for import: the seed is where user_data and ssh_keys
live on the host) and `parse_meta_data` reads back the meta-data written here; both read,
never run or interpret, what they find.
"""

from __future__ import annotations

import io
import ipaddress
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pycdlib

from iacloud.errors import ProviderError

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(\.{_LABEL})*")
_INSTANCE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def check_hostname(value: str) -> str:
    if not _HOSTNAME.fullmatch(value):
        raise ProviderError(f"invalid hostname {value!r}: letters, digits, '-' and '.' only")
    return value


def check_ssh_key(key: str) -> str:
    if not key.strip() or any(c in key for c in "\0\r\n"):
        raise ProviderError("an ssh key must be one non-empty line")
    return key.strip()


def meta_data(instance_id: str, hostname: str, ssh_keys: Sequence[str]) -> str:
    if not _INSTANCE_ID.fullmatch(instance_id):
        raise ProviderError(f"invalid instance id {instance_id!r}")
    lines = [f"instance-id: {instance_id}", f"local-hostname: {check_hostname(hostname)}"]
    if ssh_keys:
        lines.append("public-keys:")
        lines += [f"  - {json.dumps(check_ssh_key(k))}" for k in ssh_keys]
    return "\n".join(lines) + "\n"


def user_data(text: str | None, ssh_keys: Sequence[str]) -> bytes:
    if text is not None:
        return text.encode()
    if ssh_keys:
        keys = "".join(f"  - {json.dumps(check_ssh_key(k))}\n" for k in ssh_keys)
        return f"#cloud-config\nssh_authorized_keys:\n{keys}".encode()
    return b""


@dataclass(frozen=True)
class NicConfig:
    """One NIC of network-config: DHCP, or static when `address` ("ip/prefix") is given."""

    mac: str
    address: str | None = None
    gateway: str | None = None
    dns: tuple[str, ...] = ()
    mtu: int | None = None


# NICs hot-plugged later are not in the seed: these catch-alls (after every MAC entry, in the
# order netplan/networkd compare them) give any further en*/eth* NIC DHCP.
HOTPLUG_MATCHES = (("zz-hotplug-en", "en*"), ("zz-hotplug-eth", "eth*"))


def network_config(nics: Sequence[NicConfig | str]) -> str:
    lines = ["version: 2", "ethernets:"]
    for i, nic in enumerate(nics):
        if isinstance(nic, str):
            nic = NicConfig(nic)
        if not _MAC.fullmatch(nic.mac):
            raise ProviderError(f"invalid MAC address {nic.mac!r}")
        lines += [f"  nic{i}:", "    match:", f"      macaddress: {json.dumps(nic.mac)}"]
        if nic.address is None:
            lines.append("    dhcp4: true")
        else:
            _check_cidr(nic.address)
            lines += ["    dhcp4: false", f"    addresses: [{json.dumps(nic.address)}]"]
            if nic.gateway:
                lines += [
                    "    routes:",
                    "      - to: default",
                    f"        via: {json.dumps(str(ipaddress.IPv4Address(nic.gateway)))}",
                ]
            if nic.dns:
                servers = ", ".join(json.dumps(str(ipaddress.IPv4Address(d))) for d in nic.dns)
                lines += ["    nameservers:", f"      addresses: [{servers}]"]
        if nic.mtu:
            lines.append(f"    mtu: {int(nic.mtu)}")
    for name, pattern in HOTPLUG_MATCHES:
        lines += [
            f"  {name}:",
            "    match:",
            f"      name: {json.dumps(pattern)}",
            "    dhcp4: true",
        ]
    return "\n".join(lines) + "\n"


def _check_cidr(value: str) -> None:
    try:
        ipaddress.IPv4Interface(value)
    except ValueError:
        raise ProviderError(f"invalid address {value!r} (expected ip/prefix)") from None
    if "/" not in value:
        raise ProviderError(f"invalid address {value!r} (expected ip/prefix)")


def build_iso(files: dict[str, bytes]) -> bytes:
    """An ISO 9660 image labelled 'cidata' holding `files` (long names via RR and Joliet)."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    try:
        for i, (name, data) in enumerate(sorted(files.items())):
            short = f"/F{i}.;1"  # ISO 9660 level-3 names are upper case; RR/Joliet carry ours
            iso.add_fp(io.BytesIO(data), len(data), short, rr_name=name, joliet_path=f"/{name}")
        out = io.BytesIO()
        iso.write_fp(out)
        return out.getvalue()
    finally:
        iso.close()


def build_seed(
    instance_id: str,
    hostname: str,
    text: str | None,
    ssh_keys: Sequence[str],
    nics: Sequence[NicConfig | str],
) -> bytes:
    return build_iso(
        {
            "meta-data": meta_data(instance_id, hostname, ssh_keys).encode(),
            "user-data": user_data(text, ssh_keys),
            "network-config": network_config(nics).encode(),
        }
    )


@dataclass(frozen=True)
class SeedFiles:
    """What a NoCloud seed holds, as bytes; None for a file it lacks."""

    meta_data: bytes | None
    user_data: bytes | None


def _iso_file(iso: pycdlib.PyCdlib, name: str) -> bytes | None:
    for kind in ("rr_path", "joliet_path"):
        out = io.BytesIO()
        try:
            iso.get_file_from_iso_fp(out, **{kind: f"/{name}"})
        except pycdlib.pycdlibexception.PyCdlibException:
            continue  # no such file, or no Rock Ridge / Joliet names at all
        return out.getvalue()
    return None


def read_seed(data: bytes) -> SeedFiles | None:
    """The files of a seed ISO; None when `data` is no ISO 9660 image labelled cidata."""
    iso = pycdlib.PyCdlib()
    try:
        iso.open_fp(io.BytesIO(data))
    except pycdlib.pycdlibexception.PyCdlibException:
        return None
    try:
        label = iso.pvd.volume_identifier.decode(errors="replace").strip(" \0")
        if label.lower() != "cidata":
            return None
        return SeedFiles(_iso_file(iso, "meta-data"), _iso_file(iso, "user-data"))
    finally:
        iso.close()


def _scalar(text: str) -> str:
    """One YAML scalar as written here (a JSON string) or plain."""
    text = text.strip()
    if text.startswith('"'):
        try:
            value = json.loads(text)
        except ValueError:
            return text
        return value if isinstance(value, str) else text
    return text


def parse_meta_data(text: str) -> tuple[str | None, list[str]]:
    """(local-hostname, public-keys) of a meta-data document as `meta_data` writes it."""
    hostname: str | None = None
    keys: list[str] = []
    in_keys = False
    for line in text.splitlines():
        if in_keys and line.startswith((" ", "\t")):
            item = line.strip()
            if item.startswith("- "):
                keys.append(_scalar(item[2:]))
            continue
        in_keys = False
        key, sep, value = line.partition(":")
        if not sep:
            continue
        if key == "local-hostname":
            hostname = _scalar(value) or None
        elif key == "public-keys" and not value.strip():
            in_keys = True
    return hostname, keys
