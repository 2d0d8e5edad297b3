"""Two `iacloud serve` processes on one PostgreSQL state share the jobs (SELECT ... FOR UPDATE
SKIP LOCKED), see each other's operations, pass cancel requests, and take over the
operations of one that was killed."""

from __future__ import annotations

import time

from api_server import stack_text, wait_op


def test_two_servers_share_the_jobs(serve, pg_server) -> None:
    url = pg_server.fresh_url()
    a, b = serve(url, workers=2), serve(url, workers=2)
    ca, cb = a.client(), b.client()
    locations = []
    for i in range(8):
        client = ca if i % 2 == 0 else cb
        r = client.post("/v1/pa/stacks", json={"stack_name": f"s{i}",
                        "template": stack_text(sleep=0.5)})  # fmt: skip
        assert r.status_code == 202, r.text
        locations.append(r.headers["Location"])
    ops = [wait_op(cb, loc) for loc in locations]  # each server sees every operation
    assert all(op["status"] == "COMPLETE" for op in ops), ops
    servers = {op["worker"].rsplit(":", 1)[0] for op in ops}
    assert len(servers) == 2, servers  # both processes ran some
    listed = ca.get("/v1/pa/stacks").json()["stacks"]
    assert [s["status"] for s in listed] == ["CREATE_COMPLETE"] * 8

    # a cancel sent to the server that is not running the operation still stops it
    r = ca.post("/v1/pa/stacks", json={"stack_name": "long",
                "template": stack_text(sleep=1.0, count=4, chain=True)})  # fmt: skip
    location = r.headers["Location"]
    deadline = time.monotonic() + 20
    while (op := ca.get(location).json())["progress"].get("r0", {}).get("status") != "IN_PROGRESS":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    runner_pid = int(op["worker"].split(":")[1])
    other = cb if runner_pid == a.proc.pid else ca
    assert other.post(f"{location}/cancel").status_code == 202
    done = wait_op(ca, location)
    assert done["status"] == "CANCELLED"
    assert done["result"]["steps"]["not started"] == 3


def test_a_killed_server_s_operation_is_failed_by_the_other(serve, pg_server) -> None:
    url = pg_server.fresh_url()
    a = serve(url, workers=1)
    ca = a.client()
    r = ca.post(
        "/v1/pa/stacks", json={"stack_name": "k", "template": stack_text(sleep=60, count=1)}
    )
    location = r.headers["Location"]
    deadline = time.monotonic() + 20
    while ca.get(location).json()["status"] != "IN_PROGRESS":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    b = serve(url, workers=1)  # running before the kill: it must notice a stopped heartbeat
    a.stop(kill=True)
    cb = b.client()
    deadline = time.monotonic() + 30  # the test servers count a heartbeat stale after 6 s
    while (op := cb.get(location).json())["status"] == "IN_PROGRESS":
        assert time.monotonic() < deadline, op
        time.sleep(0.2)
    assert op["status"] == "FAILED"
    assert op["error"]["pending"] == [{"action": "create", "address": "r0"}]
    # the advisory lock died with the killed server's session: the next run goes ahead
    fixed = cb.put("/v1/pa/stacks/k", json={"template": stack_text(count=1)})
    assert wait_op(cb, fixed.headers["Location"])["status"] == "COMPLETE"
