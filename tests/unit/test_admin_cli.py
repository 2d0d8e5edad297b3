"""`iacloud admin` in-process against SQLite and PostgreSQL: every command, its JSON, its exit
codes, and that secrets are read from stdin or a prompt and printed only where asked for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iacloud.identity import IdentityStore, Principal, Role

PASSWORD = "n0t-in-any-output"


@pytest.fixture(params=["sqlite", "postgresql"])
def state(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = (
        str(tmp_path / "state.db")
        if request.param == "sqlite"
        else request.getfixturevalue("pg_server").fresh_url()
    )
    monkeypatch.setenv("IACLOUD_STATE", url)
    return url


def test_admin_workflow(run, state: str) -> None:  # type: ignore[no-untyped-def]
    outputs = [
        run("admin", "project", "create", "alpha"),
        run("admin", "project", "create", "beta"),
        run("admin", "user", "create", "alice", "--password-stdin", input=PASSWORD + "\n"),
        # the prompt asks twice
        run("admin", "user", "create", "bob", input=f"{PASSWORD}\n{PASSWORD}\n"),
        run("admin", "role", "grant", "alice", "alpha", "member"),
        run("admin", "role", "grant", "bob", "beta", "admin"),
    ]
    users = json.loads(run("admin", "user", "list", "--json"))
    assert [(u["name"], u["roles"]) for u in users] == [
        ("alice", {"alpha": "member"}),
        ("bob", {"beta": "admin"}),
    ]
    assert "alice\talpha:member" in run("admin", "user", "list")
    assert [p["name"] for p in json.loads(run("admin", "project", "list", "--json"))] == [
        "alpha",
        "beta",
    ]
    grants = json.loads(run("admin", "role", "list", "--project", "beta", "--json"))
    assert grants == [{"user": "bob", "project": "beta", "role": "admin"}]

    token = run("admin", "token", "issue", "alice", "--project", "alpha").splitlines()[0]
    key = json.loads(
        run(
            "admin",
            "apikey",
            "create",
            "ci",
            "--user",
            "alice",
            "--project",
            "alpha",
            "--role",
            "reader",
            "--expires-in",
            "90d",
            "--json",
        )
    )["key"]
    with IdentityStore.open(state) as store:
        assert store.authenticate(token) == Principal(
            user="alice", project="alpha", role=Role.MEMBER
        )
        assert store.authenticate(key) == Principal(user="alice", project="alpha", role=Role.READER)
        assert store.login("bob", PASSWORD, "beta", "198.18.0.1").principal.role is Role.ADMIN
    keys = json.loads(run("admin", "apikey", "list", "--json"))
    assert [(k["name"], k["role"]) for k in keys] == [("ci", "reader")]
    assert key not in run("admin", "apikey", "list")

    outputs.append(run("admin", "token", "revoke", "--token-stdin", input=token + "\n"))
    outputs.append(run("admin", "apikey", "revoke", "ci"))
    outputs.append(run("admin", "user", "passwd", "bob", "--password-stdin", input="an0ther-one\n"))
    outputs.append(run("admin", "role", "revoke", "alice", "alpha"))
    outputs.append(run("admin", "user", "delete", "alice"))
    outputs.append(run("admin", "project", "delete", "alpha"))
    with IdentityStore.open(state) as store:
        assert store.authenticate(token) is None and store.authenticate(key) is None

    events = json.loads(run("admin", "audit", "--json"))
    assert [e["action"] for e in reversed(events)] == [
        "project.create", "project.create", "user.create", "user.create", "role.grant",
        "role.grant", "token.issue", "apikey.create", "login", "token.revoke", "apikey.revoke",
        "user.password", "role.revoke", "user.delete", "project.delete",
    ]  # fmt: skip
    beta = json.loads(run("admin", "audit", "--project", "beta", "--json"))
    assert {e["project"] for e in beta} == {"beta"}
    page = json.loads(run("admin", "audit", "--limit", "2", "--marker", str(events[4]["id"]),
                          "--json"))  # fmt: skip
    assert [e["id"] for e in page] == [events[5]["id"], events[6]["id"]]
    text = run("admin", "audit")
    outputs.append(text)
    assert "local:" in text and "token.revoke" in text
    for out in outputs:
        assert PASSWORD not in out and "an0ther-one" not in out
        assert token not in out and key not in out


def test_admin_errors(run, state: str) -> None:  # type: ignore[no-untyped-def]
    run("admin", "project", "create", "alpha")
    out = run("admin", "project", "create", "alpha", code=1)
    assert "Error: project 'alpha' exists already" in out
    assert "not valid" in run("admin", "project", "create", "../etc", code=1)
    assert "does not exist" in run("admin", "project", "delete", "nosuch", code=1)
    out = run("admin", "user", "create", "eve", "--password-stdin", input="short\n", code=1)
    assert "8 to 1024 characters" in out and "short" not in out.split("Error:", 1)[1]
    assert "reader, member, admin" in run("admin", "role", "grant", "x", "alpha", "owner", code=1)
    assert "does not exist" in run("admin", "role", "grant", "nobody", "alpha", "reader", code=1)
    assert "no role" in run("admin", "token", "issue", "nobody", "--project", "alpha", code=1)
    out = run("admin", "token", "revoke", "--token-stdin", input="iacs_nonsense\n", code=1)
    assert "no such token" in out
    assert "not a duration" in run(
        "admin", "token", "issue", "x", "--project", "alpha", "--ttl", "forever", code=1
    )
    # a password is never an argument
    run("admin", "user", "create", "eve", "--password", PASSWORD, code=2)


def test_admin_needs_a_state_url(run, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("IACLOUD_STATE", raising=False)
    assert "needs a state URL" in run("admin", "project", "list", code=1)
    assert "unknown scheme" in run("admin", "project", "list", "--state", "ftp://x", code=1)
