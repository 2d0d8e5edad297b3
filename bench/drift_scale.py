"""`iacloud drift` over N real objects, against one lookup per object.

What is created: one stack, applied through the real engine (`engine.make_plan`, then
`engine.apply` with `--jobs` workers, as `iacloud apply -j` does) into its own throw-away
libvirt pool (a directory in a temp dir), its own state database and its own IACLOUD_DATA_DIR
(netlink records, console paths). For N objects:

- N/3 servers with `power_state = "shutoff"` and no user data: defined-but-not-running libvirt
  domains. The provider still gives each a qcow2 root overlay and a NoCloud seed ISO (two pool
  volumes that are parts of the server, not counted in N) and one NIC on its own network;
- N/3 volumes: empty 1 GiB qcow2 volumes (only the header is written);
- the rest networks: isolated Linux bridges with `dhcp = false` (no namespace, no dnsmasq),
  one /24 each in 198.18.0.0/15 (so at most 512 networks: N <= 1536). Bridge names hash the
  stack id, which is new for every run, so they cannot collide with another stack's;
- plus one image the servers are overlays of: a 1 MiB sparse raw file made here (the servers
  never boot, so its content does not matter).

Applying through the engine is fast enough here (some 10-20 ms per object at -j8 on 2 cores),
so no shortcut is taken. The sizes are one stack that grows (`count` raised): each size creates
only what the previous one did not; those applies are timed and printed too.

At each size:

- drift: `engine.drift(ws, config)`, what `iacloud drift` runs after loading the stack: the
  median of --repeat runs, each with fresh providers and connections. Its report is checked
  (every resource in sync, no orphan), not timed. Also timed once: `iacloud drift --json` as
  a new process (interpreter start, imports, loading the stack included);
- phases: engine.drift's steps timed one by one (median of --repeat): the state read, each
  type's bulk `read` (the first libvirt one opens the connection), `list_tagged` of every
  installed type (the orphan search: every domain, pool volume, link and namespace of the
  host, not only this stack's), the report. A provider lists each kind of host data once per
  run (its `listings`: domains and their XML, pools and their volumes; links and namespaces),
  so a listing is timed in the phase of the first type that needs it (the server read lists
  the domains, the volume read the stack's pool, the network read the links), and the later
  phases reuse it;
- lookups: one lookup per recorded object through the provider's own single-object path, on
  an open connection: `import_(address, id)` for servers, volumes and the image (lookup by
  uuid or name, that object's XML, for a server its state), and for networks the targeted
  read `Network._read([ref], targeted=True)` that create and update use (an RTM_GETLINK by
  name for the bridge and each link it names, a namespace listing, the network's record);
- read x N: the engine calling `read([ref])` once per object, with the provider's listings
  dropped before each call (so each call lists every domain, volume or link: quadratic).
  Above --sample objects of a type it is timed on an evenly spread sample and scaled to the
  type's count ("~").

Target (issue 5): 1,000 objects in under 2 s (2 ms per object at other sizes) and at least
10x faster than one lookup per object; the verdict is printed against both baselines. When
the largest size misses it (or at every size with --profile) one drift runs under cProfile,
and the functions with the most own time, then iacloud's own functions by cumulative time,
are printed as file:function.
Timings move with the host's load (other test runs): the 1-minute load average is printed.

At the end, always (errors, Ctrl-C and SIGTERM included; both are ignored while cleaning):
`engine.destroy_plan` + `engine.apply` (destroy), then a check through libvirt and netlink
that nothing tagged with the stack id is left (whatever is, is removed directly and reported,
and the exit status is 1), then the pool and the temp dir are removed.

    python bench/drift_scale.py [--sizes 100,500,1000] [--quick] [--repeat 5] [--jobs 8]
                                [--sample 60] [--profile] [--uri qemu:///system]

Needs root and a running libvirtd. --quick: sizes 30,90, one repeat (some 10 s).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import libvirt
from host_cleanup import remove_pool  # bench/, the script's own directory
from pyroute2 import IPRoute

from iacloud import engine
from iacloud.config import StackConfig
from iacloud.drift import DriftReport, build_report
from iacloud.errors import IacloudError, ProviderError
from iacloud.planner import PlanOptions
from iacloud.provider import ObjectRef, Observed, TaggedObject
from iacloud.providers.libvirt.tags import NS, stack_prefix
from iacloud.providers.netlink import netns
from iacloud.providers.netlink.names import NetworkNames, parse_tag
from iacloud.state.model import Snapshot

ROOT = Path(__file__).resolve().parents[1]
GROUP = 256  # networks (and the servers on them) per counted resource: one third octet each
MAX_NETWORKS = 2 * GROUP  # 198.18.x.0/24 and 198.19.x.0/24
TARGET_SECONDS = 2.0  # for 1,000 objects
TARGET_RATIO = 10.0
T = TypeVar("T")


def split(n: int) -> tuple[int, int, int]:
    """(servers, volumes, networks) of N objects."""
    third = n // 3
    return third, third, n - 2 * third


# ---------------------------------------------------------------------- the stack


@dataclass
class Bench:
    base: Path
    name: str
    pool: str
    uri: str
    jobs: int
    stack_id: str | None = None
    bridges: set[str] = field(default_factory=set)  # every network id state ever recorded

    @property
    def stack_file(self) -> Path:
        return self.base / "drift.toml"


def stack_toml(b: Bench, n: int) -> str:
    servers, volumes, networks = split(n)
    lines = [
        "version = 1",
        f"name = {json.dumps(b.name)}",
        "",
        "[provider.libvirt]",
        f"uri = {json.dumps(b.uri)}",
        f"pool = {json.dumps(b.pool)}",
        f"pool_path = {json.dumps(str(b.base / 'pool'))}",
        "wait_ready = false",
        "shutdown_timeout = 5",
        "",
        "[resources.img]",
        'type = "image"',
        'source = "base.raw"',
        'format = "raw"',
        "",
        "[resources.data]",
        'type = "volume"',
        f"count = {volumes}",
        "size_gib = 1",
        'format = "qcow2"',
    ]
    for g in range((networks + GROUP - 1) // GROUP):
        count = min(GROUP, networks - g * GROUP)
        lines += [
            "",
            f"[resources.net{g}]",
            'type = "network"',
            f"count = {count}",
            f'cidr = "198.{18 + g}.%index%.0/24"',
            "dhcp = false",
        ]
        on_it = min(count, max(0, servers - g * GROUP))
        if on_it:
            lines += [
                "",
                f"[resources.web{g}]",
                'type = "server"',
                f"count = {on_it}",
                'image = { get_resource = "img" }',
                "vcpus = 1",
                "memory_mib = 64",
                'power_state = "shutoff"',
                f'networks = [{{ network = {{ get_resource = "net{g}[%index%]" }} }}]',
            ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def data_dir(path: Path) -> Iterator[None]:
    old = os.environ.get("IACLOUD_DATA_DIR")
    os.environ["IACLOUD_DATA_DIR"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("IACLOUD_DATA_DIR", None)
        else:
            os.environ["IACLOUD_DATA_DIR"] = old


class BenchError(Exception):
    pass


@dataclass(frozen=True)
class Applied:
    n: int
    created: int
    plan: float
    apply: float


def grow(ws: engine.Workspace, b: Bench, n: int) -> Applied:
    """Write the stack for N objects and apply it: only what is new is created."""
    b.stack_file.write_text(stack_toml(b, n))
    config = ws.load()
    t = time.perf_counter()
    plan, _ = engine.make_plan(ws, config, PlanOptions())
    planned = time.perf_counter() - t
    b.stack_id = plan.stack_id
    changes = plan.actionable()
    t = time.perf_counter()
    result = engine.apply(ws, plan, jobs=b.jobs)
    applied = time.perf_counter() - t
    remember_bridges(ws, b)
    if result.interrupted:
        raise KeyboardInterrupt
    if not result.ok:
        bad = [o for o in result.outcomes if o.status not in ("complete", "unchanged")]
        shown = "; ".join(f"{o.step.change.address}: {o.status} {o.error or ''}" for o in bad[:3])
        raise BenchError(f"apply of N={n} failed: {shown or 'interrupted'}")
    return Applied(n, len(changes), planned, applied)


def remember_bridges(ws: engine.Workspace, b: Bench) -> None:
    snapshot = ws.backend.snapshot(b.name)
    b.bridges |= {rs.id for rs in snapshot.resources.values() if rs.type == "network" and rs.id}


# ---------------------------------------------------------------------- measuring


def read_snapshot(ws: engine.Workspace, name: str) -> Snapshot:
    backend = ws.open_read_only()
    try:
        return backend.snapshot(name)
    finally:
        backend.close()


def check_report(report: DriftReport, expected: int) -> list[str]:
    """The stack was just applied and nobody touched it: all in sync, nothing orphaned."""
    t = report.totals
    problems = []
    if t.resources != expected or t.in_sync != expected:
        problems.append(f"{t.in_sync} of {t.resources} resources in sync, {expected} expected")
    problems += [
        f"{r.address}: {r.status} "
        + ", ".join(f"{d.attribute} {d.recorded!r} -> {d.actual!r}" for d in r.differences)
        for r in report.resources
        if r.status != "in-sync"
    ][:5]
    problems += [f"orphan {o.type} {o.id} ({o.address})" for o in report.orphans][:5]
    return problems


def phases(ws: engine.Workspace, config: StackConfig) -> dict[str, float]:
    """engine.drift's steps timed one by one: the same calls in the same order (the orphan
    search asks every installed type, as engine.drift does)."""
    out: dict[str, float] = {}
    now = datetime.now(timezone.utc)
    t = time.perf_counter()
    snapshot = read_snapshot(ws, config.name)
    out["state"] = time.perf_counter() - t
    providers = ws.providers(config.name, snapshot, config.provider_settings)
    observed: dict[str, Observed] = {}
    tagged: list[TaggedObject] = []
    try:
        for type_name, refs in engine.refresh_refs(snapshot).items():
            t = time.perf_counter()
            observed.update(providers.resource(type_name).read(refs))
            out[f"read {type_name}"] = time.perf_counter() - t
        for type_name in sorted(ws.registry.types):
            t = time.perf_counter()
            tagged += providers.resource(type_name).list_tagged()
            out[f"tagged {type_name}"] = time.perf_counter() - t
    finally:
        providers.close()
    t = time.perf_counter()
    build_report(snapshot, observed, tagged, ws.registry, (), now=now)
    out["report"] = time.perf_counter() - t
    return out


def one_lookup_each(ws: engine.Workspace, config: StackConfig, sample: int) -> tuple[dict, dict]:
    """Per type: one lookup per object through the provider's single-object path, and
    read([ref]) once per object (sampled above `sample` objects, scaled to the count).
    Returns ({type: seconds}, {type: (seconds, sampled)})."""
    snapshot = read_snapshot(ws, config.name)
    providers = ws.providers(config.name, snapshot, config.provider_settings)
    lookups: dict[str, float] = {}
    one_by_one: dict[str, tuple[float, bool]] = {}
    try:
        by_type = engine.refresh_refs(snapshot)
        bulk = {t: providers.resource(t).read(refs) for t, refs in by_type.items()}  # warm
        for type_name, refs in by_type.items():
            res = providers.resource(type_name)
            if type_name == "network":

                def single(ref: ObjectRef, res=res) -> Observed | None:
                    return res._read([ref], targeted=True).get(ref.address)
            else:

                def single(ref: ObjectRef, res=res) -> Observed | None:
                    return res.import_(ref.address, ref.id or "")

            # the per-object path sees what the bulk read sees (checked, not timed); import_
            # also fills the inputs a read cannot observe (user_data...) with their defaults
            for ref in refs[:3]:
                if not same_object(single(ref), bulk[type_name].get(ref.address)):
                    print(f"  note: per-object and bulk read of {ref.address} differ")
            t = time.perf_counter()
            for ref in refs:
                single(ref)
            lookups[type_name] = time.perf_counter() - t

            step = max(1, len(refs) // sample)
            picked = refs[::step][:sample]
            listings = res.provider.listings  # what one run keeps: dropped before each call
            t = time.perf_counter()
            for ref in picked:
                listings.clear()
                res.read([ref])
            elapsed = time.perf_counter() - t
            one_by_one[type_name] = (elapsed * len(refs) / len(picked), len(picked) < len(refs))
    finally:
        providers.close()
    return lookups, one_by_one


def same_object(one: Observed | None, bulk: Observed | None) -> bool:
    if one is None or bulk is None:
        return one is bulk
    return (
        one.id == bulk.id
        and one.attributes == bulk.attributes
        and all(one.inputs.get(k) == v for k, v in bulk.inputs.items())
    )


def profile_drift(ws: engine.Workspace, config: StackConfig, top: int = 12) -> None:
    prof = cProfile.Profile()
    prof.enable()
    try:
        engine.drift(ws, config)
    except ProviderError as exc:
        print(f"  note: the profiled drift failed: {exc}")
    finally:
        prof.disable()
    stats = pstats.Stats(prof).stats
    total = sum(s[2] for s in stats.values())
    rows = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    print(f"  cProfile of one drift ({total:.2f} s of own time in all), most own time first:")
    print(f"  {'own s':>7} {'cum s':>7} {'calls':>8}  file:function")
    for (file, line, func), (_cc, calls, own, cum, _callers) in rows:
        print(f"  {own:7.3f} {cum:7.3f} {calls:>8}  {short(file)}:{line}:{func}")
    ours = [
        kv
        for kv in stats.items()
        if kv[0][0].startswith(str(ROOT))
        and "/.venv/" not in kv[0][0]
        and not kv[0][0].endswith("bench/drift_scale.py")
    ]
    ours.sort(key=lambda kv: kv[1][3], reverse=True)
    print("  iacloud's own functions, most cumulative time first:")
    for (file, line, func), (_cc, calls, own, cum, _callers) in ours[:top]:
        print(f"  {own:7.3f} {cum:7.3f} {calls:>8}  {short(file)}:{line}:{func}")


def short(file: str) -> str:
    for prefix in (str(ROOT) + "/", "site-packages/"):
        if prefix in file:
            return file.split(prefix, 1)[1]
    return file


# ---------------------------------------------------------------------- cleaning up


def tagged_leftovers(b: Bench, conn: libvirt.virConnect) -> list[str]:
    """Everything carrying the stack's tag that libvirt or the kernel still has."""
    found = []
    if b.stack_id is None:
        return found
    for dom in conn.listAllDomains(0):
        with contextlib.suppress(libvirt.libvirtError):
            owner = ET.fromstring(dom.XMLDesc(0)).find(f"metadata/{{{NS}}}owner")
            if owner is not None and owner.get("stack_id") == b.stack_id:
                found.append(f"domain {dom.name()}")
    prefix = f"iac-{stack_prefix(b.stack_id)}-"
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        with contextlib.suppress(libvirt.libvirtError):
            if pool.name() == b.pool:  # only our own pool is refreshed: others may be busy
                pool.refresh(0)
            found += [
                f"volume {pool.name()}/{v.name()}"
                for v in pool.listAllVolumes(0)
                if v.name().startswith(prefix)
            ]
    with IPRoute() as ipr:
        for msg in ipr.get_links():
            owner = parse_tag(msg.get("IFLA_IFALIAS"))
            if owner and owner[0] == b.stack_id:
                found.append(f"link {msg.get('IFLA_IFNAME')}")
    namespaces = netns.list_namespaces()
    for bridge in b.bridges:
        with contextlib.suppress(ValueError):
            if (ns := NetworkNames(bridge).dhcp_namespace) in namespaces:
                found.append(f"namespace {ns}")
    return found


