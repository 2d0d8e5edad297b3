"""Resource schemas: per-field update policy (in place or replace) and disruption class.

Providers describe each resource type's inputs as a pydantic model whose fields are declared with
`prop()`; the planner reads the update policy from here and never hard-codes a type's rules.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo


class Disruption(str, Enum):
    """How much a change disturbs the running object, in increasing order."""

    NONE = "none"
    LIVE = "live"  # applied to the running object (hot-plug, grow, reload)
    RESTART = "restart"  # graceful shutdown and start
    REPLACE = "replace"  # delete and create anew
    DATA_LOSS = "data-loss"  # a replacement that discards stored data

    @property
    def rank(self) -> int:
        return _ORDER.index(self)

    def __str__(self) -> str:
        return self.value


_ORDER = list(Disruption)


def max_disruption(values: list[Disruption]) -> Disruption:
    return max(values, key=lambda d: d.rank, default=Disruption.NONE)


def prop(
    default: Any = ...,
    *,
    update: Disruption = Disruption.REPLACE,
    sensitive: bool = False,
    computed_default: bool = False,
    description: str | None = None,
    **kwargs: Any,
) -> Any:
    """Declare one input field of a resource type.

    update: the disruption of changing this field in place; REPLACE means the change forces
    a new object. sensitive: never printed. computed_default: when the user leaves the field
    out, the provider picks a value (a MAC, say) and a later plan must not call that a change.
    """
    extra = {"update": update.value, "sensitive": sensitive, "computed_default": computed_default}
    return Field(default, description=description, json_schema_extra=extra, **kwargs)


class Inputs(BaseModel):
    """Base class of every resource type's input model: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def field_update(info: FieldInfo) -> Disruption:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and "update" in extra:
        return Disruption(extra["update"])
    return Disruption.REPLACE


def field_flag(info: FieldInfo, flag: str) -> bool:
    extra = info.json_schema_extra
    return bool(isinstance(extra, dict) and extra.get(flag))
