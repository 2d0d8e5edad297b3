"""Crash trials: kill -9 at random points of `iacloud apply` and `iacloud destroy`, and libvirtd
restarted mid-apply, each followed by recovery and a leak check by ownership tag (root, real
libvirtd, netlink and dnsmasq; run it under the host-test lock).

The stack (16 resources): one image (build/images/tiny.qcow2), 6 empty volumes, one network
with DHCP, 4 ports on it and 4 servers (128 MiB, one NIC on a port each; `shutoff` for the
kill -9 trials so a trial takes seconds, booting for the restart trials so the restart lands
while they are being created). Each kind has its own pool (in a temp dir) and IACLOUD_DATA_DIR:
it touches nothing of anyone else's.

One trial: `apply` in a child process, SIGKILL after a random delay within the measured apply
time; then `apply` again (recovery) must exit 0, `plan --detailed-exitcode` must say no
changes, and every object carrying the stack's tag must be one state records (and the reverse).
Then `destroy`, SIGKILLed at a random point, then `destroy` again must exit 0 and leave nothing
tagged with the stack id (domains, volumes, bridges, dnsmasq), no resources and no pending rows.

Outcomes per trial: converged (all of the above), leaked (a tagged object state does not
account for, or one left after destroy), lost (state records an object that does not exist,
or recovery failed). Restart trials: libvirtd is restarted (scripts/restart-libvirtd.sh, the
way host-setup.sh starts it) while servers are being created; then the same recovery and leak
check.

    python bench/crash_trials.py [--trials 40] [--restarts 3] [--seed N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
from host_cleanup import remove_pool  # bench/, the script's own directory
from pyroute2 import IPRoute

from iacloud.providers.libvirt.tags import NS, stack_prefix

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "build" / "images" / "tiny.qcow2"
IACLOUD = [sys.executable, "-c", "from iacloud.cli.main import main; main()"]
URI = "qemu:///system"
where: Counter[str] = Counter()  # where the kills landed
RESOURCES = 16  # image, 6 volumes, network, 4 ports, 4 servers


def stack_toml(name: str, pool: str, base: Path, octet: int, power: str) -> str:
    lines = [
        "version = 1",
        f'name = "{name}"',
        "[provider.libvirt]",
        f'pool = "{pool}"',
        f'pool_path = "{base / "pool"}"',
        "shutdown_timeout = 5",
        f"image_roots = [{json.dumps(str(TINY.parent))}]",  # the stack is written outside the repo
        "[resources.img]",
        'type = "image"',
        f'source = "{TINY}"',
        'format = "qcow2"',
        "[resources.data]",
        'type = "volume"',
        "count = 6",
        "size_gib = 1",
        "[resources.lan]",
        'type = "network"',
        f'cidr = "198.19.{octet}.0/24"',
        "[resources.port]",
        'type = "port"',
        "count = 4",
        'network = { get_resource = "lan" }',
        f'ip = "198.19.{octet}.1%index%"',
        "[resources.web]",
        'type = "server"',
        "count = 4",
        'image = { get_resource = "img" }',
        "memory_mib = 128",
        f'power_state = "{power}"',
        'networks = [{ port = { get_resource = "port[%index%]" } }]',
    ]
    return "\n".join(lines) + "\n"


@dataclass
class Case:
    base: Path
    name: str
    pool: str
    octet: int
    power: str = "shutoff"
    file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.base.mkdir(mode=0o755, exist_ok=True)
        self.file = self.base / "stack.toml"
        self.file.write_text(stack_toml(self.name, self.pool, self.base, self.octet, self.power))

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["IACLOUD_DATA_DIR"] = str(self.base / "data")
        env.pop("IACLOUD_STATE", None)
        return env

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([*IACLOUD, *args, str(self.file)], env=self.env(),
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def killed(self, command: str, after: float) -> str:
        """Run `command --auto-approve` and SIGKILL it `after` seconds in; say where it was:
        'finished' (before the kill), 'mid-step' (pending operations left), 'between steps'."""
        proc = subprocess.Popen([*IACLOUD, command, "--auto-approve", str(self.file)],
                                env=self.env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            proc.wait(timeout=after)
            return "finished"
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        return "mid-step" if self.state()[2] else "between steps"

    def pending_servers(self) -> list[str]:
        db = self.base / ".iacloud" / "state.db"
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
                rows = c.execute("SELECT address FROM pending WHERE address LIKE 'web%'")
                return [r[0] for r in rows.fetchall()]
        except sqlite3.Error:
            return []

    def state(self) -> tuple[str | None, dict[str, str], int]:
        """(stack id, {address: object id}, pending rows) from the state file."""
        db = self.base / ".iacloud" / "state.db"
        if not db.exists():
            return None, {}, 0
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
            row = c.execute("SELECT stack_id FROM stacks WHERE name = ?", (self.name,)).fetchone()
            res = c.execute(
                "SELECT address, object_id FROM resources WHERE stack = ? AND serial_to IS NULL",
                (self.name,),
            ).fetchall()
            pending = c.execute(
                "SELECT COUNT(*) FROM pending WHERE stack = ?", (self.name,)
            ).fetchone()[0]
        return (row[0] if row else None), dict(res), pending


def tagged(conn: libvirt.virConnect, stack_id: str) -> set[str]:
    """Every object on the host carrying the stack's tag: domains, volumes, links, dnsmasq."""
    found = set()
    for dom in conn.listAllDomains(0):
        with contextlib.suppress(libvirt.libvirtError):
            owner = ET.fromstring(dom.XMLDesc(0)).find(f"metadata/{{{NS}}}owner")
            if owner is not None and owner.get("stack_id") == stack_id:
                found.add(f"domain {dom.UUIDString()}")
    prefix = f"iac-{stack_prefix(stack_id)}-"
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        with contextlib.suppress(libvirt.libvirtError):
            pool.refresh(0)
            for v in pool.listAllVolumes(0):
                if v.name().startswith(prefix):
                    found.add(f"volume {pool.name()}/{v.name()}")
    with IPRoute() as ipr:
        for link in ipr.get_links():
            alias = link.get_attr("IFLA_IFALIAS") or ""
            if stack_id in alias:
                found.add(f"link {link.get_attr('IFLA_IFNAME')}")
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
                if b"dnsmasq" in cmd and stack_id.encode() in cmd:
                    found.add(f"dnsmasq {entry}")
    return found


