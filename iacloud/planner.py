"""The planner: from configuration, prior state and refreshed reality to a Plan (pure data).

One pure function, `choose_action`, decides each resource's action; `iacloud.diff` says which
fields changed and what each change costs, reading the update policy from the type's schema.
The plan carries everything apply needs: per change the fields it decided, and the counted
groups whole-group references name.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import networkx as nx
from pydantic import ValidationError

from iacloud import expressions, lifecycle, pending, state_updates
from iacloud.config import ResourceConfig, StackConfig
from iacloud.diff import diff_inputs, next_boot_changes, normalize_inputs, observed_drift
from iacloud.errors import Diagnostic, UserError, did_you_mean
from iacloud.expressions import Resolver, Unknown, has_unknown
from iacloud.graph import Hub, build_graph
from iacloud.plan import (
    Action,
    Change,
    DriftItem,
    DriftKind,
    FieldChange,
    Plan,
    Reason,
    ReasonCode,
    StateUpdate,
)
from iacloud.provider import Observed, Registry, Remaining, ResourceType, TaggedObject
from iacloud.rules import Lifecycle
from iacloud.schema import Disruption, max_disruption
from iacloud.state.model import ResourceState, Snapshot


def choose_action(
    *,
    exists: bool,
    desired: bool,
    forces_replacement: bool,
    changed: bool,
    replace_requested: bool = False,
    tainted: bool = False,
    create_before_destroy: bool = False,
) -> Action:
    """The action for one resource. `exists`: a real object is there; `desired`: the stack
    declares it; `forces_replacement`: a changed field cannot change in place; `tainted`: its
    create was interrupted, so its contents cannot be trusted."""
    if not desired:
        return Action.DELETE if exists else Action.NOOP
    if not exists:
        return Action.CREATE
    if forces_replacement or replace_requested or tainted:
        return Action.CREATE_DELETE if create_before_destroy else Action.DELETE_CREATE
    return Action.UPDATE if changed else Action.NOOP


@dataclass
class Prior:
    """What exists for one address before the plan: recorded and (if refreshed) observed."""

    state: ResourceState | None
    observed: Observed | None  # None: not refreshed, or not found
    exists: bool
    inputs: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    tainted: bool = False
    type: str = ""
    provider: str = ""
    dependencies: list[str] = field(default_factory=list)
    unknown: str | None = None  # it could not be read: why (left as recorded, not planned)


def reconcile(
    snapshot: Snapshot,
    observed: Mapping[str, Observed] | None,
    registry: Registry,
) -> tuple[dict[str, Prior], list[DriftItem]]:
    """Merge recorded state with what refresh found: the prior of every address, and drift."""
    priors: dict[str, Prior] = {}
    drift: list[DriftItem] = []
    for address, rs in snapshot.resources.items():
        type_cls = registry.types.get(rs.type)
        if observed is None:
            priors[address] = Prior(
                rs, None, True, dict(rs.inputs), dict(rs.attributes), rs.id,
                type=rs.type, provider=rs.provider, dependencies=list(rs.dependencies),
            )  # fmt: skip
            continue
        obs = observed.get(address)
        if obs is not None and obs.unknown is not None:
            drift.append(
                DriftItem(address=address, type=rs.type, kind=DriftKind.UNKNOWN, reason=obs.unknown)
            )
            priors[address] = Prior(
                rs, None, True, dict(rs.inputs), dict(rs.attributes), rs.id, type=rs.type,
                provider=rs.provider, dependencies=list(rs.dependencies), unknown=obs.unknown,
            )  # fmt: skip
            continue
        if obs is None:
            drift.append(DriftItem(address=address, type=rs.type, kind=DriftKind.MISSING))
            priors[address] = Prior(rs, None, False, type=rs.type, provider=rs.provider)
            continue
        if type_cls is not None:
            fields = observed_drift(type_cls, rs.inputs, obs)
            if fields:
                drift.append(
                    DriftItem(address=address, type=rs.type, kind=DriftKind.MODIFIED, fields=fields)
                )
        priors[address] = Prior(
            rs, obs, True, {**rs.inputs, **obs.inputs}, dict(obs.attributes), obs.id,
            type=rs.type, provider=rs.provider, dependencies=list(rs.dependencies),
        )  # fmt: skip
    for op in snapshot.pending:
        if op.address in priors and priors[op.address].exists:
            continue
        obs = observed.get(op.address) if observed is not None else None
        if op.action == "create" and obs is not None:
            # a create that was cut off left a real object: keep it as tainted, so it is
            # replaced (or deleted) rather than leaked
            drift.append(DriftItem(address=op.address, type=op.type, kind=DriftKind.INTERRUPTED))
            priors[op.address] = Prior(
                None, obs, True, {**op.inputs, **obs.inputs}, dict(obs.attributes), obs.id,
                tainted=True, type=op.type, provider=op.provider,
                dependencies=list(op.dependencies),
            )  # fmt: skip
    return priors, drift


class _PlanResolver(Resolver):
    def __init__(
        self, config: StackConfig, priors: Mapping[str, Prior], actions: dict[str, Action]
    ):
        self.config = config
        self.priors = priors
        self.actions = actions

    def instances(self, name: str) -> list[str] | None:
        return self.config.groups.get(name)

    def resource_id(self, address: str) -> Any:
        if self.actions.get(address) in (Action.NOOP, Action.UPDATE):
            return self.priors[address].id
        return Unknown(expressions.GetResource(*expressions.parse_address(address)))

    def attribute(self, address: str, attribute: str) -> Any:
        action = self.actions.get(address)
        if action is Action.NOOP or (action is Action.UPDATE and attribute == "id"):
            return self.priors[address].attributes.get(attribute)
        name, index = expressions.parse_address(address)
        return Unknown(expressions.GetAttr(name, index, attribute))


@dataclass(frozen=True)
class PlanOptions:
    refresh: bool = True
    destroy: bool = False
    refresh_only: bool = False  # accept reality into state; change nothing on the host
    targets: Collection[str] = ()
    replace: Collection[str] = ()


def plan(
    config: StackConfig,
    snapshot: Snapshot,
    observed: Mapping[str, Observed] | None,
    registry: Registry,
    options: PlanOptions,
    resources: Callable[[str], ResourceType],
    leftovers: Mapping[str, Sequence[TaggedObject]] | None = None,
) -> Plan:
    """Compute the plan. Raises UserError with every plan-time diagnostic. `resources` gives
    the run's resource type instances, whose check() runs; `leftovers`: what interrupted
    creates left, found by tag (`pending.find_leftovers`)."""
    priors, drift = reconcile(snapshot, observed, registry)
    if options.refresh_only:
        return state_updates.refresh_only_plan(
            _plan_header(config, snapshot), snapshot, observed, priors, drift
        )
    selected = _check_options(config, priors, options)
    planning = _Planning(config, registry, options, resources, priors, drift, selected)
    if not options.destroy:
        planning.plan_declared()
    planning.plan_orphans()
    planning.check_deletes()
    if observed is not None:
        keep = pending.keeps(config.resources, selected, options.destroy)
        extra, forgotten = pending.resolve(
            snapshot, observed, leftovers or {}, registry, keep, options.destroy
        )
        for c in extra:
            planning.changes.setdefault(c.address, c)
        planning.accepted.extend(forgotten)

    changes = planning.changes
    ordered = [changes[a] for a in config.resources if a in changes]
    ordered += [c for a, c in changes.items() if a not in config.resources]
    refused = lifecycle.refuse_destroys(ordered, config, snapshot, options.destroy)
    if refused:
        raise UserError(refused)
    return Plan(
        **_plan_header(config, snapshot),
        destroy=options.destroy,
        refreshed=observed is not None,
        changes=ordered,
        drift=drift,
        state_updates=planning.accepted,
        max_disruption=max_disruption([c.disruption for c in ordered if c.action != Action.NOOP]),
        # a destroy leaves no instance for a whole-group reference to name
        groups={} if options.destroy else {n: list(a) for n, a in config.groups.items()},
    )


def _check_options(
    config: StackConfig, priors: Mapping[str, Prior], options: PlanOptions
) -> set[str] | None:
    """Check --replace and --target (every unknown name, at once); the selected addresses."""
    diagnostics: list[Diagnostic] = []
    for address in options.replace:
        if address not in priors and address not in config.resources:
            diagnostics.append(Diagnostic(f"--replace: no resource '{address}' in the stack"))
    selected = _select_targets(config, options.targets, diagnostics)
    if diagnostics:
        raise UserError(diagnostics)
    return selected


class _Planning:
    """One plan being computed: the changes and state updates so far, and the actions the
    resolver reads to know which values of a dependency are known at plan time."""

    def __init__(
        self,
        config: StackConfig,
        registry: Registry,
        options: PlanOptions,
        resources: Callable[[str], ResourceType],
        priors: Mapping[str, Prior],
        drift: Sequence[DriftItem],
        selected: set[str] | None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.options = options
        self.resources = resources
        self.priors = priors
        self.drift_of = {d.address: d for d in drift}
        self.selected = selected
        self.actions: dict[str, Action] = {}
        self.changes: dict[str, Change] = {}
        self.accepted: list[StateUpdate] = []
        self.diagnostics: list[Diagnostic] = []
        self.resolver = _PlanResolver(config, priors, self.actions)

    def plan_declared(self) -> None:
        """A change for every resource the stack declares, dependencies first (their actions
        decide what is known of them). Raises UserError with every diagnostic."""
        for address in nx.topological_sort(build_graph(self.config)):
            if isinstance(address, Hub):
                continue
            prior = self.priors.get(address)
            if self.selected is not None and address not in self.selected:
                if prior is not None and prior.exists:
                    self.actions[address] = Action.NOOP  # untouched: its recorded values stand
                continue
            self._plan_resource(address, self.config.resources[address], prior)
        if self.diagnostics:
            raise UserError(self.diagnostics)

    def _plan_resource(self, address: str, rc: ResourceConfig, prior: Prior | None) -> None:
        if prior is not None and prior.unknown is not None:
            # as recorded: its host cannot be reached, so nothing is planned for it
            self.actions[address] = Action.NOOP
            self.changes[address] = Change(
                address=address,
                type=rc.type,
                provider=rc.provider,
                action=Action.NOOP,
                id=prior.id,
                before=prior.inputs,
                after=prior.inputs,
                dependencies=list(rc.depends_on),
                lifecycle=rc.lifecycle,
            )
            return
        type_cls = self.registry.types[rc.type]
        where = f"resources.{address}"
        try:
            values = expressions.evaluate(rc.properties, self.resolver)
            after = normalize_inputs(type_cls, values)
        except (ValidationError, expressions.ExpressionError) as exc:
            self.diagnostics.extend(_diagnostics(exc, self.config, where))
            return
        exists = prior is not None and prior.exists
        rules = rc.lifecycle
        if exists:
            assert prior is not None
            after = lifecycle.keep_ignored(after, prior.inputs, rules)
        fields = diff_inputs(type_cls, prior.inputs, after) if exists else []
        refused = self._not_in_place(address, rc, type_cls, after, prior, fields)
        fields = [
            f.model_copy(update={"forces_replacement": True, "disruption": Disruption.REPLACE})
            if f.field in refused
            else f
            for f in fields
        ]
        boot_fields = next_boot_changes(type_cls, prior.observed, after, fields) if exists else []
        fields = lifecycle.drop_ignored(fields + boot_fields, rules)
        boot_fields = lifecycle.drop_ignored(boot_fields, rules)
        forces = [f.field for f in fields if f.forces_replacement]
        requested = address in self.options.replace
        wants_cbd = rules is not None and rules.create_before_destroy
        action = choose_action(
            exists=exists,
            desired=True,
            forces_replacement=bool(forces),
            changed=bool(fields),
            replace_requested=requested,
            tainted=bool(prior and prior.tainted),
            create_before_destroy=type_cls.create_before_destroy or wants_cbd,
        )
        if action is Action.CREATE_DELETE and not type_cls.create_before_destroy:
            self.diagnostics.extend(
                lifecycle.collisions(type_cls, fields, str(self.config.file), address)
            )
        if not has_unknown(after) and action is not Action.DELETE:
            self._check(address, rc, type_cls, after, prior if exists else None)
        self.actions[address] = action
        if action is Action.NOOP and prior is not None and prior.state is not None:
            self._take_in(address, prior, prior.state, rules)
        reasons = _reasons(action, prior, forces, requested, boot_fields)
        reasons += [
            Reason(code=ReasonCode.NOT_IN_PLACE, fields=[field], detail=why)
            for field, why in refused.items()
        ]
        self.changes[address] = Change(
            address=address,
            type=rc.type,
            provider=rc.provider,
            action=action,
            id=prior.id if exists else None,
            before=prior.inputs if exists else None,
            after=None if action is Action.DELETE else expressions.to_json(after),
            fields=fields,
            disruption=_disruption(action, type_cls, fields),
            why=reasons,
            dependencies=list(rc.depends_on),
            lifecycle=rules,
        )

    def _not_in_place(
        self,
        address: str,
        rc: ResourceConfig,
        type_cls: type[ResourceType],
        after: dict[str, Any],
        prior: Prior | None,
        fields: Sequence[FieldChange],
    ) -> dict[str, str]:
        """The changed fields the existing object cannot take in place, with why."""
        if not fields or prior is None or has_unknown(after):
            return {}
        try:
            inputs = type_cls.Inputs(**after)
        except ValidationError:
            return {}  # reported by the check
        found = self.resources(rc.type).not_in_place(address, inputs, _known(prior))
        return {f.field: found[f.field] for f in fields if f.field in found}

    def _take_in(
        self, address: str, prior: Prior, rs: ResourceState, rules: Lifecycle | None
    ) -> None:
        update = state_updates.take_in(prior, rs, rules, self.drift_of.get(address))
        if update is not None:
            self.accepted.append(update)

    def _check(
        self,
        address: str,
        rc: ResourceConfig,
        type_cls: type[ResourceType],
        after: dict[str, Any],
        prior: Prior | None,
    ) -> None:
        """The provider's plan-time check of fully known inputs against what exists."""
        known_prior = _known(prior) if prior is not None else None
        found = self.resources(rc.type).check(address, type_cls.Inputs(**after), known_prior)
        where = f"resources.{address}"
        self.diagnostics.extend(_locate(d, self.config, where) for d in found)

    def plan_orphans(self) -> None:
        """A delete for every object recorded (or left by an interrupted create) that the stack
        no longer declares, or every object on destroy."""
        destroy = self.options.destroy
        gone = ReasonCode.DESTROY_REQUESTED if destroy else ReasonCode.NOT_IN_STACK
        for address, prior in self.priors.items():
            if (address in self.config.resources and not destroy) or not prior.exists:
                continue
            if prior.unknown is not None:
                continue  # kept in state until its host answers again
            if self.selected is not None and address not in self.selected:
                continue
            if prior.state is not None and lifecycle.recorded(prior.state).retain:
                self.accepted.append(lifecycle.retained(prior.state, destroy))
                continue
            type_cls = self.registry.types.get(prior.type)
            self.changes[address] = Change(
                address=address,
                type=prior.type,
                provider=prior.provider,
                action=Action.DELETE,
                id=prior.id,
                before=prior.inputs,
                disruption=type_cls.replace_disruption if type_cls else Disruption.REPLACE,
                why=[Reason(code=gone)],
                dependencies=prior.dependencies,
            )

    def check_deletes(self) -> None:
        """The provider's plan-time check of each delete (and each replacement's delete half)
        against the objects the plan keeps. Raises UserError with every diagnostic."""
        deleting = (Action.DELETE, Action.DELETE_CREATE, Action.CREATE_DELETE)
        doomed = [c for c in self.changes.values() if c.action in deleting]
        if not doomed:
            return
        remaining = {
            address: Remaining(address, prior.type, prior.id, prior.inputs)
            for address, prior in self.priors.items()
            if prior.exists
            and (address not in self.changes or self.changes[address].action not in deleting)
        }
        for change in doomed:
            prior = self.priors.get(change.address)
            if prior is None or not prior.exists or change.type not in self.registry.types:
                continue
            observed = prior.observed or Observed(prior.id or "", prior.inputs, prior.attributes)
            found = self.resources(change.type).check_delete(change.address, observed, remaining)
            where = f"resources.{change.address}"
            self.diagnostics.extend(_locate(d, self.config, where) for d in found)
        if self.diagnostics:
            raise UserError(self.diagnostics)


