"""The team state backend: PostgreSQL (psycopg 3), with the SQLite store's model and guarantees,
many stacks per database, and a lock that the server itself releases when its holder dies."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, get_args

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import ValidationError

from iacloud.state import (
    Event,
    LockHeld,
    LockInfo,
    PendingOperation,
    ResourceState,
    Snapshot,
    StateBackend,
    StateError,
    StateVersion,
    current_user,
    pg_schema,
)
from iacloud.state.model import ResourceRow, StackHistory, VersionRecord, VersionStatus
from iacloud.state.pg_url import MASK, parse_url

_LOCK_POLL = 0.1  # seconds between attempts while another run holds a stack's lock
_CONNECT_TIMEOUT = 10  # seconds, unless the URL says otherwise
_TERMINATE_WAIT = 10.0  # seconds force_unlock waits for a terminated holder's session to end
_VERSION_STATUSES = frozenset(get_args(VersionStatus))


def _lock_key(schema: str, stack: str) -> int:
    """A stable 63-bit advisory-lock key per (schema, stack): positive, so its two 32-bit halves
    compare directly with pg_locks.classid/objid."""
    digest = hashlib.sha256(f"iacloud-lock\0{schema}\0{stack}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


class PostgresBackend(StateBackend):
    """State in a PostgreSQL database, in the URL's `schema` (default: the connection's own
    search_path). One connection per backend: it holds the advisory locks, so every write of a
    run goes through the session that proves the run still holds its lock."""

    def __init__(self, url: str, read_only: bool = False) -> None:
        target = parse_url(url)
        self.shown = target.shown
        self.read_only = read_only
        self._conninfo = target.conninfo
        self._schema = target.schema
        self._secret = conninfo_to_dict(self._conninfo).get("password")
        self._mutex = threading.RLock()
        self._conn: psycopg.Connection | None = None
        self._schema_name = ""  # the schema the tables live in, resolved at connect
        self._ready = False  # our tables exist at the current schema version
        self._readable = False  # our tables exist at a version reads understand
        self._host = socket.gethostname()
        self._held: dict[str, tuple[LockInfo, int]] = {}  # stack -> (our lock, advisory key)

    # -- connection -------------------------------------------------------------------------

    def _error(self, what: str) -> StateError:
        if self._secret:
            what = what.replace(str(self._secret), MASK)
        return StateError(f"state database '{self.shown}': {what}")

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Database failures become a StateError naming the (masked) URL, never a traceback."""
        try:
            yield
        except (StateError, LockHeld):
            raise
        except pg_schema.SchemaTooNew as exc:
            raise self._error(str(exc)) from None
        except psycopg.OperationalError as exc:
            lost = self._conn is not None and self._conn.closed
            detail = str(exc).strip().replace("\n", " ")
            if lost and self._held:
                detail += (
                    "; the connection that held the lock of stack(s) "
                    f"{', '.join(sorted(self._held))} is gone, so the lock is released: "
                    "this run stops writing"
                )
            raise self._error(detail or "connection failed") from None
        except psycopg.Error as exc:
            diag = getattr(exc, "diag", None)
            message = (diag.message_primary if diag else None) or str(exc)
            raise self._error(message.strip()) from None
        except (ValidationError, ValueError, TypeError) as exc:
            raise self._error(f"corrupt record: {exc}") from None

    def _connect(self) -> psycopg.Connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        if self._held:
            # A new session would not hold the lock: writing through it could interleave with
            # the run that took the lock since.
            raise self._error(
                "lost the connection that held the lock of stack(s) "
                f"{', '.join(sorted(self._held))}; this run stops writing"
            )
        kwargs: dict[str, Any] = {"autocommit": True, "application_name": "iacloud"}
        if "connect_timeout" not in conninfo_to_dict(self._conninfo):
            kwargs["connect_timeout"] = _CONNECT_TIMEOUT
        try:
            conn = psycopg.connect(self._conninfo, **kwargs)
        except psycopg.Error as exc:
            detail = str(exc).strip().replace("\n", " ")
            raise self._error(f"cannot connect: {detail}") from None
        try:
            # One round trip: UTC timestamps, the schema, read-only sessions for read-only use.
            settings = "set_config('TimeZone', 'UTC', false)"
            # Commits wait for the WAL flush unless a write says otherwise (record_result),
            # whatever the server's default.
            settings += ", set_config('synchronous_commit', 'on', false)"
            # Over TCP, the server probes an idle client after 30 s: a runner whose machine
            # vanished loses its lock within about a minute, not after the OS's two hours.
            settings += ", set_config('tcp_keepalives_idle', '30', false)"
            settings += ", set_config('tcp_keepalives_interval', '10', false)"
            settings += ", set_config('tcp_keepalives_count', '3', false)"
            settings += ", set_config('default_transaction_read_only', %s, false)"
            params: list[Any] = ["on" if self.read_only else "off"]
            if self._schema:
                # The name was checked to be a plain identifier (pg_url.parse_url).
                settings += ", set_config('search_path', %s, false)"
                params.append(f'"{self._schema}"')
            conn.execute(f"SELECT {settings}", params)  # type: ignore[arg-type]
            row = conn.execute("SELECT current_schema()").fetchone()
            # current_schema() is NULL when the search_path names no existing schema yet.
            self._schema_name = self._schema or (row[0] if row and row[0] else "public")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _prepare(self, write: bool) -> psycopg.Connection | None:
        """The connection with our tables ready, or None when reading a store iacloud has not
        made yet. Tables are created (and migrated) by the first write, never by a read."""
        if write and self.read_only:
            raise self._error("opened read-only; this command does not write state")
        conn = self._connect()
        if not self._ready and (write or not self._readable):
            if write:
                pg_schema.migrate(conn, self._schema)
                self._ready = self._readable = True
            else:
                with conn.cursor() as cur:
                    present = pg_schema.installed_version(cur)
                if present < pg_schema.OLDEST_READABLE:
                    if present == 0:
                        return None
                    raise self._error(
                        f"schema version {present} is older than this iacloud's "
                        f"({pg_schema.SCHEMA_VERSION}); any write upgrades it"
                    )
                self._readable = True
        return conn

    @contextmanager
    def _tx(self, durable: bool = True) -> Iterator[psycopg.Cursor]:
        """One write transaction. `durable=False` commits without waiting for the WAL flush:
        see record_result for why that loses nothing that matters."""
        with self._mutex, self._guard():
            conn = self._prepare(write=True)
            assert conn is not None
            with conn.transaction(), conn.cursor() as cur:
                if not durable:
                    cur.execute("SET LOCAL synchronous_commit TO off")
                yield cur

    @contextmanager
    def _read(self) -> Iterator[psycopg.Cursor | None]:
        """One read transaction on one snapshot, so multi-table reads agree."""
        with self._mutex, self._guard():
            conn = self._prepare(write=False)
            if conn is None:
                yield None
                return
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                yield cur

    def ensure_store(self) -> None:
        with self._mutex, self._guard():
            self._prepare(write=True)

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                self._conn.close()  # ends the session: the server drops its advisory locks
                self._conn = None
            self._held.clear()

    # -- reads ------------------------------------------------------------------------------

    def snapshot(self, stack: str, serial: int | None = None) -> Snapshot:
        with self._read() as cur:
            row = (
                None
                if cur is None
                else cur.execute(
                    "SELECT stack_id, lineage FROM iacloud_stacks WHERE name = %s", (stack,)
                ).fetchone()
            )
            if cur is None or row is None:
                if serial not in (None, 0):
                    raise self._error(f"stack '{stack}' has no version {serial}")
                return Snapshot(
                    stack=stack, stack_id=str(uuid.uuid4()), lineage=str(uuid.uuid4()), serial=0
                )
            stack_id, lineage = row
            current = cur.execute(
                "SELECT COALESCE(MAX(serial), 0) FROM iacloud_versions WHERE stack = %s", (stack,)
            ).fetchone()[0]  # type: ignore[index]
            if serial is None:
                serial = current
            elif not 0 <= serial <= current:
                raise self._error(f"stack '{stack}' has no version {serial} (latest: {current})")
            resources = {
                address: ResourceState.model_validate_json(data)
                for address, data in cur.execute(
                    "SELECT address, data::text FROM iacloud_resources WHERE stack = %s "
                    "AND serial_from <= %s AND (serial_to IS NULL OR serial_to > %s) "
                    "ORDER BY address",
                    (stack, serial, serial),
                )
            }
            out = cur.execute(
                "SELECT outputs FROM iacloud_versions WHERE stack = %s AND serial <= %s "
                "AND outputs IS NOT NULL ORDER BY serial DESC LIMIT 1",
                (stack, serial),
            ).fetchone()
            # A pending operation is still unresolved now, so it belongs to every version
            # from the one it was started in.
            pending = [
                PendingOperation.model_validate_json(data)
                for (data,) in cur.execute(
                    "SELECT data::text FROM iacloud_pending WHERE stack = %s AND serial <= %s "
                    "ORDER BY address",
                    (stack, serial),
                )
            ]
            return Snapshot(
                stack=stack,
                stack_id=stack_id,
                lineage=lineage,
                serial=serial,
                resources=resources,
                outputs=out[0] if out else {},
                pending=pending,
            )

    @staticmethod
    def _version(row: tuple[Any, ...]) -> StateVersion:
        serial, lineage, command, status, created, finished = row[:6]
        return StateVersion(
            serial=serial,
            lineage=lineage,
            command=command,
            status=status,
            created_at=created,
            finished_at=finished,
        )

    _VERSION_COLUMNS = "serial, lineage, command, status, created_at, finished_at"

    def versions(self, stack: str) -> list[StateVersion]:
        with self._read() as cur:
            if cur is None:
                return []
            return [
                self._version(r)
                for r in cur.execute(
                    f"SELECT {self._VERSION_COLUMNS} FROM iacloud_versions "
                    "WHERE stack = %s ORDER BY serial",
                    (stack,),
                )
            ]

    _EVENT_COLUMNS = "serial, time, address, type, action, status, reason"

    @staticmethod
    def _event(row: tuple[Any, ...]) -> Event:
        serial, t, address, type_, action, status, reason = row
        return Event(
            serial=serial,
            time=t,
            address=address,
            type=type_,
            action=action,
            status=status,
            reason=reason,
        )

    def events(self, stack: str, limit: int | None = None) -> list[Event]:
        with self._read() as cur:
            if cur is None:
                return []
            rows = cur.execute(
                f"SELECT {self._EVENT_COLUMNS} FROM iacloud_events WHERE stack = %s "
                "ORDER BY id DESC LIMIT %s",
                (stack, None if limit is None else max(limit, 0)),
            ).fetchall()
        return [self._event(r) for r in reversed(rows)]

    def stacks(self) -> list[str]:
        with self._read() as cur:
            if cur is None:
                return []
            return [r[0] for r in cur.execute("SELECT name FROM iacloud_stacks ORDER BY name")]

    # -- writes -----------------------------------------------------------------------------

    def begin_version(self, stack: str, command: str, stack_id: str, lineage: str) -> int:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO iacloud_stacks (name, stack_id, lineage, created_at) "
                "VALUES (%s, %s, %s, now()) ON CONFLICT (name) DO NOTHING",
                (stack, stack_id, lineage),
            )
            # FOR UPDATE: serial numbers are taken one run at a time even without the lock.
            row = cur.execute(
                "SELECT stack_id, lineage FROM iacloud_stacks WHERE name = %s FOR UPDATE",
                (stack,),
            ).fetchone()
            assert row is not None
            if tuple(row) != (stack_id, lineage):
                raise self._error(
                    f"stack '{stack}' has stack_id {row[0]} and lineage {row[1]}, but this run "
                    f"read stack_id {stack_id} and lineage {lineage}; re-run to plan against "
                    "the current state"
                )
            # Callers hold the stack's lock, so a version still in progress was left by a run
            # that died.
            cur.execute(
                "UPDATE iacloud_versions SET status = 'interrupted' "
                "WHERE stack = %s AND status = 'in_progress'",
                (stack,),
            )
            serial = cur.execute(
                "INSERT INTO iacloud_versions (stack, serial, lineage, command, status, "
                "created_at) SELECT %s, COALESCE(MAX(serial), 0) + 1, %s, %s, 'in_progress', "
                "clock_timestamp() FROM iacloud_versions WHERE stack = %s RETURNING serial",
                (stack, lineage, command, stack),
            ).fetchone()[0]  # type: ignore[index]
        return int(serial)

    _INSERT_EVENT = (
        "INSERT INTO iacloud_events (stack, serial, time, address, type, action, status, reason) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    )

    @staticmethod
    def _event_params(stack: str, e: Event) -> tuple[Any, ...]:
        t = e.time if e.time.tzinfo else e.time.replace(tzinfo=timezone.utc)
        return (stack, e.serial, t, e.address, e.type, e.action, e.status, e.reason)

    def record_pending(self, stack: str, op: PendingOperation, event: Event) -> None:
        # Durable (waits for the WAL flush): a lost pending operation is the one loss that
        # would leak a host object no state mentions. Its flush also carries every earlier
        # commit made without waiting (see record_result).
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO iacloud_pending (stack, address, serial, data) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (stack, address) "
                "DO UPDATE SET serial = excluded.serial, data = excluded.data",
                (stack, op.address, op.serial, op.model_dump_json()),
            )
            cur.execute(self._INSERT_EVENT, self._event_params(stack, event))

    def _check_open_version(self, cur: psycopg.Cursor, stack: str, serial: int) -> None:
        row = cur.execute(
            "SELECT status FROM iacloud_versions WHERE stack = %s AND serial = %s",
            (stack, serial),
        ).fetchone()
        if row is None or row[0] != "in_progress":
            state = "does not exist" if row is None else f"is {row[0]}"
            raise self._error(f"stack '{stack}' version {serial} {state}, not in progress")

    def record_result(
        self,
        stack: str,
        serial: int,
        address: str,
        resource: ResourceState | None,
        event: Event,
    ) -> None:
        if resource is not None and resource.address != address:
            raise self._error(f"result for '{address}' carries address '{resource.address}'")
        # Not waiting for the flush (synchronous_commit off) is safe: only a server crash can
        # lose such a commit, and then its step's pending operation, flushed before the
        # provider call, survives and is reconciled by the next run. A killed client loses
        # nothing committed. As in the SQLite store: one flush per step, not two.
        with self._tx(durable=False) as cur:
            # One round trip reads what the write depends on: the version's status, the
            # address's current row and its pending operation.
            row = cur.execute(
                "SELECT (SELECT status FROM iacloud_versions WHERE stack = %(s)s "
                "AND serial = %(n)s), r.row_id, r.serial_from, r.object_id, "
                "(SELECT data->>'action' FROM iacloud_pending WHERE stack = %(s)s "
                "AND address = %(a)s), "
                "(SELECT data->>'id' FROM iacloud_pending WHERE stack = %(s)s "
                "AND address = %(a)s) "
                "FROM (SELECT 1) AS one LEFT JOIN iacloud_resources r ON r.stack = %(s)s "
                "AND r.address = %(a)s AND r.serial_to IS NULL",
                {"s": stack, "n": serial, "a": address},
            ).fetchone()
            assert row is not None
            status, row_id, serial_from, current_id, pending_action, pending_id = row
            if status != "in_progress":
                self._check_open_version(cur, stack, serial)  # raises, saying why
            # A pending delete naming an object other than the current one is the old object
            # of a create-before-destroy replacement: its successor stays.
            deletes_other = pending_action == "delete" and pending_id not in (None, current_id)
            if row_id is not None and (resource is not None or not deletes_other):
                if serial_from == serial:
                    # Written earlier in this same version: never the state of a finished one.
                    cur.execute("DELETE FROM iacloud_resources WHERE row_id = %s", (row_id,))
                elif serial_from < serial:
                    cur.execute(
                        "UPDATE iacloud_resources SET serial_to = %s WHERE row_id = %s",
                        (serial, row_id),
                    )
                else:
                    raise self._error(
                        f"'{address}' of stack '{stack}' was recorded in version {serial_from}, "
                        f"later than version {serial} being written"
                    )
            if resource is not None:
                cur.execute(
                    "INSERT INTO iacloud_resources (stack, address, serial_from, object_id, data)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (stack, address, serial, resource.id, resource.model_dump_json()),
                )
            if pending_action is not None:
                cur.execute(
                    "DELETE FROM iacloud_pending WHERE stack = %s AND address = %s",
                    (stack, address),
                )
            cur.execute(self._INSERT_EVENT, self._event_params(stack, event))

    def record_failure(self, stack: str, address: str, event: Event, keep_pending: bool) -> None:
        with self._tx(durable=False) as cur:
            if not keep_pending:
                cur.execute(
                    "DELETE FROM iacloud_pending WHERE stack = %s AND address = %s",
                    (stack, address),
                )
            cur.execute(self._INSERT_EVENT, self._event_params(stack, event))

    def finish_version(
        self, stack: str, serial: int, status: str, outputs: dict[str, Any] | None
    ) -> None:
        if status not in _VERSION_STATUSES - {"in_progress"}:
            raise self._error(f"cannot finish version {serial} with status '{status}'")
        with self._tx() as cur:
            cur.execute(
                "UPDATE iacloud_versions SET status = %s, finished_at = clock_timestamp(), "
                "outputs = %s WHERE stack = %s AND serial = %s AND status = 'in_progress'",
                (
                    status,
                    None if outputs is None else psycopg.types.json.Json(outputs),
                    stack,
                    serial,
                ),
            )
            if cur.rowcount != 1:
                self._check_open_version(cur, stack, serial)

    # -- lock -------------------------------------------------------------------------------

    def _holder(self, cur: psycopg.Cursor, stack: str) -> tuple[LockInfo, int] | None:
        """The stack's lock as the server sees it: the row describing it, if the session it
        names still holds the advisory lock. A row whose session ended is no lock at all."""
        key = _lock_key(self._schema_name, stack)
        row = cur.execute(
            "SELECT l.holder, l.pid, l.operation, l.since, l.lock_id, l.backend_pid "
            "FROM iacloud_locks l JOIN pg_locks p ON p.locktype = 'advisory' AND p.granted "
            "AND p.pid = l.backend_pid AND p.objsubid = 1 AND p.classid = %s::bigint::oid "
            "AND p.objid = %s::bigint::oid "
            "AND p.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "WHERE l.stack = %s AND l.lock_key = %s",
            (key >> 32, key & 0xFFFF_FFFF, stack, key),
        ).fetchone()
        if row is None:
            return None
        holder, pid, operation, since, lock_id, backend_pid = row
        info = LockInfo(holder=holder, pid=pid, operation=operation, since=since, id=lock_id)
        return info, backend_pid

    def _unnamed_holder(self, cur: psycopg.Cursor, stack: str) -> LockInfo:
        """A holder that has the advisory lock but has not committed its row yet (a moment)."""
        key = _lock_key(self._schema_name, stack)
        row = cur.execute(
            "SELECT COALESCE(a.usename, '?') || '@' || COALESCE(host(a.client_addr), 'local'), "
            "p.pid, COALESCE(a.backend_start, now()) FROM pg_locks p "
            "LEFT JOIN pg_stat_activity a ON a.pid = p.pid WHERE p.locktype = 'advisory' "
            "AND p.granted AND p.objsubid = 1 AND p.classid = %s::bigint::oid "
            "AND p.objid = %s::bigint::oid",
            (key >> 32, key & 0xFFFF_FFFF),
        ).fetchone()
        holder, pid, since = row if row else ("unknown", 0, datetime.now(timezone.utc))
        return LockInfo(
            holder=f"{holder} (database session)", pid=pid, operation="unknown", since=since
        )

    def acquire_lock(self, stack: str, operation: str, timeout: float) -> LockInfo:
        deadline = time.monotonic() + max(timeout, 0.0)
        if stack in self._held:  # advisory locks nest within a session; ours do not
            raise LockHeld(stack, self._held[stack][0])
        while True:
            with self._tx() as cur:
                key = _lock_key(self._schema_name, stack)
                got = cur.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
                if got and got[0]:
                    try:
                        mine = self._describe_lock(cur, stack, operation, key)
                    except BaseException:
                        # A session lock outlives the transaction's rollback: let it go.
                        if self._conn is not None and not self._conn.closed:
                            self._conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                        raise
                    self._held[stack] = (mine, key)
                    return mine
                held = self._holder(cur, stack)
                info = held[0] if held else self._unnamed_holder(cur, stack)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockHeld(stack, info)
            time.sleep(min(_LOCK_POLL, remaining))

    def _describe_lock(self, cur: psycopg.Cursor, stack: str, operation: str, key: int) -> LockInfo:
        row = cur.execute(
            "INSERT INTO iacloud_locks (stack, lock_id, holder, host, pid, operation, since, "
            "backend_pid, lock_key) VALUES (%s, %s, %s, %s, %s, %s, clock_timestamp(), "
            "pg_backend_pid(), %s) ON CONFLICT (stack) DO UPDATE SET lock_id = excluded.lock_id,"
            " holder = excluded.holder, host = excluded.host, pid = excluded.pid, "
            "operation = excluded.operation, since = excluded.since, "
            "backend_pid = excluded.backend_pid, lock_key = excluded.lock_key RETURNING since",
            (
                stack,
                uuid.uuid4().hex[:16],
                f"{current_user()}@{self._host}",
                self._host,
                os.getpid(),
                operation,
                key,
            ),
        ).fetchone()
        assert row is not None
        found = self._holder(cur, stack)
        assert found is not None
        return found[0]

    def release_lock(self, stack: str) -> None:
        held = self._held.pop(stack, None)
        if held is None:
            return  # not ours: a lock is released by its holder or by 'state unlock'
        info, key = held
        with self._mutex:
            if self._conn is None or self._conn.closed:
                return  # the session is gone, and the server released the lock with it
            with self._guard():
                self._conn.execute(
                    "DELETE FROM iacloud_locks WHERE stack = %s AND lock_id = %s",
                    (stack, info.id),
                )
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def lock_info(self, stack: str) -> LockInfo | None:
        if stack in self._held:
            return self._held[stack][0]
        with self._read() as cur:
            if cur is None:
                return None
            held = self._holder(cur, stack)
            return None if held is None else held[0]

    def force_unlock(self, stack: str, lock_id: str | None = None) -> LockInfo | None:
        """A live holder's session is terminated (pg_terminate_backend): that also fences the
        run, since all its writes go through that session. A dead holder's lock is already
        gone; only its describing row remains, and is removed."""
        if stack in self._held:
            info = self._held[stack][0]
            if lock_id is not None and lock_id != info.id:
                raise self._error(f"stack '{stack}' is locked by this run, not by lock {lock_id}")
            self.release_lock(stack)
            return info
        with self._read() as cur:
            if cur is None:
                return None  # nothing stored yet, and no reason to create the tables
            held = self._holder(cur, stack)
        if held is None:
            with self._tx() as cur:
                cur.execute("DELETE FROM iacloud_locks WHERE stack = %s", (stack,))
            return None
        info, backend_pid = held
        if lock_id is not None and info.id != lock_id:
            raise self._error(
                f"stack '{stack}' is locked by {info.describe()}, not by lock {lock_id}; "
                "nothing was removed"
            )
        with self._tx() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (backend_pid,))
        deadline = time.monotonic() + _TERMINATE_WAIT
        while True:
            with self._read() as cur:
                if cur is None or self._holder(cur, stack) is None:
                    break
            if time.monotonic() > deadline:
                raise self._error(
                    f"terminated the session of {info.describe()}, but it still holds the lock"
                )
            time.sleep(_LOCK_POLL)
        with self._tx() as cur:
            cur.execute(
                "DELETE FROM iacloud_locks WHERE stack = %s AND lock_id = %s", (stack, info.id)
            )
        return info

    # -- whole histories (state push/pull) ----------------------------------------------------

    def export_history(self, stack: str) -> StackHistory | None:
        with self._read() as cur:
            if cur is None:
                return None
            row = cur.execute(
                "SELECT stack_id, lineage, created_at FROM iacloud_stacks WHERE name = %s",
                (stack,),
            ).fetchone()
            if row is None:
                return None
            versions = [
                VersionRecord(version=self._version(r), outputs=r[6])
                for r in cur.execute(
                    f"SELECT {self._VERSION_COLUMNS}, outputs FROM iacloud_versions "
                    "WHERE stack = %s ORDER BY serial",
                    (stack,),
                )
            ]
            resources = [
                ResourceRow(
                    address=address,
                    serial_from=serial_from,
                    serial_to=serial_to,
                    resource=ResourceState.model_validate_json(data),
                )
                for address, serial_from, serial_to, data in cur.execute(
                    "SELECT address, serial_from, serial_to, data::text FROM iacloud_resources "
                    "WHERE stack = %s ORDER BY serial_from, address",
                    (stack,),
                )
            ]
            pending = [
                PendingOperation.model_validate_json(data)
                for (data,) in cur.execute(
                    "SELECT data::text FROM iacloud_pending WHERE stack = %s ORDER BY address",
                    (stack,),
                )
            ]
            events = [
                self._event(r)
                for r in cur.execute(
                    f"SELECT {self._EVENT_COLUMNS} FROM iacloud_events WHERE stack = %s "
                    "ORDER BY id",
                    (stack,),
                )
            ]
            return StackHistory(
                stack=stack,
                stack_id=row[0],
                lineage=row[1],
                created_at=row[2],
                versions=versions,
                resources=resources,
                pending=pending,
                events=events,
            )

    def import_history(self, history: StackHistory) -> None:
        stack = history.stack
        Json = psycopg.types.json.Json
        with self._tx() as cur:
            cur.execute("DELETE FROM iacloud_events WHERE stack = %s", (stack,))
            cur.execute("DELETE FROM iacloud_stacks WHERE name = %s", (stack,))  # cascades
            cur.execute(
                "INSERT INTO iacloud_stacks (name, stack_id, lineage, created_at) "
                "VALUES (%s, %s, %s, %s)",
                (stack, history.stack_id, history.lineage, history.created_at),
            )
            cur.executemany(
                "INSERT INTO iacloud_versions (stack, serial, lineage, command, status, "
                "created_at, finished_at, outputs) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        stack,
                        v.version.serial,
                        v.version.lineage,
                        v.version.command,
                        v.version.status,
                        v.version.created_at,
                        v.version.finished_at,
                        None if v.outputs is None else Json(v.outputs),
                    )
                    for v in history.versions
                ],
            )
            cur.executemany(
                "INSERT INTO iacloud_resources (stack, address, serial_from, serial_to, "
                "object_id, data) VALUES (%s, %s, %s, %s, %s, %s)",
                [
                    (
                        stack,
                        r.address,
                        r.serial_from,
                        r.serial_to,
                        r.resource.id,
                        r.resource.model_dump_json(),
                    )
                    for r in history.resources
                ],
            )
            cur.executemany(
                "INSERT INTO iacloud_pending (stack, address, serial, data) "
                "VALUES (%s, %s, %s, %s)",
                [(stack, p.address, p.serial, p.model_dump_json()) for p in history.pending],
            )
            cur.executemany(
                self._INSERT_EVENT, [self._event_params(stack, e) for e in history.events]
            )
