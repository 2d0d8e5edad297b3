"""What the route modules share: the app's store and settings, URLs, the operation view."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from iacloud.api.app import ServeSettings
from iacloud.api.schemas import ErrorBody, Links, Operation
from iacloud.api.store import OperationRow, Store

RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Bad input: diagnostics name file, resource, field"},
    401: {"model": ErrorBody}, 404: {"model": ErrorBody},
}  # fmt: skip


def store_of(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def settings_of(request: Request) -> ServeSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def stack_url(project: str, name: str) -> str:
    return f"/v1/{project}/stacks/{name}"


def op_url(project: str, op_id: str) -> str:
    return f"/v1/{project}/operations/{op_id}"


def op_out(op: OperationRow) -> Operation:
    return Operation(
        id=op.id, project=op.project, stack=op.stack, action=op.action,  # type: ignore[arg-type]
        status=op.status, requested_by=op.requested_by,  # type: ignore[arg-type]
        cancel_requested=op.cancel_requested, worker=op.worker, created_at=op.created_at,
        started_at=op.started_at, finished_at=op.finished_at, progress=op.progress,
        error=op.error, result=op.result,
        links=Links(self=op_url(op.project, op.id), stack=stack_url(op.project, op.stack)),
    )  # fmt: skip
