"""The site catalog: what exists on a host before any stack (OpenStack's flavors, Glance images,
Nova key pairs and external Neutron networks), as pydantic models (a leaf: no engine code).

A `site.toml` is found, first match wins, at:
  1. `--site FILE` on a command that loads stacks;
  2. `IACLOUD_SITE` (an empty value means "no catalog");
  3. `/etc/iacloud/site.toml`, then `$XDG_CONFIG_HOME/iacloud/site.toml`
     (`~/.config/iacloud/site.toml`); neither existing means no catalog.
A file named by 1 or 2 must exist. `examples/site.toml` is a complete example (OpenStack's
classic m1.* flavors); nothing here is a hidden default.

    version = 1
    [flavors."m1.small"]   vcpus = 1, memory_mib = 2048, root_gib = 20
    [images.debian-12]     source = "images/debian-12.qcow2" (relative to the site file, an
                           absolute path, file:// or http(s)://), format = "qcow2", sha256 = "..."
    [keypairs.alice]       public_key = "ssh-ed25519 AAAA... alice@laptop"
    [networks.public]      bridge = "br-ex", cidr = "203.0.113.0/24", gateway = "203.0.113.1"

    [hosts.h1]             uri = "qemu+ssh://root@h1/system", ssh = "root@h1", labels = {...}
                           (several hosts, issue #16: `iacloud.site_hosts`; without a [hosts]
                           table the one host is `local`, qemu:///system)

Reading a file (limits, diagnostics naming the site file and field) is
`iacloud.loading.site_file.read_site`; resolving names in stacks is
`iacloud.loading.catalog_refs`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from iacloud.site_hosts import CatalogHost, implicit_hosts
from iacloud.validators import INTERFACE_NAME_RULE, is_interface_name

SITE_ENV = "IACLOUD_SITE"
SYSTEM_SITE = Path("/etc/iacloud/site.toml")
SITE_FORMAT_VERSION = 1
# a catalog name: flavors are named like "m1.small", images like "debian-12" or "ubuntu-22.04"
CATALOG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}")
CATALOG_NAME_RULE = "1 to 63 letters, digits, '_', '.', ':' or '-', starting with a letter or digit"
MAX_ENTRIES = 10_000  # per section: a site lists tens, not millions
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
# "type base64 [comment]", one line: what authorized_keys accepts (options are not for a catalog)
_PUBLIC_KEY = re.compile(r"(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp(256|384|521)|"
                         r"sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) "
                         r"[A-Za-z0-9+/]+={0,3}( [^\x00-\x1f\x7f]*)?")  # fmt: skip

# Heat's custom_constraint names checked against the catalog: constraint -> (section, noun)
CATALOG_CONSTRAINTS = {
    "nova.flavor": ("flavors", "flavor"),
    "glance.image": ("images", "image"),
    "nova.keypair": ("keypairs", "key pair"),
    "neutron.network": ("networks", "network"),
}


class _Model(BaseModel):
    # strict: TOML values carry their types, as in stack files
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Flavor(_Model):
    """A server size (Nova flavor). `root_gib` sizes the server's root disk (at least the
    image's virtual size); without it the root disk is as large as the image."""

    vcpus: int = Field(ge=1, le=64)
    memory_mib: int = Field(ge=32, le=1 << 20)
    root_gib: int | None = Field(None, ge=1, le=65536)
    description: str = ""


class CatalogImage(_Model):
    """An image by name (Glance). Uploaded into the pool on first use and shared by every stack
    that names it; destroying a stack leaves it. The format is stated, never probed; the sha256
    is required (it is the image's identity: another sha256 is another image)."""

    source: str = Field(min_length=1, max_length=4096)
    format: Literal["qcow2", "raw"]
    sha256: str
    description: str = ""

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if any(c in value for c in "\0\r\n"):
            raise ValueError("must not contain NUL or newline characters")
        if "://" in value and value.split("://", 1)[0].lower() not in ("file", "http", "https"):
            raise ValueError("expected a path, a file:// or an http(s):// URL")
        return value

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str) -> str:
        if not _SHA256.fullmatch(value):
            raise ValueError("expected 64 hexadecimal digits (sha256sum's output)")
        return value.lower()


class KeyPair(_Model):
    """A public key by name (Nova key pair): what `key_name` and `ssh_keys` names give a server."""

    public_key: str = Field(max_length=16384)
    description: str = ""

    @field_validator("public_key")
    @classmethod
    def _key(cls, value: str) -> str:
        value = value.strip()
        if not _PUBLIC_KEY.fullmatch(value):
            raise ValueError(
                "expected one OpenSSH public key line: 'ssh-ed25519 AAAA... comment' "
                "(ssh-rsa, ssh-ed25519, ecdsa-sha2-nistp256/384/521, sk-... keys)"
            )
        return value


