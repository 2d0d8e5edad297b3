"""Whether bridged IPv4 reaches conntrack (br_netfilter, bridge-nf-call-iptables = 1): the
sysctl's value judged the same way on this machine and, read over SSH, on a catalog host."""

from __future__ import annotations

from pathlib import Path

BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


def problem(value: str | None) -> str | None:
    """Why bridged IPv4 cannot be tracked, given the sysctl's value (None: no such file, so
    br_netfilter is not loaded), or None when it can."""
    if value is None:
        return (
            "br_netfilter is not loaded, so bridged traffic never reaches conntrack "
            "(modprobe br_netfilter; sysctl -w net.bridge.bridge-nf-call-iptables=1)"
        )
    if value != "1":
        return (
            "net.bridge.bridge-nf-call-iptables = 0, so bridged traffic never reaches conntrack "
            "(sysctl -w net.bridge.bridge-nf-call-iptables=1)"
        )
    return None
