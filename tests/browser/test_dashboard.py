"""The dashboard in a real Chromium against a real `iacloud serve` (fake provider): log in,
plan a stack, approve, the live log to COMPLETE, the topology all green, a server's console
log (escaped), drift, a stale plan refused, destroy; CSRF, cookies, 404 across projects."""

from __future__ import annotations

import re
from typing import Any

import httpx
from dashboard_helpers import PASSWORD, Served, login, shot

from iacloud import engine
from iacloud.redact import MASK

TEMPLATE = """version = 1
description = "a <b>fake</b> lab"

[parameters.token]
type = "string"
hidden = true
default = "not-the-secret"

[resources.lan]
type = "fake_thing"
name = "lan"
secret = { get_param = "token" }

[resources.disk]
type = "fake_disk"
size_gib = 1

[resources.web]
type = "fake_server"
name = "web"
network = { get_resource = "lan" }
disk = { get_resource = "disk" }
sleep = 1.0
console = "<script>document.title='owned'</script> & <b>done</b>"

[outputs.web_ip]
value = { get_attr = ["web", "addresses", "lan"] }

[outputs.token]
value = { get_param = "token" }
sensitive = true
"""
SECRET = "s3cr3t-Param-9431"  # the hidden parameter's value: on no page, ever

GREEN = "rgb(218, 251, 225)"  # --ok-bg: the fill of a complete node


def _wait_status(page: Any, status: str) -> None:
    page.wait_for_function(
        "s => document.getElementById('op-status').textContent.trim() === s", arg=status,
        timeout=60_000,
    )  # fmt: skip