def _known(prior: Prior) -> Observed:
    """What a plan-time check sees of an existing object: as read, else as recorded."""
    return prior.observed or Observed(prior.id or "", prior.inputs, prior.attributes)


def _reasons(
    action: Action,
    prior: Prior | None,
    forces: Sequence[str],
    requested: bool,
    boot_fields: Sequence[FieldChange],
) -> list[Reason]:
    """Why a declared resource gets its action."""
    reasons = []
    if prior is None or not prior.exists:
        if prior is not None and prior.state is not None:
            reasons.append(Reason(code=ReasonCode.DELETED_OUTSIDE))
    elif action.is_replace:
        if forces:
            reasons.append(Reason(code=ReasonCode.FORCES_REPLACEMENT, fields=list(forces)))
        if requested:
            reasons.append(Reason(code=ReasonCode.REPLACE_REQUESTED))
        if prior.tainted:
            reasons.append(Reason(code=ReasonCode.CREATE_INTERRUPTED))
    if action is Action.UPDATE and boot_fields:
        fields = [f.field for f in boot_fields]
        reasons.append(Reason(code=ReasonCode.NEXT_BOOT_ONLY, fields=fields))
    elif action is Action.DELETE:
        reasons.append(Reason(code=ReasonCode.DESTROY_REQUESTED))
    return reasons