def purge(b: Bench, conn: libvirt.virConnect) -> None:
    """The last resort: remove directly whatever still carries the stack's tag."""
    assert b.stack_id is not None
    for dom in conn.listAllDomains(0):
        with contextlib.suppress(libvirt.libvirtError):
            owner = ET.fromstring(dom.XMLDesc(0)).find(f"metadata/{{{NS}}}owner")
            if owner is not None and owner.get("stack_id") == b.stack_id:
                with contextlib.suppress(libvirt.libvirtError):
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    prefix = f"iac-{stack_prefix(b.stack_id)}-"
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        with contextlib.suppress(libvirt.libvirtError):
            for vol in pool.listAllVolumes(0):
                if vol.name().startswith(prefix):
                    with contextlib.suppress(libvirt.libvirtError):
                        vol.delete(0)
    with IPRoute() as ipr:
        for msg in ipr.get_links():
            owner = parse_tag(msg.get("IFLA_IFALIAS"))
            if owner and owner[0] == b.stack_id:
                with contextlib.suppress(Exception):
                    ipr.link("del", index=msg["index"])
    namespaces = netns.list_namespaces()
    for bridge in b.bridges:
        with contextlib.suppress(Exception):
            if (ns := NetworkNames(bridge).dhcp_namespace) in namespaces:
                netns.remove(ns)


