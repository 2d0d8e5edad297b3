"""The embedded state backend: one SQLite file (mode 0600, WAL) holding every stack's versioned
resources, pending operations, events, outputs and lock, written in small transactions."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sqlite3
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

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
)
from iacloud.state.model import ResourceRow, StackHistory, VersionRecord

SCHEMA_VERSION = 1
_T = TypeVar("_T")
_FORMAT = "iacloud-state"
_LOCK_POLL = 0.1  # seconds between attempts while another run holds a stack's lock
_BUSY_TIMEOUT = 10.0  # seconds sqlite waits for another writer's (always short) transaction
_VERSION_STATUSES = frozenset({"in_progress", "complete", "failed", "interrupted"})

# Every resource row is valid for serials [serial_from, serial_to); serial_to is NULL while it
# is current. Rows are only ever closed or appended, so old versions stay readable for free and
# a step writes one row instead of the whole state. The CHECK forbids empty intervals: a row
# both opened and closed in one serial is deleted instead (see _close_current).
_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stacks (
    name TEXT PRIMARY KEY,
    stack_id TEXT NOT NULL,
    lineage TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    stack TEXT NOT NULL,
    serial INTEGER NOT NULL,
    lineage TEXT NOT NULL,
    command TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    outputs TEXT,
    PRIMARY KEY (stack, serial)
);
CREATE TABLE IF NOT EXISTS resources (
    stack TEXT NOT NULL,
    address TEXT NOT NULL,
    serial_from INTEGER NOT NULL,
    serial_to INTEGER,
    object_id TEXT NOT NULL,
    data TEXT NOT NULL,
    CHECK (serial_to IS NULL OR serial_to > serial_from)
);
CREATE UNIQUE INDEX IF NOT EXISTS resources_current
    ON resources (stack, address) WHERE serial_to IS NULL;
CREATE INDEX IF NOT EXISTS resources_history ON resources (stack, serial_from);
CREATE TABLE IF NOT EXISTS pending (
    stack TEXT NOT NULL,
    address TEXT NOT NULL,
    serial INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (stack, address)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stack TEXT NOT NULL,
    serial INTEGER NOT NULL,
    time TEXT NOT NULL,
    address TEXT NOT NULL,
    type TEXT NOT NULL,
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_stack ON events (stack, id);
CREATE TABLE IF NOT EXISTS locks (
    stack TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    operation TEXT NOT NULL,
    since TEXT NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('format', '{_FORMAT}');
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}');
COMMIT;
"""


def _iso(t: datetime) -> str:
    # Naive datetimes are taken as UTC so every stored timestamp compares and sorts as text.
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).isoformat()


def _utcnow() -> str:
    return _iso(datetime.now(timezone.utc))


def _brief(exc: Exception) -> str:
    """A row's validation errors in one line: pydantic's own text spans many, with URLs."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    errors = exc.errors(include_url=False)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in errors[:3]]
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def _outputs(text: str) -> dict[str, Any]:
    """A version's outputs column: a table."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"expected a table of outputs, found {type(value).__name__}")
    return value


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    # A killed child its parent has not reaped yet still answers kill(0) but will never
    # release anything: count a zombie as dead.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


