"""The CLI through the API (`iacloud --api URL`): every command prints what it prints locally,
with the same exit codes, against a real `iacloud serve` (fake provider, SQLite state).

Normalised before comparing, because they legitimately differ between two stacks: the fake
objects' ids, the stack id and lineage, timestamps, and the seconds a step or check took."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from api_server import Server, wait_op
from click.testing import CliRunner

from iacloud.cli.main import cli

STACK = """\
version = 1
description = "the CLI through the API"

[parameters.size]
type = "number"
default = 1

[parameters.label]
type = "string"
hidden = true
default = "s3cret-label"

[resources.r0]
type = "fake_thing"
size = { get_param = "size" }
sleep = {sleep}

[resources.r1]
type = "fake_thing"
size = 2
name = { get_param = "label" }
sleep = {sleep}
ref = { get_resource = "r0" }

[outputs.first]
value = { get_attr = ["r0", "id"] }

[outputs.size]
value = { get_param = "size" }
"""

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX = re.compile(r"\b[0-9a-f]{12,64}\b")
_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)?")
_ELAPSED = re.compile(r"after \d+\.\ds")
_DURATION = re.compile(r'"duration_seconds": [0-9.e-]+')


def normal(text: str) -> str:
    text = _UUID.sub("ID", text)
    text = _HEX.sub("HEX", text)
    text = _TIME.sub("TIME", text)
    text = _DURATION.sub('"duration_seconds": N', text)
    return _ELAPSED.sub("after Ns", text)


def stack_of(tmp_path: Path, sleep: float = 0.0, name: str = "demo") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(STACK.replace("{sleep}", str(sleep)))
    return path


class Both:
    """Runs a command locally (its own SQLite state) and through the API, in-process."""

    def __init__(self, server: Server, tmp_path: Path, token: str = "tok-alice") -> None:
        self.runner = CliRunner()
        self.local_env = {"IACLOUD_STATE": f"sqlite:///{tmp_path / 'local.db'}",
                          "IACLOUD_API": None}  # fmt: skip
        self.api_env = {"IACLOUD_API": server.url, "IACLOUD_TOKEN": server.tokens[token],
                        "IACLOUD_STATE": None}  # fmt: skip

    def one(self, env: dict[str, Any], args: tuple[str, ...], code: int) -> str:
        result = self.runner.invoke(cli, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == code, (args, env.get("IACLOUD_API"), result.output)
        assert "Traceback" not in result.output
        return result.output

    def remote(self, *args: str, code: int = 0) -> str:
        return self.one(self.api_env, args, code)

    def local(self, *args: str, code: int = 0) -> str:
        return self.one(self.local_env, args, code)

    def same(self, *args: str, code: int = 0) -> str:
        """The command's output, the same both ways (normalised); exit codes equal `code`."""
        here = normal(self.local(*args, code=code))
        there = normal(self.remote(*args, code=code))
        assert there == here, f"iacloud {' '.join(args)}\n--- local\n{here}\n--- api\n{there}"
        assert "s3cret" not in there  # a hidden parameter's value, masked both ways
        return there


def _edit_fake_objects(data_dir: Path, address: str, **inputs: Any) -> int:
    """Change an object behind iacloud's back, in every stack (the local and the server's)."""
    n = 0
    for f in data_dir.glob("stacks/*/fake/fake_thing/*.json"):
        data = json.loads(f.read_text())
        if data["address"] == address:
            data["inputs"].update(inputs)
            f.write_text(json.dumps(data))
            n += 1
    return n


