"""The identity store against SQLite and a real PostgreSQL: login, rate limits, expiry,
revocation, API keys, roles, project isolation, the audit log, and that no secret is stored or
shown anywhere."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import argon2
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iacloud.errors import IacloudError, UserError
from iacloud.identity import (
    AlreadyExists,
    IdentityError,
    IdentityStore,
    LoginRefused,
    Principal,
    RateLimited,
    Role,
    UnknownName,
)
from iacloud.identity.model import check_name, check_user_name
from iacloud.state.pg_url import parse_url

CHEAP = argon2.PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
PASSWORD = "correct horse battery"
OTHER_PASSWORD = "tr0ub4dor&3-staple"
START = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "state.db")
    return request.getfixturevalue("pg_server").fresh_url()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(url: str, clock: Clock) -> Iterator[IdentityStore]:
    s = IdentityStore.open(url, clock=clock, hasher=CHEAP)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def alice(store: IdentityStore) -> IdentityStore:
    """Projects alpha and beta; alice is a member of alpha only."""
    store.create_project("alpha")
    store.create_project("beta")
    store.create_user("alice", PASSWORD)
    store.grant("alice", "alpha", "member")
    return store


def dump(url: str) -> str:
    """Everything the database holds, as text: SQLite's file and WAL bytes and its SQL dump;
    every row of every table in PostgreSQL's schema."""
    if "://" not in url:
        parts = []
        for suffix in ("", "-wal"):
            p = Path(url + suffix)
            if p.exists():
                parts.append(p.read_bytes().decode("latin-1"))
        conn = sqlite3.connect(url)
        parts.extend(conn.iterdump())
        conn.close()
        return "\n".join(parts)
    target = parse_url(url)
    with psycopg.connect(target.conninfo) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                [target.schema],
            )
        ]
        rows = [
            str(r[0])
            for t in tables
            for r in conn.execute(f'SELECT x::text FROM "{target.schema}"."{t}" x')
        ]
    return "\n".join(rows)


# -- login ---------------------------------------------------------------------------------


def test_login_gives_a_token_that_authenticates(alice: IdentityStore, clock: Clock) -> None:
    issued = alice.login("alice", PASSWORD, "alpha", "198.18.0.1")
    assert issued.token.startswith("iacs_") and len(issued.token) > 40
    assert issued.expires_at == START + alice.session_ttl
    assert issued.principal == Principal(user="alice", project="alpha", role=Role.MEMBER)
    assert alice.authenticate(issued.token) == issued.principal
    assert issued.token not in repr(issued)
    assert alice.authenticate(issued.token[:-1] + "x") is None
    assert alice.authenticate("") is None
    assert alice.authenticate("iacs_" + "A" * 10_000) is None


def test_every_refusal_says_the_same(alice: IdentityStore) -> None:
    alice.create_user("bob", PASSWORD)
    messages = set()
    for user, password, project in [
        ("alice", "wrong password", "alpha"),  # wrong password
        ("nobody", PASSWORD, "alpha"),  # unknown user
        ("bob", PASSWORD, "alpha"),  # no role in the project
        ("alice", PASSWORD, "beta"),  # no role in that project
        ("alice", PASSWORD, "nosuch"),  # unknown project
        ("Not A Name\n", PASSWORD, "alpha"),  # not even a valid name
        ("alice", PASSWORD, "../etc"),
    ]:
        with pytest.raises(LoginRefused) as exc:
            alice.login(user, password, project, f"client-{user}-{project}")
        messages.add(str(exc.value))
    assert len(messages) == 1
    assert "password" in messages.pop()  # names what may be wrong, not which


# -- rate limiting -------------------------------------------------------------------------


