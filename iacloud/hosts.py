"""The site's hosts as they are now: each catalog host read in parallel (one thread and one
connection each, closed after), so listing N hosts costs about the slowest one; a host that
does not answer within the bound is "down" with the reason, and the others are still listed.

`host_states` is what `iacloud hosts` shows and what the scheduler is given: each state holds
a `scheduler.Host` with the capacity the scheduler uses (the catalog's overrides win over what
the host reports) and what is placed there. `host_doctor` is the per-host part of `doctor`:
the compute side through the provider, the network side over SSH (argument lists only).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from iacloud import ssh_run
from iacloud.provider import Check, HostDown, HostReading, Provider, Registry
from iacloud.scheduler import Host, Ratios
from iacloud.secgroups import remote as secgroups_remote
from iacloud.site import SiteCatalog
from iacloud.site_hosts import CatalogHost, implicit_hosts
from iacloud.ssh_run import SshFailed, last_line

CONNECT_TIMEOUT = 5.0  # seconds to reach one host's libvirtd
READ_TIMEOUT = 20.0  # seconds for one host in all (connect and reads)
NETWORK_TOOLS = ("ip", "bridge", "nft", "dnsmasq")
T = TypeVar("T")


@dataclass(frozen=True)
class HostState:
    """One catalog host now: `host` is the scheduler's view (up, capacity, use, labels)."""

    name: str
    entry: CatalogHost
    host: Host
    reading: HostReading | None  # None when down
    overridden: tuple[str, ...] = ()  # capacity fields taken from the catalog
    seconds: float = 0.0  # how long reading it took

    @property
    def up(self) -> bool:
        return self.host.up

    def as_dict(self) -> dict[str, object]:
        h, r = self.host, self.reading
        return {
            "name": self.name,
            "uri": self.entry.uri,
            "state": "up" if h.up else "down",
            "reason": h.down_reason or None,
            "hostname": r.hostname if r else None,
            "capacity": {"vcpus": h.vcpus, "memory_mib": h.memory_mib, "disk_gib": h.disk_gib},
            "overridden": list(self.overridden),
            "use": None
            if r is None
            else {
                "vcpus": r.used_vcpus,
                "memory_mib": r.used_memory_mib,
                "disk_gib": r.used_disk_gib,
                "domains": r.domains,
                "iacloud_domains": r.iacloud_domains,
            },
            "pool": self.entry.pool,
            "labels": dict(h.labels),
            "seconds": round(self.seconds, 3),
        }


def ratios_of(entry: CatalogHost) -> Ratios:
    return Ratios(
        cpu=entry.cpu_allocation_ratio,
        ram=entry.ram_allocation_ratio,
        disk=entry.disk_allocation_ratio,
        reserved_memory_mib=entry.reserved_host_memory_mib,
    )


def state_of(name: str, entry: CatalogHost, reading: HostReading | None, why: str = "",
             seconds: float = 0.0) -> HostState:  # fmt: skip
    """A HostState from a reading (or its absence and why): the catalog's capacity overrides
    replace the host's own figures."""
    overrides = {k: getattr(entry, k) for k in ("vcpus", "memory_mib", "disk_gib")}
    overridden = tuple(k for k, v in overrides.items() if v is not None)
    real = {
        "vcpus": reading.vcpus if reading else 0,
        "memory_mib": reading.memory_mib if reading else 0,
        "disk_gib": reading.disk_gib if reading else None,
    }
    cap = {k: overrides[k] if overrides[k] is not None else real[k] for k in overrides}
    host = Host(
        name=name,
        vcpus=int(cap["vcpus"] or 0),
        memory_mib=int(cap["memory_mib"] or 0),
        disk_gib=cap["disk_gib"],
        up=reading is not None,
        down_reason="" if reading is not None else why,
        labels=dict(entry.labels),
        ratios=ratios_of(entry),
        used_vcpus=reading.used_vcpus if reading else 0,
        used_memory_mib=reading.used_memory_mib if reading else 0,
        used_disk_gib=reading.used_disk_gib if reading else 0,
    )
    return HostState(name, entry, host, reading, overridden, seconds)


def compute_provider(registry: Registry | None = None) -> type[Provider]:
    registry = registry or Registry.discover()
    for _name, cls in sorted(registry.providers.items()):
        if cls.reads_hosts:
            return cls
    raise HostDown("no installed provider reads hosts (is the libvirt provider installed?)")


def in_parallel(jobs: dict[str, Callable[[], T]], deadline: float,
                late: Callable[[str], T]) -> dict[str, T]:  # fmt: skip
    """Run each job in its own daemon thread; a job not done after `deadline` seconds is
    given up on (`late(name)` stands for its result) so one hung host holds nobody up."""
    results: dict[str, T] = {}
    lock = threading.Lock()

    def run(name: str, job: Callable[[], T]) -> None:
        value = job()
        with lock:
            results.setdefault(name, value)

    threads = [
        threading.Thread(target=run, args=(n, j), name=f"iacloud-host-{n}", daemon=True)
        for n, j in jobs.items()
    ]
    for t in threads:
        t.start()
    end = time.monotonic() + deadline
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    with lock:
        for name in jobs:
            results.setdefault(name, late(name))
        return {name: results[name] for name in jobs}


