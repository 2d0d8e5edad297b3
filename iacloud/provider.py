"""The provider protocol: what a backend implements, and how providers are found by entry point.

A provider (libvirt, netlink, or a third party's) is a class registered in the entry-point group
`iacloud.providers`. It owns resource types; each resource type is a small class with an inputs
model (see `iacloud.schema`) and six operations: read (bulk), create, update, delete, import and
check. The engine never touches a host itself.

Contracts every resource type keeps:
- read: one call for many objects. An object that no longer exists is absent from the result
  (never an exception). An object without a recorded id (a create that was interrupted) is found
  by its ownership tag (stack id + address) or reported absent.
- create: either returns the new object, or raises and leaves nothing behind. When it cannot
  prove that (its own clean-up failed, the connection was lost), it raises
  `iacloud.errors.CleanupUnproven`: the pending operation then stays, and the next plan finds
  what is left by its ownership tag. Any exception that is not an `IacloudError` counts as
  unproven too.
- update: applies only the changed fields, in the least disruptive way the schema declares.
- delete: deleting an object that is already gone succeeds. If delete raises, the object still
  exists.
- import: reads an existing object by its id into the same shape create would have recorded
  (`import_given` passes what the stack writes for it, e.g. the host to look on).
- check: plan-time validation against the prior object (e.g. a volume may not shrink). It may
  read the provider's own local records (a port checks its network's reservations) but never
  changes anything and opens no connection.
- check_delete: plan-time validation of a delete (or the delete half of a replacement) against
  the objects the plan keeps (a snapshot that a kept volume is made from cannot go). Same rules
  as check.
A provider may also check its resources against each other at load time, before anything exists
(`Provider.check_stack`: a port's address inside its network's subnet). It sees them as
`iacloud.stack_view.ResourceView`s: literal values where known, `Reference` / `Computed` markers
where not; it never sees the engine's expression nodes.

What the base classes keep, so no provider has to remember it: `ResourceType` runs every
create, update, delete and import_ a subclass defines inside its provider's `changing()`, which
drops the provider's per-run host listings (`Provider.listings`, see `iacloud.listings`) before
and after the step. A provider that turns some failures into `CleanupUnproven` (a lost
connection) overrides `Provider.changing`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from iacloud import expressions as ex
from iacloud.config import ResourceConfig
from iacloud.errors import Diagnostic, ProviderError
from iacloud.listings import HostListings
from iacloud.schema import Disruption, Inputs
from iacloud.site_hosts import CatalogHost
from iacloud.stack_view import Computed, Reference, ResourceView

ENTRY_POINT_GROUP = "iacloud.providers"

# the operations that change the host: wrapped by `ResourceType.__init_subclass__`
CHANGING_OPERATIONS = ("create", "update", "delete", "import_")


@dataclass(frozen=True)
class StackInfo:
    """What a provider knows of the stack it works for."""

    name: str
    id: str  # stable across versions; part of every ownership tag
    directory: Path  # the stack file's directory: relative paths in inputs are resolved here
    data_dir: Path  # per-stack working files (seed ISOs, dnsmasq configs, console logs)
    # the site catalog's [hosts] (issue #16); empty: one host, the provider's own settings
    hosts: Mapping[str, CatalogHost] = field(default_factory=dict)


@dataclass(frozen=True)
class ObjectRef:
    """An object the engine asks a provider to read: recorded id (None after an interrupted
    create) and the inputs it was created with."""

    address: str
    id: str | None
    inputs: Mapping[str, Any] = field(default_factory=dict)
    # the attributes recorded: what a type whose objects live in state only reads back
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Observed:
    """An object as it really is.

    inputs: the input fields the provider can observe, in the shape of the inputs model; fields
    it cannot observe are left out and the engine keeps the recorded value.
    attributes: the values `get_attr` reads.
    next_boot: for an object with a persistent definition beside the one it runs with (a
    running server): the input fields that definition holds, with their values there (what the
    object has from its next boot; `inputs` is what it has running now). None for an object
    with one definition.
    """

    id: str
    inputs: dict[str, Any]
    attributes: dict[str, Any]
    next_boot: dict[str, Any] | None = None
    # the object could not be read (its host is down): why. `inputs` and `attributes` are
    # then the recorded ones; the plan leaves it as it is and says so
    unknown: str | None = None


@dataclass(frozen=True)
class RunInfo:
    """What the engine tells providers about the run before its first step (`Provider.run`).

    deleting: the ids of every object this run deletes, of any type and provider (deletes,
    and the old halves of replacements). A server's delete uses it to tell whether an
    attached volume outlives the server (then the guest is shut down gracefully first) or
    goes too (then it is powered off at once)."""

    deleting: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Collision:
    """Something the old and the new object of a replacement cannot both have at once (a name
    derived from the address, an address on a network): create-before-destroy is possible only
    when one of the fields in `unless` changes (never, when `unless` is empty)."""

    what: str
    unless: tuple[str, ...] = ()


@dataclass(frozen=True)
class Remaining:
    """An object the plan keeps as it is or updates in place (`ResourceType.check_delete`):
    its address, type, id and (prior) inputs."""

    address: str
    type: str
    id: str | None
    inputs: Mapping[str, Any]


@dataclass(frozen=True)
class TaggedObject:
    """An object on the host carrying an ownership tag (or none: unmanaged)."""

    type: str
    id: str
    stack_id: str | None
    address: str | None
    # a part of the object at `address` (a server's root disk or seed) rather than the object
    # itself: it is an orphan only when nothing is recorded at that address
    part: str | None = None
    # the stack's name, where the tag carries it (libvirt domains): finds the objects of a
    # stack whose state was lost (iacloud.lost_state)
    stack: str | None = None


class ResourceType:
    """One resource type. Subclasses set the class attributes and implement the operations."""

    type_name: ClassVar[str]
    Inputs: ClassVar[type[Inputs]]
    attributes: ClassVar[tuple[str, ...]] = ("id",)
    sensitive_attributes: ClassVar[tuple[str, ...]] = ()
    # the disruption class of a replacement (data-loss for volumes)
    replace_disruption: ClassVar[Disruption] = Disruption.REPLACE
    # replace by creating the new object before deleting the old one
    create_before_destroy: ClassVar[bool] = False
    # what old and new object cannot share during a create-before-destroy replacement
    replace_collisions: ClassVar[tuple[Collision, ...]] = ()
    # where the site's hosts come in (iacloud.placement): "placed" (the scheduler picks its
    # `host`), "follows" (its `host` is that of the placed resource referring to it), "spans"
    # (its `hosts` are those of the placed resources referring to it), or None
    placement: ClassVar[str | None] = None

    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in CHANGING_OPERATIONS:
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "_changes_host", False):
                setattr(cls, name, _changing(method))

    def check(self, address: str, inputs: Inputs, prior: Observed | None) -> list[Diagnostic]:
        return []

    def not_in_place(self, address: str, inputs: Inputs, prior: Observed) -> dict[str, str]:
        """Fields of `inputs` that change from `prior` and that this object cannot take in
        place although the schema says they can, each with why: the plan replaces the object
        instead and says so (a move libvirt migration cannot make). Same rules as check."""
        return {}

    def check_delete(
        self, address: str, prior: Observed, remaining: Mapping[str, Remaining]
    ) -> list[Diagnostic]:
        """Plan-time check that the object at `address` (`prior`) may be deleted while the
        `remaining` objects (by address) stay."""
        return []

    def read(self, refs: Sequence[ObjectRef]) -> dict[str, Observed]:
        raise NotImplementedError

    def create(self, address: str, inputs: Inputs) -> Observed:
        raise NotImplementedError

    def update(
        self, address: str, prior: Observed, inputs: Inputs, changed: frozenset[str]
    ) -> Observed:
        raise NotImplementedError

    def delete(self, address: str, prior: Observed) -> None:
        raise NotImplementedError

    def import_(self, address: str, id: str) -> Observed:
        raise NotImplementedError

    def import_given(self, address: str, id: str, given: Mapping[str, Any]) -> Observed:
        """The engine's entry to `import_`: `given` is what the stack writes for the resource
        (literal values, or expression nodes where it refers to others). A type whose objects
        may be on one of several hosts overrides this to look where the stack says, or
        everywhere (libvirt); the others import as `import_` does."""
        return self.import_(address, id)

    def list_tagged(self) -> list[TaggedObject]:
        """Every object of this type on the host, with its ownership tag if any (for orphans)."""
        return []


def _view(value: Any) -> Any:
    """A loaded value with its expression nodes replaced by `stack_view` markers."""
    if isinstance(value, ex.GetResource):
        return Reference(value.address)
    if isinstance(value, ex.GetAttr):
        return Reference(value.address, value.attribute, value.path)
    if isinstance(value, (*ex.EXPR_TYPES, ex.Unknown)):
        refs = [_view(n) for n in ex.walk(value) if isinstance(n, (ex.GetResource, ex.GetAttr))]
        return Computed(tuple(refs))
    if isinstance(value, dict):
        return {k: _view(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_view(v) for v in value]
    return value


def _changing(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a host-changing operation inside its provider's `changing()`."""

    @functools.wraps(method)
    def wrapper(self: ResourceType, *args: Any, **kwargs: Any) -> Any:
        with self.provider.changing(method.__name__):
            return method(self, *args, **kwargs)

    wrapper._changes_host = True  # type: ignore[attr-defined]
    return wrapper


