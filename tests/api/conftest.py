"""A real `iacloud serve` process per test (uvicorn on 127.0.0.1, a free port), tokens, and a
small HTTP client; the fake provider is registered in the server through its entry point."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

HERE = Path(__file__).parent
TESTS = HERE.parent

TOKENS = {
    "tok-alice": {"user": "alice", "project": "pa", "role": "member"},
    "tok-rita": {"user": "rita", "project": "pa", "role": "reader"},
    "tok-adam": {"user": "adam", "project": "pa", "role": "admin"},
    "tok-bob": {"user": "bob", "project": "pb", "role": "member"},
    "tok-old": {"user": "alice", "project": "pa", "role": "member",
                "expires": "2001-01-01T00:00:00+00:00"},
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, state_url: str, data_dir: Path, env: dict[str, str], log: Path,
                 workers: int = 4) -> None:  # fmt: skip
        self.state_url = state_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(HERE / "run_server.py"), state_url, str(self.port),
                 str(data_dir), str(workers)],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)

    def client(self, token: str | None = "tok-alice", bearer: bool = False) -> httpx.Client:
        headers = {}
        if token:
            headers = {"Authorization": f"Bearer {token}"} if bearer else {"X-Auth-Token": token}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(TOKENS))
    return path


@pytest.fixture
def serve(
    tmp_path: Path, fake_entry_point: Path, data_dir: Path, tokens_file: Path
) -> Iterator[Any]:
    """serve(state_url=None) starts a server (default: a SQLite state in tmp_path)."""
    servers: list[Server] = []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(fake_entry_point), str(TESTS)])
    env["IACLOUD_TEST_TOKENS"] = str(tokens_file)

    def start(state_url: str | None = None, workers: int = 4) -> Server:
        url = state_url or f"sqlite:///{tmp_path / 'state.db'}"
        server = Server(url, tmp_path / "serve", env, tmp_path / "server.log", workers)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()
    log = tmp_path / "server.log"
    if log.exists():
        assert "Traceback" not in log.read_text(), log.read_text()[-4000:]


def wait_op(client: httpx.Client, location: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        op = client.get(location).json()
        if op["status"] in ("COMPLETE", "FAILED", "CANCELLED"):
            return op
        assert time.monotonic() < deadline, op
        time.sleep(0.1)


def stack_text(sleep: float = 0.0, count: int = 2, chain: bool = False) -> str:
    lines = ["version = 1", ""]
    for i in range(count):
        lines += [f"[resources.r{i}]", 'type = "fake_thing"', f"size = {i + 1}", f"sleep = {sleep}"]
        if chain and i:
            lines.append(f'ref = {{ get_resource = "r{i - 1}" }}')
        lines.append("")
    lines += ["[outputs.first]", 'value = { get_attr = ["r0", "id"] }', ""]
    return "\n".join(lines)
