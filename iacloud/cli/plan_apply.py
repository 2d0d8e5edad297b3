"""The commands that plan and change: plan, apply (a stack or a saved plan), destroy."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import click

from iacloud import engine
from iacloud.apply_summary import ApplySummary
from iacloud.cli.app import (
    EXIT_CHANGES,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    Abandoned,
    disruption_choice,
    echo_json,
    env_opt,
    handled,
    json_opt,
    local_only,
    lock_opt,
    param_opt,
    remote,
    site_opt,
    stack_arg,
    state_opt,
)
from iacloud.cli.progress import ConsoleReporter
from iacloud.engine import ApplyResult, Disruption, Plan, PlanOptions, UserError
from iacloud.errors import printable
from iacloud.redact import Redactor
from iacloud.remote import run
from iacloud.render import plan_json, plan_markdown, plan_text


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


@click.command()
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
@site_opt
@state_opt
@lock_opt
@handled
def plan(stack: Path, params: tuple[str, ...], env_files: tuple[Path, ...], out: Path | None,
         as_json: bool, markdown: bool, detailed_exitcode: bool, refresh: bool,
         targets: tuple[str, ...], replace: tuple[str, ...], destroy: bool, refresh_only: bool,
         site_file: Path | None, state_url: str | None, lock_timeout: float) -> None:  # fmt: skip
    """Show what apply would change."""
    options = _plan_options(refresh, targets, replace, destroy, refresh_only)
    target = remote(stack)
    if target is not None:
        _local_options(options)
        local_only("plan -o (a saved plan)", out)
        the_plan = run.plan(target, params, env_files).plan
    else:
        ws = engine.Workspace(stack, state_url, lock_timeout, site_file=site_file)
        the_plan, _ = engine.make_plan(ws, ws.load(params, env_files), options)
    if out:
        engine.save_plan(the_plan, out)
    if as_json:
        echo_json(plan_json(the_plan))
    elif markdown:
        click.echo(plan_markdown(the_plan))
    else:
        click.echo(plan_text(the_plan, colour=sys.stdout.isatty()))
        if out:
            click.echo(f"Saved the plan to {out}; apply it with: iacloud apply {out}")
    if detailed_exitcode and the_plan.has_changes:
        sys.exit(EXIT_CHANGES)


def _local_options(options: PlanOptions) -> None:
    """The plan options the API's preview does not take: refused with --api."""
    for flag, given in (("--no-refresh", not options.refresh), ("--target", options.targets),
                        ("--replace", options.replace), ("--destroy", options.destroy),
                        ("--refresh-only", options.refresh_only)):  # fmt: skip
        local_only(flag, given)


def _ask(auto_approve: bool, command: str) -> Callable[[Plan], bool] | None:
    """The confirmation engine.apply asks for a plan with changes (None: approved)."""
    if auto_approve:
        return None

    def approve(_: Plan) -> bool:
        if not sys.stdin.isatty():
            raise UserError(
                "refusing to change anything without --auto-approve: input is not a terminal"
            )
        if not click.confirm(f"Do you want to {command} these changes?", default=False):
            click.echo("Nothing changed.")
            return False
        return True

    return approve


def _run_apply(ws: engine.Workspace, the_plan: Plan, auto_approve: bool, jobs: int,
               max_disruption: str | None, command: str,
               rollback: bool = False) -> None:  # fmt: skip
    click.echo(plan_text(the_plan, colour=sys.stdout.isatty()))
    limit = Disruption(max_disruption) if max_disruption else None
    if not the_plan.has_changes and the_plan.serial > 0:
        return  # nothing to do and a state to keep: no new version (a new stack gets one)
    redactor = Redactor(the_plan.hidden_values)
    reporter = ConsoleReporter(redactor)
    try:
        result = engine.apply(ws, the_plan, jobs=jobs, reporter=reporter, max_disruption=limit,
                              command=command, approve=_ask(auto_approve, command),
                              rollback=rollback)  # fmt: skip
    finally:
        reporter.close()
    if result is not None:
        undone = result.rollback
        _report(ApplySummary.of(result, redactor, len(the_plan.state_updates),
                                the_plan.refresh_only),
                None if undone is None else lambda: _report_rollback(undone, redactor))  # fmt: skip


def _run_remote(target: run.Target, proposal: run.Proposal, auto_approve: bool,
                max_disruption: str | None, command: str) -> None:  # fmt: skip
    """_run_apply through the API: the server's preview, then its operation followed."""
    the_plan = proposal.plan
    click.echo(plan_text(the_plan, colour=sys.stdout.isatty()))
    if not the_plan.has_changes and the_plan.serial > 0:
        return
    engine.check_disruption(the_plan, Disruption(max_disruption) if max_disruption else None)
    approve = _ask(auto_approve, command)
    if the_plan.has_changes and approve is not None and not approve(the_plan):
        return
    op = run.submit(target, proposal, destroy=command == "destroy")
    reporter = ConsoleReporter(Redactor(()))
    try:
        finished = run.Following(target.client, op["id"], reporter).run()
    except KeyboardInterrupt:
        click.secho(f"Left the operation {op['id']} running on the server; it was asked to "
                    "start no new step.", fg="yellow", err=True)  # fmt: skip
        raise Abandoned() from None
    finally:
        reporter.close()
    _report(run.summary(finished))


