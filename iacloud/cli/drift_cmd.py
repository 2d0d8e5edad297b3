"""`iacloud drift`: what exists against what was applied, with optional Prometheus metrics."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from iacloud import engine, metrics
from iacloud.cli.app import (
    EXIT_CHANGES,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    echo_json,
    env_opt,
    fail,
    json_opt,
    local_only,
    param_opt,
    remote,
    site_opt,
    stack_arg,
    state_opt,
)
from iacloud.engine import DriftReport, IacloudError, UserError
from iacloud.remote import run
from iacloud.render import drift_markdown, drift_text


@click.command()
@stack_arg
@param_opt
@env_opt
@json_opt
@click.option("--markdown", is_flag=True, help="A Markdown report for a review or chat message.")
@click.option("--metrics-file", type=click.Path(path_type=Path, dir_okay=False), metavar="PATH",
              help="Also write Prometheus textfile metrics to PATH "
              "(replaced atomically).")  # fmt: skip
@click.option("--ignore", "ignore_file", type=click.Path(path_type=Path, dir_okay=False),
              metavar="FILE",
              help="Suppressions (default: .iacloudignore beside the stack).")  # fmt: skip
@click.option("--all", "include_unmanaged", is_flag=True,
              help="Also list objects that carry no iacloud tag at all.")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True,
              help="Print nothing when in sync (cron mails any output).")  # fmt: skip
@site_opt
@state_opt
def drift(stack: Path, params: tuple[str, ...], env_files: tuple[Path, ...], as_json: bool,
          markdown: bool, metrics_file: Path | None, ignore_file: Path | None,
          include_unmanaged: bool, quiet: bool, site_file: Path | None,
          state_url: str | None) -> None:  # fmt: skip
    """Compare what exists with what was applied. Read-only: writes no state, takes no lock.

    Exit 0: in sync; 2: drift (changed, missing or orphaned objects); 1: error.
    """
    started, wall = time.monotonic(), time.time()
    try:
        target = remote(stack)
        if target is not None:
            # the server checks the stack as applied, with its parameters and no suppressions
            for what, given in (("-p/-e", params or env_files), ("--ignore", ignore_file),
                                ("--all", include_unmanaged)):  # fmt: skip
                local_only(what, given)
            report = run.drift(target)
        else:
            ws = engine.Workspace(stack, state_url, site_file=site_file)
            config = ws.load(params, env_files)
            ignores = engine.load_suppressions(stack, ignore_file)
            report = engine.drift(ws, config, ignores, include_unmanaged)
    except IacloudError as exc:
        fail(exc)
        _write_metrics(metrics_file, stack, None, wall, time.monotonic() - started)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        click.secho("Interrupted.", fg="yellow", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if quiet and not report.drifted and not report.expired_suppressions:
        pass
    elif as_json:
        echo_json(report.model_dump(mode="json"))
    elif markdown:
        click.echo(drift_markdown(report), nl=False)
    else:
        click.echo(drift_text(report, colour=sys.stdout.isatty()))
    _write_metrics(metrics_file, stack, report, wall, report.duration_seconds)
    if report.drifted:
        sys.exit(EXIT_CHANGES)


def _write_metrics(
    path: Path | None, stack: Path, report: DriftReport | None, wall: float, duration: float
) -> None:
    if path is None:
        return
    if report is not None:
        name = report.stack
    else:
        try:
            name = engine.stack_name(stack)
        except UserError:  # the stack file itself is what failed: label the series by path
            name = stack.stem
    try:
        metrics.write(path, metrics.render(name, report, wall, duration))
    except UserError as exc:
        fail(exc)
        sys.exit(EXIT_ERROR)
