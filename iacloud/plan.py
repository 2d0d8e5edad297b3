"""The plan: change actions, per-resource changes and drift notes (a leaf model, pure data).

A change carries `before` (the prior inputs, None for a create) and `after` (the planned
inputs, None for a delete). Values only known after apply are `{"__unknown__": expr}` in JSON
and `Unknown` in memory.

| action              | before        | after          |
|---------------------|---------------|----------------|
| no-op               | prior inputs  | same           |
| create              | None          | planned inputs |
| update              | prior inputs  | planned inputs |
| delete-then-create  | prior inputs  | planned inputs |
| create-then-delete  | prior inputs  | planned inputs |
| delete              | prior inputs  | None           |
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from iacloud.schema import Disruption

PLAN_FORMAT = 1


class Action(str, Enum):
    NOOP = "no-op"
    CREATE = "create"
    UPDATE = "update"
    DELETE_CREATE = "delete-then-create"
    CREATE_DELETE = "create-then-delete"
    DELETE = "delete"

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]

    @property
    def is_replace(self) -> bool:
        return self in (Action.DELETE_CREATE, Action.CREATE_DELETE)

    def __str__(self) -> str:
        return self.value


_SYMBOLS = {
    Action.NOOP: " ",
    Action.CREATE: "+",
    Action.UPDATE: "~",
    Action.DELETE_CREATE: "-/+",
    Action.CREATE_DELETE: "+/-",
    Action.DELETE: "-",
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# Where a real value holds, for an object with two definitions (a running server: the one it
# runs with, and the persistent one it boots with next).
RUNNING_NOW = "running now"
NEXT_BOOT = "from next boot"
Effective = Literal["running now", "from next boot"]


class FieldChange(_Frozen):
    """One changed input field.

    effective: in drift, where the real value (`after`) holds: running now, from next boot, or
    both; empty for an object with one definition. In a planned change, `["from next boot"]`
    marks a field only the persistent definition gets wrong (`before` is its value there): it is
    restored in that definition alone, without touching the running object."""

    field: str
    before: Any = None
    after: Any = None
    disruption: Disruption
    forces_replacement: bool = False
    sensitive: bool = False
    effective: list[Effective] = Field(default_factory=list)

    @property
    def next_boot_only(self) -> bool:
        return self.effective == [NEXT_BOOT]


class Change(_Frozen):
    address: str
    type: str
    provider: str
    action: Action
    id: str | None = None  # the existing object's id
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    fields: list[FieldChange] = Field(default_factory=list)
    disruption: Disruption = Disruption.NONE
    reasons: list[str] = Field(default_factory=list)  # why: replacement causes, drift, orphan
    dependencies: list[str] = Field(default_factory=list)  # addresses, for ordering


class DriftKind(str, Enum):
    """How an object differs from what state recorded."""

    MODIFIED = "modified"  # it exists, with other values
    MISSING = "missing"  # it is gone
    INTERRUPTED = "interrupted"  # a create was cut off and left it

    def __str__(self) -> str:
        return self.value


class DriftItem(_Frozen):
    """A difference between what state recorded and what really exists."""

    address: str
    type: str
    kind: DriftKind
    fields: list[FieldChange] = Field(default_factory=list)


class StateUpdate(_Frozen):
    """A change a plan makes to state alone (nothing on the host changes): accept an object
    as it really is, or forget one deleted outside iacloud (or a pending operation of an
    interrupted run that left nothing)."""

    address: str
    type: str
    action: Literal["accept", "forget"]
    id: str | None = None
    inputs: dict[str, Any] | None = None  # the accepted values (None for forget)
    attributes: dict[str, Any] | None = None
    fields: list[FieldChange] = Field(default_factory=list)  # the input fields that change
    sensitive: list[str] = Field(default_factory=list)  # inputs/attributes never printed
    reason: str = ""  # why a forget: the object is gone, or an interrupted step left nothing


class Plan(_Frozen):
    format_version: int = PLAN_FORMAT
    stack: str
    stack_file: str
    stack_id: str
    lineage: str
    serial: int  # the state serial the plan was made from; apply refuses another
    created_at: str
    destroy: bool = False
    refreshed: bool = True
    changes: list[Change]
    drift: list[DriftItem] = Field(default_factory=list)
    outputs: dict[str, Any] = Field(default_factory=dict)  # output expressions (JSON form)
    sensitive_outputs: list[str] = Field(default_factory=list)
    hidden_values: list[str] = Field(default_factory=list)  # for redaction at apply time
    provider_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    max_disruption: Disruption = Disruption.NONE
    # refresh-only: `changes` are all no-ops and `state_updates` say what state takes in
    refresh_only: bool = False
    state_updates: list[StateUpdate] = Field(default_factory=list)
    # counted resource names and their instance addresses, as the loader expanded them: what a
    # reference to a whole group names when apply resolves the values left unknown at plan time
    groups: dict[str, list[str]] = Field(default_factory=dict)

    def actionable(self) -> list[Change]:
        return [c for c in self.changes if c.action is not Action.NOOP]

    @property
    def has_changes(self) -> bool:
        return bool(self.actionable()) or bool(self.state_updates)

    def counts(self) -> dict[str, int]:
        counts = {"create": 0, "update": 0, "replace": 0, "delete": 0}
        for c in self.actionable():
            key = "replace" if c.action.is_replace else c.action.value
            counts[key] += 1
        return counts
