"""Two "CI runners" (processes with their own working directories and stack checkouts) apply
one stack through shared PostgreSQL state, with the fake provider standing in for the host:
one waits and then sees the other's result, or gives up after --lock-timeout naming the
holder; a kill -9 of the holder frees the lock for the next run, and nothing is duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iacloud.state import open_backend

TESTS = Path(__file__).resolve().parent.parent

STACK = """
version = 1
name = "shared"

[resources.net]
type = "fake_thing"
name = "net"
sleep = {sleep}

[resources.vm]
type = "fake_thing"
count = 2
name = "vm-%index%"
ref = {{ get_resource = "net" }}
sleep = {sleep}
"""


class Runner:
    def __init__(self, root: Path, name: str, url: str, host_dir: Path, fakedist: Path) -> None:
        self.dir = root / name  # its own checkout of the repository
        self.dir.mkdir()
        self.url = url
        self.env = {
            **os.environ,
            "IACLOUD_STATE": url,
            "IACLOUD_DATA_DIR": str(host_dir),  # the one "host" both runners manage
            "PYTHONPATH": os.pathsep.join([str(fakedist), str(TESTS)]),
        }
        self.env.pop("CI", None)

    def checkout(self, sleep: float) -> None:
        (self.dir / "stack.toml").write_text(STACK.format(sleep=sleep))

    def apply(self, lock_timeout: float) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "iacloud.cli.main", "apply", "--auto-approve",
             "--lock-timeout", str(lock_timeout), "stack.toml"],
            cwd=self.dir, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip


@pytest.fixture
def runners(tmp_path: Path, pg_server, fake_entry_point: Path) -> tuple[Runner, Runner]:
    url = pg_server.fresh_url()
    host = tmp_path / "host"
    return (
        Runner(tmp_path, "runner-a", url, host, fake_entry_point),
        Runner(tmp_path, "runner-b", url, host, fake_entry_point),
    )


def _wait_for_lock(url: str, tmp_path: Path, proc: subprocess.Popen[str]):
    b = open_backend(url, tmp_path, read_only=True)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            info = b.lock_info("shared")
            if info is not None and info.pid == proc.pid:
                return info
            time.sleep(0.05)
    finally:
        b.close()
    raise AssertionError("the first runner never took the lock")


def _objects(host: Path) -> list[dict]:
    return [json.loads(f.read_text()) for f in sorted(host.rglob("fake_thing/*.json"))]


def _check_state(url: str, tmp_path: Path) -> None:
    b = open_backend(url, tmp_path)
    snap = b.snapshot("shared")
    assert sorted(snap.resources) == ["net", "vm[0]", "vm[1]"] and snap.pending == []
    objects = _objects(tmp_path / "host")
    # One real object per address, and exactly the ones state records: nothing duplicated.
    assert sorted(o["address"] for o in objects) == ["net", "vm[0]", "vm[1]"]
    assert {r.id for r in snap.resources.values()} == {
        f.stem for f in (tmp_path / "host").rglob("fake_thing/*.json")
    }
    b.close()


def test_the_second_runner_waits_then_sees_the_first_ones_result(runners, tmp_path) -> None:
    a, b = runners
    a.checkout(sleep=0.7)
    b.checkout(sleep=0.7)
    first = a.apply(lock_timeout=0)
    held = _wait_for_lock(a.url, tmp_path, first)
    t0 = time.monotonic()
    second = b.apply(lock_timeout=120)
    out_a, err_a = first.communicate(timeout=120)
    out_b, err_b = second.communicate(timeout=120)
    assert first.returncode == 0, out_a + err_a
    assert second.returncode == 0, out_b + err_b
    assert time.monotonic() - t0 > 0.5  # it waited for the first runner's apply
    assert "3 step(s) complete" in out_a
    assert "step(s) complete" not in out_b  # planned against the result: nothing left to do
    assert "no changes" in out_b.lower(), out_b
    _check_state(a.url, tmp_path)
    versions = open_backend(a.url, tmp_path).versions("shared")
    assert [(v.serial, v.status) for v in versions] == [(1, "complete")]
    assert held.operation == "apply"


def test_a_runner_gives_up_after_lock_timeout_naming_the_holder(runners, tmp_path) -> None:
    a, b = runners
    a.checkout(sleep=1.5)
    b.checkout(sleep=1.5)
    first = a.apply(lock_timeout=0)
    held = _wait_for_lock(a.url, tmp_path, first)
    t0 = time.monotonic()
    second = b.apply(lock_timeout=0.5)
    out_b, err_b = second.communicate(timeout=60)
    waited = time.monotonic() - t0
    assert second.returncode == 1, out_b + err_b
    assert 0.5 <= waited < 30
    assert f"pid {first.pid}" in err_b and f"pid {second.pid}" not in err_b  # the holder
    assert f"iacloud state unlock {held.id}" in err_b and "'apply'" in err_b
    assert "Traceback" not in err_b
    out_a, err_a = first.communicate(timeout=120)
    assert first.returncode == 0, out_a + err_a
    _check_state(a.url, tmp_path)


def test_kill_9_of_the_holder_frees_the_lock_for_the_next_run(runners, tmp_path) -> None:
    a, b = runners
    a.checkout(sleep=30)  # the first runner hangs in its first step ...
    first = a.apply(lock_timeout=0)
    _wait_for_lock(a.url, tmp_path, first)
    watcher = open_backend(a.url, tmp_path, read_only=True)
    deadline = time.monotonic() + 60
    while not watcher.snapshot("shared").pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p.address for p in watcher.snapshot("shared").pending] == ["net"]
    os.kill(first.pid, signal.SIGKILL)  # ... and dies mid-step, holding the lock
    first.communicate(timeout=30)
    b.checkout(sleep=0)
    second = b.apply(lock_timeout=20)
    out_b, err_b = second.communicate(timeout=120)
    assert second.returncode == 0, out_b + err_b
    assert "locked" not in err_b
    _check_state(a.url, tmp_path)
    assert [v.status for v in watcher.versions("shared")] == ["interrupted", "complete"]
    assert watcher.lock_info("shared") is None
    watcher.close()
