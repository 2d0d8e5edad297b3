"""Host checks for the netlink provider (`iacloud doctor`): privileges, dnsmasq, nft, the bridge
firewall hook (both ways: a host firewall that sees bridged traffic, and security groups that
need it to) and 802.1Q support. Every check only reads (/proc, /sys, /lib/modules, `--version`
of the two programs): the doctor changes nothing on the host."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from iacloud.provider import Check

CAPABILITIES = {12: "CAP_NET_ADMIN", 21: "CAP_SYS_ADMIN"}
STATUS = Path("/proc/self/status")
BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
VLAN_PROC = Path("/proc/net/vlan")  # made by the 8021q code, loaded or built in
MODULES = Path("/lib/modules")
_SBIN = "/usr/sbin:/sbin"  # where Debian puts both programs; not on a user's PATH


def effective_capabilities() -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def find(program: str) -> str | None:
    return shutil.which(program) or shutil.which(program, path=_SBIN)


def version(path: str) -> str:
    """The first line of `PROGRAM --version` (a bounded run), or why there is none."""
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"version unknown: {exc}"
    lines = (out.stdout or out.stderr).strip().splitlines()
    # dnsmasq follows its version with a copyright on the same line, two spaces apart
    return lines[0].split("  ")[0] if lines else "version unknown"


def privileges() -> Check:
    caps = effective_capabilities()
    missing = [name for bit, name in CAPABILITIES.items() if not caps >> bit & 1]
    if not missing:
        who = "root" if os.geteuid() == 0 else "a user with CAP_NET_ADMIN and CAP_SYS_ADMIN"
        return Check("netlink privileges", "ok", f"running as {who}")
    return Check(
        "netlink privileges",
        "fail",
        f"missing {' and '.join(missing)}: bridges, veths and addresses need CAP_NET_ADMIN, "
        "named network namespaces (mounted under /run/netns) need CAP_SYS_ADMIN",
        "run iacloud as root (sudo iacloud ...)",
    )


def dnsmasq() -> Check:
    path = find("dnsmasq")
    if path is None:
        return Check(
            "dnsmasq",
            "fail",
            "dnsmasq not found: networks with dhcp = true (the default) cannot be created",
            "apt-get install dnsmasq-base",
        )
    if "no-inotify" in compile_options(path):
        return Check(
            "dnsmasq",
            "warn",
            f"{path}: {version(path)} is built without inotify: networks with dns_domain "
            "would not see servers' names come and go",
            "install a dnsmasq built with inotify (Debian's dnsmasq-base is)",
        )
    return Check("dnsmasq", "ok", f"{path}: {version(path)}")


def compile_options(path: str) -> list[str]:
    """dnsmasq's "Compile time options:" words (from a bounded `--version` run)."""
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    for line in out.splitlines():
        if line.startswith("Compile time options:"):
            return line.split(":", 1)[1].split()
    return []


def nft() -> Check:
    path = find("nft")
    if path is None:
        return Check(
            "nftables",
            "warn",
            "nft not found: routers with external.snat = true, security groups and floating "
            "IPs cannot be created",
            "apt-get install nftables",
        )
    return Check("nftables", "ok", f"{path}: {version(path)}")


def bridge_netfilter() -> Check:
    try:
        value = BRIDGE_NF.read_text().strip()
    except OSError:
        return Check(
            "bridge netfilter",
            "ok",
            "br_netfilter is not active: frames bridged on iacloud networks bypass the host "
            "firewall",
        )
    if value != "1":
        return Check(
            "bridge netfilter",
            "ok",
            "net.bridge.bridge-nf-call-iptables = 0: frames bridged on iacloud networks bypass "
            "the host firewall",
        )
    return Check(
        "bridge netfilter",
        "warn",
        "br_netfilter is active and net.bridge.bridge-nf-call-iptables = 1: frames bridged "
        "between guests and namespaces on iacloud networks pass the host's iptables/nftables "
        "forward rules, so a host firewall that drops forwarded traffic (Docker's DROP policy, "
        "for one) also drops traffic inside iacloud networks",
        "accept forwarded traffic on the iacb* bridges in the host firewall; "
        "sysctl -w net.bridge.bridge-nf-call-iptables=0 stops it too, but then security "
        "groups cannot be enforced",
    )


