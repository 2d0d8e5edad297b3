"""The executor: runs a plan's steps in dependency order, N at once, recording each step durably.

Before a step touches a host its pending operation is written; when it finishes, its result
replaces the pending operation in one transaction; a failed step's pending operation is dropped
only when the provider proved it left nothing (`CleanupUnproven`). A failed step's dependents are
skipped while independent steps go on. On Ctrl-C no new step starts; running steps finish and are
recorded; a second Ctrl-C leaves them running (`iacloud.interrupts`).
Only the scheduling thread writes state; workers only call providers.
"""

from __future__ import annotations

import heapq
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Literal

import networkx as nx
from pydantic import ValidationError

from iacloud import expressions
from iacloud.diff import diff_inputs, next_boot_fields, normalize_inputs
from iacloud.errors import CleanupUnproven, IacloudError
from iacloud.expressions import Resolver, Unknown
from iacloud.graph import Hub
from iacloud.interrupts import Interrupts
from iacloud.plan import Change, Plan
from iacloud.provider import Observed, ProviderSet, Registry, ResourceType
from iacloud.redact import Redactor
from iacloud.rules import Lifecycle, normal
from iacloud.schema import field_flag
from iacloud.state import StateBackend
from iacloud.state.model import Event, PendingOperation, ResourceState
from iacloud.steps import Step, priorities, run_info, step_graph


@dataclass
class StepOutcome:
    step: Step
    status: Literal["complete", "failed", "skipped", "not started", "unchanged"]
    elapsed: float = 0.0
    error: str | None = None