def test_rate_limit_kicks_in_and_recovers(alice: IdentityStore, clock: Clock) -> None:
    for _ in range(5):
        with pytest.raises(LoginRefused):
            alice.login("alice", "wrong password", "alpha", "198.18.0.1")
    # locked now: even the right password from another address is refused, unchecked
    with pytest.raises(RateLimited) as exc:
        alice.login("alice", PASSWORD, "alpha", "198.18.0.2")
    assert exc.value.retry_after == 60
    clock.advance(30)
    with pytest.raises(RateLimited) as exc:
        alice.login("alice", PASSWORD, "alpha", "198.18.0.2")
    assert exc.value.retry_after == 30
    clock.advance(31)
    assert alice.login("alice", PASSWORD, "alpha", "198.18.0.2").principal.user == "alice"
    # the success cleared the count: four more failures do not lock
    for _ in range(4):
        with pytest.raises(LoginRefused):
            alice.login("alice", "wrong password", "alpha", "198.18.0.3")
    alice.login("alice", PASSWORD, "alpha", "198.18.0.3")


def test_lockout_doubles_while_failures_go_on(alice: IdentityStore, clock: Clock) -> None:
    for _ in range(5):
        with pytest.raises(LoginRefused):
            alice.login("alice", "wrong password", "alpha", "198.18.0.1")
    clock.advance(61)
    with pytest.raises(LoginRefused):  # the sixth failure: locked for 2 minutes
        alice.login("alice", "wrong password", "alpha", "198.18.0.1")
    with pytest.raises(RateLimited) as exc:
        alice.login("alice", PASSWORD, "alpha", "198.18.0.1")
    assert exc.value.retry_after == 120
    # after 15 quiet minutes everything is forgotten
    clock.advance(16 * 60)
    for _ in range(4):
        with pytest.raises(LoginRefused):
            alice.login("alice", "wrong password", "alpha", "198.18.0.1")
    alice.login("alice", PASSWORD, "alpha", "198.18.0.1")


def test_unknown_user_names_are_limited_too(alice: IdentityStore) -> None:
    """The limit must not tell existing names from others."""
    for _ in range(5):
        with pytest.raises(LoginRefused):
            alice.login("mallory", "whatever1", "alpha", "198.18.0.1")
    with pytest.raises(RateLimited):
        alice.login("mallory", "whatever1", "alpha", "198.18.0.9")


def test_one_client_address_is_limited_across_user_names(
    alice: IdentityStore, clock: Clock
) -> None:
    limit = alice.policy.client_limit
    for i in range(limit):
        with pytest.raises(LoginRefused):
            alice.login(f"user{i}", "whatever1", "alpha", "198.18.0.66")
    with pytest.raises(RateLimited):
        alice.login("alice", PASSWORD, "alpha", "198.18.0.66")
    assert alice.login("alice", PASSWORD, "alpha", "198.18.0.7").principal.user == "alice"
    clock.advance(61)
    alice.login("alice", PASSWORD, "alpha", "198.18.0.66")


# -- expiry and revocation ------------------------------------------------------------------


def test_session_expires(alice: IdentityStore, clock: Clock) -> None:
    token = alice.login("alice", PASSWORD, "alpha", "c").token
    clock.advance(alice.session_ttl.total_seconds() - 1)
    assert alice.authenticate(token) is not None
    clock.advance(1)
    assert alice.authenticate(token) is None


def test_revoked_tokens_are_refused(alice: IdentityStore) -> None:
    one = alice.login("alice", PASSWORD, "alpha", "c").token
    two = alice.login("alice", PASSWORD, "alpha", "c").token
    assert alice.revoke(one) is True
    assert alice.authenticate(one) is None
    assert alice.authenticate(two) is not None
    assert alice.revoke(one) is False
    # a new password ends every session
    alice.set_password("alice", OTHER_PASSWORD)
    assert alice.authenticate(two) is None
    with pytest.raises(LoginRefused):
        alice.login("alice", PASSWORD, "alpha", "c")
    three = alice.login("alice", OTHER_PASSWORD, "alpha", "c").token
    # losing the role ends access at once
    alice.revoke_role("alice", "alpha")
    assert alice.authenticate(three) is None
    alice.grant("alice", "alpha", "admin")
    assert alice.authenticate(three) is None  # its token was removed with the role
    four = alice.login("alice", OTHER_PASSWORD, "alpha", "c").token
    alice.delete_user("alice")
    assert alice.authenticate(four) is None