def test_every_command_prints_what_it_prints_locally(serve, tmp_path: Path, data_dir: Path):
    both = Both(serve(), tmp_path)
    stack = str(stack_of(tmp_path))

    env = tmp_path / "env.toml"
    env.write_text("[parameters]\nsize = 3\n")
    out = both.same("plan", stack, "-e", str(env), "--detailed-exitcode", code=2)
    assert "+ r0 (fake_thing)" in out and "size: 3" in out and "(sensitive)" in out
    both.same("plan", stack, "-p", "size=3", "--json")
    both.same("plan", stack, "--markdown")

    out = both.same("apply", stack, "-p", "size=3", "--auto-approve")
    assert "r0: Creating..." in out and "r1: Creation complete after Ns" in out
    assert "2 step(s) complete." in out and "size = 3" in out

    both.same("plan", stack, "-p", "size=3", "--detailed-exitcode")
    out = both.same("apply", stack, "-p", "size=3", "--auto-approve")  # no changes: plan only
    assert "step(s) complete" not in out
    out = both.same("apply", stack, "-p", "size=4", "--auto-approve")
    assert "r0: Updating..." in out and "1 step(s) complete." in out

    reads = [("show", "-s", stack), ("show", "-s", stack, "--json"),
             ("show", "-s", stack, "--serial", "1"), ("output", "-s", stack),
             ("output", "-s", stack, "--json"), ("output", "size", "-s", stack),
             ("output", "first", "-s", stack, "--raw"), ("events", "-s", stack),
             ("events", "-s", stack, "--json"), ("events", "-s", stack, "-n", "3")]  # fmt: skip
    for args in reads:
        assert both.same(*args).strip(), args

    both.same("drift", stack)
    assert _edit_fake_objects(data_dir, "r1", size=9) == 2
    out = both.same("drift", stack, code=2)
    assert "r1" in out
    both.same("drift", stack, "--json", code=2)

    out = both.same("destroy", stack, "--auto-approve")
    assert "r1: Destroying..." in out and "2 step(s) complete." in out


