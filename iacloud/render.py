"""Plans, drift and events as text for people (colour on a TTY), JSON for tools, Markdown for
review comments. Hidden values are masked here, at the one place values are printed."""

from __future__ import annotations

import json
from typing import Any

import click

from iacloud.plan import Action, Change, FieldChange, Plan
from iacloud.redact import MASK, Redactor

_COLOURS = {
    Action.CREATE: "green",
    Action.UPDATE: "yellow",
    Action.DELETE_CREATE: "magenta",
    Action.CREATE_DELETE: "magenta",
    Action.DELETE: "red",
}


def _value(value: Any, redactor: Redactor, sensitive: bool = False) -> str:
    if sensitive:
        return MASK
    if isinstance(value, dict) and set(value) == {"__unknown__"}:
        return "(known after apply)"
    value = redactor.value(value)
    text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def _field_line(f: FieldChange, redactor: Redactor) -> str:
    note = f"  [{f.disruption}{', forces replacement' if f.forces_replacement else ''}]"
    before = _value(f.before, redactor, f.sensitive)
    after = _value(f.after, redactor, f.sensitive)
    return f"      {f.field}: {before} -> {after}{note}"


def summary_line(plan: Plan) -> str:
    n = plan.counts()
    if not plan.has_changes:
        return "No changes. The stack matches the recorded state and the real objects."
    return (
        f"Plan: {n['create']} to create, {n['update']} to update, "
        f"{n['replace']} to replace, {n['delete']} to delete."
    )


def plan_text(plan: Plan, colour: bool = False) -> str:
    redactor = Redactor(plan.hidden_values)
    lines: list[str] = []

    def styled(text: str, fg: str | None = None, bold: bool = False) -> str:
        return click.style(text, fg=fg, bold=bold) if colour else text

    if plan.drift:
        lines.append(styled("Changed outside iacloud:", bold=True))
        for d in plan.drift:
            lines.append(f"  {d.address} ({d.type}): {d.kind}")
            for f in d.fields:
                before = _value(f.before, redactor, f.sensitive)
                after = _value(f.after, redactor, f.sensitive)
                lines.append(f"      {f.field}: recorded {before}, actual {after}")
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
    data["summary"] = {**plan.counts(), "has_changes": plan.has_changes}
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
        out += [f"| `{d.address}` | {d.type} | {d.kind} |" for d in plan.drift]
        out.append("")
    if plan.has_changes:
        out += ["| | resource | type | action | disruption | why |", "|---|---|---|---|---|---|"]
        for c in plan.actionable():
            why = "; ".join(c.reasons) or ", ".join(f.field for f in c.fields)
            out.append(
                f"| `{c.action.symbol}` | `{c.address}` | {c.type} | {c.action} | "
                f"{c.disruption} | {redactor.text(why)} |"
            )
    return "\n".join(out) + "\n"
