"""A real `iacloud serve` (SQLite state, the fake provider) and Debian's Chromium driven by
Playwright, one of each per module; screenshots go to build/screenshots/."""

from __future__ import annotations

import os
import shutil
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
from dashboard_helpers import PASSWORD, Served

TESTS = Path(__file__).parent.parent
CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, fake_entry_point: Path) -> Iterator[Served]:
    from iacloud import engine
    from iacloud.identity import IdentityStore

    root = tmp_path_factory.mktemp("dashboard")
    state_url = f"sqlite:///{root / 'state.db'}"
    engine.prepare_state(state_url)
    with IdentityStore.open(state_url) as ids:
        for project in ("demo", "other"):
            ids.create_project(project)
        for user, project, role in (("alice", "demo", "member"), ("bob", "other", "member")):
            ids.create_user(user, PASSWORD)
            ids.grant(user, project, role)
    port = _free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(fake_entry_point), str(TESTS)])
    env["IACLOUD_DATA_DIR"] = str(root / "data")
    env["IACLOUD_IMAGE_ROOTS"] = str(TESTS.parent / "build" / "images")
    env.pop("IACLOUD_STATE", None)
    log = root / "server.log"
    command = [sys.executable, "-m", "iacloud.cli.main", "serve", "--listen",
               f"127.0.0.1:{port}", "--state", state_url,
               "--data-dir", str(root / "serve")]  # fmt: skip
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    yield Served(url, state_url, root / "data", log)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    text = log.read_text()
    assert "Traceback" not in text, text[-4000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM), "Debian's chromium is needed (scripts/host-setup.sh)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(20_000)
    yield ctx
    ctx.close()
