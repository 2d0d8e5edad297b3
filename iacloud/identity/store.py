"""`IdentityStore`: projects, users, role assignments, session tokens, API keys, login with rate
limiting, and the audit log, all in the state database (the token half is in tokens.py).

Every change is audited by the store itself, in the transaction that makes it. Methods that
change something take `by` (the principal acting, None for an administrator at this machine's
CLI, recorded as `local:OSUSER`) and `client` (where the request came from).
"""

from __future__ import annotations

from datetime import timedelta

import argon2

from iacloud.identity import audit
from iacloud.identity.base import SESSION_TTL, Clock, _client, _utcnow
from iacloud.identity.db import as_time, connect
from iacloud.identity.model import (
    AlreadyExists,
    AuditEvent,
    Principal,
    ProjectInfo,
    Role,
    RoleAssignment,
    UnknownName,
    UserInfo,
    check_name,
    check_password,
    check_user_name,
)
from iacloud.identity.throttle import LoginPolicy
from iacloud.identity.tokens import TokenStore


class IdentityStore(TokenStore):
    """Keystone's job at its smallest. Safe to share between threads (one connection behind a
    mutex) and between processes on one database (limits and tokens live in the database)."""

    @classmethod
    def open(
        cls,
        state_url: str,
        *,
        clock: Clock = _utcnow,
        session_ttl: timedelta = SESSION_TTL,
        policy: LoginPolicy | None = None,
        hasher: argon2.PasswordHasher | None = None,
    ) -> IdentityStore:
        """The store in the state database `state_url` names (sqlite:///PATH, a path, or
        postgresql://...), its tables created or upgraded. `clock` (UTC), `policy` and
        `hasher` (argon2 parameters) are for tests and tuning."""
        return cls(connect(state_url), clock, session_ttl, policy, hasher)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> IdentityStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- projects ---------------------------------------------------------------------------

    def create_project(
        self, name: str, *, by: Principal | None = None, client: str = "local"
    ) -> ProjectInfo:
        check_name("project", name)
        now = self._now()
        with self._db.transaction(write=True) as tx:
            if tx.one("SELECT 1 FROM iacloud_identity_projects WHERE name = ?", name):
                raise AlreadyExists(f"project '{name}' exists already")
            tx.run(
                "INSERT INTO iacloud_identity_projects (name, created_at) VALUES (?, ?)", name, now
            )
            self._audit(tx, by, "project.create", f"project:{name}", name, client)
        return ProjectInfo(name=name, created_at=now)

    def delete_project(
        self, name: str, *, by: Principal | None = None, client: str = "local"
    ) -> None:
        """Remove the project with its role assignments, tokens and API keys. Stacks are the
        caller's to remove first: the store does not know them."""
        check_name("project", name)
        with self._db.transaction(write=True) as tx:
            self._need(tx, "projects", "project", name)
            tx.run("DELETE FROM iacloud_identity_tokens WHERE project = ?", name)
            tx.run("DELETE FROM iacloud_identity_roles WHERE project = ?", name)
            tx.run("DELETE FROM iacloud_identity_projects WHERE name = ?", name)
            self._audit(tx, by, "project.delete", f"project:{name}", name, client)

    def list_projects(self) -> list[ProjectInfo]:
        with self._db.transaction(write=False) as tx:
            rows = tx.all("SELECT name, created_at FROM iacloud_identity_projects ORDER BY name")
        return [ProjectInfo(name=n, created_at=as_time(t)) for n, t in rows]

    # -- users ------------------------------------------------------------------------------

    def create_user(
        self, name: str, password: str, *, by: Principal | None = None, client: str = "local"
    ) -> UserInfo:
        check_user_name(name)
        hashed = self._passwords.hash(check_password(password))  # slow: outside the transaction
        now = self._now()
        with self._db.transaction(write=True) as tx:
            if tx.one("SELECT 1 FROM iacloud_identity_users WHERE name = ?", name):
                raise AlreadyExists(f"user '{name}' exists already")
            tx.run(
                "INSERT INTO iacloud_identity_users (name, password_hash, created_at) "
                "VALUES (?, ?, ?)",
                name,
                hashed,
                now,
            )
            self._audit(tx, by, "user.create", f"user:{name}", None, client)
        return UserInfo(name=name, created_at=now)

    def delete_user(self, name: str, *, by: Principal | None = None, client: str = "local") -> None:
        check_user_name(name)
        with self._db.transaction(write=True) as tx:
            self._need(tx, "users", "user", name)
            tx.run("DELETE FROM iacloud_identity_tokens WHERE user_name = ?", name)
            tx.run("DELETE FROM iacloud_identity_roles WHERE user_name = ?", name)
            tx.run("DELETE FROM iacloud_identity_users WHERE name = ?", name)
            self._audit(tx, by, "user.delete", f"user:{name}", None, client)

    def set_password(
        self, name: str, password: str, *, by: Principal | None = None, client: str = "local"
    ) -> None:
        """Change the password and end the user's sessions (API keys stay)."""
        check_user_name(name)
        hashed = self._passwords.hash(check_password(password))
        with self._db.transaction(write=True) as tx:
            self._need(tx, "users", "user", name)
            tx.run(
                "UPDATE iacloud_identity_users SET password_hash = ? WHERE name = ?", hashed, name
            )
            tx.run(
                "DELETE FROM iacloud_identity_tokens WHERE user_name = ? AND kind = 'session'", name
            )
            self._audit(tx, by, "user.password", f"user:{name}", None, client)

    def list_users(self) -> list[UserInfo]:
        with self._db.transaction(write=False) as tx:
            users = tx.all("SELECT name, created_at FROM iacloud_identity_users ORDER BY name")
            roles = tx.all("SELECT user_name, project, role FROM iacloud_identity_roles")
        by_user: dict[str, dict[str, Role]] = {}
        for user, project, role in roles:
            by_user.setdefault(user, {})[project] = Role(role)
        return [
            UserInfo(name=n, created_at=as_time(t), roles=dict(sorted(by_user.get(n, {}).items())))
            for n, t in users
        ]

    # -- roles ------------------------------------------------------------------------------

    def grant(
        self,
        user: str,
        project: str,
        role: Role | str,
        *,
        by: Principal | None = None,
        client: str = "local",
    ) -> None:
        """Give `user` `role` in `project` (replacing the role it had there)."""
        check_user_name(user)
        check_name("project", project)
        role = Role.parse(role)
        with self._db.transaction(write=True) as tx:
            self._need(tx, "users", "user", user)
            self._need(tx, "projects", "project", project)
            tx.run(
                "INSERT INTO iacloud_identity_roles (user_name, project, role) VALUES (?, ?, ?) "
                "ON CONFLICT (user_name, project) DO UPDATE SET role = excluded.role",
                user,
                project,
                role.value,
            )
            self._audit(tx, by, "role.grant", f"user:{user} role:{role.value}", project, client)

    def revoke_role(
        self, user: str, project: str, *, by: Principal | None = None, client: str = "local"
    ) -> None:
        """Take the user's role in the project away, with their tokens and API keys there (so a
        later grant does not bring old keys back to life)."""
        check_user_name(user)
        check_name("project", project)
        with self._db.transaction(write=True) as tx:
            if self._role_of(tx, user, project) is None:
                raise UnknownName(f"user '{user}' has no role in project '{project}'")
            tx.run(
                "DELETE FROM iacloud_identity_tokens WHERE user_name = ? AND project = ?",
                user,
                project,
            )
            tx.run(
                "DELETE FROM iacloud_identity_roles WHERE user_name = ? AND project = ?",
                user,
                project,
            )
            self._audit(tx, by, "role.revoke", f"user:{user}", project, client)

    def list_roles(
        self, project: str | None = None, user: str | None = None
    ) -> list[RoleAssignment]:
        where, params = [], []
        if project is not None:
            where.append("project = ?")
            params.append(project)
        if user is not None:
            where.append("user_name = ?")
            params.append(user)
        sql = "SELECT user_name, project, role FROM iacloud_identity_roles"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._db.transaction(write=False) as tx:
            rows = tx.all(sql + " ORDER BY project, user_name", *params)
        return [RoleAssignment(user=u, project=p, role=Role(r)) for u, p, r in rows]

    # -- audit ------------------------------------------------------------------------------

    def audit(
        self, principal: Principal | None, action: str, target: str, client: str, outcome: str
    ) -> None:
        """Record an event of the caller's (an API request, a refused one included). `action`
        and `outcome` are plain words (`stack.create`, `success`, `denied`); `target` names
        what was acted on and must never hold a secret."""
        with self._db.transaction(write=True) as tx:
            audit.write(
                tx,
                self._now(),
                principal.user if principal else None,
                principal.project if principal else None,
                action,
                target,
                principal.project if principal else None,
                _client(client),
                outcome,
            )

    def audit_events(
        self, project: str | None = None, limit: int = 100, marker: int | None = None
    ) -> list[AuditEvent]:
        """Events newest first, of one project (None: all); `marker`: the id of the last event
        of the previous page."""
        with self._db.transaction(write=False) as tx:
            return audit.read(tx, project, limit, marker)