def destroy(ws: engine.Workspace, b: Bench) -> tuple[float, list[str]]:
    """Destroy through the engine, then look for anything tagged; purge what is left."""
    problems: list[str] = []
    elapsed = float("nan")
    try:
        t = time.perf_counter()
        plan, _ = engine.destroy_plan(ws, b.name)
        if plan.stack_id:
            b.stack_id = b.stack_id or plan.stack_id
        if plan.actionable():
            result = engine.apply(ws, plan, jobs=b.jobs, command="destroy")
            bad = [o for o in result.outcomes if o.status not in ("complete", "unchanged")]
            problems += [f"destroy {o.step.change.address}: {o.status} {o.error}" for o in bad]
        elapsed = time.perf_counter() - t
        snapshot = ws.backend.snapshot(b.name)
        problems += [f"still in state: {a}" for a in snapshot.resources]
        problems += [f"pending in state: {op.address}" for op in snapshot.pending]
    except Exception as exc:  # the direct purge below still runs
        problems.append(f"destroy raised {type(exc).__name__}: {exc}")
    conn = libvirt.open(b.uri)
    try:
        left = tagged_leftovers(b, conn)
        if left:
            problems += left
            purge(b, conn)
            problems += [f"NOT REMOVED: {x}" for x in tagged_leftovers(b, conn)]
        remove_pool(conn, b.pool)
    finally:
        conn.close()
    return elapsed, problems


