"""`iacloud state ...` (inspect and edit recorded state) and `iacloud import`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from iacloud import engine
from iacloud.cli.app import (
    echo_json,
    env_opt,
    handled,
    json_opt,
    lock_opt,
    param_opt,
    site_opt,
    stack_opt,
    state_opt,
)
from iacloud.cli.read_cmds import reader


@click.group()
def state() -> None:
    """Inspect and edit recorded state (a new version is written; history is kept)."""


@state.command("list")
@stack_opt
@json_opt
@state_opt
@handled
def state_list(stack_file: Path, as_json: bool, state_url: str | None) -> None:
    resources = engine.state_view(reader(stack_file, state_url)).snapshot.resources.values()
    if as_json:
        echo_json([{"address": r.address, "type": r.type, "id": r.id} for r in resources])
        return
    for r in resources:
        click.echo(f"{r.address}\t{r.type}\t{r.id}")


@state.command("show")
@click.argument("address")
@stack_opt
@json_opt
@state_opt
@handled
def state_show(address: str, stack_file: Path, as_json: bool, state_url: str | None) -> None:
    data = engine.resource_view(reader(stack_file, state_url), address)
    if as_json:
        echo_json(data)
        return
    for key in ("address", "type", "id", "status", "dependencies"):
        click.echo(f"{key}: {data[key]}")
    for section in ("inputs", "attributes"):
        click.echo(f"{section}:")
        for k, v in data[section].items():
            click.echo(f"  {k} = {json.dumps(v, default=str)}")


@state.command("versions")
@stack_opt
@json_opt
@state_opt
@handled
def state_versions(stack_file: Path, as_json: bool, state_url: str | None) -> None:
    versions = engine.versions(reader(stack_file, state_url))
    if as_json:
        echo_json([v.model_dump(mode="json") for v in versions])
        return
    for v in versions:
        click.echo(
            f"{v.serial}\t{v.command}\t{v.status}\t{v.created_at.isoformat(timespec='seconds')}"
        )


@state.command("rm")
@click.argument("addresses", nargs=-1, required=True)
@stack_opt
@state_opt
@handled
def state_rm(addresses: tuple[str, ...], stack_file: Path, state_url: str | None) -> None:
    """Forget objects without deleting them."""
    serial = engine.state_rm(engine.Workspace(stack_file, state_url), addresses)
    click.echo(f"Forgot {len(addresses)} resource(s); state serial {serial}.")


@state.command("mv")
@click.argument("source")
@click.argument("destination")
@stack_opt
@state_opt
@handled
def state_mv(source: str, destination: str, stack_file: Path, state_url: str | None) -> None:
    """Record an object under a new address (after a rename in the stack)."""
    serial = engine.state_mv(engine.Workspace(stack_file, state_url), source, destination)
    click.echo(f"Moved {source} to {destination}; state serial {serial}.")


@state.command("unlock")
@click.argument("lock_id")
@stack_opt
@state_opt
@handled
def state_unlock(lock_id: str, stack_file: Path, state_url: str | None) -> None:
    """Remove the lock LOCK_ID (printed in the 'locked' message) left by a run that died.

    Only that lock is removed: a lock some other run took since is refused. In PostgreSQL a
    dead run's lock is already gone; a live holder's database session is ended, which also
    stops it from writing.
    """
    info = engine.unlock(engine.Workspace(stack_file, state_url), lock_id)
    click.echo(f"Removed the lock of {info.describe()}." if info else "The stack was not locked.")


def _copy_state(stack_file: Path, state_url: str | None, other_url: str, push: bool,
                lock_timeout: float) -> None:  # fmt: skip
    ws = engine.Workspace(stack_file, state_url)
    copy = engine.copy_state(ws, other_url, push, lock_timeout)
    result, stack = copy.result, ws.name
    if result.up_to_date:
        click.echo(
            f"Stack {stack}: {copy.destination} already has serial {result.serial}; nothing copied."
        )
    else:
        click.echo(f"Copied stack {stack} ({result.versions} new version(s), serial "
                   f"{result.serial}, whole history) from {copy.source} to "
                   f"{copy.destination}.")  # fmt: skip


@state.command("push")
@click.option("--to", "to_url", required=True, metavar="URL",
              help="Where to copy it: postgresql://..., sqlite:///PATH, a path.")  # fmt: skip
@stack_opt
@state_opt
@lock_opt
@handled
def state_push(to_url: str, stack_file: Path, state_url: str | None, lock_timeout: float) -> None:
    """Copy the stack's whole state history to another backend.

    Refused if the destination holds a different lineage of the stack, a newer serial, or a
    history that went its own way. Both stores are locked while copying.
    """
    _copy_state(stack_file, state_url, to_url, True, lock_timeout)


@state.command("pull")
@click.option("--from", "from_url", required=True, metavar="URL",
              help="Copy from: postgresql://..., sqlite:///PATH, a path.")  # fmt: skip
@stack_opt
@state_opt
@lock_opt
@handled
def state_pull(from_url: str, stack_file: Path, state_url: str | None,
               lock_timeout: float) -> None:  # fmt: skip
    """Copy the stack's whole state history from another backend into this one (same checks
    as push)."""
    _copy_state(stack_file, state_url, from_url, False, lock_timeout)


@click.command("import")
@click.argument("address")
@click.argument("id")
@stack_opt
@param_opt
@env_opt
@site_opt
@state_opt
@lock_opt
@handled
def import_cmd(address: str, id: str, stack_file: Path, params: tuple[str, ...],
               env_files: tuple[Path, ...], site_file: Path | None, state_url: str | None,
               lock_timeout: float) -> None:  # fmt: skip
    """Adopt an existing object as ADDRESS of the stack."""
    ws = engine.Workspace(stack_file, state_url, lock_timeout, site_file=site_file)
    rs = engine.import_resource(ws, ws.load(params, env_files), address, id)
    click.echo(f"Imported {rs.type} {rs.id} as {address}.")
