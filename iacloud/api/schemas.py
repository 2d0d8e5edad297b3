"""Request and response bodies of the HTTP API (pydantic): what /openapi.json describes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from iacloud import limits

MAX_TEMPLATE = limits.MAX_TOML_BYTES
MAX_PARAMETERS = 200


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StackCreate(_In):
    stack_name: str = Field(max_length=63, description="The stack's name in the project.")
    template: str = Field(max_length=MAX_TEMPLATE, description="A TOML stack or a HOT template.")
    format: Literal["toml", "hot"] | None = Field(
        None, description="Default: HOT if the text has heat_template_version, else TOML."
    )
    parameters: dict[str, Any] = Field(default_factory=dict, max_length=MAX_PARAMETERS)


class StackUpdate(_In):
    template: str | None = Field(
        None, max_length=MAX_TEMPLATE, description="PUT: required. PATCH: default the current one."
    )
    format: Literal["toml", "hot"] | None = None
    parameters: dict[str, Any] | None = Field(
        None, max_length=MAX_PARAMETERS,
        description="PUT: replace all (default none). PATCH: merged into the current ones.",
    )  # fmt: skip


class Links(BaseModel):
    self: str
    stack: str | None = None


class Operation(BaseModel):
    id: str
    project: str
    stack: str
    action: Literal["CREATE", "UPDATE", "DELETE", "DRIFT"]
    status: Literal["QUEUED", "IN_PROGRESS", "COMPLETE", "FAILED", "CANCELLED"]
    requested_by: str
    cancel_requested: bool
    worker: str | None = Field(description="The server (host:pid:id) that runs or ran it.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: dict[str, dict[str, Any]] = Field(description="Per resource: its last step.")
    error: dict[str, Any] | None
    result: dict[str, Any] | None
    links: Links


class Accepted(BaseModel):
    operation: Operation


class StackSummary(BaseModel):
    id: str
    name: str
    description: str
    status: str = Field(description="Heat's vocabulary: CREATE_IN_PROGRESS, UPDATE_COMPLETE, ...")
    status_reason: str
    revision: int
    created_at: datetime
    updated_at: datetime
    links: Links


class StackList(BaseModel):
    stacks: list[StackSummary]


class StackDetail(StackSummary):
    serial: int = Field(description="The state version; with the revision, the ETag.")
    etag: str
    format: str
    parameters: dict[str, Any]
    outputs: dict[str, Any]
    last_operation: str | None


class Resource(BaseModel):
    address: str
    type: str
    id: str
    status: str
    attributes: dict[str, Any]
    updated_at: datetime | None = None


class Resources(BaseModel):
    resources: list[Resource]
    pending: list[dict[str, Any]]


class EventOut(BaseModel):
    id: int
    time: datetime
    serial: int
    resource_name: str
    resource_type: str
    resource_action: str
    resource_status: str
    event: str
    reason: str


class Events(BaseModel):
    events: list[EventOut]


class Problem(BaseModel):
    message: str
    diagnostics: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    error: Problem
