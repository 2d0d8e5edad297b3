"""Commands that read stack files only, never state or the host: validate, graph, convert."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from iacloud import engine
from iacloud.cli.app import (
    EXIT_ERROR,
    echo_json,
    env_opt,
    fail,
    handled,
    json_opt,
    param_opt,
    site_opt,
    stack_arg,
)
from iacloud.engine import IacloudError, UserError


@click.command()
@click.argument("stacks", nargs=-1, required=True,
                type=click.Path(path_type=Path, dir_okay=False))  # fmt: skip
@param_opt
@env_opt
@site_opt
@json_opt
@handled
def validate(
    stacks: tuple[Path, ...],
    params: tuple[str, ...],
    env_files: tuple[Path, ...],
    site_file: Path | None,
    as_json: bool,
) -> None:
    """Check stacks without touching any host. Several stacks (as a pre-commit hook passes
    them) are each checked with the same -p/-e; exit 1 if any is invalid."""
    results: list[dict[str, Any]] = []
    for stack in stacks:
        try:
            config = engine.Workspace(stack, site_file=site_file).load(params, env_files)
        except UserError as exc:
            if not as_json:
                fail(exc)
            diagnostics = [d.to_json() for d in exc.diagnostics]
            results.append({"file": str(stack), "valid": False, "diagnostics": diagnostics})
            continue
        if not as_json:
            click.echo(f"{stack}: valid ({len(config.resources)} resources).")
            for note in config.notes:  # accepted, but without effect here (HOT properties)
                click.echo(f"  note: {note}")
        result = {"file": str(stack), "valid": True, "stack": config.name,
                  "resources": len(config.resources)}  # fmt: skip
        if config.notes:
            result["notes"] = [n.to_json() for n in config.notes]
        results.append(result)
    if as_json:
        # one stack: the object as before (without "file"); several: a list of them
        echo_json({k: v for k, v in results[0].items() if k != "file"}
                  if len(results) == 1 else results)  # fmt: skip
    if not all(r["valid"] for r in results):
        sys.exit(EXIT_ERROR)


@click.command()
@stack_arg
@param_opt
@env_opt
@site_opt
@click.option(
    "--format", "fmt", type=click.Choice(["dot", "svg"]), default="dot", show_default=True
)
@click.option("-o", "--out", type=click.Path(path_type=Path, dir_okay=False))
@handled
def graph(stack: Path, params: tuple[str, ...], env_files: tuple[Path, ...],
          site_file: Path | None, fmt: str, out: Path | None) -> None:  # fmt: skip
    """The dependency graph, as Graphviz DOT or SVG."""
    ws = engine.Workspace(stack, site_file=site_file)
    dot = engine.dependency_dot(ws.load(params, env_files))
    if fmt == "svg":
        if not shutil.which("dot"):
            raise IacloudError("--format svg needs Graphviz's 'dot' (apt-get install graphviz)")
        data = subprocess.run(
            ["dot", "-Tsvg"], input=dot.encode(), capture_output=True, check=True
        ).stdout
        if out:
            out.write_bytes(data)
        else:
            sys.stdout.buffer.write(data)
        return
    if out:
        out.write_text(dot)
    else:
        click.echo(dot, nl=False)


@click.command()
@click.argument("template", type=click.Path(path_type=Path, dir_okay=False))
@param_opt
@env_opt
@site_opt
@click.option("-o", "--out", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the TOML stack here (default: print it).")  # fmt: skip
@handled
def convert(template: Path, params: tuple[str, ...], env_files: tuple[Path, ...],
            site_file: Path | None, out: Path | None) -> None:  # fmt: skip
    """Write a HOT template as the equivalent TOML stack, with comments where the mapping is
    lossy. The template must load (give -p/-e as for plan); the result is checked to load into
    the same stack before it is written."""
    if out is not None and out.resolve() == template.resolve():
        raise UserError(f"{out}: the output would overwrite the template")
    ws = engine.Workspace(template, site_file=site_file)
    result = engine.convert(ws, params, env_files, out)
    if out is None:
        click.echo(result.text, nl=False)
        return
    click.echo(f"Wrote {out}.")
    for note in result.notes:
        click.echo(f"Note: {note}")
