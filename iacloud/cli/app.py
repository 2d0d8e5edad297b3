"""The `iacloud` command group, the options commands share, and how errors become messages
and exit codes.

Exit codes: 0 success; 1 error (bad input, failed step, lock held); 2 changes present
(`plan --detailed-exitcode`, drift); 130 interrupted.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from iacloud.engine import Disruption, IacloudError, UserError
from iacloud.errors import printable

EXIT_ERROR, EXIT_CHANGES, EXIT_INTERRUPTED = 1, 2, 130


def fail(exc: IacloudError) -> None:
    """Print an error: each diagnostic of a UserError on its own line."""
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
            fail(exc)
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            click.secho("Interrupted.", fg="yellow", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Abandoned:
            # worker threads are still inside provider calls: exiting normally would wait
            # for them, which is what the second Ctrl-C asked not to do
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)

    return wrapper


class Abandoned(Exception):
    """A second Ctrl-C left running steps behind (said and recorded already)."""


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, sort_keys=False))


stack_arg = click.argument("stack", type=click.Path(path_type=Path, dir_okay=False))
param_opt = click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
                         help="Set a parameter (last wins).")  # fmt: skip
env_opt = click.option("-e", "--env", "env_files", multiple=True, metavar="ENV.toml",
                       type=click.Path(path_type=Path, dir_okay=False),
                       help="Environment file with a [parameters] table.")  # fmt: skip
site_opt = click.option("--site", "site_file", metavar="SITE.toml",
                        type=click.Path(path_type=Path, dir_okay=False),
                        help="The site catalog (flavors, images, key pairs, networks); "
                        "default: IACLOUD_SITE, /etc/iacloud/site.toml, "
                        "~/.config/iacloud/site.toml.")  # fmt: skip
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
@click.option("--api", "api_url", envvar="IACLOUD_API", metavar="URL",
              help="Run plan, apply, destroy, drift, show, output and events through "
              "this `iacloud serve` (or IACLOUD_API); the token is read from "
              "IACLOUD_TOKEN.")  # fmt: skip
@click.option("--project", envvar="IACLOUD_PROJECT", metavar="NAME",
              help="The API project (or IACLOUD_PROJECT; default: the token's).")  # fmt: skip
@click.pass_context
def cli(ctx: click.Context, api_url: str | None, project: str | None) -> None:
    """Plan and apply stacks of servers, networks, volumes and images on libvirt hosts."""
    ctx.obj = ApiChoice(api_url, project) if api_url else None


class ApiChoice:
    """`--api URL`: the server the commands run through; its client is made on first use."""

    def __init__(self, url: str, project: str | None) -> None:
        self.url, self.project = url, project
        self.client: Any = None

    def connect(self) -> Any:
        from iacloud.remote.client import ApiClient, is_loopback

        if self.client is None:
            if self.url.startswith("http://") and not is_loopback(self.url):
                click.secho(f"Warning: {self.url} is plain http: the token travels in clear "
                            "text; use https://", fg="yellow", err=True)  # fmt: skip
            self.client = ApiClient(self.url, os.environ.get("IACLOUD_TOKEN", ""), self.project)
        return self.client


def remote(stack_file: Path) -> Any:
    """The stack file as a stack of the API's project (iacloud.remote.run.Target) when the
    command runs through `--api`, else None: the one switch between local and remote."""
    choice = _choice()
    if choice is None:
        return None
    from iacloud.remote.run import Target

    return Target(choice.connect(), stack_file)


def _choice() -> ApiChoice | None:
    ctx = click.get_current_context(silent=True)
    return ctx.find_object(ApiChoice) if ctx is not None else None


def local_only(what: str, given: Any) -> None:
    """An option the API cannot honour: refused, not ignored."""
    if given and _choice() is not None:
        raise UserError(f"{what} is not available through --api")
