"""Jobs: the operations table is the queue, worker threads of the server run its rows.

Each worker claims the oldest runnable operation (store.claim: one per stack at a time; with
PostgreSQL `FOR UPDATE SKIP LOCKED`, so several `iacloud serve` processes share the queue),
runs it through the engine exactly as the CLI would (plan, then apply of that plan under the
stack's state lock), and records every step as an event of the operation. Cancel is the CLI's
Ctrl-C: the run's `Interrupts` is pressed once and the engine starts no new step.

A server that dies leaves its operations IN_PROGRESS; their heartbeat stops. The next server
(or another one, PostgreSQL) marks them FAILED with the steps left pending in state, which the
next apply or destroy resolves like those of a killed CLI run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iacloud import engine
from iacloud.api import templates
from iacloud.api.store import OperationRow, Store
from iacloud.api.telemetry import Metrics
from iacloud.engine import IacloudError, Interrupts, Plan, PlanOptions, UserError
from iacloud.errors import printable
from iacloud.redact import MASK, Redactor
from iacloud.render import plan_json

log = logging.getLogger("iacloud.serve")
_ACTIONS = {"create": "CREATE", "update": "UPDATE", "delete": "DELETE"}
PROGRESS_EVERY = 0.5  # seconds between writes of an operation's progress table


@dataclass
class JobSettings:
    state_url: str
    work_dir: Path
    workers: int = 4  # operations at once
    step_jobs: int = 4  # steps at once within one operation (the CLI's -j)
    lock_timeout: float = 60.0
    poll: float = 1.0  # seconds between looks at the queue when nothing woke a worker
    heartbeat: float = 5.0
    stale_after: float = (
        30.0  # a running operation whose heartbeat is older belongs to a dead server
    )


class OpReporter(engine.Reporter):
    """The executor's progress as the operation's resource events and progress table."""

    def __init__(self, store: Store, op: OperationRow, redactor: Redactor, metrics: Metrics,
                 notify: Callable[[str], None]) -> None:  # fmt: skip
        self.store, self.op, self.redactor = store, op, redactor
        self.metrics, self.notify = metrics, notify
        self.progress: dict[str, dict[str, Any]] = {}
        self._written = 0.0

    def _record(self, address: str, entry: dict[str, Any]) -> None:
        """Never raises: the state is the record of the run; a hiccup of the service tables
        loses an event of the operation, not the apply."""
        try:
            self._write(address, entry)
        except Exception:
            log.exception("recording a step of operation %s", self.op.id)

    def _write(self, address: str, entry: dict[str, Any]) -> None:
        self.progress[address] = entry
        # The whole table at most twice a second (and at the end, see Jobs._run): written at
        # every step, an apply of N resources would write O(N^2) bytes.
        t = time.monotonic()
        table = self.progress if t - self._written >= PROGRESS_EVERY else None
        if table is not None:
            self._written = t
        self.store.record_step(self.op.id, {"address": address, **entry}, table)
        self.notify(self.op.id)

    def step_started(self, step: engine.Step) -> None:
        self._record(step.change.address, {"action": _ACTIONS[step.kind], "type": step.change.type,
                                           "status": "IN_PROGRESS"})  # fmt: skip

    def step_finished(self, outcome: engine.StepOutcome) -> None:
        step = outcome.step
        status = "FAILED" if outcome.status == "failed" else "COMPLETE"
        entry: dict[str, Any] = {
            "action": _ACTIONS[step.kind],
            "type": step.change.type,
            "status": status,
            "elapsed": round(outcome.elapsed, 3),
        }
        if outcome.error:
            entry["error"] = printable(self.redactor.text(outcome.error))
        self.metrics.step_seconds.labels(step.kind, step.change.type, status.lower()).observe(
            outcome.elapsed
        )
        self._record(step.change.address, entry)


class Jobs:
    def __init__(self, store: Store, settings: JobSettings, registry: engine.Registry,
                 metrics: Metrics, notify: Callable[[str], None]) -> None:  # fmt: skip
        self.store = store
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.notify = notify
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.flags: dict[str, Interrupts] = {}
        self._flags_lock = threading.Lock()
        self._wake: queue.Queue[None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._reporters: dict[str, OpReporter | None] = {}  # by operation, while it runs

    # -- life cycle --

    def start(self) -> None:
        # SQLite: one server per database, so every running operation not ours is a dead one's
        self.recover(0.0 if not self.store.pg else self.settings.stale_after)
        for i in range(self.settings.workers):
            t = threading.Thread(target=self._work, name=f"iacloud-job-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._housekeeping, name="iacloud-jobs-watch", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking work; running operations stop scheduling (Ctrl-C) and are recorded."""
        self._stop.set()
        with self._flags_lock:
            for flag in self.flags.values():
                flag.press()
        for _ in self._threads:
            self._wake.put(None)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def submitted(self) -> None:
        """A new operation is queued: wake one worker."""
        self._wake.put(None)

    def cancel(self, op: OperationRow) -> None:
        """Ctrl-C for a running operation; a queued one never starts."""
        self.store.request_cancel(op.id)
        if self.store.finish(op, "CANCELLED", {"message": "cancelled before it started"}, None,
                             "cancelled", only_status="QUEUED"):  # fmt: skip
            self.metrics.operations.labels(op.action, "cancelled").inc()
        with self._flags_lock:
            flag = self.flags.get(op.id)
            if flag is not None and not flag.stop:
                flag.press()
        self.notify(op.id)

    # -- threads --

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                op = self.store.claim(self.worker)
            except Exception:
                log.exception("claiming a job failed")
                op = None
            if op is None:
                with contextlib.suppress(queue.Empty):
                    self._wake.get(timeout=self.settings.poll)
                continue
            self.notify(op.id)
            self._run(op)

    def _housekeeping(self) -> None:
        last_beat = last_sweep = time.monotonic()
        while not self._stop.wait(0.5):
            try:
                with self._flags_lock:
                    mine = bool(self.flags)
                if mine:  # cancel requests made through another server
                    for op_id in self.store.cancel_requests(self.worker):
                        with self._flags_lock:
                            flag = self.flags.get(op_id)
                        if flag is not None and not flag.stop:
                            flag.press()
                t = time.monotonic()
                if mine and t - last_beat >= self.settings.heartbeat:
                    self.store.heartbeat(self.worker)
                    last_beat = t
                if self.store.pg and t - last_sweep >= self.settings.stale_after / 3:
                    self.recover(self.settings.stale_after)
                    last_sweep = t
            except Exception:
                log.exception("job housekeeping failed")

    # -- recovery --

    def recover(self, stale_after: float) -> list[str]:
        """Mark the operations of dead servers FAILED, naming the steps they left pending."""
        done = []
        for op in self.store.orphaned(self.worker, stale_after):
            pending: list[dict[str, str]] = []
            try:
                ws = self._workspace(op, read_only=True)
                try:
                    snap = engine.state_view(ws).snapshot
                finally:
                    ws.close()
                pending = [{"action": p.action, "address": p.address} for p in snap.pending]
            except IacloudError as exc:
                log.warning("reading the state of %s: %s", op.state_key, exc)
            steps = ", ".join(f"{p['action']} {p['address']}" for p in pending) or "none"
            error = {
                "message": "the server running this operation stopped before it finished; "
                f"steps left pending in state: {steps}. The next apply or delete of the stack "
                "finds what they made by its ownership tag.",
                "pending": pending,
            }
            if self.store.finish(op, "FAILED", error, {"pending": pending}, "server stopped",
                                 only_if_worker=op.worker):  # fmt: skip
                self.metrics.operations.labels(op.action, "failed").inc()
                done.append(op.id)
                self.notify(op.id)
        return done

    # -- one operation --

    def _workspace(self, op: OperationRow, read_only: bool = False) -> engine.Workspace:
        return templates.workspace(
            self.settings.work_dir, self.settings.state_url, op.project, op.stack, op.format,
            op.template, self.registry, self.settings.lock_timeout, read_only=read_only,
        )  # fmt: skip

    def _run(self, op: OperationRow) -> None:
        flag = Interrupts()
        if op.cancel_requested:
            flag.press()
        with self._flags_lock:
            self.flags[op.id] = flag
        self.metrics.running.inc()
        started = time.monotonic()
        self._reporters[op.id] = None
        try:
            if op.action != "DELETE" and self.store.stack_deleted(op.stack_id):
                raise UserError(f"stack '{op.stack}' was deleted before this operation started")
            status, error, result = self._execute(op, flag)
        except UserError as exc:
            status, result = "FAILED", None
            error = {"message": "; ".join(str(d) for d in exc.diagnostics),
                     "diagnostics": templates.diagnostics_json(exc)}  # fmt: skip
        except IacloudError as exc:
            status, error, result = "FAILED", {"message": printable(str(exc))}, None
        except Exception as exc:
            log.exception("operation %s failed", op.id)
            status, result = "FAILED", None
            error = {"message": f"internal error ({type(exc).__name__}); see the server's log"}
        finally:
            with self._flags_lock:
                self.flags.pop(op.id, None)
            self.metrics.running.dec()
            reporter = self._reporters.pop(op.id, None)
        elapsed = time.monotonic() - started
        self.metrics.apply_seconds.labels(op.action).observe(elapsed)
        self.metrics.operations.labels(op.action, status.lower()).inc()
        reason = (error or {}).get("message", "")
        self.store.finish(op, status, error, result, reason, only_if_worker=self.worker,
                          progress=reporter.progress if reporter else None)  # fmt: skip
        self.notify(op.id)

    def _execute(
        self, op: OperationRow, flag: Interrupts
    ) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
        ws = self._workspace(op)
        try:
            if op.action == "DRIFT":
                config = templates.load(ws, op.parameters)
                report = engine.drift(ws, config)
                t = report.totals
                found = {"modified": t.modified, "missing": t.missing,
                         "interrupted": t.interrupted, "orphaned": t.orphaned}  # fmt: skip
                for kind, n in found.items():
                    self.metrics.drift.labels(op.project, op.stack, kind).set(n)
                return "COMPLETE", None, {"drifted": report.drifted,
                                          "drift": report.model_dump(mode="json")}  # fmt: skip
            if op.action == "DELETE":
                try:
                    name, settings = engine.destroy_settings(
                        ws, ws.name, templates.assignments(op.parameters)
                    )
                except UserError as exc:
                    raise templates.shown(exc, ws.stack_file) from None
                with ws.locked(name, "destroy"):
                    plan, _ = engine.destroy_plan(ws, name, provider_settings=settings)
                    return self._apply(ws, op, plan, flag, "destroy")
            config = templates.load(ws, op.parameters)
            with ws.locked(config.name, "apply"):
                plan, _ = engine.make_plan(ws, config, PlanOptions())
                return self._apply(ws, op, plan, flag, "apply")
        finally:
            ws.close()

    def _apply(
        self, ws: engine.Workspace, op: OperationRow, plan: Plan, flag: Interrupts, command: str
    ) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
        summary = plan_json(plan)["summary"]
        if flag.stop:
            return "CANCELLED", {"message": "cancelled before any step started"}, {"plan": summary}
        if not plan.has_changes and plan.serial > 0:
            return "COMPLETE", None, {"plan": summary, "steps": {}}
        redactor = Redactor(plan.hidden_values)
        reporter = OpReporter(self.store, op, redactor, self.metrics, self.notify)
        self._reporters[op.id] = reporter
        result = engine.apply(ws, plan, jobs=self.settings.step_jobs, reporter=reporter,
                              command=command, cancel=flag)  # fmt: skip
        assert result is not None  # no approve callback: never declined
        counts: dict[str, int] = {}
        for o in result.outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
        problems = [
            {"step": f"{o.step.kind} {o.step.change.address}", "status": o.status,
             "error": printable(redactor.text(o.error or ""))}
            for o in result.outcomes if o.status in ("failed", "skipped", "not started")
        ]  # fmt: skip
        outputs = {
            k: MASK if v["sensitive"] else redactor.value(v["value"])
            for k, v in (result.outputs or {}).items()
        }
        data = {"plan": summary, "steps": counts, "problems": problems, "outputs": outputs}
        if result.ok:
            return "COMPLETE", None, data
        if result.interrupted:
            why = "the server is stopping" if self._stop.is_set() else "cancelled"
            return "CANCELLED", {"message": f"{why}: no new step was started; the running "
                                 "ones finished and were recorded"}, data  # fmt: skip
        failed = "; ".join(
            f"{p['step']}: {p['error']}" for p in problems if p["status"] == "failed"
        )
        return "FAILED", {"message": failed or "some steps did not run", "problems": problems}, data
