"""The CLI's commands run through `iacloud serve`: each returns what the local engine returns
(Plan, DriftReport, the show/output/events data, an apply's ApplySummary), so the CLI renders
both with the same code.

The stack file is read here and its text sent as the template; `-p` and `-e` become the
request's parameters. The server knows the stack as `<project>.<name>` and the template as
`template`: plans, reports and diagnostics get the local names back, so the output reads as a
local run's does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iacloud import engine, limits
from iacloud.apply_summary import ApplySummary
from iacloud.engine import DriftReport, Plan, UserError
from iacloud.errors import Diagnostic
from iacloud.loading.diagnostics import Sink
from iacloud.loading.toml_front import read_env_file
from iacloud.remote.client import ApiClient, ApiError
from iacloud.state.model import Event

_KINDS = {"CREATE": "create", "UPDATE": "update", "DELETE": "delete"}
_SHOWN_FILE = "template"  # the server's name of the template in its diagnostics


@dataclass
class Target:
    """A local stack file as a stack of the server's project."""

    client: ApiClient
    stack_file: Path

    @property
    def name(self) -> str:
        return engine.stack_name(self.stack_file)

    def local(self, exc: UserError) -> UserError:
        """The server's diagnostics naming the local stack file instead of `template`."""
        return UserError(
            Diagnostic(d.message, str(self.stack_file) if d.file == _SHOWN_FILE else d.file,
                       d.address, d.field, d.hint)
            for d in exc.diagnostics
        )  # fmt: skip


def _template(stack_file: Path) -> str:
    try:
        return limits.read_text(stack_file)
    except FileNotFoundError:
        raise UserError(f"{stack_file}: stack file not found") from None
    except (OSError, limits.InputError) as exc:
        raise UserError(
            Diagnostic(f"cannot read the stack file: {exc}", file=str(stack_file))
        ) from None


def parameters(params: Sequence[str], env_files: Sequence[Path]) -> dict[str, Any]:
    """`-e` files' [parameters] tables, then `-p NAME=VALUE` (last wins), as request values;
    the server's loader checks them against the stack's declarations."""
    out: dict[str, Any] = {}
    for path in env_files:
        sink = Sink(str(path))
        data = read_env_file(path, sink)
        if sink.items:
            raise UserError(sink.items)
        table = (data or {}).get("parameters", {})
        if not isinstance(table, dict):
            raise UserError(Diagnostic("[parameters] is not a table", file=str(path)))
        out.update(table)
    for text in params:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise UserError(Diagnostic(f"-p {text!r}: expected NAME=VALUE", address="parameters"))
        out[name] = value
    return out


def _plan(target: Target, data: dict[str, Any]) -> Plan:
    data = {k: v for k, v in data.items() if k != "summary"}
    data["stack"] = target.name
    data["stack_file"] = str(target.stack_file.resolve())
    return Plan.model_validate(data)


@dataclass
class Proposal:
    """A plan the server previewed, and what applying it takes."""

    plan: Plan
    exists: bool  # the server has the stack: apply is an update
    etag: str | None  # the stack as read before the preview: a change since is refused (412)
    template: str
    params: dict[str, Any]


def plan(target: Target, params: Sequence[str], env_files: Sequence[Path]) -> Proposal:
    """The server's preview of applying the stack file."""
    template = _template(target.stack_file)
    values = parameters(params, env_files)
    client, name = target.client, target.name
    try:
        current = client.stack(name)
        if current is None:
            data = client.preview_create(name, template, values)
        else:
            data = client.preview_update(name, template, values)
    except UserError as exc:
        raise target.local(exc) from None
    etag = current["etag"] if current else None
    return Proposal(_plan(target, data), current is not None, etag, template, values)


def destroy_plan(target: Target) -> Proposal:
    """The server's preview of deleting the stack."""
    client, name = target.client, target.name
    current = client.stack(name)
    if current is None:
        raise UserError(f"no stack '{name}' in project '{client.project}' on {client.url}")
    try:
        data = client.preview_delete(name)
    except UserError as exc:
        raise target.local(exc) from None
    return Proposal(_plan(target, data), True, current["etag"], "", {})


def submit(target: Target, proposal: Proposal, destroy: bool = False) -> dict[str, Any]:
    """Queue the change: the operation (202)."""
    client, name = target.client, target.name
    try:
        if destroy:
            return client.delete(name, proposal.etag)
        if proposal.exists:
            return client.update(name, proposal.template, proposal.params, proposal.etag)
        return client.create(name, proposal.template, proposal.params)
    except UserError as exc:
        raise target.local(exc) from None


