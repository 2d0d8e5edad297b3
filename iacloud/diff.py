"""Comparing inputs (pure logic): normalizing planned inputs, diffing them against the prior
ones, and drift between recorded and observed values; used by the planner, drift and apply.

An object with two definitions (a running server: the one it runs with, and the persistent one
it boots with next) reports the persistent fields beside the live ones (`Observed.next_boot`).
Drift in either is drift, labelled with where it holds ("running now", "from next boot", or
both); a field no definition holds (a server's power state) is not labelled. A field whose live
value already is the planned one but whose persistent value is not is restored in the
persistent definition alone: the running object is not touched, so the change costs at most
`live`, whatever its field's own update class.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from iacloud import expressions
from iacloud.expressions import Unknown, has_unknown
from iacloud.plan import NEXT_BOOT, RUNNING_NOW, Change, Effective, FieldChange
from iacloud.provider import Observed, ResourceType
from iacloud.schema import Disruption, field_flag, field_update


def normalize_inputs(type_cls: type[ResourceType], values: Mapping[str, Any]) -> dict[str, Any]:
    """Inputs with the schema's defaults filled in, in JSON form; fields holding values
    unknown until apply are kept as they are. Raises ValidationError."""
    unknown = {k: v for k, v in values.items() if has_unknown(v)}
    known = {k: v for k, v in values.items() if k not in unknown}
    if not unknown:
        return type_cls.Inputs.model_validate(known).model_dump(mode="json")
    try:
        model = type_cls.Inputs.model_validate(known)
        out = model.model_dump(mode="json")
    except ValidationError as exc:
        errors = [e for e in exc.errors() if not (e["loc"] and e["loc"][0] in unknown)]
        if errors:
            raise
        out = {}
        for name, info in type_cls.Inputs.model_fields.items():
            if name in known:
                out[name] = known[name]
            elif not info.is_required():
                out[name] = info.get_default(call_default_factory=True)
    out.update(unknown)
    return out


def diff_inputs(
    type_cls: type[ResourceType], before: Mapping[str, Any], after: Mapping[str, Any]
) -> list[FieldChange]:
    """The fields whose planned value differs from the prior one, with their cost."""
    changes = []
    for name, info in type_cls.Inputs.model_fields.items():
        old, new = before.get(name), after.get(name)
        if not isinstance(new, Unknown) and old == new:
            continue
        if (
            isinstance(new, Unknown) is False
            and new is None
            and field_flag(info, "computed_default")
        ):
            continue  # the provider chose the value; leaving it out is not a change
        if name not in after and name not in before:
            continue
        update = field_update(info)
        changes.append(
            FieldChange(
                field=name,
                before=old,
                after=expressions.to_json(new),
                disruption=update,
                forces_replacement=update is Disruption.REPLACE,
                sensitive=field_flag(info, "sensitive"),
            )
        )
    return changes


_MISSING = object()


def _change(
    name: str, info: FieldInfo, before: Any, after: Any, effective: Iterable[Effective] = ()
) -> FieldChange:
    update = field_update(info)
    return FieldChange(
        field=name, before=before, after=after, disruption=update,
        forces_replacement=update is Disruption.REPLACE,
        sensitive=field_flag(info, "sensitive"), effective=list(effective),
    )  # fmt: skip


def observed_drift(
    type_cls: type[ResourceType], recorded: Mapping[str, Any], obs: Observed
) -> list[FieldChange]:
    """Fields whose real value differs from the recorded one (only what the provider sees).

    One entry per field and real value: a field that differs the same way running now and from
    next boot is one entry holding both; one whose two definitions disagree with each other
    (and with state) is two."""
    fields = type_cls.Inputs.model_fields
    nb = obs.next_boot
    out = []
    names = [*obs.inputs, *(n for n in nb or () if n not in obs.inputs)]
    for name in names:
        if name not in fields:
            continue
        info = fields[name]
        rec = recorded.get(name)
        live = obs.inputs.get(name, rec)  # an unobserved field keeps its recorded value
        if nb is None or name not in nb:
            if live != rec:
                out.append(_change(name, info, rec, live))
            continue
        boot = nb[name]
        if live != rec and boot == live:
            out.append(_change(name, info, rec, live, (RUNNING_NOW, NEXT_BOOT)))
            continue
        if live != rec:
            out.append(_change(name, info, rec, live, (RUNNING_NOW,)))
        if boot != rec:
            out.append(_change(name, info, rec, boot, (NEXT_BOOT,)))
    return out


def next_boot_changes(
    type_cls: type[ResourceType],
    observed: Observed | None,
    after: Mapping[str, Any],
    planned: Iterable[FieldChange],
) -> list[FieldChange]:
    """The fields only the persistent definition gets wrong: the running object already has the
    planned value (the field is not among the `planned` live changes), its next boot would not.
    `before` is the persistent value; the disruption is `live` at most (a field that can only
    change by replacement still forces one)."""
    if observed is None or not observed.next_boot:
        return []
    fields = type_cls.Inputs.model_fields
    taken = {f.field for f in planned}
    out = []
    for name, boot in observed.next_boot.items():
        new = after.get(name, _MISSING)
        if name in taken or name not in fields or new is _MISSING or isinstance(new, Unknown):
            continue  # an unknown value is a planned live change already
        if new == boot:
            continue
        change = _change(name, fields[name], boot, new, (NEXT_BOOT,))
        if not change.forces_replacement and change.disruption.rank > Disruption.LIVE.rank:
            change = change.model_copy(update={"disruption": Disruption.LIVE})
        out.append(change)
    return out


def next_boot_fields(change: Change, resolved: Mapping[str, Any]) -> frozenset[str]:
    """At apply: the fields of a planned update to restore in the persistent definition (their
    value at apply time still differs from what that definition held at plan time)."""
    return frozenset(
        f.field
        for f in change.fields
        if f.next_boot_only and resolved.get(f.field, _MISSING) != f.before
    )
