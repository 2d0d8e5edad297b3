"""Plans, drift and events as text for people (colour on a TTY), JSON for tools, Markdown for
review comments. Hidden values are masked here, at the one place values are printed."""

from __future__ import annotations

import json
import secrets
from typing import Any

import click

from iacloud.drift import DriftReport
from iacloud.plan import Action, Change, DriftKind, FieldChange, Plan
from iacloud.redact import MASK, Redactor

_COLOURS = {
    Action.CREATE: "green",
    Action.UPDATE: "yellow",
    Action.DELETE_CREATE: "magenta",
    Action.CREATE_DELETE: "magenta",
    Action.DELETE: "red",
}


UNKNOWN = "(known after apply)"


def _is_unknown(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"__unknown__"}


def _mark_unknowns(value: Any, marker: str) -> Any:
    """`value` with every {"__unknown__": expr}, at any depth, replaced by `marker`."""
    if _is_unknown(value):
        return marker
    if isinstance(value, dict):
        return {k: _mark_unknowns(v, marker) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mark_unknowns(v, marker) for v in value]
    return value


def _value(value: Any, redactor: Redactor, sensitive: bool = False) -> str:
    """One planned value as JSON text, with `(known after apply)` (unquoted, as Terraform
    prints it) wherever a value is only known after apply, also inside lists and tables."""
    if sensitive:
        return MASK
    if _is_unknown(value):
        return UNKNOWN
    # a marker no stack value can hold (fresh per call), swapped for the bare words once
    # the rest is JSON-encoded
    marker = f"\0unknown-{secrets.token_hex(8)}\0"
    text = json.dumps(
        _mark_unknowns(redactor.value(value), marker), default=str, sort_keys=True
    ).replace(json.dumps(marker), UNKNOWN)
    return text if len(text) <= 120 else text[:117] + "..."


def _where(effective: list[str]) -> str:
    """Where a value holds on an object with two definitions: " (running now, from next boot)"."""
    return f" ({', '.join(effective)})" if effective else ""


def _field_line(f: FieldChange, redactor: Redactor) -> str:
    boot = ", from next boot" if f.next_boot_only else ""
    note = f"  [{f.disruption}{', forces replacement' if f.forces_replacement else ''}{boot}]"
    before = _value(f.before, redactor, f.sensitive)
    after = _value(f.after, redactor, f.sensitive)
    return f"      {f.field}: {before} -> {after}{note}"


def summary_line(plan: Plan) -> str:
    if plan.refresh_only:
        if not plan.state_updates:
            return "No changes. State already matches the real objects."
        accept = sum(1 for u in plan.state_updates if u.action == "accept")
        forget = len(plan.state_updates) - accept
        return (
            f"Refresh-only: {accept} to update in state, {forget} to forget. "
            "Nothing on the host changes."
        )
    n = plan.counts()
    if not plan.has_changes:
        return "No changes. The stack matches the recorded state and the real objects."
    retained = sum(1 for u in plan.state_updates if u.retained)
    recorded = sum(1 for u in plan.state_updates if u.lifecycle is not None and not u.fields)
    outside = len(plan.state_updates) - retained - recorded
    taken = "; ".join(
        part
        for part in (
            f"state takes in {outside} change(s) made outside iacloud" if outside else "",
            f"{retained} to forget (retained: left on the host)" if retained else "",
            f"{recorded} with new lifecycle rules recorded" if recorded else "",
        )
        if part
    )
    if not plan.actionable():
        return f"No changes on the host; {taken}."
    text = (
        f"Plan: {n['create']} to create, {n['update']} to update, "
        f"{n['replace']} to replace, {n['delete']} to delete"
    )
    return f"{text}; {taken}." if taken else f"{text}."