def security_groups() -> Check:
    """Stateful filtering of bridged traffic needs conntrack to see it: this kernel's bridge
    family has none of its own unless nf_conntrack_bridge is built, and iacloud uses the path
    every kernel has, br_netfilter passing bridged IPv4 through the inet hooks."""
    try:
        value = BRIDGE_NF.read_text().strip()
    except OSError:
        value = None
    if value == "1":
        refused = ruleset_refused()
        if refused:
            return Check(
                "security groups",
                "fail",
                f"this kernel or nft refuses iacloud's security group ruleset: {refused}",
                "a kernel with nf_tables for the bridge and inet families, conntrack zones and "
                "the ct expression (CONFIG_NF_TABLES_BRIDGE, CONFIG_NF_CONNTRACK_ZONES, "
                "CONFIG_NFT_CT), and nftables >= 0.9",
            )
        return Check(
            "security groups",
            "ok",
            "bridged IPv4 reaches conntrack through br_netfilter (bridge-nf-call-iptables = 1) "
            "and the kernel accepts iacloud's ruleset (nft -c): security groups are enforced "
            "statefully in the nftables tables 'bridge iacloud' and 'inet iacloud'",
        )
    why = "br_netfilter is not loaded" if value is None else "bridge-nf-call-iptables = 0"
    return Check(
        "security groups",
        "warn",
        f"{why}, so conntrack never sees bridged traffic: a stack whose NICs or ports list "
        "security_groups fails to apply (NICs without groups are not affected)",
        "modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-iptables=1 (keep both in "
        "/etc/modules-load.d/ and /etc/sysctl.d/); the host firewall then sees bridged traffic "
        "too (see 'bridge netfilter')",
    )


def ruleset_refused() -> str | None:
    """nft's complaint about a sample of iacloud's ruleset, checked by the kernel without
    being applied (`nft -c`, which changes nothing), or None when it is accepted (or nft is
    missing: the nftables check says so)."""
    path = find("nft")
    if path is None:
        return None
    from iacloud.secgroups.compiler import Group, Member, compile_ruleset
    from iacloud.secgroups.rules import Rule

    group = "sg-0000000000"
    rules = (
        Rule(direction="ingress", protocol="tcp", port_min=22, remote_cidr="198.18.0.0/15"),
        Rule(direction="ingress", protocol="icmp", remote_group="self"),
    )
    member = Member("iacbdoctor", "52:54:00:00:00:01", "iacndoctor", ("198.18.0.2",), (group,))
    text = compile_ruleset({group: Group(group, rules)}, [member]).text
    try:
        out = subprocess.run(
            [path, "-c", "-f", "-"], input=text, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if out.returncode == 0:
        return None
    lines = [line for line in out.stderr.splitlines() if "Error" in line]
    return (lines[0] if lines else out.stderr.strip())[:300] or f"exit status {out.returncode}"


def vlan_available(release: str) -> str | None:
    """How this kernel offers 802.1Q ("loaded", "module"), or None."""
    if VLAN_PROC.exists():
        return "loaded"
    for index in ("modules.builtin", "modules.dep"):
        try:
            text = (MODULES / release / index).read_text()
        except OSError:
            continue
        if "/8021q.ko" in text:
            return "module"
    return None


def vlan() -> Check:
    release = platform.release()
    found = vlan_available(release)
    if found == "loaded":
        return Check("802.1Q VLAN", "ok", "802.1Q support is in the running kernel")
    if found == "module":
        return Check(
            "802.1Q VLAN", "ok", "the 8021q module is installed (the kernel loads it on first use)"
        )
    return Check(
        "802.1Q VLAN",
        "warn",
        f"this kernel ({release}) has no 802.1Q support (8021q is neither loaded nor installed "
        "as a module): networks with segment = { vlan = ... } fail to create; flat and VXLAN "
        "networks work",
        f"install the modules of kernel {release} and run modprobe 8021q, or boot a kernel "
        "built with CONFIG_VLAN_8021Q",
    )


def checks() -> list[Check]:
    return [privileges(), dnsmasq(), nft(), bridge_netfilter(), security_groups(), vlan()]
