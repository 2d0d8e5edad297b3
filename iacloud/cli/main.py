"""`iacloud` commands. Parsing and printing only; the work is in iacloud.engine.

Exit codes: 0 success; 1 error (bad input, failed step, lock held); 2 changes present
(`plan --detailed-exitcode`); 130 interrupted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from iacloud import engine, metrics, suppressions
from iacloud.drift import DriftReport
from iacloud.errors import IacloudError, UserError, printable
from iacloud.executor import ApplyResult
from iacloud.graph import build_graph, to_dot
from iacloud.plan import Plan
from iacloud.planner import PlanOptions
from iacloud.redact import MASK, Redactor
from iacloud.render import drift_markdown, drift_text, plan_json, plan_markdown, plan_text
from iacloud.schema import Disruption

EXIT_ERROR, EXIT_CHANGES, EXIT_INTERRUPTED = 1, 2, 130


def _fail(exc: IacloudError) -> None:
    if isinstance(exc, UserError):
        for d in exc.diagnostics:
            click.secho(f"Error: {d}", fg="red", err=True)
    else:
        click.secho(f"Error: {printable(str(exc))}", fg="red", err=True)


def handled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn iacloud errors into messages and exit codes: never a traceback for a mistake."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except IacloudError as exc:
            _fail(exc)
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            click.secho("Interrupted.", fg="yellow", err=True)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, sort_keys=False))


stack_arg = click.argument("stack", type=click.Path(path_type=Path, dir_okay=False))
param_opt = click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
                         help="Set a parameter (last wins).")  # fmt: skip
env_opt = click.option("-e", "--env", "env_files", multiple=True, metavar="ENV.toml",
                       type=click.Path(path_type=Path, dir_okay=False),
                       help="Environment file with a [parameters] table.")  # fmt: skip
state_opt = click.option("--state", "state_url", envvar="IACLOUD_STATE", metavar="URL",
                         help="State backend: postgresql://..., sqlite:///PATH or a path "
                         "(default: .iacloud/state.db beside the stack).")  # fmt: skip
lock_opt = click.option("--lock-timeout", type=float, default=0.0, show_default=True,
                        help="Seconds to wait for another run's lock.")  # fmt: skip
json_opt = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
stack_opt = click.option("-s", "--stack", "stack_file", envvar="IACLOUD_STACK", required=True,
                         type=click.Path(path_type=Path, dir_okay=False),
                         help="The stack file (or IACLOUD_STACK).")  # fmt: skip
disruption_choice = click.Choice([d.value for d in Disruption if d is not Disruption.NONE])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="iacloud")
def cli() -> None:
    """Plan and apply stacks of servers, networks, volumes and images on libvirt hosts."""


@cli.command()
@click.argument("stacks", nargs=-1, required=True,
                type=click.Path(path_type=Path, dir_okay=False))  # fmt: skip
@param_opt
@env_opt
@json_opt
@handled
def validate(
    stacks: tuple[Path, ...], params: tuple[str, ...], env_files: tuple[Path, ...], as_json: bool
) -> None:
    """Check stacks without touching any host. Several stacks (as a pre-commit hook passes
    them) are each checked with the same -p/-e; exit 1 if any is invalid."""
    results: list[dict[str, Any]] = []
    for stack in stacks:
        try:
            config = engine.Workspace(stack).load(params, env_files)
        except UserError as exc:
            if not as_json:
                _fail(exc)
            diagnostics = [d.to_json() for d in exc.diagnostics]
            results.append({"file": str(stack), "valid": False, "diagnostics": diagnostics})
            continue
        if not as_json:
            click.echo(f"{stack}: valid ({len(config.resources)} resources).")
        results.append({"file": str(stack), "valid": True, "stack": config.name,
                        "resources": len(config.resources)})  # fmt: skip
    if as_json:
        # one stack: the object as before (without "file"); several: a list of them
        _echo_json({k: v for k, v in results[0].items() if k != "file"}
                   if len(results) == 1 else results)  # fmt: skip
    if not all(r["valid"] for r in results):
        sys.exit(EXIT_ERROR)


def _plan_options(refresh: bool, targets: tuple[str, ...], replace: tuple[str, ...],
                  destroy: bool = False, refresh_only: bool = False) -> PlanOptions:  # fmt: skip
    if refresh_only:
        clash = [flag for flag, given in (("--no-refresh", not refresh), ("--target", targets),
                 ("--replace", replace), ("--destroy", destroy)) if given]  # fmt: skip
        if clash:
            raise UserError(f"--refresh-only cannot be combined with {', '.join(clash)}")
    return PlanOptions(refresh=refresh, destroy=destroy, targets=targets, replace=replace,
                       refresh_only=refresh_only)  # fmt: skip


refresh_only_opt = click.option(
    "--refresh-only", is_flag=True,
    help="Accept changes made outside iacloud into state; change nothing on the host.",
)  # fmt: skip


@cli.command()
@stack_arg
@param_opt
@env_opt
@click.option("-o", "--out", type=click.Path(path_type=Path, dir_okay=False),
              help="Save the plan for 'iacloud apply PLAN.json'.")  # fmt: skip
@json_opt
@click.option("--markdown", is_flag=True, help="A Markdown summary for a review comment.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0: no changes, 2: changes, 1: error.")
@click.option("--refresh/--no-refresh", default=True, show_default=True,
              help="Read the real objects before planning.")  # fmt: skip
@click.option("--target", "targets", multiple=True, metavar="ADDR",
              help="Plan only this resource and what it depends on.")  # fmt: skip
@click.option("--replace", "replace", multiple=True, metavar="ADDR", help="Force replacement.")
@click.option("--destroy", is_flag=True, help="Plan the deletion of everything.")
@refresh_only_opt
@state_opt
@lock_opt
@handled
def plan(stack: Path, params: tuple[str, ...], env_files: tuple[Path, ...], out: Path | None,
         as_json: bool, markdown: bool, detailed_exitcode: bool, refresh: bool,
         targets: tuple[str, ...], replace: tuple[str, ...], destroy: bool, refresh_only: bool,
         state_url: str | None, lock_timeout: float) -> None:  # fmt: skip
    """Show what apply would change."""
    options = _plan_options(refresh, targets, replace, destroy, refresh_only)
    ws = engine.Workspace(stack, state_url, lock_timeout)
    config = ws.load(params, env_files)
    the_plan, _ = engine.make_plan(ws, config, options)
    if out:
        engine.save_plan(the_plan, out)
    if as_json:
        _echo_json(plan_json(the_plan))
    elif markdown:
        click.echo(plan_markdown(the_plan))
    else:
        click.echo(plan_text(the_plan, colour=sys.stdout.isatty()))
        if out:
            click.echo(f"Saved the plan to {out}; apply it with: iacloud apply {out}")
    if detailed_exitcode and the_plan.has_changes:
        sys.exit(EXIT_CHANGES)


def _run_apply(ws: engine.Workspace, the_plan: Plan, auto_approve: bool, jobs: int,
               max_disruption: str | None, command: str) -> None:  # fmt: skip
    from iacloud.cli.progress import ConsoleReporter

    click.echo(plan_text(the_plan, colour=sys.stdout.isatty()))
    limit = Disruption(max_disruption) if max_disruption else None
    engine.check_disruption(the_plan, limit)
    if not the_plan.has_changes:
        if the_plan.serial > 0:
            return
    elif not auto_approve:
        if not sys.stdin.isatty():
            raise UserError(
                "refusing to change anything without --auto-approve: input is not a terminal"
            )
        if not click.confirm(f"Do you want to {command} these changes?", default=False):
            click.echo("Nothing changed.")
            return
    redactor = Redactor(the_plan.hidden_values)
    reporter = ConsoleReporter(redactor)
    try:
        result = engine.apply(ws, the_plan, jobs=jobs, reporter=reporter,
                              max_disruption=limit, command=command)  # fmt: skip
    finally:
        reporter.close()
    _report(result, redactor, the_plan)


def _report(result: ApplyResult, redactor: Redactor, the_plan: Plan) -> None:
    if the_plan.refresh_only:
        click.echo(f"\nState updated: {len(the_plan.state_updates)} resource(s).")
    else:
        done = [o for o in result.outcomes if o.status == "complete"]
        click.echo(f"\n{len(done)} step(s) complete.")
    for o in result.outcomes:
        if o.status in ("failed", "skipped"):
            error = printable(redactor.text(o.error or ""))
            click.secho(f"  {o.status}: {o.step.kind} {o.step.change.address}: {error}",
                        fg="red", err=True)  # fmt: skip
    outputs = {k: v for k, v in result.outputs.items()}
    if outputs and result.ok:
        click.echo("\nOutputs:")
        for name, entry in outputs.items():
            value = MASK if entry["sensitive"] else redactor.value(entry["value"])
            click.echo(f"  {name} = {json.dumps(value)}")
    if result.interrupted:
        click.secho("Interrupted: running steps were recorded; run apply again to finish.",
                    fg="yellow", err=True)  # fmt: skip
        sys.exit(EXIT_INTERRUPTED)
    if not result.ok:
        sys.exit(EXIT_ERROR)


@cli.command()
@click.argument("target", type=click.Path(path_type=Path, dir_okay=False))
@param_opt
@env_opt
@click.option("--auto-approve", is_flag=True, help="Do not ask for confirmation.")
@click.option("-j", "--jobs", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Steps to run at once.")  # fmt: skip
@click.option("--max-disruption", type=disruption_choice,
              help="Refuse a plan with a more disruptive change.")  # fmt: skip
@click.option("--target", "targets", multiple=True, metavar="ADDR")
@click.option("--replace", "replace", multiple=True, metavar="ADDR")
@click.option("--refresh/--no-refresh", default=True, show_default=True)
@refresh_only_opt
@state_opt
@lock_opt
@handled
def apply(target: Path, params: tuple[str, ...], env_files: tuple[Path, ...], auto_approve: bool,
          jobs: int, max_disruption: str | None, targets: tuple[str, ...],
          replace: tuple[str, ...], refresh: bool, refresh_only: bool, state_url: str | None,
          lock_timeout: float) -> None:  # fmt: skip
    """Apply a stack (plan and apply) or a saved plan (exactly as reviewed)."""
    options = _plan_options(refresh, targets, replace, refresh_only=refresh_only)
    if engine.is_plan_file(target):
        if refresh_only:
            raise UserError("--refresh-only makes a plan; a saved plan already says what it is")
        the_plan = engine.load_plan(target)
        ws = engine.Workspace(Path(the_plan.stack_file), state_url, lock_timeout)
        engine.check_saved_plan(ws, the_plan, target)
        _run_apply(ws, the_plan, True, jobs, max_disruption, "apply")
        return
    ws = engine.Workspace(target, state_url, lock_timeout)
    config = ws.load(params, env_files)
    # One lock from plan to apply: a run that waited plans against the other run's result.
    with ws.locked(config.name, "apply"):
        the_plan, _ = engine.make_plan(ws, config, options)
        _run_apply(ws, the_plan, auto_approve, jobs, max_disruption, "apply")


@cli.command()
@stack_arg
@click.option("--auto-approve", is_flag=True)
@click.option("-j", "--jobs", default=4, show_default=True, type=click.IntRange(1, 64))
@state_opt
@lock_opt
@handled
def destroy(stack: Path, auto_approve: bool, jobs: int, state_url: str | None,
            lock_timeout: float) -> None:  # fmt: skip
    """Delete everything the stack created, in reverse dependency order."""
    ws = engine.Workspace(stack, state_url, lock_timeout)
    the_plan, _ = engine.destroy_plan(ws, stack_name_of(stack))
    _run_apply(ws, the_plan, auto_approve, jobs, None, "destroy")


@cli.command()
@stack_arg
@param_opt
@env_opt
@json_opt
@click.option("--markdown", is_flag=True, help="A Markdown report for a review or chat message.")
@click.option(
    "--metrics-file",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="PATH",
    help="Also write Prometheus textfile metrics to PATH (replaced atomically).",
)
@click.option(
    "--ignore",
    "ignore_file",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="FILE",
    help="Suppressions (default: .iacloudignore beside the stack).",
)
@click.option(
    "--all",
    "include_unmanaged",
    is_flag=True,
    help="Also list objects that carry no iacloud tag at all.",
)
@click.option("-q", "--quiet", is_flag=True,
              help="Print nothing when in sync (cron mails any output).")  # fmt: skip
@state_opt
def drift(stack: Path, params: tuple[str, ...], env_files: tuple[Path, ...], as_json: bool,
          markdown: bool, metrics_file: Path | None, ignore_file: Path | None,
          include_unmanaged: bool, quiet: bool, state_url: str | None) -> None:  # fmt: skip
    """Compare what exists with what was applied. Read-only: writes no state, takes no lock.

    Exit 0: in sync; 2: drift (changed, missing or orphaned objects); 1: error.
    """
    started, wall = time.monotonic(), time.time()
    report = None
    try:
        ws = engine.Workspace(stack, state_url)
        config = ws.load(params, env_files)
        ignores = suppressions.load(stack, ignore_file)
        report = engine.drift(ws, config, ignores, include_unmanaged)
    except IacloudError as exc:
        _fail(exc)
        _write_metrics(metrics_file, stack, None, wall, time.monotonic() - started)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        click.secho("Interrupted.", fg="yellow", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if quiet and not report.drifted and not report.expired_suppressions:
        pass
    elif as_json:
        _echo_json(report.model_dump(mode="json"))
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
            name = stack_name_of(stack)
        except UserError:  # the stack file itself is what failed: label the series by path
            name = stack.stem
    try:
        metrics.write(path, metrics.render(name, report, wall, duration))
    except UserError as exc:
        _fail(exc)
        sys.exit(EXIT_ERROR)


def stack_name_of(path: Path) -> str:
    """The stack's name without loading it whole: read commands need no parameters."""
    from iacloud import limits

    try:
        data = limits.parse_toml(limits.read_text(path))
    except FileNotFoundError:
        raise UserError(f"{path}: stack file not found") from None
    except (limits.InputError, ValueError) as exc:  # ValueError: TOMLDecodeError
        raise UserError(f"{path}: cannot read the stack file: {exc}") from None
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise UserError(f"{path}: 'name' must be a non-empty string")
    return name


