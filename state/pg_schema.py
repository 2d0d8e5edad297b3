"""The PostgreSQL state schema and its migrations, applied by iacloud itself on first write.

Every table is named iacloud_* so a stack's state can share a schema with other software, and
`iacloud_schema` records which migrations were applied. Migrations run in one transaction under
an advisory lock, so two runners starting at once on a new database cannot both create tables.
"""

from __future__ import annotations

import psycopg

SCHEMA_VERSION = 2
# reads work on schemas from this version on without migrating (version 2 only widened a CHECK),
# so read commands keep working after an upgrade of iacloud until the first write migrates
OLDEST_READABLE = 1
FORMAT = "iacloud-state"
_MIGRATION_LOCK = 0x1AC10D5C  # advisory key held (per transaction) while migrating

# Version n's statements take a schema at version n-1 to version n. Never edit a released one:
# add the next.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE iacloud_stacks (
            name text PRIMARY KEY,
            stack_id text NOT NULL,
            lineage text NOT NULL,
            created_at timestamptz NOT NULL
        )""",
        # Same model as the SQLite store: a resource row is valid for serials
        # [serial_from, serial_to), NULL while current; rows are closed or appended, never
        # rewritten, so old versions stay readable and a step writes one row.
        """CREATE TABLE iacloud_versions (
            stack text NOT NULL REFERENCES iacloud_stacks (name) ON DELETE CASCADE,
            serial integer NOT NULL,
            lineage text NOT NULL,
            command text NOT NULL,
            status text NOT NULL
                CHECK (status IN ('in_progress', 'complete', 'failed', 'interrupted')),
            created_at timestamptz NOT NULL,
            finished_at timestamptz,
            outputs json,
            PRIMARY KEY (stack, serial)
        )""",
        """CREATE TABLE iacloud_resources (
            row_id bigserial PRIMARY KEY,
            stack text NOT NULL REFERENCES iacloud_stacks (name) ON DELETE CASCADE,
            address text NOT NULL,
            serial_from integer NOT NULL,
            serial_to integer,
            object_id text NOT NULL,
            data json NOT NULL,
            CHECK (serial_to IS NULL OR serial_to > serial_from)
        )""",
        """CREATE UNIQUE INDEX iacloud_resources_current
            ON iacloud_resources (stack, address) WHERE serial_to IS NULL""",
        "CREATE INDEX iacloud_resources_history ON iacloud_resources (stack, serial_from)",
        """CREATE TABLE iacloud_pending (
            stack text NOT NULL REFERENCES iacloud_stacks (name) ON DELETE CASCADE,
            address text NOT NULL,
            serial integer NOT NULL,
            data json NOT NULL,
            PRIMARY KEY (stack, address)
        )""",
        """CREATE TABLE iacloud_events (
            id bigserial PRIMARY KEY,
            stack text NOT NULL,
            serial integer NOT NULL,
            time timestamptz NOT NULL,
            address text NOT NULL,
            type text NOT NULL,
            action text NOT NULL,
            status text NOT NULL,
            reason text NOT NULL
        )""",
        "CREATE INDEX iacloud_events_stack ON iacloud_events (stack, id)",
        # Who holds a stack's lock. The lock itself is a session advisory lock on the holder's
        # connection (released by the server when that session ends, however the run died);
        # this row only describes it and counts while backend_pid still holds lock_key.
        """CREATE TABLE iacloud_locks (
            stack text PRIMARY KEY,
            lock_id text NOT NULL,
            holder text NOT NULL,
            host text NOT NULL,
            pid integer NOT NULL,
            operation text NOT NULL,
            since timestamptz NOT NULL,
            backend_pid integer NOT NULL,
            lock_key bigint NOT NULL
        )""",
    ),
    # `apply --rollback` closes the version that undid a failed run as rollback_complete or
    # rollback_failed (PostgreSQL named version 1's unnamed CHECK <table>_<column>_check)
    2: (
        "ALTER TABLE iacloud_versions DROP CONSTRAINT iacloud_versions_status_check",
        """ALTER TABLE iacloud_versions ADD CONSTRAINT iacloud_versions_status_check
            CHECK (status IN ('in_progress', 'complete', 'failed', 'interrupted',
                              'rollback_complete', 'rollback_failed'))""",
    ),
}


class SchemaTooNew(Exception):
    def __init__(self, version: int) -> None:
        super().__init__(
            f"schema version {version} was written by a newer iacloud (this one knows up to "
            f"version {SCHEMA_VERSION}); upgrade iacloud"
        )


def installed_version(cur: psycopg.Cursor) -> int:
    """The schema version in the connection's current schema: 0 when iacloud made nothing yet."""
    row = cur.execute("SELECT to_regclass('iacloud_schema') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    row = cur.execute("SELECT max(version) FROM iacloud_schema").fetchone()
    version = int(row[0]) if row and row[0] is not None else 0
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(version)
    return version


def migrate(conn: psycopg.Connection, schema: str | None) -> int:
    """Create or upgrade the schema; returns the version found before. One transaction."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        if schema is not None:
            # The name was checked to be a plain identifier (pg_url.parse_url).
            cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        before = installed_version(cur)
        if before == 0:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS iacloud_schema ("
                "version integer PRIMARY KEY, format text NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            )
        for version in range(before + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                cur.execute(statement)  # type: ignore[arg-type]  # fixed text, no user input
            cur.execute(
                "INSERT INTO iacloud_schema (version, format) VALUES (%s, %s)", (version, FORMAT)
            )
        return before
