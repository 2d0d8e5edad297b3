#!/bin/bash
# Prepare this host for iacloud development and tests (Debian 12, run as root, no systemd).
#
#   scripts/host-setup.sh [--packages-only]
#
# Idempotent; a second run does no apt work and starts nothing that already runs.
#  1. installs the Debian packages the project needs (only the missing ones);
#  2. probes, once per boot, whether KVM actually runs a guest (a bounded boot of the cloud
#     kernel), caching the verdict in /run/iacloud/kvm-usable;
#  3. starts virtlogd and libvirtd when they are not running; when KVM is unusable, libvirtd
#     is started with /dev/kvm masked in its own mount namespace (a mode-000 character device
#     bound over it), otherwise every domain define re-probes QEMU with KVM and takes ~40 s;
#     a running libvirtd that sees /dev/kvm in a harmful way is reported (see below);
#  4. waits for qemu:///system to answer and times a throw-away domain define;
#  5. lets conntrack see bridged IPv4 (br_netfilter, bridge-nf-call-iptables = 1), which
#     security groups need for their stateful rules (`iacloud doctor`, "security groups").
# With --packages-only, only step 1 is done.
#
# Environment:
#   IACLOUD_RESTART_LIBVIRTD=1  restart a running libvirtd that is not masked this way on a
#                               host where KVM is unusable (otherwise only a warning is printed)
#   IACLOUD_REPROBE_KVM=1       ignore the cached KVM verdict and probe again
set -euo pipefail

PACKAGES=(
    libvirt-daemon-system qemu-system-x86 qemu-utils dnsmasq-base
    busybox-static syslinux syslinux-common mtools linux-image-cloud-amd64 cpio
    graphviz nftables iproute2
    conntrack                                # catalog hosts: security groups prune tracked connections
    mmdebstrap e2fsprogs fdisk               # scripts/build-cloud-image.sh (fdisk: sfdisk)
    openssh-client                           # e2e: log in to real-image guests
    libvirt-dev pkg-config gcc python3-dev   # pip builds libvirt-python from source
    python3-venv                             # make's 'python3 -m venv'
    postgresql-15 libpq5                     # PostgreSQL state: the tests' own server; psycopg's libpq
    git curl jq                              # tests of examples/ci (git repos, the GitLab API calls)
    openssh-server                           # scripts/lab-hosts.sh: each lab host's own sshd
    chromium                                 # the dashboard's browser tests (Playwright drives it)
)
STATE_DIR=/run/iacloud
KVM_CACHE=$STATE_DIR/kvm-usable
URI=qemu:///system

say() { echo "host-setup: $*"; }
warn() { echo "host-setup: WARNING: $*" >&2; }
die() { echo "host-setup: ERROR: $*" >&2; exit 1; }

packages_only=no
case "${1:-}" in
    "") ;;
    --packages-only) packages_only=yes ;;
    *) echo "usage: $0 [--packages-only]" >&2; exit 2 ;;
esac

[ "$(id -u)" -eq 0 ] || die "must run as root"

