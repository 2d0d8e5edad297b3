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

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from iacloud.rules import Lifecycle
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


class ReasonCode(str, Enum):
    """Why a change has its action (Terraform's action reasons): for code and the plan JSON;
    people read the text derived from it (`Reason.text`)."""

    DELETED_OUTSIDE = "deleted_outside"  # recorded, gone from the host: created again
    FORCES_REPLACEMENT = "forces_replacement"  # `fields` cannot change in place
    REPLACE_REQUESTED = "replace_requested"  # --replace
    CREATE_INTERRUPTED = "create_interrupted"  # the object's create was cut off
    NEXT_BOOT_ONLY = "next_boot_only"  # only the persistent definition differs in `fields`
    DESTROY_REQUESTED = "destroy_requested"
    NOT_IN_STACK = "not_in_stack"  # in state, no longer in the stack file
    LEFT_BY_INTERRUPTED = "left_by_interrupted"  # `ids` found by tag after a cut-off `step`
    PLACED = "placed"  # the scheduler chose its host: `detail` says which and why
    NOT_IN_PLACE = "not_in_place"  # `fields` cannot change in place this time: `detail` why
    OTHER = "other"  # a reason only known as text (`detail`): a plan saved by an older iacloud


class Reason(_Frozen):
    code: ReasonCode
    fields: list[str] = Field(default_factory=list)
    ids: list[str] = Field(default_factory=list)
    step: str = ""
    detail: str = ""

    @property
    def text(self) -> str:
        fields = ", ".join(self.fields)
        match self.code:
            case ReasonCode.DELETED_OUTSIDE:
                return "deleted outside iacloud"
            case ReasonCode.FORCES_REPLACEMENT:
                return f"changing {fields} forces replacement"
            case ReasonCode.REPLACE_REQUESTED:
                return "replacement requested with --replace"
            case ReasonCode.CREATE_INTERRUPTED:
                return "its create was interrupted; the object cannot be trusted"
            case ReasonCode.NEXT_BOOT_ONLY:
                return (
                    f"{fields}: only the persistent definition (from next boot) differs; "
                    "restored there, the running object is not touched"
                )
            case ReasonCode.DESTROY_REQUESTED:
                return "destroy requested"
            case ReasonCode.NOT_IN_STACK:
                return "not in the stack any more"
            case ReasonCode.LEFT_BY_INTERRUPTED:
                ids = ", ".join(self.ids)
                return f"left by an interrupted {self.step}: {ids} (found by its ownership tag)"
            case ReasonCode.PLACED:
                return f"placed on {self.detail}"
            case ReasonCode.NOT_IN_PLACE:
                return f"{fields} cannot change in place: {self.detail}"
        return self.detail


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
    why: list[Reason] = Field(default_factory=list)  # replacement causes, drift, orphans
    dependencies: list[str] = Field(default_factory=list)  # addresses, for ordering
    # the resource's lifecycle rules, recorded in state with it (None: the defaults)
    lifecycle: Lifecycle | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def reasons(self) -> list[str]:
        """`why` as people read it (also in the plan JSON, for readers of format 1)."""
        return [r.text for r in self.why]

    @model_validator(mode="before")
    @classmethod
    def _saved_reasons(cls, data: Any) -> Any:
        # A saved plan holds the derived `reasons` too; one saved before `why` existed holds
        # only them, kept as text.
        if isinstance(data, dict) and "reasons" in data:
            data = dict(data)
            texts = data.pop("reasons")
            if "why" not in data and isinstance(texts, list):
                data["why"] = [{"code": ReasonCode.OTHER, "detail": str(t)} for t in texts]
        return data


class DriftKind(str, Enum):
    """How an object differs from what state recorded."""

    MODIFIED = "modified"  # it exists, with other values
    MISSING = "missing"  # it is gone
    INTERRUPTED = "interrupted"  # a create was cut off and left it
    UNKNOWN = "unknown"  # it could not be read (its host is down): `reason` says why

    def __str__(self) -> str:
        return self.value


class DriftItem(_Frozen):
    """A difference between what state recorded and what really exists."""

    address: str
    type: str
    kind: DriftKind
    fields: list[FieldChange] = Field(default_factory=list)
    reason: str = ""


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
    # a forget of an object that stays on the host: deletion_policy = "retain"
    retained: bool = False
    # accept: the lifecycle rules state records from now on (changed in the stack alone)
    lifecycle: Lifecycle | None = None


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
