"""Commands that read recorded state and change nothing: show, output, events. They open the
state read-only, so they leave the file as they found it and run beside an apply."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from iacloud import engine
from iacloud.cli.app import echo_json, handled, json_opt, remote, stack_opt, state_opt
from iacloud.errors import printable
from iacloud.redact import MASK
from iacloud.remote import run


def reader(stack_file: Path, state_url: str | None) -> engine.Workspace:
    return engine.Workspace(stack_file, state_url, read_only=True)


@click.command()
@stack_opt
@json_opt
@click.option("--serial", type=int, help="Show an older state version.")
@state_opt
@handled
def show(stack_file: Path, as_json: bool, serial: int | None, state_url: str | None) -> None:
    """The recorded state: every resource with its id and attributes."""
    target = remote(stack_file)
    if target is not None:
        data = run.state(target, serial)
    else:
        view = engine.state_view(reader(stack_file, state_url), serial)
        snap = view.snapshot
        data = {"stack": view.stack, "stack_id": snap.stack_id, "serial": snap.serial,
                "lineage": snap.lineage, "resources": view.resources,
                "pending": [p.model_dump(mode="json") for p in snap.pending]}  # fmt: skip
    if as_json:
        echo_json(data)
        return
    click.echo(
        f"Stack {data['stack']}: serial {data['serial']}, {len(data['resources'])} resources"
    )
    for address, r in data["resources"].items():
        # ids and statuses come from hosts and state files: escaped like any outside text
        click.echo("\n" + printable(f"{address} ({r['type']}) id={r['id']} [{r['status']}]"))
        for k, v in r["attributes"].items():
            click.echo(f"  {k} = {json.dumps(v, default=str)}")
    for p in data["pending"]:
        line = (f"pending {p['action']} of {p['address']} since "
                f"{_time(p['started_at'])} (interrupted run?)")  # fmt: skip
        click.secho("\n" + printable(line), fg="yellow")


def _time(value: Any) -> str:
    """A pending step's start as `str(datetime)` prints it, from a datetime or its JSON."""
    return str(datetime.fromisoformat(value)) if isinstance(value, str) else str(value)


@click.command()
@click.argument("name", required=False)
@stack_opt
@json_opt
@click.option("--raw", is_flag=True, help="Print a string output without quotes.")
@state_opt
@handled
def output(
    name: str | None, stack_file: Path, as_json: bool, raw: bool, state_url: str | None
) -> None:
    """The stack's outputs after the last apply."""
    target = remote(stack_file)
    ws = reader(stack_file, state_url) if target is None else None
    if name is not None:
        entry = engine.stack_output(ws, name) if ws else run.output(target, name)
        if raw and isinstance(entry["value"], str):
            click.echo(entry["value"])
        else:
            echo_json(entry["value"]) if as_json else click.echo(json.dumps(entry["value"]))
        return
    outputs = engine.stack_outputs(ws) if ws else run.outputs(target)
    if as_json:
        echo_json(outputs)
        return
    for key, entry in outputs.items():
        value = MASK if entry["sensitive"] else entry["value"]
        click.echo(f"{key} = {json.dumps(value)}")


@click.command()
@stack_opt
@json_opt
@click.option("-n", "--limit", type=int, default=100, show_default=True)
@state_opt
@handled
def events(stack_file: Path, as_json: bool, limit: int, state_url: str | None) -> None:
    """The event history (Heat's CREATE_IN_PROGRESS, CREATE_COMPLETE, ... vocabulary)."""
    target = remote(stack_file)
    if target is not None:
        evs = run.events(target, limit)
    else:
        evs = engine.events(reader(stack_file, state_url), limit)
    if as_json:
        echo_json([e.model_dump(mode="json") | {"event": e.action_status} for e in evs])
        return
    for e in evs:
        reason = f"  {e.reason}" if e.reason else ""
        # a reason quotes provider errors and console lines: never raw escapes on a terminal
        click.echo(printable(f"{e.time.isoformat(timespec='seconds')}  #{e.serial:<4} "
                             f"{e.address:<24} {e.action_status}{reason}"))  # fmt: skip