def test_role_changes_apply_to_live_tokens(alice: IdentityStore) -> None:
    token = alice.login("alice", PASSWORD, "alpha", "c").token
    alice.grant("alice", "alpha", "reader")
    assert alice.authenticate(token).role is Role.READER  # type: ignore[union-attr]
    alice.grant("alice", "alpha", "admin")
    assert alice.authenticate(token).role is Role.ADMIN  # type: ignore[union-attr]


def test_issue_token_without_password(alice: IdentityStore, clock: Clock) -> None:
    issued = alice.issue_token("alice", "alpha", timedelta(minutes=5))
    assert alice.authenticate(issued.token) == issued.principal
    clock.advance(300)
    assert alice.authenticate(issued.token) is None
    with pytest.raises(UnknownName):
        alice.issue_token("alice", "beta")


# -- API keys -------------------------------------------------------------------------------


def test_api_keys(alice: IdentityStore, clock: Clock) -> None:
    key = alice.create_api_key("alice", "alpha", "reader", name="ci-read")
    assert key.startswith("iack_")
    assert alice.authenticate(key) == Principal(user="alice", project="alpha", role=Role.READER)
    full = alice.create_api_key("alice", "alpha", name="ci-full", expires=timedelta(days=1))
    assert alice.authenticate(full).role is Role.MEMBER  # type: ignore[union-attr]
    keys = {k.name: k for k in alice.list_api_keys("alpha")}
    assert set(keys) == {"ci-read", "ci-full"}
    assert keys["ci-read"].role is Role.READER and keys["ci-full"].role is None
    assert keys["ci-full"].expires_at == START + timedelta(days=1)
    assert alice.list_api_keys("beta") == []
    # a key never grants more than its user has
    with pytest.raises(IdentityError, match="cannot be admin"):
        alice.create_api_key("alice", "alpha", "admin", name="ci-admin")
    alice.grant("alice", "alpha", "reader")
    assert alice.authenticate(full).role is Role.READER  # type: ignore[union-attr]
    with pytest.raises(AlreadyExists):
        alice.create_api_key("alice", "alpha", name="ci-read")
    with pytest.raises(UnknownName):
        alice.create_api_key("alice", "beta", name="ci-beta")
    with pytest.raises(UserError, match="past"):
        alice.create_api_key("alice", "alpha", name="old", expires=START - timedelta(1))
    clock.advance(86400)
    assert alice.authenticate(full) is None  # expired
    assert alice.authenticate(key) is not None
    alice.revoke_api_key("ci-read")
    assert alice.authenticate(key) is None
    with pytest.raises(UnknownName):
        alice.revoke_api_key("ci-read")
    assert alice.revoke(full) is True  # by value, like a session


# -- roles and projects ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "read", "change", "admin"),
    [("reader", True, False, False), ("member", True, True, False), ("admin", True, True, True)],
)
def test_role_checks(role: str, read: bool, change: bool, admin: bool) -> None:
    p = Principal(user="u", project="p", role=Role(role))
    assert (p.may_read(), p.may_change(), p.is_admin()) == (read, change, admin)
    with pytest.raises(Exception, match="frozen"):
        p.role = Role.ADMIN  # type: ignore[misc]


def test_roles_are_ordered() -> None:
    assert Role.READER < Role.MEMBER < Role.ADMIN
    assert max(Role) is Role.ADMIN and min(Role.ADMIN, Role.READER) is Role.READER
    assert sorted(["admin", "reader", "member"], key=Role) == ["reader", "member", "admin"]
    with pytest.raises(UserError, match="reader, member, admin"):
        Role.parse("owner")


def test_project_isolation(alice: IdentityStore) -> None:
    """A principal of alpha gets nothing in beta: no login, no key, and its token names alpha."""
    alice.create_user("bob", OTHER_PASSWORD)
    alice.grant("bob", "beta", "admin")
    token = alice.login("alice", PASSWORD, "alpha", "c").token
    principal = alice.authenticate(token)
    assert principal is not None and principal.project == "alpha"
    assert principal.in_project("alpha") and not principal.in_project("beta")
    with pytest.raises(LoginRefused):
        alice.login("alice", PASSWORD, "beta", "c")
    with pytest.raises(UnknownName):
        alice.create_api_key("alice", "beta", name="sneak")
    bob = alice.authenticate(alice.login("bob", OTHER_PASSWORD, "beta", "c").token)
    assert bob == Principal(user="bob", project="beta", role=Role.ADMIN)
    # audit events are per project
    alice.audit(principal, "stack.list", "stacks", "c", "success")
    assert {e.project for e in alice.audit_events("beta")} == {"beta"}
    assert not any(e.action == "stack.list" for e in alice.audit_events("beta"))
    # deleting a project takes its grants and tokens with it
    alice.delete_project("alpha")
    assert alice.authenticate(token) is None
    assert [r.project for r in alice.list_roles(user="alice")] == []