def _disruption(
    action: Action, type_cls: type[ResourceType], fields: Sequence[FieldChange]
) -> Disruption:
    """What a change costs the running object."""
    if action is Action.UPDATE:
        return max_disruption([f.disruption for f in fields])
    if action.is_replace or action is Action.DELETE:
        return type_cls.replace_disruption
    return Disruption.NONE


def _plan_header(config: StackConfig, snapshot: Snapshot) -> dict[str, Any]:
    """The fields every plan carries: where it comes from, and what apply needs besides
    the changes (outputs, redaction, provider settings)."""
    return dict(
        stack=config.name,
        stack_file=str(config.file),
        stack_id=snapshot.stack_id,
        lineage=snapshot.lineage,
        serial=snapshot.serial,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        outputs={n: expressions.to_json(o.value) for n, o in config.outputs.items()},
        sensitive_outputs=[n for n, o in config.outputs.items() if o.sensitive],
        hidden_values=list(config.hidden_values),
        provider_settings={
            name: s.model_dump(mode="json") for name, s in config.provider_settings.items()
        },
    )


def _select_targets(
    config: StackConfig, targets: Collection[str], diagnostics: list[Diagnostic]
) -> set[str] | None:
    """--target: the named resources (a counted name means all instances) and everything they
    depend on; None means all."""
    if not targets:
        return None
    selected: set[str] = set()
    for t in targets:
        if t in config.resources:
            selected.add(t)
        elif t in config.groups:
            selected.update(config.groups[t])
        else:
            hint = did_you_mean(t, list(config.resources) + list(config.groups))
            diagnostics.append(Diagnostic(f"--target: no resource '{t}' in the stack", hint=hint))
    stack = list(selected)
    walked: set[int] = set()  # a list shared by a whole group is walked once, not per instance
    while stack:
        deps = config.resources[stack.pop()].depends_on
        if id(deps) in walked:
            continue
        walked.add(id(deps))
        for dep in deps:
            if dep not in selected:
                selected.add(dep)
                stack.append(dep)
    return selected


def _locate(d: Diagnostic, config: StackConfig, where: str) -> Diagnostic:
    return Diagnostic(d.message, file=str(config.file), address=where, field=d.field, hint=d.hint)


def _diagnostics(exc: Exception, config: StackConfig, where: str) -> list[Diagnostic]:
    if isinstance(exc, ValidationError):
        return [
            Diagnostic(
                e["msg"],
                file=str(config.file),
                address=where,
                field=".".join(str(p) for p in e["loc"]),
            )
            for e in exc.errors()
        ]
    return [Diagnostic(str(exc), file=str(config.file), address=where)]
