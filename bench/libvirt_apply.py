"""The libvirt provider at scale: applies through the real engine against their critical path,
and refreshing N volumes, bulk read against per-object.

Part one, applies (each case its own stack, pool, state db and IACLOUD_DATA_DIR in a temp dir):

- N servers booted from build/images/tiny.qcow2 (one image resource, one server resource with
  `count = N`), applied with jobs = N;
- N empty 1 GiB qcow2 volumes (thin: only the qcow2 header is written), with jobs 4 and 8.

For each: `engine.make_plan` then `engine.apply`, timed as wall; the critical path is the sum
of the executor's own per-step elapsed times (`StepOutcome.elapsed`) along the longest chain of
the step graph (image create, then one server create; a single volume create). Also shown: the
sum of all step times (the work), work/wall (steps in flight on average), the lower bound
max(critical path, work/jobs), and the median and slowest step. Then `engine.destroy_plan` +
`engine.apply(command="destroy")`, timed against the destroy's own critical path (running
servers whose disks all go with them are powered off at once: no graceful shutdown wait),
and a check through libvirt and the state that nothing tagged with the stack id remains
(anything that does is removed through libvirt).

Part two, refreshing N volumes (empty, sparse, in a throw-away pool) times:

- bulk: `Volume.read(refs)` once for all N (a pool refresh, one `listAllVolumes()`, then
  each volume's XML: libvirt has no call that returns many volumes' details at once);
- per object: what a provider without bulk reads does, `storageVolLookupByName` and the
  volume's XML, one volume at a time;
- lookup only: just the N `storageVolLookupByName` calls, the floor of any per-object way;
- read one by one: the engine calling `read([ref])` N times (a listing each time:
  quadratic, what bulk reads exist to avoid);

and, on the volumes of the apply cases, `engine.refresh` of the stack's state (one bulk read)
against the volume type's `read()` called once per object.

    python bench/libvirt_apply.py [--servers 1,4,8] [--volumes 10,100] [--volume-jobs 4,8]
                                  [--sizes 10,100,500] [--repeat 3] [--uri qemu:///system]

`bulk_read_vs_lookup(n)` and `apply_case(kind, n, jobs)` are the functions to call from
elsewhere; they return the timings. Every object, pool and temp dir is removed at the end,
Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import libvirt
import networkx as nx
from host_cleanup import remove_pool  # bench/, the script's own directory

from iacloud import engine
from iacloud.errors import IacloudError
from iacloud.executor import ApplyResult
from iacloud.graph import Hub
from iacloud.plan import Plan
from iacloud.planner import PlanOptions
from iacloud.provider import ObjectRef, Observed, StackInfo
from iacloud.providers.libvirt import LibvirtProvider, LibvirtSettings, virt_type
from iacloud.providers.libvirt.tags import NS, stack_prefix
from iacloud.steps import step_graph

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "build" / "images" / "tiny.qcow2"
SHUTDOWN_TIMEOUT = 30


@dataclass(frozen=True)
class Timings:
    n: int
    create: float  # seconds to create the N volumes
    bulk: float
    per_object: float
    lookup_only: float
    one_by_one: float | None


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) if repeat < 3 else statistics.median(times)


def bulk_read_vs_lookup(
    n: int, *, uri: str = "qemu:///system", repeat: int = 3, one_by_one_max: int = 200
) -> Timings:
    """Create N volumes in a temporary pool, time the ways of reading them, remove all."""
    base = Path(tempfile.mkdtemp(prefix="iacloud-bench-"))
    base.chmod(0o755)
    pool_name = f"iacbench-{uuid.uuid4().hex[:8]}"
    stack = StackInfo("bench", str(uuid.uuid4()), base, base / "data")
    settings = LibvirtSettings(uri=uri, pool=pool_name, pool_path=str(base / "pool"))
    provider = LibvirtProvider(stack, settings)
    volume = provider.resource("volume")
    made: dict[str, Observed] = {}
    try:
        t = time.perf_counter()
        for i in range(n):
            address = f"v[{i}]"
            made[address] = volume.create(address, volume.Inputs(size_gib=1, format="raw"))
        created = time.perf_counter() - t
        refs = [ObjectRef(a, o.id, {}) for a, o in made.items()]
        conn = provider.conn()
        pool = conn.storagePoolLookupByName(pool_name)
        names = [o.id.split("/", 1)[1] for o in made.values()]

        def bulk() -> None:
            provider.listings.clear()  # the provider keeps listings for a run: start cold
            assert len(volume.read(refs)) == n

        def per_object() -> None:
            for name in names:
                pool.storageVolLookupByName(name).XMLDesc(0)

        def lookup_only() -> None:
            for name in names:
                pool.storageVolLookupByName(name)

        def one_by_one() -> None:
            for ref in refs:
                provider.listings.clear()
                volume.read([ref])

        return Timings(
            n=n,
            create=created,
            bulk=best(bulk, repeat),
            per_object=best(per_object, repeat),
            lookup_only=best(lookup_only, repeat),
            one_by_one=best(one_by_one, 1) if n <= one_by_one_max else None,
        )
    finally:
        for address, obs in made.items():
            try:
                volume.delete(address, obs)
            except Exception as exc:  # keep removing the rest
                print(f"warning: cannot delete {obs.id}: {exc}")
        try:
            handle = provider.conn().storagePoolLookupByName(pool_name)
            if handle.isActive():
                handle.destroy()
            handle.undefine()
        except libvirt.libvirtError:
            pass  # the pool was never made
        provider.close()
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------- applies


class BenchError(Exception):
    """A case that could not be measured (its objects were still removed)."""


@dataclass(frozen=True)
class ApplyTimings:
    kind: str  # "server" | "volume"
    n: int
    jobs: int
    plan: float  # engine.make_plan (with its refresh) before the apply
    wall: float  # engine.apply
    critical: float  # step elapsed summed along the longest chain
    chain: tuple[str, ...]  # that chain's steps' addresses
    work: float  # every step's elapsed, summed
    step_median: float  # of the N counted steps (servers or volumes)
    step_max: float
    destroy: float  # engine.destroy_plan + engine.apply(command="destroy")
    destroy_critical: float  # the destroy's step times along its longest chain
    leftovers: tuple[str, ...]  # tagged objects found after the destroy (then purged)
    others: int = 0  # most guests of other stacks seen running during the apply
    guest_cpu: float | None = None  # CPU seconds the case's QEMU processes used (servers)
    refresh_bulk: float | None = None  # engine.refresh of the N volumes
    refresh_per_object: float | None = None  # Volume.read([ref]) N times

    @property
    def bound(self) -> float:
        """No schedule can beat this: the critical path, or the work spread over all jobs."""
        return max(self.critical, self.work / self.jobs)


@dataclass
class _Case:
    kind: str
    n: int
    jobs: int
    uri: str
    base: Path
    name: str
    pool: str
    stack_id: str | None = None


def stack_toml(case: _Case) -> str:
    """The stack file of a case: its own pool (in the temp dir) and generous timeouts."""
    lines = [
        "version = 1",
        f"name = {json.dumps(case.name)}",
        "",
        "[provider.libvirt]",
        f"uri = {json.dumps(case.uri)}",
        f"pool = {json.dumps(case.pool)}",
        f"pool_path = {json.dumps(str(case.base / 'pool'))}",
        "boot_timeout = 240",  # 8 TCG guests booting on 2 cores are slow; not a failure
        f"shutdown_timeout = {SHUTDOWN_TIMEOUT}",
        f"image_roots = [{json.dumps(str(TINY.parent))}]",  # the stack is written outside the repo
        "",
    ]
    if case.kind == "server":
        lines += [
            "[resources.img]",
            'type = "image"',
            f"source = {json.dumps(str(TINY))}",
            'format = "qcow2"',
            "",
            "[resources.web]",
            'type = "server"',
            f"count = {case.n}",
            'image = { get_resource = "img" }',
            "vcpus = 1",
            "memory_mib = 128",
        ]
    else:
        lines += [
            "[resources.data]",
            'type = "volume"',
            f"count = {case.n}",
            "size_gib = 1",
            'format = "qcow2"',
        ]
    return "\n".join(lines) + "\n"


def critical_path(
    plan: Plan, result: ApplyResult, recorded: dict | None = None
) -> tuple[float, tuple[str, ...]]:
    """The longest chain of the step graph, weighted by each step's own elapsed time
    (`recorded`: the state before the run, which orders deletes)."""
    graph = step_graph(plan, recorded or {})
    elapsed = {o.step.key: o.elapsed for o in result.outcomes}
    finish: dict[tuple[str, str], tuple[float, tuple[str, ...]]] = {}
    for node in nx.topological_sort(graph):
        before = max((finish[p] for p in graph.predecessors(node)), default=(0.0, ()))
        path = before[1] if isinstance(node, Hub) else (*before[1], node[1])
        finish[node] = (before[0] + elapsed.get(node, 0.0), path)
    return max(finish.values(), default=(0.0, ()))


def tagged_objects(conn: libvirt.virConnect, stack_id: str, own_pool: str) -> list[str]:
    """Every domain and volume (in any active pool) carrying the stack's tag, seen by libvirt.
    Only the case's own pool is refreshed: other pools may be busy with someone else's work."""
    found = []
    for dom in conn.listAllDomains(0):
        with contextlib.suppress(libvirt.libvirtError):
            owner = ET.fromstring(dom.XMLDesc(0)).find(f"metadata/{{{NS}}}owner")
            if owner is not None and owner.get("stack_id") == stack_id:
                found.append(f"domain {dom.name()}")
    prefix = f"iac-{stack_prefix(stack_id)}-"
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        with contextlib.suppress(libvirt.libvirtError):
            if pool.name() == own_pool:
                pool.refresh(0)
            found += [
                f"volume {pool.name()}/{v.name()}"
                for v in pool.listAllVolumes(0)
                if v.name().startswith(prefix)
            ]
    return found


def purge(conn: libvirt.virConnect, stack_id: str) -> None:
    """The last resort: remove through libvirt whatever still carries the stack's tag."""
    for dom in conn.listAllDomains(0):
        try:
            owner = ET.fromstring(dom.XMLDesc(0)).find(f"metadata/{{{NS}}}owner")
        except libvirt.libvirtError:
            continue
        if owner is None or owner.get("stack_id") != stack_id:
            continue
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    prefix = f"iac-{stack_prefix(stack_id)}-"
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        with contextlib.suppress(libvirt.libvirtError):
            for vol in pool.listAllVolumes(0):
                if vol.name().startswith(prefix):
                    with contextlib.suppress(libvirt.libvirtError):
                        vol.delete(0)


