"""Many hosts (#16) on the lab (scripts/lab-hosts.sh): an apply of N servers spread over the
hosts against its critical path, and a drift read over all hosts against the slowest host.

- apply: one image and `count = N` tiny servers (plus M defined but not started, which make
  the reads bigger) in a soft-anti-affinity server group, placed
  by the scheduler over the lab hosts, applied through the engine (`engine.make_plan`,
  `engine.apply` with one job per server); the critical path is the sum of the executor's own step
  times along the longest chain of the step graph (`libvirt_apply.critical_path`). Target:
  wall <= 1.15x the critical path (one host's work does not wait for another's).
- drift: the servers' type `read()` of every server (the hosts read in parallel), against the
  same read of each host's servers alone, each with a fresh provider (no kept listings).
  Target: all hosts < 1.3x the slowest host. `engine.drift` wall is shown too. The lab's
  hosts share this machine's cores (their libvirtd and sshd do the read's remote work), so
  the CPU the read costs them and this process is shown with the bound it sets here.

    python bench/multihost.py [--servers 6] [--stopped 24] [--hosts 3] [--repeat 3]

The stack is destroyed and the lab left up at the end (`make lab-hosts-down` takes it down).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from libvirt_apply import critical_path  # bench/, the script's own directory

from iacloud import engine
from iacloud.loading.site_file import read_site
from iacloud.planner import PlanOptions
from iacloud.provider import ObjectRef, StackInfo
from iacloud.providers.libvirt import LibvirtProvider, LibvirtSettings
from iacloud.providers.libvirt.server import Server

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "build" / "images" / "tiny.qcow2"
LAB = Path(os.environ.get("IACLOUD_LAB_DIR", "/var/lib/iacloud-lab"))


def lab(*args: str) -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "lab-hosts.sh"), *args], check=True,
                   capture_output=True, timeout=180)  # fmt: skip


def site_text(hosts: int) -> str:
    out = ["version = 1"]
    for i in range(1, hosts + 1):
        uri = (f"qemu+libssh2://root@198.19.250.1{i}/system?sshauth=privkey"
               f"&keyfile={LAB}/id_ed25519&known_hosts={LAB}/known_hosts")  # fmt: skip
        out += [f"[hosts.h{i}]", f'uri = "{uri}"',
                f'ssh = {{ target = "h{i}", ssh_config = "{LAB}/ssh_config" }}']  # fmt: skip
    return "\n".join(out) + "\n"


def stack_text(n: int, stopped: int) -> str:
    return f"""version = 1
