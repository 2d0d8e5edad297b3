"""The workflows behind the commands: refresh, plan, apply, destroy, state surgery, outputs.

Each function takes what it needs explicitly (a Workspace, options) and knows nothing of the CLI.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from iacloud import expressions, interrupts, limits, lost_state, pending, plan_check
from iacloud.config import StackConfig
from iacloud.diff import normalize_inputs
from iacloud.drift import DriftReport, build_report
from iacloud.errors import Diagnostic, IacloudError, UserError, did_you_mean
from iacloud.executor import (
    ApplyResult,
    Executor,
    Reporter,
    StateResolver,
    resource_state,
)
from iacloud.loading import load_stack
from iacloud.paths import data_root
from iacloud.plan import PLAN_FORMAT, Action, Plan
from iacloud.planner import PlanOptions
from iacloud.planner import plan as compute_plan
from iacloud.provider import ObjectRef, Observed, ProviderSet, Registry, StackInfo, TaggedObject
from iacloud.redact import Redactor
from iacloud.schema import Disruption
from iacloud.state import StateBackend, open_backend
from iacloud.state.model import Event, ResourceState, Snapshot
from iacloud.state.pg_url import mask_url
from iacloud.suppressions import Suppression

__all__ = ["Workspace", "data_root"]


@dataclass
class Workspace:
    """One stack file with its state backend and providers."""

    stack_file: Path
    state_url: str | None = None
    lock_timeout: float = 0.0
    registry: Registry = field(default_factory=Registry.discover)
    read_only: bool = False  # read commands: the state file is opened mode=ro, never changed
    _backend: StateBackend | None = None
    _locked: str | None = None  # the stack whose lock this workspace holds (see locked)

    @property
    def backend(self) -> StateBackend:
        if self._backend is None:
            url = self.state_url or os.environ.get("IACLOUD_STATE")
            self._backend = open_backend(url, self.stack_file.resolve().parent, self.read_only)
        return self._backend

    @contextmanager
    def locked(self, stack: str, operation: str) -> Iterator[None]:
        """Hold the stack's lock; nested uses share it. `apply STACK` holds it from its plan to
        the end of its apply, so a run that waited for another plans against that run's
        result instead of failing on a plan made before it."""
        if self._locked == stack:
            yield
            return
        with self.backend.locked(stack, operation, self.lock_timeout):
            self._locked = stack
            try:
                yield
            finally:
                self._locked = None

    def open_read_only(self) -> StateBackend:
        """A separate backend that can only read: it takes no lock and cannot write, so it
        runs beside an apply holding the lock and leaves the state file as it found it."""
        url = self.state_url or os.environ.get("IACLOUD_STATE")
        return open_backend(url, self.stack_file.resolve().parent, read_only=True)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()

    def load(self, params: Sequence[str] = (), env_files: Sequence[Path] = ()) -> StackConfig:
        return load_stack(self.stack_file, self.registry, list(params), list(env_files))

    def stack_info(self, name: str, snapshot_or_plan: Snapshot | Plan) -> StackInfo:
        stack_id = snapshot_or_plan.stack_id
        return StackInfo(
            name=name,
            id=stack_id,
            directory=self.stack_file.resolve().parent,
            data_dir=data_root() / "stacks" / stack_id,
        )

    def providers(
        self, name: str, source: Snapshot | Plan, settings: Mapping[str, Any]
    ) -> ProviderSet:
        return ProviderSet(self.registry, self.stack_info(name, source), dict(settings))

    def settings_from_plan(self, plan: Plan) -> dict[str, Any]:
        """The plan's provider settings, validated as a stack's are: a plan file is user input
        too (edited, or made by another version), and bad settings must fail before apply
        begins a state version."""
        out = {}
        problems: list[Diagnostic] = []
        for name, values in plan.provider_settings.items():
            cls = self.registry.providers.get(name)
            if cls is None:
                raise UserError(f"the plan needs provider '{name}', which is not installed")
            try:
                out[name] = cls.Settings.model_validate(values)
            except ValidationError as exc:
                problems += [
                    Diagnostic(
                        str(e["msg"]).removeprefix("Value error, "),
                        address=f"provider_settings.{name}",
                        field=".".join(str(p) for p in e["loc"]) or None,
                    )
                    for e in exc.errors(include_url=False)
                ]
        if problems:
            raise UserError(problems)
        return out


def refresh_refs(snapshot: Snapshot) -> dict[str, list[ObjectRef]]:
    """What a refresh asks each resource type for: everything recorded or pending."""
    refs: dict[str, list[ObjectRef]] = {}
    for rs in snapshot.resources.values():
        refs.setdefault(rs.type, []).append(ObjectRef(rs.address, rs.id, rs.inputs))
    for op in snapshot.pending:
        if op.address not in snapshot.resources:
            refs.setdefault(op.type, []).append(ObjectRef(op.address, op.id, op.inputs))
    return refs


def refresh(snapshot: Snapshot, providers: ProviderSet, registry: Registry) -> dict[str, Observed]:
    """One bulk read per resource type of everything recorded or pending."""
    observed: dict[str, Observed] = {}
    for type_name, type_refs in refresh_refs(snapshot).items():
        if type_name not in registry.types:
            raise UserError(
                f"state holds resources of type '{type_name}', whose provider is not installed"
            )
        observed.update(providers.resource(type_name).read(type_refs))
    return observed


def drift(
    ws: Workspace,
    config: StackConfig,
    suppressions: Sequence[Suppression] = (),
    include_unmanaged: bool = False,
) -> DriftReport:
    """Compare what exists with what was applied: read-only, no lock, bulk reads only."""
    started = time.monotonic()
    now = datetime.now(timezone.utc)
    backend = ws.open_read_only()
    try:
        snapshot = backend.snapshot(config.name)
    finally:
        backend.close()
    if snapshot.serial == 0:
        raise UserError(
            Diagnostic(f"stack '{config.name}' has no state: it was never applied "
                       "(or the state is elsewhere: --state)", file=str(config.file))
        )  # fmt: skip
    providers = ws.providers(config.name, snapshot, config.provider_settings)
    used = {rs.type for rs in snapshot.resources.values()}
    used |= {op.type for op in snapshot.pending}
    used |= {rc.type for rc in config.resources.values()}
    used_providers = {ws.registry.provider_of[t] for t in used if t in ws.registry.provider_of}
    tagged: list[TaggedObject] = []
    warnings: list[str] = []
    try:
        observed = refresh(snapshot, providers, ws.registry)
        # Every installed type, not just the stack's: a server dropped from the stack file and
        # `state rm`-ed leaves a domain that still carries the tag.
        for name in sorted(ws.registry.types):
            try:
                tagged += providers.resource(name).list_tagged()
            except IacloudError as exc:
                if ws.registry.provider_of[name] in used_providers:
                    raise
                # a backend the stack does not use may well be absent on this host
                warnings.append(f"orphans of type '{name}' not searched: {exc}")
    finally:
        providers.close()
    return build_report(
        snapshot, observed, tagged, ws.registry, suppressions,
        include_unmanaged=include_unmanaged, now=now, duration=time.monotonic() - started,
        warnings=warnings,
    )  # fmt: skip


def lock_holder() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{os.uname().nodename}"


def make_plan(ws: Workspace, config: StackConfig, options: PlanOptions) -> tuple[Plan, Snapshot]:
    """Plan against current state, refreshing through the providers unless told not to."""
    backend = ws.backend
    snapshot = backend.snapshot(config.name)
    if not options.refresh:
        providers = ws.providers(config.name, snapshot, config.provider_settings)
        try:
            plan = compute_plan(config, snapshot, None, ws.registry, options, providers.resource)
        finally:
            providers.close()
        return plan, snapshot
    with ws.locked(config.name, "plan"):
        snapshot = backend.snapshot(config.name)
        providers = ws.providers(config.name, snapshot, config.provider_settings)
        try:
            if snapshot.serial == 0 and not options.destroy:
                lost_state.check(config, providers, ws.registry, _state_name(ws))
            observed = refresh(snapshot, providers, ws.registry)
            leftovers = pending.find_leftovers(snapshot, observed, providers.resource, ws.registry)
            plan = compute_plan(
                config, snapshot, observed, ws.registry, options, providers.resource, leftovers
            )
        finally:
            providers.close()
        return plan, snapshot


def _state_name(ws: Workspace) -> str:
    url = ws.state_url or os.environ.get("IACLOUD_STATE")
    return mask_url(url) if url else str(ws.stack_file.parent / ".iacloud" / "state.db")


def check_disruption(plan: Plan, limit: Disruption | None) -> None:
    if limit is None:
        return
    over = [c for c in plan.actionable() if c.disruption.rank > limit.rank]
    if over:
        raise UserError(
            [
                Diagnostic(
                    f"{c.action} is '{c.disruption}', beyond --max-disruption {limit}",
                    address=c.address,
                )
                for c in over
            ]
        )


def apply(
    ws: Workspace,
    plan: Plan,
    *,
    jobs: int = 4,
    reporter: Reporter | None = None,
    max_disruption: Disruption | None = None,
    command: str = "apply",
) -> ApplyResult:
    """Apply a plan under the lock; refuse it if state moved since it was made."""
    check_disruption(plan, max_disruption)
    plan_check.check(plan, ws.registry)  # before the lock and the new state version
    settings = ws.settings_from_plan(plan)
    backend = ws.backend
    with ws.locked(plan.stack, command):
        snapshot = backend.snapshot(plan.stack)
        _refuse_stale(plan, snapshot)
        if plan.refresh_only:
            return _accept_refresh(backend, plan, snapshot)
        stack_id = plan.stack_id
        lineage = plan.lineage if snapshot.serial == 0 else snapshot.lineage
        # from the first write on, Ctrl-C asks the scheduler to stop instead of raising
        with interrupts.deferred() as pressed:
            serial = backend.begin_version(plan.stack, command, stack_id, lineage)
            providers = ws.providers(plan.stack, plan, settings)
            lost_state.remember(providers.stack)
            status = "failed"
            result = ApplyResult()
            try:
                current = record_state_updates(backend, plan, serial, snapshot.resources)
                executor = Executor(
                    plan, ws.registry, providers, backend, serial, current,
                    jobs=jobs, reporter=reporter, interrupts=pressed,
                )  # fmt: skip
                try:
                    result = executor.run()
                except KeyboardInterrupt:
                    status = "interrupted"
                    raise
                result.outputs = evaluate_outputs(plan, result.resources)
                status = (
                    "complete" if result.ok else ("interrupted" if result.interrupted else "failed")
                )
            finally:
                if not result.abandoned:  # abandoned steps may still use the connections
                    providers.close()
                backend.finish_version(plan.stack, serial, status, result.outputs or None)
        if plan.destroy and result.ok and not result.resources:
            # nothing of the stack is left: neither are the providers' working files
            shutil.rmtree(providers.stack.data_dir, ignore_errors=True)
        return result


def _refuse_stale(plan: Plan, snapshot: Snapshot) -> None:
    if snapshot.serial != plan.serial or (snapshot.serial > 0 and snapshot.lineage != plan.lineage):
        raise UserError(
            f"the saved plan was made from state serial {plan.serial} (lineage "
            f"{plan.lineage[:8]}), but the state of stack '{plan.stack}' is now at serial "
            f"{snapshot.serial} (lineage {snapshot.lineage[:8]}); make a new plan"
        )


def _accept_refresh(
    backend: StateBackend,
    plan: Plan,
    snapshot: Snapshot,
) -> ApplyResult:
    """Apply a refresh-only plan: one new state version taking in the objects as they are.
    Nothing on the host is touched, so no provider is opened."""
    serial = backend.begin_version(plan.stack, "apply-refresh-only", plan.stack_id, plan.lineage)
    status, outputs = "failed", {}
    try:
        resources = record_state_updates(backend, plan, serial, snapshot.resources)
        outputs = evaluate_outputs(plan, resources)
        status = "complete"
    finally:
        backend.finish_version(plan.stack, serial, status, outputs or None)
    return ApplyResult(resources=resources, outputs=outputs)


def record_state_updates(
    backend: StateBackend, plan: Plan, serial: int, current: Mapping[str, ResourceState]
) -> dict[str, ResourceState]:
    """Write the plan's state updates (objects taken in as found, or forgotten) into version
    `serial`; return the resources as they now stand."""
    resources = dict(current)
    for u in plan.state_updates:
        rs = None
        if u.action == "accept":
            rs = current[u.address].model_copy(
                update={"id": u.id, "inputs": u.inputs, "attributes": u.attributes,
                        "status": "REFRESH_COMPLETE"}
            )  # fmt: skip
            resources[u.address] = rs
        else:
            resources.pop(u.address, None)
        reason = (
            "taken in as found" if rs else f"forgotten: {u.reason or 'deleted outside iacloud'}"
        )
        event = Event(serial=serial, address=u.address, type=u.type, action="REFRESH",
                      status="COMPLETE", reason=reason)  # fmt: skip
        backend.record_result(plan.stack, serial, u.address, rs, event)
    return resources


def evaluate_outputs(plan: Plan, resources: Mapping[str, ResourceState]) -> dict[str, Any]:
    resolver = StateResolver(plan.groups, resources)
    out: dict[str, Any] = {}
    for name, value in plan.outputs.items():
        try:
            v = expressions.evaluate(expressions.from_json(value), resolver)
        except expressions.ExpressionError:
            v = None
        out[name] = {
            "value": None if expressions.has_unknown(v) else v,
            "sensitive": name in plan.sensitive_outputs,
        }
    return out


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


def destroy_settings(
    ws: Workspace, stack_name: str, params: Sequence[str] = (), env_files: Sequence[Path] = ()
) -> tuple[str, dict[str, Any]]:
    """The stack's name and `[provider.*]` settings for a destroy: the stack file is loaded so
    its uri, pool and timeouts are honoured. A file that no longer loads is fine as long as it
    configures no provider (the defaults are then the right ones); otherwise its errors stand."""
    try:
        config = ws.load(params, env_files)
    except UserError:
        if _declares_providers(ws.stack_file):
            raise
        return stack_name, {}
    return config.name, dict(config.provider_settings)


def _declares_providers(path: Path) -> bool:
    try:
        data = limits.parse_toml(limits.read_text(path))
    except (OSError, ValueError, limits.InputError):
        return False
    return isinstance(data, dict) and bool(data.get("provider"))


def destroy_plan(
    ws: Workspace,
    stack_name: str,
    refresh_first: bool = True,
    provider_settings: Mapping[str, Any] | None = None,
) -> tuple[Plan, Snapshot]:
    """A plan deleting every recorded object; needs no stack file beyond its name and the
    provider settings (`destroy_settings`)."""
    config = StackConfig(
        name=stack_name, file=ws.stack_file, description="", parameters={}, hidden_values=[],
        resources={}, groups={}, outputs={}, provider_settings=dict(provider_settings or {}),
    )  # fmt: skip
    return make_plan(ws, config, PlanOptions(refresh=refresh_first, destroy=True))


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
            observed = providers.resource(rc.type).import_(address, id)
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


__all__ += [
    "Action",
    "IacloudError",
    "apply",
    "destroy_plan",
    "drift",
    "import_resource",
    "load_plan",
    "make_plan",
    "refresh",
    "save_plan",
    "state_surgery",
]
