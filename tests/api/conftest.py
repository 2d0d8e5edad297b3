"""Fixtures of the API tests: `serve` starts real `iacloud serve` processes (api_server.py);
the fake provider is registered in them through its entry point."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_server import TESTS, Server, Tokens


@pytest.fixture
def tokens() -> Tokens:
    return Tokens()


@pytest.fixture
def serve(tmp_path: Path, fake_entry_point: Path, data_dir: Path, tokens: Tokens) -> Iterator[Any]:
    """serve(state_url=None) starts a server (default: a SQLite state in tmp_path)."""
    servers: list[Server] = []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(fake_entry_point), str(TESTS)])

    def start(state_url: str | None = None, workers: int = 4) -> Server:
        url = state_url or f"sqlite:///{tmp_path / 'state.db'}"
        server = Server(url, tmp_path / "serve", env, tmp_path / "server.log", tokens, workers)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()
    log = tmp_path / "server.log"
    if log.exists():
        assert "Traceback" not in log.read_text(), log.read_text()[-4000:]
