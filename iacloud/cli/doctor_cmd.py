"""`iacloud doctor`: the host checks of every installed provider."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from iacloud import engine
from iacloud.cli.app import EXIT_ERROR, echo_json, handled, json_opt, site_opt


@click.command()
@site_opt
@json_opt
@handled
def doctor(site_file: Path | None, as_json: bool) -> None:
    """Check the host: libvirtd, virtualization, slow defines, pool, dnsmasq, nftables; and
    each host of the site catalog: libvirtd, virtualization, pool, SSH, network tools."""
    checks = engine.doctor(site_file)
    if as_json:
        echo_json([c.__dict__ for c in checks])
    else:
        colours = {"ok": "green", "warn": "yellow", "fail": "red"}
        for c in checks:
            click.echo(
                click.style(f"{c.status:>4}", fg=colours.get(c.status)) + f"  {c.name}: {c.message}"
            )
            if c.fix and c.status != "ok":
                click.echo(f"      fix: {c.fix}")
    if any(c.status == "fail" for c in checks):
        sys.exit(EXIT_ERROR)