def plan_text(plan: Plan, colour: bool = False) -> str:
    redactor = Redactor(plan.hidden_values)
    lines: list[str] = []

    def styled(text: str, fg: str | None = None, bold: bool = False) -> str:
        return click.style(text, fg=fg, bold=bold) if colour else text

    unknown = [d for d in plan.drift if d.kind is DriftKind.UNKNOWN]
    if unknown:
        lines.append(
            styled("Not reachable (left as recorded, nothing planned for them):", bold=True)
        )
        lines.extend(f"  {d.address} ({d.type}): {d.reason}" for d in unknown)
        lines.append("")
    changed = [d for d in plan.drift if d.kind is not DriftKind.UNKNOWN]
    if changed:
        lines.append(styled("Changed outside iacloud:", bold=True))
        for d in changed:
            lines.append(f"  {d.address} ({d.type}): {d.kind}")
            for f in d.fields:
                before = _value(f.before, redactor, f.sensitive)
                after = _value(f.after, redactor, f.sensitive)
                lines.append(
                    f"      {f.field}: recorded {before}, actual {after}{_where(f.effective)}"
                )
        lines.append("")
    if plan.state_updates:
        lines.append(styled("State will take in the real objects:", bold=True))
        for u in plan.state_updates:
            if u.retained:
                lines.append(
                    styled(f"    - {u.address} ({u.type})", "cyan")
                    + f"  forget (retained): {u.reason}"
                )
                continue
            if u.action == "forget":
                why = u.reason or "it no longer exists"
                lines.append(styled(f"    - {u.address} ({u.type})", "red") + f"  forget: {why}")
                continue
            if u.lifecycle is not None and not u.fields:
                lines.append(styled(f"    ~ {u.address} ({u.type})", "yellow") + f"  {u.reason}")
                continue
            what = ", ".join(f.field for f in u.fields) or "attributes"
            lines.append(styled(f"    ~ {u.address} ({u.type})", "yellow") + f"  accept {what}")
        lines.append("")
    actionable = plan.actionable()
    if actionable:
        lines.append(styled("Planned changes:", bold=True))
    for c in actionable:
        lines.extend(change_lines(c, redactor, styled))
    if actionable:
        lines.append("")
        lines.append(f"Most disruptive change: {plan.max_disruption}")
    lines.append(styled(summary_line(plan), bold=True))
    return "\n".join(lines)


def change_lines(c: Change, redactor: Redactor, styled: Any) -> list[str]:
    head = f"  {c.action.symbol:>3} {c.address} ({c.type})"
    detail = c.action.value
    if c.action is Action.UPDATE or c.action.is_replace:
        detail += f", {c.disruption}"
    lines = [styled(head, _COLOURS.get(c.action)) + f"  {detail}"]
    for reason in c.reasons:
        lines.append(f"      # {reason}")
    if c.action is Action.CREATE and c.after:
        for name, value in c.after.items():
            if value is not None and value != [] and value != {}:
                lines.append(f"      {name}: {_value(value, redactor)}")
    else:
        lines.extend(_field_line(f, redactor) for f in c.fields)
    return lines


def plan_json(plan: Plan) -> dict[str, Any]:
    """The documented machine-readable plan (docs/plan-json.md): the saved plan with hidden
    values masked and a summary added."""
    redactor = Redactor(plan.hidden_values)
    data = plan.model_dump(mode="json", exclude={"hidden_values"})
    for change in data["changes"]:
        for key in ("before", "after"):
            change[key] = redactor.value(change[key])
        for f in change["fields"]:
            if f["sensitive"]:
                f["before"] = f["after"] = MASK
            else:
                f["before"], f["after"] = redactor.value(f["before"]), redactor.value(f["after"])
    for update in data["state_updates"]:
        for key in ("inputs", "attributes"):
            if update[key] is not None:
                update[key] = {
                    k: MASK if k in update["sensitive"] else redactor.value(v)
                    for k, v in update[key].items()
                }
        for f in update["fields"]:
            if f["sensitive"] or f["field"] in update["sensitive"]:
                f["before"] = f["after"] = MASK
            else:
                f["before"], f["after"] = redactor.value(f["before"]), redactor.value(f["after"])
    data["summary"] = {
        **plan.counts(),
        "state_updates": len(plan.state_updates),
        "has_changes": plan.has_changes,
    }
    data["provider_settings"] = redactor.value(data["provider_settings"])
    data["outputs"] = {
        name: MASK if name in plan.sensitive_outputs else redactor.value(value)
        for name, value in data["outputs"].items()
    }
    return data


def plan_markdown(plan: Plan) -> str:
    redactor = Redactor(plan.hidden_values)
    out = [f"### iacloud plan for `{plan.stack}`", "", f"**{summary_line(plan)}**", ""]
    if plan.drift:
        out += ["#### Changed outside iacloud", "", "| resource | type | drift |", "|---|---|---|"]
        out += [
            f"| `{d.address}` | {d.type} | {d.kind}"
            + "".join(f"; `{f.field}`{_where(f.effective)}" for f in d.fields if f.effective)
            + " |"
            for d in plan.drift
        ]
        out.append("")
    if plan.state_updates:
        out += ["| | resource | type | state takes in |", "|---|---|---|---|"]
        for u in plan.state_updates:
            what = "forget" if u.action == "forget" else ", ".join(f.field for f in u.fields)
            if u.retained:
                what = "forget (retained)"
            symbol = "-" if u.action == "forget" else "~"
            out.append(f"| `{symbol}` | `{u.address}` | {u.type} | {what or 'attributes'} |")
    elif plan.has_changes:
        out += ["| | resource | type | action | disruption | why |", "|---|---|---|---|---|---|"]
        for c in plan.actionable():
            why = "; ".join(c.reasons) or ", ".join(f.field for f in c.fields)
            out.append(
                f"| `{c.action.symbol}` | `{c.address}` | {c.type} | {c.action} | "
                f"{c.disruption} | {redactor.text(why)} |"
            )
    return "\n".join(out) + "\n"


