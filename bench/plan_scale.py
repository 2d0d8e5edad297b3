"""Plan time and peak memory for 1,000 / 10,000 / 100,000 resources, and the engine's overhead
per applied step (including its durable state writes), with a provider that does no I/O.

Each size runs in its own process so peak RSS is that size's alone. Prints a table and the
growth ratio; targets: 10k planned < 2 s, 100k < 20 s, linear growth, < 2 ms per step.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from iacloud import engine
from iacloud.planner import PlanOptions
from iacloud.provider import ObjectRef, Observed, Provider, Registry, ResourceType
from iacloud.schema import Disruption, Inputs, prop


class NullInputs(Inputs):
    name: str = prop("x", update=Disruption.REPLACE)
    size: int = prop(1, update=Disruption.LIVE)
    ref: str | None = prop(None, update=Disruption.REPLACE)


class NullThing(ResourceType):
    """Keeps objects in a dict: the engine's cost alone is measured."""

    type_name = "null"
    Inputs = NullInputs
    objects: dict[str, Observed] = {}

    def read(self, refs: Sequence[ObjectRef]) -> dict[str, Observed]:
        return {r.address: self.objects[r.id] for r in refs if r.id in self.objects}

    def create(self, address: str, inputs: Inputs) -> Observed:
        obs = Observed(uuid.uuid4().hex, inputs.model_dump(), {"name": inputs.name})
        self.objects[obs.id] = obs
        return obs

    def delete(self, address: str, prior: Observed) -> None:
        self.objects.pop(prior.id, None)


class NullProvider(Provider):
    name = "null"
    resource_types = (NullThing,)


def stack_text(n: int) -> str:
    # a realistic shape: groups of 10 resources, each referring to its group's first
    lines = ['version = 1\nname = "bench"\n']
    for g in range(n // 10):
        lines.append(f'[resources.base{g}]\ntype = "null"\nname = "b{g}"\n')
        lines.append(
            f'[resources.item{g}]\ntype = "null"\ncount = 9\nname = "i{g}-%index%"\n'
            f'ref = {{ get_resource = "base{g}" }}\n'
        )
    return "\n".join(lines)


def measure(n: int, workdir: Path) -> dict[str, float]:
    # the run's host-level working files (stack notes) go with the temp dir, not the host's
    os.environ["IACLOUD_DATA_DIR"] = str(workdir / "data")
    stack = workdir / "bench.toml"
    stack.write_text(stack_text(n))
    registry = Registry([NullProvider])
    ws = engine.Workspace(stack, state_url=str(workdir / "state.db"), registry=registry)
    t0 = time.perf_counter()
    config = ws.load()
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    plan, _ = engine.make_plan(ws, config, PlanOptions())
    t_plan_create = time.perf_counter() - t0
    out: dict[str, float] = {"n": n, "load_s": t_load, "plan_create_s": t_plan_create}
    if n <= 10_000:
        t0 = time.perf_counter()
        result = engine.apply(ws, plan, jobs=4)
        t_apply = time.perf_counter() - t0
        assert result.ok, result.failed[:3]
        out["apply_s"] = t_apply
        out["per_step_ms"] = 1000 * t_apply / n
        t0 = time.perf_counter()
        config = ws.load()
        again, _ = engine.make_plan(ws, config, PlanOptions())
        out["replan_s"] = time.perf_counter() - t0
        assert not again.has_changes
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main(sizes: Sequence[int] = (1_000, 10_000, 100_000)) -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        with tempfile.TemporaryDirectory() as d:
            print(json.dumps(measure(int(sys.argv[2]), Path(d))))
        return
    rows = []
    for n in sizes:
        proc = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True,
                              text=True, check=True)  # fmt: skip
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"{'resources':>10} {'load s':>8} {'plan s':>8} {'re-plan s':>10} {'apply s':>8} "
          f"{'ms/step':>8} {'peak MiB':>9}")  # fmt: skip
    for r in rows:
        print(f"{r['n']:>10,} {r['load_s']:>8.2f} {r['plan_create_s']:>8.2f} "
              f"{r.get('replan_s', float('nan')):>10.2f} {r.get('apply_s', float('nan')):>8.2f} "
              f"{r.get('per_step_ms', float('nan')):>8.2f} {r['peak_rss_mib']:>9.0f}")  # fmt: skip
    first, last = rows[0], rows[-1]
    total = lambda r: r["load_s"] + r["plan_create_s"]  # noqa: E731
    growth = (total(last) / total(first)) / (last["n"] / first["n"])
    print(f"\nload+plan time per resource, {last['n']:,} vs {first['n']:,}: x{growth:.2f} "
          "(1.0 = linear)")  # fmt: skip


if __name__ == "__main__":
    main()
