"""ssh_run: a command on a host over SSH, run here through a stand-in `ssh` on PATH that does
what ssh does with the words after the target: joins them with spaces for the remote shell."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from iacloud import ssh_run
from iacloud.site_hosts import SshTarget
from iacloud.ssh_run import SshFailed

# everything after `--` joined into one string and given to a shell, as sshd does;
# the target "down" stands for a host ssh cannot reach (ssh's own exit status 255)
FAKE_SSH = """#!/bin/sh
while [ "$1" != "--" ]; do last=$1; shift; done
shift
if [ "$last" = down ]; then echo "ssh: connect to host down port 22: No route" >&2; exit 255; fi
exec sh -c "$*"
"""
TARGET = SshTarget(target="h1")


@pytest.fixture(autouse=True)
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ssh = tmp_path / "ssh"
    ssh.write_text(FAKE_SSH)
    ssh.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")


def test_the_host_runs_exactly_the_given_words() -> None:
    words = ["a b", "$(echo no)", "'q'", ";", "*", "\\n", ""]
    done = ssh_run.run(TARGET, "printf", "[%s]", *words, timeout=10)
    assert done.returncode == 0
    assert done.stdout == "".join(f"[{w}]" for w in words)


def test_stdin_reaches_the_command_and_its_exit_status_is_returned() -> None:
    done = ssh_run.run(TARGET, "sh", "-c", "cat; exit 3", stdin="ruleset\n", timeout=10)
    assert (done.returncode, done.stdout) == (3, "ruleset\n")


def test_without_stdin_the_command_reads_nothing() -> None:
    assert ssh_run.run(TARGET, "cat", timeout=10).stdout == ""


def test_undecodable_output_is_replaced_not_raised() -> None:
    done = ssh_run.run(TARGET, "printf", "\\377ok", timeout=10)
    assert done.stdout == "\ufffdok"


def test_ssh_failing_itself_is_sshfailed_with_its_last_line() -> None:
    with pytest.raises(SshFailed, match=r"^ssh: connect to host down port 22: No route$"):
        ssh_run.run(SshTarget(target="down"), "true", timeout=10)


def test_a_command_that_does_not_finish_in_time_is_sshfailed() -> None:
    with pytest.raises(SshFailed, match=r"no answer within 0.5 s"):
        ssh_run.run(TARGET, "sleep", "5", timeout=0.5)


def test_no_ssh_binary_is_sshfailed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SshFailed, match="cannot run ssh"):
        ssh_run.run(TARGET, "true", timeout=10)


def test_last_line_is_bounded() -> None:
    assert ssh_run.last_line("") == "no message"
    assert ssh_run.last_line("first\n" + "x" * 1000 + "\n") == "x" * 300
