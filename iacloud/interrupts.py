"""Ctrl-C during an apply, turned from an exception into requests the scheduler reads.

Python raises KeyboardInterrupt wherever the main thread happens to be: between writing a
pending operation and handing the step to a worker, in the middle of recording a result. A
step started there would finish unrecorded. So while an apply runs, SIGINT only counts: the
first asks the scheduler to start nothing new and wait for the running steps (which are then
recorded), the second asks it to stop waiting and leave at once (their pending operations stay
and say what was left). The scheduler polls these flags between its writes.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Interrupts:
    """How many times Ctrl-C was pressed during the run."""

    def __init__(self) -> None:
        self.count = 0

    def press(self) -> None:
        self.count += 1

    @property
    def stop(self) -> bool:
        """Start no new step; let the running ones finish and record them."""
        return self.count >= 1

    @property
    def abort(self) -> bool:
        """Stop waiting for the running steps too."""
        return self.count >= 2


@contextmanager
def deferred(interrupts: Interrupts | None = None) -> Iterator[Interrupts]:
    """Count SIGINT instead of raising KeyboardInterrupt, for the duration of the block. Only
    the main thread can handle signals; elsewhere only the caller's `interrupts` (a cancel
    request of the HTTP API) changes the flags."""
    interrupts = interrupts if interrupts is not None else Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield interrupts
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        interrupts.press()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield interrupts
    finally:
        signal.signal(signal.SIGINT, previous)