def test_login_csrf_and_cookies(served: Served, context: Any) -> None:
    page = context.new_page()
    login(page, served.url, password="wrong password")
    assert page.locator("#login-error").inner_text().startswith("login refused")
    assert not [c for c in context.cookies() if c["name"] == "iacloud_token"]

    login(page, served.url)
    page.wait_for_url(re.compile(r".*/dashboard/demo/stacks$"))
    (cookie,) = [c for c in context.cookies() if c["name"] == "iacloud_token"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # not readable by scripts

    # a change without the form's CSRF token: refused, even with the session cookie
    r = context.request.post(f"{served.url}/dashboard/demo/plan",
                             form={"stack_name": "x", "template": TEMPLATE})  # fmt: skip
    assert r.status == 403 and "CSRF" in r.text()
    wrong = {"stack_name": "x", "template": TEMPLATE, "csrf": "0" * 64}
    r = context.request.post(f"{served.url}/dashboard/demo/plan", form=wrong)
    assert r.status == 403
    # the API takes the cookie for reads only: a cross-origin form could send it with a POST
    assert context.request.get(f"{served.url}/v1/demo/stacks").status == 200
    r = context.request.post(f"{served.url}/v1/demo/stacks",
                             data={"stack_name": "x", "template": TEMPLATE})  # fmt: skip
    assert r.status == 401
    # another project's pages do not exist
    assert context.request.get(f"{served.url}/dashboard/other/stacks").status == 404

    page.click("#logout")
    page.wait_for_url(re.compile(r".*/dashboard/login$"))
    assert not [c for c in context.cookies() if c["name"] == "iacloud_token"]
    # the token itself was revoked, not only forgotten by the browser
    r = httpx.get(f"{served.url}/v1/demo/stacks",
                  headers={"X-Auth-Token": cookie["value"]})  # fmt: skip
    assert r.status_code == 401


def test_plan_approve_topology_server_drift_destroy(served: Served, context: Any) -> None:
    page = context.new_page()
    login(page, served.url)
    page.click("#new-stack")
    page.fill("input[name=stack_name]", "lab")
    page.fill("textarea[name=template]", TEMPLATE)
    page.fill("textarea[name=parameters]", f"token={SECRET}")
    page.click("#new-form button[type=submit]")
    seen: list[str] = []
    page.on("response", lambda r: seen.append(r.text()) if "text/html" in
            r.headers.get("content-type", "") else None)  # fmt: skip

    # the plan: three creates, each with its disruption class; nothing exists yet
    page.wait_for_url(re.compile(r".*/plans/[0-9a-f]+$"))
    rows = page.locator("#changes tr.change")
    assert rows.count() == 3
    assert set(page.locator("#changes tr.change td:nth-child(2)").all_inner_texts()) == {
        "lan", "disk", "web",
    }  # fmt: skip
    assert "3 to create" in page.locator("#plan-summary").inner_text()
    shot(page, "plan")
    page.click("#approve")

    # the live log, fed by the event stream, to COMPLETE
    page.wait_for_url(re.compile(r".*/operations/[0-9a-f]+$"))
    _wait_status(page, "COMPLETE")
    log = page.locator("#log").inner_text()
    assert "web (fake_server) CREATE_IN_PROGRESS" in log
    assert "web (fake_server) CREATE_COMPLETE" in log
    assert "operation CREATE COMPLETE" in log
    shot(page, "apply-log")

    # the topology: every node green
    page.click("h1 a")
    nodes = page.locator("#topology g.node")
    assert nodes.count() == 3
    page.wait_for_function(
        "() => [...document.querySelectorAll('#topology g.node')]"
        ".every(n => n.classList.contains('status-complete'))"
    )
    fills = page.eval_on_selector_all(
        "#topology g.node rect", "rs => rs.map(r => getComputedStyle(r).fill)"
    )
    assert fills == [GREEN] * 3
    assert page.locator("#stack-status").inner_text() == "CREATE_COMPLETE"
    assert "<b>fake</b>" in page.content().replace("&lt;", "<").replace("&gt;", ">")
    assert page.locator("main b").count() == 0  # the description's markup stays text
    assert page.locator("#outputs").inner_text().count("198.18.0.") == 1
    assert MASK in page.locator("#outputs").inner_text()  # the sensitive output
    # the hidden value did reach the provider (so its absence from the pages means something)
    assert [f for f in served.data_dir.rglob("*.json") if SECRET in f.read_text()]
    shot(page, "stack")
    page.set_viewport_size({"width": 1000, "height": 640})
    shot(page, "stack-top", full_page=False)  # the README's picture (docs/img/dashboard.png)
    page.set_viewport_size({"width": 1280, "height": 900})

    # the server page: addresses, power state, the console log tail as text
    page.click("#resources a:text-is('web')")
    assert page.locator("#power-state").inner_text() == "running"
    assert re.search(r"198\.18\.0\.\d+", page.locator("#addresses").inner_text())
    console = page.locator("#console").inner_text()
    assert "<script>document.title='owned'</script> & <b>done</b>" in console
    assert page.locator("#console script, #console b").count() == 0
    assert page.title() != "owned"
    shot(page, "server")
    page.go_back()

    # drift: a check through the jobs, its report on the operation's page
    page.click("#check-drift")
    _wait_status(page, "COMPLETE")
    page.wait_for_selector("#drift-report")
    page.goto(f"{served.url}/dashboard/demo/stacks")
    assert page.locator("tr[data-stack=lab] td:nth-child(3)").inner_text() == "in sync"
    shot(page, "stacks")

    # two plans from the same state: the first approved applies, the second is stale
    page.click("a:text-is('lab')")
    stack_url = page.url
    plans = []
    for _ in range(2):
        page.goto(stack_url)
        page.click("#update-box summary")
        page.fill("#update-form textarea[name=template]",
                  TEMPLATE + '\n[resources.extra]\ntype = "fake_thing"\nsleep = 2.5\n')  # fmt: skip
        page.click("#update-form button[type=submit]")
        page.wait_for_url(re.compile(r".*/plans/[0-9a-f]+$"))
        assert "1 to create" in page.locator("#plan-summary").inner_text()
        plans.append(page.url)
    page.goto(plans[0])
    page.click("#approve")
    page.wait_for_url(re.compile(r".*/operations/[0-9a-f]+$"))
    # meanwhile the topology follows the run without a reload
    page.goto(stack_url)
    extra = page.locator("#topology g.node[data-address=extra]")
    page.wait_for_function(
        "() => document.querySelector('#topology g.node[data-address=extra]')"
        ".classList.contains('status-in-progress')"
    )
    page.wait_for_function(
        "() => document.querySelector('#topology g.node[data-address=extra]')"
        ".classList.contains('status-complete')"
    )
    assert "status-complete" in (extra.get_attribute("class") or "")
    page.goto(plans[1].rsplit("/plans/", 1)[0] + "/stacks")
    page.goto(plans[1])
    with page.expect_response(re.compile(r".*/approve$")) as refused:
        page.click("#approve")
    assert refused.value.status == 409
    assert "changed since this plan was made" in page.locator("main").inner_text()

    # a plan whose stack's state moved behind the dashboard's back (state surgery, as with
    # `iacloud state mv`) is refused too
    page.goto(stack_url)
    page.click("#plan-update")
    page.wait_for_url(re.compile(r".*/plans/[0-9a-f]+$"))
    assert "0 to create" in page.locator("#plan-summary").inner_text()
    ws = engine.Workspace(served.data_dir / "nofile.toml", served.state_url, state_key="demo.lab")
    try:
        engine.state_mv(ws, "extra", "moved")
    finally:
        ws.close()
    with page.expect_response(re.compile(r".*/approve$")) as refused:
        page.click("#approve")
    assert refused.value.status == 409
    assert "the plan was made from serial" in page.locator("main").inner_text()

    # destroy: a plan deleting everything, approved, and the stack is gone
    page.goto(stack_url)
    assert page.locator("#topology g.node").count() == 4
    page.click("#plan-destroy")
    page.wait_for_url(re.compile(r".*/plans/[0-9a-f]+$"))
    assert "4 to delete" in page.locator("#plan-summary").inner_text()
    page.click("#approve")
    _wait_status(page, "COMPLETE")
    assert "operation DELETE COMPLETE" in page.locator("#log").inner_text()
    page.goto(f"{served.url}/dashboard/demo/stacks")
    assert page.locator("tr[data-stack=lab]").count() == 0
    assert len(seen) > 15 and not [text for text in seen if SECRET in text]


def test_another_project_sees_nothing(served: Served, context: Any) -> None:
    page = context.new_page()
    login(page, served.url, user="bob", project="other")
    page.wait_for_url(re.compile(r".*/dashboard/other/stacks$"))
    for path in ("/dashboard/demo/stacks", "/dashboard/demo/stacks/lab",
                 "/dashboard/demo/new"):  # fmt: skip
        assert page.goto(f"{served.url}{path}").status == 404
    assert PASSWORD not in page.content()
