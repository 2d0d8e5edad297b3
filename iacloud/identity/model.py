"""What the identity store hands out and reads back: roles, principals, issued tokens, the rows
of its listings and audit log, its errors, and the rules for names."""

from __future__ import annotations

import enum
import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from iacloud.errors import IacloudError, UserError, printable

# Names are compared and stored as given, so they are lower case only ("Alice" and "alice"
# would otherwise be two users). Full matches with explicit ASCII classes; bounded length.
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_USER_NAME = re.compile(r"[a-z][a-z0-9._@-]{0,63}")
MIN_PASSWORD, MAX_PASSWORD = 8, 1024  # argon2 takes any length; the bound keeps requests cheap


class IdentityError(IacloudError):
    """A request the identity store cannot carry out (the message names what and why)."""


class UnknownName(IdentityError):
    """A user, project, role assignment or API key that does not exist."""


class AlreadyExists(IdentityError):
    """A user, project or API key name that is taken."""


class LoginRefused(IdentityError):
    """Wrong user name, wrong password, or no role in the project: one message for all, so a
    caller cannot learn which user names exist."""

    def __init__(self) -> None:
        super().__init__("login refused: unknown user, wrong password or no access to the project")


class RateLimited(IdentityError):
    """Too many failed logins for this user name or from this client address."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, int(retry_after + 0.999))
        super().__init__(f"too many failed logins: try again in {self.retry_after} s")


def check_name(kind: str, value: object) -> str:
    """A project or API key name (`kind` says which, for the message), or a UserError."""
    return _check(kind, value, _NAME, "a lower-case letter, then letters, digits, _ or -", 63)


def check_user_name(value: object) -> str:
    return _check(
        "user", value, _USER_NAME, "a lower-case letter, then letters, digits, ., _, @ or -", 64
    )


def _check(kind: str, value: object, pattern: re.Pattern[str], rule: str, limit: int) -> str:
    if isinstance(value, str) and pattern.fullmatch(value):
        return value
    shown = printable(repr(value)[:80]) if isinstance(value, str) else type(value).__name__
    raise UserError(
        f"{kind} name {shown} is not valid: expected {rule}, at most {limit} characters"
    )


def check_password(password: object) -> str:
    """Length only: the value itself never appears in the message."""
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise UserError(f"the password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long")
    return password


class Role(str, enum.Enum):
    """A user's role in one project, ordered reader < member < admin."""

    READER = "reader"
    MEMBER = "member"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    # str's own comparisons would order the names alphabetically
    def __lt__(self, other: Any) -> bool:
        return self.rank < Role(other).rank

    def __le__(self, other: Any) -> bool:
        return self.rank <= Role(other).rank

    def __gt__(self, other: Any) -> bool:
        return self.rank > Role(other).rank

    def __ge__(self, other: Any) -> bool:
        return self.rank >= Role(other).rank

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: object) -> Role:
        try:
            return cls(value)
        except ValueError:
            shown = printable(repr(value)[:40])
            raise UserError(
                f"role {shown} is not valid: expected one of reader, member, admin"
            ) from None


_RANK = {Role.READER: 0, Role.MEMBER: 1, Role.ADMIN: 2}


class Principal(BaseModel):
    """Who a request acts as: a user, in one project, with one role. A principal is bound to
    its project: it grants nothing in any other."""

    model_config = ConfigDict(frozen=True)

    user: str
    project: str
    role: Role

    def may_read(self) -> bool:
        return self.role >= Role.READER

    def may_change(self) -> bool:
        return self.role >= Role.MEMBER

    def is_admin(self) -> bool:
        return self.role >= Role.ADMIN

    def in_project(self, project: str) -> bool:
        return self.project == project


class IssuedToken(BaseModel):
    """A new session token. `token` exists only here: the store keeps its hash."""

    model_config = ConfigDict(frozen=True)

    token: str = Field(repr=False)
    expires_at: datetime
    principal: Principal


class ProjectInfo(BaseModel):
    name: str
    created_at: datetime


class UserInfo(BaseModel):
    name: str
    created_at: datetime
    roles: dict[str, Role] = {}  # project -> role


class RoleAssignment(BaseModel):
    user: str
    project: str
    role: Role


class ApiKeyInfo(BaseModel):
    name: str
    user: str
    project: str
    role: Role | None  # None: the user's own role in the project, whatever it is at the time
    created_at: datetime
    expires_at: datetime | None


class AuditEvent(BaseModel):
    """Who did what, when, from where, with what outcome. `actor` is a user name, `local:NAME`
    for an administrator at this machine's CLI, or None for an unauthenticated request."""

    id: int
    time: datetime
    actor: str | None
    actor_project: str | None
    action: str
    target: str
    project: str | None  # the project the event concerns, None for cloud-wide ones
    client: str
    outcome: str
