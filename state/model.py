"""State records: what iacloud created, its history, its journal and its events (a leaf model)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from iacloud.rules import Lifecycle


def now() -> datetime:
    return datetime.now(timezone.utc)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResourceState(_Model):
    """One real object as recorded after the step that last touched it."""

    address: str  # "web[0]"
    type: str
    provider: str
    id: str
    inputs: dict[str, Any]  # the inputs it was created/updated with, fully resolved
    attributes: dict[str, Any]
    dependencies: list[str] = Field(default_factory=list)  # addresses it depended on
    sensitive_inputs: list[str] = Field(default_factory=list)  # never printed
    sensitive_attributes: list[str] = Field(default_factory=list)  # never printed
    status: str = "CREATE_COMPLETE"  # the Heat ACTION_STATUS of its last step
    updated_at: datetime = Field(default_factory=now)
    # the rules it was applied with (None: the defaults): they still hold once the stack no
    # longer declares it (prevent_destroy, deletion_policy) and on destroy
    lifecycle: Lifecycle | None = None

    @model_serializer(mode="wrap")
    def _without_default_rules(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # a resource without rules is stored as before they existed, so an older iacloud
        # (whose model forbids unknown keys) still reads a state this one wrote
        data = handler(self)
        if data.get("lifecycle") is None:
            data.pop("lifecycle", None)
        return data


class PendingOperation(_Model):
    """A step that was about to touch a host: written before the provider call, removed (in the
    same transaction as the result) after it. A leftover one means a run died mid-step."""

    address: str
    type: str
    provider: str
    action: Literal["create", "update", "delete"]
    id: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    dependencies: list[str] = Field(default_factory=list)
    serial: int
    started_at: datetime = Field(default_factory=now)


class Event(_Model):
    """Heat-style event: action (CREATE, UPDATE, DELETE, ...) and status (IN_PROGRESS, ...)."""

    time: datetime = Field(default_factory=now)
    serial: int
    address: str
    type: str
    action: str
    status: Literal["IN_PROGRESS", "COMPLETE", "FAILED"]
    reason: str = ""

    @property
    def action_status(self) -> str:
        return f"{self.action}_{self.status}"


# rollback_*: the version an `apply --rollback` wrote undoing a failed run (Heat's
# ROLLBACK_COMPLETE / ROLLBACK_FAILED)
VersionStatus = Literal[
    "in_progress", "complete", "failed", "interrupted", "rollback_complete", "rollback_failed"
]


class StateVersion(_Model):
    serial: int
    lineage: str
    command: str  # "apply", "destroy", "state rm", ...
    status: VersionStatus
    created_at: datetime
    finished_at: datetime | None = None


class LockInfo(_Model):
    holder: str  # user@host
    pid: int
    operation: str
    since: datetime
    id: str = ""  # what 'iacloud state unlock ID' names, so it removes this lock and no later one

    def describe(self) -> str:
        return (
            f"{self.holder} (pid {self.pid}) has held it for '{self.operation}' "
            f"since {self.since.isoformat(timespec='seconds')} (lock id {self.id})"
        )


class Snapshot(_Model):
    """A stack's state at one serial."""

    stack: str
    stack_id: str
    lineage: str
    serial: int  # 0 when nothing was ever applied
    resources: dict[str, ResourceState] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    pending: list[PendingOperation] = Field(default_factory=list)


class ResourceRow(_Model):
    """One stored resource interval: valid for serials [serial_from, serial_to)."""

    address: str
    serial_from: int
    serial_to: int | None = None
    resource: ResourceState


class VersionRecord(_Model):
    """A state version with the outputs it closed with (None: the previous ones stand)."""

    version: StateVersion
    outputs: dict[str, Any] | None = None


class StackHistory(_Model):
    """A stack's whole stored history, as `state push`/`pull` copy it between backends."""

    stack: str
    stack_id: str
    lineage: str
    created_at: datetime
    versions: list[VersionRecord] = Field(default_factory=list)
    resources: list[ResourceRow] = Field(default_factory=list)
    pending: list[PendingOperation] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list)

    @property
    def serial(self) -> int:
        return max((v.version.serial for v in self.versions), default=0)
