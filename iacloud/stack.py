"""The raw stack file (format version 1) as pydantic models: the TOML's shape, nothing resolved.

This module is a leaf. It checks only what the TOML alone decides (key names, value types,
constraint syntax); the loader (`iacloud.loading`) resolves parameters, references and counts and
turns every validation error into a located Diagnostic. Models are strict because TOML values
already carry their types: `version = "1"` or `hidden = "yes"` are mistakes, not conversions.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from iacloud.patterns import compile_pattern
from iacloud.rules import DeletionPolicy, LifecycleTable

FORMAT_VERSION = 1
STACK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
# resource, parameter and output names: they become addresses ("web[0]") and reach host objects
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,62}")
INDEX_TOKEN = "%index%"
MAX_COUNT = 10_000

ParamType = Literal["string", "number", "boolean", "list", "map"]
PARAM_TYPES: tuple[str, ...] = ("string", "number", "boolean", "list", "map")
RESOURCE_KEYS = ("type", "depends_on", "count", "lifecycle", "deletion_policy")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RangeBounds(_Model):
    min: int | float | None = None
    max: int | float | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> RangeBounds:
        if self.min is None and self.max is None:
            raise ValueError("range needs 'min', 'max' or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"range min ({self.min}) is greater than max ({self.max})")
        return self


class LengthBounds(_Model):
    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _some_bound(self) -> LengthBounds:
        if self.min is None and self.max is None:
            raise ValueError("length needs 'min', 'max' or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"length min ({self.min}) is greater than max ({self.max})")
        return self


CONSTRAINT_KINDS = ("allowed_values", "range", "length", "allowed_pattern", "custom_constraint")
# Heat's custom constraints iacloud checks: the site catalog's names (iacloud.site), and
# address syntax
CUSTOM_CONSTRAINTS = (
    "nova.flavor",
    "glance.image",
    "nova.keypair",
    "neutron.network",
    "ip_addr",
    "net_cidr",
    "mac_addr",
)


class Constraint(_Model):
    """One of Heat's parameter constraints; `description` replaces the default message."""

    allowed_values: list[Any] | None = Field(None, min_length=1)
    range: RangeBounds | None = None
    length: LengthBounds | None = None
    allowed_pattern: str | None = None
    custom_constraint: str | None = None
    description: str | None = None

    @field_validator("custom_constraint")
    @classmethod
    def _known_custom(cls, name: str | None) -> str | None:
        if name is not None and name not in CUSTOM_CONSTRAINTS:
            raise ValueError(
                f"unsupported custom_constraint {name!r}: iacloud checks "
                + ", ".join(CUSTOM_CONSTRAINTS)
            )
        return name

    @field_validator("allowed_pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            compile_pattern(pattern)  # PatternError is a ValueError: reported on the field
        return pattern

    @model_validator(mode="after")
    def _one_kind(self) -> Constraint:
        kinds = [k for k in CONSTRAINT_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            raise ValueError(
                f"a constraint needs exactly one of {', '.join(CONSTRAINT_KINDS)}; found {found}"
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in CONSTRAINT_KINDS if getattr(self, k) is not None)


class ParameterDef(_Model):
    """`[parameters.NAME]`. A parameter without `default` must be given a value."""

    type: ParamType
    default: Any = None  # TOML has no null, so None means "no default"
    description: str = ""
    label: str | None = None
    hidden: bool = False
    constraints: list[Constraint] = Field(default_factory=list)

    @property
    def has_default(self) -> bool:
        return self.default is not None


class OutputDef(_Model):
    """`[outputs.NAME]`."""

    value: Any
    description: str = ""
    sensitive: bool = False


class ResourceDef(_Model):
    """`[resources.NAME]`: the reserved keys, and every other key as a property of the type."""

    type: str
    depends_on: list[str] = Field(default_factory=list)
    count: int | dict[str, Any] | None = None
    lifecycle: LifecycleTable | None = None
    deletion_policy: DeletionPolicy = "delete"
    properties: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        # a property may be called anything (even "properties"), so only reserved keys stay
        if not isinstance(data, dict):
            return data
        out = {k: data[k] for k in RESOURCE_KEYS if k in data}
        out["properties"] = {k: v for k, v in data.items() if k not in RESOURCE_KEYS}
        return out

    @field_validator("count", mode="before")
    @classmethod
    def _count_shape(cls, value: Any) -> Any:
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        if isinstance(value, dict):
            return value
        raise ValueError('expected an integer or { get_param = "name" }')


class StackFile(_Model):
    """The top level of a stack file. Sections stay raw tables here; the loader validates each
    entry on its own so that one bad resource does not hide the mistakes in the others."""

    version: int
    name: str | None = None
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)
    resources: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    provider: dict[str, Any] = Field(default_factory=dict)

    @field_validator("version")
    @classmethod
    def _supported(cls, version: int) -> int:
        if version != FORMAT_VERSION:
            raise ValueError("unsupported stack format version: expected 1")
        return version

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str | None) -> str | None:
        if name is not None and not STACK_NAME.fullmatch(name):
            raise ValueError(
                "a stack name is 1 to 63 letters, digits, '_' or '-', starting with a letter "
                "or digit"
            )
        return name


class EnvFile(_Model):
    """An environment file (`-e env.toml`): parameter values only."""

    parameters: dict[str, Any] = Field(default_factory=dict)
