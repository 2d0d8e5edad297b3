"""Refreshing N networks: the netlink provider's bulk read against one netlink query per object.

For N = 10, 100, 500 real bridges (dhcp = false by default; `--dhcp-every K` gives every K-th
network a namespace and a dnsmasq too), times three ways of learning what exists:

- bulk: `Network.read(refs)` once for all N (one link dump, one namespace listing, one record
  file and, for DHCP networks, one pid check each);
- per object: the same facts asked one network at a time, as a provider without bulk reads
  would: an RTM_GETLINK for the bridge and for each of its named links (DHCP veth, VLAN,
  VXLAN), a namespace listing, its record (the provider's targeted path, which create and
  update use);
- read one by one: the engine calling `read([ref])` N times, each call a full link dump
  (quadratic: what bulk reads exist to avoid).

Prints a table with the ratios. Needs root; every bridge is removed at the end, Ctrl-C included.
Addresses: 198.18.0.0/24 .. 198.19.255.0/24 (so N <= 512).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from pyroute2 import IPRoute

from iacloud.provider import ObjectRef, Observed, StackInfo
from iacloud.providers.netlink import NetlinkProvider, NetlinkSettings
from iacloud.providers.netlink.names import parse_tag
from iacloud.providers.netlink.network_inputs import NetworkInputs


def cidr(i: int) -> str:
    return f"198.{18 + i // 256}.{i % 256}.0/24"


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) if repeat < 3 else statistics.median(times)


def run(n: int, dhcp_every: int, repeat: int) -> tuple[float, float, float, float]:
    with tempfile.TemporaryDirectory(prefix="iacloud-bench-") as tmp:
        stack = StackInfo("bench", f"bench-{uuid.uuid4().hex[:8]}", Path(tmp), Path(tmp) / "data")
        provider = NetlinkProvider(stack, NetlinkSettings())
        network = provider.resource("network")
        created: dict[str, Observed] = {}
        try:
            t = time.perf_counter()
            for i in range(n):
                dhcp = bool(dhcp_every) and i % dhcp_every == 0
                inputs = NetworkInputs(cidr=cidr(i), dhcp=dhcp)
                created[f"net[{i}]"] = network.create(f"net[{i}]", inputs)
            create_s = time.perf_counter() - t
            refs = [ObjectRef(address, o.id) for address, o in created.items()]

            def fresh_read(batch: list[ObjectRef]) -> dict[str, Observed]:
                # a provider keeps its listings for the run: each timed read starts cold
                provider.listings.clear()
                return network.read(batch)

            assert fresh_read(refs) == created  # and it agrees with what create returned
            bulk = best(lambda: fresh_read(refs), repeat)
            # _read(targeted=True) is the provider's per-object path (create/update use it)
            single = best(lambda: [network._read([r], targeted=True) for r in refs], repeat)
            # quadratic: two minutes at N = 500, so measured once there
            slow_repeat = 1 if n >= 200 else max(1, repeat // 2)
            one_by_one = best(lambda: [fresh_read([r]) for r in refs], slow_repeat)
            return create_s, bulk, single, one_by_one
        finally:
            for address, o in created.items():
                network.delete(address, o)
            sweep(stack.id)


def sweep(stack_id: str) -> None:
    """Remove anything tagged with the bench's stack that a failed delete left behind."""
    with IPRoute() as ipr:
        for msg in ipr.get_links():
            owner = parse_tag(msg.get("IFLA_IFALIAS"))
            if owner and owner[0] == stack_id:
                ipr.link("del", index=msg["index"])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,500")
    parser.add_argument("--dhcp-every", type=int, default=0, help="every K-th network has DHCP")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (creates bridges)", file=sys.stderr)
        return 1
    sizes = [int(x) for x in args.sizes.split(",")]
    if max(sizes) > 512:
        print("at most 512 networks (one /24 each in 198.18.0.0/15)", file=sys.stderr)
        return 1

    print(
        f"{'N':>5} {'create':>9} {'bulk read':>10} {'per object':>11} {'read x N':>10}"
        f" {'per-object/bulk':>16} {'read-xN/bulk':>13}"
    )
    for n in sizes:
        create_s, bulk, single, one_by_one = run(n, args.dhcp_every, args.repeat)
        print(
            f"{n:>5} {create_s:>8.2f}s {bulk * 1e3:>8.1f}ms {single * 1e3:>9.1f}ms"
            f" {one_by_one * 1e3:>8.1f}ms {single / bulk:>15.1f}x {one_by_one / bulk:>12.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
