"""The audit log: one row per identity change, login attempt or API action (who, what, when,
from where, outcome). Rows are written by the caller's transaction, so a change and its audit
row commit together.

Nothing secret is written here: callers pass names, never passwords or tokens, and the store
records a login under an unknown user name as `user:(unknown)`, since people type passwords
into the name field.
"""

from __future__ import annotations

import re
from datetime import datetime

from iacloud.errors import UserError, printable
from iacloud.identity.db import Tx, as_time
from iacloud.identity.model import AuditEvent

_WORD = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
_MAX_TEXT = 200
MAX_LIMIT = 1000


def _word(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _WORD.fullmatch(value):
        raise UserError(f"audit {kind} {printable(repr(value)[:80])} is not a plain word")
    return value


def _text(value: str | None) -> str | None:
    return None if value is None else printable(str(value))[:_MAX_TEXT]


def write(
    tx: Tx,
    time: datetime,
    actor: str | None,
    actor_project: str | None,
    action: str,
    target: str,
    project: str | None,
    client: str,
    outcome: str,
) -> None:
    tx.run(
        "INSERT INTO iacloud_identity_audit (time, actor, actor_project, action, target, "
        "project, client, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        time,
        _text(actor),
        _text(actor_project),
        _word("action", action),
        _text(target) or "",
        _text(project),
        _text(client) or "",
        _word("outcome", outcome),
    )


def read(tx: Tx, project: str | None, limit: int, marker: int | None) -> list[AuditEvent]:
    """Newest first; `marker` is the id of the last event of the previous page (Heat's paging).
    `project` None: every event."""
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise UserError(f"limit must be 1 to {MAX_LIMIT}, not {printable(repr(limit)[:20])}")
    where, params = [], []
    if project is not None:
        where.append("project = ?")
        params.append(project)
    if marker is not None:
        if not isinstance(marker, int) or marker < 0:
            raise UserError(f"marker {printable(repr(marker)[:20])} is not an event id")
        where.append("id < ?")
        params.append(marker)
    sql = (
        "SELECT id, time, actor, actor_project, action, target, project, client, outcome "
        "FROM iacloud_identity_audit"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY id DESC LIMIT ?"
    )
    rows = tx.all(sql, *params, limit)
    return [
        AuditEvent(
            id=r[0],
            time=as_time(r[1]),
            actor=r[2],
            actor_project=r[3],
            action=r[4],
            target=r[5],
            project=r[6],
            client=r[7],
            outcome=r[8],
        )
        for r in rows
    ]
