"""The libvirt provider: images, volumes and servers on a libvirtd with QEMU.

Modules, one per concept:
  settings    the `[provider.libvirt]` table
  connection  the run's shared libvirt connection; libvirt errors by code
  virt_type   the cached "does KVM really run a guest here" probe behind virt_type = "auto"
  pool        the default directory storage pool, created when missing
  listings    the run's domain and pool listings, shared by the reads of every type
  storage     volume ids ("pool/name"), volume XML, streamed upload
  tags        ownership tags: domain metadata, and volume names that carry the tag
  image, volume, snapshot, server    the resource types (snapshot: `volume_snapshot`)
  site_image  a site catalog image: shared by stacks, uploaded on first use, kept by destroy
  blockcopy   a point-in-time copy of a disk a running domain uses (block copy, no pivot)
  references  load-time checks that volumes and snapshots name resources of the right type
  domain_xml  domain XML built and parsed with ElementTree
  seed        the NoCloud seed ISO (pycdlib): meta-data, user-data, network-config
  console     the serial console log and the test image's IACLOUD-READY line
  readiness   when a started server is ready (cloud-init, guest agent, console), timeouts
  guest_agent the QEMU guest agent: addresses, hostname, `cloud-init status` via guest-exec
  addresses   a server's addresses by MAC: agent, ready line, dnsmasq lease, port

Constructing the provider touches nothing: the connection is opened on first use and shared
by every thread of the run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import libvirt

from iacloud.errors import Diagnostic, ProviderError
from iacloud.provider import Check, HostReading, Provider, ProviderSettings, StackInfo
from iacloud.site_hosts import CatalogHost
from iacloud.stack_view import ResourceView

from . import storage, virt_type
from .connection import Connection, failing, unproven_on_loss
from .domain_xml import parse
from .image import Image
from .listings import Listings as LibvirtListings
from .pool import Pools
from .references import check_references
from .server import Server
from .settings import LibvirtSettings
from .site_image import SiteImage
from .snapshot import VolumeSnapshot
from .tags import format_of, parse_volume_name
from .volume import Volume


class LibvirtProvider(Provider):
    name = "libvirt"
    Settings = LibvirtSettings
    resource_types = (Image, Volume, VolumeSnapshot, Server, SiteImage)
    settings: LibvirtSettings
    # domains, their XML and states, pools, volumes: for reads
    Listings = LibvirtListings
    listings: LibvirtListings

    def __init__(self, stack: StackInfo, settings: ProviderSettings) -> None:
        super().__init__(stack, settings)
        self.connection = Connection(self.settings.uri, on_reconnect=self._forget_handles)
        self.pools = Pools(self.settings.uri, self.settings.pool, self.settings.pool_path)
        self._virt_lock = threading.Lock()
        self._virt_type: str | None = None

    def conn(self) -> libvirt.virConnect:
        return self.connection.get()

    def virt_type(self) -> str:
        """'kvm' or 'qemu', probed at most once per run (and cached across runs)."""
        with self._virt_lock:
            if self._virt_type is None:
                s = self.settings
                self._virt_type = virt_type.resolve(
                    self.conn(), s.uri, s.virt_type, s.virt_type_cache
                )
            return self._virt_type

    def volume_ref(self, volume_id: str) -> tuple[str, str, str]:
        """(pool, name, format) of an existing volume; its format must be in its name."""
        pool_name, name = storage.split_id(volume_id)
        fmt = format_of(name)
        if fmt is None:
            raise ProviderError(
                f"cannot tell the format of volume {volume_id} without probing it: "
                "its name must end in .qcow2 or .raw"
            )
        tag = parse_volume_name(name)
        if tag is not None and tag.role == "snap":
            # written to, it would change under the volumes made from it
            raise ProviderError(
                f"{volume_id} is a volume snapshot, which is read-only: make a volume from it "
                "(`snapshot = ...` on a volume) and use that"
            )
        pool = self.pools.find(self.conn(), pool_name)
        if pool is None or storage.lookup(pool, name) is None:
            raise ProviderError(f"volume {volume_id} does not exist")
        return pool_name, name, fmt

    def image_file(self, image_id: str, what: str = "image") -> tuple[str, str, int]:
        """(path, format, virtual size in bytes) of an image (or a volume snapshot: `what`),
        to back an overlay with."""
        pool_name, name = storage.split_id(image_id, f"{what} id")
        fmt = format_of(name)
        pool = self.pools.find(self.conn(), pool_name)
        vol = storage.lookup(pool, name) if pool else None
        if pool is None or vol is None:
            raise ProviderError(f"{what} {image_id} does not exist")
        if fmt is None:
            raise ProviderError(f"cannot tell the format of {what} {image_id}")
        info = storage.info(pool, vol)
        return info.path, fmt, info.capacity

    def running_users(self, volume_id: str, path: str) -> list[tuple[libvirt.virDomain, str]]:
        """Running domains that have the volume attached, with its target device there."""
        out = []
        with failing("listing running domains"):
            domains = self.conn().listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        for dom in domains:
            try:
                parsed = parse(dom.XMLDesc(0))
            except libvirt.libvirtError:
                continue  # stopped meanwhile
            for disk in parsed.disks:
                if disk.id == volume_id or (disk.path and disk.path == path):
                    out.append((dom, disk.target))
        return out

    @classmethod
    def check_stack(cls, resources: Mapping[str, ResourceView]) -> list[Diagnostic]:
        return check_references(resources)

    @classmethod
    def doctor(cls, settings: ProviderSettings) -> list[Check]:
        from .doctor import checks

        assert isinstance(settings, LibvirtSettings)
        return checks(settings)

    reads_hosts = True

    @classmethod
    def read_host(cls, host: CatalogHost, timeout: float) -> HostReading:
        from .remote_host import read_host

        return read_host(host, timeout)

    @classmethod
    def host_checks(cls, host: CatalogHost, timeout: float) -> list[Check]:
        from .remote_host import host_checks

        return host_checks(host, timeout)

    @contextmanager
    def changing(self, operation: str) -> Iterator[None]:
        """A create, update or delete whose connection was lost fails unproven."""
        if operation == "import_":
            with super().changing(operation):
                yield
            return
        with unproven_on_loss(self.connection), super().changing(operation):
            yield

    def _forget_handles(self) -> None:
        """The connection was reopened: pool and domain handles of the old one are dead."""
        self.listings.clear()
        self.pools.forget()

    def close(self) -> None:
        self.listings.clear()
        self.pools.forget()
        self.connection.close()


__all__ = ["LibvirtProvider", "LibvirtSettings"]
