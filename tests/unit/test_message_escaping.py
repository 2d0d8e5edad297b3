"""Issue 10 item 15: user text quoted in messages cannot forge lines or reach the terminal as
escape sequences, and a counted resource's cross-check problems are merged like its fields'."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from iacloud.cli.main import cli
from iacloud.errors import Diagnostic, printable

FORGED = r"""version = 1
name = "esc"
[resources.n]
type = "network"
cidr = "198.18.0.0/24\nError: all good\u001b[2J"
[resources.v]
type = "volume"
size_gib = 1
"bad\u202ekey" = 1
"""


def test_printable_escapes_controls_and_bidi() -> None:
    assert printable("a\nb\r\tc\x1b[31m\x7f\u202e\u200bd") == (
        "a\\nb\\r\\tc\\x1b[31m\\x7f\\u202e\\u200bd"
    )
    assert printable("plain ünïcode text") == "plain ünïcode text"
    d = Diagnostic("bad value 'x\ny'", file="s.toml", field="f\x1b")
    assert "\n" not in str(d) and "\x1b" not in str(d)


def test_forged_lines_and_escapes_do_not_reach_the_terminal(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(FORGED)
    result = CliRunner().invoke(cli, ["validate", str(path)], color=True)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    # one line per diagnostic, each starting with Error: and naming the file
    assert len(lines) == 2, lines
    assert all(str(path) in line for line in lines)
    assert "\x1b[2J" not in result.output and "\u202e" not in result.output
    assert "\\nError: all good\\x1b[2J" in result.output or "\\u001b[2J" in result.output


def test_cross_check_problems_of_a_counted_resource_are_merged(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        'version = 1\nname = "cc"\n[resources.lan]\ntype = "network"\ncidr = "198.18.0.0/16"\n'
        '[resources.p]\ntype = "port"\ncount = 10000\nnetwork = { get_resource = "lan" }\n'
        'ip = "198.18.0.5"\n'
    )
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert len(lines) == 1, lines[:5]
    assert "already taken by port 'p[0]'" in lines[0]
    assert "the same in 9998 other instances" in lines[0]
