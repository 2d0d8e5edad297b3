"""`iacloud serve`'s own options: checked before anything starts."""

from __future__ import annotations


def test_serve_refuses_a_bad_listen_address(run) -> None:
    for bad in ("nowhere", "127.0.0.1:0", "127.0.0.1:99999", "host:80;rm"):
        out = run("serve", "--listen", bad, code=1)
        assert "--listen expects HOST:PORT" in out
