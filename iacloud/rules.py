"""Lifecycle rules of one resource (a leaf model): Terraform's `lifecycle` table and Heat's
`DeletionPolicy`, as the stack file declares them and as state records them.

In a stack file: `lifecycle = { prevent_destroy = true, ignore_changes = ["size_gib"],
create_before_destroy = true }` and `deletion_policy = "retain"` beside `type`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DeletionPolicy = Literal["delete", "retain"]


class LifecycleTable(BaseModel):
    """The `lifecycle` table of a resource in a stack file (Terraform's names)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    # Heat: no direct equivalent (a stack-level `deletion_policy`/`Retain` comes closest)
    prevent_destroy: bool = False
    # Heat: none; a field whose value changes outside or in the stack is left as it is
    ignore_changes: list[str] = Field(default_factory=list, max_length=256)
    # Heat: replacement always creates first when the type allows it
    create_before_destroy: bool = False


class Lifecycle(LifecycleTable):
    """All rules of one resource; deletion_policy "retain" is Heat's DeletionPolicy: Retain."""

    deletion_policy: DeletionPolicy = "delete"

    @property
    def retain(self) -> bool:
        return self.deletion_policy == "retain"


DEFAULT = Lifecycle()


def normal(rules: Lifecycle | None) -> Lifecycle | None:
    """None for the default rules, so that state and plans carry rules only where declared."""
    return None if rules is None or rules == DEFAULT else rules
