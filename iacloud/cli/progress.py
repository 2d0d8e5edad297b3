"""Per-step progress lines during apply and destroy, with elapsed time; a ticker on a TTY."""

from __future__ import annotations

import sys
import threading
import time

import click

from iacloud.engine import Reporter, Step, StepOutcome
from iacloud.errors import printable
from iacloud.redact import Redactor

_VERBS = {"create": ("Creating", "Creation"), "update": ("Updating", "Update"),
          "delete": ("Destroying", "Destruction")}  # fmt: skip


class ConsoleReporter(Reporter):
    def __init__(self, redactor: Redactor, tick: float = 10.0) -> None:
        self.redactor = redactor
        self.tty = sys.stdout.isatty()
        self.started: dict[tuple[str, str], float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        if self.tty:
            threading.Thread(target=self._ticker, args=(tick,), daemon=True).start()

    def _ticker(self, tick: float) -> None:
        while not self.stop.wait(tick):
            with self.lock:
                now = time.monotonic()
                for (kind, address), t0 in sorted(self.started.items()):
                    click.echo(f"{address}: still {_VERBS[kind][0].lower()}... [{now - t0:.0f}s]")

    def step_started(self, step: Step) -> None:
        self.started_line(step.kind, step.change.address)

    def step_finished(self, outcome: StepOutcome) -> None:
        error = printable(self.redactor.text(outcome.error or ""))
        self.finished_line(outcome.step.kind, outcome.step.change.address,
                           outcome.status == "complete", outcome.elapsed, error)  # fmt: skip

    # The lines themselves, by step kind ("create", "update", "delete") and address: what a
    # local run's executor and a remote operation's event stream both report through.

    def started_line(self, kind: str, address: str) -> None:
        with self.lock:
            self.started[(kind, address)] = time.monotonic()
        click.echo(f"{address}: {_VERBS[kind][0]}...")

    def finished_line(self, kind: str, address: str, ok: bool, elapsed: float,
                      error: str) -> None:  # fmt: skip
        with self.lock:
            self.started.pop((kind, address), None)
        noun = _VERBS[kind][1]
        if ok:
            click.echo(f"{address}: {noun} complete after {elapsed:.1f}s")
        else:
            click.secho(f"{address}: {noun} failed: {error}", fg="red", err=True)

    @property
    def running(self) -> int:
        with self.lock:
            return len(self.started)

    def interrupted(self, running: int) -> None:
        click.secho(
            f"Interrupt received: starting no new steps, waiting for {running} running "
            "step(s) to finish and be recorded (press Ctrl-C again to leave at once).",
            fg="yellow",
            err=True,
        )

    def rollback_started(self, steps: int) -> None:
        click.secho(f"Rolling back the failed run: {steps} change(s) to undo.", fg="yellow",
                    err=True)  # fmt: skip

    def close(self) -> None:
        self.stop.set()