@dataclass
class ApplyResult:
    outcomes: list[StepOutcome] = field(default_factory=list)
    interrupted: bool = False
    # steps still running when a second Ctrl-C made the run leave ("create web[0]")
    abandoned: list[str] = field(default_factory=list)
    resources: dict[str, ResourceState] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    # apply --rollback after a failed step: the result of undoing the run (None: not tried)
    rollback: ApplyResult | None = None

    @property
    def failed(self) -> list[StepOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.interrupted and not any(
            o.status in ("failed", "skipped", "not started") for o in self.outcomes
        )


class Reporter:
    """Progress callbacks; the CLI prints, tests record."""

    def step_started(self, step: Step) -> None: ...

    def step_finished(self, outcome: StepOutcome) -> None: ...

    def interrupted(self, running: int) -> None: ...

    def rollback_started(self, steps: int) -> None: ...


class StateResolver(Resolver):
    """Evaluates references against the resources recorded so far in this run."""

    def __init__(self, groups: Mapping[str, list[str]], current: Mapping[str, ResourceState]):
        self.groups = groups
        self.current = current

    def instances(self, name: str) -> list[str] | None:
        return self.groups.get(name)

    def resource_id(self, address: str) -> Any:
        rs = self.current.get(address)
        return (
            rs.id if rs else Unknown(expressions.GetResource(*expressions.parse_address(address)))
        )

    def attribute(self, address: str, attribute: str) -> Any:
        rs = self.current.get(address)
        if rs is None:
            name, index = expressions.parse_address(address)
            return Unknown(expressions.GetAttr(name, index, attribute))
        return rs.id if attribute == "id" else rs.attributes.get(attribute)


class Executor:
    def __init__(
        self,
        plan: Plan,
        registry: Registry,
        providers: ProviderSet,
        backend: StateBackend,
        serial: int,
        current: Mapping[str, ResourceState],
        jobs: int = 4,
        reporter: Reporter | None = None,
        clock: Callable[[], float] = time.monotonic,
        interrupts: Interrupts | None = None,
        event_action: str | None = None,
    ) -> None:
        # event_action: every step's event action (ROLLBACK), instead of CREATE/UPDATE/DELETE
        self.event_action = event_action
        self.plan = plan
        self.registry = registry
        self.providers = providers
        self.backend = backend
        self.serial = serial
        self.current: dict[str, ResourceState] = dict(current)
        self.jobs = max(1, jobs)
        self.reporter = reporter or Reporter()
        self.groups = plan.groups
        self.clock = clock
        self.interrupts = interrupts or Interrupts()
        # hidden parameters, and the sensitive attributes of what exists (a random string's
        # value): where they flow into another resource's inputs, those inputs are sensitive too
        self.redactor = Redactor([*plan.hidden_values, *_secret_attributes(self.current.values())])
        self.resolver = StateResolver(self.groups, self.current)
        self.resolved: dict[tuple[str, str], dict[str, Any]] = {}  # step -> inputs it ran with

    # -- scheduling (the only thread that writes state) --

    def run(self) -> ApplyResult:
        graph = step_graph(self.plan, self.current)
        self.providers.begin_run(run_info(graph))
        result = ApplyResult()
        remaining = {n: graph.in_degree(n) for n in graph}
        priority = priorities(graph)
        ready: list[tuple[tuple[int, str], Any]] = []
        for n in [n for n, d in remaining.items() if d == 0 and not isinstance(n, Hub)]:
            heapq.heappush(ready, (priority[n], n))
        running: dict[Future[Observed | None], tuple[Any, float]] = {}
        done: set[Any] = set()
        stopped = False
        pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="iacloud-step")
        try:
            while ready or running:
                if self.interrupts.stop and not stopped:
                    stopped = True
                    result.interrupted = True
                    self.reporter.interrupted(len(running))
                if self.interrupts.abort and running:
                    # a second Ctrl-C: leave the running steps; their pending operations stay
                    result.abandoned = sorted(
                        f"{graph.nodes[n]['step'].kind} {n[1]}" for n, _ in running.values()
                    )
                    break
                while ready and len(running) < self.jobs and not stopped:
                    node = heapq.heappop(ready)[1]
                    future = self._start(pool, graph.nodes[node]["step"], result)
                    if future is not None:
                        running[future] = (node, self.clock())
                    else:
                        done.add(node)
                        for n in self._release(graph, node, remaining):
                            heapq.heappush(ready, (priority[n], n))
                    if self.interrupts.stop:
                        break
                if stopped and not running:
                    break
                try:
                    finished, _ = wait(list(running), timeout=0.25, return_when=FIRST_COMPLETED)
                except KeyboardInterrupt:  # no handler installed (see iacloud.interrupts)
                    self.interrupts.press()
                    continue
                for future in finished:
                    node, started = running.pop(future)
                    step = graph.nodes[node]["step"]
                    ok = self._finish(step, future, self.clock() - started, result)
                    if ok:
                        done.add(node)
                        for n in self._release(graph, node, remaining):
                            heapq.heappush(ready, (priority[n], n))
                    else:
                        self._skip_descendants(graph, node, step, result, done)
        finally:
            # after an abort, worker threads are left running: nothing waits for them
            pool.shutdown(wait=not result.abandoned, cancel_futures=True)
        touched = {o.step.key for o in result.outcomes}
        for node in graph:
            if node not in touched and not isinstance(node, Hub):
                result.outcomes.append(StepOutcome(graph.nodes[node]["step"], "not started"))
        result.resources = self.current
        return result

    def _release(self, graph: nx.DiGraph, node: Any, remaining: dict[Any, int]) -> list[Any]:
        """The steps ready once `node` is done (a hub is passed through when all before it are)."""
        out = []
        done = [node]
        while done:
            for succ in graph.successors(done.pop()):
                remaining[succ] -= 1
                if remaining[succ] == 0:
                    (done if isinstance(succ, Hub) else out).append(succ)
        return out

    def _skip_descendants(
        self, graph: nx.DiGraph, node: Any, step: Step, result: ApplyResult, done: set[Any]
    ) -> None:
        for desc in nx.descendants(graph, node):
            if desc in done or isinstance(desc, Hub):
                continue
            done.add(desc)
            result.outcomes.append(
                StepOutcome(
                    graph.nodes[desc]["step"],
                    "skipped",
                    error=f"skipped because {step.kind} of {step.change.address} failed",
                )
            )

    def _start(self, pool: ThreadPoolExecutor, step: Step, result: ApplyResult) -> Future | None:
        """Resolve the step's inputs, journal it and hand it to a worker. None: nothing to do
        (or it failed before touching the host, recorded in result)."""
        c = step.change
        type_cls = self.registry.types[c.type]
        inputs_model = None
        resolved: dict[str, Any] = {}
        changed: frozenset[str] = frozenset()
        if step.kind in ("create", "update"):
            try:
                planned = expressions.from_json(c.after or {})
                values = expressions.evaluate(planned, self.resolver)
                resolved = normalize_inputs(type_cls, values)
                if expressions.has_unknown(resolved):
                    raise IacloudError("inputs still unknown after their dependencies were applied")
                inputs_model = type_cls.Inputs.model_validate(resolved)
            except (ValidationError, expressions.ExpressionError, IacloudError) as exc:
                self._fail(step, result, f"invalid inputs: {exc}", 0.0)
                return None
            if step.kind == "update":
                changed = _changed_fields(type_cls, c, resolved, expressions.has_unknown(planned))
                if not changed:
                    result.outcomes.append(StepOutcome(step, "unchanged"))
                    return None
        self.resolved[step.key] = resolved
        prior = self.current.get(c.address)
        if step.superseded:  # the old object of create-then-delete
            prior_id: str | None = c.id
        elif step.kind == "delete":
            prior_id = prior.id if prior else c.id
        else:
            prior_id = prior.id if prior else None
        op = PendingOperation(
            address=c.address,
            type=c.type,
            provider=c.provider,
            action=step.kind,
            id=prior_id,
            inputs=resolved or dict(c.before or {}),
            dependencies=list(c.dependencies),
            serial=self.serial,
        )
        self.backend.record_pending(self.plan.stack, op, self._event(step, "IN_PROGRESS"))
        self.reporter.step_started(step)
        resource = self.providers.resource(c.type)
        # The prior the plan diffed against: recorded state merged with what refresh saw, so a
        # change made outside iacloud is undone rather than taken as already applied.
        if c.before is not None:
            prior_inputs = dict(c.before)
        else:
            prior_inputs = dict(prior.inputs) if prior else {}
        prior_obs = Observed(
            id=prior_id or "",
            inputs=prior_inputs,
            attributes=dict(prior.attributes) if prior and not step.superseded else {},
        )
        if step.kind == "create":
            return pool.submit(resource.create, c.address, inputs_model)
        if step.kind == "update":
            return pool.submit(resource.update, c.address, prior_obs, inputs_model, changed)
        return pool.submit(_delete, resource, c.address, prior_obs)

    def _finish(self, step: Step, future: Future, elapsed: float, result: ApplyResult) -> bool:
        c = step.change
        try:
            observed = future.result()
        except Exception as exc:  # a provider failure is reported, never a traceback
            message = str(exc) if isinstance(exc, IacloudError) else _describe(exc)
            # the pending operation goes only when the provider proved nothing is left
            unproven = isinstance(exc, CleanupUnproven) or not isinstance(exc, IacloudError)
            if unproven:
                message += (
                    "; its pending operation is kept: the next plan looks for what it left "
                    "by its ownership tag"
                )
            self._fail(step, result, message, elapsed, keep_pending=unproven)
            return False
        if step.kind == "delete":
            if step.superseded:
                self.backend.record_result(
                    self.plan.stack, self.serial, c.address, self.current[c.address],
                    self._event(step, "COMPLETE"),
                )  # fmt: skip
            else:
                self.current.pop(c.address, None)
                self.backend.record_result(
                    self.plan.stack, self.serial, c.address, None, self._event(step, "COMPLETE")
                )
        else:
            assert observed is not None
            rs = self._resource_state(step, observed)
            self.current[c.address] = rs
            self.backend.record_result(
                self.plan.stack, self.serial, c.address, rs, self._event(step, "COMPLETE")
            )
        outcome = StepOutcome(step, "complete", elapsed)
        result.outcomes.append(outcome)
        self.reporter.step_finished(outcome)
        return True

    def _fail(
        self,
        step: Step,
        result: ApplyResult,
        message: str,
        elapsed: float,
        keep_pending: bool = False,
    ) -> None:
        message = self.redactor.text(message)
        self.resolved.pop(step.key, None)
        self.backend.record_failure(
            self.plan.stack,
            step.change.address,
            self._event(step, "FAILED", message),
            keep_pending,
        )
        outcome = StepOutcome(step, "failed", elapsed, message)
        result.outcomes.append(outcome)
        self.reporter.step_finished(outcome)

    def _resource_state(self, step: Step, observed: Observed) -> ResourceState:
        c = step.change
        rs = resource_state(
            self.registry.types[c.type], c.address, c.provider, self.resolved.pop(step.key),
            observed, c.dependencies, f"{self.event_action or step.event_action}_COMPLETE",
            self.redactor,
            lifecycle=c.lifecycle,
        )  # fmt: skip
        secrets = _secret_attributes([rs])
        if secrets:
            self.redactor = Redactor([*self.redactor.values, *secrets])
        return rs

    def _event(
        self, step: Step, status: Literal["IN_PROGRESS", "COMPLETE", "FAILED"], reason: str = ""
    ) -> Event:
        if self.event_action and not reason:
            # what each rollback step undoes, and what it cannot
            reason = "; ".join([step.kind, *step.change.reasons])
        return Event(
            serial=self.serial,
            address=step.change.address,
            type=step.change.type,
            action=self.event_action or step.event_action,
            status=status,
            reason=reason,
        )


