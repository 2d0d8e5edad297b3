"""Login rate limiting, kept in the database so every `iacloud serve` process sharing it
applies the same limits.

Failed logins are counted per key: the user name asked for, whether or not it exists (so the
limit says nothing about which names do), and `client:ADDRESS`. A name is keyed by its hash:
people type passwords into the name field, and an unknown "name" must not be stored as typed.
Once a key has `limit` failures, it is locked for `lockout`, doubled for each further failure
up to `max_lockout`; a locked key refuses attempts without checking the password (and without
counting them).
A successful login clears its user's count; a key with no failure for `forget_after` is
forgotten. An attempt is charged *before* its password is checked and refunded if it
succeeds, so parallel attempts cannot slip past the limit while the (slow) check runs.
"""

from __future__ import annotations

import hashlib
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


def user_key(name: str) -> str:
    return "user:" + hashlib.sha256(f"iacloud-login\0{name}".encode()).hexdigest()


@dataclass(frozen=True)
class Charge:
    key: str
    locked_until: datetime | None  # the lock this charge set, if it set one


def attempt(
    tx: Tx, keys: list[tuple[str, int]], now: datetime, policy: LoginPolicy
) -> tuple[float | None, list[Charge]]:
    """Check and charge one login attempt against every (key, limit): the seconds to wait if a
    key is locked (nothing charged), else one failure counted per key, to be refunded if the
    attempt succeeds. The keys' rows are locked first and always in the same order (client,
    then user), so concurrent attempts queue instead of all reading "not locked"."""
    rows = []
    for key, limit in keys:
        tx.run(
            "INSERT INTO iacloud_identity_login_failures (key, failures, last_failure) "
            "VALUES (?, 0, ?) ON CONFLICT (key) DO NOTHING",
            key,
            now,
        )
        row = tx.one(
            "SELECT failures, last_failure, locked_until FROM iacloud_identity_login_failures "
            "WHERE key = ?" + tx.for_update,
            key,
        )
        assert row is not None
        failures, last, until = int(row[0]), as_time(row[1]), row[2]
        if now - last > policy.forget_after:
            failures = 0
        rows.append((key, limit, failures, as_time(until) if until is not None else None))
    waits = [(u - now).total_seconds() for _, _, _, u in rows if u is not None and u > now]
    if waits:
        return max(waits), []
    charges = []
    for key, limit, failures, _ in rows:
        failures += 1
        lock: datetime | None = None
        if failures >= limit:
            lock = now + min(policy.lockout * 2 ** min(failures - limit, 20), policy.max_lockout)
        tx.run(
            "UPDATE iacloud_identity_login_failures SET failures = ?, last_failure = ?, "
            "locked_until = ? WHERE key = ?",
            failures,
            now,
            lock,
            key,
        )
        charges.append(Charge(key, lock))
    return None, charges


def forget_old(tx: Tx, now: datetime, policy: LoginPolicy) -> None:
    """Drop keys quiet for `forget_after` and not locked; rows another login holds are left
    for the next time (no waiting, no lock-order deadlock)."""
    tx.run(
        "DELETE FROM iacloud_identity_login_failures WHERE key IN (SELECT key FROM "
        "iacloud_identity_login_failures WHERE last_failure < ? AND (locked_until IS NULL OR "
        "locked_until < ?)" + tx.skip_locked + ")",
        now - policy.forget_after,
        now,
    )


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
