"""State as a front end sees it and edits it: views with sensitive values masked, checked
outputs, surgery (rm, mv), import, unlock, and copies between backends.

Every function takes a Workspace; the stack is the workspace's (`Workspace.name`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from iacloud.config import StackConfig
from iacloud.diff import normalize_inputs
from iacloud.engine.workspace import Workspace
from iacloud.errors import Diagnostic, UserError, did_you_mean, printable
from iacloud.executor import resource_state
from iacloud.expressions import ExpressionError, parse_address
from iacloud.redact import MASK, Redactor
from iacloud.state import open_backend
from iacloud.state.migrate import CopyResult, copy_stack
from iacloud.state.model import Event, LockInfo, ResourceState, Snapshot, StateVersion
from iacloud.state.pg_url import mask_url


@dataclass(frozen=True)
class StateView:
    """A recorded state version with sensitive values masked: what may be shown."""

    stack: str
    snapshot: Snapshot
    resources: dict[str, dict[str, Any]]  # address -> the resource as JSON, masked


def state_view(ws: Workspace, serial: int | None = None) -> StateView:
    """The stack's state (or an older version), sensitive attributes and hidden-derived
    inputs masked."""
    snap = ws.backend.snapshot(ws.name, serial)
    sensitive = {name: t.sensitive_attributes for name, t in ws.registry.types.items()}
    resources = {
        a: _masked(r.model_dump(mode="json"), sensitive) for a, r in snap.resources.items()
    }
    return StateView(ws.name, snap, resources)


def resource_view(ws: Workspace, address: str) -> dict[str, Any]:
    """One recorded resource, masked as in state_view."""
    view = state_view(ws)
    if address not in view.resources:
        raise UserError(f"no resource '{address}' in the state of stack '{ws.name}'")
    return view.resources[address]


def _masked(r: dict[str, Any], sensitive: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    for attr in (*sensitive.get(r["type"], ()), *r.get("sensitive_attributes", ())):
        if attr in r["attributes"]:
            r["attributes"][attr] = MASK
    for key in r.get("sensitive_inputs", ()):
        if key in r["inputs"]:
            r["inputs"][key] = MASK
    return r


def stack_outputs(ws: Workspace) -> dict[str, dict[str, Any]]:
    """The outputs recorded by the last apply, each {value, sensitive}, checked: a damaged
    one is named, not a traceback."""
    outputs = ws.backend.snapshot(ws.name).outputs
    for key, entry in outputs.items():
        if not (isinstance(entry, dict) and "value" in entry
                and isinstance(entry.get("sensitive"), bool)):  # fmt: skip
            raise UserError(
                f"the state of stack '{ws.name}' is damaged: output '{printable(str(key))[:80]}' "
                "is not a table with 'value' and 'sensitive'"
            )
    return outputs


def stack_output(ws: Workspace, name: str) -> dict[str, Any]:
    """One recorded output, {value, sensitive}."""
    outputs = stack_outputs(ws)
    if name not in outputs:
        raise UserError(
            f"no output '{name}' in stack '{ws.name}' (outputs: {', '.join(outputs) or 'none'})"
        )
    return outputs[name]


def events(ws: Workspace, limit: int | None = None) -> list[Event]:
    return ws.backend.events(ws.name, limit)


def versions(ws: Workspace) -> list[StateVersion]:
    return ws.backend.versions(ws.name)


def unlock(ws: Workspace, lock_id: str) -> LockInfo | None:
    """Remove the lock `lock_id` left by a run that died; the lock removed, or None if the
    stack was not locked. A lock some other run took since is refused."""
    return ws.backend.force_unlock(ws.name, lock_id)


def state_rm(ws: Workspace, addresses: tuple[str, ...] | list[str]) -> int:
    """Forget objects without deleting them; the new state serial."""
    snap = ws.backend.snapshot(ws.name)
    missing = [a for a in addresses if a not in snap.resources]
    if missing:
        raise UserError(f"not in the state of stack '{ws.name}': {', '.join(missing)}")
    return state_surgery(ws, ws.name, "state rm", dict.fromkeys(addresses))


def state_mv(ws: Workspace, source: str, destination: str) -> int:
    """Record an object under a new address (after a rename in the stack); the new serial."""
    stack = ws.name
    snap = ws.backend.snapshot(stack)
    if source not in snap.resources:
        raise UserError(f"no resource '{source}' in the state of stack '{stack}'")
    if destination in snap.resources:
        raise UserError(f"'{destination}' is already in the state of stack '{stack}'")
    try:
        parse_address(destination)
    except ExpressionError as exc:
        raise UserError(f"destination: {exc}") from None
    moved = snap.resources[source].model_copy(update={"address": destination})
    return state_surgery(ws, stack, "state mv", {source: None, destination: moved})


@dataclass(frozen=True)
class StateCopy:
    """What copy_state did, with both stores named for messages (passwords masked)."""

    result: CopyResult
    source: str
    destination: str


def copy_state(ws: Workspace, other_url: str, push: bool, lock_timeout: float = 0.0) -> StateCopy:
    """Copy the stack's whole state history to (push) or from another backend. Refused if the
    destination holds a different lineage, a newer serial, or a history that went its own
    way; both stores are locked while copying."""
    stack = ws.name
    here = mask_url(ws.state_url) if ws.state_url else "the stack's own SQLite state"
    there = mask_url(other_url)
    if _store_key(ws.state_url, ws.stack_dir) == _store_key(other_url, ws.stack_dir):
        raise UserError(f"{there} is the stack's own state: nothing to copy")
    other = open_backend(other_url, ws.stack_dir)
    try:
        src, dst = (ws.backend, other) if push else (other, ws.backend)
        names = (here, there) if push else (there, here)
        result = copy_stack(src, dst, stack, *names, lock_timeout=lock_timeout)
    finally:
        other.close()
    return StateCopy(result, *names)


def _store_key(url: str | None, stack_dir: Path) -> str:
    """What identifies a store, so that a copy onto itself is refused."""
    if url is None or url.startswith("sqlite:///") or "://" not in url:
        path = url[len("sqlite://") :] if url and url.startswith("sqlite:///") else url
        return (
            os.path.realpath(path)  # never raises, also on a symlink loop
            if path
            else str(stack_dir / ".iacloud" / "state.db")
        )
    return url


def state_surgery(
    ws: Workspace, stack: str, command: str, edits: Mapping[str, ResourceState | None]
) -> int:
    """Write one new state version with the given resources replaced (None: forgotten)."""
    backend = ws.backend
    with backend.locked(stack, command, ws.lock_timeout):
        snapshot = backend.snapshot(stack)
        if snapshot.serial == 0:
            raise UserError(f"stack '{stack}' has no state yet")
        serial = backend.begin_version(stack, command, snapshot.stack_id, snapshot.lineage)
        for address, rs in edits.items():
            event = Event(
                serial=serial, address=address,
                type=rs.type if rs else snapshot.resources[address].type,
                action=command.upper().replace(" ", "_"), status="COMPLETE",
            )  # fmt: skip
            backend.record_result(stack, serial, address, rs, event)
        backend.finish_version(stack, serial, "complete", snapshot.outputs or None)
        return serial


def import_resource(ws: Workspace, config: StackConfig, address: str, id: str) -> ResourceState:
    """Adopt an existing object into state at `address`, which the stack must declare."""
    rc = config.resources.get(address)
    if rc is None:
        raise UserError(
            Diagnostic(f"no resource '{address}' in the stack", file=str(config.file),
                       hint=did_you_mean(address, config.resources))
        )  # fmt: skip
    backend = ws.backend
    with backend.locked(config.name, "import", ws.lock_timeout):
        snapshot = backend.snapshot(config.name)
        if address in snapshot.resources:
            raise UserError(
                f"'{address}' is already in state (id {snapshot.resources[address].id})"
            )
        providers = ws.providers(config.name, snapshot, config.provider_settings)
        try:
            observed = providers.resource(rc.type).import_given(address, id, rc.properties)
        finally:
            providers.close()
        type_cls = ws.registry.types[rc.type]
        try:  # defaults filled in, as a create would have recorded them
            inputs = normalize_inputs(type_cls, observed.inputs)
        except ValidationError:
            inputs = dict(observed.inputs)
        rs = resource_state(
            type_cls, address, rc.provider, inputs, observed, rc.depends_on,
            "IMPORT_COMPLETE", Redactor(config.hidden_values),
        )  # fmt: skip
        serial = backend.begin_version(config.name, "import", snapshot.stack_id, snapshot.lineage)
        backend.record_result(
            config.name, serial, address, rs,
            Event(serial=serial, address=address, type=rc.type, action="IMPORT", status="COMPLETE"),
        )  # fmt: skip
        backend.finish_version(config.name, serial, "complete", snapshot.outputs or None)
        return rs