# ---------------------------------------------------------------------- main


def version(v: int) -> str:
    return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500,1000", help="object counts, ascending")
    parser.add_argument("--quick", action="store_true", help="sizes 30,90; one repeat")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=8, help="apply's -j")
    parser.add_argument("--sample", type=int, default=60, help="read([ref]) calls per type")
    parser.add_argument("--profile", action="store_true", help="profile drift at every size")
    parser.add_argument("--uri", default="qemu:///system")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeat, args.sample = "30,90", 1, 20
    sizes = sorted({int(x) for x in args.sizes.split(",") if x.strip()})
    args.largest = sizes[-1] if sizes else 0
    if os.geteuid() != 0:
        print("needs root (creates bridges, libvirt domains and a pool)", file=sys.stderr)
        return 1
    if not sizes or sizes[0] < 3 or split(sizes[-1])[2] > MAX_NETWORKS:
        print(f"sizes must be 3..{3 * MAX_NETWORKS} (one /24 per network)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _terminate)

    started = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="iacloud-bench-"))
    base.chmod(0o755)  # libvirt's pool lives below
    with (base / "base.raw").open("wb") as f:
        f.truncate(1 << 20)
    tag = uuid.uuid4().hex[:8]
    b = Bench(base, f"drift-bench-{tag}", f"iacbench-{tag}", args.uri, args.jobs)
    ws = engine.Workspace(b.stack_file, state_url=str(base / "state.db"))
    print(
        f"host: {os.cpu_count()} cores, libvirt {version(libvirt.getVersion())}, {args.uri}; "
        f"stack {b.name}, pool {b.pool} in {base}"
    )
    print("N objects = N/3 shutoff domains (each + root overlay + seed ISO) + N/3 volumes + "
          "the rest bridges (no DHCP), plus 1 image")  # fmt: skip
    rows: list[Row] = []
    failed = False
    try:
        with data_dir(base / "data"):
            try:
                run_sizes(ws, b, sizes, args, rows)
            except (BenchError, IacloudError) as exc:
                failed = True
                print(f"FAILED: {type(exc).__name__}: {exc}")
            except KeyboardInterrupt:
                failed = True
                print("\ninterrupted")
            finally:
                old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
                print("cleaning up (destroy through the engine; Ctrl-C is ignored until done)")
                try:
                    elapsed, problems = destroy(ws, b)
                finally:
                    for signum, handler in old.items():
                        signal.signal(signum, handler)
                print(f"destroy: {elapsed:.1f} s; " + ("nothing tagged left" if not problems
                      else f"{len(problems)} problems:"))  # fmt: skip
                for p in problems[:20]:
                    print(f"  {p}")
                failed = failed or bool(problems)
    finally:
        ws.close()
        shutil.rmtree(base, ignore_errors=True)
    summary(rows)
    print(f"total {time.perf_counter() - started:.0f} s")
    return 1 if failed else 0


