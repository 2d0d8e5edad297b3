"""The libvirt provider at scale. Part one: refreshing N volumes, bulk read against per-object.

For N volumes (empty, sparse, in a throw-away pool) times:

- bulk: `Volume.read(refs)` once for all N (a pool refresh, one `listAllVolumes()`, then
  each volume's XML: libvirt has no call that returns many volumes' details at once);
- per object: what a provider without bulk reads does, `storageVolLookupByName` and the
  volume's XML, one volume at a time;
- lookup only: just the N `storageVolLookupByName` calls, the floor of any per-object way;
- read one by one: the engine calling `read([ref])` N times (a listing each time:
  quadratic, what bulk reads exist to avoid).

    python bench/libvirt_apply.py [--sizes 10,100,500] [--repeat 3] [--uri qemu:///system]

`bulk_read_vs_lookup(n)` is the function to call from elsewhere; it returns the timings.
Every volume and the pool are removed at the end, Ctrl-C included.
(Part two, N servers applied against the critical path, is still to come.)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import libvirt

from iacloud.provider import ObjectRef, Observed, StackInfo
from iacloud.providers.libvirt import LibvirtProvider, LibvirtSettings


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
            assert len(volume.read(refs)) == n

        def per_object() -> None:
            for name in names:
                pool.storageVolLookupByName(name).XMLDesc(0)

        def lookup_only() -> None:
            for name in names:
                pool.storageVolLookupByName(name)

        def one_by_one() -> None:
            for ref in refs:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100,500")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--uri", default="qemu:///system")
    args = parser.parse_args()
    print(f"{'N':>5} {'create':>8} {'bulk':>8} {'per-obj':>8} {'lookups':>8} {'1-by-1':>8}"
          f"  {'per-obj/bulk':>12} {'1-by-1/bulk':>11}")  # fmt: skip
    for n in (int(s) for s in args.sizes.split(",")):
        r = bulk_read_vs_lookup(n, uri=args.uri, repeat=args.repeat)
        obo = f"{r.one_by_one:8.3f}" if r.one_by_one is not None else f"{'-':>8}"
        ratio = f"{r.one_by_one / r.bulk:11.1f}" if r.one_by_one is not None else f"{'-':>11}"
        print(
            f"{n:>5} {r.create:8.3f} {r.bulk:8.3f} {r.per_object:8.3f} {r.lookup_only:8.3f} "
            f"{obo}  {r.per_object / r.bulk:12.2f} {ratio}"
        )


if __name__ == "__main__":
    main()
