"""The dashboard's pages (GET): stacks with status and drift state, a stack (topology,
resources, outputs, events, operations, template), an operation (live log, result, drift
report), a resource or server (addresses, power state, console log tail), and the topology's
live status as JSON. They read through the API's own functions (iacloud.api.routes)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from markupsafe import Markup

from iacloud import engine
from iacloud.api import operations, routes, templates, views
from iacloud.api.store import OperationRow, StackRow
from iacloud.dashboard import session, topology
from iacloud.dashboard.web import PREFIX, api_errors, render, secured, store
from iacloud.drift import DriftReport
from iacloud.engine import UserError
from iacloud.errors import printable
from iacloud.graph import build_graph
from iacloud.paths import data_root
from iacloud.render import drift_text

router = APIRouter(prefix=PREFIX, include_in_schema=False)
CONSOLE_TAIL = 16 << 10  # bytes of a console log shown
LIST_PAGE = 100


@router.get("/")
def home(request: Request) -> Response:
    who = session.principal(request)
    return RedirectResponse(f"{PREFIX}/{who.project}/stacks", status_code=303)


@router.get("/{project}/stacks")
def stacks(project: str, request: Request, marker: str | None = None) -> Response:
    who = session.in_project(request, project)
    rows = store(request).list_stacks(project, LIST_PAGE + 1, marker)
    more = len(rows) > LIST_PAGE
    rows = rows[:LIST_PAGE]
    for row in rows:
        row["drift"] = _last_drift(store(request).stack_ops(row["id"], 20))
    return render(request, "stacks.html", user=who.user, project=project, stacks=rows,
                  next_marker=rows[-1]["name"] if more else None,
                  may_change=who.may_change())  # fmt: skip


def _last_drift(ops: list[OperationRow]) -> dict[str, Any] | None:
    """The last finished drift check of a stack (newest first in `ops`)."""
    for op in ops:
        if op.action == "DRIFT" and op.status == "COMPLETE" and op.result is not None:
            return {"drifted": bool(op.result.get("drifted")), "at": op.finished_at, "op": op.id}
        if op.action == "DRIFT" and op.status == "FAILED":
            return {"drifted": None, "at": op.finished_at, "op": op.id}
    return None


@router.get("/{project}/new")
def new_stack(project: str, request: Request) -> Response:
    who = session.in_project(request, project)
    return render(request, "new.html", user=who.user, project=project)


def _stack_row(request: Request, project: str, name: str) -> StackRow:
    with api_errors():
        return routes._stack(request, project, name)


def _config(request: Request, stack: StackRow) -> Any:
    """The stack's configuration (for its graph), or None if its template no longer loads."""
    ws = routes._workspace(request, stack.project, stack.name, stack.format, stack.template,
                           read_only=True)  # fmt: skip
    try:
        return templates.load(ws, stack.parameters)
    except UserError:
        return None
    finally:
        ws.close()


def _statuses(request: Request, stack: StackRow, resources: list[Any]) -> dict[str, str]:
    """Each resource's status: from state, overridden by the running operation's progress."""
    out = {r.address: r.status for r in resources}
    op = store(request).get_op(stack.last_operation) if stack.last_operation else None
    if op is not None and not op.done:
        for address, entry in op.progress.items():
            out[address] = f"{entry.get('action', 'CREATE')}_{entry.get('status', '')}"
        rows = store(request).events_after(op.id, 0, 5000)
        for _seq, _time, kind, data in rows:
            if kind == "resource":
                e = json.loads(data)
                out[e["address"]] = f"{e.get('action', '')}_{e.get('status', '')}"
    return out