def test_names_and_duplicates(store: IdentityStore) -> None:
    store.create_project("alpha")
    with pytest.raises(AlreadyExists):
        store.create_project("alpha")
    store.create_user("alice", PASSWORD)
    with pytest.raises(AlreadyExists):
        store.create_user("alice", PASSWORD)
    for bad in ("Alpha", "a b", "../x", "x" * 64, "", "alpha\n"):
        with pytest.raises(UserError, match="not valid"):
            store.create_project(bad)
    with pytest.raises(UserError, match="8 to 1024"):
        store.create_user("bob", "short")
    with pytest.raises(UnknownName):
        store.grant("nobody", "alpha", "member")
    with pytest.raises(UnknownName):
        store.delete_project("nosuch")
    with pytest.raises(UnknownName):
        store.revoke_role("alice", "alpha")
    assert [p.name for p in store.list_projects()] == ["alpha"]
    store.grant("alice", "alpha", "admin")
    assert store.list_users()[0].roles == {"alpha": Role.ADMIN}


# -- audit and secrets ----------------------------------------------------------------------


def test_every_change_is_audited_and_no_secret_is_stored(
    alice: IdentityStore, url: str, clock: Clock
) -> None:
    errors: list[str] = []
    issued = alice.login("alice", PASSWORD, "alpha", "198.18.0.1")
    key = alice.create_api_key("alice", "alpha", name="ci")
    admin_token = alice.issue_token("alice", "alpha").token
    for attempt in (OTHER_PASSWORD, PASSWORD + "x"):
        try:
            alice.login("alice", attempt, "alpha", "198.18.0.1")
        except IacloudError as exc:
            errors.append(str(exc))
    try:  # a password typed into the name field
        alice.login(OTHER_PASSWORD.replace("&", ""), PASSWORD, "alpha", "198.18.0.1")
    except IacloudError as exc:
        errors.append(str(exc))
    try:
        alice.create_user("eve", "short")
    except IacloudError as exc:
        errors.append(str(exc))
    assert alice.revoke(issued.token)
    alice.set_password("alice", OTHER_PASSWORD)
    alice.revoke_api_key("ci")
    alice.revoke_role("alice", "alpha")
    alice.delete_user("alice")
    alice.delete_project("beta")

    events = list(reversed(alice.audit_events(limit=1000)))
    seen = [(e.action, e.outcome) for e in events]
    assert seen == [
        ("project.create", "success"),
        ("project.create", "success"),
        ("user.create", "success"),
        ("role.grant", "success"),
        ("login", "success"),
        ("apikey.create", "success"),
        ("token.issue", "success"),
        ("login", "refused"),
        ("login", "refused"),
        ("login", "refused"),
        ("token.revoke", "success"),
        ("user.password", "success"),
        ("apikey.revoke", "success"),
        ("role.revoke", "success"),
        ("user.delete", "success"),
        ("project.delete", "success"),
    ]
    assert all(e.time == START and e.client for e in events)
    assert events[9].target == "user:(unknown)"  # the typed "name" is not recorded
    assert events[0].actor and events[0].actor.startswith("local:")
    assert events[4].actor == "alice" and events[4].client == "198.18.0.1"

    text = dump(url)
    for secret in (PASSWORD, OTHER_PASSWORD, OTHER_PASSWORD.replace("&", ""), issued.token,
                   key, admin_token):  # fmt: skip
        assert secret not in text
        assert not any(secret in e for e in errors)


