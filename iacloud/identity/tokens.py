"""Session tokens and API keys: login (rate-limited), authentication, issue and revocation.
See credentials.py for how tokens are made and stored (as SHA-256 hashes)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from iacloud.errors import UserError
from iacloud.identity import audit, throttle
from iacloud.identity.base import StoreBase, _client, _valid
from iacloud.identity.credentials import (
    TokenKind,
    looks_like_token,
    new_token,
    same_hash,
    token_hash,
)
from iacloud.identity.db import Tx, as_time
from iacloud.identity.model import (
    AlreadyExists,
    ApiKeyInfo,
    IdentityError,
    IssuedToken,
    LoginRefused,
    Principal,
    RateLimited,
    Role,
    UnknownName,
    check_name,
    check_user_name,
)


class TokenStore(StoreBase):
    """The token half of IdentityStore."""

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
