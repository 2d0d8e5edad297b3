"""The service's own tables, beside the state in the same database (SQLite or PostgreSQL): the
stacks the API knows (template, parameters, status), the operations that are also the job
queue, and each operation's event journal (what the event stream replays).

Templates live here, not in a directory of one server: with PostgreSQL any `iacloud serve`
process may run any job, so the text a job applies must be in the database it claims the job
from. A worker writes it to a file of its own only for the run (see templates.py).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from iacloud.errors import IacloudError

TERMINAL = frozenset({"COMPLETE", "FAILED", "CANCELLED"})

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS iacloud_api_stacks (
        id TEXT PRIMARY KEY,
        project TEXT NOT NULL,
        name TEXT NOT NULL,
        state_key TEXT NOT NULL,
        description TEXT NOT NULL,
        format TEXT NOT NULL,
        template TEXT NOT NULL,
        parameters TEXT NOT NULL,
        parameters_shown TEXT NOT NULL,
        revision INTEGER NOT NULL,
        status TEXT NOT NULL,
        status_reason TEXT NOT NULL,
        last_operation TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        deleted_at TEXT,
        changes INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS iacloud_api_stacks_live "
    "ON iacloud_api_stacks (project, name) WHERE deleted_at IS NULL",
    """CREATE TABLE IF NOT EXISTS iacloud_api_operations (
        id TEXT PRIMARY KEY,
        project TEXT NOT NULL,
        stack_id TEXT NOT NULL,
        stack TEXT NOT NULL,
        state_key TEXT NOT NULL,
        action TEXT NOT NULL,
        status TEXT NOT NULL,
        requested_by TEXT NOT NULL,
        format TEXT NOT NULL,
        template TEXT NOT NULL,
        parameters TEXT NOT NULL,
        revision INTEGER NOT NULL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        worker TEXT,
        heartbeat_at TEXT,
        progress TEXT NOT NULL,
        error TEXT,
        result TEXT,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS iacloud_api_operations_queue "
    "ON iacloud_api_operations (status, created_at)",
    "CREATE INDEX IF NOT EXISTS iacloud_api_operations_stack "
    "ON iacloud_api_operations (stack_id, created_at)",
    """CREATE TABLE IF NOT EXISTS iacloud_api_op_events (
        op_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        time TEXT NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (op_id, seq)
    )""",
    # Plans made for someone to approve (the dashboard's Approve): kept here, not in the
    # browser, since they may carry hidden values; op_id is set by the one approval.
    """CREATE TABLE IF NOT EXISTS iacloud_api_plans (
        id TEXT PRIMARY KEY,
        project TEXT NOT NULL,
        stack TEXT NOT NULL,
        stack_id TEXT,
        revision INTEGER NOT NULL,
        action TEXT NOT NULL,
        format TEXT NOT NULL,
        template TEXT NOT NULL,
        parameters TEXT NOT NULL,
        plan TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        op_id TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS iacloud_api_plans_op ON iacloud_api_plans (op_id)",
]
PLAN_KEPT = timedelta(days=1)  # an unapproved plan older than this is dropped


class StackExists(IacloudError):
    """A live stack of that name is already in the project."""


class Conflict(IacloudError):
    """The stack changed since the client read it (If-Match), or a run is queued or running."""


def iso(t: datetime) -> str:
    """Stored times compare as text: always UTC, always with microseconds."""
    return t.astimezone(timezone.utc).isoformat(timespec="microseconds")


def now() -> str:
    return iso(datetime.now(timezone.utc))


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass
class StackRow:
    id: str
    project: str
    name: str
    state_key: str
    description: str
    format: str
    template: str
    parameters: dict[str, Any]
    parameters_shown: dict[str, Any]
    revision: int
    status: str
    status_reason: str
    last_operation: str | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None


@dataclass
class OperationRow:
    id: str
    project: str
    stack_id: str
    stack: str
    state_key: str
    action: str  # CREATE, UPDATE, DELETE, DRIFT
    status: str  # QUEUED, IN_PROGRESS, COMPLETE, FAILED, CANCELLED
    requested_by: str
    format: str
    template: str
    parameters: dict[str, Any]
    revision: int
    cancel_requested: bool
    worker: str | None
    progress: dict[str, Any]
    error: dict[str, Any] | None
    result: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    # A saved plan (SavedPlan.id) this operation applies instead of planning anew; only read
    # when the operation is queued, which marks the plan approved in the same transaction.
    plan_id: str | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


@dataclass
class SavedPlan:
    """A plan made for approval: what it was made from (stack revision, template, parameters)
    and the engine's plan as JSON (with hidden values: it never leaves the server)."""

    id: str
    project: str
    stack: str
    stack_id: str | None  # None: a plan creating the stack
    revision: int
    action: str  # CREATE, UPDATE, DELETE
    format: str
    template: str
    parameters: dict[str, Any]
    plan: str
    created_by: str
    created_at: datetime
    op_id: str | None = None


_STACK_COLS = (
    "id, project, name, state_key, description, format, template, parameters, parameters_shown, "
    "revision, status, status_reason, last_operation, created_at, updated_at, deleted_at"
)
_OP_COLS = (
    "id, project, stack_id, stack, state_key, action, status, requested_by, format, template, "
    "parameters, revision, cancel_requested, worker, progress, error, result, created_at, "
    "started_at, finished_at"
)

_PLAN_COLS = (
    "id, project, stack, stack_id, revision, action, format, template, parameters, plan, "
    "created_by, created_at, op_id"
)


def _stack(r: Sequence[Any]) -> StackRow:
    return StackRow(
        id=r[0], project=r[1], name=r[2], state_key=r[3], description=r[4], format=r[5],
        template=r[6], parameters=json.loads(r[7]), parameters_shown=json.loads(r[8]),
        revision=r[9], status=r[10], status_reason=r[11], last_operation=r[12],
        created_at=datetime.fromisoformat(r[13]), updated_at=datetime.fromisoformat(r[14]),
        deleted_at=_parse_time(r[15]),
    )  # fmt: skip


def _op(r: Sequence[Any]) -> OperationRow:
    return OperationRow(
        id=r[0], project=r[1], stack_id=r[2], stack=r[3], state_key=r[4], action=r[5],
        status=r[6], requested_by=r[7], format=r[8], template=r[9], parameters=json.loads(r[10]),
        revision=r[11], cancel_requested=bool(r[12]), worker=r[13], progress=json.loads(r[14]),
        error=json.loads(r[15]) if r[15] else None, result=json.loads(r[16]) if r[16] else None,
        created_at=datetime.fromisoformat(r[17]), started_at=_parse_time(r[18]),
        finished_at=_parse_time(r[19]),
    )  # fmt: skip


class _Cursor:
    """One transaction's statements, written with '?' placeholders for both databases."""

    def __init__(self, cur: Any, pg: bool) -> None:
        self.cur = cur
        self.pg = pg

    def run(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        if self.pg:
            sql = sql.replace("?", "%s")
        self.cur.execute(sql, tuple(params))
        return list(self.cur.fetchall()) if self.cur.description else []

    @property
    def rowcount(self) -> int:
        return int(self.cur.rowcount)


class Store:
    """The service tables of one database; one connection per thread."""

    def __init__(self, url: str, sqlite_path: Path | None) -> None:
        self.url = url
        self.sqlite_path = sqlite_path
        self.pg = sqlite_path is None
        self._local = threading.local()
        self._all: list[Any] = []
        self._all_lock = threading.Lock()
        with self._tx() as cur:
            for statement in _SCHEMA:
                cur.run(statement)

    # -- connections --

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and not (self.pg and conn.closed):
            return conn
        if self.pg:
            import psycopg

            from iacloud.state.pg_url import parse_url

            target = parse_url(self.url)
            conn = psycopg.connect(target.conninfo, autocommit=True, connect_timeout=10,
                                   application_name="iacloud-serve")  # fmt: skip
            if target.schema:
                conn.execute("SELECT set_config('search_path', %s, false)", (f'"{target.schema}"',))
        else:
            assert self.sqlite_path is not None
            conn = sqlite3.connect(self.sqlite_path, timeout=10.0, isolation_level=None,
                                   check_same_thread=False)  # fmt: skip
            conn.execute("PRAGMA synchronous=NORMAL")
        self._local.conn = conn
        with self._all_lock:
            self._all.append(conn)
        return conn

    @contextmanager
    def _tx(self) -> Iterator[_Cursor]:
        conn = self._conn()
        if self.pg:
            with conn.transaction(), conn.cursor() as cur:
                yield _Cursor(cur, True)
            return
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield _Cursor(cur, False)
        except BaseException:
            conn.rollback()
            raise
        cur.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        conn = self._conn()
        if self.pg:
            with conn.cursor() as cur:
                return _Cursor(cur, True).run(sql, params)
        return conn.execute(sql, tuple(params)).fetchall()

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                with suppress(Exception):
                    conn.close()
            self._all.clear()

    # -- stacks --

    def create_stack(self, stack: StackRow, op: OperationRow) -> None:
        with self._tx() as cur:
            if cur.run(
                "SELECT 1 FROM iacloud_api_stacks WHERE project = ? AND name = ? "
                "AND deleted_at IS NULL",
                (stack.project, stack.name),
            ):
                raise StackExists(f"stack '{stack.name}' already exists in the project")
            cur.run(
                f"INSERT INTO iacloud_api_stacks ({_STACK_COLS}) VALUES ({_marks(16)})",
                _stack_values(stack),
            )
            self._insert_op(cur, op)

    def get_stack(self, project: str, name: str) -> StackRow | None:
        rows = self._read(
            f"SELECT {_STACK_COLS} FROM iacloud_api_stacks WHERE project = ? AND name = ? "
            "AND deleted_at IS NULL",
            (project, name),
        )
        return _stack(rows[0]) if rows else None

    def list_stacks(self, project: str, limit: int, marker: str | None) -> list[dict[str, Any]]:
        """The project's live stacks by name, as the summaries the list shows (the templates
        and parameters stay in the database: a list of 1,000 stacks reads only these)."""
        sql = (
            "SELECT id, name, description, status, status_reason, revision, created_at, "
            "updated_at FROM iacloud_api_stacks WHERE project = ? AND deleted_at IS NULL"
        )
        params: list[Any] = [project]
        if marker:
            sql += " AND name > ?"
            params.append(marker)
        sql += " ORDER BY name LIMIT ?"
        params.append(limit)
        keys = ("id", "name", "description", "status", "status_reason", "revision",
                "created_at", "updated_at")  # fmt: skip
        return [dict(zip(keys, r, strict=True)) for r in self._read(sql, params)]

    def list_version(self, project: str) -> tuple[Any, ...]:
        """Changes whenever a stack of the project is created or any of its rows changes (each
        update counts `changes` up), whichever server made it; no clock involved."""
        rows = self._read(
            "SELECT COUNT(*), SUM(changes) FROM iacloud_api_stacks WHERE project = ?",
            (project,),
        )
        return tuple(rows[0])

    def submit(
        self,
        stack: StackRow,
        op: OperationRow,
        expect_revision: int | None,
        changes: dict[str, Any],
        bump: bool = True,
    ) -> None:
        """Queue `op` on an existing stack, storing `changes` (template, parameters, ...) and a
        new revision, unless the stack moved past `expect_revision` (If-Match)."""
        with self._tx() as cur:
            rows = cur.run(
                "SELECT revision FROM iacloud_api_stacks WHERE id = ? AND deleted_at IS NULL",
                (stack.id,),
            )
            if not rows:
                raise Conflict(f"stack '{stack.name}' was deleted meanwhile")
            if expect_revision is not None and rows[0][0] != expect_revision:
                raise Conflict(f"stack '{stack.name}' changed since it was read")
            revision = rows[0][0] + 1 if bump else rows[0][0]
            sets = "".join(f"{k} = ?, " for k in changes)  # keys are ours, never the client's
            values = [json.dumps(v) if isinstance(v, dict) else v for v in changes.values()]
            if bump or changes:  # a drift check leaves the stack as it is
                cur.run(
                    f"UPDATE iacloud_api_stacks SET {sets}changes = changes + 1, revision = ?, "
                    "updated_at = ? WHERE id = ?",
                    [*values, revision, now(), stack.id],
                )
            op.revision = revision
            self._insert_op(cur, op)

    def _insert_op(self, cur: _Cursor, op: OperationRow) -> None:
        cur.run(
            f"INSERT INTO iacloud_api_operations ({_OP_COLS}) VALUES ({_marks(20)})",
            _op_values(op),
        )
        if op.plan_id is not None:
            cur.run(
                "UPDATE iacloud_api_plans SET op_id = ? WHERE id = ? AND op_id IS NULL",
                (op.id, op.plan_id),
            )
            if cur.rowcount != 1:
                raise Conflict("this plan was approved already")
        if op.action != "DRIFT":
            cur.run(
                "UPDATE iacloud_api_stacks SET changes = changes + 1, status = ?, "
                "status_reason = ?, last_operation = ? WHERE id = ?",
                (f"{op.action}_IN_PROGRESS", "queued", op.id, op.stack_id),
            )
        self._append(cur, op.id, "operation", {"status": op.status, "action": op.action})

    # -- saved plans --

    def save_plan(self, p: SavedPlan) -> None:
        with self._tx() as cur:
            cur.run(
                "DELETE FROM iacloud_api_plans WHERE op_id IS NULL AND created_at < ?",
                (iso(datetime.now(timezone.utc) - PLAN_KEPT),),
            )
            cur.run(
                f"INSERT INTO iacloud_api_plans ({_PLAN_COLS}) VALUES ({_marks(13)})",
                (p.id, p.project, p.stack, p.stack_id, p.revision, p.action, p.format,
                 p.template, json.dumps(p.parameters), p.plan, p.created_by,
                 iso(p.created_at), None),
            )  # fmt: skip

    def get_plan(self, plan_id: str) -> SavedPlan | None:
        rows = self._read(f"SELECT {_PLAN_COLS} FROM iacloud_api_plans WHERE id = ?", (plan_id,))
        if not rows:
            return None
        r = rows[0]
        return SavedPlan(
            id=r[0], project=r[1], stack=r[2], stack_id=r[3], revision=r[4], action=r[5],
            format=r[6], template=r[7], parameters=json.loads(r[8]), plan=r[9],
            created_by=r[10], created_at=datetime.fromisoformat(r[11]), op_id=r[12],
        )  # fmt: skip

    def plan_of(self, op_id: str) -> str | None:
        """The saved plan an operation applies (JSON), if it was queued with one."""
        rows = self._read("SELECT plan FROM iacloud_api_plans WHERE op_id = ?", (op_id,))
        return rows[0][0] if rows else None

    # -- operations --

    def get_op(self, op_id: str) -> OperationRow | None:
        rows = self._read(f"SELECT {_OP_COLS} FROM iacloud_api_operations WHERE id = ?", (op_id,))
        return _op(rows[0]) if rows else None

    def stack_ops(self, stack_id: str, limit: int) -> list[OperationRow]:
        rows = self._read(
            f"SELECT {_OP_COLS} FROM iacloud_api_operations WHERE stack_id = ? "
            "ORDER BY created_at DESC, id LIMIT ?",
            (stack_id, limit),
        )
        return [_op(r) for r in rows]

    def claim(self, worker: str) -> OperationRow | None:
        """The oldest queued operation of a stack with no other operation before it still
        queued or running, now IN_PROGRESS and ours. PostgreSQL: FOR UPDATE SKIP LOCKED lets
        several servers claim at once, each a different row; SQLite: one writer at a time."""
        sql = (
            f"SELECT {_OP_COLS} FROM iacloud_api_operations q WHERE status = 'QUEUED' "
            "AND NOT EXISTS (SELECT 1 FROM iacloud_api_operations o "
            "WHERE o.stack_id = q.stack_id AND (o.status = 'IN_PROGRESS' "
            "OR (o.status = 'QUEUED' AND o.created_at < q.created_at)))"
            " ORDER BY created_at LIMIT 1"
        )
        if self.pg:
            sql += " FOR UPDATE SKIP LOCKED"
        with self._tx() as cur:
            rows = cur.run(sql)
            if not rows:
                return None
            op = _op(rows[0])
            t = now()
            cur.run(
                "UPDATE iacloud_api_operations SET status = 'IN_PROGRESS', worker = ?, "
                "heartbeat_at = ?, started_at = ? WHERE id = ?",
                (worker, t, t, op.id),
            )
            self._stack_status(cur, op, "IN_PROGRESS", "")
            self._append(cur, op.id, "operation", {"status": "IN_PROGRESS", "action": op.action})
            op.status, op.worker, op.started_at = "IN_PROGRESS", worker, datetime.fromisoformat(t)
            return op

    def _stack_status(self, cur: _Cursor, op: OperationRow, status: str, reason: str) -> None:
        if op.action == "DRIFT":
            return
        cur.run(
            "UPDATE iacloud_api_stacks SET changes = changes + 1, status = ?, status_reason = ?, "
            "updated_at = ?"
            + (", deleted_at = ?" if op.action == "DELETE" and status == "COMPLETE" else "")
            + " WHERE id = ? AND last_operation = ?",
            (f"{op.action}_{status}", reason[:500], now())
            + ((now(),) if op.action == "DELETE" and status == "COMPLETE" else ())
            + (op.stack_id, op.id),
        )

    def _append(self, cur: _Cursor, op_id: str, kind: str, data: dict[str, Any]) -> int:
        rows = cur.run(
            "SELECT COALESCE(MAX(seq), 0) FROM iacloud_api_op_events WHERE op_id = ?", (op_id,)
        )
        seq = int(rows[0][0]) + 1
        cur.run(
            "INSERT INTO iacloud_api_op_events (op_id, seq, time, kind, data) "
            "VALUES (?, ?, ?, ?, ?)",
            (op_id, seq, now(), kind, json.dumps(data, default=str)),
        )
        return seq

    def record_step(
        self, op_id: str, data: dict[str, Any], progress: dict[str, Any] | None
    ) -> None:
        """A resource event of a running operation, and its progress table as it now stands
        (None: not written this time)."""
        with self._tx() as cur:
            self._append(cur, op_id, "resource", data)
            if progress is not None:
                cur.run(
                    "UPDATE iacloud_api_operations SET progress = ?, heartbeat_at = ? WHERE id = ?",
                    (json.dumps(progress), now(), op_id),
                )

    def set_progress(self, op_id: str, progress: dict[str, Any]) -> None:
        with self._tx() as cur:
            cur.run(
                "UPDATE iacloud_api_operations SET progress = ?, heartbeat_at = ? WHERE id = ?",
                (json.dumps(progress), now(), op_id),
            )

    def stack_deleted(self, stack_id: str) -> bool:
        rows = self._read("SELECT deleted_at FROM iacloud_api_stacks WHERE id = ?", (stack_id,))
        return not rows or rows[0][0] is not None

    def finish(
        self,
        op: OperationRow,
        status: str,
        error: dict[str, Any] | None,
        result: dict[str, Any] | None,
        reason: str = "",
        only_if_worker: str | None = None,
        only_status: str | None = None,
        progress: dict[str, Any] | None = None,
    ) -> bool:
        """Close an operation (and its stack's status); False if it was closed already or
        belongs to another worker."""
        with self._tx() as cur:
            sql = (
                "UPDATE iacloud_api_operations SET status = ?, error = ?, result = ?, "
                "finished_at = ?"
                + (", progress = ?" if progress is not None else "")
                + " WHERE id = ? AND status IN ('QUEUED', 'IN_PROGRESS')"
            )
            params: list[Any] = [
                status,
                json.dumps(error) if error else None,
                json.dumps(result, default=str) if result is not None else None,
                now(),
                *([json.dumps(progress)] if progress is not None else []),
                op.id,
            ]
            if only_if_worker is not None:
                sql += " AND worker = ?"
                params.append(only_if_worker)
            if only_status is not None:
                sql += " AND status = ?"
                params.append(only_status)
            cur.run(sql, params)
            if cur.rowcount != 1:
                return False
            self._stack_status(cur, op, status, reason)
            self._append(cur, op.id, "operation", {"status": status, "action": op.action,
                                                    "error": error})  # fmt: skip
            return True

    def events_after(
        self, op_id: str, after: int, limit: int = 500
    ) -> list[tuple[int, str, str, str]]:
        rows = self._read(
            "SELECT seq, time, kind, data FROM iacloud_api_op_events WHERE op_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (op_id, after, limit),
        )
        return [(int(r[0]), r[1], r[2], r[3]) for r in rows]

    def request_cancel(self, op_id: str) -> None:
        with self._tx() as cur:
            cur.run("UPDATE iacloud_api_operations SET cancel_requested = 1 WHERE id = ?", (op_id,))

    def cancel_requests(self, worker: str) -> set[str]:
        rows = self._read(
            "SELECT id FROM iacloud_api_operations WHERE worker = ? AND status = 'IN_PROGRESS' "
            "AND cancel_requested = 1",
            (worker,),
        )
        return {r[0] for r in rows}

    def heartbeat(self, worker: str) -> None:
        with self._tx() as cur:
            cur.run(
                "UPDATE iacloud_api_operations SET heartbeat_at = ? WHERE worker = ? "
                "AND status = 'IN_PROGRESS'",
                (now(), worker),
            )

    def orphaned(self, worker: str, stale_after: float) -> list[OperationRow]:
        """Running operations of another worker whose heartbeat stopped: a server that died."""
        limit = iso(datetime.now(timezone.utc) - timedelta(seconds=stale_after))
        rows = self._read(
            f"SELECT {_OP_COLS} FROM iacloud_api_operations WHERE status = 'IN_PROGRESS' "
            "AND (worker IS NULL OR worker <> ?) AND (heartbeat_at IS NULL OR heartbeat_at < ?)",
            (worker, limit),
        )
        return [_op(r) for r in rows]


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _stack_values(s: StackRow) -> tuple[Any, ...]:
    return (
        s.id, s.project, s.name, s.state_key, s.description, s.format, s.template,
        json.dumps(s.parameters), json.dumps(s.parameters_shown), s.revision, s.status,
        s.status_reason, s.last_operation, iso(s.created_at), iso(s.updated_at),
        None,
    )  # fmt: skip


def _op_values(o: OperationRow) -> tuple[Any, ...]:
    return (
        o.id, o.project, o.stack_id, o.stack, o.state_key, o.action, o.status, o.requested_by,
        o.format, o.template, json.dumps(o.parameters), o.revision, int(o.cancel_requested),
        o.worker, json.dumps(o.progress), None, None, iso(o.created_at), None, None,
    )  # fmt: skip


def new_id() -> str:
    return uuid.uuid4().hex
