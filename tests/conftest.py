"""Shared fixtures: the fake provider registered through a real entry point on sys.path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent


@pytest.fixture(autouse=True, scope="session")
def fake_entry_point(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Register tests/fake_provider.py as provider 'fake' the way a third party would: a
    dist-info with an entry point, found by importlib.metadata on sys.path."""
    root = tmp_path_factory.mktemp("fakedist")
    info = root / "iacloud_fake-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: iacloud-fake\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text(
        "[iacloud.providers]\nfake = fake_provider:FakeProvider\n"
    )
    for p in (str(root), str(TESTS)):
        if p not in sys.path:
            sys.path.insert(0, p)
    return root


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Provider working files (and the fake provider's objects) go under the test's tmp dir."""
    d = tmp_path / "data"
    monkeypatch.setenv("IACLOUD_DATA_DIR", str(d))
    monkeypatch.delenv("IACLOUD_STATE", raising=False)
    return d


@pytest.fixture(autouse=True)
def image_roots(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stacks written to a test's tmp dir may use the repository's test images (build/images),
    which lie outside their directory tree."""
    images = TESTS.parent / "build" / "images"
    monkeypatch.setenv("IACLOUD_IMAGE_ROOTS", str(images))
    return images


@pytest.fixture
def run():
    """The CLI in-process: run("plan", path, code=2) returns the output, asserting the exit
    code and that no traceback was printed; `input` is standard input."""
    from click.testing import CliRunner

    from iacloud.cli.main import cli

    runner = CliRunner()

    def invoke(*args: str, code: int = 0, input: str | None = None) -> str:
        result = runner.invoke(cli, list(args), catch_exceptions=False, input=input)
        assert result.exit_code == code, result.output
        assert "Traceback" not in result.output
        return result.output

    return invoke


@pytest.fixture
def write_stack(tmp_path: Path):
    """Write a stack file from TOML text and return its path."""

    def write(text: str, name: str = "stack.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """In CI a skip is a failure: a missing libvirtd or image must not pass silently."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run everything: {report.longrepr}"


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server for the whole session, started on first use (initdb into a
    temporary directory, a unix socket there) and stopped and removed at the end."""
    from pg_server import PgServer

    server = PgServer().start()
    try:
        yield server
    finally:
        server.stop()
