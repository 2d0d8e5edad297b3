"""The runs: refresh, plan, apply (of a fresh or a saved plan), destroy and drift.

Each function takes what it needs explicitly (a Workspace, options) and knows nothing of the CLI.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from iacloud import (
    expressions,
    interrupts,
    lifecycle,
    limits,
    lost_state,
    pending,
    placement,
    plan_check,
)
from iacloud import rollback as undo
from iacloud.config import StackConfig
from iacloud.drift import DriftReport, build_report
from iacloud.engine.workspace import Workspace
from iacloud.errors import Diagnostic, IacloudError, UserError
from iacloud.executor import ApplyResult, Executor, Reporter, StateResolver
from iacloud.graph import build_graph, to_dot
from iacloud.hosts import compute_provider, host_states
from iacloud.loading.site_file import load_site
from iacloud.plan import Plan
from iacloud.planner import PlanOptions
from iacloud.planner import plan as compute_plan
from iacloud.provider import ObjectRef, Observed, ProviderSet, Registry, TaggedObject
from iacloud.rules import normal
from iacloud.scheduler import Host as SchedulerHost
from iacloud.schema import Disruption
from iacloud.state import StateBackend
from iacloud.state.model import Event, ResourceState, Snapshot
from iacloud.suppressions import Suppression


def refresh_refs(snapshot: Snapshot) -> dict[str, list[ObjectRef]]:
    """What a refresh asks each resource type for: everything recorded or pending."""
    refs: dict[str, list[ObjectRef]] = {}
    for rs in snapshot.resources.values():
        refs.setdefault(rs.type, []).append(ObjectRef(rs.address, rs.id, rs.inputs, rs.attributes))
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
    # ignore_changes: drift of those fields is reported, as suppressed
    suppressions = [*suppressions, *lifecycle.drift_suppressions(config, snapshot)]
    return build_report(
        snapshot, observed, tagged, ws.registry, suppressions,
        include_unmanaged=include_unmanaged, now=now, duration=time.monotonic() - started,
        warnings=warnings,
    )  # fmt: skip


def make_plan(ws: Workspace, config: StackConfig, options: PlanOptions) -> tuple[Plan, Snapshot]:
    """Plan against current state, refreshing through the providers unless told not to."""
    backend = ws.backend
    snapshot = backend.snapshot(config.name)
    if not options.refresh:
        config, why = _placed(ws, config, snapshot, options)
        providers = ws.providers(config.name, snapshot, config.provider_settings)
        try:
            plan = compute_plan(config, snapshot, None, ws.registry, options, providers.resource)
        finally:
            providers.close()
        return placement.annotate(plan, why), snapshot
    with ws.locked(config.name, "plan"):
        snapshot = backend.snapshot(config.name)
        config, why = _placed(ws, config, snapshot, options)
        providers = ws.providers(config.name, snapshot, config.provider_settings)
        try:
            if snapshot.serial == 0 and not options.destroy:
                lost_state.check(config, providers, ws.registry, ws.state_name())
            observed = refresh(snapshot, providers, ws.registry)
            leftovers = pending.find_leftovers(snapshot, observed, providers.resource, ws.registry)
            plan = compute_plan(
                config, snapshot, observed, ws.registry, options, providers.resource, leftovers
            )
        finally:
            providers.close()
        return placement.annotate(plan, why), snapshot


def _placed(
    ws: Workspace, config: StackConfig, snapshot: Snapshot, options: PlanOptions
) -> tuple[StackConfig, dict[str, str]]:
    """The stack with its servers placed on the site's hosts (iacloud.placement), and why."""
    if options.destroy:
        return config, {}
    hosts = ws.site_hosts()

    def read() -> list[SchedulerHost]:
        states = host_states(load_site(ws.site_file), compute_provider(ws.registry))
        return placement.scheduler_hosts(states)

    placed = placement.place(config, snapshot, ws.registry, list(hosts), read)
    return placed.config, placed.why


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
    approve: Callable[[Plan], bool] | None = None,
    cancel: interrupts.Interrupts | None = None,
    rollback: bool = False,
) -> ApplyResult | None:
    """Apply a plan under the lock; refuse it if state moved since it was made.

    `approve` (a front end's confirmation) is asked once the plan passed every check and
    before anything is locked or written, only for a plan with changes; if it says no,
    nothing happens and the result is None. `cancel` lets a front end without a terminal (the
    HTTP API) press Ctrl-C: the run reads its flags as it reads the keyboard's. `rollback`: a
    run with a failed step is undone (`iacloud.rollback`) in a new state version;
    `result.rollback` is that undoing's result."""
    check_disruption(plan, max_disruption)
    plan_check.check(plan, ws.registry)  # before the lock and the new state version
    settings = ws.settings_from_plan(plan)
    if approve is not None and plan.has_changes and not approve(plan):
        return None
    backend = ws.backend
    with ws.locked(plan.stack, command):
        snapshot = backend.snapshot(plan.stack)
        _refuse_stale(plan, snapshot)
        if plan.refresh_only:
            return _accept_refresh(backend, plan, snapshot)
        stack_id = plan.stack_id
        lineage = plan.lineage if snapshot.serial == 0 else snapshot.lineage
        # from the first write on, Ctrl-C asks the scheduler to stop instead of raising
        with interrupts.deferred(cancel) as pressed:
            serial = backend.begin_version(plan.stack, command, stack_id, lineage)
            providers = ws.providers(plan.stack, plan, settings)
            lost_state.remember(providers.stack)
            status = "failed"
            result = ApplyResult()
            finished = False
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
                backend.finish_version(plan.stack, serial, status, result.outputs or None)
                finished = True
                if rollback and undo.wanted(result):
                    result.rollback = undo.run(
                        backend, plan, ws.registry, providers, current, result,
                        failed_serial=serial, outputs_before=snapshot.outputs,
                        outputs=lambda rs: evaluate_outputs(plan, rs),
                        jobs=jobs, reporter=reporter, interrupts=pressed,
                    )  # fmt: skip
            finally:
                if not result.abandoned:  # abandoned steps may still use the connections
                    providers.close()
                if not finished:
                    backend.finish_version(plan.stack, serial, status, result.outputs or None)
        retained = any(u.retained for u in plan.state_updates)
        if plan.destroy and result.ok and not result.resources and not retained:
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
            update = {"id": u.id, "inputs": u.inputs, "attributes": u.attributes,
                      "status": "REFRESH_COMPLETE"}  # fmt: skip
            if u.lifecycle is not None:  # rules changed in the stack
                update["lifecycle"] = normal(u.lifecycle)
            rs = current[u.address].model_copy(update=update)
            resources[u.address] = rs
        else:
            resources.pop(u.address, None)
        if rs is not None:
            reason = "taken in as found" if u.fields or u.lifecycle is None else u.reason
        else:
            reason = f"forgotten: {u.reason or 'deleted outside iacloud'}"
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


def dependency_dot(config: StackConfig) -> str:
    """The stack's dependency graph as Graphviz DOT."""
    return to_dot(build_graph(config))