def test_errors_match_local_and_exit_1(serve, tmp_path: Path):
    both = Both(serve(), tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text(STACK.replace("{sleep}", "0").replace("size = 2", 'size = "big"'))
    out = both.same("plan", str(bad), code=1)
    assert f"Error: {bad}" in out and "resources.r1" in out
    out = both.same("apply", str(stack_of(tmp_path)), "-p", "nosuch=1", "--auto-approve", code=1)
    assert "unknown parameter 'nosuch'" in out
    failing = tmp_path / "failing.toml"
    failing.write_text(STACK.replace("{sleep}", "0").replace("size = 2", "size = 2\nfail = true"))
    out = both.same("apply", str(failing), "--auto-approve", code=1)
    assert "r1: Creation failed: the fake backend was told to fail" in out
    assert "  failed: create r1: the fake backend was told to fail" in out
    # what the server never had is refused clearly, not guessed at
    out = both.remote("apply", str(tmp_path / "saved.json"), code=1)
    assert "not available through --api" in out
    out = both.remote("plan", str(stack_of(tmp_path)), "--target", "r0", code=1)
    assert "--target is not available through --api" in out


def test_a_wrong_token_is_a_clear_error_without_the_token(serve, tmp_path: Path):
    server = serve()
    both = Both(server, tmp_path)
    secret = "not-a-token-" + "x" * 40
    both.api_env["IACLOUD_TOKEN"] = secret
    out = both.remote("plan", str(stack_of(tmp_path)), code=1)
    assert "refused the token (401)" in out and secret not in out
    both.api_env["IACLOUD_TOKEN"] = ""
    assert "IACLOUD_TOKEN is not set" in both.remote("show", "-s", "x.toml", code=1)
    # an unreachable server: the message names the URL, never the token
    both.api_env.update({"IACLOUD_API": f"http://127.0.0.1:{_closed_port()}",
                         "IACLOUD_TOKEN": secret})  # fmt: skip
    out = both.remote("plan", str(stack_of(tmp_path)), code=1)
    assert "cannot reach the API" in out and secret not in out


def _closed_port() -> int:
    from api_server import free_port

    return free_port()


def test_plain_http_to_another_host_warns(serve, tmp_path: Path):
    both = Both(serve(), tmp_path)
    both.api_env["IACLOUD_TOKEN"] = ""  # refused before any connection is made
    urls = {"http://198.18.0.1:8780": True, "https://198.18.0.1": False,
            "http://127.0.0.1:8780": False, "http://localhost:1": False}  # fmt: skip
    for url, warned in urls.items():
        both.api_env["IACLOUD_API"] = url
        out = both.remote("output", "-s", "x.toml", code=1)
        assert ("the token travels in clear text" in out) is warned, (url, out)
        assert "IACLOUD_TOKEN is not set" in out


def test_a_stack_of_another_project_is_not_found(serve, tmp_path: Path):
    server = serve()
    alice = Both(server, tmp_path)
    stack = str(stack_of(tmp_path))
    alice.remote("apply", stack, "--auto-approve")
    bob = Both(server, tmp_path, token="tok-bob")
    out = bob.remote("show", "-s", stack, code=1)
    assert "no stack 'demo' in project 'pb'" in out
    bob.api_env["IACLOUD_PROJECT"] = "pa"  # bob is no member of pa: it does not exist for him
    out = bob.remote("output", "-s", stack, code=1)
    assert "(HTTP 404)" in out and "r0" not in out
    assert "1 resources" not in alice.remote("show", "-s", stack)  # alice's stack is intact


def test_progress_streams_during_apply_and_ctrl_c_cancels(serve, tmp_path: Path):
    server = serve()
    stack = tmp_path / "slow.toml"
    stack.write_text(
        "version = 1\n"
        + "".join(
            f'[resources.s{i}]\ntype = "fake_thing"\nsleep = 1.0\n'
            + (f'ref = {{ get_resource = "s{i - 1}" }}\n' if i else "")
            for i in range(6)
        )
    )
    env = {**os.environ, "IACLOUD_API": server.url, "IACLOUD_TOKEN": server.tokens["tok-alice"],
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "iacloud.cli.main", "apply", str(stack), "--auto-approve"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    t0 = time.monotonic()
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("s1: Creation complete"):
            break
    # two steps reported while the run still had four to go: fed by the stream, not the end
    assert proc.poll() is None and time.monotonic() - t0 < 20, lines
    assert "s0: Creating..." in lines and "s1: Creating..." in lines
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, rest
    assert "Interrupt received: starting no new steps" in rest
    assert "Interrupted: running steps were recorded; run apply again to finish." in rest
    assert "s5: Creating..." not in rest
    client = server.client()
    ops = client.get("/v1/pa/stacks/slow/operations").json()["operations"]
    assert ops[0]["status"] == "CANCELLED" and ops[0]["cancel_requested"], ops[0]
    # the next apply finishes the rest, as after a local Ctrl-C
    done = subprocess.run(
        [sys.executable, "-m", "iacloud.cli.main", "apply", str(stack), "--auto-approve"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "s5: Creation complete" in done.stdout
    wait_op(client, ops[0]["links"]["self"])


def test_apply_without_a_terminal_needs_auto_approve(serve, tmp_path: Path):
    both = Both(serve(), tmp_path)
    stack = str(stack_of(tmp_path))
    # no terminal: refused as locally
    out = both.same("apply", stack, code=1)
    assert "refusing to change anything without --auto-approve" in out


def _read_until(fd: int, marker: str, timeout: float = 30.0) -> str:
    out = ""
    deadline = time.monotonic() + timeout
    while marker not in out:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, out
        try:
            chunk = os.read(fd, 4096).decode(errors="replace")
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        out += chunk
    return out


def test_apply_on_a_terminal_asks_and_no_changes_nothing(serve, tmp_path: Path):
    server = serve()
    stack = stack_of(tmp_path)
    env = {**os.environ, "IACLOUD_API": server.url, "IACLOUD_TOKEN": server.tokens["tok-alice"]}
    for answer, applied in (("n", False), ("y", True)):
        primary, secondary = pty.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "iacloud.cli.main", "apply", str(stack)],
            env=env, stdin=secondary, stdout=secondary, stderr=secondary,
        )  # fmt: skip
        os.close(secondary)
        out = _read_until(primary, "Do you want to apply these changes?")
        assert "Plan: 2 to create" in out
        os.write(primary, f"{answer}\n".encode())
        out += _read_until(primary, "\x00", timeout=60)
        os.close(primary)
        assert proc.wait(30) == 0, out
        assert ("Nothing changed." in out) is not applied, out
        assert ("2 step(s) complete." in out) is applied, out
        found = server.client().get("/v1/pa/stacks/demo").status_code
        assert found == (200 if applied else 404)
