"""The `iacloud` console script: the command group with every command module's commands.

Commands parse options, call iacloud.engine and render; see iacloud/cli/app.py for the shared
options and exit codes.
"""

from __future__ import annotations

import os

from iacloud.cli import (
    admin_cmds,
    doctor_cmd,
    drift_cmd,
    hosts_cmd,
    plan_apply,
    read_cmds,
    serve_cmd,
    site_cmd,
    stack_cmds,
    state_cmds,
)
from iacloud.cli.app import cli

for command in (
    stack_cmds.validate,
    stack_cmds.graph,
    stack_cmds.convert,
    plan_apply.plan,
    plan_apply.apply,
    plan_apply.destroy,
    drift_cmd.drift,
    read_cmds.show,
    read_cmds.output,
    read_cmds.events,
    state_cmds.state,
    state_cmds.import_cmd,
    doctor_cmd.doctor,
    serve_cmd.serve,
    site_cmd.site,
    hosts_cmd.hosts,
    admin_cmds.admin,
):
    cli.add_command(command)

__all__ = ["cli", "main"]


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    cli(prog_name="iacloud")


if __name__ == "__main__":
    main()
