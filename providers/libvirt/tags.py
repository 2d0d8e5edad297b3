"""Ownership tags and object names: how an object on the host says which stack and address own it.

Domains carry the full tag in their `<metadata>`:
    <iacloud:owner xmlns:iacloud="https://iacloud.dev/xmlns/owner/1"
                   stack="NAME" stack_id="ID" address="web[0]"/>
Storage volumes have no free-form metadata, so their *name* is the tag:
    iac-<first 8 characters of the stack id>-<encoded address>[.<role>].<format>
e.g. `iac-3fa2b1c4-base.image.qcow2` (image "base"), `iac-3fa2b1c4-data.1.raw` (volume
"data[1]"), `iac-3fa2b1c4-web.0.root.qcow2` and `iac-3fa2b1c4-web.0.seed.raw` (the root
overlay and NoCloud seed of server "web[0]"), `iac-3fa2b1c4-nightly.snap.qcow2` (volume snapshot
"nightly"). The format suffix is
what the provider reads a volume's format from: formats are never probed from file contents.

Every name built here contains only [A-Za-z0-9_.-]; anything else is refused, never mangled,
so a name can always be parsed back into the address it came from.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator

from iacloud.errors import ProviderError

NS = "https://iacloud.dev/xmlns/owner/1"
NS_PREFIX = "iacloud"
ET.register_namespace(NS_PREFIX, NS)

FORMATS = ("qcow2", "raw")
# images of the site catalog (site_image): named by content, owned by no stack
SITE_VOLUME_PREFIX = "iacsite-"
ROLES = ("image", "root", "seed", "snap")

# an address as the engine writes it: a resource name, optionally with an index
_ADDRESS = re.compile(r"([A-Za-z_][A-Za-z0-9_-]{0,62})(?:\[(\d{1,6})\])?")
# a stack's name in state: a stack file's name, or the HTTP API's '<project>.<stack>'
_STACK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}(?:\.[A-Za-z0-9][A-Za-z0-9_-]{0,62})?")
_VOLUME_NAME = re.compile(
    r"iac-(?P<prefix>[A-Za-z0-9]{1,8})-(?P<name>[A-Za-z_][A-Za-z0-9_-]{0,62})"
    r"(?:\.(?P<index>\d{1,6}))?(?:\.(?P<role>image|root|seed|snap))?\.(?P<format>qcow2|raw)"
)
# a libvirt object name we accept from users (pools, volumes): no path separators, no NUL
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}")


@dataclass(frozen=True)
class OwnerTag:
    """The ownership tag of a domain: the stack and the resource address it belongs to."""

    stack: str
    stack_id: str
    address: str


@dataclass(frozen=True)
class VolumeName:
    """A parsed volume name: whose it is, what it is for, and its format."""

    prefix: str  # the first 8 characters of the owning stack's id
    address: str
    role: str | None  # None: a volume; "image"; "snap": a snapshot; "root", "seed": a server's
    format: str


def check_address(address: str) -> re.Match[str]:
    match = _ADDRESS.fullmatch(address)
    if not match:
        raise ProviderError(f"invalid resource address {address!r}")
    return match


def encode_address(address: str) -> str:
    """'web[0]' -> 'web.0': a dot cannot occur in a resource name, so this is reversible."""
    match = check_address(address)
    name, index = match.group(1), match.group(2)
    return name if index is None else f"{name}.{int(index)}"


def stack_prefix(stack_id: str) -> str:
    """The first 8 letters and digits of the stack id (a uuid's first group)."""
    prefix = re.sub(r"[^A-Za-z0-9]", "", stack_id)[:8]
    if not prefix:
        raise ProviderError(f"stack id {stack_id!r} cannot be used in object names")
    return prefix


def volume_name(stack_id: str, address: str, fmt: str, role: str | None = None) -> str:
    if fmt not in FORMATS:
        raise ProviderError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if role is not None and role not in ROLES:
        raise ProviderError(f"unknown volume role {role!r}")
    parts = [f"iac-{stack_prefix(stack_id)}-{encode_address(address)}"]
    if role:
        parts.append(role)
    parts.append(fmt)
    return ".".join(parts)


def parse_volume_name(name: str) -> VolumeName | None:
    """The tag carried by a volume's name, or None for a volume iacloud did not name."""
    m = _VOLUME_NAME.fullmatch(name)
    if not m:
        return None
    address = m["name"] if m["index"] is None else f"{m['name']}[{int(m['index'])}]"
    return VolumeName(m["prefix"], address, m["role"], m["format"])


def format_of(name: str) -> str | None:
    """A volume's format as its name declares it (`*.qcow2` or `*.raw`), else None."""
    for fmt in FORMATS:
        if name.endswith("." + fmt):
            return fmt
    return None


def domain_name(stack_name: str, stack_id: str, address: str) -> str:
    """'<stack>-<address>-<stack id prefix>', e.g. 'lab-web.0-3fa2b1c4'."""
    if not _STACK_NAME.fullmatch(stack_name):
        raise ProviderError(f"stack name {stack_name!r} cannot be used in a domain name")
    return f"{stack_name}-{encode_address(address)}-{stack_prefix(stack_id)}"


def default_hostname(address: str) -> str:
    """'web[0]' -> 'web-0'; underscores are not valid in host names."""
    match = check_address(address)
    name, index = match.group(1), match.group(2)
    host = name.replace("_", "-").strip("-").lower() or "server"
    if index is not None:
        host = f"{host}-{int(index)}"
    return host[:63].strip("-")


def check_object_name(value: str, what: str) -> str:
    """Refuse a pool or volume name that could escape a directory or break a command line."""
    if not isinstance(value, str) or not _SAFE_NAME.fullmatch(value) or ".." in value:
        raise ProviderError(
            f"invalid {what} {value!r}: use 1-200 characters from A-Z a-z 0-9 _ . + - "
            "(no '/', no '..', not starting with '.' or '-')"
        )
    return value


def _pool_name(value: str) -> str:
    try:
        return check_object_name(value, "pool name")
    except ProviderError as exc:  # pydantic reports ValueError with the field's location
        raise ValueError(str(exc)) from None


PoolName = Annotated[str, AfterValidator(_pool_name)]
"""A pool name checked by `check_object_name`, for input and settings models."""


def owner_element(tag: OwnerTag) -> ET.Element:
    return ET.Element(
        f"{{{NS}}}owner",
        {"stack": tag.stack, "stack_id": tag.stack_id, "address": tag.address},
    )


def find_owner(domain: ET.Element) -> ET.Element | None:
    return domain.find(f"metadata/{{{NS}}}owner")


def parse_owner(domain: ET.Element) -> OwnerTag | None:
    el = find_owner(domain)
    if el is None:
        return None
    stack_id, address = el.get("stack_id"), el.get("address")
    if not stack_id or not address:
        return None
    return OwnerTag(el.get("stack", ""), stack_id, address)
