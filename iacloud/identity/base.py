"""The identity store's shared parts: its settings, clock, audit helper and lookups used by
both halves (tokens.py, store.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import argon2

from iacloud.errors import UserError, printable
from iacloud.identity import audit
from iacloud.identity.credentials import Passwords
from iacloud.identity.db import Database, Tx
from iacloud.identity.model import Principal, Role, UnknownName
from iacloud.identity.throttle import LoginPolicy

Clock = Callable[[], datetime]
SESSION_TTL = timedelta(hours=8)
_MAX_CLIENT = 128


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _client(client: str) -> str:
    return printable(str(client))[:_MAX_CLIENT] or "unknown"


def _valid(check: Callable[[str], str], value: object) -> bool:
    try:
        check(value)  # type: ignore[arg-type]
    except UserError:
        return False
    return True


class StoreBase:
    """What every part of the store uses: the database, the clock, the login policy and
    password hasher, and the audit row of a change."""

    def __init__(
        self,
        db: Database,
        clock: Clock = _utcnow,
        session_ttl: timedelta = SESSION_TTL,
        policy: LoginPolicy | None = None,
        hasher: argon2.PasswordHasher | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self.session_ttl = session_ttl
        self.policy = policy or LoginPolicy()
        self._passwords = Passwords(hasher)

    def _now(self) -> datetime:
        now = self._clock()
        return now if now.tzinfo else now.replace(tzinfo=timezone.utc)

    def _audit(
        self,
        tx: Tx,
        by: Principal | None,
        action: str,
        target: str,
        project: str | None,
        client: str,
        outcome: str = "success",
    ) -> None:
        if by is None:
            from iacloud.state import current_user

            actor, actor_project = f"local:{current_user()}", None
        else:
            actor, actor_project = by.user, by.project
        audit.write(
            tx, self._now(), actor, actor_project, action, target, project, _client(client), outcome
        )

    @staticmethod
    def _need(tx: Tx, table: str, kind: str, name: str) -> None:
        if tx.one(f"SELECT 1 FROM iacloud_identity_{table} WHERE name = ?", name) is None:
            raise UnknownName(f"{kind} '{name}' does not exist")

    @staticmethod
    def _role_of(tx: Tx, user: str, project: str) -> Role | None:
        row = tx.one(
            "SELECT role FROM iacloud_identity_roles WHERE user_name = ? AND project = ?",
            user,
            project,
        )
        return Role(row[0]) if row else None
