"""The SQLite backend's per-step cost under three fsync policies (state/sqlite.py explains the
choice): synchronous=NORMAL everywhere, FULL everywhere, and NORMAL with FULL for
record_pending (what `SQLiteBackend` uses). Prints milliseconds per step over 2,000 steps.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from iacloud.state import Event, PendingOperation, ResourceState
from iacloud.state.sqlite import SQLiteBackend

STACK = "web"


def step_cost(path: Path, synchronous: str, sync_pending: bool, steps: int = 2000) -> float:
    cls = type(
        "Bench", (SQLiteBackend,), {"_SYNCHRONOUS": synchronous, "_SYNC_PENDING": sync_pending}
    )
    b = cls(path)
    snap = b.snapshot(STACK)
    s = b.begin_version(STACK, "apply", snap.stack_id, snap.lineage)
    work = []
    for i in range(steps):
        address = f"web[{i}]"
        work.append(
            (
                PendingOperation(
                    address=address, type="server", provider="fake", action="create", serial=s
                ),
                Event(
                    serial=s, address=address, type="server", action="CREATE", status="IN_PROGRESS"
                ),
                ResourceState(
                    address=address,
                    type="server",
                    provider="fake",
                    id=f"uuid-{i}",
                    inputs={"name": address},
                    attributes={"ip": "10.0.0.9"},
                ),
                Event(serial=s, address=address, type="server", action="CREATE", status="COMPLETE"),
            )
        )
    t0 = time.perf_counter()
    for op, started, result, finished in work:
        b.record_pending(STACK, op, started)
        b.record_result(STACK, s, op.address, result, finished)
    per_step = (time.perf_counter() - t0) / steps
    if len(b.snapshot(STACK).resources) != steps or b.snapshot(STACK).pending:
        sys.exit("the backend lost steps")
    b.close()
    return per_step


def main() -> None:
    chosen = (SQLiteBackend._SYNCHRONOUS, SQLiteBackend._SYNC_PENDING)
    variants = {
        "NORMAL": ("NORMAL", False),
        "FULL": ("FULL", False),
        "NORMAL, FULL for record_pending": ("NORMAL", True),
    }
    # next to the working directory, not /tmp: /tmp may be a tmpfs, where fsync costs nothing
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        for name, setting in variants.items():
            cost = step_cost(Path(tmp) / f"{setting[0]}-{setting[1]}.db", *setting)
            mark = "  <- SQLiteBackend" if setting == chosen else ""
            print(f"synchronous={name}: {cost * 1000:.3f} ms per step over 2000 steps{mark}")


if __name__ == "__main__":
    main()
