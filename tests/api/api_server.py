"""A real `iacloud serve` process (uvicorn on 127.0.0.1, a free port), the tests' users and
tokens in iacloud.identity's store, and helpers: waiting for an operation, stack texts."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from iacloud import engine
from iacloud.identity import AlreadyExists, IdentityStore

HERE = Path(__file__).parent
TESTS = HERE.parent

TOKENS = {
    "tok-alice": {"user": "alice", "project": "pa", "role": "member"},
    "tok-rita": {"user": "rita", "project": "pa", "role": "reader"},
    "tok-adam": {"user": "adam", "project": "pa", "role": "admin"},
    "tok-bob": {"user": "bob", "project": "pb", "role": "member"},
    "tok-bea": {"user": "bea", "project": "pb", "role": "admin"},
    "tok-old": {"user": "alice", "project": "pa", "role": "member", "expires": "in 1 s"},
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Tokens:
    """The tests' users (TOKENS) in iacloud.identity's store, each with a real token."""

    def __init__(self) -> None:
        self.real: dict[str, str] = {}
        self.urls: set[str] = set()
        self.expired_after = 0.0  # when tok-old has expired (monotonic)

    def setup(self, state_url: str) -> None:
        if state_url in self.urls:
            return
        engine.prepare_state(state_url)
        with IdentityStore.open(state_url) as store:
            for project in ("pa", "pb"):
                with contextlib.suppress(AlreadyExists):
                    store.create_project(project)
            for name, entry in TOKENS.items():
                with contextlib.suppress(AlreadyExists):
                    store.create_user(entry["user"], "a long password")
                store.grant(entry["user"], entry["project"], entry["role"])
                if name not in self.real:
                    ttl = timedelta(seconds=1) if "expires" in entry else None
                    if ttl:
                        self.expired_after = time.monotonic() + 1.1
                    self.real[name] = store.issue_token(entry["user"], entry["project"], ttl).token
        self.urls.add(state_url)

    def __getitem__(self, name: str) -> str:
        return self.real.get(name, name)

    def revoke(self, name: str) -> None:
        for url in self.urls:
            with IdentityStore.open(url) as store:
                store.revoke(self.real[name])

    def audit(self) -> list[list[str | None]]:
        """(user, action, target, client, outcome), oldest first."""
        (url,) = self.urls
        with IdentityStore.open(url) as store:
            events = store.audit_events(None, 1000)
        return [[e.actor, e.action, e.target, e.client, e.outcome] for e in reversed(events)]


class Server:
    def __init__(self, state_url: str, data_dir: Path, env: dict[str, str], log: Path,
                 tokens: Tokens, workers: int = 4) -> None:  # fmt: skip
        self.state_url = state_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.tokens = tokens
        tokens.setup(state_url)
        command = [sys.executable, "-m", "iacloud.cli.main", "serve", "--listen",
                   f"127.0.0.1:{self.port}", "--state", state_url, "--data-dir", str(data_dir),
                   "--workers", str(workers), "--lock-timeout", "30",
                   "--stale-after", "6"]  # fmt: skip
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
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
            token = self.tokens[token]
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
