"""Running nft for iacloud's own tables: apply a whole ruleset, read the tables back, remove them.

`nft` is run as an argument list with the ruleset on stdin (text `compiler` generated from
validated values). A ruleset declares, deletes and re-creates both tables in one transaction,
so a change is atomic: packets see the old rules or the new ones, never none. Only the two
`iacloud` tables are ever named; the host's other tables are neither read nor changed.
The python bindings (libnftables through `nftables.py`) are not on PyPI and would tie the
virtualenv to the system's Python; the command is what Debian's nftables package ships.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from iacloud.errors import ProviderError
from iacloud.secgroups.compiler import FAMILIES, TABLE, removal

TIMEOUT = 20.0


def binary() -> str:
    path = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if not path:
        raise ProviderError(
            "nft is not installed: security groups need it (Debian/Ubuntu: apt install nftables)"
        )
    return path


def _run(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [binary(), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProviderError(f"cannot run nft: {exc}") from exc


def apply(text: str) -> None:
    """Replace iacloud's tables with `text`; an empty text removes them."""
    result = _run(["-f", "-"], text or removal())
    if result.returncode != 0:
        raise ProviderError(
            f"nft refused iacloud's security group ruleset: {result.stderr.strip()}"
        )


def read() -> dict[str, list[dict[str, Any]]]:
    """{family: the table's items (nft's JSON objects)}; a missing table is absent."""
    out: dict[str, list[dict[str, Any]]] = {}
    for family in FAMILIES:
        result = _run(["-j", "list", "table", family, TABLE])
        if result.returncode != 0:
            continue
        try:
            items = json.loads(result.stdout)["nftables"]
        except (ValueError, KeyError, TypeError):
            continue
        out[family] = [i for i in items if isinstance(i, dict)]
    return out


def rule_comments(tables: dict[str, list[dict[str, Any]]]) -> dict[str, set[str]]:
    """{chain: comments of its rules} of the inet table."""
    out: dict[str, set[str]] = {}
    for item in tables.get("inet", []):
        rule = item.get("rule")
        if isinstance(rule, dict) and isinstance(rule.get("chain"), str):
            comment = rule.get("comment")
            chain = out.setdefault(rule["chain"], set())
            if isinstance(comment, str):
                chain.add(comment)
    return out