def run_sizes(
    ws: engine.Workspace, b: Bench, sizes: list[int], args: argparse.Namespace, rows: list[Row]
) -> None:
    print(f"\napply, growing the stack (engine.make_plan + engine.apply -j{b.jobs}):")
    print(f"{'N':>6} {'servers':>7} {'volumes':>7} {'networks':>8} {'created':>7} "
          f"{'plan s':>7} {'apply s':>8} {'ms/new':>7}")  # fmt: skip
    for n in sizes:
        a = grow(ws, b, n)
        s, v, nets = split(n)
        per = 1000 * a.apply / a.created if a.created else 0.0
        print(f"{n:>6} {s:>7} {v:>7} {nets:>8} {a.created:>7} {a.plan:7.2f} {a.apply:8.2f} "
              f"{per:7.1f}", flush=True)  # fmt: skip
        rows.append(measure(ws, b, n, args))


@dataclass(frozen=True)
class Row:
    n: int
    drift: float  # engine.drift, median
    cli: float | None  # `iacloud drift --json` as a process, wall
    lookups: float  # one lookup per object, all types
    one_by_one: float  # read([ref]) per object, all types (partly extrapolated)
    refresh: float  # the bulk reads alone (phases)
    tagged: float  # the list_tagged calls alone (phases)
    load: float  # 1-minute load average when measured


