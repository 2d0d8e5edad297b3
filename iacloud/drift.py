"""The drift report: does what exists still match what was applied? (model and pure logic)

`build_report` compares recorded state with one refresh of every object and with the objects on
the host that carry an ownership tag; it touches nothing itself. The JSON form of `DriftReport`
is the documented `iacloud drift --json` schema (docs/drift-json.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from iacloud.diff import observed_drift
from iacloud.plan import Effective
from iacloud.provider import Observed, Registry, TaggedObject
from iacloud.redact import MASK
from iacloud.state.model import Snapshot
from iacloud.suppressions import Suppression

DRIFT_FORMAT = 1

Status = Literal["in-sync", "modified", "missing", "interrupted", "unknown"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AttributeDrift(_Frozen):
    """One input field whose real value differs from the recorded one."""

    attribute: str
    recorded: Any = None
    actual: Any = None
    sensitive: bool = False
    suppressed: bool = False
    # where `actual` holds, for an object with two definitions (a running server): "running
    # now", "from next boot" or both; empty for an object with one definition
    effective: list[Effective] = Field(default_factory=list)


class ResourceDrift(_Frozen):
    address: str
    type: str
    id: str | None
    status: Status
    differences: list[AttributeDrift] = Field(default_factory=list)
    suppressed: bool = False  # the whole finding is hidden by a suppression
    reason: str = ""  # why it is unknown (its host could not be read)

    @property
    def drifted(self) -> bool:
        if self.status in ("in-sync", "unknown") or self.suppressed:
            return False
        if self.status == "modified":
            return any(not d.suppressed for d in self.differences)
        return True


class HostObject(_Frozen):
    """An object on the host that state does not know: an orphan (it carries this stack's
    tag) or, with --all, an unmanaged one (no iacloud tag at all)."""

    type: str
    id: str
    address: str | None = None  # the address its tag claims
    suppressed: bool = False


class ExpiredSuppression(_Frozen):
    suppression: str
    until: date
    file: str
    line: int
    reason: str = ""


class Totals(_Frozen):
    resources: int
    in_sync: int
    modified: int
    missing: int
    interrupted: int
    orphaned: int
    unmanaged: int | None
    suppressed: int
    unknown: int = 0  # not checked: their host could not be read


class DriftReport(_Frozen):
    format_version: int = DRIFT_FORMAT
    stack: str
    stack_id: str
    serial: int  # the state version compared
    checked_at: str  # ISO 8601, UTC
    duration_seconds: float
    drifted: bool  # anything unsuppressed: the exit code is 2 exactly when this is true
    totals: Totals
    resources: list[ResourceDrift]
    orphans: list[HostObject]
    unmanaged: list[HostObject] | None = None  # None unless asked for (--all)
    expired_suppressions: list[ExpiredSuppression] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)  # what could not be checked, and why


def build_report(
    snapshot: Snapshot,
    observed: Mapping[str, Observed],
    tagged: Iterable[TaggedObject],
    registry: Registry,
    suppressions: Sequence[Suppression] = (),
    *,
    include_unmanaged: bool = False,
    now: datetime,
    duration: float = 0.0,
    warnings: Sequence[str] = (),
) -> DriftReport:
    """Compare state with what refresh observed and with the tagged objects on the host."""
    today = now.date()
    active = [s for s in suppressions if not s.expired(today)]

    def hidden(address: str | None, field: str | None = None) -> bool:
        return address is not None and any(s.covers(address, field) for s in active)

    resources: list[ResourceDrift] = []
    for address, rs in snapshot.resources.items():
        obs = observed.get(address)
        if obs is None:
            resources.append(
                ResourceDrift(address=address, type=rs.type, id=rs.id, status="missing",
                              suppressed=hidden(address))
            )  # fmt: skip
            continue
        if obs.unknown is not None:
            resources.append(
                ResourceDrift(address=address, type=rs.type, id=rs.id, status="unknown",
                              reason=obs.unknown)
            )  # fmt: skip
            continue
        type_cls = registry.types.get(rs.type)
        diffs = [] if type_cls is None else observed_drift(type_cls, rs.inputs, obs)
        masked = set(rs.sensitive_inputs)
        differences = [
            AttributeDrift(
                attribute=f.field,
                recorded=MASK if f.sensitive or f.field in masked else f.before,
                actual=MASK if f.sensitive or f.field in masked else f.after,
                sensitive=f.sensitive or f.field in masked,
                suppressed=hidden(address, f.field),
                effective=f.effective,
            )
            for f in diffs
        ]
        resources.append(
            ResourceDrift(
                address=address, type=rs.type, id=rs.id,
                status="modified" if differences else "in-sync",
                differences=differences,
                suppressed=bool(differences) and hidden(address),
            )
        )  # fmt: skip
    known_ids = {(rs.type, rs.id) for rs in snapshot.resources.values() if rs.id}
    known_addresses = set(snapshot.resources)
    reported: set[str] = set()
    for op in snapshot.pending:
        obs = observed.get(op.address)
        if op.address in snapshot.resources or op.address in reported:
            continue
        reported.add(op.address)
        if obs is not None:
            # a create cut off by a crash: the object exists and the next apply replaces it
            known_addresses.add(op.address)
            known_ids.add((op.type, obs.id))
        # Without an object the operation is still unfinished business (the next apply or
        # destroy resolves it), and any part it left (a server's volumes) is an orphan.
        resources.append(
            ResourceDrift(address=op.address, type=op.type, id=obs.id if obs else None,
                          status="interrupted", suppressed=hidden(op.address))
        )  # fmt: skip
    for address, obs in observed.items():  # an object found by its tag, not its recorded id
        if address in snapshot.resources:
            known_ids.add((snapshot.resources[address].type, obs.id))

    orphans: list[HostObject] = []
    unmanaged: list[HostObject] = []
    for t in tagged:
        if t.stack_id is None:
            if include_unmanaged:
                unmanaged.append(HostObject(type=t.type, id=t.id))
            continue
        if t.stack_id != snapshot.stack_id:
            continue  # another stack's business
        if t.part is not None:
            is_orphan = t.address not in known_addresses
        else:
            is_orphan = (t.type, t.id) not in known_ids
        if is_orphan:
            orphans.append(
                HostObject(type=t.type, id=t.id, address=t.address, suppressed=hidden(t.address))
            )

    expired = [
        ExpiredSuppression(
            suppression=s.text, until=s.until, file=s.file, line=s.line, reason=s.reason
        )
        for s in suppressions
        if s.until is not None and s.expired(today)
    ]
    count = {
        status: sum(1 for r in resources if r.status == status and r.drifted)
        for status in ("modified", "missing", "interrupted")
    }
    unknown = [r for r in resources if r.status == "unknown"]
    suppressed = sum(
        1 for r in resources if r.status not in ("in-sync", "unknown") and not r.drifted
    ) + sum(1 for o in orphans if o.suppressed)
    live_orphans = sum(1 for o in orphans if not o.suppressed)
    totals = Totals(
        resources=len(resources),
        in_sync=sum(1 for r in resources if r.status == "in-sync"),
        modified=count["modified"],
        missing=count["missing"],
        interrupted=count["interrupted"],
        orphaned=live_orphans,
        unmanaged=len(unmanaged) if include_unmanaged else None,
        suppressed=suppressed,
        unknown=len(unknown),
    )
    warnings = [*warnings, *(f"{r.address} not checked: {r.reason}" for r in unknown)]
    return DriftReport(
        stack=snapshot.stack,
        stack_id=snapshot.stack_id,
        serial=snapshot.serial,
        checked_at=now.isoformat(timespec="seconds"),
        duration_seconds=round(duration, 3),
        drifted=any(r.drifted for r in resources) or live_orphans > 0,
        totals=totals,
        resources=resources,
        orphans=orphans,
        unmanaged=unmanaged if include_unmanaged else None,
        expired_suppressions=expired,
        warnings=list(warnings),
    )