def accounted(objects: set[str], recorded: dict[str, str]) -> tuple[set[str], set[str]]:
    """(tagged objects state does not account for, recorded objects not on the host). A
    server's root and seed volumes belong to its domain; ports are records, not host objects."""
    ids = set(recorded.values())
    leaked = set()
    for o in objects:
        kind, oid = o.split(" ", 1)
        if kind == "domain":
            if oid not in ids:
                leaked.add(o)
        elif kind == "volume":
            if oid not in ids and not (oid.endswith((".root.qcow2", ".seed.raw"))):
                leaked.add(o)
        elif kind in ("link", "dnsmasq") and "lan" not in recorded:
            leaked.add(o)  # the network's bridge, DHCP veth and dnsmasq, with no network
    host_ids = {o.split(" ", 1)[1] for o in objects}
    lost = {
        f"{a} {i}"
        for a, i in recorded.items()
        if (a.startswith(("web", "data", "img")) and i not in host_ids)
    }
    return leaked, lost


def check_converged(case: Case, conn: libvirt.virConnect) -> tuple[str, str]:
    """After a recovery apply: ('converged'|'leaked'|'lost', detail)."""
    stack_id, recorded, pending = case.state()
    if stack_id is None:
        return "lost", "no state"
    plan = case.run("plan", "--detailed-exitcode")
    if plan.returncode != 0:
        return "lost", f"plan after recovery: exit {plan.returncode}: {plan.stdout[-400:]}"
    if len(recorded) != RESOURCES:
        return "lost", f"state records {len(recorded)} of {RESOURCES} resources"
    leaked, lost = accounted(tagged(conn, stack_id), recorded)
    if leaked:
        return "leaked", ", ".join(sorted(leaked))
    if lost or pending:
        return "lost", f"{sorted(lost)} pending={pending}"
    return "converged", ""


def check_destroyed(case: Case, conn: libvirt.virConnect, stack_id: str) -> tuple[str, str]:
    _, recorded, pending = case.state()
    left = tagged(conn, stack_id)
    if left:
        return "leaked", ", ".join(sorted(left))
    if recorded or pending:
        return "lost", f"state keeps {sorted(recorded)} pending={pending}"
    return "converged", ""


def restart_libvirtd() -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "restart-libvirtd.sh")], check=True,
                   timeout=180)  # fmt: skip


