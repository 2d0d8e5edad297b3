"""The dashboard's changes (POST, each checking the session's CSRF token): log in and out,
plan (a create, an update or a destroy; the plan is saved on the server and shown), Approve
(queues an operation that applies exactly that saved plan; the engine refuses it if the
stack's state moved since), drift check, cancel. Plans come from the engine's functions, the
operations from the API's (iacloud.api.routes), run by the API's jobs."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from iacloud import engine
from iacloud.api import auth, operations, routes, templates
from iacloud.api.schemas import StackCreate
from iacloud.api.store import SavedPlan, new_id
from iacloud.dashboard import session
from iacloud.dashboard.web import PREFIX, api_errors, render, store
from iacloud.engine import Plan, PlanOptions
from iacloud.render import plan_json, plan_text

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def _see(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# -- login, logout --


@router.get("/login")
def login_page(request: Request) -> Response:
    page = render(request, "login.html", error=None, username="", login_project="",
                  csrf=session.login_csrf(request))  # fmt: skip
    session.login_form(request, page)
    return page


@router.post("/login")
async def login(request: Request) -> Response:
    from iacloud.identity import IdentityError, LoginRefused, RateLimited

    fields = await session.form(request)
    session.check_login_csrf(request, fields)
    username, project = fields.get("username", ""), fields.get("project", "")
    try:
        issued = await run_in_threadpool(request.app.state.identity.login, username,
                                         fields.get("password", ""), project,
                                         auth.client_of(request))  # fmt: skip
    except (LoginRefused, RateLimited, IdentityError) as exc:
        status = 429 if isinstance(exc, RateLimited) else 401
        page = render(request, "login.html", status, error=str(exc), username=username,
                      login_project=project, csrf=fields.get("csrf", ""))  # fmt: skip
        return page
    response = _see(f"{PREFIX}/{issued.principal.project}/stacks")
    session.start(request, response, issued.token, issued.expires_at)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    fields = await session.form(request)
    who = session.check_csrf(request, fields)
    response = _see(f"{PREFIX}/login")
    await run_in_threadpool(session.end, request, response, who)
    return response


# -- plans --


def _parameters(text: str) -> dict[str, Any]:
    """`name=value` lines (the CLI's -p); the loader converts each to its declared type."""
    out: dict[str, Any] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise session.Refused(400, f"parameters, line {n}: expected name=value")
        out[name.strip()] = value.strip()
    return out


def _make_plan(request: Request, project: str, name: str, action: str, fmt: str, template: str,
               params: dict[str, Any]) -> Plan:  # fmt: skip
    """The plan, as the jobs would make it at once (see iacloud.api.jobs), refreshed."""
    ws = routes._workspace(request, project, name, fmt, template)
    try:
        with api_errors():
            if action == "DELETE":
                try:
                    stack, settings = engine.destroy_settings(
                        ws, ws.name, templates.assignments(params)
                    )
                except engine.UserError as exc:
                    raise templates.shown(exc, ws.stack_file) from None
                return engine.destroy_plan(ws, stack, provider_settings=settings)[0]
            config = templates.load(ws, params)
            return engine.make_plan(ws, config, PlanOptions())[0]
    finally:
        ws.close()


def _save(request: Request, who: Any, project: str, name: str, action: str, fmt: str,
          template: str, params: dict[str, Any], stack_id: str | None,
          revision: int) -> Response:  # fmt: skip
    plan = _make_plan(request, project, name, action, fmt, template, params)
    saved = SavedPlan(
        id=new_id(), project=project, stack=name, stack_id=stack_id, revision=revision,
        action=action, format=fmt, template=template, parameters=params,
        plan=plan.model_dump_json(), created_by=str(who.user),
        created_at=datetime.now(timezone.utc),
    )  # fmt: skip
    store(request).save_plan(saved)
    return _see(f"{PREFIX}/{project}/plans/{saved.id}")


@router.post("/{project}/plan")
async def plan_create(project: str, request: Request) -> Response:
    """Plan a new stack from the form (name, template, parameters)."""
    fields = await session.form(request)
    who = session.check_csrf(request, fields)
    if who.project != project:
        raise session.Refused(404, f"no project '{project}'")
    name, template = fields.get("stack_name", "").strip(), fields.get("template", "")
    with api_errors():
        templates.state_key(project, name)
        fmt = templates.detect_format(template, None)
        auth.in_project(request, project, change=True)
    if store(request).get_stack(project, name) is not None:
        raise session.Refused(409, f"stack '{name}' already exists in the project")
    params = _parameters(fields.get("parameters", ""))
    return await run_in_threadpool(_save, request, who, project, name, "CREATE", fmt, template,
                                   params, None, 0)  # fmt: skip


@router.post("/{project}/stacks/{name}/plan")
async def plan_change(project: str, name: str, request: Request) -> Response:
    """Plan an update (the form's template and parameters, or the stack's own if left
    empty) or, with `destroy`, the deletion of everything the stack made."""
    fields = await session.form(request)
    who = session.check_csrf(request, fields)
    with api_errors():
        auth.in_project(request, project, change=True)
        stack = routes._stack(request, project, name)
    template = fields.get("template", "").strip() and fields["template"]
    params = dict(stack.parameters)
    params.update(_parameters(fields.get("parameters", "")))
    fmt = templates.detect_format(template, None) if template else stack.format
    action = "DELETE" if fields.get("destroy") else "UPDATE"
    return await run_in_threadpool(_save, request, who, project, name, action, fmt,
                                   template or stack.template, params, stack.id,
                                   stack.revision)  # fmt: skip


@router.get("/{project}/plans/{plan_id}")
def plan_page(project: str, plan_id: str, request: Request) -> Response:
    who = session.in_project(request, project)
    saved = store(request).get_plan(plan_id) if len(plan_id) <= 64 else None
    if saved is None or saved.project != project:
        raise session.Refused(404, "no such plan (plans are kept for a day)")
    plan = Plan.model_validate_json(saved.plan)
    data = plan_json(plan)  # hidden values and sensitive fields masked
    return render(request, "plan.html", user=who.user, project=project, saved=saved,
                  text=plan_text(plan), changes=data["changes"], summary=data["summary"],
                  max_disruption=str(plan.max_disruption) if plan.actionable() else None,
                  may_change=who.may_change())  # fmt: skip


@router.post("/{project}/plans/{plan_id}/approve")
async def approve(project: str, plan_id: str, request: Request) -> Response:
    """Queue an operation applying exactly the saved plan."""
    fields = await session.form(request)
    session.check_csrf(request, fields)
    return await run_in_threadpool(_approve, request, project, plan_id)


def _approve(request: Request, project: str, plan_id: str) -> Response:
    saved = store(request).get_plan(plan_id) if len(plan_id) <= 64 else None
    if saved is None or saved.project != project:
        raise session.Refused(404, "no such plan (plans are kept for a day)")
    if saved.op_id is not None:
        raise session.Refused(409, "this plan was approved already")
    with api_errors():
        auth.in_project(request, project, change=True)
        if saved.action == "CREATE":
            body = StackCreate(
                stack_name=saved.stack,
                template=saved.template,
                format=saved.format,
                parameters=saved.parameters,
            )  # type: ignore[arg-type]
            op = routes.queue_create(request, project, body, plan_id=saved.id)
            request.app.state.jobs.submitted()
            return _see(f"{PREFIX}/{project}/operations/{op.id}")
        stack = routes._stack(request, project, saved.stack)
        if stack.id != saved.stack_id or stack.revision != saved.revision:
            raise session.Refused(409, f"stack '{stack.name}' changed since this plan was "
                                  "made: make a new plan")  # fmt: skip
        serial = routes._serial(request, stack)
        made_from = Plan.model_validate_json(saved.plan).serial
        if serial != made_from:
            raise session.Refused(409, f"the state of stack '{stack.name}' is at serial "
                                  f"{serial}, the plan was made from serial {made_from}: "
                                  "make a new plan")  # fmt: skip
        update = saved.action == "UPDATE"
        accepted = routes._change(
            request, Response(), project, saved.stack, saved.action, None,
            template=saved.template if update else None, fmt=saved.format if update else None,
            params=saved.parameters if update else None, keep_params=not update,
            plan_id=saved.id, expect_revision=saved.revision,
        )  # fmt: skip
    return _see(f"{PREFIX}/{project}/operations/{accepted.operation.id}")


# -- drift, cancel --


@router.post("/{project}/stacks/{name}/drift")
async def drift(project: str, name: str, request: Request) -> Response:
    fields = await session.form(request)
    session.check_csrf(request, fields)
    with api_errors():
        accepted = await run_in_threadpool(routes.drift_stack, project, name, request, Response())
    return _see(f"{PREFIX}/{project}/operations/{accepted.operation.id}")


@router.post("/{project}/operations/{op_id}/cancel")
async def cancel(project: str, op_id: str, request: Request) -> Response:
    fields = await session.form(request)
    session.check_csrf(request, fields)
    with api_errors():
        await run_in_threadpool(operations.cancel_operation, project, op_id, request)
    return _see(f"{PREFIX}/{project}/operations/{op_id}")
