"""`iacloud admin ...`: projects, users, roles, tokens, API keys and the audit log that
`iacloud serve` uses, kept in the state database (iacloud/identity). Passwords and tokens are
read from a prompt or standard input, never from the command line, where other users of the
machine could see them."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any

import click

from iacloud.cli.app import echo_json, handled, json_opt
from iacloud.errors import UserError
from iacloud.identity import IdentityStore

_DURATION = re.compile(r"([1-9][0-9]{0,5})([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _duration(text: str | None, what: str) -> timedelta | None:
    if text is None:
        return None
    m = _DURATION.fullmatch(text)
    if not m:
        raise UserError(f"{what} {text!r} is not a duration such as 30m, 8h or 90d")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def with_store(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add --state, hand the command an open IdentityStore as `store`, and turn errors into
    messages and exit codes (app.handled)."""

    @click.option("--state", "state_url", envvar="IACLOUD_STATE", metavar="URL",
                  help="The state database iacloud serve uses: postgresql://..., "
                  "sqlite:///PATH or a path (or IACLOUD_STATE).")  # fmt: skip
    @wraps(fn)
    @handled
    def wrapper(*args: Any, state_url: str | None, **kwargs: Any) -> Any:
        with IdentityStore.open(state_url or "") as store:
            return fn(*args, store=store, **kwargs)

    return wrapper


