"""The operation routes: show (status, progress per resource, error, result), wait (a long
poll), cancel (Ctrl-C), and the event stream (Server-Sent Events)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from iacloud.api import auth
from iacloud.api.schemas import Operation
from iacloud.api.store import OperationRow
from iacloud.api.views import RESPONSES, op_out, settings_of, store_of

router = APIRouter(prefix="/v1/{project}", responses=RESPONSES)


def _operation(request: Request, project: str, op_id: str) -> OperationRow:
    op = store_of(request).get_op(op_id) if len(op_id) <= 64 else None
    if op is None or op.project != project:
        raise HTTPException(404, {"message": f"no operation '{op_id[:64]}'"})
    return op


@router.get("/operations/{op_id}", response_model=Operation)
def show_operation(project: str, op_id: str, request: Request) -> Operation:
    """Status, progress per resource, error and result (a drift report for DRIFT)."""
    auth.in_project(request, project)
    return op_out(_operation(request, project, op_id))


@router.get("/operations/{op_id}/wait", response_model=Operation)
async def wait_operation(
    project: str, op_id: str, request: Request,
    timeout: float = Query(30.0, ge=0, description="Seconds; at most the server's limit (60)."),
) -> Operation:  # fmt: skip
    """Long poll: answers when the operation is finished or after `timeout` seconds, with the
    operation either way."""
    await run_in_threadpool(auth.in_project, request, project)
    deadline = time.monotonic() + min(timeout, settings_of(request).max_wait)
    waiters = request.app.state.waiters
    while True:
        op = await run_in_threadpool(_operation, request, project, op_id)
        remaining = deadline - time.monotonic()
        if op.done or remaining <= 0:
            return op_out(op)
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
    return op_out(_operation(request, project, op_id))


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
    store = store_of(request)
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