class SQLiteBackend(StateBackend):
    """State in one SQLite file. Nothing touches the disk until the first write."""

    # Durability. WAL with synchronous=NORMAL: a commit is in the WAL (the OS page cache) before
    # it returns, so killing the process at any instant, kill -9 included, loses nothing
    # committed; only an OS crash or power cut can roll back the last commits, to a consistent
    # earlier state. A lost pending operation is the one loss that leaks (a host object no state
    # mentions), so record_pending alone commits with synchronous=FULL: its fsync also carries
    # every earlier commit, so after a power cut at most the last result is lost and its pending
    # operation survives to be reconciled. One fsync per step instead of two (FULL everywhere)
    # or none (NORMAL everywhere). `python bench/sqlite_sync.py` prints the
    # cost of all three; on the development VM: about 0.15, 0.45 and 0.3 ms per step.
    _SYNCHRONOUS = "NORMAL"
    _SYNC_PENDING = True

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = Path(path)
        # Read-only (drift): the file is opened with mode=ro, so nothing this process does can
        # change it, not even a checkpoint at close; it never takes the lock either.
        self.read_only = read_only
        self._mutex = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._host = socket.gethostname()
        if self.path.exists():
            # Fail at open rather than in the middle of a run on a file that is not ours.
            with self._mutex, self._guard():
                self._open(create=False)

    # -- connection -------------------------------------------------------------------------

    def _error(self, what: str) -> StateError:
        return StateError(f"state database '{self.path}': {what}")

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn storage failures into StateError naming the file: callers see a message, not
        a sqlite traceback."""
        try:
            yield
        except (StateError, LockHeld):
            raise
        except sqlite3.Error as e:
            raise self._error(str(e)) from e
        except (ValidationError, ValueError) as e:  # a row whose JSON no longer parses
            raise self._error(f"corrupt record: {e}") from e
        except OSError as e:
            raise self._error(e.strerror or str(e)) from e

    def _create(self) -> None:
        """Make the store complete under a temporary name and link it into place: the file at
        `path` never exists without its schema, so an existing file without one is damaged
        (or a copy made without its -wal), never a store that was about to be made."""
        old = os.umask(0o077)  # parents 0700; sqlite's -wal/-shm can be no looser either
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Create the file ourselves so it is 0600 from its first instant; sqlite would
            # create it 0644 and a chmod after would leave a window.
            os.close(os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.executescript(_SCHEMA)
            finally:
                conn.close()  # the last connection: checkpoints and removes tmp's -wal/-shm
            with contextlib.suppress(FileExistsError):  # another run made it meanwhile: keep it
                os.link(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        finally:
            os.umask(old)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{tmp}{suffix}")

    def _open(self, create: bool) -> None:
        if create and not self.path.exists():
            self._create()
        old = os.umask(0o077)
        try:
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro" if self.read_only else self.path,
                uri=self.read_only,
                timeout=_BUSY_TIMEOUT,
                isolation_level=None,  # we issue BEGIN/COMMIT: one transaction per record_*
                check_same_thread=False,  # guarded by self._mutex instead
            )
        finally:
            os.umask(old)
        try:
            # Check what the file is before changing anything in it (journal mode included).
            self._check_schema(conn)
            if not self.read_only:
                self._configure(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _check_schema(self, conn: sqlite3.Connection) -> bool:
        """True if the file holds our schema; raise for anything else. An existing file without
        tables is not a new store (those are made whole, see _create): it is empty or a copy of
        a store made without its -wal file, and planning on it would create every object again."""
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            try:
                size = f"{self.path.stat().st_size} bytes"
            except OSError:
                size = "unreadable"
            raise self._error(
                f"the file exists but holds no state ({size}, no tables): it is damaged, or a "
                "copy of a state database made without its -wal file. Nothing was changed. "
                "Restore the file together with its -wal file; if this state never held "
                "anything, move the file away and iacloud starts a new one"
            )
        if "meta" not in tables:
            raise self._error("not an iacloud state database (it has no 'meta' table)")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != _FORMAT or "schema_version" not in meta:
            raise self._error("not an iacloud state database")
        try:
            version = int(meta["schema_version"])
        except ValueError:
            raise self._error(f"bad schema_version {meta['schema_version']!r}") from None
        if version > SCHEMA_VERSION:
            raise self._error(
                f"schema version {version} was written by a newer iacloud "
                f"(this one reads up to version {SCHEMA_VERSION}); upgrade iacloud"
            )
        return True

    def _configure(self, conn: sqlite3.Connection) -> None:
        old = os.umask(0o077)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._SYNCHRONOUS}")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens -wal, -shm
        finally:
            os.umask(old)
        # sqlite gives -wal/-shm the main file's mode; tighten them anyway in case the main
        # file was made looser by hand.
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            try:
                if stat.S_IMODE(side.stat().st_mode) & 0o077:
                    side.chmod(0o600)
            except OSError:
                pass  # absent, or not ours to change

    def _db(self, write: bool) -> sqlite3.Connection | None:
        """The connection, or None when reading a store that does not exist yet."""
        if write and self.read_only:
            raise self._error("opened read-only; this command does not write state")
        if self._conn is None:
            if not write and not self.path.exists():
                return None
            self._open(create=write)
        assert self._conn is not None
        return self._conn

    @contextmanager
    def _tx(self, fsync: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction, flushed to the disk before returning if `fsync`. BEGIN
        IMMEDIATE takes the write lock up front so read-then-write sequences (the lock, serial
        numbers) cannot interleave with another process."""
        with self._mutex, self._guard():
            db = self._db(write=True)
            assert db is not None
            raise_sync = fsync and self._SYNCHRONOUS != "FULL"
            if raise_sync:
                db.execute("PRAGMA synchronous=FULL")
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            finally:
                if raise_sync:
                    db.execute(f"PRAGMA synchronous={self._SYNCHRONOUS}")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection | None]:
        """One read transaction, so multi-table reads see a single committed state."""
        with self._mutex, self._guard():
            db = self._db(write=False)
            if db is None:
                yield None
                return
            db.execute("BEGIN")
            try:
                yield db
            finally:
                if db.in_transaction:
                    db.execute("COMMIT")

    def create(self) -> None:
        """Make the store now if it does not exist yet: other stores that keep their tables in
        the same file (iacloud/identity) need it made whole first."""
        with self._mutex, self._guard():
            self._db(write=True)

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- reads ------------------------------------------------------------------------------

    def _decode(self, row: str, parse: Callable[[], _T]) -> _T:
        """One stored row made into its record, or a StateError naming the row."""
        try:
            return parse()
        except (ValidationError, ValueError, TypeError) as exc:
            raise self._error(f"corrupt record: {row}: {_brief(exc)}") from None

    def snapshot(self, stack: str, serial: int | None = None) -> Snapshot:
        with self._read() as db:
            row = (
                None
                if db is None
                else db.execute(
                    "SELECT stack_id, lineage FROM stacks WHERE name = ?", (stack,)
                ).fetchone()
            )
            if db is None or row is None:
                if serial not in (None, 0):
                    raise self._error(f"stack '{stack}' has no version {serial}")
                # Fresh ids, not stored: begin_version stores what the caller carries over.
                return Snapshot(
                    stack=stack, stack_id=str(uuid.uuid4()), lineage=str(uuid.uuid4()), serial=0
                )
            stack_id, lineage = row
            current = db.execute(
                "SELECT COALESCE(MAX(serial), 0) FROM versions WHERE stack = ?", (stack,)
            ).fetchone()[0]
            if not isinstance(current, int) or isinstance(current, bool):
                raise self._error(
                    f"corrupt record: the versions of stack '{stack}' have a serial that is not "
                    f"a number ({str(current)[:40]!r})"
                )
            if serial is None:
                serial = current
            elif not 0 <= serial <= current:
                raise self._error(f"stack '{stack}' has no version {serial} (latest: {current})")
            resources = {
                address: self._decode(
                    f"resource '{address}' of stack '{stack}' (resources row {rowid})",
                    lambda data=data: ResourceState.model_validate_json(data),
                )
                for rowid, address, data in db.execute(
                    "SELECT rowid, address, data FROM resources WHERE stack = ? "
                    "AND serial_from <= ? AND (serial_to IS NULL OR serial_to > ?) "
                    "ORDER BY address",
                    (stack, serial, serial),
                )
            }
            out = db.execute(
                "SELECT outputs, serial FROM versions WHERE stack = ? AND serial <= ? "
                "AND outputs IS NOT NULL ORDER BY serial DESC LIMIT 1",
                (stack, serial),
            ).fetchone()
            # A pending operation is still unresolved now, so it belongs to every version
            # from the one it was started in.
            pending = [
                self._decode(
                    f"pending operation on '{address}' of stack '{stack}'",
                    lambda data=data: PendingOperation.model_validate_json(data),
                )
                for address, data in db.execute(
                    "SELECT address, data FROM pending WHERE stack = ? AND serial <= ? "
                    "ORDER BY address",
                    (stack, serial),
                )
            ]
            outputs = (
                self._decode(
                    f"outputs of version {out[1]} of stack '{stack}'", lambda: _outputs(out[0])
                )
                if out
                else {}
            )
            return Snapshot(
                stack=stack,
                stack_id=stack_id,
                lineage=lineage,
                serial=serial,
                resources=resources,
                outputs=outputs,
                pending=pending,
            )

    def versions(self, stack: str) -> list[StateVersion]:
        with self._read() as db:
            if db is None:
                return []
            return [
                self._decode(
                    f"version {str(row[0])[:40]} of stack '{stack}'",
                    lambda row=row: StateVersion(
                        serial=row[0],
                        lineage=row[1],
                        command=row[2],
                        status=row[3],
                        created_at=datetime.fromisoformat(row[4]),
                        finished_at=datetime.fromisoformat(row[5]) if row[5] else None,
                    ),
                )
                for row in db.execute(
                    "SELECT serial, lineage, command, status, created_at, finished_at "
                    "FROM versions WHERE stack = ? ORDER BY serial",
                    (stack,),
                )
            ]

    def events(self, stack: str, limit: int | None = None) -> list[Event]:
        with self._read() as db:
            if db is None:
                return []
            rows = db.execute(
                "SELECT id, serial, time, address, type, action, status, reason FROM events "
                "WHERE stack = ? ORDER BY id DESC LIMIT ?",
                (stack, -1 if limit is None else min(max(limit, 0), 2**62)),
            ).fetchall()
            return [
                self._decode(
                    f"event {row[0]} of stack '{stack}'",
                    lambda row=row: Event(
                        serial=row[1],
                        time=datetime.fromisoformat(row[2]),
                        address=row[3],
                        type=row[4],
                        action=row[5],
                        status=row[6],
                        reason=row[7],
                    ),
                )
                for row in reversed(rows)
            ]

    def stacks(self) -> list[str]:
        with self._read() as db:
            if db is None:
                return []
            return [r[0] for r in db.execute("SELECT name FROM stacks ORDER BY name")]

    # -- writes -----------------------------------------------------------------------------

    def _checkpoint(self) -> None:
        """Copy the WAL into the main file, so that a copy of state.db made without its -wal
        (a backup, a move to another machine) still holds every finished run and every stack
        (not a store that looks as if nothing was ever applied). PASSIVE: never waits for
        readers; what it cannot copy now is copied by a later checkpoint."""
        with self._mutex, self._guard():
            if self._conn is not None and not self.read_only:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def begin_version(self, stack: str, command: str, stack_id: str, lineage: str) -> int:
        new_stack = False
        with self._tx() as db:
            row = db.execute(
                "SELECT stack_id, lineage FROM stacks WHERE name = ?", (stack,)
            ).fetchone()
            if row is None:
                new_stack = True
                db.execute(
                    "INSERT INTO stacks (name, stack_id, lineage, created_at) VALUES (?, ?, ?, ?)",
                    (stack, stack_id, lineage, _utcnow()),
                )
            elif tuple(row) != (stack_id, lineage):
                # The caller planned against a different state than the one stored: writing
                # would splice two histories together.
                raise self._error(
                    f"stack '{stack}' has stack_id {row[0]} and lineage {row[1]}, but this run "
                    f"read stack_id {stack_id} and lineage {lineage}; re-run to plan against "
                    "the current state"
                )
            # Callers hold the stack's lock, so a version still in progress was left by a run
            # that died.
            db.execute(
                "UPDATE versions SET status = 'interrupted' "
                "WHERE stack = ? AND status = 'in_progress'",
                (stack,),
            )
            serial = (
                db.execute(
                    "SELECT COALESCE(MAX(serial), 0) FROM versions WHERE stack = ?", (stack,)
                ).fetchone()[0]
                + 1
            )
            db.execute(
                "INSERT INTO versions (stack, serial, lineage, command, status, created_at) "
                "VALUES (?, ?, ?, ?, 'in_progress', ?)",
                (stack, serial, lineage, command, _utcnow()),
            )
        if new_stack:
            self._checkpoint()
        return serial

    @staticmethod
    def _insert_event(db: sqlite3.Connection, stack: str, event: Event) -> None:
        db.execute(
            "INSERT INTO events (stack, serial, time, address, type, action, status, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                stack,
                event.serial,
                _iso(event.time),
                event.address,
                event.type,
                event.action,
                event.status,
                event.reason,
            ),
        )

    def record_pending(self, stack: str, op: PendingOperation, event: Event) -> None:
        data = op.model_dump_json()
        with self._tx(fsync=self._SYNC_PENDING) as db:
            db.execute(
                "INSERT INTO pending (stack, address, serial, data) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (stack, address) DO UPDATE SET serial = excluded.serial, "
                "data = excluded.data",
                (stack, op.address, op.serial, data),
            )
            self._insert_event(db, stack, event)

    def _check_open_version(self, db: sqlite3.Connection, stack: str, serial: int) -> None:
        row = db.execute(
            "SELECT status FROM versions WHERE stack = ? AND serial = ?", (stack, serial)
        ).fetchone()
        if row is None or row[0] != "in_progress":
            # Writing into a closed version would rewrite history that others have read.
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
        data = None if resource is None else resource.model_dump_json()
        with self._tx() as db:
            self._check_open_version(db, stack, serial)
            current = db.execute(
                "SELECT rowid, serial_from, object_id FROM resources "
                "WHERE stack = ? AND address = ? AND serial_to IS NULL",
                (stack, address),
            ).fetchone()
            if current is not None and (
                resource is not None or not self._deletes_other(db, stack, address, current[2])
            ):
                self._close_current(db, stack, serial, address, current[0], current[1])
            if resource is not None:
                db.execute(
                    "INSERT INTO resources (stack, address, serial_from, object_id, data) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (stack, address, serial, resource.id, data),
                )
            db.execute("DELETE FROM pending WHERE stack = ? AND address = ?", (stack, address))
            self._insert_event(db, stack, event)

    @staticmethod
    def _deletes_other(db: sqlite3.Connection, stack: str, address: str, current_id: str) -> bool:
        """True when the pending delete names an object other than the address's current one:
        the old object of a create-before-destroy replacement, whose successor (already
        recorded at this address) must stay."""
        row = db.execute(
            "SELECT data FROM pending WHERE stack = ? AND address = ?", (stack, address)
        ).fetchone()
        if row is None:
            return False
        op = json.loads(row[0])
        return op.get("action") == "delete" and op.get("id") not in (None, current_id)

    def _close_current(
        self,
        db: sqlite3.Connection,
        stack: str,
        serial: int,
        address: str,
        rowid: int,
        serial_from: int,
    ) -> None:
        if serial_from == serial:
            # Written earlier in this same version (created then updated or deleted): it was
            # never the state of any finished version, so it has no interval to keep.
            db.execute("DELETE FROM resources WHERE rowid = ?", (rowid,))
        elif serial_from < serial:
            db.execute("UPDATE resources SET serial_to = ? WHERE rowid = ?", (serial, rowid))
        else:
            raise self._error(
                f"'{address}' of stack '{stack}' was recorded in version {serial_from}, "
                f"later than version {serial} being written"
            )

    def record_failure(self, stack: str, address: str, event: Event, keep_pending: bool) -> None:
        with self._tx() as db:
            if not keep_pending:
                db.execute("DELETE FROM pending WHERE stack = ? AND address = ?", (stack, address))
            self._insert_event(db, stack, event)

    def finish_version(
        self, stack: str, serial: int, status: str, outputs: dict[str, Any] | None
    ) -> None:
        if status not in _VERSION_STATUSES - {"in_progress"}:
            raise self._error(f"cannot finish version {serial} with status '{status}'")
        with self._tx() as db:
            cur = db.execute(
                "UPDATE versions SET status = ?, finished_at = ?, outputs = ? "
                "WHERE stack = ? AND serial = ? AND status = 'in_progress'",
                (
                    status,
                    _utcnow(),
                    None if outputs is None else json.dumps(outputs, sort_keys=True),
                    stack,
                    serial,
                ),
            )
            if cur.rowcount != 1:
                self._check_open_version(db, stack, serial)  # raises, saying why
        self._checkpoint()

    # -- lock -------------------------------------------------------------------------------

    @staticmethod
    def _lock_id(stack: str, holder: str, host: str, pid: int, since: str) -> str:
        # Derived from the row rather than stored, so stores made before lock ids existed
        # need no schema change; `since` (microseconds) tells two runs of one pid apart.
        key = "\0".join((stack, holder, host, str(pid), since)).encode()
        return hashlib.sha256(key).hexdigest()[:16]

    @classmethod
    def _lock_row(cls, db: sqlite3.Connection, stack: str) -> tuple[LockInfo, str] | None:
        row = db.execute(
            "SELECT holder, host, pid, operation, since FROM locks WHERE stack = ?", (stack,)
        ).fetchone()
        if row is None:
            return None
        holder, host, pid, operation, since = row
        info = LockInfo(
            holder=holder,
            pid=pid,
            operation=operation,
            since=datetime.fromisoformat(since),
            id=cls._lock_id(stack, holder, host, pid, since),
        )
        return info, host

    def acquire_lock(self, stack: str, operation: str, timeout: float) -> LockInfo:
        deadline = time.monotonic() + max(timeout, 0.0)
        holder = f"{current_user()}@{self._host}"
        while True:
            with self._tx() as db:
                held = self._lock_row(db, stack)
                # Only a holder on this host can be proven dead; one elsewhere needs
                # force_unlock. Our own pid counts as held: the lock is not re-entrant.
                if held is None or (held[1] == self._host and not _pid_alive(held[0].pid)):
                    since = _utcnow()
                    db.execute(
                        "INSERT OR REPLACE INTO locks (stack, holder, host, pid, operation, since)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (stack, holder, self._host, os.getpid(), operation, since),
                    )
                    return LockInfo(
                        holder=holder,
                        pid=os.getpid(),
                        operation=operation,
                        since=datetime.fromisoformat(since),
                        id=self._lock_id(stack, holder, self._host, os.getpid(), since),
                    )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                assert held is not None
                raise LockHeld(stack, held[0])
            time.sleep(min(_LOCK_POLL, remaining))

    def _exists(self) -> bool:
        with self._mutex, self._guard():
            return self._db(write=False) is not None

    def release_lock(self, stack: str) -> None:
        if not self._exists():  # nothing to release, and no reason to create the file
            return
        with self._tx() as db:
            db.execute(
                "DELETE FROM locks WHERE stack = ? AND host = ? AND pid = ?",
                (stack, self._host, os.getpid()),
            )

    def lock_info(self, stack: str) -> LockInfo | None:
        with self._read() as db:
            if db is None:
                return None
            held = self._lock_row(db, stack)
            return None if held is None else held[0]

    def force_unlock(self, stack: str, lock_id: str | None = None) -> LockInfo | None:
        if not self._exists():
            return None
        with self._tx() as db:
            held = self._lock_row(db, stack)
            if held is not None and lock_id is not None and held[0].id != lock_id:
                raise self._error(
                    f"stack '{stack}' is locked by {held[0].describe()}, not by lock {lock_id}; "
                    "nothing was removed"
                )
            db.execute("DELETE FROM locks WHERE stack = ?", (stack,))
            return None if held is None else held[0]

    # -- whole histories (state push/pull) ----------------------------------------------------

    def export_history(self, stack: str) -> StackHistory | None:
        with self._read() as db:
            if db is None:
                return None
            row = db.execute(
                "SELECT stack_id, lineage, created_at FROM stacks WHERE name = ?", (stack,)
            ).fetchone()
            if row is None:
                return None
            versions = [
                VersionRecord(
                    version=StateVersion(
                        serial=serial,
                        lineage=lineage,
                        command=command,
                        status=status,
                        created_at=datetime.fromisoformat(created),
                        finished_at=datetime.fromisoformat(finished) if finished else None,
                    ),
                    outputs=None if outputs is None else json.loads(outputs),
                )
                for serial, lineage, command, status, created, finished, outputs in db.execute(
                    "SELECT serial, lineage, command, status, created_at, finished_at, outputs "
                    "FROM versions WHERE stack = ? ORDER BY serial",
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
                for address, serial_from, serial_to, data in db.execute(
                    "SELECT address, serial_from, serial_to, data FROM resources "
                    "WHERE stack = ? ORDER BY serial_from, address",
                    (stack,),
                )
            ]
            pending = [
                PendingOperation.model_validate_json(data)
                for (data,) in db.execute(
                    "SELECT data FROM pending WHERE stack = ? ORDER BY address", (stack,)
                )
            ]
            events = [
                Event(
                    serial=serial,
                    time=datetime.fromisoformat(t),
                    address=address,
                    type=type_,
                    action=action,
                    status=status,
                    reason=reason,
                )
                for serial, t, address, type_, action, status, reason in db.execute(
                    "SELECT serial, time, address, type, action, status, reason FROM events "
                    "WHERE stack = ? ORDER BY id",
                    (stack,),
                )
            ]
            return StackHistory(
                stack=stack,
                stack_id=row[0],
                lineage=row[1],
                created_at=datetime.fromisoformat(row[2]),
                versions=versions,
                resources=resources,
                pending=pending,
                events=events,
            )

    def import_history(self, history: StackHistory) -> None:
        stack = history.stack
        with self._tx(fsync=True) as db:
            for table in ("stacks", "versions", "resources", "pending", "events"):
                column = "name" if table == "stacks" else "stack"
                db.execute(f"DELETE FROM {table} WHERE {column} = ?", (stack,))
            db.execute(
                "INSERT INTO stacks (name, stack_id, lineage, created_at) VALUES (?, ?, ?, ?)",
                (stack, history.stack_id, history.lineage, _iso(history.created_at)),
            )
            db.executemany(
                "INSERT INTO versions (stack, serial, lineage, command, status, created_at, "
                "finished_at, outputs) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        stack,
                        v.version.serial,
                        v.version.lineage,
                        v.version.command,
                        v.version.status,
                        _iso(v.version.created_at),
                        None if v.version.finished_at is None else _iso(v.version.finished_at),
                        None if v.outputs is None else json.dumps(v.outputs, sort_keys=True),
                    )
                    for v in history.versions
                ],
            )
            db.executemany(
                "INSERT INTO resources (stack, address, serial_from, serial_to, object_id, data)"
                " VALUES (?, ?, ?, ?, ?, ?)",
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
            db.executemany(
                "INSERT INTO pending (stack, address, serial, data) VALUES (?, ?, ?, ?)",
                [(stack, p.address, p.serial, p.model_dump_json()) for p in history.pending],
            )
            for event in history.events:
                self._insert_event(db, stack, event)
        self._checkpoint()
