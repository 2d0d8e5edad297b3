"""The `[provider.libvirt]` table of a stack file: where libvirtd is and how guests are run.

[provider.libvirt]
uri = "qemu:///system"        # libvirt connection URI
virt_type = "auto"            # "kvm", "qemu" (TCG emulation) or "auto": a short cached probe
pool = "iacloud"              # default storage pool; created (type dir) when missing
pool_path = "/var/lib/iacloud/pool"   # its directory when it has to be created
machine = "pc"                # "pc" (i440fx, IDE cdrom for the seed) or "q35" (SATA cdrom)
boot_timeout = 120            # seconds a started server may take to print IACLOUD-READY
wait_ready = true             # wait for that line at all (false for images without it)
shutdown_timeout = 60         # seconds of graceful ACPI shutdown before a hard power-off
download_timeout = 300        # seconds an http(s) image download may stall
virt_type_cache = "/run/iacloud/virt-type"   # where the auto probe's verdict is kept
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from iacloud.provider import ProviderSettings

from .tags import PoolName


class LibvirtSettings(ProviderSettings):
    uri: str = Field("qemu:///system", min_length=1, max_length=500)
    virt_type: Literal["auto", "kvm", "qemu"] = "auto"
    pool: PoolName = "iacloud"
    pool_path: str = "/var/lib/iacloud/pool"
    machine: Literal["pc", "q35"] = "pc"
    boot_timeout: float = Field(120.0, gt=0, le=3600)
    wait_ready: bool = True
    shutdown_timeout: float = Field(60.0, ge=0, le=3600)
    download_timeout: float = Field(300.0, gt=0, le=86400)
    virt_type_cache: str = "/run/iacloud/virt-type"

    @field_validator("pool_path", "virt_type_cache")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or "\0" in value or "/../" in value + "/":
            raise ValueError(f"must be an absolute path without '..', not {value!r}")
        return value