class ExternalNetwork(_Model):
    """A network that exists outside every stack (a Neutron external network): a Linux bridge
    the operator made, with its subnet and the outside router's address."""

    bridge: str
    cidr: str
    gateway: str | None = None
    description: str = ""

    @field_validator("bridge")
    @classmethod
    def _bridge(cls, value: str) -> str:
        if not is_interface_name(value):
            raise ValueError(f"{value!r} is not a bridge name ({INTERFACE_NAME_RULE})")
        return value

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        try:
            return str(ipaddress.IPv4Network(value, strict=True))
        except ValueError as exc:
            raise ValueError(f"expected an IPv4 subnet like 203.0.113.0/24: {exc}") from None

    @model_validator(mode="after")
    def _gateway_inside(self) -> ExternalNetwork:
        if self.gateway is not None:
            try:
                gw = ipaddress.IPv4Address(self.gateway)
            except ValueError:
                raise ValueError(f"gateway {self.gateway!r} is not an IPv4 address") from None
            net = ipaddress.IPv4Network(self.cidr)
            if gw not in net or gw in (net.network_address, net.broadcast_address):
                raise ValueError(f"gateway {gw} is not a host address of {net}")
        return self


class SiteFile(_Model):
    """The top level of a site.toml. Sections stay raw tables here: the reader validates each
    entry on its own (`ENTRY_MODELS`), so one bad flavor does not hide the mistakes in another."""

    version: int
    flavors: dict[str, Any] = Field(default_factory=dict, max_length=MAX_ENTRIES)
    images: dict[str, Any] = Field(default_factory=dict, max_length=MAX_ENTRIES)
    keypairs: dict[str, Any] = Field(default_factory=dict, max_length=MAX_ENTRIES)
    networks: dict[str, Any] = Field(default_factory=dict, max_length=MAX_ENTRIES)
    hosts: dict[str, Any] = Field(default_factory=dict, max_length=MAX_ENTRIES)

    @field_validator("version")
    @classmethod
    def _supported(cls, version: int) -> int:
        if version != SITE_FORMAT_VERSION:
            raise ValueError(f"unsupported site file version: expected {SITE_FORMAT_VERSION}")
        return version


ENTRY_MODELS: dict[str, type[BaseModel]] = {
    "flavors": Flavor,
    "images": CatalogImage,
    "keypairs": KeyPair,
    "networks": ExternalNetwork,
    "hosts": CatalogHost,
}


@dataclass(frozen=True)
class SiteCatalog:
    """A loaded site catalog: image sources are absolute (a relative path is resolved against
    the site file's directory) and external networks keyed by name."""

    path: Path
    flavors: dict[str, Flavor] = field(default_factory=dict)
    images: dict[str, CatalogImage] = field(default_factory=dict)
    keypairs: dict[str, KeyPair] = field(default_factory=dict)
    networks: dict[str, ExternalNetwork] = field(default_factory=dict)
    hosts: dict[str, CatalogHost] = field(default_factory=dict)  # as written: may be empty

    def section(self, name: str) -> dict[str, BaseModel]:
        """'flavors', 'images', 'keypairs', 'networks' or 'hosts' by name."""
        return dict(getattr(self, name))

    def compute_hosts(self) -> dict[str, CatalogHost]:
        """The hosts servers run on: the [hosts] table, or the implicit `local` one."""
        return dict(self.hosts) if self.hosts else implicit_hosts()


def site_file_candidates() -> list[Path]:
    """The default locations, in the order they are tried."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return [SYSTEM_SITE, Path(config) / "iacloud" / "site.toml"]


@dataclass(frozen=True)
class SiteChoice:
    """Which site file a command uses and why (for messages): path None means no catalog."""

    path: Path | None
    origin: str  # "--site", "IACLOUD_SITE", "default", "none"
    required: bool  # named explicitly: it must exist


def choose_site_file(explicit: Path | None) -> SiteChoice:
    """The site file by precedence: --site, IACLOUD_SITE, then the default locations."""
    if explicit is not None:
        return SiteChoice(Path(explicit), "--site", True)
    env = os.environ.get(SITE_ENV)
    if env is not None:
        return SiteChoice(Path(env) if env else None, SITE_ENV, bool(env))
    for candidate in site_file_candidates():
        if candidate.is_file():
            return SiteChoice(candidate, "default", False)
    return SiteChoice(None, "none", False)


def no_catalog_hint() -> str:
    where = " or ".join(str(p) for p in site_file_candidates())
    return f"give --site FILE, set {SITE_ENV}, or create {where}; see examples/site.toml"