def cli_drift(b: Bench) -> float | None:
    """What a scheduled job runs: a new process, the stack loaded, the report printed."""
    exe = Path(sys.executable).with_name("iacloud")
    if not exe.exists():
        return None
    cmd = [str(exe), "drift", "--json", "--state", str(b.base / "state.db"), str(b.stack_file)]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    elapsed = time.perf_counter() - t
    if done.returncode != 0:
        print(f"  note: iacloud drift exited {done.returncode}: {done.stderr.strip()[:300]}")
    return elapsed


def retrying(fn: Callable[[], T], attempts: int = 3) -> tuple[T, float]:
    """fn's result and the time of its successful call. A provider error is printed and fn
    runs again: drift lists every domain and pool of the host, and on a shared test host
    another stack's pool or domain can vanish between a listing and the next call."""
    for attempt in range(1, attempts + 1):
        t = time.perf_counter()
        try:
            result = fn()
        except ProviderError as exc:
            print(f"  note: attempt {attempt} failed, {time.perf_counter() - t:.2f} s: {exc}")
            if attempt == attempts:
                raise
            continue
        return result, time.perf_counter() - t
    raise AssertionError("unreachable")


def time_drift(ws: engine.Workspace, config: StackConfig, repeat: int) -> float:
    times = [retrying(lambda: engine.drift(ws, config))[1] for _ in range(repeat)]
    return min(times) if repeat < 3 else statistics.median(times)


