"""The routes, per project as Heat's are: stacks (create, list, show, update, delete, preview,
outputs, resources, events, drift) and operations (show, wait, cancel, event stream).

Handlers are thin: they check the caller, validate through the engine's loader, queue an
operation for the jobs (jobs.py) or read state through the engine's read functions."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from iacloud import engine
from iacloud.api import auth, templates
from iacloud.api.app import ServeSettings
from iacloud.api.schemas import (
    Accepted,
    ErrorBody,
    EventOut,
    Events,
    Links,
    Operation,
    Resource,
    Resources,
    StackCreate,
    StackDetail,
    StackList,
    StackUpdate,
)
from iacloud.api.store import OperationRow, StackRow, Store, new_id
from iacloud.engine import PlanOptions, UserError
from iacloud.errors import Diagnostic
from iacloud.redact import MASK, Redactor
from iacloud.render import plan_json

router = APIRouter(prefix="/v1/{project}", responses={
    400: {"model": ErrorBody, "description": "Bad input: diagnostics name file, resource, field"},
    401: {"model": ErrorBody}, 404: {"model": ErrorBody},
})  # fmt: skip


def _store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def _settings(request: Request) -> ServeSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _stack(request: Request, project: str, name: str) -> StackRow:
    stack = _store(request).get_stack(project, name)
    if stack is None:
        raise HTTPException(404, {"message": f"no stack '{name}' in project '{project}'"})
    return stack


def _stack_url(project: str, name: str) -> str:
    return f"/v1/{project}/stacks/{name}"


def _op_url(project: str, op_id: str) -> str:
    return f"/v1/{project}/operations/{op_id}"


def _op_out(op: OperationRow) -> Operation:
    return Operation(
        id=op.id, project=op.project, stack=op.stack, action=op.action,  # type: ignore[arg-type]
        status=op.status, requested_by=op.requested_by,  # type: ignore[arg-type]
        cancel_requested=op.cancel_requested, worker=op.worker, created_at=op.created_at,
        started_at=op.started_at, finished_at=op.finished_at, progress=op.progress,
        error=op.error, result=op.result,
        links=Links(self=_op_url(op.project, op.id), stack=_stack_url(op.project, op.stack)),
    )  # fmt: skip


def _summary(s: StackRow) -> dict[str, Any]:
    return {
        "id": s.id, "name": s.name, "description": s.description, "status": s.status,
        "status_reason": s.status_reason, "revision": s.revision, "created_at": s.created_at,
        "updated_at": s.updated_at, "links": Links(self=_stack_url(s.project, s.name)),
    }  # fmt: skip


def _workspace(
    request: Request, project: str, name: str, fmt: str, template: str, read_only: bool = False
) -> engine.Workspace:
    settings = _settings(request)
    return templates.workspace(
        settings.work_dir, settings.state_url, project, name, fmt, template,
        request.app.state.registry, read_only=read_only,
    )  # fmt: skip


def _reader(request: Request, stack: StackRow) -> engine.Workspace:
    """A read-only workspace of a stack: reads state, takes no lock, writes no file."""
    settings = _settings(request)
    path = settings.work_dir / stack.project / stack.name / "template"
    return engine.Workspace(path, settings.state_url, registry=request.app.state.registry,
                            read_only=True, state_key=stack.state_key)  # fmt: skip


def _validated(
    request: Request, project: str, name: str, fmt: str, template: str, params: dict[str, Any]
) -> Any:
    ws = _workspace(request, project, name, fmt, template)
    try:
        return templates.load(ws, params)
    finally:
        ws.close()


def _etag(stack: StackRow, serial: int) -> str:
    return f'"{stack.revision}-{serial}"'


def _check_if_match(if_match: str | None, stack: StackRow, serial: int) -> None:
    if if_match is None:
        return
    wanted = {t.strip().removeprefix("W/") for t in if_match.split(",")}
    if "*" not in wanted and _etag(stack, serial) not in wanted:
        raise HTTPException(412, {
            "message": f"stack '{stack.name}' changed since it was read (its ETag is now "
            f"{_etag(stack, serial)}): read it again and retry",
        })  # fmt: skip


def _serial(request: Request, stack: StackRow) -> int:
    ws = _reader(request, stack)
    try:
        return engine.state_view(ws).snapshot.serial
    finally:
        ws.close()


def _new_op(stack: StackRow, action: str, principal: Any, template: str, fmt: str,
            params: dict[str, Any]) -> OperationRow:  # fmt: skip
    from datetime import datetime, timezone

    return OperationRow(
        id=new_id(), project=stack.project, stack_id=stack.id, stack=stack.name,
        state_key=stack.state_key, action=action, status="QUEUED",
        requested_by=str(getattr(principal, "user", "?")), format=fmt, template=template,
        parameters=params, revision=stack.revision, cancel_requested=False, worker=None,
        progress={}, error=None, result=None, created_at=datetime.now(timezone.utc),
        started_at=None, finished_at=None,
    )  # fmt: skip


def _accepted(request: Request, op: OperationRow, response: Response) -> Accepted:
    request.app.state.jobs.submitted()
    response.headers["Location"] = _op_url(op.project, op.id)
    return Accepted(operation=_op_out(op))


# -- stacks --


@router.post("/stacks", status_code=202, response_model=Accepted,
             responses={409: {"model": ErrorBody, "description": "The name is taken"}})  # fmt: skip
def create_stack(project: str, body: StackCreate, request: Request, response: Response) -> Accepted:
    """Validate the template (400 with diagnostics) and queue its creation: 202 with the
    operation, whose URL is also the Location."""
    return _accepted(request, queue_create(request, project, body), response)


def queue_create(
    request: Request, project: str, body: StackCreate, plan_id: str | None = None
) -> OperationRow:
    """Queue a stack's creation (`plan_id`: applying that saved plan, see store.SavedPlan)."""
    from datetime import datetime, timezone

    principal = auth.in_project(request, project, change=True)
    key = templates.state_key(project, body.stack_name)
    fmt = templates.detect_format(body.template, body.format)
    config = _validated(request, project, body.stack_name, fmt, body.template, body.parameters)
    t = datetime.now(timezone.utc)
    stack = StackRow(
        id=new_id(), project=project, name=body.stack_name, state_key=key,
        description=config.description, format=fmt, template=body.template,
        parameters=body.parameters,
        parameters_shown=Redactor(config.hidden_values).value(body.parameters),
        revision=1, status="CREATE_IN_PROGRESS", status_reason="queued", last_operation=None,
        created_at=t, updated_at=t,
    )  # fmt: skip
    op = _new_op(stack, "CREATE", principal, body.template, fmt, body.parameters)
    op.plan_id = plan_id
    _store(request).create_stack(stack, op)
    auth.audit(request, principal, "stack.create", f"{project}/{body.stack_name}", "success")
    return op


