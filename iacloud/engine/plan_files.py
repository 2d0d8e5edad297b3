"""Saved plans: written for their owner only, read back as untrusted input, checked against
this installation before anything is printed or locked."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import ValidationError

from iacloud import limits, plan_check
from iacloud.engine.workspace import Workspace
from iacloud.errors import Diagnostic, UserError
from iacloud.plan import PLAN_FORMAT, Plan


def save_plan(plan: Plan, path: Path) -> None:
    """Write a saved plan, readable only by its owner: it may carry hidden values."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(plan.model_dump_json(indent=2))


def load_plan(path: Path) -> Plan:
    try:
        data = limits.parse_json(limits.read_text(path, limits.MAX_PLAN_BYTES))
    except OSError as exc:
        raise UserError(
            Diagnostic(f"cannot read the plan: {exc.strerror}", file=str(path))
        ) from None
    except json.JSONDecodeError as exc:
        raise UserError(
            Diagnostic(f"not a plan file: invalid JSON at line {exc.lineno}", file=str(path))
        ) from None
    except limits.InputError as exc:
        raise UserError(Diagnostic(f"not a usable plan file: {exc}", file=str(path))) from None
    found = data.get("format_version") if isinstance(data, dict) else None
    if found != PLAN_FORMAT:
        raise UserError(
            Diagnostic(
                f"not an iacloud plan of format {PLAN_FORMAT} (format_version = {found!r})",
                file=str(path),
            )
        )
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        raise UserError(
            [
                Diagnostic(e["msg"], file=str(path), field=".".join(str(p) for p in e["loc"]))
                for e in exc.errors()
            ]
        ) from None


def check_saved_plan(ws: Workspace, plan: Plan, path: Path) -> None:
    """What this installation cannot apply in a saved plan, as diagnostics naming the file;
    before anything is printed or locked."""
    plan_check.check(plan, ws.registry, str(path))
    try:
        ws.settings_from_plan(plan)
    except UserError as exc:
        raise UserError(
            Diagnostic(d.message, str(path), d.address, d.field, d.hint) for d in exc.diagnostics
        ) from None


def is_plan_file(path: Path) -> bool:
    return path.suffix == ".json"