def host_states(
    site: SiteCatalog | None,
    provider: type[Provider] | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
) -> list[HostState]:
    """Every host of the site (the implicit `local` one without a [hosts] table), read in
    parallel, in catalog order."""
    entries = site.compute_hosts() if site is not None else implicit_hosts()
    cls = provider or compute_provider()

    def reader(name: str, entry: CatalogHost) -> Callable[[], HostState]:
        def read() -> HostState:
            start = time.monotonic()
            try:
                reading = cls.read_host(entry, connect_timeout)
            except HostDown as exc:
                return state_of(name, entry, None, str(exc), time.monotonic() - start)
            except Exception as exc:  # a crash in one host's read is that host's state
                why = f"reading failed: {exc}"
                return state_of(name, entry, None, why, time.monotonic() - start)
            return state_of(name, entry, reading, seconds=time.monotonic() - start)

        return read

    jobs = {name: reader(name, entry) for name, entry in entries.items()}
    late = {n: state_of(n, entries[n], None, f"timeout: no answer within {read_timeout:g} s",
                        read_timeout) for n in entries}  # fmt: skip
    return list(in_parallel(jobs, read_timeout, late.__getitem__).values())


def ssh_checks(entry: CatalogHost, timeout: float = CONNECT_TIMEOUT) -> list[Check]:
    """The network side: SSH reaches the host non-interactively, and the tools it will run
    there exist (`command -v` per tool, each an argument of its own)."""
    if entry.ssh is None:
        if entry.is_local:
            return []
        return [
            Check(
                "ssh",
                "warn",
                "no ssh target: networks cannot be set up on this host",
                'add ssh = "root@HOST" (or ssh = { target = ..., identity = ... }) to the host',
            )
        ]
    limit = max(1, timeout)
    try:
        done = ssh_run.run(entry.ssh, "true", timeout=limit + 10, connect_timeout=limit)
    except SshFailed as exc:
        return [
            Check(
                "ssh",
                "fail",
                f"ssh {entry.ssh.target}: {exc}",
                "make key login work without a prompt (BatchMode): authorized_keys on the host, "
                "its key in known_hosts, the identity/ssh_config in the catalog",
            )
        ]
    if done.returncode != 0:
        detail = last_line(done.stderr)
        return [
            Check("ssh", "fail", f"ssh {entry.ssh.target} true: exit {done.returncode}: {detail}")
        ]
    out = [Check("ssh", "ok", f"ssh {entry.ssh.target} works without a prompt")]
    probe = ["sh", "-c", 'for t; do command -v "$t" >/dev/null || echo "$t"; done', "sh"]
    try:
        missing_run = ssh_run.run(
            entry.ssh, *probe, *NETWORK_TOOLS, timeout=limit + 10, connect_timeout=limit
        )
    except SshFailed:
        missing_run = None
    if missing_run is None or missing_run.returncode != 0:
        out.append(Check("network tools", "fail", "could not check the tools over ssh"))
        return out
    missing = [t for t in missing_run.stdout.split() if t in NETWORK_TOOLS]
    if missing:
        out.append(
            Check(
                "network tools",
                "fail",
                f"missing on the host: {', '.join(missing)}",
                "apt-get install iproute2 nftables dnsmasq-base (on the host)",
            )
        )
    else:
        out.append(Check("network tools", "ok", f"{', '.join(NETWORK_TOOLS)} found"))
    out += secgroups_remote.checks(secgroups_remote.Host(entry.ssh.target, entry.ssh))
    return out


def host_doctor(
    site: SiteCatalog | None, provider: type[Provider] | None = None,
    timeout: float = CONNECT_TIMEOUT,
) -> list[Check]:  # fmt: skip
    """`doctor` for every host of the catalog's [hosts] table (none without one: the local
    host's checks are the providers' own), in parallel; check names start with the host."""
    if site is None or not site.hosts:
        return []
    cls = provider or compute_provider()

    def job(entry: CatalogHost) -> Callable[[], list[Check]]:
        def run() -> list[Check]:
            try:
                return [*cls.host_checks(entry, timeout), *ssh_checks(entry, timeout)]
            except Exception as exc:  # a check that crashes is itself a finding
                return [Check("checks", "fail", f"the check itself failed: {exc}")]

        return run

    jobs = {name: job(entry) for name, entry in site.hosts.items()}
    results = in_parallel(
        jobs,
        READ_TIMEOUT + 2 * timeout,
        lambda n: [Check("host", "fail", "the checks did not finish in time")],
    )
    return [
        Check(f"host {name}: {c.name}", c.status, c.message, c.fix)
        for name, checks in results.items()
        for c in checks
    ]
