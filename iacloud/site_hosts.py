"""Hosts of the site catalog (issue #16): `[hosts.NAME]` entries, each a libvirt URI for the
compute side and an SSH target for the network side, with optional capacity overrides,
allocation ratios, labels and a default pool. A leaf: pydantic models, no engine code.

    [hosts.h1]
    uri = "qemu+ssh://root@h1.example.net/system?keyfile=/etc/iacloud/id_ed25519"
    ssh = { target = "root@h1.example.net", identity = "/etc/iacloud/id_ed25519" }
    pool = "iacloud"
    vcpus = 16                      # capacity overrides (default: what the host reports)
    memory_mib = 65536
    disk_gib = 500
    cpu_allocation_ratio = 4.0      # Nova's defaults
    ram_allocation_ratio = 1.0
    disk_allocation_ratio = 1.0
    reserved_host_memory_mib = 512
    labels = { zone = "a", aggregate = "ssd" }

Everything here ends up in a libvirt URI or an `ssh` argument list, so every value is checked
by full match against a narrow grammar: no shell metacharacters, no option injection (an SSH
target never starts with '-'), URI query parameters from an allow-list. `no_verify=1` (skip
the server's host key or certificate check) needs `lab = true` on the host, so it is never
there by accident. Without a `[hosts]` table there is one implicit host `local`
(qemu:///system), today's behaviour.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

LOCAL_HOST = "local"
LOCAL_URI = "qemu:///system"
SCHEMES = ("qemu", "qemu+ssh", "qemu+libssh2", "qemu+libssh", "qemu+tls", "qemu+tcp", "qemu+unix")
REMOTE_SCHEMES = ("qemu+ssh", "qemu+libssh2", "qemu+libssh", "qemu+tls", "qemu+tcp")
_AUTH_METHOD = "(agent|privkey|password|keyboard-interactive)"
# query parameters of libvirt's remote driver that only name files or choose a mode; the
# ones that run programs (command, netcat, socket, proxy) are never accepted
QUERY_PARAMS: dict[str, re.Pattern[str]] = {
    "keyfile": re.compile(r"/[A-Za-z0-9_./-]{1,4095}"),
    "known_hosts": re.compile(r"/[A-Za-z0-9_./-]{1,4095}"),
    "pkipath": re.compile(r"/[A-Za-z0-9_./-]{1,4095}"),
    "sshauth": re.compile(rf"{_AUTH_METHOD}(,{_AUTH_METHOD}){{0,3}}"),
    "known_hosts_verify": re.compile(r"normal|auto|ignore"),
    "no_verify": re.compile(r"[01]"),
    "no_tty": re.compile(r"[01]"),
    "keepalive_interval": re.compile(r"[0-9]{1,4}"),
    "keepalive_count": re.compile(r"[0-9]{1,3}"),
}  # fmt: skip
HOST_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,30}")
HOST_NAME_RULE = "1 to 31 lower-case letters, digits, '_' or '-', starting with a letter or digit"
# a DNS name or IPv4 address, or a bracketed IPv6 address
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_NETHOST = rf"({_LABEL}(\.{_LABEL})*|\[[0-9A-Fa-f:.]{{2,45}}\])"
_USER = r"[a-z_][a-z0-9_-]{0,31}"
SSH_TARGET = re.compile(rf"({_USER}@)?{_NETHOST}")
SSH_TARGET_RULE = "[user@]host: a DNS name, IPv4 address or [IPv6] address, optional user name"
FILE_PATH = re.compile(r"/[A-Za-z0-9_./-]{0,4095}")
FILE_PATH_RULE = "an absolute path of letters, digits, '_', '.', '/' or '-'"
LABEL_KEY = re.compile(r"[a-z][a-z0-9_.-]{0,62}")
LABEL_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}")


def _path(value: str, what: str) -> str:
    if not FILE_PATH.fullmatch(value) or "/../" in value + "/" or value.endswith("/.."):
        raise ValueError(f"{what} {value!r} is not {FILE_PATH_RULE} (no '..')")
    return value


def check_uri(uri: str, lab: bool = False) -> str:
    """`uri` if it is a libvirt URI iacloud accepts, else ValueError saying why."""
    if len(uri) > 2048 or any(not (0x21 <= ord(c) < 0x7F) for c in uri):
        raise ValueError("must be printable ASCII without spaces, at most 2048 characters")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a URI: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise ValueError(f"scheme {parts.scheme!r} is not one of {', '.join(SCHEMES)}")
    if parts.path not in ("/system", "/session"):
        raise ValueError("expected the path /system (or /session)")
    if parts.fragment or "#" in uri:
        raise ValueError("must not have a fragment ('#')")
    netloc = parts.netloc
    if parts.scheme in REMOTE_SCHEMES:
        host = netloc.rsplit("@", 1)[-1]
        if port is not None:
            host = host.rsplit(":", 1)[0]
        if not re.fullmatch(_NETHOST, host):
            raise ValueError(f"host {host!r} is not a DNS name or IP address")
        if "@" in netloc and not re.fullmatch(_USER, netloc.split("@", 1)[0]):
            raise ValueError("the user name must be a plain login name (no password)")
    elif netloc:
        raise ValueError(f"a {parts.scheme}:// URI names no host (did you mean qemu+ssh://?)")
    seen: set[str] = set()
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        rule = QUERY_PARAMS.get(key)
        if rule is None:
            allowed = ", ".join(sorted(QUERY_PARAMS))
            raise ValueError(f"query parameter {key!r} is not accepted (allowed: {allowed})")
        if key in seen:
            raise ValueError(f"query parameter {key!r} is given twice")
        seen.add(key)
        if not rule.fullmatch(value) or "/.." in value:
            raise ValueError(f"query parameter {key}={value!r} is not a valid value")
        if parts.scheme not in REMOTE_SCHEMES:
            raise ValueError(f"query parameter {key!r} needs a remote scheme")
    if parts.query and "&".join(f"{k}={v}" for k, v in parse_qsl(parts.query)) != parts.query:
        raise ValueError("the query must be plain key=value pairs joined by '&' (no escapes)")
    skips = dict(parse_qsl(parts.query)).get("no_verify") == "1" or (
        dict(parse_qsl(parts.query)).get("known_hosts_verify") == "ignore"
    )
    if skips and not lab:
        raise ValueError("no_verify=1 / known_hosts_verify=ignore skip the host's identity "
                         "check: only allowed on a host marked lab = true")  # fmt: skip
    return uri


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SshTarget(_Model):
    """How the network side reaches the host: `ssh [-F config] [-i identity]
    [-o UserKnownHostsFile=known_hosts] TARGET -- argv` (argument lists, never a shell string)."""

    target: str = Field(min_length=1, max_length=320)
    ssh_config: str | None = None
    identity: str | None = None
    known_hosts: str | None = None

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        if not SSH_TARGET.fullmatch(value):
            raise ValueError(f"{value!r} is not {SSH_TARGET_RULE}")
        return value

    @field_validator("ssh_config", "identity", "known_hosts")
    @classmethod
    def _files(cls, value: str | None) -> str | None:
        return None if value is None else _path(value, "path")

    def argv(self, *command: str, connect_timeout: int = 5) -> list[str]:
        """The ssh command line that runs `command` on the host, never asking for input.
        ssh joins the words after the target into one string for the remote shell, so each
        word is quoted: the host runs exactly `command`, whatever a word contains."""
        argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(connect_timeout)}"]
        if self.ssh_config:
            argv += ["-F", self.ssh_config]
        if self.identity:
            argv += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        return [*argv, self.target, "--", *(shlex.quote(w) for w in command)]


class CatalogHost(_Model):
    """One hypervisor host. Capacity overrides replace what the host reports; the ratios are
    Nova's allocation ratios (defaults 4.0 / 1.0 / 1.0, 512 MiB reserved)."""

    lab: bool = False  # before uri: its check reads it
    uri: str = Field(min_length=1, max_length=2048)
    ssh: SshTarget | None = None
    pool: str = Field("iacloud", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    vcpus: int | None = Field(None, ge=1, le=4096)
    memory_mib: int | None = Field(None, ge=256, le=1 << 26)
    disk_gib: int | None = Field(None, ge=1, le=1 << 20)
    cpu_allocation_ratio: float = Field(4.0, gt=0, le=64)
    ram_allocation_ratio: float = Field(1.0, gt=0, le=16)
    disk_allocation_ratio: float = Field(1.0, gt=0, le=16)
    reserved_host_memory_mib: int = Field(512, ge=0, le=1 << 26)
    labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    description: str = Field("", max_length=1000)
    # the IPv4 address networks reach the host at over VXLAN (default: the SSH target's or
    # the URI's host, when that is an IPv4 address)
    underlay: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _ssh_string(cls, data: Any) -> Any:
        # `ssh = "root@h1"` is short for `ssh = { target = "root@h1" }`
        if isinstance(data, dict) and isinstance(data.get("ssh"), str):
            return {**data, "ssh": {"target": data["ssh"]}}
        return data

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str, info: ValidationInfo) -> str:
        return check_uri(value, bool(info.data.get("lab", False)))

    @field_validator("underlay")
    @classmethod
    def _underlay(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            raise ValueError(f"underlay {value!r} is not an IPv4 address") from None

    @property
    def underlay_address(self) -> str | None:
        """Where VXLAN reaches the host: `underlay`, else an IPv4 literal of its SSH target
        or URI."""
        if self.underlay is not None:
            return self.underlay
        hosts = [urlsplit(self.uri).hostname]
        if self.ssh is not None:
            hosts.insert(0, self.ssh.target.rpartition("@")[2])
        for host in hosts:
            try:
                return str(ipaddress.IPv4Address(host or ""))
            except ValueError:
                continue
        return None

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if not LABEL_KEY.fullmatch(key):
                raise ValueError(f"label key {key!r} is not lower-case letters, digits, '_.-'")
            if not LABEL_VALUE.fullmatch(val):
                raise ValueError(f"label {key} = {val!r}: expected letters, digits, '_.:-'")
        return value

    @property
    def is_local(self) -> bool:
        return urlsplit(self.uri).scheme in ("qemu", "qemu+unix")


def implicit_hosts() -> dict[str, CatalogHost]:
    """The hosts of a site without a `[hosts]` table: this machine's libvirtd."""
    return {LOCAL_HOST: CatalogHost(uri=LOCAL_URI)}
