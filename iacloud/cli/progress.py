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
        with self.lock:
            self.started[step.key] = time.monotonic()
        click.echo(f"{step.change.address}: {_VERBS[step.kind][0]}...")

    def step_finished(self, outcome: StepOutcome) -> None:
        step = outcome.step
        with self.lock:
            self.started.pop(step.key, None)
        noun = _VERBS[step.kind][1]
        if outcome.status == "complete":
            click.echo(f"{step.change.address}: {noun} complete after {outcome.elapsed:.1f}s")
        else:
            msg = printable(self.redactor.text(outcome.error or ""))
            click.secho(f"{step.change.address}: {noun} failed: {msg}", fg="red", err=True)

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