@router.get("/{project}/stacks/{name}")
def stack_page(project: str, name: str, request: Request) -> Response:
    who = session.in_project(request, project)
    stack = _stack_row(request, project, name)
    with api_errors():
        detail = routes.show_stack(project, name, request, Response())
        resources = routes.stack_resources(project, name, request)
        events = routes.stack_events(project, name, request, marker=None, limit=50,
                                     sort_dir="desc")["events"]  # fmt: skip
        ops = routes.stack_operations(project, name, request, limit=10)["operations"]
    config = _config(request, stack)
    picture = ""
    if config is not None:
        types = {a: rc.type for a, rc in config.resources.items()}
        statuses = _statuses(request, stack, resources["resources"])
        picture = topology.svg(build_graph(config), types, statuses)
    running = next((op for op in ops if op.status in ("QUEUED", "IN_PROGRESS")), None)
    return render(
        request, "stack.html", user=who.user, project=project, stack=detail,
        resources=resources["resources"], pending=resources["pending"], events=events,
        operations=ops, running=running, template=stack.template, format=stack.format,
        topology=Markup(picture), loaded=config is not None,
        drift=_last_drift(store(request).stack_ops(stack.id, 20)),
        may_change=who.may_change(),
    )  # fmt: skip


@router.get("/{project}/stacks/{name}/status.json")
def stack_status(project: str, name: str, request: Request) -> Response:
    """What the topology's script polls: the stack's status and a class per resource."""
    session.in_project(request, project)
    stack = _stack_row(request, project, name)
    with api_errors():
        resources = routes.stack_resources(project, name, request)["resources"]
    statuses = _statuses(request, stack, resources)
    current = store(request).get_stack(project, name)
    return secured(JSONResponse({
        "status": current.status if current else "DELETE_COMPLETE",
        "nodes": {a: topology.status_class(s) for a, s in statuses.items()},
    }))  # fmt: skip


@router.get("/{project}/operations/{op_id}")
def operation_page(project: str, op_id: str, request: Request) -> Response:
    who = session.in_project(request, project)
    with api_errors():
        op = operations._operation(request, project, op_id)
    report = ""
    if op.action == "DRIFT" and op.result and "drift" in op.result:
        report = drift_text(DriftReport.model_validate(op.result["drift"]))
    return render(request, "operation.html", user=who.user, project=project, op=op,
                  op_json=views.op_out(op).model_dump(mode="json"), drift_report=report,
                  may_change=who.may_change())  # fmt: skip


@router.get("/{project}/stacks/{name}/resources/{address}")
def resource_page(project: str, name: str, address: str, request: Request) -> Response:
    who = session.in_project(request, project)
    stack = _stack_row(request, project, name)
    ws = routes._reader(request, stack)
    try:
        with api_errors():
            view = engine.state_view(ws)
    finally:
        ws.close()
    r = view.resources.get(address)
    if r is None:
        raise session.Refused(404, f"no resource '{address}' in stack '{name}'")
    attrs = r["attributes"] or {}
    server = r["type"] == "server" or "power_state" in attrs
    console = None
    if server and isinstance(attrs.get("console_log"), str):
        console = _console_tail(Path(attrs["console_log"]), view.snapshot.stack_id)
    return render(
        request, "resource.html", user=who.user, project=project, stack=stack, address=address,
        resource=r, attributes=attrs, server=server, console=console,
        addresses=attrs.get("addresses"), power_state=attrs.get("power_state"),
    )  # fmt: skip


def _console_tail(path: Path, stack_id: str) -> str:
    """The end of a server's console log, if the file lies in its stack's working directory
    (state names the path; the dashboard reads no other file), as printable text."""
    base = (data_root() / "stacks" / stack_id).resolve()
    try:
        real = path.resolve()
        if not real.is_relative_to(base):
            return "(the console log is not in this stack's directory)"
        with open(real, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - CONSOLE_TAIL))
            data = f.read(CONSOLE_TAIL)
    except FileNotFoundError:
        return "(no console log yet)"
    except OSError as exc:
        return f"(cannot read the console log: {exc.strerror})"
    text = data.decode("utf-8", errors="replace")
    lines = text.splitlines()
    if size > CONSOLE_TAIL and lines:
        lines = lines[1:]  # the first line is cut
    return "\n".join(printable(line) for line in lines)
