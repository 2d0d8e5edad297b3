"""What a provider sees of a stack at load time (`Provider.check_stack`): each resource's
properties as literal values where the loader knows them, and opaque markers where they are
known only once other resources exist. A model: it imports nothing from the engine, so a
provider checks its resources against each other without knowing how expressions are written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Reference:
    """Another resource's id (`attribute` None) or one of its attributes, known after apply.
    `address` is the resource's address ("lan", "web[1]"), or a counted resource's bare name
    when no index was given."""

    address: str
    attribute: str | None = None
    path: tuple[str | int, ...] = ()


@dataclass(frozen=True)
class Computed:
    """A value computed from references (a string built from an id): known after apply only."""

    references: tuple[Reference, ...] = ()


@dataclass(frozen=True)
class ResourceView:
    address: str
    type: str
    properties: Mapping[str, Any]  # literals, lists and tables, with Reference / Computed inside


def is_known(value: Any) -> bool:
    """Whether a value holds no Reference or Computed anywhere inside."""
    if isinstance(value, (Reference, Computed)):
        return False
    if isinstance(value, Mapping):
        return all(is_known(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(is_known(v) for v in value)
    return True