def _secret(what: str, from_stdin: bool, confirm: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    return click.prompt(what, hide_input=True, confirmation_prompt=confirm, err=True)


password_stdin = click.option("--password-stdin", is_flag=True,
                              help="Read the password from standard input (one line) instead "
                              "of prompting.")  # fmt: skip


@click.group()
def admin() -> None:
    """Projects, users, roles, tokens and the audit log of `iacloud serve`."""


# -- projects -------------------------------------------------------------------------------


@admin.group()
def project() -> None:
    """Projects: each has its own stacks, members and audit log."""


@project.command("create")
@click.argument("name")
@with_store
def project_create(name: str, store: IdentityStore) -> None:
    store.create_project(name)
    click.echo(f"Created project {name}.")


@project.command("list")
@json_opt
@with_store
def project_list(as_json: bool, store: IdentityStore) -> None:
    projects = store.list_projects()
    if as_json:
        echo_json([p.model_dump(mode="json") for p in projects])
        return
    for p in projects:
        click.echo(f"{p.name}\t{p.created_at.isoformat(timespec='seconds')}")


@project.command("delete")
@click.argument("name")
@with_store
def project_delete(name: str, store: IdentityStore) -> None:
    """Delete a project with its role assignments, tokens and API keys."""
    store.delete_project(name)
    click.echo(f"Deleted project {name}.")


# -- users ----------------------------------------------------------------------------------


@admin.group()
def user() -> None:
    """Users: a name and a password (stored as an argon2id hash)."""


@user.command("create")
@click.argument("name")
@password_stdin
@with_store
def user_create(name: str, password_stdin: bool, store: IdentityStore) -> None:
    store.create_user(name, _secret("Password", password_stdin, confirm=True))
    click.echo(f"Created user {name}.")


@user.command("list")
@json_opt
@with_store
def user_list(as_json: bool, store: IdentityStore) -> None:
    users = store.list_users()
    if as_json:
        echo_json([u.model_dump(mode="json") for u in users])
        return
    for u in users:
        grants = ", ".join(f"{p}:{r.value}" for p, r in u.roles.items()) or "-"
        click.echo(f"{u.name}\t{grants}")


@user.command("delete")
@click.argument("name")
@with_store
def user_delete(name: str, store: IdentityStore) -> None:
    """Delete a user with their roles, sessions and API keys."""
    store.delete_user(name)
    click.echo(f"Deleted user {name}.")


@user.command("passwd")
@click.argument("name")
@password_stdin
@with_store
def user_passwd(name: str, password_stdin: bool, store: IdentityStore) -> None:
    """Set a user's password; their sessions end (API keys stay)."""
    store.set_password(name, _secret("New password", password_stdin, confirm=True))
    click.echo(f"Changed the password of {name}; their sessions have ended.")


# -- roles ----------------------------------------------------------------------------------


@admin.group()
def role() -> None:
    """Roles per project: reader (reads only), member (also changes stacks), admin
    (everything in the project)."""


@role.command("grant")
@click.argument("user_name", metavar="USER")
@click.argument("project_name", metavar="PROJECT")
@click.argument("role_name", metavar="ROLE")
@with_store
def role_grant(user_name: str, project_name: str, role_name: str, store: IdentityStore) -> None:
    """Give USER the role ROLE (reader, member or admin) in PROJECT, replacing the one they
    had there."""
    store.grant(user_name, project_name, role_name)
    click.echo(f"{user_name} is {role_name} in project {project_name}.")


@role.command("revoke")
@click.argument("user_name", metavar="USER")
@click.argument("project_name", metavar="PROJECT")
@with_store
def role_revoke(user_name: str, project_name: str, store: IdentityStore) -> None:
    """Take USER's role in PROJECT away, with their tokens and API keys there."""
    store.revoke_role(user_name, project_name)
    click.echo(f"{user_name} has no role in project {project_name} any more.")


@role.command("list")
@click.option("--project", "project_name", metavar="PROJECT", help="Only this project.")
@json_opt
@with_store
def role_list(project_name: str | None, as_json: bool, store: IdentityStore) -> None:
    grants = store.list_roles(project=project_name)
    if as_json:
        echo_json([g.model_dump(mode="json") for g in grants])
        return
    for g in grants:
        click.echo(f"{g.project}\t{g.user}\t{g.role.value}")


# -- tokens and API keys ----------------------------------------------------------------------


@admin.group()
def token() -> None:
    """Session tokens (what a login gives), issued by an administrator."""


@token.command("issue")
@click.argument("user_name", metavar="USER")
@click.option("--project", "project_name", required=True, metavar="PROJECT")
@click.option("--ttl", metavar="DURATION", help="Lifetime, e.g. 30m, 8h (default: 8h).")
@json_opt
@with_store
def token_issue(user_name: str, project_name: str, ttl: str | None, as_json: bool,
                store: IdentityStore) -> None:  # fmt: skip
    """Print a new session token for USER in PROJECT. It is shown this once."""
    issued = store.issue_token(user_name, project_name, _duration(ttl, "--ttl"))
    if as_json:
        echo_json({"token": issued.token, "expires_at": issued.expires_at.isoformat(),
                   **issued.principal.model_dump(mode="json")})  # fmt: skip
        return
    click.echo(issued.token)
    click.echo(f"Expires {issued.expires_at.isoformat(timespec='seconds')}.", err=True)


@token.command("revoke")
@click.option("--token-stdin", is_flag=True,
              help="Read the token from standard input instead of prompting.")  # fmt: skip
@with_store
def token_revoke(token_stdin: bool, store: IdentityStore) -> None:
    """End a session token or API key, given its value."""
    if not store.revoke(_secret("Token", token_stdin, confirm=False).strip()):
        raise UserError("no such token (unknown, expired and removed, or revoked already)")
    click.echo("Revoked.")


@admin.group()
def apikey() -> None:
    """API keys: named, long-lived tokens for CI."""


@apikey.command("create")
@click.argument("name")
@click.option("--user", "user_name", required=True, metavar="USER")
@click.option("--project", "project_name", required=True, metavar="PROJECT")
@click.option("--role", "role_name", metavar="ROLE",
              help="At most this role: reader, member or admin (default: the user's role at "
              "each request).")  # fmt: skip
@click.option("--expires-in", metavar="DURATION", help="e.g. 90d (default: never).")
@json_opt
@with_store
def apikey_create(name: str, user_name: str, project_name: str, role_name: str | None,
                  expires_in: str | None, as_json: bool, store: IdentityStore) -> None:  # fmt: skip
    """Print a new API key acting as USER in PROJECT. It is shown this once."""
    key = store.create_api_key(
        user_name, project_name, role_name, name, _duration(expires_in, "--expires-in")
    )
    if as_json:
        echo_json({"name": name, "key": key})
        return
    click.echo(key)


@apikey.command("list")
@click.option("--project", "project_name", metavar="PROJECT", help="Only this project.")
@json_opt
@with_store
def apikey_list(project_name: str | None, as_json: bool, store: IdentityStore) -> None:
    keys = store.list_api_keys(project_name)
    if as_json:
        echo_json([k.model_dump(mode="json") for k in keys])
        return
    for k in keys:
        expires = k.expires_at.isoformat(timespec="seconds") if k.expires_at else "never"
        role_name = k.role.value if k.role else "(user's role)"
        click.echo(f"{k.name}\t{k.project}\t{k.user}\t{role_name}\texpires {expires}")


@apikey.command("revoke")
@click.argument("name")
@with_store
def apikey_revoke(name: str, store: IdentityStore) -> None:
    store.revoke_api_key(name)
    click.echo(f"Revoked API key {name}.")


# -- audit ----------------------------------------------------------------------------------


@admin.command("audit")
@click.option("--project", "project_name", metavar="PROJECT", help="Only this project.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--marker", type=click.IntRange(min=0), help="Events older than this id.")
@json_opt
@with_store
def audit(project_name: str | None, limit: int, marker: int | None, as_json: bool,
          store: IdentityStore) -> None:  # fmt: skip
    """The audit log, newest first: who did what, when, from where, and the outcome."""
    events = store.audit_events(project_name, limit, marker)
    if as_json:
        echo_json([e.model_dump(mode="json") for e in events])
        return
    for e in events:
        who = e.actor or "-"
        if e.actor_project:
            who += f"@{e.actor_project}"
        click.echo(f"{e.id}\t{e.time.isoformat(timespec='seconds')}\t{who}\t{e.client}\t"
                   f"{e.action}\t{e.target}\t{e.project or '-'}\t{e.outcome}")  # fmt: skip