class Following:
    """Feeds an operation's event stream to a progress reporter; Ctrl-C cancels it."""

    def __init__(self, client: ApiClient, op_id: str, reporter: Any) -> None:
        self.client, self.op_id, self.reporter = client, op_id, reporter
        self.cancelled = False

    def run(self) -> dict[str, Any]:
        """The finished operation. A first Ctrl-C asks the server to cancel (no new step
        starts) and keeps following; a second one leaves (KeyboardInterrupt)."""
        last, broken = 0, 0
        while True:
            try:
                try:
                    for seq, kind, data in self.client.stream(self.op_id, last):
                        last = seq
                        if kind == "resource":
                            self._step(data)
                except ApiError as exc:
                    # a dropped connection: resume after the last event seen, a few times
                    broken += 1
                    if exc.status or broken > 3:
                        raise
                    time.sleep(1.0)
                    continue
                op = self.client.wait(self.op_id, 30.0)
                if op["status"] in ("COMPLETE", "FAILED", "CANCELLED"):
                    return op
            except KeyboardInterrupt:
                if self.cancelled:
                    raise
                self.cancelled = True
                self.reporter.interrupted(self.reporter.running)
                self.client.cancel(self.op_id)

    def _step(self, data: dict[str, Any]) -> None:
        kind = _KINDS.get(str(data.get("action")))
        address = str(data.get("address", "?"))
        if kind is None:
            return
        if data.get("status") == "IN_PROGRESS":
            self.reporter.started_line(kind, address)
        else:
            ok = data.get("status") == "COMPLETE"
            elapsed = float(data.get("elapsed") or 0.0)
            self.reporter.finished_line(kind, address, ok, elapsed, str(data.get("error", "")))


def summary(op: dict[str, Any], refresh_only: bool = False) -> ApplySummary:
    """What a finished operation did, as the CLI reports an apply."""
    result = op.get("result") or {}
    steps = result.get("steps") or {}
    problems = [
        (p["status"], p["step"], p.get("error", ""))
        for p in result.get("problems") or []
        if p.get("status") in ("failed", "skipped")
    ]
    status = op["status"]
    if status == "FAILED" and not result:
        # the run failed before any step: no plan to report, only the server's reason
        raise engine.IacloudError(str((op.get("error") or {}).get("message", "the run failed")))
    return ApplySummary(
        complete=int(steps.get("complete", 0)),
        state_updates=int((result.get("plan") or {}).get("state_updates", 0)),
        refresh_only=refresh_only,
        problems=problems,
        outputs=result.get("outputs") or {},
        ok=status == "COMPLETE",
        interrupted=status == "CANCELLED",
    )


def drift(target: Target) -> DriftReport:
    client = target.client
    op = client.drift(target.name)
    while op["status"] not in ("COMPLETE", "FAILED", "CANCELLED"):
        op = client.wait(op["id"], 30.0)
    if op["status"] != "COMPLETE":
        error = op.get("error") or {}
        if error.get("diagnostics"):
            raise target.local(UserError(Diagnostic(**d) for d in error["diagnostics"]))
        raise engine.IacloudError(str(error.get("message", f"the drift check {op['status']}")))
    report = DriftReport.model_validate(op["result"]["drift"])
    return report.model_copy(update={"stack": target.name})


def state(target: Target, serial: int | None) -> dict[str, Any]:
    data = target.client.state(target.name, serial)
    data.pop("outputs", None)  # output's, not show's
    data["stack"] = target.name
    return data


def outputs(target: Target) -> dict[str, dict[str, Any]]:
    """Each output as {value, sensitive}: the server sends sensitive values masked."""
    return target.client.state(target.name)["outputs"]  # type: ignore[no-any-return]


def output(target: Target, name: str) -> dict[str, Any]:
    found = outputs(target)
    if name not in found:
        raise UserError(
            f"no output '{name}' in stack '{target.name}' (outputs: {', '.join(found) or 'none'})"
        )
    return found[name]


def events(target: Target, limit: int) -> list[Event]:
    return [
        Event(
            time=e["time"],
            serial=e["serial"],
            address=e["resource_name"],
            type=e["resource_type"],
            action=e["resource_action"],
            status=e["resource_status"],
            reason=e["reason"],
        )
        for e in target.client.events(target.name, limit)
    ]
