"""`IdentityStore`: projects, users, role assignments, session tokens, API keys, login with rate
limiting, and the audit log, all in the state database.

Every change is audited by the store itself, in the transaction that makes it. Methods that
change something take `by` (the principal acting, None for an administrator at this machine's
CLI, recorded as `local:OSUSER`) and `client` (where the request came from).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import argon2

from iacloud.errors import UserError, printable
from iacloud.identity import audit, throttle
from iacloud.identity.credentials import (
    Passwords,
    TokenKind,
    looks_like_token,
    new_token,
    same_hash,
    token_hash,
)
from iacloud.identity.db import Database, Tx, as_time, connect
from iacloud.identity.model import (
    AlreadyExists,
    ApiKeyInfo,
    AuditEvent,
    IdentityError,
    IssuedToken,
    LoginRefused,
    Principal,
    ProjectInfo,
    RateLimited,
    Role,
    RoleAssignment,
    UnknownName,
    UserInfo,
    check_name,
    check_password,
    check_user_name,
)
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


class IdentityStore:
    """Keystone's job at its smallest. Safe to share between threads (one connection behind a
    mutex) and between processes on one database (limits and tokens live in the database)."""

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

    # -- helpers ----------------------------------------------------------------------------

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

    # -- tokens -----------------------------------------------------------------------------

    def _insert_token(
        self,
        tx: Tx,
        kind: TokenKind,
        user: str,
        project: str,
        role: Role | None,
        name: str | None,
        now: datetime,
        expires: datetime | None,
    ) -> str:
        token = new_token(kind)
        tx.run(
            "INSERT INTO iacloud_identity_tokens (hash, kind, name, user_name, project, role, "
            "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            token_hash(token),
            kind,
            name,
            user,
            project,
            role.value if role else None,
            now,
            expires,
        )
        return token

    def authenticate(self, token: str) -> Principal | None:
        """The principal a session token or API key stands for, or None if it is unknown,
        expired or revoked, or its user lost every role in its project. The role is the user's
        role now (capped by an API key's own role), so a revoked grant takes effect at once.

        Only SHA-256 hashes of tokens are stored (see credentials.py for why a fast hash is
        right for random tokens); the row is found by the hash and the hash compared again in
        constant time."""
        if not looks_like_token(token):
            return None
        digest = token_hash(token)
        with self._db.transaction(write=False) as tx:
            row = tx.one(
                "SELECT t.hash, t.user_name, t.project, t.role, t.expires_at, r.role "
                "FROM iacloud_identity_tokens t JOIN iacloud_identity_roles r "
                "ON r.user_name = t.user_name AND r.project = t.project WHERE t.hash = ?",
                digest,
            )
        if row is None or not same_hash(row[0], digest):
            return None
        _, user, project, cap, expires, current = row
        if expires is not None and self._now() >= as_time(expires):
            return None
        role = Role(current) if cap is None else min(Role(cap), Role(current))
        return Principal(user=user, project=project, role=role)

    def login(self, username: str, password: str, project: str, client: str) -> IssuedToken:
        """A session token for `username` in `project`, valid for `session_ttl`. Raises
        LoginRefused (one message whatever was wrong) or RateLimited (throttle.py)."""
        now, client = self._now(), _client(client)
        valid_user = _valid(check_user_name, username)
        valid_project = _valid(lambda p: check_name("project", p), project)
        keys = [(f"client:{client}", self.policy.client_limit)]
        if valid_user:
            keys.append((throttle.user_key(username), self.policy.user_limit))
        with self._db.transaction(write=True) as tx:
            wait, charges = throttle.attempt(tx, keys, now, self.policy)
            stored: str | None = None
            project_exists = (
                valid_project
                and tx.one("SELECT 1 FROM iacloud_identity_projects WHERE name = ?", project)
                is not None
            )
            if valid_user:
                row = tx.one(
                    "SELECT password_hash FROM iacloud_identity_users WHERE name = ?", username
                )
                stored = row[0] if row else None
            target = f"user:{username}" if stored is not None else "user:(unknown)"
            audit_project = project if project_exists else None
            if wait is not None:
                audit.write(
                    tx, now, None, None, "login", target, audit_project, client, "rate-limited"
                )
        if wait is not None:
            raise RateLimited(wait)
        # The slow check runs outside any transaction: it must not hold the database.
        ok = (
            isinstance(password, str)
            and len(password) <= 1024
            and self._passwords.verify(stored, password)
        )
        with self._db.transaction(write=True) as tx:
            throttle.forget_old(tx, now, self.policy)
            role = self._role_of(tx, username, project) if ok and project_exists else None
            if role is None:
                audit.write(tx, now, None, None, "login", target, audit_project, client, "refused")
            else:
                for charged in charges:
                    throttle.refund(tx, charged)
                throttle.clear(tx, throttle.user_key(username))
                tx.run(
                    "DELETE FROM iacloud_identity_tokens WHERE kind = 'session' AND expires_at < ?",
                    now,
                )
                if stored is not None and self._passwords.needs_rehash(stored):
                    tx.run(
                        "UPDATE iacloud_identity_users SET password_hash = ? WHERE name = ?",
                        self._passwords.hash(password),
                        username,
                    )
                expires = now + self.session_ttl
                token = self._insert_token(
                    tx, "session", username, project, None, None, now, expires
                )
                principal = Principal(user=username, project=project, role=role)
                audit.write(tx, now, username, project, "login", target, project, client, "success")
        if role is None:
            raise LoginRefused()
        return IssuedToken(token=token, expires_at=expires, principal=principal)

    def issue_token(
        self,
        user: str,
        project: str,
        ttl: timedelta | None = None,
        *,
        by: Principal | None = None,
        client: str = "local",
    ) -> IssuedToken:
        """A session token without a password: for an administrator (`iacloud admin token
        issue`)."""
        check_user_name(user)
        check_name("project", project)
        ttl = self.session_ttl if ttl is None else ttl
        if ttl <= timedelta(0):
            raise UserError("a token's lifetime must be positive")
        now = self._now()
        with self._db.transaction(write=True) as tx:
            role = self._role_of(tx, user, project)
            if role is None:
                raise UnknownName(f"user '{user}' has no role in project '{project}'")
            token = self._insert_token(tx, "session", user, project, None, None, now, now + ttl)
            self._audit(tx, by, "token.issue", f"user:{user}", project, client)
        return IssuedToken(
            token=token,
            expires_at=now + ttl,
            principal=Principal(user=user, project=project, role=role),
        )

    def revoke(self, token: str, *, by: Principal | None = None, client: str = "local") -> bool:
        """End a session token or API key by its value (logout). False if it was unknown."""
        if not looks_like_token(token):
            return False
        with self._db.transaction(write=True) as tx:
            row = tx.one(
                "SELECT kind, name, user_name, project FROM iacloud_identity_tokens WHERE hash = ?",
                token_hash(token),
            )
            if row is None:
                return False
            kind, name, user, project = row
            tx.run("DELETE FROM iacloud_identity_tokens WHERE hash = ?", token_hash(token))
            target = f"apikey:{name}" if kind == "apikey" else f"session of user:{user}"
            self._audit(
                tx,
                by,
                f"{'apikey' if kind == 'apikey' else 'token'}.revoke",
                target,
                project,
                client,
            )
        return True

    # -- API keys ---------------------------------------------------------------------------

    def create_api_key(
        self,
        user: str,
        project: str,
        role: Role | str | None = None,
        name: str | None = None,
        expires: datetime | timedelta | None = None,
        *,
        by: Principal | None = None,
        client: str = "local",
    ) -> str:
        """A long-lived token for CI, acting as `user` in `project` with at most `role` (None:
        the user's role at each request). Returned once; the store keeps its hash."""
        check_user_name(user)
        check_name("project", project)
        if name is None:
            raise UserError("an API key needs a name")
        check_name("API key", name)
        cap = None if role is None else Role.parse(role)
        now = self._now()
        if isinstance(expires, timedelta):
            expires = now + expires
        if expires is not None:
            expires = expires if expires.tzinfo else expires.replace(tzinfo=timezone.utc)
            if expires <= now:
                raise UserError(f"API key '{name}': its expiry lies in the past")
        with self._db.transaction(write=True) as tx:
            current = self._role_of(tx, user, project)
            if current is None:
                raise UnknownName(f"user '{user}' has no role in project '{project}'")
            if cap is not None and cap > current:
                raise IdentityError(
                    f"user '{user}' is {current.value} in project '{project}': an API key of "
                    f"theirs cannot be {cap.value}"
                )
            if tx.one("SELECT 1 FROM iacloud_identity_tokens WHERE name = ?", name):
                raise AlreadyExists(f"API key '{name}' exists already")
            token = self._insert_token(tx, "apikey", user, project, cap, name, now, expires)
            self._audit(tx, by, "apikey.create", f"apikey:{name} user:{user}", project, client)
        return token

    def list_api_keys(self, project: str | None = None) -> list[ApiKeyInfo]:
        sql = (
            "SELECT name, user_name, project, role, created_at, expires_at "
            "FROM iacloud_identity_tokens WHERE kind = 'apikey'"
        )
        params = []
        if project is not None:
            sql += " AND project = ?"
            params.append(project)
        with self._db.transaction(write=False) as tx:
            rows = tx.all(sql + " ORDER BY project, name", *params)
        return [
            ApiKeyInfo(
                name=n,
                user=u,
                project=p,
                role=Role(r) if r else None,
                created_at=as_time(c),
                expires_at=as_time(e) if e is not None else None,
            )
            for n, u, p, r, c, e in rows
        ]

    def revoke_api_key(
        self, name: str, *, by: Principal | None = None, client: str = "local"
    ) -> None:
        check_name("API key", name)
        with self._db.transaction(write=True) as tx:
            row = tx.one(
                "SELECT project FROM iacloud_identity_tokens WHERE kind = 'apikey' AND name = ?",
                name,
            )
            if row is None:
                raise UnknownName(f"API key '{name}' does not exist")
            tx.run("DELETE FROM iacloud_identity_tokens WHERE kind = 'apikey' AND name = ?", name)
            self._audit(tx, by, "apikey.revoke", f"apikey:{name}", row[0], client)

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
