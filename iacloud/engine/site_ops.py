"""The site catalog for front ends: which file a command uses and what it declares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    for section in ("flavors", "images", "keypairs", "networks"):
        entries = site.section(section) if site is not None else {}
        view[section] = {name: entry.model_dump() for name, entry in entries.items()}
    return view