# libvirtd and virtlogd outlive this script: they must not inherit its open files (the lock of
# `flock LOCK scripts/restart-libvirtd.sh` would otherwise stay held by the new libvirtd)
for fd in /proc/$$/fd/*; do
    fd=${fd##*/}
    [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null || true
done

# ------------------------------------------------------------------ 1. packages
missing=()
for p in "${PACKAGES[@]}"; do
    st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$st" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing: ${missing[*]}"
    # iacloud's tests start their own PostgreSQL in a temporary directory: the package need
    # not create (and start) a system-wide 'main' cluster.
    mkdir -p /etc/postgresql-common/createcluster.d
    [ -e /etc/postgresql-common/createcluster.d/iacloud.conf ] ||
        echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/iacloud.conf
    export DEBIAN_FRONTEND=noninteractive
    # packages must not start their daemons (an sshd on every address, a PostgreSQL cluster):
    # the project starts what it needs itself, where it needs it
    policy=/usr/sbin/policy-rc.d
    made_policy=no
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=yes
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" >/dev/null
    if [ "$made_policy" = yes ]; then rm -f "$policy"; trap - EXIT; fi
    say "packages installed"
fi
[ "$packages_only" = no ] || exit 0

# ------------------------------------------------------------------ helpers
# pids in this network namespace whose command name is exactly $1 (no dependency on procps);
# daemons of other namespaces (the lab hosts of scripts/lab-hosts.sh) are not ours to manage
pids_of() {
    local d ours
    ours=$(stat -L -c %i /proc/self/ns/net)
    for d in /proc/[0-9]*; do
        [ "$(cat "$d/comm" 2>/dev/null)" = "$1" ] || continue
        [ "$(stat -L -c %i "$d/ns/net" 2>/dev/null)" = "$ours" ] && echo "${d#/proc/}"
    done
    return 0
}

# "yes" or "no": does a KVM guest actually run here? A real-mode-only probe is not enough
# (on nested/PVM hosts real mode works but protected mode fails with an emulation error and
# the vCPU stalls), so boot the cloud kernel without a root fs: with panic=-1 and -no-reboot
# QEMU exits by itself once the kernel panics, well under a second with working KVM.
probe_kvm() {
    local kernel
    if [ ! -c /dev/kvm ] || [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
        echo "no /dev/kvm missing or not accessible"; return
    fi
    kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$kernel" ] || { echo "no no kernel in /boot to probe with"; return; }
    local start rc ms
    start=$(date +%s%N)
    set +e
    timeout -k 2 10 qemu-system-x86_64 -accel kvm -machine q35 -m 128 -nodefaults \
        -display none -monitor none -serial none -parallel none -no-reboot \
        -kernel "$kernel" -append "console=ttyS0 panic=-1 quiet" >/dev/null 2>&1 </dev/null
    rc=$?
    set -e
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    if [ $rc -eq 0 ]; then
        echo "yes a KVM guest booted the kernel to its panic in ${ms} ms"
    elif [ $rc -ge 124 ]; then
        echo "no a KVM guest hung and was killed after ${ms} ms"
    else
        echo "no qemu -accel kvm failed with exit status $rc after ${ms} ms"
    fi
}

boot_id=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown)
kvm_verdict() {
    mkdir -p "$STATE_DIR"
    if [ -z "${IACLOUD_REPROBE_KVM:-}" ] && [ -f "$KVM_CACHE" ] \
        && [ "$(sed -n 2p "$KVM_CACHE")" = "boot_id $boot_id" ]; then
        KVM_USABLE=$(sed -n 1p "$KVM_CACHE")
        KVM_REASON="$(sed -n 's/^reason //p' "$KVM_CACHE"); cached in $KVM_CACHE"
        return
    fi
    local r
    r=$(probe_kvm)
    KVM_USABLE=${r%% *}
    KVM_REASON=${r#* }
    printf '%s\nboot_id %s\nreason %s\n' "$KVM_USABLE" "$boot_id" "$KVM_REASON" > "$KVM_CACHE.tmp"
    mv -f "$KVM_CACHE.tmp" "$KVM_CACHE"
}

# How /dev/kvm looks to the libvirtd with pid $1 (in its own mount namespace):
#   real       the host's KVM device: fine when KVM works, the ~40 s define symptom when not
#   masked     absent, or a character device nobody but root may open (what start_libvirtd
#              makes): libvirt sees no usable KVM, keeps its capability cache, uses TCG
#   null-mask  a character device the QEMU user may open, e.g. /dev/null bound over it:
#              libvirt 9 counts that as usable KVM, the QEMU probe fails, the capability cache
#              is thrown away on every lookup: every define takes ~40 s as well
#   file-mask  a regular file or directory bound over it: defines are fast but every domain
#              start fails ("Unable to move /run/libvirt/qemu/N-name.kvm mount to /dev/kvm")
libvirtd_kvm_view() {
    local f="/proc/$1/root/dev/kvm" theirs ours
    [ -e "$f" ] || { echo masked; return; }
    theirs=$(stat -L -c '%F %t:%T' "$f" 2>/dev/null || true)
    ours=$(stat -L -c '%F %t:%T' /dev/kvm 2>/dev/null || true)
    if [ -n "$ours" ] && [ "$theirs" = "$ours" ]; then echo real
    elif [ ! -c "$f" ]; then echo file-mask
    elif [ "$(stat -L -c %a "$f")" = 0 ]; then echo masked
    else echo null-mask
    fi
}

KVM_MASK=$STATE_DIR/kvm-mask   # a char device node (1:3) with mode 000
start_libvirtd() {
    if [ "$KVM_USABLE" = yes ] || [ ! -e /dev/kvm ]; then
        libvirtd -d
    else
        mkdir -p "$STATE_DIR"
        [ -c "$KVM_MASK" ] || { rm -f "$KVM_MASK"; mknod -m 000 "$KVM_MASK" c 1 3; }
        unshare -m --propagation private \
            sh -c "mount --bind '$KVM_MASK' /dev/kvm && exec libvirtd -d"
    fi
}
MASKED_START="mknod -m 000 $KVM_MASK c 1 3; unshare -m --propagation private sh -c 'mount --bind $KVM_MASK /dev/kvm && exec libvirtd -d'"

# ------------------------------------------------------------------ 2. KVM verdict
kvm_verdict
say "KVM usable: $KVM_USABLE ($KVM_REASON)"

# ------------------------------------------------------------------ 3. daemons
if [ -z "$(pids_of virtlogd)" ]; then
    virtlogd -d
    say "started virtlogd"
fi

slow_defines=no
lv=$(pids_of libvirtd); lv=${lv%%$'\n'*}   # the first one (no head: SIGPIPE under pipefail)
if [ -z "$lv" ]; then
    start_libvirtd
    if [ "$KVM_USABLE" = yes ]; then say "started libvirtd"; else say "started libvirtd with /dev/kvm masked"; fi
elif [ "$KVM_USABLE" = no ]; then
    view=$(libvirtd_kvm_view "$lv")
    if [ "$view" != masked ] && [ "${IACLOUD_RESTART_LIBVIRTD:-}" = 1 ]; then
        say "restarting libvirtd (pid $lv, /dev/kvm: $view) with /dev/kvm masked"
        kill "$lv"
        for _ in $(seq 1 100); do [ -d "/proc/$lv" ] || break; sleep 0.1; done
        [ -d "/proc/$lv" ] && die "libvirtd (pid $lv) did not exit"
        start_libvirtd
    elif [ "$view" = real ] || [ "$view" = null-mask ]; then
        slow_defines=yes
        what="a real /dev/kvm"
        [ "$view" = null-mask ] && what="/dev/kvm masked by a device QEMU may open (e.g. /dev/null)"
        warn "libvirtd (pid $lv) runs with $what, but KVM guests do not run on this host.
  libvirt then takes KVM for usable, its QEMU capability probe fails, and it probes again on
  every lookup: every 'virsh define' (and iacloud apply) takes about 40 s.
  Fix: rerun with IACLOUD_RESTART_LIBVIRTD=1, or stop it and start it with /dev/kvm masked:
    kill $lv; $MASKED_START"
    elif [ "$view" = file-mask ]; then
        warn "libvirtd (pid $lv) runs with a regular file bound over /dev/kvm: every domain start
  fails with 'Unable to move /run/libvirt/qemu/N-name.kvm mount to /dev/kvm: Invalid argument'.
  Fix: rerun with IACLOUD_RESTART_LIBVIRTD=1, or stop it and start it with /dev/kvm masked:
    kill $lv; $MASKED_START"
    fi
fi

# ------------------------------------------------------------------ 4. check
ok=no
for _ in $(seq 1 60); do
    if timeout 5 virsh -c "$URI" version >/dev/null 2>&1; then ok=yes; break; fi
    sleep 0.5
done
[ "$ok" = yes ] || die "libvirtd does not answer on $URI after 30 s"

if [ "$slow_defines" = no ]; then
    name=iacloud-host-setup-probe-$$
    xml=$(mktemp)
    trap 'rm -f "$xml"; virsh -q -c "$URI" undefine "$name" >/dev/null 2>&1 || true' EXIT
    cat > "$xml" <<XML
<domain type='qemu'>
  <name>$name</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
</domain>
XML
    t=$(date +%s%N)
    if timeout 120 virsh -q -c "$URI" define "$xml" >/dev/null; then
        ms=$(( ($(date +%s%N) - t) / 1000000 ))
        virsh -q -c "$URI" undefine "$name" >/dev/null || true
        if [ "$ms" -gt 5000 ]; then
            warn "a domain define took ${ms} ms (expected well under a second): libvirtd may be
  probing QEMU with KVM (see 'KVM usable' above) or was restarted meanwhile"
        fi
        say "libvirt ready on $URI (domain define ${ms} ms)"
    else
        warn "test domain define failed on $URI (was libvirtd restarted meanwhile?)"
    fi
else
    say "libvirt answers on $URI (defines will be slow: see warning)"
fi

# ------------------------------------------------------------------ 5. bridged conntrack
# Security groups filter bridged traffic statefully, with conntrack reached through
# br_netfilter, which every kernel has (nf_conntrack_bridge is missing from some, as here).
# A host firewall that drops forwarded packets then drops bridged ones too (see the doctor).
BRIDGE_NF=/proc/sys/net/bridge/bridge-nf-call-iptables
[ -e "$BRIDGE_NF" ] || modprobe br_netfilter 2>/dev/null || true
if [ -e "$BRIDGE_NF" ]; then
    if [ "$(cat "$BRIDGE_NF")" != 1 ]; then
        echo 1 > "$BRIDGE_NF"
        say "net.bridge.bridge-nf-call-iptables = 1 (security groups need bridged conntrack)"
    fi
else
    warn "br_netfilter is not available: security groups cannot be enforced on this host"
fi
