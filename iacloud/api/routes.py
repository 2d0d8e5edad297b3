"""The stack routes, per project as Heat's are: create, list, show, update, delete, preview,
outputs, resources, events, drift (the operations' routes are in operations.py).

Handlers are thin: they check the caller, validate through the engine's loader, queue an
operation for the jobs (jobs.py) or read state through the engine's read functions."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from iacloud import engine
from iacloud.api import auth, templates
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
from iacloud.api.store import OperationRow, StackRow, new_id
from iacloud.api.views import RESPONSES, op_out, op_url, settings_of, stack_url, store_of
from iacloud.engine import PlanOptions, UserError
from iacloud.errors import Diagnostic
from iacloud.redact import MASK, Redactor
from iacloud.render import plan_json

router = APIRouter(prefix="/v1/{project}", responses=RESPONSES)


def _stack(request: Request, project: str, name: str) -> StackRow:
    stack = store_of(request).get_stack(project, name)
    if stack is None:
        raise HTTPException(404, {"message": f"no stack '{name}' in project '{project}'"})
    return stack


def _summary(s: StackRow) -> dict[str, Any]:
    return {
        "id": s.id, "name": s.name, "description": s.description, "status": s.status,
        "status_reason": s.status_reason, "revision": s.revision, "created_at": s.created_at,
        "updated_at": s.updated_at, "links": Links(self=stack_url(s.project, s.name)),
    }  # fmt: skip


def _workspace(
    request: Request, project: str, name: str, fmt: str, template: str, read_only: bool = False
) -> engine.Workspace:
    settings = settings_of(request)
    return templates.workspace(
        settings.work_dir, settings.state_url, project, name, fmt, template,
        request.app.state.registry, read_only=read_only,
    )  # fmt: skip


def _reader(request: Request, stack: StackRow) -> engine.Workspace:
    """A read-only workspace of a stack: reads state, takes no lock, writes no file."""
    settings = settings_of(request)
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
    response.headers["Location"] = op_url(op.project, op.id)
    return Accepted(operation=op_out(op))


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
    store_of(request).create_stack(stack, op)
    auth.audit(request, principal, "stack.create", f"{project}/{body.stack_name}", "success")
    return op


@router.get("/stacks", response_model=StackList, responses={304: {"description": "Unchanged"}})
def list_stacks(
    project: str, request: Request,
    limit: int = Query(1000, ge=1, le=10000), marker: str | None = None,
) -> Response:  # fmt: skip
    """The project's stacks by name; `marker` (a name) and `limit` page through them. The
    answer has an ETag: `If-None-Match` gets 304 while nothing in the project changed."""
    auth.in_project(request, project)
    store = store_of(request)
    version = store.list_version(project)
    key = (project, limit, marker)
    etag = f'"{hashlib.sha256(repr((key, version)).encode()).hexdigest()[:20]}"'
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers={"ETag": etag})
    cache: dict[Any, tuple[str, bytes]] = request.app.state.list_cache
    hit = cache.get(key)
    if hit is None or hit[0] != etag:
        rows = store.list_stacks(project, limit, marker)
        for row in rows:
            row["links"] = {"self": stack_url(project, row["name"])}
        body = JSONResponse({"stacks": rows}).body  # built once per change, not per request
        if len(cache) >= 64:
            cache.pop(next(iter(cache)))
        cache[key] = hit = (etag, bytes(body))
    return Response(hit[1], media_type="application/json", headers={"ETag": etag})


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
    store_of(request).submit(stack, op, expect_revision, changes,
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
def preview_update(
    project: str, name: str, body: StackUpdate, request: Request,
    replace_parameters: bool = Query(False, description="PUT's parameters: replace all."),
) -> dict[str, Any]:  # fmt: skip
    """The plan an update (PATCH semantics, or PUT's with `replace_parameters`) would carry
    out; changes nothing."""
    auth.in_project(request, project)
    stack = _stack(request, project, name)
    template = body.template if body.template is not None else stack.template
    fmt = body.format or (
        templates.detect_format(template, None) if body.template else stack.format
    )
    params = {} if replace_parameters else dict(stack.parameters)
    return _preview(request, project, name, fmt, template, {**params, **(body.parameters or {})})


@router.delete("/stacks/{name}/preview")
def preview_delete(project: str, name: str, request: Request) -> dict[str, Any]:
    """The plan a delete would carry out (`iacloud destroy`'s); changes nothing."""
    auth.in_project(request, project)
    stack = _stack(request, project, name)
    ws = _workspace(request, project, name, stack.format, stack.template)
    try:
        try:
            stack_name, settings = engine.destroy_settings(
                ws, ws.name, templates.assignments(stack.parameters)
            )
        except UserError as exc:
            raise templates.shown(exc, ws.stack_file) from None
        plan, _ = engine.destroy_plan(ws, stack_name, provider_settings=settings)
    finally:
        ws.close()
    return plan_json(plan)


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


@router.get("/stacks/{name}/state")
def stack_state(
    project: str, name: str, request: Request,
    serial: int | None = Query(None, ge=0, description="An older state version."),
) -> dict[str, Any]:  # fmt: skip
    """The recorded state as `iacloud show --json` prints it, and the outputs as `iacloud
    output --json` does; sensitive values masked."""
    auth.in_project(request, project)
    ws = _reader(request, _stack(request, project, name))
    try:
        view = engine.state_view(ws, serial)
    finally:
        ws.close()
    snap = view.snapshot
    outputs = {k: {"sensitive": bool(snap.outputs[k].get("sensitive")), "value": v}
               for k, v in _masked_outputs(snap.outputs).items()}  # fmt: skip
    return {"stack": name, "stack_id": snap.stack_id, "serial": snap.serial,
            "lineage": snap.lineage, "resources": view.resources,
            "pending": [p.model_dump(mode="json") for p in snap.pending],
            "outputs": outputs}  # fmt: skip


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
    return {"operations": [op_out(op) for op in store_of(request).stack_ops(stack.id, limit)]}
