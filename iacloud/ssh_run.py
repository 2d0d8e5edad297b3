"""A command on a catalog host over its SSH target (`SshTarget.argv`: an argument list with
every word quoted), bounded in time, with ssh's own failure told apart from the command's.

ssh exits 255 when it could not run the command at all (unreachable host, refused key, unknown
host key); that, a timeout and a missing ssh binary are `SshFailed`. Any other exit status is
the command's, returned to the caller to judge.
"""

from __future__ import annotations

import subprocess

from iacloud.site_hosts import SshTarget

SSH_FAILED = 255  # ssh's exit status for its own failure


class SshFailed(Exception):
    """The command never ran (or did not finish in time); the message says why."""


def last_line(text: str) -> str:
    """The last line of a command's error output, bounded: what a message can quote."""
    return (text.strip().splitlines() or ["no message"])[-1][:300]


def run(
    ssh: SshTarget,
    *command: str,
    timeout: float,
    stdin: str | None = None,
    connect_timeout: float = 5,
) -> subprocess.CompletedProcess[str]:
    """`command` on the host within `timeout` seconds; its output is text (undecodable bytes
    replaced). stdin: text fed to the command, else it reads nothing."""
    argv = ssh.argv(*command, connect_timeout=max(1, int(connect_timeout)))
    try:
        done = subprocess.run(
            argv, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True, text=True, errors="replace", timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise SshFailed(f"no answer within {timeout:g} s") from None
    except OSError as exc:
        raise SshFailed(f"cannot run ssh: {exc.strerror or exc}") from None
    if done.returncode == SSH_FAILED:
        raise SshFailed(last_line(done.stderr))
    return done