_STATUS_COLOURS = {
    "modified": "yellow",
    "missing": "red",
    "interrupted": "magenta",
    "unknown": "cyan",
}


def drift_summary(report: DriftReport) -> str:
    t = report.totals
    if not report.drifted:
        text = f"In sync: {t.in_sync} of {t.resources} resources match what was applied"
        text += f" ({t.suppressed} suppressed)" if t.suppressed else ""
        text += f"; {t.unknown} not checked (host down)." if t.unknown else "."
        return text
    parts = [
        f"{n} {label}"
        for n, label in (
            (t.modified, "modified"),
            (t.missing, "missing"),
            (t.interrupted, "interrupted"),
            (t.orphaned, "orphaned"),
        )
        if n
    ]
    text = f"Drift: {', '.join(parts)}; {t.in_sync} of {t.resources} resources in sync"
    return text + (f", {t.suppressed} suppressed." if t.suppressed else ".")


def drift_text(report: DriftReport, colour: bool = False) -> str:
    """The human drift report: only what differs, then a one-line verdict."""

    def styled(text: str, fg: str | None = None, bold: bool = False) -> str:
        return click.style(text, fg=fg, bold=bold) if colour else text

    lines = [f"Drift of stack '{report.stack}' (state serial {report.serial}):"]
    for r in report.resources:
        if r.status == "in-sync":
            continue
        note = "  (suppressed)" if not r.drifted and r.status != "unknown" else ""
        lines.append(
            styled(f"  {r.status:<11} {r.address} ({r.type})", _STATUS_COLOURS.get(r.status))
            + (f"  id {r.id}" if r.id else "")
            + note
        )
        if r.status == "missing":
            lines.append("      deleted outside iacloud; the next apply recreates it")
        if r.status == "unknown":
            lines.append(f"      not checked: {r.reason}")
        for d in r.differences:
            mark = "  (suppressed)" if d.suppressed and not r.suppressed else ""
            recorded, actual = _plain(d.recorded, d.sensitive), _plain(d.actual, d.sensitive)
            where = _where(d.effective)
            lines.append(f"      {d.attribute}: recorded {recorded}, actual {actual}{where}{mark}")
    for o in report.orphans:
        claim = f", tagged as {o.address}" if o.address else ""
        note = "  (suppressed)" if o.suppressed else ""
        lines.append(styled(f"  orphan      {o.type} {o.id}", "red") + claim + note)
    if report.unmanaged is not None:
        lines.append(f"Unmanaged objects (no iacloud tag): {len(report.unmanaged)}")
        lines.extend(f"  {u.type} {u.id}" for u in report.unmanaged)
    for e in report.expired_suppressions:
        lines.append(
            styled(f"Suppression '{e.suppression}' expired on {e.until}", "yellow")
            + f" ({e.file}:{e.line}); it no longer applies"
        )
    if len(lines) == 1:
        lines.append("  every resource matches its recorded state")
    lines.extend(styled(f"Warning: {w}", "yellow") for w in report.warnings)
    lines.append(styled(drift_summary(report), bold=True))
    return "\n".join(lines)


def _plain(value: Any, sensitive: bool = False) -> str:
    if sensitive:
        return MASK
    text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def drift_markdown(report: DriftReport) -> str:
    out = [f"### iacloud drift for `{report.stack}`", "", f"**{drift_summary(report)}**", ""]
    rows = [r for r in report.resources if r.status != "in-sync"]
    if rows or report.orphans:
        out += ["| resource | type | finding | details |", "|---|---|---|---|"]
        for r in rows:
            details = "; ".join(
                f"`{d.attribute}`: {_plain(d.recorded, d.sensitive)} → "
                f"{_plain(d.actual, d.sensitive)}{_where(d.effective)}"
                + (" (suppressed)" if d.suppressed else "")
                for d in r.differences
            )
            finding = r.status + (" (suppressed)" if not r.drifted else "")
            out.append(f"| `{r.address}` | {r.type} | {finding} | {_cell(details)} |")
        for o in report.orphans:
            finding = "orphan" + (" (suppressed)" if o.suppressed else "")
            claim = f"tagged as `{o.address}`" if o.address else ""
            out.append(f"| `{o.id}` | {o.type} | {finding} | {claim} |")
        out.append("")
    for e in report.expired_suppressions:
        out.append(f"- suppression `{e.suppression}` expired on {e.until} ({e.file}:{e.line})")
    return "\n".join(out).rstrip("\n") + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