def test_only_token_hashes_are_stored(alice: IdentityStore, url: str) -> None:
    token = alice.login("alice", PASSWORD, "alpha", "c").token
    key = alice.create_api_key("alice", "alpha", name="ci")
    text = dump(url)
    for secret in (token, key):
        assert secret not in text and secret[5:] not in text  # not even without its prefix
        assert hashlib.sha256(secret.encode()).hexdigest() in text
    assert "$argon2id$" in text and PASSWORD not in text


def test_audit_paging_and_validation(alice: IdentityStore) -> None:
    p = Principal(user="alice", project="alpha", role=Role.MEMBER)
    for i in range(7):
        alice.audit(p, "stack.show", f"stack:web{i}", "198.18.0.1", "success")
    first = alice.audit_events("alpha", limit=3)
    second = alice.audit_events("alpha", limit=3, marker=first[-1].id)
    assert [e.target for e in first + second] == [f"stack:web{i}" for i in (6, 5, 4, 3, 2, 1)]
    alice.audit(None, "stack.show", "stack:x\nforged line", "198.18.0.1", "denied")
    last = alice.audit_events(limit=1)[0]
    assert last.actor is None and last.project is None and "\n" not in last.target
    with pytest.raises(UserError):
        alice.audit(p, "Bad Action", "x", "c", "success")
    with pytest.raises(UserError):
        alice.audit_events(limit=0)


# -- schema ---------------------------------------------------------------------------------


def test_added_to_an_existing_state_database(url: str) -> None:
    """Identity tables join a state store that already holds a stack; the state stays intact
    and opening again changes nothing."""
    from iacloud.state import open_backend

    backend = open_backend(url, Path("."))
    snap = backend.snapshot("web")
    serial = backend.begin_version("web", "apply", snap.stack_id, snap.lineage)
    backend.finish_version("web", serial, "complete", {"ip": "198.18.0.5"})
    backend.close()
    for _ in range(2):
        with IdentityStore.open(url, hasher=CHEAP) as store:
            if not store.list_projects():
                store.create_project("alpha")
    backend = open_backend(url, Path("."))
    assert backend.snapshot("web").outputs == {"ip": "198.18.0.5"}
    assert backend.stacks() == ["web"]
    backend.close()
    with IdentityStore.open(url, hasher=CHEAP) as store:
        assert [p.name for p in store.list_projects()] == ["alpha"]


def test_newer_identity_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    IdentityStore.open(str(path), hasher=CHEAP).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'identity_schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(IdentityError, match="newer iacloud"):
        IdentityStore.open(str(path))


def test_a_foreign_file_is_not_touched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE mine (x)")
    conn.commit()
    conn.close()
    with pytest.raises(IacloudError, match="not an iacloud state database"):
        IdentityStore.open(str(path))
    tables = sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("mine",)]


def test_sqlite_store_is_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "state.db"
    IdentityStore.open(f"sqlite:///{path}").close()
    assert path.stat().st_mode & 0o077 == 0


# -- several processes on PostgreSQL ---------------------------------------------------------


def test_two_servers_share_the_rate_limit(pg_server) -> None:  # type: ignore[no-untyped-def]
    url = pg_server.fresh_url()
    clock = Clock()
    one = IdentityStore.open(url, clock=clock, hasher=CHEAP)
    two = IdentityStore.open(url, clock=clock, hasher=CHEAP)
    try:
        one.create_project("alpha")
        one.create_user("alice", PASSWORD)
        one.grant("alice", "alpha", "member")
        for store in (one, two, one, two, one):
            with pytest.raises(LoginRefused):
                store.login("alice", "wrong password", "alpha", "198.18.0.1")
        with pytest.raises(RateLimited):
            two.login("alice", PASSWORD, "alpha", "198.18.0.1")
        clock.advance(61)
        token = two.login("alice", PASSWORD, "alpha", "198.18.0.1").token
        assert one.authenticate(token) is not None  # a session is valid on every server
        two.revoke(token)
        assert one.authenticate(token) is None
    finally:
        one.close()
        two.close()