name = "mh"
[provider.libvirt]
image_roots = [{json.dumps(str(TINY.parent))}]
boot_timeout = 300
[resources.img]
type = "image"
source = {json.dumps(str(TINY))}
format = "qcow2"
[resources.spread]
type = "server_group"
policy = "soft-anti-affinity"
[resources.web]
type = "server"
count = {n}
image = {{ get_resource = "img" }}
memory_mib = 128
server_group = {{ get_resource = "spread" }}
[resources.idle]
type = "server"
count = {stopped}
image = {{ get_resource = "img" }}
memory_mib = 128
power_state = "shutoff"
server_group = {{ get_resource = "spread" }}
"""


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def lab_cpu(hosts: int) -> float:
    """CPU seconds used so far by the lab hosts' processes but their guests (libvirtd, sshd
    and the libvirt ssh helpers): on this machine they share its cores, which separate hosts
    would not."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for i in range(1, hosts + 1):
        pids = subprocess.run(["ip", "netns", "pids", f"iaclab-h{i}"], capture_output=True,
                              text=True, check=False).stdout.split()  # fmt: skip
        for pid in pids:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue  # exited meanwhile
            if stat.partition("(")[2].startswith("qemu"):
                continue  # a guest's CPU is not the read's
            fields = stat.rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def cpu_used(hosts: int) -> float:
    """CPU seconds used so far by this process and the lab hosts."""
    return lab_cpu(hosts) + time.process_time()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", type=int, default=6, help="running servers")
    ap.add_argument("--stopped", type=int, default=24, help="defined, not started (reads)")
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    lab("up", str(args.hosts))
    with tempfile.TemporaryDirectory(prefix="iacloud-mh-") as tmp:
        base = Path(tmp)
        (base / "site.toml").write_text(site_text(args.hosts))
        stack = base / "mh.toml"
        stack.write_text(stack_text(args.servers, args.stopped))
        ws = engine.Workspace(stack, state_url=str(base / "state.db"), site_file=base / "site.toml")
        try:
            config = ws.load()
            plan, _ = engine.make_plan(ws, config, PlanOptions())
            placed = {
                c.address: (c.after or {}).get("host") for c in plan.changes if c.type == "server"
            }
            start = time.perf_counter()
            result = engine.apply(ws, plan, jobs=args.servers + args.stopped)
            wall = time.perf_counter() - start
            assert result is not None and not result.failed, "the apply failed"
            critical, chain = critical_path(plan, result)
            per_host: dict[str, list[str]] = {}
            for address, host in placed.items():
                per_host.setdefault(str(host), []).append(address)
            spread = ", ".join(f"{h}: {len(a)}" for h, a in sorted(per_host.items()))
            print(f"apply of {args.servers} running and {args.stopped} stopped servers over "
                  f"{args.hosts} hosts ({spread})")  # fmt: skip
            print(f"  wall {wall:.2f} s, critical path {critical:.2f} s ({' -> '.join(chain)}), "
                  f"ratio {wall / critical:.2f} (target <= 1.15)")  # fmt: skip

            snapshot = ws.backend.snapshot(config.name)
            refs = [ObjectRef(a, rs.id, rs.inputs, rs.attributes)
                    for a, rs in snapshot.resources.items() if rs.type == "server"]  # fmt: skip
            hosts = read_site(base / "site.toml").hosts
            info = StackInfo(config.name, snapshot.stack_id, base, base / "data", hosts)

            def fresh() -> Server:
                provider = LibvirtProvider(info, LibvirtSettings())
                server = provider.resource("server")
                assert isinstance(server, Server)
                return server

            def read_host(name: str) -> float:
                server = fresh()
                mine = [r for r in refs if r.inputs.get("host") == name]
                try:
                    with server.provider.on(name) as ctx:
                        ctx.conn()  # connecting is not the read
                        return timed(lambda: server._read_here(mine))
                finally:
                    server.provider.close()

            reads_cpu = 0.0

            def read_all() -> float:
                nonlocal reads_cpu
                server = fresh()
                try:
                    for name in hosts:
                        with server.provider.on(name) as ctx:
                            ctx.conn()
                    before = cpu_used(args.hosts)
                    wall = timed(lambda: server.read(refs))
                    # the clock ticks are 10 ms: summed over the runs, divided at the end
                    reads_cpu += cpu_used(args.hosts) - before
                    return wall
                finally:
                    server.provider.close()

            singles = {
                h: statistics.median(read_host(h) for _ in range(args.repeat)) for h in per_host
            }
            together = statistics.median(read_all() for _ in range(args.repeat))
            cpu = reads_cpu / args.repeat
            slowest = max(singles.values())
            alone = ", ".join(f"{h} {t * 1000:.0f} ms" for h, t in sorted(singles.items()))
            print(f"drift read of every server (median of {args.repeat}): one host alone: {alone}")
            print(f"  all hosts {together * 1000:.0f} ms, ratio to the slowest "
                  f"{together / slowest:.2f} (target < 1.3)")  # fmt: skip
            # the lab's hosts are processes on this machine's cores: a read of all of them can
            # be no faster than their CPU work spread over those cores
            cores = os.cpu_count() or 1
            floor = max(slowest, cpu / cores)
            print(f"  CPU of the read, lab hosts and this process (mean): {cpu * 1000:.0f} ms on "
                  f"{cores} cores; lower bound here {floor * 1000:.0f} ms, ratio to it "
                  f"{together / floor:.2f}")  # fmt: skip
            drift_wall = timed(lambda: engine.drift(ws, config))
            print(f"  engine.drift of the stack (connects included): {drift_wall:.2f} s")
        finally:
            snapshot = ws.backend.snapshot("mh")
            if snapshot.serial:
                dplan, _ = engine.destroy_plan(
                    ws, "mh", provider_settings=ws.load().provider_settings
                )
                done = engine.apply(ws, dplan, command="destroy")
                print("destroyed" if done is not None and not done.failed else "destroy FAILED")
            ws.close()


if __name__ == "__main__":
    sys.exit(main())
