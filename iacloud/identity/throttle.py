"""Login rate limiting, kept in the database so every `iacloud serve` process sharing it
applies the same limits.

Failed logins are counted per key: `user:NAME` (the name asked for, whether or not it exists,
so the limit says nothing about which names do) and `client:ADDRESS`. Once a key has `limit`
failures, it is locked for `lockout`, doubled for each further failure up to `max_lockout`;
a locked key refuses attempts without checking the password (and without counting them).
A successful login clears its user's count; a key with no failure for `forget_after` is
forgotten. An attempt is charged *before* its password is checked and refunded if it
succeeds, so parallel attempts cannot slip past the limit while the (slow) check runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from iacloud.identity.db import Tx, as_time


@dataclass(frozen=True)
class LoginPolicy:
    user_limit: int = 5
    # Higher than the user limit: several people may share one address (NAT, a proxy).
    client_limit: int = 20
    lockout: timedelta = timedelta(minutes=1)
    max_lockout: timedelta = timedelta(minutes=15)
    forget_after: timedelta = timedelta(minutes=15)


def locked_for(tx: Tx, keys: list[str], now: datetime) -> float | None:
    """Seconds until every one of `keys` accepts attempts again, or None if none is locked."""
    waits = []
    for key in keys:
        row = tx.one("SELECT locked_until FROM iacloud_identity_login_failures WHERE key = ?", key)
        if row and row[0] is not None:
            until = as_time(row[0])
            if until > now:
                waits.append((until - now).total_seconds())
    return max(waits) if waits else None


@dataclass(frozen=True)
class Charge:
    key: str
    locked_until: datetime | None  # the lock this charge set, if it set one


def charge(tx: Tx, key: str, limit: int, now: datetime, policy: LoginPolicy) -> Charge:
    """Count one failure for `key` (refunded by `refund` if the attempt succeeds)."""
    tx.run(
        "DELETE FROM iacloud_identity_login_failures WHERE last_failure < ? "
        "AND (locked_until IS NULL OR locked_until < ?)",
        now - policy.forget_after,
        now,
    )
    tx.run(
        "INSERT INTO iacloud_identity_login_failures (key, failures, last_failure) "
        "VALUES (?, 0, ?) ON CONFLICT (key) DO NOTHING",
        key,
        now,
    )
    row = tx.one(
        "SELECT failures FROM iacloud_identity_login_failures WHERE key = ?" + tx.for_update, key
    )
    failures = (int(row[0]) if row else 0) + 1
    until: datetime | None = None
    if failures >= limit:
        wait = min(policy.lockout * 2 ** min(failures - limit, 20), policy.max_lockout)
        until = now + wait
    tx.run(
        "UPDATE iacloud_identity_login_failures SET failures = ?, last_failure = ? WHERE key = ?",
        failures,
        now,
        key,
    )
    if until is not None:
        tx.run(
            "UPDATE iacloud_identity_login_failures SET locked_until = ? WHERE key = ?", until, key
        )
    return Charge(key, until)


def refund(tx: Tx, charged: Charge) -> None:
    """Undo a charge of an attempt that succeeded, and the lock it set unless a later failure
    has set another since."""
    tx.run(
        "UPDATE iacloud_identity_login_failures SET failures = failures - 1 "
        "WHERE key = ? AND failures > 0",
        charged.key,
    )
    if charged.locked_until is not None:
        tx.run(
            "UPDATE iacloud_identity_login_failures SET locked_until = NULL "
            "WHERE key = ? AND locked_until = ?",
            charged.key,
            charged.locked_until,
        )


def clear(tx: Tx, key: str) -> None:
    tx.run("DELETE FROM iacloud_identity_login_failures WHERE key = ?", key)