@router.get("/stacks", response_model=StackList)
def list_stacks(
    project: str, request: Request,
    limit: int = Query(1000, ge=1, le=10000), marker: str | None = None,
) -> JSONResponse:  # fmt: skip
    """The project's stacks by name; `marker` (a name) and `limit` page through them."""
    auth.in_project(request, project)
    rows = _store(request).list_stacks(project, limit, marker)
    for row in rows:  # already JSON: answered as is, without a model round trip per stack
        row["links"] = {"self": _stack_url(project, row["name"])}
    return JSONResponse({"stacks": rows})


@router.post("/stacks/preview")
def preview_create(project: str, body: StackCreate, request: Request) -> dict[str, Any]:
    """The plan a create would carry out (the JSON of `iacloud plan --json`); changes nothing."""
    auth.in_project(request, project)
    templates.state_key(project, body.stack_name)
    fmt = templates.detect_format(body.template, body.format)
    return _preview(request, project, body.stack_name, fmt, body.template, body.parameters)


def _preview(request: Request, project: str, name: str, fmt: str, template: str,
             params: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    ws = _workspace(request, project, name, fmt, template)
    try:
        config = templates.load(ws, params)
        plan, _ = engine.make_plan(ws, config, PlanOptions())
    finally:
        ws.close()
    return plan_json(plan)


@router.get("/stacks/{name}", response_model=StackDetail)
def show_stack(project: str, name: str, request: Request, response: Response) -> dict[str, Any]:
    auth.in_project(request, project)
    stack = _stack(request, project, name)
    ws = _reader(request, stack)
    try:
        snap = engine.state_view(ws).snapshot
    finally:
        ws.close()
    response.headers["ETag"] = _etag(stack, snap.serial)
    return {
        **_summary(stack), "serial": snap.serial, "etag": _etag(stack, snap.serial),
        "format": stack.format, "parameters": stack.parameters_shown,
        "outputs": _masked_outputs(snap.outputs), "last_operation": stack.last_operation,
    }  # fmt: skip


def _masked_outputs(outputs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, entry in outputs.items():
        if isinstance(entry, dict) and "value" in entry:
            out[key] = MASK if entry.get("sensitive") else entry["value"]
    return out


def _change(
    request: Request, response: Response, project: str, name: str, action: str,
    if_match: str | None, template: str | None = None, fmt: str | None = None,
    params: dict[str, Any] | None = None, keep_params: bool = True,
    plan_id: str | None = None, expect_revision: int | None = None,
) -> Accepted:  # fmt: skip
    principal = auth.in_project(request, project, change=True)
    stack = _stack(request, project, name)
    if stack.status == "DELETE_IN_PROGRESS":
        raise HTTPException(409, {"message": f"stack '{name}' is being deleted"})
    if if_match is not None:
        _check_if_match(if_match, stack, _serial(request, stack))
    new_template = template if template is not None else stack.template
    new_fmt = templates.detect_format(new_template, fmt) if template is not None else stack.format
    if fmt is not None:
        new_fmt = fmt
    new_params = dict(stack.parameters) if keep_params else {}
    new_params.update(params or {})
    changes: dict[str, Any] = {}
    if action == "UPDATE":
        config = _validated(request, project, name, new_fmt, new_template, new_params)
        changes = {
            "template": new_template, "format": new_fmt, "parameters": new_params,
            "parameters_shown": Redactor(config.hidden_values).value(new_params),
            "description": config.description,
        }  # fmt: skip
    op = _new_op(stack, action, principal, new_template, new_fmt, new_params)
    op.plan_id = plan_id
    if if_match is not None:
        expect_revision = stack.revision
    _store(request).submit(stack, op, expect_revision, changes,
                           bump=action != "DRIFT")  # fmt: skip
    auth.audit(request, principal, f"stack.{action.lower()}", f"{project}/{name}", "success")
    return _accepted(request, op, response)


_IF_MATCH = Header(None, description="The ETag of the stack as read: 412 if it changed since.")


@router.put("/stacks/{name}", status_code=202, response_model=Accepted,
            responses={412: {"model": ErrorBody, "description": "If-Match is stale"}})  # fmt: skip
def update_stack(project: str, name: str, body: StackUpdate, request: Request, response: Response,
                 if_match: str | None = _IF_MATCH) -> Accepted:  # fmt: skip
    """Replace the template and parameters, and queue the update."""
    if body.template is None:
        raise UserError(Diagnostic("PUT needs a template (PATCH keeps the current one)",
                                             field="template"))  # fmt: skip
    return _change(request, response, project, name, "UPDATE", if_match, body.template,
                   body.format, body.parameters, keep_params=False)  # fmt: skip


@router.patch("/stacks/{name}", status_code=202, response_model=Accepted,
              responses={412: {"model": ErrorBody}})  # fmt: skip
def patch_stack(project: str, name: str, body: StackUpdate, request: Request, response: Response,
                if_match: str | None = _IF_MATCH) -> Accepted:  # fmt: skip
    """Update with the current template unless one is given; parameters are merged."""
    return _change(request, response, project, name, "UPDATE", if_match, body.template,
                   body.format, body.parameters)  # fmt: skip


@router.put("/stacks/{name}/preview")
def preview_update(project: str, name: str, body: StackUpdate, request: Request) -> dict[str, Any]:
    """The plan an update (PATCH semantics) would carry out; changes nothing."""
    auth.in_project(request, project)
    stack = _stack(request, project, name)
    template = body.template if body.template is not None else stack.template
    fmt = body.format or (
        templates.detect_format(template, None) if body.template else stack.format
    )
    return _preview(request, project, name, fmt, template, {**stack.parameters,
                                                            **(body.parameters or {})})  # fmt: skip


@router.delete("/stacks/{name}", status_code=202, response_model=Accepted,
               responses={412: {"model": ErrorBody}})  # fmt: skip
def delete_stack(project: str, name: str, request: Request, response: Response,
                 if_match: str | None = _IF_MATCH) -> Accepted:  # fmt: skip
    """Queue the deletion of everything the stack made; the stack is gone once it completes."""
    return _change(request, response, project, name, "DELETE", if_match)


@router.post("/stacks/{name}/drift", status_code=202, response_model=Accepted)
def drift_stack(project: str, name: str, request: Request, response: Response) -> Accepted:
    """Queue a drift check; the report is the operation's result."""
    return _change(request, response, project, name, "DRIFT", None)


@router.get("/stacks/{name}/template")
def stack_template(project: str, name: str, request: Request) -> dict[str, Any]:
    auth.in_project(request, project)
    stack = _stack(request, project, name)
    return {"format": stack.format, "template": stack.template, "revision": stack.revision}


@router.get("/stacks/{name}/outputs")
def stack_outputs(project: str, name: str, request: Request) -> dict[str, Any]:
    """The outputs of the last apply; sensitive ones masked."""
    auth.in_project(request, project)
    ws = _reader(request, _stack(request, project, name))
    try:
        outputs = engine.stack_outputs(ws)
    finally:
        ws.close()
    return {"outputs": _masked_outputs(outputs)}


@router.get("/stacks/{name}/resources", response_model=Resources)
def stack_resources(project: str, name: str, request: Request) -> dict[str, Any]:
    """Every recorded resource with its id, status and attributes (sensitive ones masked)."""
    auth.in_project(request, project)
    ws = _reader(request, _stack(request, project, name))
    try:
        view = engine.state_view(ws)
    finally:
        ws.close()
    return {
        "resources": [
            Resource(address=a, type=r["type"], id=r["id"], status=r["status"],
                     attributes=r["attributes"], updated_at=r.get("updated_at"))
            for a, r in view.resources.items()
        ],
        "pending": [{"action": p.action, "address": p.address, "type": p.type,
                     "started_at": p.started_at} for p in view.snapshot.pending],
    }  # fmt: skip


@router.get("/stacks/{name}/events", response_model=Events)
def stack_events(
    project: str, name: str, request: Request,
    resource_action: str | None = None, resource_status: str | None = None,
    resource_name: str | None = None, resource_type: str | None = None,
    marker: int | None = Query(None, ge=0, description="The id of the last event seen."),
    limit: int = Query(100, ge=1, le=1000),
    sort_dir: Literal["asc", "desc"] = "asc",
) -> dict[str, Any]:  # fmt: skip
    """The stack's event history as Heat's API pages it: filters on action, status, resource
    name (an address, or a counted resource's name) and type; `marker` and `limit`."""
    auth.in_project(request, project)
    ws = _reader(request, _stack(request, project, name))
    try:
        history = engine.events(ws)
    finally:
        ws.close()
    out = []
    numbered = list(enumerate(history, start=1))
    if sort_dir == "desc":
        numbered.reverse()
    for i, e in numbered:
        if marker is not None and (i <= marker if sort_dir == "asc" else i >= marker):
            continue
        if resource_action and e.action != resource_action.upper():
            continue
        if resource_status and e.status != resource_status.upper():
            continue
        if resource_name and resource_name not in (e.address, e.address.split("[", 1)[0]):
            continue
        if resource_type and e.type != resource_type:
            continue
        out.append(EventOut(
            id=i, time=e.time, serial=e.serial, resource_name=e.address, resource_type=e.type,
            resource_action=e.action, resource_status=e.status, event=e.action_status,
            reason=e.reason,
        ))  # fmt: skip
        if len(out) >= limit:
            break
    return {"events": out}


@router.get("/stacks/{name}/operations")
def stack_operations(
    project: str, name: str, request: Request, limit: int = Query(20, ge=1, le=200)
) -> dict[str, list[Operation]]:
    auth.in_project(request, project)
    stack = _stack(request, project, name)
    return {"operations": [_op_out(op) for op in _store(request).stack_ops(stack.id, limit)]}


# -- operations --


def _operation(request: Request, project: str, op_id: str) -> OperationRow:
    op = _store(request).get_op(op_id) if len(op_id) <= 64 else None
    if op is None or op.project != project:
        raise HTTPException(404, {"message": f"no operation '{op_id[:64]}'"})
    return op


@router.get("/operations/{op_id}", response_model=Operation)
def show_operation(project: str, op_id: str, request: Request) -> Operation:
    """Status, progress per resource, error and result (a drift report for DRIFT)."""
    auth.in_project(request, project)
    return _op_out(_operation(request, project, op_id))


@router.get("/operations/{op_id}/wait", response_model=Operation)
async def wait_operation(
    project: str, op_id: str, request: Request,
    timeout: float = Query(30.0, ge=0, description="Seconds; at most the server's limit (60)."),
) -> Operation:  # fmt: skip
    """Long poll: answers when the operation is finished or after `timeout` seconds, with the
    operation either way."""
    import time

    await run_in_threadpool(auth.in_project, request, project)
    deadline = time.monotonic() + min(timeout, _settings(request).max_wait)
    waiters = request.app.state.waiters
    while True:
        op = await run_in_threadpool(_operation, request, project, op_id)
        remaining = deadline - time.monotonic()
        if op.done or remaining <= 0:
            return _op_out(op)
        await waiters.wait(op_id, min(remaining, 1.0))


@router.post("/operations/{op_id}/cancel", status_code=202, response_model=Operation)
def cancel_operation(project: str, op_id: str, request: Request) -> Operation:
    """Like Ctrl-C in the CLI: no new step starts, running ones finish and are recorded."""
    principal = auth.in_project(request, project, change=True)
    op = _operation(request, project, op_id)
    if not op.done:
        request.app.state.jobs.cancel(op)
        target = f"{project}/{op.stack}/{op_id}"
        auth.audit(request, principal, "operation.cancel", target, "success")
    return _op_out(_operation(request, project, op_id))


@router.get("/operations/{op_id}/events")
async def operation_events(project: str, op_id: str, request: Request) -> EventSourceResponse:
    """Server-Sent Events: `operation` (status changes) and `resource` (each step starting and
    finishing), each with an id; `Last-Event-ID` resumes. The stream ends with the operation."""
    await run_in_threadpool(auth.in_project, request, project)
    await run_in_threadpool(_operation, request, project, op_id)
    try:
        after = int(request.headers.get("last-event-id", "0"))
    except ValueError:
        after = 0
    store = _store(request)
    waiters = request.app.state.waiters

    async def stream() -> AsyncIterator[dict[str, Any]]:
        last = after
        while True:
            rows = await run_in_threadpool(store.events_after, op_id, last)
            for seq, time_, kind, data in rows:
                last = seq
                yield {"id": str(seq), "event": kind,
                       "data": json.dumps({"time": time_, **json.loads(data)})}  # fmt: skip
            if rows:
                continue
            op = await run_in_threadpool(store.get_op, op_id)
            if op is None or op.done:
                rest = await run_in_threadpool(store.events_after, op_id, last)
                if not rest:
                    return
                continue
            await waiters.wait(op_id, 1.0)

    return EventSourceResponse(stream(), ping=15)