def _workspace(
    stack_file: Path, state_url: str | None, read_only: bool = False
) -> tuple[engine.Workspace, str]:
    """The workspace of a state command; read commands open the state read-only, so they
    change nothing in the file (not even its journal mode) and run beside an apply."""
    name = stack_name_of(stack_file)
    return engine.Workspace(stack_file, state_url, read_only=read_only), name


def _output_entries(outputs: dict[str, Any], stack: str) -> dict[str, dict[str, Any]]:
    """The recorded outputs, each checked: a damaged one is named, not a traceback."""
    for key, entry in outputs.items():
        if not (isinstance(entry, dict) and "value" in entry
                and isinstance(entry.get("sensitive"), bool)):  # fmt: skip
            raise UserError(
                f"the state of stack '{stack}' is damaged: output '{printable(str(key))[:80]}' "
                "is not a table with 'value' and 'sensitive'"
            )
    return outputs


@cli.command()
@stack_opt
@json_opt
@click.option("--serial", type=int, help="Show an older state version.")
@state_opt
@handled
def show(stack_file: Path, as_json: bool, serial: int | None, state_url: str | None) -> None:
    """The recorded state: every resource with its id and attributes."""
    ws, name = _workspace(stack_file, state_url, read_only=True)
    snap = ws.backend.snapshot(name, serial)
    sensitive = _sensitive_attrs(ws)
    resources = {
        a: _public(r.model_dump(mode="json"), sensitive) for a, r in snap.resources.items()
    }
    if as_json:
        _echo_json({"stack": name, "stack_id": snap.stack_id, "serial": snap.serial,
                    "lineage": snap.lineage,
                    "resources": resources,
                    "pending": [p.model_dump(mode="json") for p in snap.pending]})  # fmt: skip
        return
    click.echo(f"Stack {name}: serial {snap.serial}, {len(snap.resources)} resources")
    for address, r in resources.items():
        click.echo(f"\n{address} ({r['type']}) id={r['id']} [{r['status']}]")
        for k, v in r["attributes"].items():
            click.echo(f"  {k} = {json.dumps(v, default=str)}")
    for p in snap.pending:
        click.secho(f"\npending {p.action} of {p.address} since {p.started_at} (interrupted run?)",
                    fg="yellow")  # fmt: skip


