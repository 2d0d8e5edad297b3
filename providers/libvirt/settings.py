"""The `[provider.libvirt]` table of a stack file: where libvirtd is and how guests are run.

[provider.libvirt]
uri = "qemu:///system"        # libvirt connection URI
virt_type = "auto"            # "kvm", "qemu" (TCG emulation) or "auto": a short cached probe
pool = "iacloud"              # default storage pool; created (type dir) when missing
pool_path = "/var/lib/iacloud/pool"   # its directory when it has to be created
machine = "pc"                # "pc" (i440fx, IDE seed cdrom) or "q35" (virtio-scsi seed cdrom);
                              # a server's own `machine` overrides it
ready = "auto"                # when a started server is ready: auto | cloud-init | agent |
                              # console | none (see readiness.py); a server's `ready` overrides
boot_timeout = 900            # seconds a started server may take to become ready: a Debian
                              # cloud image needs 50-110 s under emulation on 2 idle cores,
                              # several times that when many boot at once; KVM ~10 s
wait_ready = true             # older switch: false is ready = "none"
shutdown_timeout = 60         # seconds of graceful ACPI shutdown before a hard power-off (only
                              # for restarts, stops, and deletes with a volume that outlives)
download_timeout = 300        # seconds an http(s) image download may stall
virt_type_cache = "/run/iacloud/virt-type"   # where the auto probe's verdict is kept
image_roots = ["/srv/images"] # directories outside the stack's tree image sources may come from

Paths are absolute and normalized; the virt_type cache must lie under a directory iacloud owns
(/run/iacloud, /var/lib/iacloud, /var/cache/iacloud or its data directory), a pool not in a
system directory (iacloud.paths).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from iacloud import paths
from iacloud.provider import ProviderSettings

from .tags import PoolName


class LibvirtSettings(ProviderSettings):
    uri: str = Field("qemu:///system", min_length=1, max_length=500)
    virt_type: Literal["auto", "kvm", "qemu"] = "auto"
    pool: PoolName = "iacloud"
    pool_path: str = "/var/lib/iacloud/pool"
    machine: Literal["pc", "q35"] = "pc"
    ready: Literal["auto", "cloud-init", "agent", "console", "none"] | None = None
    boot_timeout: float = Field(900.0, gt=0, le=7200)
    wait_ready: bool = True
    shutdown_timeout: float = Field(60.0, ge=0, le=3600)
    download_timeout: float = Field(300.0, gt=0, le=86400)
    virt_type_cache: str = "/run/iacloud/virt-type"
    image_roots: list[str] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _ready(self) -> LibvirtSettings:
        if self.ready is not None and self.ready != "none" and not self.wait_ready:
            raise ValueError(f"wait_ready = false contradicts ready = {self.ready!r}")
        return self

    @property
    def default_ready(self) -> str:
        """The readiness mode of a server that does not name one."""
        if self.ready is not None:
            return self.ready
        return "auto" if self.wait_ready else "none"

    @field_validator("pool_path")
    @classmethod
    def _pool_path(cls, value: str) -> str:
        return paths.check_pool_directory(value)

    @field_validator("virt_type_cache")
    @classmethod
    def _cache(cls, value: str) -> str:
        return paths.check_owned(value)

    @field_validator("image_roots")
    @classmethod
    def _roots(cls, value: list[str]) -> list[str]:
        return [paths.check_absolute(v) for v in value]
