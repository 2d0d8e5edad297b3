"""`iacloud state push` / `pull`: a stack's whole history copied between SQLite and a real
PostgreSQL server both ways, and the copies refused (changing nothing) that would lose state."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from iacloud.cli.main import cli
from iacloud.state import Event, PendingOperation, ResourceState, StateBackend, open_backend

STACK = "web"


def _res(address: str, id: str, **attributes: object) -> ResourceState:
    return ResourceState(address=address, type="fake_thing", provider="fake", id=id,
                         inputs={"name": address}, attributes=dict(attributes))  # fmt: skip


def _ev(serial: int, address: str, status: str = "COMPLETE", action: str = "CREATE") -> Event:
    return Event(serial=serial, address=address, type="fake_thing", action=action, status=status)


def _step(b: StateBackend, serial: int, address: str, r: ResourceState | None) -> None:
    action = "create" if r is not None else "delete"
    op = PendingOperation(
        address=address, type="fake_thing", provider="fake", action=action, serial=serial
    )
    b.record_pending(STACK, op, _ev(serial, address, "IN_PROGRESS"))
    b.record_result(STACK, serial, address, r, _ev(serial, address, action=action.upper()))


def _version(b: StateBackend, *steps: tuple[str, ResourceState | None], outputs=None) -> int:
    snap = b.snapshot(STACK)
    s = b.begin_version(STACK, "apply", snap.stack_id, snap.lineage)
    for address, r in steps:
        _step(b, s, address, r)
    b.finish_version(STACK, s, "complete", outputs)
    return s


def _history(b: StateBackend) -> None:
    """Three versions with creates, an update, deletes, outputs, a failed version and a pending
    operation left by it."""
    _version(b, ("a", _res("a", "a1", v=1)), ("b", _res("b", "b1")), ("c", _res("c", "c1")),
             outputs={"n": {"value": 1, "sensitive": False}})  # fmt: skip
    _version(b, ("a", _res("a", "a1", v=2)), ("b", None), outputs={"n": {"value": 2}})
    snap = b.snapshot(STACK)
    s = b.begin_version(STACK, "destroy", snap.stack_id, snap.lineage)
    _step(b, s, "c", None)
    b.record_pending(STACK, PendingOperation(address="d", type="fake_thing", provider="fake",
                     action="create", serial=s), _ev(s, "d", "IN_PROGRESS"))  # fmt: skip
    b.record_failure(STACK, "d", _ev(s, "d", "FAILED"), keep_pending=True)
    b.finish_version(STACK, s, "failed", None)


@pytest.fixture
def urls(tmp_path: Path, pg_server) -> dict[str, str]:
    return {"sqlite": str(tmp_path / "state.db"), "postgresql": pg_server.fresh_url()}


@pytest.fixture
def stack_file(tmp_path: Path) -> Path:
    path = tmp_path / "web.toml"
    path.write_text('version = 1\nname = "web"\n')
    return path


def _cli(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    out = result.output + (result.stderr if hasattr(result, "stderr") else "")
    assert result.exit_code == code, out
    assert "Traceback" not in out
    return out


def _copy(how: str, src: str, dst: str, stack_file: Path, code: int = 0) -> str:
    if how == "push":
        return _cli("state", "push", "--to", dst, "-s", str(stack_file), "--state", src, code=code)
    return _cli("state", "pull", "--from", src, "-s", str(stack_file), "--state", dst, code=code)


WAYS = [
    ("push", "sqlite", "postgresql"),
    ("pull", "sqlite", "postgresql"),
    ("push", "postgresql", "sqlite"),
    ("pull", "postgresql", "sqlite"),
]


@pytest.mark.parametrize(("how", "src_kind", "dst_kind"), WAYS)
def test_the_whole_history_is_copied(urls, stack_file, tmp_path, how, src_kind, dst_kind) -> None:
    src = open_backend(urls[src_kind], tmp_path)
    _history(src)
    out = _copy(how, urls[src_kind], urls[dst_kind], stack_file)
    assert "3 new version(s), serial 3" in out
    dst = open_backend(urls[dst_kind], tmp_path)
    assert dst.export_history(STACK) == src.export_history(STACK)
    for serial in range(4):  # every version reads the same, pending operation included
        assert dst.snapshot(STACK, serial) == src.snapshot(STACK, serial)
    assert dst.snapshot(STACK).pending[0].address == "d"
    assert dst.versions(STACK) == src.versions(STACK)
    assert [v.status for v in dst.versions(STACK)] == ["complete", "complete", "failed"]
    assert dst.events(STACK) == src.events(STACK) and len(dst.events(STACK)) == 14
    assert dst.snapshot(STACK).outputs == {"n": {"value": 2}}
    # The copy goes on as the same state: a run against it continues the serials.
    assert _version(dst, ("e", _res("e", "e1"))) == 4
    assert "1 new version(s), serial 4" in _copy(how, urls[dst_kind], urls[src_kind], stack_file)
    assert src.export_history(STACK) == dst.export_history(STACK)
    assert "nothing copied" in _copy(how, urls[src_kind], urls[dst_kind], stack_file)
    assert src.lock_info(STACK) is None and dst.lock_info(STACK) is None
    src.close()
    dst.close()


@pytest.mark.parametrize(
    ("src_kind", "dst_kind"), [("sqlite", "postgresql"), ("postgresql", "sqlite")]
)
def test_copies_that_would_lose_state_are_refused(urls, stack_file, tmp_path, src_kind, dst_kind):
    src, dst = open_backend(urls[src_kind], tmp_path), open_backend(urls[dst_kind], tmp_path)
    _history(src)
    _version(dst, ("x", _res("x", "x1")))  # the same stack name, started on its own
    before = dst.export_history(STACK)
    out = _copy("push", urls[src_kind], urls[dst_kind], stack_file, code=1)
    assert "different lineage" in out and "Nothing was changed" in out
    assert dst.export_history(STACK) == before

    dst.import_history(src.export_history(STACK))  # now the same lineage ...
    _version(dst, ("y", _res("y", "y1")))  # ... and newer there
    before = dst.export_history(STACK)
    out = _copy("pull", urls[src_kind], urls[dst_kind], stack_file, code=1)
    assert "is newer (serial 4)" in out and "copy the other way" in out
    assert dst.export_history(STACK) == before

    _version(src, ("z", _res("z", "z1")))  # serial 4 on both sides, different runs
    out = _copy("push", urls[src_kind], urls[dst_kind], stack_file, code=1)
    assert "went their own ways" in out
    assert dst.export_history(STACK) == before

    out = _copy("push", urls[src_kind], urls[src_kind], stack_file, code=1)
    assert "is the stack's own state" in out
    src.close()
    dst.close()


def test_a_bad_url_is_a_clear_error_with_the_password_masked(urls, stack_file, tmp_path) -> None:
    _history(open_backend(urls["sqlite"], tmp_path))
    for url in (
        "postgresql://ci:hunter2@127.0.0.1:1/state?connect_timeout=2",
        "postgresql://ci@/state?host=/nonexistent&password=hunter2",
        "postgresql://ci:hunter2@/state?schema=Bad-Name",
        "mysql://ci:hunter2@db/state",
    ):
        out = _copy("push", urls["sqlite"], url, stack_file, code=1)
        assert "hunter2" not in out and "***" in out, out
        assert "Error: " in out
    out = _cli("show", "-s", str(stack_file), "--state", "postgresql://ci:hunter2@127.0.0.1:1/x",
               code=1)  # fmt: skip
    assert "cannot connect" in out and "hunter2" not in out
