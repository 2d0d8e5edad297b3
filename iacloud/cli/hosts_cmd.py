"""`iacloud hosts`: the site's hosts with their state, capacity, use and labels."""

from __future__ import annotations

from pathlib import Path

import click

from iacloud import engine
from iacloud.cli.app import echo_json, handled, json_opt, site_opt
from iacloud.errors import printable


@click.command()
@site_opt
@json_opt
@handled
def hosts(site_file: Path | None, as_json: bool) -> None:
    """List the hosts of the site catalog (read in parallel): up or down and why, capacity
    (* = set in the catalog), what is used, labels."""
    path, states = engine.hosts_view(site_file)
    if as_json:
        echo_json({"file": path, "hosts": [s.as_dict() for s in states]})
        return
    if path is None:
        click.echo("No site catalog: the one host is local (qemu:///system).")
    rows = [["name", "state", "vcpus", "memory", "disk", "domains", "labels"]]
    for s in states:
        h, r = s.host, s.reading
        star = {k: "*" if k in s.overridden else "" for k in ("vcpus", "memory_mib", "disk_gib")}
        labels = ",".join(f"{k}={v}" for k, v in sorted(h.labels.items())) or "-"
        if r is None:
            rows.append([s.name, "down", "-", "-", "-", "-", labels])
            continue
        disk = (
            "-" if h.disk_gib is None else f"{r.used_disk_gib}/{h.disk_gib}{star['disk_gib']} GiB"
        )
        rows.append([
            s.name,
            "up",
            f"{r.used_vcpus}/{h.vcpus}{star['vcpus']}",
            f"{r.used_memory_mib}/{h.memory_mib}{star['memory_mib']} MiB",
            disk,
            f"{r.domains} ({r.iacloud_domains} iacloud)",
            labels,
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo(
            printable("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        )
    for s in states:
        if not s.up:
            click.echo(printable(f"{s.name}: down: {s.host.down_reason}"))