def test_parallel_attempts_cannot_exceed_the_limit(pg_server) -> None:  # type: ignore[no-untyped-def]
    """Attempts are charged before the (slow) password check: ten at once from ten server
    connections get at most five checks, the rest are rate-limited."""
    url = pg_server.fresh_url()
    clock = Clock()
    slow = argon2.PasswordHasher(time_cost=2, memory_cost=4096, parallelism=1)
    with IdentityStore.open(url, clock=clock, hasher=slow) as admin:
        admin.create_project("alpha")
        admin.create_user("alice", PASSWORD)
        admin.grant("alice", "alpha", "member")
    stores = [IdentityStore.open(url, clock=clock, hasher=slow) for _ in range(10)]
    outcomes: list[str] = []
    barrier = threading.Barrier(len(stores))

    def attempt(store: IdentityStore) -> None:
        barrier.wait()
        try:
            store.login("alice", "wrong password", "alpha", "198.18.0.1")
        except LoginRefused:
            outcomes.append("refused")
        except RateLimited:
            outcomes.append("limited")

    threads = [threading.Thread(target=attempt, args=(s,)) for s in stores]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for s in stores:
            s.close()
    assert sorted(outcomes) == ["limited"] * 5 + ["refused"] * 5


# -- names (property tests) -------------------------------------------------------------------

_LOWER, _DIGITS = "abcdefghijklmnopqrstuvwxyz", "0123456789"
_nearly = st.one_of(
    st.text(max_size=80),
    st.from_regex(r"[a-z][a-z0-9_.@-]{0,70}", fullmatch=True),
    st.builds(
        lambda a, b: a + b,
        st.from_regex(r"[a-z][a-z0-9_-]{0,62}", fullmatch=True),
        st.sampled_from(["\n", "\x00", " ", "/", "..", "A", "é", "\u202e"]),
    ),
)


def _expected(value: str, rest: str, limit: int) -> bool:
    return 1 <= len(value) <= limit and value[0] in _LOWER and all(c in rest for c in value)


@settings(max_examples=300, deadline=None)
@given(_nearly)
def test_name_rules(value: str) -> None:
    """Accepted exactly when the rule says so; a refusal's message is one printable line."""
    cases = [
        (lambda v: check_name("project", v), _LOWER + _DIGITS + "_-", 63),
        (check_user_name, _LOWER + _DIGITS + "._@-", 64),
    ]
    for check, rest, limit in cases:
        try:
            assert check(value) == value
            accepted = True
        except UserError as exc:
            accepted = False
            text = str(exc)
            assert "\n" not in text and "\u202e" not in text and "\x00" not in text
            assert len(text) < 300
        assert accepted == _expected(value, rest, limit), value


def test_old_password_hashes_are_upgraded_at_login(url: str) -> None:
    with IdentityStore.open(url, hasher=CHEAP) as store:
        store.create_project("alpha")
        store.create_user("alice", PASSWORD)
        store.grant("alice", "alpha", "reader")
    stronger = argon2.PasswordHasher(time_cost=2, memory_cost=128, parallelism=1)
    with IdentityStore.open(url, hasher=stronger) as store:
        store.login("alice", PASSWORD, "alpha", "c")
    sql = "SELECT password_hash FROM iacloud_identity_users"
    if "://" in url:
        target = parse_url(url)
        with psycopg.connect(target.conninfo) as conn:
            (stored,) = conn.execute(
                sql.replace("iacloud", f'"{target.schema}".iacloud')
            ).fetchone()
    else:
        (stored,) = sqlite3.connect(url).execute(sql).fetchone()
    assert stored.startswith("$argon2id$v=19$m=128,t=2,p=1$")


def test_a_lost_postgresql_connection_is_replaced(pg_server) -> None:  # type: ignore[no-untyped-def]
    """A long-running server survives a database restart or a killed session: the request that
    meets the dead connection fails with a message, the next one connects again."""
    url = pg_server.fresh_url()
    with IdentityStore.open(url, hasher=CHEAP) as store:
        store.create_project("alpha")
        with psycopg.connect(parse_url(url).conninfo, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'iacloud-identity'"
            )
        with pytest.raises(IdentityError, match="identity store in 'postgresql://"):
            store.list_projects()
        assert [p.name for p in store.list_projects()] == ["alpha"]
