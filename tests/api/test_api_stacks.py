"""The HTTP API through a real server process (uvicorn on 127.0.0.1) and the fake provider:
202 + polling, long poll, the event stream, cancel, ETags, tokens and projects, diagnostics."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from api_server import stack_text, wait_op


def _create(c: httpx.Client, name: str = "web", **body: object) -> httpx.Response:
    payload = {"stack_name": name, "template": stack_text(), **body}
    return c.post("/v1/pa/stacks", json=payload)


def test_create_answers_202_then_polls_to_create_complete(serve) -> None:
    server = serve()
    c = server.client()
    r = _create(c, parameters={})
    assert r.status_code == 202, r.text
    location = r.headers["Location"]
    op = r.json()["operation"]
    assert location == f"/v1/pa/operations/{op['id']}"
    assert op["action"] == "CREATE" and op["status"] in ("QUEUED", "IN_PROGRESS")
    assert c.get("/v1/pa/stacks/web").json()["status"] == "CREATE_IN_PROGRESS" or True
    done = wait_op(c, location)
    assert done["status"] == "COMPLETE", done
    assert set(done["progress"]) == {"r0", "r1"}
    assert all(p["status"] == "COMPLETE" for p in done["progress"].values())
    assert done["result"]["steps"] == {"complete": 2}

    stack = c.get("/v1/pa/stacks/web")
    assert stack.status_code == 200
    body = stack.json()
    assert body["status"] == "CREATE_COMPLETE" and body["serial"] == 1
    assert stack.headers["ETag"] == body["etag"] == '"1-1"'
    resources = c.get("/v1/pa/stacks/web/resources").json()
    assert [r["address"] for r in resources["resources"]] == ["r0", "r1"]
    r0 = resources["resources"][0]
    assert c.get("/v1/pa/stacks/web/outputs").json() == {"outputs": {"first": r0["id"]}}
    assert body["outputs"] == {"first": r0["id"]}
    listed = c.get("/v1/pa/stacks").json()["stacks"]
    assert [(s["name"], s["status"]) for s in listed] == [("web", "CREATE_COMPLETE")]
    ops = c.get("/v1/pa/stacks/web/operations").json()["operations"]
    assert [o["id"] for o in ops] == [op["id"]]
    assert c.get("/v1/pa/stacks/web/template").json()["template"] == stack_text()


def test_events_filter_and_page_as_heat(serve) -> None:
    server = serve()
    c = server.client()
    wait_op(c, _create(c).headers["Location"])
    events = c.get("/v1/pa/stacks/web/events").json()["events"]
    assert [(e["resource_name"], e["event"]) for e in events] == [
        ("r0", "CREATE_IN_PROGRESS"),
        ("r1", "CREATE_IN_PROGRESS"),
        ("r0", "CREATE_COMPLETE"),
        ("r1", "CREATE_COMPLETE"),
    ] or sorted(e["event"] for e in events) == ["CREATE_COMPLETE"] * 2 + ["CREATE_IN_PROGRESS"] * 2
    assert [e["id"] for e in events] == [1, 2, 3, 4]
    done = c.get("/v1/pa/stacks/web/events", params={"resource_status": "COMPLETE"}).json()
    assert {e["resource_status"] for e in done["events"]} == {"COMPLETE"}
    assert len(done["events"]) == 2
    only_r1 = c.get("/v1/pa/stacks/web/events", params={"resource_name": "r1"}).json()["events"]
    assert {e["resource_name"] for e in only_r1} == {"r1"} and len(only_r1) == 2
    page1 = c.get("/v1/pa/stacks/web/events", params={"limit": 3}).json()["events"]
    page2 = c.get("/v1/pa/stacks/web/events", params={"limit": 3, "marker": page1[-1]["id"]})
    assert [e["id"] for e in page1] == [1, 2, 3]
    assert [e["id"] for e in page2.json()["events"]] == [4]
    desc = c.get("/v1/pa/stacks/web/events", params={"sort_dir": "desc", "limit": 2}).json()
    assert [e["id"] for e in desc["events"]] == [4, 3]
    assert c.get("/v1/pa/stacks/web/events", params={"limit": 0}).status_code == 422


def test_long_poll_waits_until_done_or_timeout(serve) -> None:
    server = serve()
    c = server.client()
    body = {"stack_name": "slow", "template": stack_text(sleep=1.5, chain=True)}
    location = c.post("/v1/pa/stacks", json=body).headers["Location"]
    t0 = time.monotonic()
    early = c.get(f"{location}/wait", params={"timeout": 0.5})
    assert early.status_code == 200
    assert early.json()["status"] in ("QUEUED", "IN_PROGRESS")
    assert 0.4 < time.monotonic() - t0 < 2.0
    final = c.get(f"{location}/wait", params={"timeout": 30}).json()
    assert final["status"] == "COMPLETE"
    took = time.monotonic() - t0
    assert 2.5 < took < 10, took  # two chained steps of 1.5 s, answered when done
    # a finished operation answers at once
    t1 = time.monotonic()
    assert c.get(f"{location}/wait", params={"timeout": 30}).json()["status"] == "COMPLETE"
    assert time.monotonic() - t1 < 1.0


def _sse(c: httpx.Client, url: str, headers: dict[str, str] | None = None) -> list[dict]:
    events, current = [], {}
    with c.stream("GET", url, headers=headers or {}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line:
                if "data" in current:
                    events.append(current)
                current = {}
                continue
            key, _, value = line.partition(":")
            if key in ("id", "event", "data"):
                current[key] = value.strip()
    return [{"id": int(e["id"]), "event": e["event"], **json.loads(e["data"])} for e in events]


def test_event_stream_of_an_operation(serve) -> None:
    server = serve()
    c = server.client()
    body = {"stack_name": "s", "template": stack_text(sleep=0.3, chain=True)}
    location = c.post("/v1/pa/stacks", json=body).headers["Location"]
    events = _sse(c, f"{location}/events")  # ends when the operation ends
    kinds = [(e["event"], e.get("address"), e["status"]) for e in events]
    assert kinds[0] == ("operation", None, "QUEUED")
    assert ("operation", None, "IN_PROGRESS") in kinds
    assert kinds.index(("resource", "r0", "IN_PROGRESS")) < kinds.index(
        ("resource", "r0", "COMPLETE")
    )
    assert kinds.index(("resource", "r0", "COMPLETE")) < kinds.index(
        ("resource", "r1", "IN_PROGRESS")
    )
    assert kinds[-1] == ("operation", None, "COMPLETE")
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    # a client that lost the stream resumes after the last id it saw
    rest = _sse(c, f"{location}/events", headers={"Last-Event-ID": "3"})
    assert [e["id"] for e in rest] == [e["id"] for e in events[3:]]


def test_cancel_stops_scheduling_like_ctrl_c(serve, data_dir: Path) -> None:
    server = serve()
    c = server.client()
    r = c.post("/v1/pa/stacks", json={"stack_name": "chain",
               "template": stack_text(sleep=1.0, count=4, chain=True)})  # fmt: skip
    location = r.headers["Location"]
    deadline = time.monotonic() + 20
    while c.get(location).json()["progress"].get("r0", {}).get("status") != "IN_PROGRESS":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancelled = c.post(f"{location}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["cancel_requested"]
    op = wait_op(c, location)
    assert op["status"] == "CANCELLED", op
    assert op["progress"]["r0"]["status"] == "COMPLETE"  # the running step finished, recorded
    assert "r1" not in op["progress"]  # nothing new started
    assert op["result"]["steps"]["not started"] == 3
    resources = c.get("/v1/pa/stacks/chain/resources").json()
    assert [r["address"] for r in resources["resources"]] == ["r0"]
    assert resources["pending"] == []
    assert c.get("/v1/pa/stacks/chain").json()["status"] == "CREATE_CANCELLED"
    # cancelling a finished operation changes nothing
    assert c.post(f"{location}/cancel").json()["status"] == "CANCELLED"
    # the next update finishes the job
    upd = c.patch("/v1/pa/stacks/chain", json={})
    assert upd.status_code == 202
    done = wait_op(c, upd.headers["Location"])
    assert done["status"] == "COMPLETE" and set(done["progress"]) == {"r1", "r2", "r3"}


def test_cancel_of_a_queued_operation(serve) -> None:
    server = serve()
    c = server.client()
    first = c.post("/v1/pa/stacks", json={"stack_name": "q", "template": stack_text(sleep=1.0)})
    second = c.patch("/v1/pa/stacks/q", json={"parameters": {}})
    assert second.status_code == 202
    op = c.post(f"{second.headers['Location']}/cancel").json()
    assert op["status"] == "CANCELLED" and op["started_at"] is None
    assert wait_op(c, first.headers["Location"])["status"] == "COMPLETE"


def test_stale_if_match_gets_412(serve) -> None:
    server = serve()
    c = server.client()
    wait_op(c, _create(c).headers["Location"])
    etag = c.get("/v1/pa/stacks/web").headers["ETag"]
    changed = stack_text(count=3)
    r = c.put("/v1/pa/stacks/web", json={"template": changed}, headers={"If-Match": etag})
    assert r.status_code == 202, r.text
    assert wait_op(c, r.headers["Location"])["status"] == "COMPLETE"
    stale = c.put("/v1/pa/stacks/web", json={"template": stack_text()}, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert "changed since it was read" in stale.json()["error"]["message"]
    assert c.delete("/v1/pa/stacks/web", headers={"If-Match": etag}).status_code == 412
    fresh = c.get("/v1/pa/stacks/web")
    assert fresh.json()["serial"] == 2 and fresh.json()["status"] == "UPDATE_COMPLETE"
    assert len(c.get("/v1/pa/stacks/web/resources").json()["resources"]) == 3
    # PUT needs a template
    assert c.put("/v1/pa/stacks/web", json={}).status_code == 400


def test_tokens_roles_and_projects(serve, tokens) -> None:
    server = serve()
    alice = server.client()
    location = _create(alice).headers["Location"]
    wait_op(alice, location)
    time.sleep(max(0.0, tokens.expired_after - time.monotonic()))
    for client in (server.client(None), server.client("nonsense"), server.client("tok-old")):
        r = client.get("/v1/pa/stacks")
        assert r.status_code == 401, r.text
        assert r.headers["WWW-Authenticate"] == "Bearer"
    assert server.client("tok-alice", bearer=True).get("/v1/pa/stacks").status_code == 200
    # another project's stacks and operations do not exist for bob
    bob = server.client("tok-bob")
    assert bob.get("/v1/pa/stacks/web").status_code == 404
    assert bob.get("/v1/pa/stacks").status_code == 404
    assert bob.get(location).status_code == 404
    assert bob.get(location.replace("/pa/", "/pb/")).status_code == 404
    assert bob.delete("/v1/pa/stacks/web").status_code == 404
    assert bob.get("/v1/pb/stacks").json() == {"stacks": []}
    # a reader reads and changes nothing
    rita = server.client("tok-rita")
    assert rita.get("/v1/pa/stacks/web").status_code == 200
    assert rita.delete("/v1/pa/stacks/web").status_code == 403
    assert _create(rita, "other").status_code == 403
    # a revoked token is refused from then on
    tokens.revoke("tok-alice")
    assert alice.get("/v1/pa/stacks").status_code == 401
    audit = tokens.audit()
    assert ["alice", "stack.create", "pa/web", "127.0.0.1", "success"] in audit
    assert ["rita", "api.delete", "/v1/pa/stacks/web", "127.0.0.1", "denied"] in audit


def test_bad_input_gets_400_with_diagnostics_and_changes_nothing(serve) -> None:
    server = serve()
    c = server.client()
    bad = stack_text().replace('type = "fake_thing"\nsize = 2', 'type = "fake_thing"\nsise = 2')
    r = _create(c, template=bad)
    assert r.status_code == 400, r.text
    diag = r.json()["error"]["diagnostics"]
    assert diag[0]["file"] == "template" and diag[0]["address"].endswith("r1")
    assert diag[0]["field"] == "sise" and "size" in (diag[0]["hint"] or "")
    assert "Traceback" not in r.text and "/serve/" not in r.text
    broken = _create(c, template="version = 1\n[resources.x\n")
    assert (
        broken.status_code == 400 and broken.json()["error"]["diagnostics"][0]["file"] == "template"
    )
    assert _create(c, template="version = 1\n", parameters={"nope": 1}).status_code == 400
    assert _create(c, name="../etc").status_code == 400
    assert c.post("/v1/pa/stacks", json={"stack_name": "x"}).status_code == 422
    assert (
        c.post("/v1/pa/stacks", json={"stack_name": "x", "template": "", "extra": 1}).status_code
        == 422
    )
    assert c.post("/v1/pa/stacks", content=b"{not json", headers={
        "content-type": "application/json"}).status_code == 422  # fmt: skip
    big = c.post("/v1/pa/stacks", json={"stack_name": "x", "template": "#" * (5 << 20)})
    assert big.status_code == 413
    chunked = c.post("/v1/pa/stacks", content=(b"#" * (1 << 20) for _ in range(5)),
                     headers={"content-type": "application/json"})  # fmt: skip
    assert chunked.status_code == 413, chunked.text
    assert c.get("/v1/pa/stacks").json() == {"stacks": []}
    assert _create(c).status_code == 202
    assert _create(c).status_code == 409  # the name is taken


def test_preview_drift_delete_metrics_and_openapi(serve, data_dir: Path) -> None:
    server = serve()
    c = server.client()
    preview = c.post("/v1/pa/stacks/preview", json={"stack_name": "web", "template": stack_text()})
    assert preview.status_code == 200
    assert preview.json()["summary"]["create"] == 2
    assert c.get("/v1/pa/stacks").json() == {"stacks": []}  # a preview creates nothing
    wait_op(c, _create(c).headers["Location"])
    upd = c.put("/v1/pa/stacks/web/preview", json={"template": stack_text(count=3)}).json()
    assert upd["summary"]["create"] == 1 and upd["summary"]["has_changes"]

    drift = c.post("/v1/pa/stacks/web/drift")
    assert drift.status_code == 202
    report = wait_op(c, drift.headers["Location"])
    assert report["status"] == "COMPLETE" and report["result"]["drifted"] is False
    # an object removed behind iacloud's back
    rid = c.get("/v1/pa/stacks/web/resources").json()["resources"][1]["id"]
    (obj,) = data_dir.glob(f"stacks/*/fake/fake_thing/{rid}.json")
    obj.unlink()
    report = wait_op(c, c.post("/v1/pa/stacks/web/drift").headers["Location"])
    assert report["result"]["drifted"] is True
    assert report["result"]["drift"]["totals"]["missing"] == 1
    assert c.get("/v1/pa/stacks/web").json()["status"] == "CREATE_COMPLETE"  # drift is no change

    assert c.get("/metrics").status_code == 403  # a member
    page = server.client("tok-adam").get("/metrics")
    assert page.status_code == 200
    text = page.text
    assert 'iacloud_operations_total{action="CREATE",result="complete"} 1.0' in text
    assert 'iacloud_operations_total{action="DRIFT",result="complete"} 2.0' in text
    assert 'iacloud_drift_findings{kind="missing",project="pa",stack="web"} 1.0' in text
    assert server.client("tok-bob").get("/metrics").status_code == 403
    other = server.client("tok-bea").get("/metrics").text  # an admin of project pb
    assert 'project="pa"' not in other and "iacloud_operations_total" in other
    assert (
        'iacloud_step_duration_seconds_count{kind="create",result="complete",type="fake_thing"} 2.0'
        in text
    )
    assert 'iacloud_operation_duration_seconds_count{action="CREATE"} 1.0' in text
    assert (
        "iacloud_api_request_duration_seconds_count"
        '{method="POST",route="/v1/{project}/stacks",status="202"} 1.0' in text
    )

    gone = c.delete("/v1/pa/stacks/web")
    assert gone.status_code == 202
    assert c.patch("/v1/pa/stacks/web", json={}).status_code in (409, 404)  # being deleted
    assert wait_op(c, gone.headers["Location"])["status"] == "COMPLETE"
    assert c.get("/v1/pa/stacks/web").status_code == 404
    assert list(data_dir.glob("stacks/*/fake/fake_thing/*.json")) == []
    assert c.get(gone.headers["Location"]).json()["action"] == "DELETE"  # the record stays

    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v1/{project}/stacks" in spec["paths"]
    assert "/v1/{project}/operations/{op_id}/wait" in spec["paths"]
    assert spec["paths"]["/v1/{project}/stacks"]["post"]["responses"]["202"]


def test_a_killed_server_s_operations_are_failed_with_their_pending_steps(serve) -> None:
    server = serve()
    c = server.client()
    location = c.post("/v1/pa/stacks", json={"stack_name": "k",
                      "template": stack_text(sleep=30, count=1)}).headers["Location"]  # fmt: skip
    deadline = time.monotonic() + 20
    while c.get(location).json()["progress"].get("r0", {}).get("status") != "IN_PROGRESS":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    server.stop(kill=True)
    again = serve(server.state_url)
    c = again.client()
    op = c.get(location).json()
    assert op["status"] == "FAILED", op
    assert "create r0" in op["error"]["message"]
    assert op["error"]["pending"] == [{"action": "create", "address": "r0"}]
    assert c.get("/v1/pa/stacks/k").json()["status"] == "CREATE_FAILED"
    pending = c.get("/v1/pa/stacks/k/resources").json()["pending"]
    assert [p["address"] for p in pending] == ["r0"]
    # the next run resolves the pending step as after a killed CLI run; the lock of the dead
    # server is taken over
    fixed = c.put("/v1/pa/stacks/k", json={"template": stack_text(count=1)})
    done = wait_op(c, fixed.headers["Location"])
    assert done["status"] == "COMPLETE", done
    resources = c.get("/v1/pa/stacks/k/resources").json()
    assert [r["address"] for r in resources["resources"]] == ["r0"] and resources["pending"] == []


def test_the_list_has_an_etag_that_moves_with_every_change(serve) -> None:
    server = serve()
    c = server.client()
    empty = c.get("/v1/pa/stacks")
    assert empty.json() == {"stacks": []}
    assert (
        c.get("/v1/pa/stacks", headers={"If-None-Match": empty.headers["ETag"]}).status_code == 304
    )
    location = _create(c).headers["Location"]
    listed = c.get("/v1/pa/stacks")
    assert listed.headers["ETag"] != empty.headers["ETag"]
    wait_op(c, location)
    done = c.get("/v1/pa/stacks", headers={"If-None-Match": listed.headers["ETag"]})
    assert done.status_code == 200 and done.json()["stacks"][0]["status"] == "CREATE_COMPLETE"
    again = c.get("/v1/pa/stacks", headers={"If-None-Match": done.headers["ETag"]})
    assert again.status_code == 304
    drift = c.post("/v1/pa/stacks/web/drift").headers["Location"]
    wait_op(c, drift)
    assert c.get("/v1/pa/stacks").json() == done.json()  # a drift check changes no stack
    assert c.get("/v1/pb/stacks", headers={"X-Auth-Token": server.tokens["tok-bob"]}).json() == {
        "stacks": []
    }


def test_login_whoami_logout_and_the_rate_limit(serve) -> None:
    server = serve()
    anon = server.client(None)
    r = anon.post("/v1/auth/tokens", json={"username": "alice", "password": "a long password",
                                           "project": "pa"})  # fmt: skip
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert r.headers["X-Subject-Token"] == token and r.json()["role"] == "member"
    me = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})
    assert me.get("/v1/auth/tokens").json()["user"] == "alice"
    assert me.get("/v1/pa/stacks").status_code == 200
    assert me.delete("/v1/auth/tokens").status_code == 204
    assert me.get("/v1/pa/stacks").status_code == 401  # logged out
    wrong = {"username": "alice", "password": "not the password", "project": "pa"}
    codes = [anon.post("/v1/auth/tokens", json=wrong).status_code for _ in range(6)]
    assert codes[:5] == [401] * 5 and codes[5] == 429
    limited = anon.post("/v1/auth/tokens", json=wrong)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert "not the password" not in limited.text


def test_a_failed_step_fails_the_operation_and_names_the_step(serve) -> None:
    server = serve()
    c = server.client()
    text = stack_text(chain=True).replace("size = 1\n", "size = 1\nfail = true\n")
    op = wait_op(c, c.post("/v1/pa/stacks", json={"stack_name": "f", "template": text})
                 .headers["Location"])  # fmt: skip
    assert op["status"] == "FAILED"
    assert "create r0: the fake backend was told to fail" in op["error"]["message"]
    assert op["progress"]["r0"]["status"] == "FAILED"
    assert {"step": "create r1", "status": "skipped"}.items() <= op["error"]["problems"][1].items()
    stack = c.get("/v1/pa/stacks/f").json()
    assert stack["status"] == "CREATE_FAILED" and "told to fail" in stack["status_reason"]
    fixed = c.put("/v1/pa/stacks/f", json={"template": stack_text(chain=True)})
    assert wait_op(c, fixed.headers["Location"])["status"] == "COMPLETE"
    assert c.get("/v1/pa/stacks/f").json()["status"] == "UPDATE_COMPLETE"
