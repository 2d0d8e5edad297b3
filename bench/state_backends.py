"""Per-step engine overhead with each state backend: SQLite (a file) next to PostgreSQL (a
local server on a unix socket, started here from Debian's packages unless --pg-url names one).

Two figures per backend: the state writes of one step alone (record_pending, durable, then
record_result), and an engine apply of 1,000 resources with a provider that does no I/O,
divided by the steps (plan excluded). Target: under 3 ms per step with PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from plan_scale import NullProvider, stack_text  # noqa: E402

from iacloud import engine  # noqa: E402
from iacloud.planner import PlanOptions  # noqa: E402
from iacloud.provider import Registry  # noqa: E402
from iacloud.state import (  # noqa: E402
    Event,
    PendingOperation,
    ResourceState,
    StateBackend,
    open_backend,
)


def state_writes(b: StateBackend, steps: int) -> float:
    snap = b.snapshot("bench-writes")
    s = b.begin_version("bench-writes", "apply", snap.stack_id, snap.lineage)
    work = []
    for i in range(steps):
        a = f"web[{i}]"
        work.append((
            PendingOperation(address=a, type="server", provider="x", action="create", serial=s),
            Event(serial=s, address=a, type="server", action="CREATE", status="IN_PROGRESS"),
            ResourceState(address=a, type="server", provider="x", id=f"uuid-{i}",
                          inputs={"name": a, "vcpus": 1}, attributes={"ip": "198.18.0.9"}),
            Event(serial=s, address=a, type="server", action="CREATE", status="COMPLETE"),
        ))  # fmt: skip
    t0 = time.perf_counter()
    for op, started, result, done in work:
        b.record_pending("bench-writes", op, started)
        b.record_result("bench-writes", s, op.address, result, done)
    per_step = (time.perf_counter() - t0) / steps
    b.finish_version("bench-writes", s, "complete", {})
    assert len(b.snapshot("bench-writes").resources) == steps
    return per_step


def engine_apply(url: str, workdir: Path, n: int) -> float:
    stack = workdir / "bench.toml"
    stack.write_text(stack_text(n))
    ws = engine.Workspace(stack, state_url=url, registry=Registry([NullProvider]))
    plan, _ = engine.make_plan(ws, ws.load(), PlanOptions())
    t0 = time.perf_counter()
    result = engine.apply(ws, plan, jobs=4)
    elapsed = time.perf_counter() - t0
    assert result.ok and len(result.resources) == n
    ws.close()
    return elapsed / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", help="an existing PostgreSQL (default: start one here)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--resources", type=int, default=1000)
    args = parser.parse_args()
    server = None
    if args.pg_url is None:
        from pg_server import PgServer

        server = PgServer().start()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="iacloud-bench-") as d:
            work = Path(d)
            os.environ["IACLOUD_DATA_DIR"] = str(work / "data")  # the runs' notes go with it
            stores = {
                "sqlite": (lambda name: str(work / f"{name}.db")),
                "postgresql": (lambda name: server.url(name) if server else f"{args.pg_url}"),
            }
            for kind, url_for in stores.items():
                b = open_backend(url_for("writes"), work)
                writes = state_writes(b, args.steps)
                b.close()
                (work / kind).mkdir()
                per_step = engine_apply(url_for("apply"), work / kind, args.resources)
                rows.append((kind, writes, per_step))
    finally:
        if server is not None:
            server.stop()
    print(f"{'backend':<11} {'state writes ms/step':>21} {'engine apply ms/step':>21}")
    for kind, writes, per_step in rows:
        print(f"{kind:<11} {writes * 1000:>21.3f} {per_step * 1000:>21.3f}")
    print(f"\n{args.steps} steps of record_pending + record_result; apply of "
          f"{args.resources} resources (jobs=4, a provider doing no I/O). "
          "Target: PostgreSQL under 3 ms per step.")  # fmt: skip


if __name__ == "__main__":
    main()