def _sensitive_attrs(ws: engine.Workspace) -> dict[str, tuple[str, ...]]:
    return {name: t.sensitive_attributes for name, t in ws.registry.types.items()}


def _public(r: dict[str, Any], sensitive: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """A recorded resource with sensitive attributes and hidden-derived inputs masked."""
    for attr in (*sensitive.get(r["type"], ()), *r.get("sensitive_attributes", ())):
        if attr in r["attributes"]:
            r["attributes"][attr] = MASK
    for key in r.get("sensitive_inputs", ()):
        if key in r["inputs"]:
            r["inputs"][key] = MASK
    return r


@cli.command()
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
    ws, stack = _workspace(stack_file, state_url, read_only=True)
    outputs = _output_entries(ws.backend.snapshot(stack).outputs, stack)
    if name is not None:
        if name not in outputs:
            raise UserError(
                f"no output '{name}' in stack '{stack}' (outputs: {', '.join(outputs) or 'none'})"
            )
        entry = outputs[name]
        if raw and isinstance(entry["value"], str):
            click.echo(entry["value"])
        else:
            _echo_json(entry["value"]) if as_json else click.echo(json.dumps(entry["value"]))
        return
    if as_json:
        _echo_json(outputs)
        return
    for key, entry in outputs.items():
        value = MASK if entry["sensitive"] else entry["value"]
        click.echo(f"{key} = {json.dumps(value)}")


@cli.command()
@stack_opt
@json_opt
@click.option("-n", "--limit", type=int, default=100, show_default=True)
@state_opt
@handled
def events(stack_file: Path, as_json: bool, limit: int, state_url: str | None) -> None:
    """The event history (Heat's CREATE_IN_PROGRESS, CREATE_COMPLETE, ... vocabulary)."""
    ws, stack = _workspace(stack_file, state_url, read_only=True)
    evs = ws.backend.events(stack, limit)
    if as_json:
        _echo_json([e.model_dump(mode="json") | {"event": e.action_status} for e in evs])
        return
    for e in evs:
        reason = f"  {e.reason}" if e.reason else ""
        click.echo(f"{e.time.isoformat(timespec='seconds')}  #{e.serial:<4} {e.address:<24} "
                   f"{e.action_status}{reason}")  # fmt: skip


@cli.group()
def state() -> None:
    """Inspect and edit recorded state (a new version is written; history is kept)."""


@state.command("list")
@stack_opt
@json_opt
@state_opt
@handled
def state_list(stack_file: Path, as_json: bool, state_url: str | None) -> None:
    ws, stack = _workspace(stack_file, state_url, read_only=True)
    snap = ws.backend.snapshot(stack)
    if as_json:
        _echo_json([{"address": r.address, "type": r.type, "id": r.id}
                    for r in snap.resources.values()])  # fmt: skip
        return
    for r in snap.resources.values():
        click.echo(f"{r.address}\t{r.type}\t{r.id}")


@state.command("show")
@click.argument("address")
@stack_opt
@json_opt
@state_opt
@handled
def state_show(address: str, stack_file: Path, as_json: bool, state_url: str | None) -> None:
    ws, stack = _workspace(stack_file, state_url, read_only=True)
    snap = ws.backend.snapshot(stack)
    if address not in snap.resources:
        raise UserError(f"no resource '{address}' in the state of stack '{stack}'")
    data = _public(snap.resources[address].model_dump(mode="json"), _sensitive_attrs(ws))
    if as_json:
        _echo_json(data)
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
    ws, stack = _workspace(stack_file, state_url, read_only=True)
    versions = ws.backend.versions(stack)
    if as_json:
        _echo_json([v.model_dump(mode="json") for v in versions])
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
    ws, stack = _workspace(stack_file, state_url)
    snap = ws.backend.snapshot(stack)
    missing = [a for a in addresses if a not in snap.resources]
    if missing:
        raise UserError(f"not in the state of stack '{stack}': {', '.join(missing)}")
    serial = engine.state_surgery(ws, stack, "state rm", dict.fromkeys(addresses))
    click.echo(f"Forgot {len(addresses)} resource(s); state serial {serial}.")


@state.command("mv")
@click.argument("source")
@click.argument("destination")
@stack_opt
@state_opt
@handled
def state_mv(source: str, destination: str, stack_file: Path, state_url: str | None) -> None:
    """Record an object under a new address (after a rename in the stack)."""
    from iacloud.expressions import ExpressionError, parse_address

    ws, stack = _workspace(stack_file, state_url)
    snap = ws.backend.snapshot(stack)
    if source not in snap.resources:
        raise UserError(f"no resource '{source}' in the state of stack '{stack}'")
    if destination in snap.resources:
        raise UserError(f"'{destination}' is already in the state of stack '{stack}'")
    try:
        parse_address(destination)
    except ExpressionError as exc:
        raise UserError(f"destination: {exc}") from None
    moved = snap.resources[source].model_copy(update={"address": destination})
    serial = engine.state_surgery(ws, stack, "state mv", {source: None, destination: moved})
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
    ws, stack = _workspace(stack_file, state_url)
    info = ws.backend.force_unlock(stack, lock_id)
    click.echo(f"Removed the lock of {info.describe()}." if info else "The stack was not locked.")


def _copy_state(stack_file: Path, state_url: str | None, other_url: str, push: bool,
                lock_timeout: float) -> None:  # fmt: skip
    from iacloud.state import open_backend
    from iacloud.state.migrate import copy_stack
    from iacloud.state.pg_url import mask_url

    ws, stack = _workspace(stack_file, state_url)
    here = mask_url(state_url) if state_url else "the stack's own SQLite state"
    there = mask_url(other_url)
    if _store_key(state_url, stack_file) == _store_key(other_url, stack_file):
        raise UserError(f"{there} is the stack's own state: nothing to copy")
    other = open_backend(other_url, stack_file.resolve().parent)
    try:
        src, dst = (ws.backend, other) if push else (other, ws.backend)
        names = (here, there) if push else (there, here)
        result = copy_stack(src, dst, stack, *names, lock_timeout=lock_timeout)
    finally:
        other.close()
    if result.up_to_date:
        click.echo(f"Stack {stack}: {names[1]} already has serial {result.serial}; nothing copied.")
    else:
        click.echo(f"Copied stack {stack} ({result.versions} new version(s), serial "
                   f"{result.serial}, whole history) from {names[0]} to {names[1]}.")  # fmt: skip


def _store_key(url: str | None, stack_file: Path) -> str:
    """What identifies a store, so that a copy onto itself is refused."""
    if url is None or url.startswith("sqlite:///") or "://" not in url:
        path = url[len("sqlite://") :] if url and url.startswith("sqlite:///") else url
        return (
            str(Path(path).resolve())
            if path
            else str(stack_file.resolve().parent / ".iacloud" / "state.db")
        )
    return url


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


@cli.command("import")
@click.argument("address")
@click.argument("id")
@stack_opt
@param_opt
@env_opt
@state_opt
@lock_opt
@handled
def import_cmd(
    address: str,
    id: str,
    stack_file: Path,
    params: tuple[str, ...],
    env_files: tuple[Path, ...],
    state_url: str | None,
    lock_timeout: float,
) -> None:
    """Adopt an existing object as ADDRESS of the stack."""
    ws = engine.Workspace(stack_file, state_url, lock_timeout)
    config = ws.load(params, env_files)
    rs = engine.import_resource(ws, config, address, id)
    click.echo(f"Imported {rs.type} {rs.id} as {address}.")


@cli.command()
@stack_arg
@param_opt
@env_opt
@click.option(
    "--format", "fmt", type=click.Choice(["dot", "svg"]), default="dot", show_default=True
)
@click.option("-o", "--out", type=click.Path(path_type=Path, dir_okay=False))
@handled
def graph(stack: Path, params: tuple[str, ...], env_files: tuple[Path, ...], fmt: str,
          out: Path | None) -> None:  # fmt: skip
    """The dependency graph, as Graphviz DOT or SVG."""
    config = engine.Workspace(stack).load(params, env_files)
    dot = to_dot(build_graph(config))
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


@cli.command()
@json_opt
@handled
def doctor(as_json: bool) -> None:
    """Check the host: libvirtd, virtualization, slow defines, pool, dnsmasq, nftables."""
    from iacloud.doctor import run_checks
    from iacloud.provider import Registry

    checks = run_checks(Registry.discover())
    if as_json:
        _echo_json([c.__dict__ for c in checks])
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


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    cli(prog_name="iacloud")


if __name__ == "__main__":
    main()