def median_phases(ws: engine.Workspace, config: StackConfig, repeat: int) -> dict[str, float]:
    runs = [retrying(lambda: phases(ws, config))[0] for _ in range(repeat)]
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def measure(ws: engine.Workspace, b: Bench, n: int, args: argparse.Namespace) -> Row:
    t = time.perf_counter()
    config = ws.load()
    load = time.perf_counter() - t
    report, _ = retrying(lambda: engine.drift(ws, config))  # warms up; checked, not timed
    problems = check_report(report, n + 1)
    drift_s = time_drift(ws, config, args.repeat)
    cli_s = cli_drift(b)
    phase = median_phases(ws, config, args.repeat)
    lookups, one_by_one = one_lookup_each(ws, config, args.sample)
    row = Row(
        n=n,
        drift=drift_s,
        cli=cli_s,
        lookups=sum(lookups.values()),
        one_by_one=sum(s for s, _ in one_by_one.values()),
        refresh=sum(v for k, v in phase.items() if k.startswith("read ")),
        tagged=sum(v for k, v in phase.items() if k.startswith("tagged ")),
        load=os.getloadavg()[0],
    )
    cli = f"; `iacloud drift --json` as a process {cli_s:.2f} s" if cli_s is not None else ""
    print(
        f"\nN = {n}: drift {drift_s:.3f} s, {1000 * drift_s / n:.2f} ms per object "
        f"(loading the stack {load:.3f} s more{cli}; load average {row.load:.1f})"
    )
    for p in problems:
        print(f"  REPORT NOT CLEAN: {p}")
    print("  phases, median (s): " + "  ".join(f"{k} {v:.3f}" for k, v in phase.items()))
    print(f"  = bulk reads {row.refresh:.3f} s + list_tagged {row.tagged:.3f} s + state and report")
    print(f"  {'type':<8} {'objects':>7} {'bulk read':>10} {'lookups':>9} {'ratio':>6} "
          f"{'read x N':>10} {'ratio':>7}")  # fmt: skip
    counts: dict[str, int] = {}
    for rs in read_snapshot(ws, b.name).resources.values():
        counts[rs.type] = counts.get(rs.type, 0) + 1
    for type_name, count in sorted(counts.items()):
        bulk = phase.get(f"read {type_name}", float("nan"))
        obo, sampled = one_by_one[type_name]
        print(f"  {type_name:<8} {count:>7} {bulk:10.3f} {lookups[type_name]:9.3f} "
              f"{lookups[type_name] / bulk:5.1f}x {'~' if sampled else ' '}{obo:9.3f} "
              f"{obo / bulk:6.1f}x")  # fmt: skip
    if args.profile or (n == args.largest and not meets(row)):
        profile_drift(ws, config)
    return row


def meets(row: Row) -> bool:
    return (
        row.drift <= TARGET_SECONDS * row.n / 1000
        and row.lookups / row.drift >= TARGET_RATIO
        and row.one_by_one / row.drift >= TARGET_RATIO
    )


def summary(rows: list[Row]) -> None:
    if not rows:
        return
    print(
        "\nsummary (seconds). drift: engine.drift (median); cli: `iacloud drift --json` as a "
        "process;\nlookups: one lookup per object (provider's single-object path); read x N: "
        "read([ref]) per object;\nrefresh: the bulk reads alone, without list_tagged"
    )
    print(f"{'N':>6} {'drift':>7} {'per obj':>9} {'cli':>6} {'lookups':>8} {'ratio':>6} "
          f"{'read x N':>9} {'ratio':>7} {'refresh':>8} {'lookups/refresh':>15}")  # fmt: skip
    for r in rows:
        cli = f"{r.cli:6.2f}" if r.cli is not None else f"{'-':>6}"
        print(f"{r.n:>6} {r.drift:7.3f} {1000 * r.drift / r.n:7.2f}ms {cli} {r.lookups:8.3f} "
              f"{r.lookups / r.drift:5.1f}x {r.one_by_one:9.3f} {r.one_by_one / r.drift:6.1f}x "
              f"{r.refresh:8.3f} {r.lookups / r.refresh:14.1f}x")  # fmt: skip
    print(f"target (issue 5): 1,000 objects in under {TARGET_SECONDS:g} s and >= "
          f"{TARGET_RATIO:g}x faster than one lookup per object")  # fmt: skip
    for r in rows:
        fast = r.drift <= TARGET_SECONDS * r.n / 1000
        print(
            f"  N = {r.n}: {TARGET_SECONDS * r.n / 1000:g} s budget "
            f"{'met' if fast else 'MISSED'} ({r.drift:.2f} s); "
            f"10x vs lookups {'met' if r.lookups / r.drift >= TARGET_RATIO else 'MISSED'} "
            f"({r.lookups / r.drift:.1f}x); "
            f"10x vs read x N {'met' if r.one_by_one / r.drift >= TARGET_RATIO else 'MISSED'} "
            f"({r.one_by_one / r.drift:.1f}x)"
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