def _report(summary: ApplySummary, rollback_report: Callable[[], None] | None = None) -> None:
    if summary.refresh_only:
        click.echo(f"\nState updated: {summary.state_updates} resource(s).")
    else:
        click.echo(f"\n{summary.complete} step(s) complete.")
    for status, step, error in summary.problems:
        click.secho(f"  {status}: {step}: {error}", fg="red", err=True)
    if summary.outputs and summary.ok:
        click.echo("\nOutputs:")
        for name, value in summary.outputs.items():
            click.echo(f"  {name} = {json.dumps(value)}")
    if summary.abandoned:
        click.secho(
            f"Aborted: left {len(summary.abandoned)} running step(s) unfinished: "
            f"{', '.join(summary.abandoned)}. Their pending operations stay in state; the next "
            "apply or destroy finds what they made by its ownership tag.",
            fg="yellow", err=True,
        )  # fmt: skip
        raise Abandoned()
    if summary.interrupted:
        click.secho("Interrupted: running steps were recorded; run apply again to finish.",
                    fg="yellow", err=True)  # fmt: skip
        sys.exit(EXIT_INTERRUPTED)
    if rollback_report is not None:
        rollback_report()
    if not summary.ok:
        sys.exit(EXIT_ERROR)


def _report_rollback(rollback: ApplyResult, redactor: Redactor) -> None:
    done = sum(1 for o in rollback.outcomes if o.status == "complete")
    if rollback.ok:
        click.secho(f"Rolled back ({done} step(s)): ROLLBACK_COMPLETE, the state is as before "
                    "the run.", fg="yellow", err=True)  # fmt: skip
        return
    click.secho("Rollback failed: ROLLBACK_FAILED (see 'iacloud events').", fg="red", err=True)
    for o in rollback.outcomes:
        if o.status in ("failed", "skipped", "not started"):
            error = printable(redactor.text(o.error or ""))
            click.secho(f"  rollback {o.status}: {o.step.kind} {o.step.change.address}: {error}",
                        fg="red", err=True)  # fmt: skip


@click.command()
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
@site_opt
@click.option("--rollback", is_flag=True,
              help="If a step fails, undo the run: delete what it created, restore what it "
                   "updated (Heat's disable_rollback = false).")  # fmt: skip
@state_opt
@lock_opt
@handled
def apply(target: Path, params: tuple[str, ...], env_files: tuple[Path, ...], auto_approve: bool,
          jobs: int, max_disruption: str | None, targets: tuple[str, ...],
          replace: tuple[str, ...], refresh: bool, refresh_only: bool, rollback: bool,
          site_file: Path | None,
          state_url: str | None, lock_timeout: float) -> None:  # fmt: skip
    """Apply a stack (plan and apply) or a saved plan (exactly as reviewed)."""
    options = _plan_options(refresh, targets, replace, refresh_only=refresh_only)
    api = remote(target)
    if api is not None:
        local_only("apply PLAN.json (a saved plan; the server plans when it applies)",
                   engine.is_plan_file(target))  # fmt: skip
        local_only("--rollback", rollback)
        _local_options(options)
        _run_remote(api, run.plan(api, params, env_files), auto_approve, max_disruption, "apply")
        return
    if engine.is_plan_file(target):
        if refresh_only:
            raise UserError("--refresh-only makes a plan; a saved plan already says what it is")
        the_plan = engine.load_plan(target)
        ws = engine.Workspace(Path(the_plan.stack_file), state_url, lock_timeout)
        engine.check_saved_plan(ws, the_plan, target)
        _run_apply(ws, the_plan, True, jobs, max_disruption, "apply", rollback)
        return
    ws = engine.Workspace(target, state_url, lock_timeout, site_file=site_file)
    config = ws.load(params, env_files)
    # One lock from plan to apply: a run that waited plans against the other run's result.
    with ws.locked(config.name, "apply"):
        the_plan, _ = engine.make_plan(ws, config, options)
        _run_apply(ws, the_plan, auto_approve, jobs, max_disruption, "apply", rollback)


@click.command()
@stack_arg
@param_opt
@env_opt
@click.option("--auto-approve", is_flag=True)
@click.option("-j", "--jobs", default=4, show_default=True, type=click.IntRange(1, 64))
@site_opt
@state_opt
@lock_opt
@handled
def destroy(stack: Path, params: tuple[str, ...], env_files: tuple[Path, ...], auto_approve: bool,
            jobs: int, site_file: Path | None, state_url: str | None,
            lock_timeout: float) -> None:  # fmt: skip
    """Delete everything the stack created, in reverse dependency order (site images stay)."""
    api = remote(stack)
    if api is not None:
        _run_remote(api, run.destroy_plan(api), auto_approve, None, "destroy")
        return
    ws = engine.Workspace(stack, state_url, lock_timeout, site_file=site_file)
    name, settings = engine.destroy_settings(ws, ws.name, params, env_files)
    with ws.locked(name, "destroy"):
        the_plan, _ = engine.destroy_plan(ws, name, provider_settings=settings)
        _run_apply(ws, the_plan, auto_approve, jobs, None, "destroy")
