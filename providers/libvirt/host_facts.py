"""What a libvirt host has and what is placed on it, read for the scheduler in a few bulk calls.

Capacity is the host's own (`virNodeGetInfo`, the pool's capacity); use counts every defined
domain, running or not, as Nova counts a stopped instance against its host: its memory and
vCPUs come back when it starts. One `getAllDomainStats` call reads every domain's sizes, so a
host with hundreds of guests costs the same few round trips as an empty one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import libvirt

from iacloud.scheduler import Host, Ratios

from .connection import NO_POOL, failing, is_error

_GIB = 1 << 30


@dataclass(frozen=True)
class HostFacts:
    hostname: str
    vcpus: int
    memory_mib: int
    disk_gib: int | None  # the pool's capacity; None while the pool does not exist yet
    used_vcpus: int
    used_memory_mib: int
    used_disk_gib: int  # the pool's allocation: what its volumes really take
    domains: int

    def as_host(
        self,
        name: str,
        labels: dict[str, str] | None = None,
        ratios: Ratios | None = None,
    ) -> Host:
        return Host(
            name=name,
            vcpus=self.vcpus,
            memory_mib=self.memory_mib,
            disk_gib=self.disk_gib,
            labels=labels or {},
            ratios=ratios or Ratios(),
            used_vcpus=self.used_vcpus,
            used_memory_mib=self.used_memory_mib,
            used_disk_gib=self.used_disk_gib,
        )


def read_host_facts(conn: libvirt.virConnect, pool: str | None) -> HostFacts:
    """Capacity and use of the host behind `conn`; `pool` is where its disks would go."""
    with failing("reading the host's capacity"):
        _model, memory_mib, cpus, *_ = conn.getInfo()
        hostname = conn.getHostname()
        stats = conn.getAllDomainStats(
            libvirt.VIR_DOMAIN_STATS_BALLOON | libvirt.VIR_DOMAIN_STATS_VCPU
        )
    used_vcpus = used_kib = 0
    for dom, values in stats:
        vcpus = values.get("vcpu.maximum") or values.get("vcpu.current")
        kib = values.get("balloon.maximum")
        if vcpus is None or kib is None:  # an inactive domain: its definition has the sizes
            with failing(f"reading domain {dom.name()}"):
                _state, max_kib, _mem, nr_vcpus, _cpu = dom.info()
            vcpus, kib = vcpus or nr_vcpus, kib or max_kib
        used_vcpus += int(vcpus)
        used_kib += int(kib)
    disk: int | None = None
    used_disk = 0
    if pool is not None:
        try:
            handle = conn.storagePoolLookupByName(pool)
            _state, capacity, allocation, _available = handle.info()
            disk, used_disk = capacity // _GIB, math.ceil(allocation / _GIB)
        except libvirt.libvirtError as exc:
            if not is_error(exc, NO_POOL):
                raise
    return HostFacts(
        hostname=hostname,
        vcpus=cpus,
        memory_mib=memory_mib,
        disk_gib=disk,
        used_vcpus=used_vcpus,
        used_memory_mib=math.ceil(used_kib / 1024),
        used_disk_gib=used_disk,
        domains=len(stats),
    )
