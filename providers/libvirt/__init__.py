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

import functools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import libvirt

from iacloud.errors import Diagnostic, ProviderError
from iacloud.provider import (
    Check,
    HostDown,
    HostReading,
    ObjectRef,
    Observed,
    Provider,
    ProviderSettings,
    StackInfo,
)
from iacloud.site_hosts import CatalogHost
from iacloud.stack_view import ResourceView

from . import storage, virt_type
from .connection import Connection, failing, unproven_on_loss
from .domain_xml import parse
from .host_context import HostContext, copy_digest, copy_image
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

T = TypeVar("T")
R = TypeVar("R")


class LibvirtProvider(Provider):
    name = "libvirt"
    Settings = LibvirtSettings
    resource_types = (Image, Volume, VolumeSnapshot, Server, SiteImage)
    settings: LibvirtSettings
    # domains, their XML and states, pools, volumes: for reads
    Listings = LibvirtListings

    def __init__(self, stack: StackInfo, settings: ProviderSettings) -> None:
        super().__init__(stack, settings)
        s = self.settings
        self.default = HostContext(None, s.uri, s.pool, s.pool_path, None)
        self.default.listings = self._default_listings
        self._hosts: dict[str, HostContext] = {}
        self._hosts_lock = threading.Lock()
        self._here = threading.local()

    # -------------------------------------------------------------- hosts (issue #16)
    def host(self, name: str | None) -> HostContext:
        """The context of site catalog host `name` (None: the default host)."""
        if name is None:
            return self.default
        entry = self.stack.hosts.get(name)
        if entry is None:
            known = ", ".join(self.stack.hosts) or "none: the site catalog has no [hosts]"
            raise ProviderError(f"unknown host {name!r} (the site catalog's hosts: {known})")
        with self._hosts_lock:
            ctx = self._hosts.get(name)
            if ctx is None:
                s = self.settings
                ctx = HostContext(name, entry.uri, entry.pool or s.pool, s.pool_path, entry)
                self._hosts[name] = ctx
            return ctx

    def hosts(self) -> list[HostContext]:
        """The default host and every catalog host: where objects of a stack may be."""
        return [self.default, *(self.host(n) for n in self.stack.hosts)]

    @contextmanager
    def on(self, name: str | None) -> Iterator[HostContext]:
        """Run the block on host `name`: the calling thread's `conn()`, `pools` and
        `listings` are that host's until the block ends (see `host_context`)."""
        ctx = self.host(name)
        before = getattr(self._here, "ctx", None)
        self._here.ctx = ctx
        try:
            yield ctx
        finally:
            self._here.ctx = before
            if ctx is not self.default:
                # what a step changed there is not seen by the listings kept for the run
                ctx.listings.clear()

    def read_by_host(
        self,
        refs: Sequence[ObjectRef],
        read: Callable[[Sequence[ObjectRef]], dict[str, Observed]],
    ) -> dict[str, Observed]:
        """`read` of the refs of each host, run on that host (the hosts in parallel; a stack
        without catalog hosts reads as before, in the calling thread). What is not on its
        recorded host is looked for on the others."""
        groups: dict[str | None, list[ObjectRef]] = {}
        for ref in refs:
            host = ref.inputs.get("host")
            groups.setdefault(host if isinstance(host, str) else None, []).append(ref)
        if set(groups) <= {None} and not self.stack.hosts:
            return read(refs)
        out: dict[str, Observed] = {}
        jobs = {h: functools.partial(read, g) for h, g in groups.items()}
        for host, part in self.per_host(jobs).items():
            if isinstance(part, HostDown):
                # unknown, not gone: the plan leaves them as recorded and says why
                why = f"host {host} is down: {part}"
                for ref in groups[host]:
                    out[ref.address] = Observed(
                        ref.id or "", dict(ref.inputs), dict(ref.attributes), unknown=why
                    )
            else:
                out.update(part)
        missing = [r for r in refs if r.address not in out]
        if missing:
            out.update(self._elsewhere(missing, groups, read))
        return out

    def _elsewhere(
        self,
        missing: Sequence[ObjectRef],
        groups: Mapping[str | None, Sequence[ObjectRef]],
        read: Callable[[Sequence[ObjectRef]], dict[str, Observed]],
    ) -> dict[str, Observed]:
        """The `missing` objects looked for on the other hosts: a migration cut off after
        libvirt finished, or a volume recorded on the host its server was moving to, is where
        the run could not record it (its read reports that host)."""
        jobs = {
            h: functools.partial(read, missing)
            for h in [None, *self.stack.hosts]
            if h not in groups or any(r not in groups[h] for r in missing)
        }
        found: dict[str, Observed] = {}
        for part in self.per_host(jobs).values():
            if not isinstance(part, HostDown):
                for address, obs in part.items():
                    found.setdefault(address, obs)
        return found

    def on_every_host(self, job: Callable[[], list[T]]) -> list[T]:
        """`job` run on the default host and on every catalog host, in parallel; a catalog
        host that is down is left out (what is there cannot be listed until it answers)."""
        if not self.stack.hosts:
            return job()
        names: list[str | None] = [None, *self.stack.hosts]
        parts = self.per_host(dict.fromkeys(names, job))
        return [x for part in parts.values() if not isinstance(part, HostDown) for x in part]

    def per_host(
        self, jobs: Mapping[str | None, Callable[[], R]]
    ) -> dict[str | None, R | HostDown]:
        """Each job on its host, in parallel: its result, or HostDown when a catalog host
        cannot be reached (within a bounded time)."""

        def run(host: str | None, job: Callable[[], R]) -> R | HostDown:
            try:
                with self.on(host) as ctx:
                    ctx.conn()
                    return job()
            except HostDown as exc:
                return exc
            except ProviderError as exc:
                where = host or "the default host"
                raise ProviderError(f"on {where}: {exc}") from exc

        with ThreadPoolExecutor(max_workers=min(len(jobs), 16)) as pool:
            futures = {h: pool.submit(run, h, j) for h, j in jobs.items()}
            return {h: f.result() for h, f in futures.items()}

    @property
    def here(self) -> HostContext:
        """The calling thread's current host (the default one outside `on`)."""
        return getattr(self._here, "ctx", None) or self.default

    @property  # type: ignore[override]
    def listings(self) -> LibvirtListings:
        """The current host's listings (the base class sets the default host's)."""
        ctx = getattr(self._here, "ctx", None) if hasattr(self, "_here") else None
        return ctx.listings if ctx is not None else self._default_listings

    @listings.setter
    def listings(self, value: LibvirtListings) -> None:
        self._default_listings = value

    @property
    def connection(self) -> Connection:
        return self.here.connection

    @property
    def pools(self) -> Pools:
        return self.here.pools

    def backing_image(self, image_id: str) -> tuple[str, str, int]:
        """`image_file` of an image as the current host sees it: on a catalog host, its copy
        there (made on first use, see `host_context.copy_image`)."""
        ctx = self.here
        if ctx is self.default:
            return self.image_file(image_id)
        with self.on(None):
            path, fmt, _ = self.image_file(image_id)

            def digest() -> str:
                image = self.resource("image")
                assert isinstance(image, Image)
                return image.content_sha256(image_id, path)

            copy_path, size = copy_image(self.default, ctx, image_id, fmt, digest)
        return copy_path, fmt, size

    def image_of_copy(self, copy_id: str) -> str | None:
        """The stack's image a host's image copy was made from (None: not a copy, or of no
        image of this stack): what an imported overlay on a catalog host is backed by."""
        digest = copy_digest(copy_id)
        if digest is None:
            return None
        with self.on(None):
            image = self.resource("image")
            assert isinstance(image, Image)
            return image.of_copy(digest)

    def conn(self) -> libvirt.virConnect:
        return self.here.conn()

    def virt_type(self) -> str:
        """'kvm' or 'qemu', probed at most once per run and host (and cached across runs
        for the default host; a catalog host is asked what libvirt offers there)."""
        ctx = self.here
        with ctx.lock:
            if ctx.virt_type is None:
                s = self.settings
                if ctx is self.default:
                    ctx.virt_type = virt_type.resolve(
                        self.conn(), s.uri, s.virt_type, s.virt_type_cache
                    )
                elif s.virt_type != "auto":
                    ctx.virt_type = s.virt_type
                else:
                    ctx.virt_type = "kvm" if virt_type.libvirt_offers_kvm(ctx.conn()) else "qemu"
            return ctx.virt_type

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
            where = "" if self.here is self.default else f" on {self.here.label}"
            raise ProviderError(f"{what} {image_id} does not exist{where}")
        if fmt is None:
            raise ProviderError(f"cannot tell the format of {what} {image_id}")
        info = storage.info(pool, vol)
        return info.path, fmt, info.capacity

    def running_users(self, volume_id: str, path: str) -> list[tuple[libvirt.virDomain, str]]:
        """Running domains that have the volume attached, with its target device there."""
        return self.users(volume_id, path, running=True)

    def users(
        self, volume_id: str, path: str, running: bool
    ) -> list[tuple[libvirt.virDomain, str]]:
        """Domains (only running ones with `running`) of the current host that have the
        volume attached, with its target device there."""
        out = []
        flags = libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE if running else 0
        with failing("listing domains"):
            domains = self.conn().listAllDomains(flags)
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

    def close(self) -> None:
        for ctx in [self.default, *self._hosts.values()]:
            ctx.close()


__all__ = ["LibvirtProvider", "LibvirtSettings"]