def trial(case: Case, rng: random.Random, apply_time: float, destroy_time: float,
          restart: bool) -> tuple[str, str]:  # fmt: skip
    if restart:
        proc = subprocess.Popen([*IACLOUD, "apply", "--auto-approve", str(case.file)],
                                env=case.env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if case.pending_servers():  # servers are being created (booting): restart now
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))
        restart_libvirtd()
        proc.wait(timeout=600)
    else:
        where["apply " + case.killed("apply", rng.uniform(0.0, apply_time))] += 1
    rec = case.run("apply", "--auto-approve")
    conn = libvirt.open(URI)
    try:
        if rec.returncode != 0:
            return "lost", f"recovery apply exit {rec.returncode}: {rec.stderr[-600:]}"
        outcome = check_converged(case, conn)
        if outcome[0] != "converged":
            return outcome
        stack_id = case.state()[0]
        assert stack_id is not None
        where["destroy " + case.killed("destroy", rng.uniform(0.0, destroy_time))] += 1
        rec = case.run("destroy", "--auto-approve")
        if rec.returncode != 0:
            return "lost", f"recovery destroy exit {rec.returncode}: {rec.stderr[-600:]}"
        return check_destroyed(case, conn, stack_id)
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--restarts", type=int, default=3)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("crash_trials: run as root (real libvirtd, netlink and dnsmasq)")
    if not TINY.exists():
        sys.exit(f"crash_trials: {TINY} is missing: make image")
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    uid = uuid.uuid4().hex[:6]
    counts: dict[str, dict[str, int]] = {"kill -9": {}, "libvirtd restart": {}}
    with tempfile.TemporaryDirectory(prefix="h4-crash-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)  # QEMU (another user) must reach the pool inside
        octet = 200 + rng.randrange(40)
        # kill -9 trials with stopped servers (fast); restart trials with booting ones, so the
        # restart lands while servers are being created
        cases = {
            "kill -9": (Case(base / "kill", f"crash{uid}", f"crash{uid}", octet), args.trials),
            "libvirtd restart": (
                Case(base / "restart", f"crashr{uid}", f"crashr{uid}", octet + 1, "running"),
                args.restarts,
            ),
        }
        try:
            for kind, (case, n) in cases.items():
                if n == 0:
                    continue
                # undisturbed runs time the kill windows: the second pair, since the first
                # also makes the pool and is slower than every later apply
                for _ in range(2):
                    t = time.monotonic()
                    first = case.run("apply", "--auto-approve")
                    apply_time = time.monotonic() - t
                    if first.returncode != 0:
                        sys.exit(f"crash_trials: undisturbed apply failed: {first.stderr[-800:]}")
                    t = time.monotonic()
                    gone = case.run("destroy", "--auto-approve")
                    destroy_time = time.monotonic() - t
                    if gone.returncode != 0:
                        sys.exit(f"crash_trials: undisturbed destroy failed: {gone.stderr[-800:]}")
                print(f"{kind}: seed {seed}; servers {case.power}; undisturbed apply "
                      f"{apply_time:.1f} s, destroy {destroy_time:.1f} s; {RESOURCES} resources",
                      flush=True)  # fmt: skip
                for i in range(1, n + 1):
                    t = time.monotonic()
                    outcome, detail = trial(
                        case, rng, apply_time, destroy_time, kind == "libvirtd restart"
                    )
                    counts[kind][outcome] = counts[kind].get(outcome, 0) + 1
                    print(f"  {kind} trial {i}: {outcome} ({time.monotonic() - t:.0f} s)"
                          + (f": {detail}" if detail else ""), flush=True)  # fmt: skip
                    if outcome != "converged":
                        case.run("destroy", "--auto-approve")  # the next trial starts clean
        finally:
            for case, _ in cases.values():
                if case.state()[0]:
                    with contextlib.suppress(Exception):
                        case.run("destroy", "--auto-approve")
            conn = libvirt.open(URI)  # a fresh one: libvirtd may have been restarted
            for case, _ in cases.values():
                remove_pool(conn, case.pool)
            conn.close()
    for kind, c in counts.items():
        total = sum(c.values())
        if total:
            print(f"{kind}: {total} trials: converged {c.get('converged', 0)} / leaked "
                  f"{c.get('leaked', 0)} / lost {c.get('lost', 0)}")  # fmt: skip
    if where:
        print("kills landed: " + ", ".join(f"{k} {n}" for k, n in sorted(where.items())))
    print(json.dumps({"seed": seed, **counts, "kills": dict(where)}))


if __name__ == "__main__":
    main()
