"""The site catalog for front ends: which file a command uses, what it declares, and its
hosts as they are now."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iacloud.hosts import HostState, host_states
from iacloud.loading.site_file import load_site
from iacloud.site import choose_site_file, site_file_candidates


def site_view(explicit: Path | None = None) -> dict[str, Any]:
    """The catalog as plain data: the file (None when there is none), where its name came
    from (--site, IACLOUD_SITE, default, none), the default locations, and each section's
    entries by name. UserError for a named file that is missing or a bad file."""
    choice = choose_site_file(explicit)
    site = load_site(explicit)
    view: dict[str, Any] = {
        "file": str(choice.path) if site is not None else None,
        "origin": choice.origin,
        "defaults": [str(p) for p in site_file_candidates()],
    }
    for section in ("flavors", "images", "keypairs", "networks", "hosts"):
        entries = site.section(section) if site is not None else {}
        view[section] = {name: entry.model_dump() for name, entry in entries.items()}
    return view


def hosts_view(explicit: Path | None = None) -> tuple[str | None, list[HostState]]:
    """The site file used (None: no catalog, the implicit local host) and every host's state,
    read in parallel. UserError for a named file that is missing or a bad file."""
    site = load_site(explicit)
    return (str(site.path) if site is not None else None), host_states(site)
