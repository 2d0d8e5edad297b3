"""Which host a libvirt step or read works on (issue #16), and reads spread over the hosts.

Each resource type's code works on `self.host` (a `HostContext`). The provider keeps the
current host in a context variable; this module wraps every type's operations so that it is
set from what the object says:

- create: the `host` input; update and delete: the `host` the object was recorded on;
- import_: every host is asked (in parallel); the one that has the object answers;
- read: refs grouped by their `host` input, each group read on its host, the groups in
  parallel; list_tagged: every host in parallel, the results joined.

Single-host fast path: without catalog hosts (or when every ref is on the default host) the
original method runs directly, on the calling thread, exactly as before.

A host that cannot be reached (its libvirtd refuses, times out or went away) does not fail a
read: each of its objects is observed as *unknown* (`Observed.unknown`, the reason), so the
engine plans the rest and leaves those alone. Its orphans cannot be searched: the reason is
kept in `provider.unreachable` and the orphan search goes on with the other hosts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from iacloud.errors import ProviderError
from iacloud.provider import HostDown, ObjectRef, Observed, TaggedObject

from .connection import lost_connection

if TYPE_CHECKING:
    from .base import LibvirtResource
    from .host_context import HostContext


def down_reason(exc: BaseException) -> str | None:
    """Why a host is to be taken as down, when `exc` says so; None for any other failure."""
    if isinstance(exc, HostDown):
        return str(exc)
    if isinstance(exc, ProviderError) and lost_connection(exc):
        return str(exc)
    return None


def _host_of(value: Any) -> str | None:
    host = value.get("host") if isinstance(value, dict) else getattr(value, "host", None)
    return host if isinstance(host, str) else None


def _with_host(obs: Observed, context: HostContext) -> Observed:
    if context.name is not None:
        obs.inputs["host"] = context.name
    return obs


def _scoped(method: Callable[..., Any], which: Callable[..., str | None]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: LibvirtResource, *args: Any) -> Any:
        context = self.provider.host(which(*args))
        with self.provider.on_host(context):
            return method(self, *args)

    return wrapper


def _import(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: LibvirtResource, address: str, id: str) -> Observed:
        provider = self.provider
        contexts = provider.host_contexts()
        if len(contexts) == 1:
            return method(self, address, id)

        def attempt(context: HostContext) -> Observed | BaseException:
            with provider.on_host(context):
                try:
                    return _with_host(method(self, address, id), context)
                except Exception as exc:
                    return exc

        with ThreadPoolExecutor(len(contexts), thread_name_prefix="iacloud-import") as pool:
            results = list(pool.map(attempt, contexts))
        for result in results:
            if isinstance(result, Observed):
                return result
        # none has it: the default host's answer, naming the hosts that could not be asked
        down = [
            f"{c.name}: {reason}"
            for c, r in zip(contexts, results, strict=True)
            if (reason := down_reason(r)) is not None
        ]
        first = results[0]
        assert isinstance(first, BaseException)
        if down:
            raise ProviderError(f"{first} (on no reachable host; not asked: {'; '.join(down)})")
        raise first

    return wrapper


def _read(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: LibvirtResource, refs: Sequence[ObjectRef]) -> dict[str, Observed]:
        provider = self.provider
        groups: dict[str | None, list[ObjectRef]] = {}
        for ref in refs:
            groups.setdefault(_host_of(dict(ref.inputs)), []).append(ref)
        if set(groups) <= {None}:
            return method(self, refs)  # the single-host fast path

        def read_on(name: str | None) -> dict[str, Observed]:
            group = groups[name]
            try:
                context = provider.host(name)
            except ProviderError as exc:
                return {r.address: Observed.unknown_as(r, str(exc)) for r in group}
            with provider.on_host(context):
                try:
                    found = method(self, group)
                except Exception as exc:
                    reason = down_reason(exc)
                    if reason is None:
                        raise
                    return {r.address: Observed.unknown_as(r, f"{name}: {reason}") for r in group}
            return {a: _with_host(o, context) for a, o in found.items()}

        out: dict[str, Observed] = {}
        with ThreadPoolExecutor(len(groups), thread_name_prefix="iacloud-read") as pool:
            for found in pool.map(read_on, list(groups)):
                out.update(found)
        return out

    return wrapper


def _list_tagged(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: LibvirtResource) -> list[TaggedObject]:
        provider = self.provider
        contexts = provider.host_contexts()
        if len(contexts) == 1:
            return method(self)

        def list_on(context: HostContext) -> list[TaggedObject]:
            with provider.on_host(context):
                try:
                    return method(self)
                except Exception as exc:
                    reason = down_reason(exc)
                    if reason is None or context.name is None:
                        raise
                    provider.unreachable[context.name] = reason
                    return []

        out: list[TaggedObject] = []
        with ThreadPoolExecutor(len(contexts), thread_name_prefix="iacloud-orphans") as pool:
            for found in pool.map(list_on, contexts):
                out.extend(found)
        return out

    return wrapper


def scope_operations(cls: type[LibvirtResource]) -> None:
    """Wrap the operations `cls` defines itself so each runs on its object's host."""
    wrappers: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
        "create": lambda m: _scoped(m, lambda _address, inputs: _host_of(inputs)),
        "update": lambda m: _scoped(m, lambda _a, prior, _i, _c: _host_of(prior.inputs)),
        "delete": lambda m: _scoped(m, lambda _address, prior: _host_of(prior.inputs)),
        "import_": _import,
        "read": _read,
        "list_tagged": _list_tagged,
    }
    for name, wrap in wrappers.items():
        method = cls.__dict__.get(name)
        if callable(method) and not getattr(method, "_host_scoped", False):
            wrapped = wrap(method)
            wrapped._host_scoped = True  # type: ignore[attr-defined]
            setattr(cls, name, wrapped)
