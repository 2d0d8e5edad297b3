"""Import of an object that may live on a site catalog host (issue #16): servers, volumes and
volume snapshots.

An id names a domain or a volume on *some* libvirtd, not which one. When the stack names the
resource's host (`host = "h2"`), the object is imported from that host only. Otherwise every
host (the provider's own libvirtd and each catalog host) is asked in parallel whether it has
the object (`present_here`), and the object is imported from the one host that has it; the
observed inputs then carry that host (None: the provider's own libvirtd), so state records
where it is and later reads go there. Found on none: an error naming the hosts searched and
those that could not be reached (the object may be there). Found on several (the same volume
name in a pool of the same name on two hosts): an error asking to name the host, as guessing
would adopt the wrong disk.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from iacloud.errors import ProviderError
from iacloud.provider import HostDown, Observed

if TYPE_CHECKING:
    from . import LibvirtProvider


def _label(host: str | None) -> str:
    return host if host is not None else "the default host"


def import_on_hosts(
    provider: LibvirtProvider,
    what: str,
    id: str,
    given: Mapping[str, Any],
    present: Callable[[str], bool],
    import_here: Callable[[], Observed],
) -> Observed:
    """Import `id` (a `what`: "domain", "volume") from its host; see the module docstring.
    `present(id)` and `import_here()` run on the current host (`provider.on`)."""
    named = given.get("host")
    if isinstance(named, str):
        with provider.on(named):
            if not present(id):
                raise ProviderError(f"no {what} {id} on host {named} (the stack's `host`)")
            return _with_host(import_here(), named)
    if not provider.stack.hosts:
        return import_here()  # one host: nothing to search
    names: list[str | None] = [None, *provider.stack.hosts]
    found = provider.per_host({h: (lambda: present(id)) for h in names})
    where = [h for h, ok in found.items() if ok is True]
    down = {h: r for h, r in found.items() if isinstance(r, HostDown)}
    if len(where) > 1:
        raise ProviderError(
            f"{what} {id} exists on several hosts ({', '.join(map(_label, where))}): "
            'name the one to import from in the stack (`host = "NAME"`)'
        )
    if not where:
        searched = ", ".join(_label(h) for h in names if h not in down)
        message = f"no {what} {id} on any host (searched {searched})"
        if down:
            unreachable = "; ".join(f"{h} ({r})" for h, r in down.items())
            message += f"; not reachable, so not searched: {unreachable}"
        raise ProviderError(message)
    with provider.on(where[0]):
        return _with_host(import_here(), where[0])


def _with_host(obs: Observed, host: str | None) -> Observed:
    """The observed inputs with the host the object was found on."""
    obs.inputs["host"] = host
    return obs