def _changed_fields(
    type_cls: type[ResourceType], change: Change, resolved: Mapping[str, Any], had_unknown: bool
) -> frozenset[str]:
    """The fields an update step changes: those the plan decided, unless some of its values
    were unknown then (they are compared again, now known); and the fields to restore in the
    persistent definition alone, whose value there still differs."""
    if had_unknown:
        fields = diff_inputs(type_cls, change.before or {}, resolved)
    else:
        fields = [f for f in change.fields if not f.next_boot_only]
    return frozenset(f.field for f in fields) | next_boot_fields(change, resolved)


def _delete(resource: Any, address: str, prior: Observed) -> None:
    resource.delete(address, prior)
    return None


def _describe(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" at {frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}" if frame else ""
    return f"{type(exc).__name__}: {exc}{where} (a bug: please report it)"


def _secret_attributes(resources: Iterable[ResourceState]) -> list[str]:
    """The string values of sensitive attributes (long enough not to mask everything)."""
    return [
        v
        for rs in resources
        for name in rs.sensitive_attributes
        if isinstance(v := rs.attributes.get(name), str) and len(v) >= 8
    ]


def resource_state(
    type_cls: type[ResourceType],
    address: str,
    provider: str,
    inputs: Mapping[str, Any],
    observed: Observed,
    dependencies: Sequence[str],
    status: str,
    redactor: Redactor,
    lifecycle: Lifecycle | None = None,
) -> ResourceState:
    """What state records for an object: the inputs it was made from, its observed attributes,
    and which of both are never to be printed. Used by apply and by import alike, so an
    imported object is recorded exactly as a created one."""
    inputs = dict(inputs)
    # a field the provider chose (a MAC, say) is recorded as chosen
    for name, info in type_cls.Inputs.model_fields.items():
        if inputs.get(name) is None and field_flag(info, "computed_default"):
            inputs[name] = observed.inputs.get(name)
    sensitive = [
        name
        for name, info in type_cls.Inputs.model_fields.items()
        if field_flag(info, "sensitive") or redactor.value(inputs.get(name)) != inputs.get(name)
    ]
    attributes = {**observed.attributes, "id": observed.id}
    hidden_attrs = [
        name
        for name, value in attributes.items()
        if name in type_cls.sensitive_attributes or redactor.value(value) != value
    ]
    return ResourceState(
        sensitive_inputs=sensitive,
        sensitive_attributes=hidden_attrs,
        address=address,
        type=type_cls.type_name,
        provider=provider,
        id=observed.id,
        inputs=inputs,
        attributes=attributes,
        dependencies=list(dependencies),
        status=status,
        lifecycle=normal(lifecycle),
    )
