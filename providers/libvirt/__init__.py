"""The libvirt provider: images, volumes and servers on a libvirtd with QEMU.

Modules, one per concept:
  settings    the `[provider.libvirt]` table
  connection  a host's shared libvirt connection; libvirt errors by code
  host_context one host: its connection, pools, listings, virt type (`provider.host(name)`)
  hosts       which host a step or read works on; reads and orphan searches across hosts
  image_copy  an image streamed from the default host to another host that needs it
  remote_console  a remote server's console log: a pool volume read through libvirt
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

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar

import libvirt

from iacloud.errors import Diagnostic, ProviderError
from iacloud.provider import Check, HostReading, Provider, ProviderSettings, StackInfo
from iacloud.site_hosts import CatalogHost
from iacloud.stack_view import ResourceView

from .connection import unproven_on_loss
from .host_context import HostContext
from .image import Image
from .listings import Listings as LibvirtListings
from .references import check_references
from .server import Server
from .settings import LibvirtSettings
from .site_image import SiteImage
from .snapshot import VolumeSnapshot
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
        self.default_host = HostContext.default(self.settings)
        # the default host's objects, under the names every single-host path used
        self.connection = self.default_host.connection
        self.pools = self.default_host.pools
        self.listings = self.default_host.listings
        # one context per catalog host, built now (connections open on first use) so that
        # every change drops the listings of every host
        self._hosts: dict[str, HostContext] = {}
        # per provider: two providers of one process (tests) never see each other's host
        self._here: ContextVar[HostContext | None] = ContextVar(
            f"iacloud-libvirt-host-{id(self)}", default=None
        )
        # catalog hosts whose orphans could not be searched in this run, with the reason
        self.unreachable: dict[str, str] = {}
        for name, entry in stack.hosts.items():
            if entry.uri == self.settings.uri and entry.pool == self.settings.pool:
                self._hosts[name] = self.default_host  # the same libvirtd: one connection
            else:
                self._hosts[name] = HostContext.of_entry(name, entry, self.settings)

    @contextmanager
    def on_host(self, context: HostContext) -> Iterator[None]:
        """Run the resource types' code inside on `context` (see `hosts`)."""
        token = self._here.set(context)
        try:
            yield
        finally:
            self._here.reset(token)

    def current_host(self) -> HostContext:
        """The host the running step or read works on: the default one outside `on_host`."""
        return self._here.get() or self.default_host

    def host(self, name: str | None) -> HostContext:
        """The context of catalog host `name`; None (or a site without `[hosts]`): the
        default host, the provider's own `uri` and `pool`."""
        if name is None:
            return self.default_host
        context = self._hosts.get(name)
        if context is None:
            known = ", ".join(sorted(self._hosts)) or "none: the site has no [hosts] table"
            raise ProviderError(f"host {name!r} is not in the site catalog (hosts: {known})")
        return context

    def host_contexts(self) -> list[HostContext]:
        """Every distinct host this run may touch: the default host first."""
        out = [self.default_host]
        for context in self._hosts.values():
            if all(context is not seen for seen in out):
                out.append(context)
        return out

    @property
    def many_hosts(self) -> bool:
        """Whether reads must look beyond the default host (the single-host fast path)."""
        return len(self.host_contexts()) > 1

    def conn(self) -> libvirt.virConnect:
        return self.default_host.conn()

    def virt_type(self) -> str:
        """'kvm' or 'qemu' on the default host, probed at most once per run."""
        return self.default_host.virt_type()

    def volume_ref(self, volume_id: str) -> tuple[str, str, str]:
        """(pool, name, format) of an existing volume on the default host."""
        return self.default_host.volume_ref(volume_id)

    def image_file(self, image_id: str, what: str = "image") -> tuple[str, str, int]:
        """(path, format, virtual size) of an image on the default host."""
        return self.default_host.image_file(image_id, what)

    def running_users(self, volume_id: str, path: str) -> list[tuple[libvirt.virDomain, str]]:
        return self.default_host.running_users(volume_id, path)

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
        """A create, update or delete whose connection was lost fails unproven; every
        host's listings are dropped around it."""
        with ExitStack() as stack:
            for context in self.host_contexts()[1:]:
                stack.enter_context(context.listings.changing())
            if operation == "import_":
                with super().changing(operation):
                    yield
                return
            for context in self.host_contexts():
                stack.enter_context(unproven_on_loss(context.connection))
            with super().changing(operation):
                yield

    def close(self) -> None:
        for context in self.host_contexts():
            context.close()


__all__ = ["HostContext", "LibvirtProvider", "LibvirtSettings"]