@dataclass(frozen=True)
class Check:
    """One host check of `iacloud doctor`: status ok | warn | fail, and how to fix it."""

    name: str
    status: str
    message: str
    fix: str = ""


@dataclass(frozen=True)
class HostReading:
    """What a compute provider read from one catalog host for `iacloud hosts` and the
    scheduler: the host's own capacity and what its domains and pool use."""

    hostname: str
    vcpus: int
    memory_mib: int
    disk_gib: int | None  # the pool's capacity; None while the pool does not exist
    used_vcpus: int
    used_memory_mib: int
    used_disk_gib: int
    domains: int
    iacloud_domains: int  # domains carrying iacloud's owner tag


class HostDown(ProviderError):
    """A catalog host cannot be read; the message is the reason (refused, auth, timeout)."""


class ProviderSettings(BaseModel):
    """Base of a provider's `[provider.NAME]` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Provider:
    """A backend. Construction must not touch the host: validate and plan without refresh
    only read schemas. Connections are opened lazily and reused for the run."""

    name: ClassVar[str]
    Settings: ClassVar[type[ProviderSettings]] = ProviderSettings
    resource_types: ClassVar[tuple[type[ResourceType], ...]] = ()
    run: RunInfo = RunInfo()  # set by the engine before an apply's first step
    # the run's host listings, shared by its types' reads; a subclass of HostListings adds one
    # method per listing the provider keeps
    Listings: ClassVar[type[HostListings]] = HostListings
    listings: HostListings

    def __init__(self, stack: StackInfo, settings: ProviderSettings) -> None:
        self.stack = stack
        self.settings = settings
        self.listings = self.Listings()
        self._resources: dict[str, ResourceType] = {}
        self._lock = threading.Lock()

    @contextmanager
    def changing(self, operation: str) -> Iterator[None]:
        """Around every create, update, delete and import_ (`operation`) of this provider's
        types: drops the kept listings before and after the step. An override keeps that (call
        super) and may add what its provider needs (libvirt: a lost connection makes a
        failure unproven)."""
        with self.listings.changing():
            yield

    def resource(self, type_name: str) -> ResourceType:
        with self._lock:
            if type_name not in self._resources:
                cls = next(t for t in self.resource_types if t.type_name == type_name)
                self._resources[type_name] = cls(self)
            return self._resources[type_name]

    def close(self) -> None:
        """Release connections; called once at the end of a run."""

    @classmethod
    def validate_stack(cls, resources: Mapping[str, ResourceConfig]) -> list[Diagnostic]:
        """The engine's entry to `check_stack`: shows it the resources as views. Providers
        override `check_stack`, not this."""
        return cls.check_stack(
            {a: ResourceView(a, rc.type, _view(rc.properties)) for a, rc in resources.items()}
        )

    @classmethod
    def check_stack(cls, resources: Mapping[str, ResourceView]) -> list[Diagnostic]:
        """Checks across resources, run by `validate` and `plan` before anything exists.

        `resources`: every instance of this provider's types in the stack, by address, as the
        loader resolved them: parameters substituted, `count` expanded, a value that depends on
        another resource a `Reference` (a `get_resource` / `get_attr`) or `Computed` (built
        from references). A field that failed its own schema is reported already and may hold
        anything: skip what does not parse. Diagnostics name the resource's address (not
        "resources.…") and the field; the loader adds the file. Touches no host and reads no
        state."""
        return []

    @classmethod
    def doctor(cls, settings: ProviderSettings) -> list[Check]:
        """Check that the host can serve this provider; say how to fix what is wrong."""
        return []

    # a compute provider reads the site catalog's hosts (one connection each, closed after)
    reads_hosts: ClassVar[bool] = False

    @classmethod
    def read_host(cls, host: CatalogHost, timeout: float) -> HostReading:
        """Capacity and use of one catalog host; HostDown with the reason when unreachable.
        Must finish within about `timeout` seconds and close what it opened."""
        raise HostDown(f"provider {cls.name} does not read hosts")

    @classmethod
    def host_checks(cls, host: CatalogHost, timeout: float) -> list[Check]:
        """`iacloud doctor` for one catalog host: the compute side (libvirtd, virtualization,
        pool). Check names carry no host name; the engine adds it."""
        return []


class Registry:
    """The resource types of every installed provider, found through entry points."""

    def __init__(self, providers: Sequence[type[Provider]]) -> None:
        self.providers: dict[str, type[Provider]] = {p.name: p for p in providers}
        self.types: dict[str, type[ResourceType]] = {}
        self.provider_of: dict[str, str] = {}
        for p in providers:
            for t in p.resource_types:
                self.types[t.type_name] = t
                self.provider_of[t.type_name] = p.name

    @classmethod
    def discover(cls) -> Registry:
        found: list[type[Provider]] = []
        errors: list[Diagnostic] = []
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                found.append(ep.load())
            except Exception as exc:  # a broken provider must not take the others down
                errors.append(Diagnostic(f"provider '{ep.name}' cannot be loaded: {exc}"))
        registry = cls(found)
        registry.load_errors = errors
        return registry

    load_errors: list[Diagnostic] = []


class ProviderSet:
    """The configured provider instances of one run, created on first use."""

    def __init__(
        self, registry: Registry, stack: StackInfo, settings: Mapping[str, ProviderSettings]
    ) -> None:
        self.registry = registry
        self.stack = stack
        self.settings = settings
        self._instances: dict[str, Provider] = {}
        self._lock = threading.Lock()
        self.run = RunInfo()

    def begin_run(self, run: RunInfo) -> None:
        """Tell every provider of the run (made now or later) what the run is about to do."""
        with self._lock:
            self.run = run
            for p in self._instances.values():
                p.run = run

    def resource(self, type_name: str) -> ResourceType:
        name = self.registry.provider_of[type_name]
        with self._lock:
            if name not in self._instances:
                cls = self.registry.providers[name]
                settings = self.settings.get(name) or cls.Settings()
                self._instances[name] = cls(self.stack, settings)
                self._instances[name].run = self.run
            provider = self._instances[name]
        return provider.resource(type_name)

    def close(self) -> None:
        for p in self._instances.values():
            p.close()
        self._instances.clear()