@contextlib.contextmanager
def data_dir(path: Path) -> Iterator[None]:
    """IACLOUD_DATA_DIR pointed into the case's temp dir (console logs, image sha256s)."""
    old = os.environ.get("IACLOUD_DATA_DIR")
    os.environ["IACLOUD_DATA_DIR"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("IACLOUD_DATA_DIR", None)
        else:
            os.environ["IACLOUD_DATA_DIR"] = old


def failures(result: ApplyResult) -> str:
    bad = [o for o in result.outcomes if o.status not in ("complete", "unchanged")]
    shown = "; ".join(f"{o.step.kind} {o.step.change.address}: {o.status} {o.error or ''}"
                      for o in bad[:3])  # fmt: skip
    more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
    return (shown + more) or ("interrupted" if result.interrupted else "not ok")


def refresh_timings(
    ws: engine.Workspace, case: _Case, settings: dict, repeat: int
) -> tuple[float, float]:
    """engine.refresh of the stack's state (one bulk read per type) against the volume
    type's read() once per object, on the same provider instance."""
    snapshot = ws.backend.snapshot(case.name)
    providers = ws.providers(case.name, snapshot, settings)
    try:
        volume = providers.resource("volume")
        refs = [ObjectRef(rs.address, rs.id, rs.inputs) for rs in snapshot.resources.values()]
        assert len(refs) == case.n

        libvirt_provider = volume.provider

        def bulk() -> None:
            libvirt_provider.listings.clear()  # listings are kept for a run: start cold
            assert len(engine.refresh(snapshot, providers, ws.registry)) == case.n

        def per_object() -> None:
            for ref in refs:
                libvirt_provider.listings.clear()
                assert len(volume.read([ref])) == 1

        bulk()  # the first call opens the connection and looks the pool up
        return best(bulk, repeat), best(per_object, repeat)
    finally:
        providers.close()


def guest_cpu_seconds(domain_prefix: str) -> float | None:
    """User + system CPU seconds of the local QEMU processes of domains named `prefix...`."""
    tick = os.sysconf("SC_CLK_TCK")
    total, found = 0.0, False
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if not any(a.startswith(f"guest={domain_prefix}".encode()) for a in argv):
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        found = True
    return total if found else None


class OtherGuests:
    """Samples, twice a second on its own connection, how many running guests are not the
    case's: on a shared 2-core host they take CPU from the guests being measured."""

    def __init__(self, uri: str, own_prefix: str) -> None:
        self.uri = uri
        self.own_prefix = own_prefix
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError:
            return
        try:
            while not self._stop.is_set():
                with contextlib.suppress(libvirt.libvirtError):
                    running = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
                    others = [d for d in running if not d.name().startswith(self.own_prefix)]
                    self.most = max(self.most, len(others))
                self._stop.wait(0.5)
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    def __enter__(self) -> OtherGuests:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def apply_case(
    kind: str,
    n: int,
    jobs: int,
    *,
    uri: str = "qemu:///system",
    refresh: bool = False,
    repeat: int = 3,
) -> ApplyTimings:
    """Apply N servers or volumes through the engine, measure, destroy, check; always clean."""
    if kind == "server" and not TINY.is_file():
        raise BenchError(f"{TINY} is missing: run `make image`")
    base = Path(tempfile.mkdtemp(prefix="iacloud-bench-"))
    base.chmod(0o755)  # QEMU must reach the pool and the console logs below
    tag = uuid.uuid4().hex[:8]
    case = _Case(kind, n, jobs, uri, base, f"bench-{kind}{n}-j{jobs}-{tag}", f"iacbench-{tag}")
    stack_file = base / "bench.toml"
    stack_file.write_text(stack_toml(case))
    ws = engine.Workspace(stack_file, state_url=str(base / "state.db"))
    measured: dict = {}
    failure: str | None = None
    try:
        with data_dir(base / "data"):
            try:
                config = ws.load()
                t = time.perf_counter()
                plan, _ = engine.make_plan(ws, config, PlanOptions())
                measured["plan"] = time.perf_counter() - t
                case.stack_id = plan.stack_id
                with OtherGuests(uri, f"{case.name}-") as others:
                    t = time.perf_counter()
                    result = engine.apply(ws, plan, jobs=jobs)
                    measured["wall"] = time.perf_counter() - t
                measured["others"] = others.most
                if kind == "server":
                    measured["guest_cpu"] = guest_cpu_seconds(f"{case.name}-")
                if not result.ok:
                    raise BenchError(f"apply failed: {failures(result)}")
                measured["critical"], measured["chain"] = critical_path(plan, result)
                steps = [o.elapsed for o in result.outcomes]
                counted = [o.elapsed for o in result.outcomes if o.step.change.type == kind]
                measured["work"] = sum(steps)
                measured["step_median"] = statistics.median(counted)
                measured["step_max"] = max(counted)
                if refresh:
                    bulk, per_object = refresh_timings(ws, case, config.provider_settings, repeat)
                    measured["refresh_bulk"], measured["refresh_per_object"] = bulk, per_object
            except (BenchError, IacloudError) as exc:
                failure = str(exc)
            finally:
                measured["destroy"], measured["destroy_critical"], leftovers = destroy_case(
                    ws, case
                )
    finally:
        ws.close()
        shutil.rmtree(base, ignore_errors=True)
    if failure is not None:
        raise BenchError(failure + (f"; left behind and purged: {leftovers}" if leftovers else ""))
    return ApplyTimings(kind=kind, n=n, jobs=jobs, leftovers=tuple(leftovers), **measured)


def destroy_case(ws: engine.Workspace, case: _Case) -> tuple[float, float, list[str]]:
    """Destroy through the engine (wall and critical path), then check libvirt and the state;
    purge what is left."""
    elapsed = critical = float("nan")
    problems: list[str] = []
    try:
        recorded = dict(ws.backend.snapshot(case.name).resources)
        t = time.perf_counter()
        dplan, _ = engine.destroy_plan(ws, case.name)
        if dplan.actionable():
            result = engine.apply(ws, dplan, jobs=case.jobs, command="destroy")
            if not result.ok:
                problems.append(f"destroy failed: {failures(result)}")
            critical = critical_path(dplan, result, recorded)[0]
        elapsed = time.perf_counter() - t
        snapshot = ws.backend.snapshot(case.name)
        problems += [f"in state: {a}" for a in snapshot.resources]
        problems += [f"pending in state: {op.address}" for op in snapshot.pending]
    except Exception as exc:  # the purge below still runs
        problems.append(f"destroy raised {type(exc).__name__}: {exc}")
    conn = libvirt.open(case.uri)
    try:
        if case.stack_id is not None:
            problems += tagged_objects(conn, case.stack_id, case.pool)
            if problems:
                purge(conn, case.stack_id)
                problems += [f"NOT REMOVED {o}" for o in tagged_objects(conn, case.stack_id, "")]
        remove_pool(conn, case.pool)
    finally:
        conn.close()
    return elapsed, critical, problems


def guest_virt_type(uri: str) -> str:
    conn = libvirt.open(uri)
    try:
        return virt_type.resolve(conn, uri, "auto", LibvirtSettings().virt_type_cache)
    finally:
        conn.close()


def _apply_row(label: str, r: ApplyTimings) -> str:
    seconds = (r.wall, r.critical, r.wall / r.critical, r.work, r.work / r.wall, r.bound)
    more = (r.wall / r.bound, r.step_median, r.step_max, r.destroy)
    return (
        f"{label:<6} {r.n:>3} {r.jobs:>4} "
        + " ".join(f"{x:6.2f}" for x in (*seconds, *more))
        + f" {len(r.leftovers):>4} {r.others:>5}  {' > '.join(r.chain)}"
    )


APPLY_HEADER = (
    f"{'kind':<6} {'N':>3} {'jobs':>4} {'wall':>6} {'crit':>6} {'w/crit':>6} {'work':>6} "
    f"{'inflt':>6} {'bound':>6} {'w/bnd':>6} {'stepmd':>6} {'stepmx':>6} {'destr':>6} "
    f"{'left':>4} {'other':>5}  critical chain"
)


def run_applies(
    kind: str, cases: Sequence[tuple[int, int]], uri: str, repeat: int
) -> list[ApplyTimings]:
    out = []
    refreshed: set[int] = set()
    for n, jobs in cases:
        try:
            r = apply_case(
                kind, n, jobs, uri=uri, repeat=repeat,
                refresh=kind == "volume" and n not in refreshed,
            )  # fmt: skip
        except BenchError as exc:
            print(f"{kind:<7} {n:>4} {jobs:>4}  FAILED: {exc}", flush=True)
            continue
        refreshed.add(n)
        out.append(r)
        print(_apply_row(kind, r), flush=True)
        if r.leftovers:
            print(f"        left behind (purged through libvirt): {', '.join(r.leftovers)}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="1,4,8", help="server counts, each with jobs = N")
    parser.add_argument("--volumes", default="10,100", help="volume counts")
    parser.add_argument("--volume-jobs", default="4,8")
    parser.add_argument("--sizes", default="10,100,500", help="volume counts of the read part")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--uri", default="qemu:///system")
    args = parser.parse_args()

    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x.strip()]

    started = time.perf_counter()
    print(f"host: {os.cpu_count()} cores, guests under {guest_virt_type(args.uri)}, {args.uri}")
    print(
        "\n1-2. engine.apply (seconds). crit: step times summed along the longest chain; work: "
        "all step\n     times summed; inflt = work/wall; bound = max(crit, work/jobs); "
        "stepmd/stepmx: median/slowest\n     server or volume step; destr: destroy_plan + "
        "apply(destroy); left: tagged objects found\n     after it; other: most guests of "
        "other stacks running meanwhile (they share the CPUs)"
    )
    print(APPLY_HEADER)
    servers = run_applies("server", [(n, n) for n in ints(args.servers)], args.uri, args.repeat)
    volume_cases = [(n, j) for n in ints(args.volumes) for j in ints(args.volume_jobs)]
    volumes = run_applies("volume", volume_cases, args.uri, args.repeat)

    print()
    for r in servers:
        if r.guest_cpu is not None:
            print(
                f"servers {r.n}: the guests used {r.guest_cpu:.1f} CPU s during the apply, "
                f"{r.guest_cpu / r.wall:.2f} of {os.cpu_count()} cores on average"
            )
    if servers:
        one = servers[0]
        for r in servers[1:]:
            print(
                f"servers {r.n} vs {one.n}: wall x{r.wall / one.wall:.2f} for x{r.n / one.n:g} "
                f"the servers; slowest server step x{r.step_max / one.step_max:.2f}, "
                f"critical path x{r.critical / one.critical:.2f}"
            )
    for r in servers:
        print(
            f"destroy of {r.n} running servers: {r.destroy:.2f} s wall (plan + apply), "
            f"critical path {r.destroy_critical:.2f} s, ratio {r.destroy / r.destroy_critical:.2f} "
            f"(no graceful wait: every disk goes with its server; shutdown_timeout "
            f"{SHUTDOWN_TIMEOUT} s would apply only to a volume that outlives one)"
        )
    for r in volumes:
        print(
            f"volumes {r.n} j{r.jobs}: {1000 * r.wall / r.n:.1f} ms of wall per volume, "
            f"{1000 * r.work / r.n:.1f} ms per create step, "
            f"{r.work / r.wall:.2f} in flight of {r.jobs}"
        )

    print("\n3. reading N volumes (seconds)")
    print(f"{'N':>5} {'create':>8} {'bulk':>8} {'per-obj':>8} {'lookups':>8} {'1-by-1':>8}"
          f"  {'per-obj/bulk':>12} {'1-by-1/bulk':>11}")  # fmt: skip
    for n in ints(args.sizes):
        r = bulk_read_vs_lookup(n, uri=args.uri, repeat=args.repeat)
        obo = f"{r.one_by_one:8.3f}" if r.one_by_one is not None else f"{'-':>8}"
        ratio = f"{r.one_by_one / r.bulk:11.1f}" if r.one_by_one is not None else f"{'-':>11}"
        print(
            f"{n:>5} {r.create:8.3f} {r.bulk:8.3f} {r.per_object:8.3f} {r.lookup_only:8.3f} "
            f"{obo}  {r.per_object / r.bulk:12.2f} {ratio}"
        )
    print("\n   engine level, on the applied qcow2 volumes (seconds)")
    print(f"{'N':>5} {'engine.refresh':>14} {'read()xN':>9} {'ratio':>7}")
    for r in volumes:
        if r.refresh_bulk is not None and r.refresh_per_object is not None:
            print(
                f"{r.n:>5} {r.refresh_bulk:14.3f} {r.refresh_per_object:9.3f} "
                f"{r.refresh_per_object / r.refresh_bulk:7.1f}"
            )
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
