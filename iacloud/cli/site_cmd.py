"""`iacloud site show`: the site catalog a command would use (flavors, images, key pairs,
external networks), and which file it comes from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from iacloud import engine
from iacloud.cli.app import echo_json, handled, json_opt, site_opt
from iacloud.errors import printable


@click.group()
def site() -> None:
    """The site catalog: what exists before any stack."""


@site.command("show")
@site_opt
@json_opt
@handled
def show(site_file: Path | None, as_json: bool) -> None:
    """List the catalog's flavors, images, key pairs, external networks and hosts."""
    view = engine.site_view(site_file)
    if as_json:
        echo_json(view)
        return
    if view["file"] is None:
        where = " or ".join(view["defaults"])
        click.echo(f"No site catalog (no --site, IACLOUD_SITE empty or unset, none at {where}).")
        return
    click.echo(f"Site catalog {printable(view['file'])} (from {view['origin']})")
    _section("Flavors", view["flavors"], ("vcpus", "memory_mib", "root_gib"))
    _section("Images", view["images"], ("format", "sha256", "source"))
    keys = {n: {"public_key": _short_key(e["public_key"])} for n, e in view["keypairs"].items()}
    _section("Key pairs", keys, ("public_key",))
    _section("Networks", view["networks"], ("bridge", "cidr", "gateway"))
    _section("Hosts", view["hosts"], ("uri", "pool"))


def _short_key(key: str) -> str:
    kind, _, rest = key.partition(" ")
    body, _, comment = rest.partition(" ")
    return f"{kind} {body[:12]}...{body[-6:]} {comment}".rstrip()


def _section(title: str, entries: dict[str, dict[str, Any]], columns: tuple[str, ...]) -> None:
    click.echo(f"\n{title} ({len(entries)}):")
    if not entries:
        return
    rows = [["name", *columns]]
    rows += [[n, *("-" if e.get(c) is None else str(e[c]) for c in columns)]
             for n, e in entries.items()]  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (v.ljust(w) for v, w in zip(row, widths, strict=True))
        click.echo(printable("  " + "  ".join(cells).rstrip()))
