"""The state backends' contract, each test against SQLite and a real PostgreSQL server (see
tests/pg_server.py): versioned history, pending operations, events, outputs, the lock between
processes, durability across kill -9; and SQLite's own: file modes, refusal of foreign files."""

from __future__ import annotations

import getpass
import os
import random
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from iacloud.state import (
    Event,
    LockHeld,
    PendingOperation,
    ResourceState,
    StateBackend,
    StateError,
    open_backend,
)
from iacloud.state.sqlite import SCHEMA_VERSION, SQLiteBackend

STACK = "web"


def res(address: str, id: str, **attributes: object) -> ResourceState:
    return ResourceState(
        address=address,
        type="server",
        provider="fake",
        id=id,
        inputs={"name": address},
        attributes=dict(attributes),
    )


def ev(serial: int, address: str, status: str = "COMPLETE", action: str = "CREATE") -> Event:
    return Event(serial=serial, address=address, type="server", action=action, status=status)


def pend(
    serial: int, address: str, action: str = "create", id: str | None = None
) -> PendingOperation:
    return PendingOperation(
        address=address, type="server", provider="fake", action=action, id=id, serial=serial
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "dir" / ".iacloud" / "state.db"


class Store:
    """One empty state store of either kind, opened as many times as a test likes."""

    def __init__(self, kind: str, url: str, db_path: Path) -> None:
        self.kind, self.url, self.db_path = kind, url, db_path
        self._opened: list[StateBackend] = []

    def open(self, read_only: bool = False) -> StateBackend:
        b = open_backend(self.url, self.db_path.parent, read_only)
        self._opened.append(b)
        return b

    def sql(self, query: str) -> list[tuple]:
        """A raw query on the store (tables named as in SQLite; iacloud_ prefixed in PG)."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.db_path) as raw:
                rows = raw.execute(query).fetchall()
            raw.close()
            return rows
        import psycopg

        from iacloud.state.pg_url import parse_url

        target = parse_url(self.url)
        with psycopg.connect(target.conninfo, autocommit=True) as raw:
            raw.execute(f"SET search_path TO {target.schema}")
            for t in ("resources", "locks", "versions", "pending", "events", "stacks"):
                query = query.replace(f" {t}", f" iacloud_{t}")
            return list(raw.execute(query).fetchall())  # type: ignore[arg-type]

    def exists(self) -> bool:
        if self.kind == "sqlite":
            return self.db_path.parent.parent.exists()
        import psycopg

        from iacloud.state.pg_url import parse_url

        target = parse_url(self.url)
        with psycopg.connect(target.conninfo) as raw:
            row = raw.execute(
                "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (target.schema,)
            ).fetchone()
        return bool(row and row[0])

    def close(self) -> None:
        for b in self._opened:
            b.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, db_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = Store("sqlite", str(db_path), db_path)
    else:
        s = Store("postgresql", request.getfixturevalue("pg_server").fresh_url(), db_path)
    yield s
    s.close()


@pytest.fixture
def backend(store: Store) -> StateBackend:
    return store.open()


def begin(b: StateBackend, command: str = "apply", stack: str = STACK) -> int:
    snap = b.snapshot(stack)
    return b.begin_version(stack, command, snap.stack_id, snap.lineage)


def put(b: StateBackend, serial: int, resource: ResourceState) -> None:
    """One step the way the executor does it: pending first, then the result."""
    b.record_pending(
        STACK, pend(serial, resource.address), ev(serial, resource.address, "IN_PROGRESS")
    )
    b.record_result(STACK, serial, resource.address, resource, ev(serial, resource.address))


def drop(b: StateBackend, serial: int, address: str) -> None:
    b.record_pending(STACK, pend(serial, address, "delete"), ev(serial, address, "IN_PROGRESS"))
    b.record_result(STACK, serial, address, None, ev(serial, address, action="DELETE"))


def summary(b: StateBackend, serial: int | None = None) -> dict[str, tuple[str, dict]]:
    snap = b.snapshot(STACK, serial)
    return {a: (r.id, r.attributes) for a, r in snap.resources.items()}


# -- files ------------------------------------------------------------------------------------


def test_nothing_is_created_before_the_first_write(backend: StateBackend, store: Store) -> None:
    snap = backend.snapshot(STACK)
    assert snap.serial == 0 and snap.resources == {} and snap.pending == []
    assert backend.versions(STACK) == [] and backend.events(STACK) == []
    assert backend.stacks() == [] and backend.lock_info(STACK) is None
    backend.release_lock(STACK)
    assert backend.force_unlock(STACK) is None
    assert not store.exists()


def test_file_is_0600_and_directory_0700_even_under_a_loose_umask(db_path: Path) -> None:
    old = os.umask(0o022)
    try:
        b = SQLiteBackend(db_path)
        begin(b)
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(db_path.parent.parent.stat().st_mode) == 0o700
        sides = [db_path.with_name(db_path.name + s) for s in ("-wal", "-shm")]
        assert all(p.exists() for p in sides)  # WAL mode is on
        for p in sides:
            assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, p
        assert os.umask(0o022) == 0o022  # restored
    finally:
        b.close()


# -- versions and snapshots -------------------------------------------------------------------


def test_unknown_stack_gets_fresh_ids_that_begin_version_stores(backend: StateBackend) -> None:
    a, b = backend.snapshot(STACK), backend.snapshot(STACK)
    assert (a.serial, b.serial) == (0, 0)
    assert a.stack_id != b.stack_id and a.lineage != b.lineage  # fresh, not stored
    assert backend.begin_version(STACK, "apply", a.stack_id, a.lineage) == 1
    c = backend.snapshot(STACK)
    assert (c.stack_id, c.lineage, c.serial) == (a.stack_id, a.lineage, 1)
    assert backend.stacks() == [STACK]
    with pytest.raises(StateError, match="lineage"):
        backend.begin_version(STACK, "apply", b.stack_id, b.lineage)


def test_begin_record_finish_then_snapshot(backend: StateBackend, store: Store) -> None:
    s = begin(backend)
    put(backend, s, res("web[0]", "id-0", ip="10.0.0.2"))
    put(backend, s, res("net", "id-n", cidr="10.0.0.0/24"))
    backend.finish_version(STACK, s, "complete", {"ip": "10.0.0.2"})

    reopened = store.open()  # from the store, not from any cache
    snap = reopened.snapshot(STACK)
    assert snap.serial == 1 and snap.pending == []
    assert snap.outputs == {"ip": "10.0.0.2"}
    assert snap.resources["web[0]"] == res("web[0]", "id-0", ip="10.0.0.2").model_copy(
        update={"updated_at": snap.resources["web[0]"].updated_at}
    )
    assert summary(reopened) == {
        "net": ("id-n", {"cidr": "10.0.0.0/24"}),
        "web[0]": ("id-0", {"ip": "10.0.0.2"}),
    }
    assert reopened.snapshot("other").serial == 0
    reopened.close()


def test_history_shows_older_versions_after_updates_and_deletes(backend: StateBackend) -> None:
    s1 = begin(backend)
    for n in "abc":
        put(backend, s1, res(n, f"{n}1", v=1))
    backend.finish_version(STACK, s1, "complete", {})
    s2 = begin(backend)
    put(backend, s2, res("a", "a1", v=2))  # update in place
    drop(backend, s2, "b")
    backend.finish_version(STACK, s2, "complete", {})
    s3 = begin(backend)
    drop(backend, s3, "c")
    put(backend, s3, res("d", "d1", v=1))
    backend.finish_version(STACK, s3, "complete", {})

    assert summary(backend, 0) == {}
    assert summary(backend, 1) == {
        "a": ("a1", {"v": 1}),
        "b": ("b1", {"v": 1}),
        "c": ("c1", {"v": 1}),
    }
    assert summary(backend, 2) == {"a": ("a1", {"v": 2}), "c": ("c1", {"v": 1})}
    assert summary(backend, 3) == {"a": ("a1", {"v": 2}), "d": ("d1", {"v": 1})}
    assert summary(backend) == summary(backend, 3)
    assert backend.snapshot(STACK, 2).serial == 2
    with pytest.raises(StateError, match="no version 4"):
        backend.snapshot(STACK, 4)


def test_an_address_written_twice_in_one_version(backend: StateBackend, store: Store) -> None:
    s1 = begin(backend)
    put(backend, s1, res("old", "o1"))
    put(backend, s1, res("tmp", "t1"))
    backend.finish_version(STACK, s1, "complete", {})

    s2 = begin(backend)
    drop(backend, s2, "old")  # replace, delete first
    put(backend, s2, res("old", "o2"))
    put(backend, s2, res("new", "n1", v=1))  # created, then updated in the same version
    put(backend, s2, res("new", "n1", v=2))
    put(backend, s2, res("gone", "g1"))  # created, then deleted in the same version
    drop(backend, s2, "gone")
    put(backend, s2, res("tmp", "t2"))  # updated twice
    put(backend, s2, res("tmp", "t3"))
    backend.finish_version(STACK, s2, "complete", {})

    assert summary(backend) == {"old": ("o2", {}), "new": ("n1", {"v": 2}), "tmp": ("t3", {})}
    assert summary(backend, 1) == {"old": ("o1", {}), "tmp": ("t1", {})}
    # Intermediate rows of one version are dropped, not kept as empty intervals.
    assert store.sql("SELECT count(*) FROM resources") == [(5,)]
    assert store.sql("SELECT count(*) FROM resources WHERE serial_to IS NULL") == [(3,)]


def test_create_before_destroy_keeps_the_successor(backend: StateBackend) -> None:
    s1 = begin(backend)
    put(backend, s1, res("vm", "old-id"))
    backend.finish_version(STACK, s1, "complete", {})
    s2 = begin(backend)
    put(backend, s2, res("vm", "new-id"))
    # Deleting the old object: the pending delete names its id, not the recorded one.
    backend.record_pending(
        STACK, pend(s2, "vm", "delete", id="old-id"), ev(s2, "vm", "IN_PROGRESS")
    )
    backend.record_result(STACK, s2, "vm", None, ev(s2, "vm", action="DELETE"))
    assert summary(backend) == {"vm": ("new-id", {})}
    assert backend.snapshot(STACK).pending == []
    # A delete naming the recorded object does remove it.
    backend.record_pending(
        STACK, pend(s2, "vm", "delete", id="new-id"), ev(s2, "vm", "IN_PROGRESS")
    )
    backend.record_result(STACK, s2, "vm", None, ev(s2, "vm", action="DELETE"))
    assert summary(backend) == {}
    assert summary(backend, 1) == {"vm": ("old-id", {})}


def test_closed_versions_are_not_written(backend: StateBackend) -> None:
    s1 = begin(backend)
    put(backend, s1, res("a", "a1"))
    backend.finish_version(STACK, s1, "complete", {})
    with pytest.raises(StateError, match="version 1 is complete"):
        backend.record_result(STACK, s1, "a", None, ev(s1, "a"))
    with pytest.raises(StateError, match="version 7 does not exist"):
        backend.record_result(STACK, 7, "a", None, ev(7, "a"))
    with pytest.raises(StateError, match="carries address"):
        backend.record_result(STACK, s1, "a", res("b", "b1"), ev(s1, "a"))
    with pytest.raises(StateError, match="status"):
        backend.finish_version(STACK, s1, "done", None)
    with pytest.raises(StateError, match="version 1 is complete"):
        backend.finish_version(STACK, s1, "failed", None)
    assert backend.versions(STACK)[0].status == "complete"
    assert summary(backend) == {"a": ("a1", {})}


# -- pending operations -----------------------------------------------------------------------


def test_pending_until_the_result_or_a_certain_failure(backend: StateBackend) -> None:
    s = begin(backend)
    op = PendingOperation(
        address="web[0]",
        type="server",
        provider="fake",
        action="create",
        inputs={"name": "web-0"},
        dependencies=["net"],
        serial=s,
    )
    backend.record_pending(STACK, op, ev(s, "web[0]", "IN_PROGRESS"))
    assert backend.snapshot(STACK).pending == [op]
    backend.record_pending(STACK, op.model_copy(update={"id": "x"}), ev(s, "web[0]", "IN_PROGRESS"))
    assert [p.id for p in backend.snapshot(STACK).pending] == ["x"]  # one row per address
    backend.record_result(STACK, s, "web[0]", res("web[0]", "x"), ev(s, "web[0]"))
    snap = backend.snapshot(STACK)
    assert snap.pending == [] and set(snap.resources) == {"web[0]"}

    backend.record_pending(STACK, pend(s, "a"), ev(s, "a", "IN_PROGRESS"))
    backend.record_pending(STACK, pend(s, "b"), ev(s, "b", "IN_PROGRESS"))
    backend.record_failure(STACK, "a", ev(s, "a", "FAILED"), keep_pending=True)
    backend.record_failure(STACK, "b", ev(s, "b", "FAILED"), keep_pending=False)
    assert [p.address for p in backend.snapshot(STACK).pending] == ["a"]
    assert [p.address for p in backend.snapshot(STACK, 0).pending] == []  # not yet at serial 0
    backend.finish_version(STACK, s, "failed", None)
    s2 = begin(backend)
    assert [p.address for p in backend.snapshot(STACK, s2).pending] == ["a"]  # still unresolved


# -- events, outputs, versions ----------------------------------------------------------------


def test_events_oldest_first_and_the_last_limit(backend: StateBackend) -> None:
    s = begin(backend)
    for i in range(5):
        put(backend, s, res(f"r{i}", f"i{i}"))
    backend.record_failure(
        STACK,
        "r9",
        Event(
            serial=s, address="r9", type="t", action="CREATE", status="FAILED", reason="no space"
        ),
        False,
    )
    got = [(e.address, e.status) for e in backend.events(STACK)]
    expected = [(f"r{i}", st) for i in range(5) for st in ("IN_PROGRESS", "COMPLETE")]
    assert got == [*expected, ("r9", "FAILED")]
    last = backend.events(STACK, limit=3)
    assert [(e.address, e.status) for e in last] == [
        ("r4", "IN_PROGRESS"),
        ("r4", "COMPLETE"),
        ("r9", "FAILED"),
    ]
    assert last[-1].reason == "no space" and last[-1].time.tzinfo is not None
    assert backend.events(STACK, limit=0) == []
    assert backend.events("other") == []


def test_outputs_belong_to_their_version(backend: StateBackend) -> None:
    for n in (1, 2):
        s = begin(backend)
        put(backend, s, res("a", f"a{n}"))
        backend.finish_version(STACK, s, "complete", {"n": n, "list": [n, n]})
    s3 = begin(backend)
    backend.finish_version(STACK, s3, "failed", None)  # no outputs: the previous ones stand
    assert backend.snapshot(STACK, 1).outputs == {"n": 1, "list": [1, 1]}
    assert backend.snapshot(STACK, 2).outputs == {"n": 2, "list": [2, 2]}
    assert backend.snapshot(STACK).outputs == {"n": 2, "list": [2, 2]}
    s4 = begin(backend, "destroy")
    backend.finish_version(STACK, s4, "complete", {})
    assert backend.snapshot(STACK).outputs == {}
    assert backend.snapshot(STACK, 0).outputs == {}


def test_versions_listing_and_interrupted_runs(backend: StateBackend) -> None:
    s1 = begin(backend)
    backend.finish_version(STACK, s1, "complete", {})
    s2 = begin(backend, "destroy")  # never finished: its run died
    assert backend.versions(STACK)[-1].status == "in_progress"
    s3 = begin(backend, "state rm")
    backend.finish_version(STACK, s3, "failed", None)
    vs = backend.versions(STACK)
    lineage = backend.snapshot(STACK).lineage
    assert [(v.serial, v.command, v.status) for v in vs] == [
        (s1, "apply", "complete"),
        (s2, "destroy", "interrupted"),
        (s3, "state rm", "failed"),
    ]
    assert all(v.lineage == lineage for v in vs)
    assert vs[0].finished_at is not None and vs[0].created_at <= vs[0].finished_at
    assert vs[1].finished_at is None
    assert vs[0].created_at.tzinfo is not None
    assert backend.versions("other") == []


def test_one_backend_shared_by_threads(backend: StateBackend) -> None:
    s = begin(backend)

    def work(t: int) -> None:
        for i in range(50):
            put(backend, s, res(f"t{t}-{i}", f"{t}-{i}"))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(backend.snapshot(STACK).resources) == 200
    assert len(backend.events(STACK)) == 400


# -- foreign files ----------------------------------------------------------------------------


def _refused(path: Path) -> StateError:
    with pytest.raises(StateError) as info:
        b = SQLiteBackend(path)
        b.snapshot(STACK)
    assert str(path) in str(info.value)
    assert not isinstance(info.value, sqlite3.Error)
    return info.value


def test_files_that_are_not_state_databases_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text('{"version": 4, "resources": []}\n' * 20)
    assert "not a database" in str(_refused(text))

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(random.Random(1).randbytes(8192))
    _refused(garbage)

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as raw:
        raw.execute("CREATE TABLE things (x)")
    raw.close()
    assert "not an iacloud state database" in str(_refused(other))
    with sqlite3.connect(other) as raw:  # left as it was: not switched to WAL
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    raw.close()

    newer = tmp_path / "newer.db"
    b = SQLiteBackend(newer)
    begin(b)
    b.close()
    with sqlite3.connect(newer) as raw:
        raw.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION + 1,))
    raw.close()
    assert "newer iacloud" in str(_refused(newer))


def test_an_empty_file_is_refused_not_taken_for_a_new_store(tmp_path: Path) -> None:
    # issue 10 item 8: a 0-byte state.db looked like a stack never applied, and the next plan
    # would create every object again under a new stack id
    empty = tmp_path / "state.db"
    empty.touch(mode=0o600)
    error = _refused(empty)
    assert "holds no state (0 bytes" in str(error)
    assert empty.stat().st_size == 0  # left as it was


def test_a_copy_made_without_its_wal_holds_every_finished_run(tmp_path: Path) -> None:
    # issue 10 item 8: state.db copied alone (its -wal left behind) looked like a new store
    live = tmp_path / "live" / "state.db"
    b = SQLiteBackend(live)
    serial = begin(b)
    put(b, serial, res("web[0]", "uuid-0"))
    mid_run = tmp_path / "mid-run.db"
    mid_run.write_bytes(live.read_bytes())  # while b is open: only the -wal has the result
    b.finish_version(STACK, serial, "complete", None)
    after = tmp_path / "after.db"
    after.write_bytes(live.read_bytes())
    b.close()
    snap = SQLiteBackend(after).snapshot(STACK)
    assert (snap.serial, list(snap.resources)) == (1, ["web[0]"])
    # mid-run, the stack and its version were already in the main file: not "never applied"
    assert SQLiteBackend(mid_run).snapshot(STACK).serial == 1


def test_a_new_store_appears_whole(tmp_path: Path) -> None:
    path = tmp_path / "new" / "state.db"
    b = SQLiteBackend(path)
    assert not path.exists()  # nothing on disk until the first write
    assert begin(b) == 1
    b.close()
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith("state.db")) == []
    assert SQLiteBackend(path).snapshot(STACK).serial == 1


# -- the lock ---------------------------------------------------------------------------------

HOLDER = """
import os, sys, time
from pathlib import Path
from iacloud.state import open_backend
b = open_backend(sys.argv[1], Path("."))
info = b.acquire_lock("web", "apply", 0)
print("locked", info.id, flush=True)
if sys.argv[2] == "die":
    os._exit(0)  # dies holding it
time.sleep(float(sys.argv[2]))
b.release_lock("web")
"""


def _hold(url: str, how: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, how], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    word, lock_id = proc.stdout.readline().split()
    assert word == "locked" and lock_id
    return proc, lock_id


def test_lock_between_processes(backend: StateBackend, store: Store) -> None:
    begin(backend)
    proc, lock_id = _hold(store.url, "1.5")
    try:
        t0 = time.monotonic()
        with pytest.raises(LockHeld) as info:
            backend.acquire_lock(STACK, "plan", timeout=0)
        assert time.monotonic() - t0 < 0.5
        message = str(info.value)
        # The holder is named, not the run that waits (hashicorp/terraform#32075).
        assert f"{getpass.getuser()}@{socket.gethostname()}" in message
        assert f"pid {proc.pid}" in message and "'apply'" in message
        assert f"iacloud state unlock {lock_id}" in message
        assert info.value.info.pid == proc.pid and info.value.info.id == lock_id
        assert backend.lock_info(STACK) == info.value.info
        backend.release_lock(STACK)  # not ours: stays
        assert backend.lock_info(STACK) is not None

        t0 = time.monotonic()
        mine = backend.acquire_lock(STACK, "apply", timeout=20)
        waited = time.monotonic() - t0
        assert 0.3 < waited < 10, waited  # waited for the holder, not past it
        assert mine.pid == os.getpid() and backend.lock_info(STACK) == mine
        assert mine.id and mine.id != lock_id
        # Another process sees the new holder.
        assert store.open().lock_info(STACK) == mine
    finally:
        proc.wait(timeout=20)
    assert proc.returncode == 0
    backend.release_lock(STACK)
    assert backend.lock_info(STACK) is None


@pytest.mark.parametrize("death", ["exit", "kill -9"])
def test_the_lock_of_a_dead_process_is_taken_over(
    backend: StateBackend, store: Store, death: str
) -> None:
    proc, lock_id = _hold(store.url, "die" if death == "exit" else "600")
    if death == "kill -9":
        assert backend.lock_info(STACK).id == lock_id  # held while it lives
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=20)
    if store.kind == "sqlite":
        assert backend.lock_info(STACK).pid == proc.pid  # left behind, dead pid on this host
    else:
        # The holder's session ended with it, and the server dropped the lock: no guessing.
        deadline = time.monotonic() + 10
        while backend.lock_info(STACK) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert backend.lock_info(STACK) is None
    assert backend.acquire_lock(STACK, "apply", timeout=5).pid == os.getpid()


def test_a_lock_from_another_host_is_not_taken_over(db_path: Path) -> None:
    backend = SQLiteBackend(db_path)
    begin(backend)
    with sqlite3.connect(db_path) as raw:
        raw.execute(
            "INSERT INTO locks VALUES (?, 'ci@build-7', 'build-7', 999999, 'apply', ?)",
            (STACK, "2024-01-01T00:00:00+00:00"),
        )
    raw.close()
    with pytest.raises(LockHeld, match=r"ci@build-7 \(pid 999999\)") as info:
        backend.acquire_lock(STACK, "apply", timeout=0.3)
    lock_id = info.value.info.id
    assert backend.lock_info(STACK).id == lock_id  # stable: derived from the row
    with pytest.raises(StateError, match="not by lock 0123"):
        backend.force_unlock(STACK, "0123")
    forced = backend.force_unlock(STACK, lock_id)
    assert forced is not None and forced.holder == "ci@build-7"
    assert backend.force_unlock(STACK) is None
    backend.acquire_lock(STACK, "apply", timeout=0)
    backend.close()


def test_postgres_unlock_names_the_lock_and_ends_the_holders_session(
    pg_server, tmp_path: Path
) -> None:
    """A live holder elsewhere: 'state unlock ID' terminates its session, which releases the
    lock and fences the holder, whose next write fails instead of landing after another's."""
    url = pg_server.fresh_url()
    b = open_backend(url, tmp_path)
    begin(b)
    holder = open_backend(url, tmp_path)
    held = holder.acquire_lock(STACK, "apply", 0)
    serial = begin(holder)
    with pytest.raises(StateError, match="not by lock nope"):
        b.force_unlock(STACK, "nope")
    assert b.lock_info(STACK) == held
    assert b.force_unlock(STACK, held.id) == held
    assert b.lock_info(STACK) is None
    with pytest.raises(StateError, match=r"stops writing|terminat|connection"):
        put(holder, serial, res("late", "l1"))
    mine = b.acquire_lock(STACK, "apply", 0)
    assert mine.pid == os.getpid() and b.lock_info(STACK) == mine
    assert "late" not in b.snapshot(STACK).resources
    # A row left by a session that ended describes no lock: it is not reported as held.
    with pytest.raises(StateError):  # the fenced holder stays fenced
        holder.acquire_lock("other", "apply", 0)
    holder.close()
    b.close()


def test_release_then_reacquire_and_no_reentry(backend: StateBackend) -> None:
    with backend.locked(STACK, "apply") as info:
        assert info.operation == "apply"
        with pytest.raises(LockHeld):  # not re-entrant, even in the same process
            backend.acquire_lock(STACK, "plan", timeout=0)
    assert backend.lock_info(STACK) is None
    assert backend.acquire_lock(STACK, "plan", timeout=0).operation == "plan"
    assert backend.acquire_lock("other", "plan", timeout=0).operation == "plan"  # per stack


# -- durability -------------------------------------------------------------------------------

WRITER = """
import sys
from pathlib import Path
from iacloud.state import Event, PendingOperation, ResourceState, open_backend
b = open_backend(sys.argv[1], Path("."))
run = sys.argv[2]
serial = 0
for i in range(100000):
    if i % 25 == 0:
        if serial:
            b.finish_version("web", serial, "complete", {"last": i - 1})
        snap = b.snapshot("web")
        serial = b.begin_version("web", "apply", snap.stack_id, snap.lineage)
    a = f"{run}-{i}"
    b.record_pending("web", PendingOperation(address=a, type="t", provider="fake",
        action="create", serial=serial), Event(serial=serial, address=a, type="t",
        action="CREATE", status="IN_PROGRESS"))
    b.record_result("web", serial, a, ResourceState(address=a, type="t", provider="fake",
        id=f"id-{a}", inputs={"i": i}, attributes={"blob": a * 40}), Event(serial=serial,
        address=a, type="t", action="CREATE", status="COMPLETE"))
    print(i, flush=True)
"""


def test_state_survives_kill_9_at_any_instant(store: Store) -> None:
    rng = random.Random(7)
    kept: dict[int, int] = {}  # run -> how many of its resources the state holds
    for run in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, store.url, f"r{run}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        target, done = rng.randint(20, 300), -1
        while done < target:
            line = proc.stdout.readline()
            assert line, "writer exited early"
            done = int(line)
        os.kill(proc.pid, signal.SIGKILL)  # the writer keeps going until this lands
        proc.wait(timeout=20)
        assert proc.returncode == -signal.SIGKILL

        b = store.open()
        try:
            snap = b.snapshot(STACK)
            mine = sorted(
                (int(a.split("-")[1]) for a in snap.resources if a.startswith(f"r{run}-")),
            )
            assert mine == list(range(len(mine)))  # no gap, nothing lost
            assert len(mine) - 1 >= done  # everything reported done is there
            for i in mine:
                r = snap.resources[f"r{run}-{i}"]
                assert (r.id, r.inputs, r.attributes) == (
                    f"id-r{run}-{i}",
                    {"i": i},
                    {"blob": f"r{run}-{i}" * 40},
                )
            for earlier, count in kept.items():  # later runs lost nothing of earlier ones
                assert sum(a.startswith(f"r{earlier}-") for a in snap.resources) == count
            kept[run] = len(mine)
            # At most the step that was cut, and only if its create was not recorded.
            assert [p.address for p in snap.pending] in ([], [f"r{run}-{len(mine)}"])
            for p in snap.pending:  # resolved the way the next run would
                b.record_failure(STACK, p.address, ev(snap.serial, p.address, "FAILED"), False)
            if store.kind == "sqlite":
                assert store.sql("PRAGMA integrity_check") == [("ok",)]
        finally:
            b.close()
    statuses = [v.status for v in store.open().versions(STACK)]
    assert statuses[-1] == "in_progress"
    assert "interrupted" in statuses and "complete" in statuses


# -- cost -------------------------------------------------------------------------------------


def _step_cost(path: Path, synchronous: str, sync_pending: bool, steps: int = 2000) -> float:
    cls = type(
        "Bench", (SQLiteBackend,), {"_SYNCHRONOUS": synchronous, "_SYNC_PENDING": sync_pending}
    )
    b = cls(path)
    s = begin(b)
    work = [
        (
            pend(s, f"web[{i}]"),
            ev(s, f"web[{i}]", "IN_PROGRESS"),
            res(f"web[{i}]", f"uuid-{i}", ip="10.0.0.9", mac="52:54:00:12:34:56"),
            ev(s, f"web[{i}]"),
        )
        for i in range(steps)
    ]
    t0 = time.perf_counter()
    for op, started, result, finished in work:
        b.record_pending(STACK, op, started)
        b.record_result(STACK, s, op.address, result, finished)
    per_step = (time.perf_counter() - t0) / steps
    assert len(b.snapshot(STACK).resources) == steps
    assert b.snapshot(STACK).pending == []
    b.close()
    return per_step


def test_step_cost(tmp_path: Path) -> None:
    """Prints (run with -s) the engine overhead of one step: record_pending + record_result."""
    chosen = (SQLiteBackend._SYNCHRONOUS, SQLiteBackend._SYNC_PENDING)
    variants = {
        "NORMAL": ("NORMAL", False),
        "FULL": ("FULL", False),
        "NORMAL, FULL for record_pending": ("NORMAL", True),
    }
    for name, setting in variants.items():
        cost = _step_cost(tmp_path / f"{setting[0]}-{setting[1]}.db", *setting)
        mark = "  <- SQLiteBackend" if setting == chosen else ""
        print(f"\nsynchronous={name}: {cost * 1000:.3f} ms per step over 2000 steps{mark}")


# -- read-only use and schema versions ---------------------------------------------------------


def test_read_only_reads_and_refuses_every_write(store: Store) -> None:
    ro = store.open(read_only=True)
    assert ro.snapshot(STACK).serial == 0 and ro.stacks() == []
    assert not store.exists()  # reading an absent store creates nothing
    rw = store.open()
    s = begin(rw)
    put(rw, s, res("a", "a1"))
    rw.finish_version(STACK, s, "complete", {"x": 1})
    held = rw.acquire_lock(STACK, "apply", 0)
    # Reads while another run holds the lock, and sees what it committed.
    assert summary(ro) == {"a": ("a1", {})} and ro.snapshot(STACK).outputs == {"x": 1}
    assert ro.lock_info(STACK) == held
    for write in (
        lambda: begin(ro),
        lambda: ro.record_failure(STACK, "a", ev(s, "a", "FAILED"), False),
        lambda: ro.acquire_lock("other", "plan", 0),
        lambda: ro.import_history(rw.export_history(STACK)),
    ):
        with pytest.raises(StateError, match="read-only"):
            write()
    rw.release_lock(STACK)
    assert ro.versions(STACK) == rw.versions(STACK)


def test_postgres_schema_of_a_newer_iacloud_is_refused(pg_server, tmp_path: Path) -> None:
    from iacloud.state import pg_schema

    url = pg_server.fresh_url()
    b = open_backend(url, tmp_path)
    begin(b)
    b.close()
    store = Store("postgresql", url, tmp_path / "unused")
    assert store.sql("SELECT max(version), min(format) FROM iacloud_schema") == [
        (pg_schema.SCHEMA_VERSION, "iacloud-state")
    ]
    store.sql(f"INSERT INTO iacloud_schema (version, format) VALUES "
              f"({pg_schema.SCHEMA_VERSION + 1}, 'iacloud-state') RETURNING version")  # fmt: skip
    for read_only in (True, False):
        with pytest.raises(StateError, match="newer iacloud") as info:
            open_backend(url, tmp_path, read_only).snapshot(STACK)
        assert "schema=" in str(info.value)  # names the store


def test_many_stacks_and_schemas_in_one_database(pg_server, tmp_path: Path) -> None:
    one, two = pg_server.fresh_url(), pg_server.fresh_url()
    a, b = open_backend(one, tmp_path), open_backend(two, tmp_path)
    for stack in ("web", "db", "cache"):
        snap = a.snapshot(stack)
        a.begin_version(stack, "apply", snap.stack_id, snap.lineage)
    assert a.stacks() == ["cache", "db", "web"] and b.stacks() == []
    # The same stack name in two schemas: two states, two locks.
    held = a.acquire_lock("web", "apply", 0)
    assert b.acquire_lock("web", "apply", 0).id != held.id
    a.close()
    b.close()


def test_state_unlock_command_needs_the_lock_id(store: Store, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from iacloud.cli.main import cli

    stack_file = tmp_path / "web.toml"
    stack_file.write_text('version = 1\nname = "web"\n')
    begin(store.open())
    proc, lock_id = _hold(store.url, "600")
    try:
        base = ["state", "unlock", "-s", str(stack_file), "--state", store.url]
        wrong = CliRunner().invoke(cli, [*base[:2], "0000", *base[2:]])
        assert wrong.exit_code == 1 and "not by lock 0000" in wrong.output
        assert store.open().lock_info(STACK).id == lock_id
        missing = CliRunner().invoke(cli, base)
        assert missing.exit_code == 2 and "LOCK_ID" in missing.output
        done = CliRunner().invoke(cli, [*base[:2], lock_id, *base[2:]])
        assert done.exit_code == 0, done.output
        assert f"Removed the lock of {getpass.getuser()}@" in done.output
        assert f"(lock id {lock_id})" in done.output
        assert store.open().lock_info(STACK) is None
        assert store.open().acquire_lock(STACK, "apply", 0).pid == os.getpid()
    finally:
        proc.kill()
        proc.wait(timeout=20)
