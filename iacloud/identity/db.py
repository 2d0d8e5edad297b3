"""The identity store's connection to the state database (SQLite file or PostgreSQL), one
small query interface over both, and the identity schema with its migrations.

The identity tables (iacloud_identity_*) live beside the state's in the same database and have
their own schema version: the `identity_schema_version` row of SQLite's `meta` table, the
`iacloud_identity_schema` table in PostgreSQL. Opening a store creates or upgrades them, in one
transaction that other processes opening at the same time wait for.
"""

from __future__ import annotations

import abc
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from iacloud.errors import IacloudError, UserError
from iacloud.identity.model import IdentityError

SCHEMA_VERSION = 1
_BUSY_TIMEOUT = 10.0  # seconds SQLite waits for another process's (short) write transaction
_MIGRATION_LOCK = 0x1AC1D0E7  # PostgreSQL advisory key held while migrating identity tables

_ROLES = "'reader', 'member', 'admin'"


def _migrations(dialect: str) -> dict[int, tuple[str, ...]]:
    """Version n's statements take version n-1 to n. Never edit a released one: add the next."""
    text, stamp = "text", ("timestamptz" if dialect == "pg" else "text")
    serial = "bigserial PRIMARY KEY" if dialect == "pg" else "INTEGER PRIMARY KEY AUTOINCREMENT"
    return {
        1: (
            f"""CREATE TABLE iacloud_identity_projects (
                name {text} PRIMARY KEY,
                created_at {stamp} NOT NULL
            )""",
            f"""CREATE TABLE iacloud_identity_users (
                name {text} PRIMARY KEY,
                password_hash {text} NOT NULL,
                created_at {stamp} NOT NULL
            )""",
            f"""CREATE TABLE iacloud_identity_roles (
                user_name {text} NOT NULL REFERENCES iacloud_identity_users (name)
                    ON DELETE CASCADE,
                project {text} NOT NULL REFERENCES iacloud_identity_projects (name)
                    ON DELETE CASCADE,
                role {text} NOT NULL CHECK (role IN ({_ROLES})),
                PRIMARY KEY (user_name, project)
            )""",
            # Session tokens and API keys, by the SHA-256 of the token (credentials.py). `role`
            # caps what the token may do; NULL: the user's role in the project at each request.
            f"""CREATE TABLE iacloud_identity_tokens (
                hash {text} PRIMARY KEY,
                kind {text} NOT NULL CHECK (kind IN ('session', 'apikey')),
                name {text} UNIQUE,
                user_name {text} NOT NULL REFERENCES iacloud_identity_users (name)
                    ON DELETE CASCADE,
                project {text} NOT NULL REFERENCES iacloud_identity_projects (name)
                    ON DELETE CASCADE,
                role {text} CHECK (role IS NULL OR role IN ({_ROLES})),
                created_at {stamp} NOT NULL,
                expires_at {stamp},
                CHECK ((kind = 'apikey') = (name IS NOT NULL))
            )""",
            "CREATE INDEX iacloud_identity_tokens_user ON iacloud_identity_tokens (user_name)",
            # Failed logins per key ('user:NAME', 'client:ADDRESS'), shared by every process.
            f"""CREATE TABLE iacloud_identity_login_failures (
                key {text} PRIMARY KEY,
                failures integer NOT NULL,
                last_failure {stamp} NOT NULL,
                locked_until {stamp}
            )""",
            f"""CREATE TABLE iacloud_identity_audit (
                id {serial},
                time {stamp} NOT NULL,
                actor {text},
                actor_project {text},
                action {text} NOT NULL,
                target {text} NOT NULL,
                project {text},
                client {text} NOT NULL,
                outcome {text} NOT NULL
            )""",
            "CREATE INDEX iacloud_identity_audit_project ON iacloud_identity_audit (project, id)",
        ),
    }


def _iso(t: datetime) -> str:
    # one fixed format, so stored times compare correctly as text in SQLite
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


class Tx:
    """One transaction: statements written with `?` placeholders for both databases."""

    def __init__(self, cursor: Any, dialect: str) -> None:
        self._cur = cursor
        self._pg = dialect == "pg"

    def _exec(self, sql: str, params: Sequence[Any]) -> Any:
        values = [self.stamp(p) if isinstance(p, datetime) else p for p in params]
        return self._cur.execute(sql.replace("?", "%s") if self._pg else sql, values)

    def all(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return list(self._exec(sql, params).fetchall())

    def one(self, sql: str, *params: Any) -> tuple[Any, ...] | None:
        return self._exec(sql, params).fetchone()

    def run(self, sql: str, *params: Any) -> int:
        return self._exec(sql, params).rowcount

    def stamp(self, t: datetime) -> Any:
        if t.tzinfo is None:
            t = t.replace(tzinfo=timezone.utc)
        return t.astimezone(timezone.utc) if self._pg else _iso(t)

    @property
    def for_update(self) -> str:
        """Row locks where the database has them; SQLite's BEGIN IMMEDIATE already serializes
        every write transaction."""
        return " FOR UPDATE" if self._pg else ""

    @property
    def skip_locked(self) -> str:
        return " FOR UPDATE SKIP LOCKED" if self._pg else ""


def as_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc)
    return datetime.fromisoformat(str(value))


class Database(abc.ABC):
    """One connection, used by one thread at a time (a mutex): the server's threads share it."""

    shown: str

    def __init__(self) -> None:
        self._mutex = threading.RLock()

    def error(self, what: str) -> IdentityError:
        return IdentityError(f"identity store in '{self.shown}': {what}")

    @abc.abstractmethod
    def transaction(self, write: bool) -> Any:
        """A context manager giving a Tx."""

    @abc.abstractmethod
    def close(self) -> None: ...


