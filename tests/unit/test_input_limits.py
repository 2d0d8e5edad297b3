"""Issue 10 item 11: no traceback for any input. Integers beyond Python's 4,300-digit limit,
deep nesting, non-UTF-8 text, devices and FIFOs as files: each an ordinary diagnostic naming
the file, from every command that reads it."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from iacloud import limits
from iacloud.cli.main import cli

HEAD = """version = 1
name = "lim"
[parameters.n]
type = "number"
default = 1
[parameters.m]
type = "map"
default = {}
[parameters.l]
type = "list"
default = []
"""
VOLUME = '[resources.v]\ntype = "volume"\nsize_gib = 1\n'
BIG = "9" * 5000
DEEP_ARRAY = "[" * 2000 + "]" * 2000
DEEP_TABLE = "{ a = " * 300 + "1" + " }" * 300


def run(*args: str) -> Result:
    started = time.monotonic()
    result = CliRunner().invoke(cli, list(args))
    assert time.monotonic() - started < 2
    # an iacloud error exits 1 through sys.exit; any other exception is a traceback
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


STACKS = {
    "huge integer": HEAD + VOLUME + f"x = {BIG}\n",
    "integer beyond 64 bits": HEAD.replace("default = 1", "default = 99999999999999999999"),
    "deep array": HEAD + VOLUME + f"x = {DEEP_ARRAY}\n",
    "deep inline table": HEAD + VOLUME + f"x = {DEEP_TABLE}\n",
    "deep dotted key": HEAD + VOLUME + "x." + ".".join(["k"] * 500) + " = 1\n",
}


@pytest.mark.parametrize("command", ["validate", "show", "events", "output", "state-list"])
@pytest.mark.parametrize("case", list(STACKS))
def test_stack_beyond_limits_is_a_diagnostic(tmp_path: Path, case: str, command: str) -> None:
    path = write(tmp_path, STACKS[case])
    args = {
        "validate": ["validate", str(path)],
        "show": ["show", "--stack", str(path)],
        "events": ["events", "--stack", str(path)],
        "output": ["output", "--stack", str(path)],
        "state-list": ["state", "list", "--stack", str(path)],
    }[command]
    result = run(*args)
    assert result.exit_code == 1
    assert str(path) in result.output
    assert "64-bit range" in result.output or "nested more than 64" in result.output


def test_non_utf8_stack_on_read_commands(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_bytes(b'version = 1\nname = "\xff"\n')
    for args in (["validate", str(path)], ["show", "--stack", str(path)]):
        result = run(*args)
        assert result.exit_code == 1
        assert "not a UTF-8 text file (byte 20, line 2)" in result.output


def test_device_as_stack_file_is_refused_without_reading_it() -> None:
    result = run("validate", "/dev/zero")
    assert result.exit_code == 1
    assert "it is a character device" in result.output
    result = run("show", "--stack", "/dev/zero")
    assert "it is a character device" in result.output


def test_fifo_as_stack_file_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "s.toml"
    os.mkfifo(fifo)
    done: list[Result] = []
    worker = threading.Thread(target=lambda: done.append(run("validate", str(fifo))), daemon=True)
    worker.start()
    worker.join(5)
    if not done:  # still blocked in open(): unblock it so the test run can end
        with open(fifo, "w"):
            pass
        worker.join(5)
        pytest.fail("validate blocked on a FIFO")
    assert done[0].exit_code == 1
    assert "it is a FIFO" in done[0].output


@pytest.mark.parametrize(
    "command", [["show", "--stack"], ["state", "list", "--stack"], ["validate"]]
)
def test_symlink_loop_as_stack_file(tmp_path: Path, command: list[str]) -> None:
    loop = tmp_path / "loop.toml"
    loop.symlink_to(loop)
    result = run(*command, str(loop))
    assert result.exit_code == 1
    assert "loop.toml" in result.output


def test_oversized_stack_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_TOML_BYTES", 1000)
    monkeypatch.setattr(limits.read_text, "__defaults__", (1000,))
    path = write(tmp_path, HEAD + "#" * 2000 + "\n")
    result = run("validate", str(path))
    assert "more than the limit of 1000" in result.output


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        (f"n={BIG}", "at most 40 characters"),
        ("m=" + '{"a":' * 100_000 + "1" + "}" * 100_000, "nested more than 64"),
        (f'm={{"a": {BIG}}}', "longer than 40 digits"),
        ("l=" + "[" * 100_000 + "]" * 100_000, "nested more than 64"),
        ('m={"a": NaN}', "NaN is not a JSON value"),
    ],
)
def test_param_values_beyond_limits(tmp_path: Path, param: str, expected: str) -> None:
    path = write(tmp_path, HEAD)
    result = run("validate", str(path), "-p", param)
    assert result.exit_code == 1
    assert expected in result.output
    assert len(result.output) < 1000  # the value is quoted cut short, not 200,000 characters


@pytest.mark.parametrize(
    "env",
    [f"[parameters]\nn = {BIG}\n", f"[parameters]\nm = {DEEP_TABLE}\n"],
    ids=["huge integer", "deep table"],
)
def test_env_file_beyond_limits(tmp_path: Path, env: str) -> None:
    path = write(tmp_path, HEAD)
    env_file = write(tmp_path, env, "env.toml")
    result = run("validate", str(path), "-e", str(env_file))
    assert result.exit_code == 1
    assert f"{env_file}:" in result.output


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"format_version": ' + BIG + "}", "longer than 40 digits"),
        ("[" * 100_000 + "]" * 100_000, "nested more than 64"),
        (b'{"format_version": "\xff"}', "not a UTF-8 text file"),
        ('{"format_version": 1e999}', "out of range"),
    ],
    ids=["huge integer", "deep", "not utf-8", "infinite"],
)
def test_plan_file_beyond_limits(tmp_path: Path, content: str | bytes, expected: str) -> None:
    plan = tmp_path / "plan.json"
    if isinstance(content, bytes):
        plan.write_bytes(content)
    else:
        plan.write_text(content)
    result = run("apply", str(plan))
    assert result.exit_code == 1
    assert expected in result.output
    assert str(plan) in result.output
