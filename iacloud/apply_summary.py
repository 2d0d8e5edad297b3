"""What an apply did, as the CLI reports it: built from the engine's ApplyResult for a local
run and from a finished operation of `iacloud serve` for a remote one, printed by one
function (iacloud/cli/plan_apply.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from iacloud.engine import ApplyResult
from iacloud.errors import printable
from iacloud.redact import MASK, Redactor


@dataclass
class ApplySummary:
    complete: int  # steps complete
    state_updates: int  # a refresh-only apply: resources whose state was updated
    refresh_only: bool
    problems: list[tuple[str, str, str]]  # (failed|skipped, "kind address", error), redacted
    outputs: dict[str, Any]  # values as printed: sensitive ones masked
    ok: bool
    interrupted: bool = False
    abandoned: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, result: ApplyResult, redactor: Redactor, state_updates: int,
           refresh_only: bool) -> ApplySummary:  # fmt: skip
        problems = [
            (o.status, f"{o.step.kind} {o.step.change.address}",
             printable(redactor.text(o.error or "")))
            for o in result.outcomes if o.status in ("failed", "skipped")
        ]  # fmt: skip
        outputs = {
            name: MASK if entry["sensitive"] else redactor.value(entry["value"])
            for name, entry in (result.outputs or {}).items()
        }
        return cls(
            complete=sum(1 for o in result.outcomes if o.status == "complete"),
            state_updates=state_updates, refresh_only=refresh_only, problems=problems,
            outputs=outputs, ok=result.ok, interrupted=result.interrupted,
            abandoned=list(result.abandoned),
        )  # fmt: skip