class SQLiteDatabase(Database):
    def __init__(self, path: Path) -> None:
        super().__init__()
        from iacloud.state.sqlite import SQLiteBackend

        self.path = path
        self.shown = str(path)
        # The state backend checks that an existing file is a state database and makes a new
        # one whole (mode 0600); identity tables are added to it, never to a foreign file.
        state = SQLiteBackend(path)
        try:
            state.create()
        finally:
            state.close()
        try:
            self._conn = sqlite3.connect(
                path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise self.error(str(exc)) from None

    def _migrate(self) -> None:
        with self.transaction(write=True) as tx:
            row = tx.one("SELECT value FROM meta WHERE key = 'identity_schema_version'")
            before = _version(self, row[0] if row else 0)
            for version in range(before + 1, SCHEMA_VERSION + 1):
                for statement in _migrations("sqlite")[version]:
                    tx.run(statement)
            if before < SCHEMA_VERSION:
                tx.run(
                    "INSERT INTO meta (key, value) VALUES ('identity_schema_version', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    str(SCHEMA_VERSION),
                )

    @contextmanager
    def transaction(self, write: bool) -> Iterator[Tx]:
        with self._mutex, _guard(self, sqlite3.Error):
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield Tx(conn.cursor(), "sqlite")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            if conn.in_transaction:
                conn.execute("COMMIT")

    def close(self) -> None:
        with self._mutex:
            self._conn.close()


class PostgresDatabase(Database):
    def __init__(self, url: str) -> None:
        super().__init__()
        from psycopg.conninfo import conninfo_to_dict

        from iacloud.state.pg_url import parse_url

        target = parse_url(url)
        self.shown = target.shown
        self._conninfo = target.conninfo
        self._schema = target.schema
        self._secret = conninfo_to_dict(self._conninfo).get("password")
        self._conn: Any = None
        with self._mutex:
            self._connect()

    def error(self, what: str) -> IdentityError:
        if self._secret:
            what = what.replace(str(self._secret), "***")
        return super().error(what)

    def _connect(self) -> Any:
        import psycopg

        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = psycopg.connect(
                self._conninfo,
                autocommit=True,
                application_name="iacloud-identity",
                **({} if "connect_timeout" in self._conninfo else {"connect_timeout": 10}),
            )
        except psycopg.Error as exc:
            raise self.error(f"cannot connect: {str(exc).strip()}") from None
        try:
            conn.execute("SELECT set_config('TimeZone', 'UTC', false)")
            if self._schema:
                # checked to be a plain identifier by parse_url
                conn.execute("SELECT set_config('search_path', %s, false)", [f'"{self._schema}"'])
            self._conn = conn
            self._migrate()
        except BaseException:
            conn.close()
            self._conn = None
            raise
        return conn

    def _migrate(self) -> None:
        import psycopg

        with _guard(self, psycopg.Error), self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            if self._schema:
                cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
            cur.execute(
                "CREATE TABLE IF NOT EXISTS iacloud_identity_schema (version integer PRIMARY "
                "KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            row = cur.execute("SELECT max(version) FROM iacloud_identity_schema").fetchone()
            before = _version(self, row[0] if row and row[0] is not None else 0)
            for version in range(before + 1, SCHEMA_VERSION + 1):
                for statement in _migrations("pg")[version]:
                    cur.execute(statement)
                cur.execute("INSERT INTO iacloud_identity_schema (version) VALUES (%s)", [version])

    @contextmanager
    def transaction(self, write: bool) -> Iterator[Tx]:
        import psycopg

        with self._mutex, _guard(self, psycopg.Error):
            conn = self._connect()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    yield Tx(cur, "pg")
            except psycopg.OperationalError:
                # a lost connection: the next request connects again
                if conn.closed or conn.broken:
                    self._conn = None
                raise

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _version(db: Database, value: Any) -> int:
    try:
        version = int(value)
    except (TypeError, ValueError):
        raise db.error(f"bad identity schema version {value!r}") from None
    if version > SCHEMA_VERSION:
        raise db.error(
            f"identity schema version {version} was written by a newer iacloud (this one knows "
            f"up to version {SCHEMA_VERSION}); upgrade iacloud"
        )
    return version


@contextmanager
def _guard(db: Database, errors: type[Exception] | tuple[type[Exception], ...]) -> Iterator[None]:
    """Database failures become an IdentityError naming the (masked) URL, never a traceback."""
    try:
        yield
    except IacloudError:
        raise
    except errors as exc:
        diag = getattr(exc, "diag", None)
        message = (getattr(diag, "message_primary", None) if diag else None) or str(exc)
        raise db.error(message.strip().replace("\n", " ")) from None


def connect(url: str) -> Database:
    """The database a state URL names: `postgresql://...` (with `schema=`), `sqlite:///PATH`
    or a path. The state's default (a file beside a stack) does not apply: a server has no
    stack, so the URL is required."""
    if not url:
        raise UserError("the identity store needs a state URL (--state URL or IACLOUD_STATE)")
    if url.startswith(("postgres://", "postgresql://")):
        return PostgresDatabase(url)
    if url.startswith("sqlite:///"):
        return SQLiteDatabase(Path(url[len("sqlite://") :]))
    if "://" in url:
        from iacloud.state.pg_url import mask_url

        raise UserError(
            f"state URL '{mask_url(url)}': unknown scheme (expected sqlite:///PATH, a path, or "
            "postgresql://...)"
        )
    return SQLiteDatabase(Path(url))
