"""The resolved configuration of a stack: what the loader hands to the planner (a leaf model).

Parameters are already substituted and `count` expanded: every resource instance has its own
address ("web[0]"), and its properties hold plain values plus expression nodes
(`iacloud.expressions`) for references to other resources, evaluated during plan and apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iacloud.errors import Diagnostic
from iacloud.rules import Lifecycle


@dataclass(frozen=True)
class ResourceConfig:
    address: str  # "web[1]", or "lan" when not counted
    name: str  # "web"
    index: int | None
    type: str
    provider: str
    properties: dict[str, Any]  # raw inputs: values and expression nodes
    depends_on: tuple[str, ...]  # addresses: references and explicit depends_on, sorted
    lifecycle: Lifecycle | None = None  # None: the default rules


@dataclass(frozen=True)
class OutputConfig:
    name: str
    value: Any  # value with expression nodes
    description: str = ""
    sensitive: bool = False


@dataclass
class StackConfig:
    """A validated stack: nothing in it can fail to parse."""

    name: str
    file: Path
    description: str
    parameters: dict[str, Any]
    hidden_values: list[str]  # values of hidden parameters, redacted wherever printed
    resources: dict[str, ResourceConfig]  # by address, in file order
    groups: dict[str, list[str]]  # counted resource name -> its addresses (possibly empty)
    outputs: dict[str, OutputConfig]
    provider_settings: dict[str, Any] = field(default_factory=dict)  # name -> ProviderSettings
    # what the file asked for that was accepted but has no effect here (HOT's availability_zone)
    notes: list[Diagnostic] = field(default_factory=list)

    @property
    def directory(self) -> Path:
        return self.file.parent
