#!/bin/bash
# A lab of several "hosts" on this one machine, for the many-hosts work (issue #16).
#
#   scripts/lab-hosts.sh up [N]     start hosts h1..hN (default 2, at most 4); idempotent
#   scripts/lab-hosts.sh down       stop every lab host and remove all its objects
#   scripts/lab-hosts.sh status     one line per host: name, address, libvirtd, sshd
#   scripts/lab-hosts.sh env        shell assignments for tests (LAB_KEY, LAB_KNOWN_HOSTS, ...)
#
# Each host is a network namespace plus a mount namespace of its own:
#  - network namespace iaclab-hN, joined to the underlay bridge iaclab0 (in this namespace, as
#    the controller's leg, 198.19.250.1/24) by a veth pair; the host is 198.19.250.1N/24;
#  - a UTS namespace (hostname iaclab-hN) and a mount namespace in which /etc/libvirt,
#    /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt, /var/lib/iacloud (its pools: no
#    storage is shared between hosts) and /run are the host's own directories under
#    $LAB_DIR/hN, and /dev/kvm is masked when KVM is unusable (as scripts/host-setup.sh does);
#  - its own virtlogd, libvirtd and sshd (listening on the host's underlay address only, root
#    by key only, the key made here and kept in $LAB_DIR).
# From this namespace a host is reached the way a real one would be: libvirt through
# qemu+libssh2://root@198.19.250.1N/system (keyfile and known_hosts are lab files, so nothing
# lands in root's ~/.ssh), its network side through `ssh -F $LAB_DIR/ssh_config hN`.
# The lab touches only objects named iaclab*, the $LAB_DIR tree and processes it started.
set -euo pipefail

LAB_DIR=${IACLOUD_LAB_DIR:-/var/lib/iacloud-lab}
BRIDGE=iaclab0
NET=198.19.250
MAX_HOSTS=4
KVM_CACHE=/run/iacloud/kvm-usable

say() { echo "lab-hosts: $*"; }
die() { echo "lab-hosts: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"

# the daemons started here outlive this script: they must not inherit its open files (a lock
# held by a caller, `flock LOCK scripts/lab-hosts.sh up`, would otherwise stay held for as
# long as the lab runs)
for fd in /proc/$$/fd/*; do
    fd=${fd##*/}
    [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null || true
done
for tool in libvirtd virtlogd sshd ssh-keygen ip unshare; do
    command -v "$tool" >/dev/null || die "$tool not found: run scripts/host-setup.sh first"
done

netns_of() { echo "iaclab-$1"; }

# pids in the lab host's network namespace whose command name is exactly $2
pids_in() {
    local ns d want
    ns=$(netns_of "$1")
    [ -e "/run/netns/$ns" ] || return 0
    want=$(stat -L -c %i "/run/netns/$ns")
    for d in /proc/[0-9]*; do
        [ "$(cat "$d/comm" 2>/dev/null)" = "$2" ] || continue
        [ "$(stat -L -c %i "$d/ns/net" 2>/dev/null)" = "$want" ] && echo "${d#/proc/}"
    done
    return 0
}

lab_key() {
    mkdir -p "$LAB_DIR"
    chmod 700 "$LAB_DIR"
    [ -f "$LAB_DIR/id_ed25519" ] || ssh-keygen -q -t ed25519 -N "" -C iacloud-lab -f "$LAB_DIR/id_ed25519"
    : >>"$LAB_DIR/known_hosts"
}

underlay() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
        ip addr add "$NET.1/24" dev "$BRIDGE"
    fi
    ip link set "$BRIDGE" up
}

# the host's private directories, made once; libvirt's config files come from the package's,
# without any domain, network or pool of the main host
host_dirs() {
    local d=$LAB_DIR/$1
    mkdir -p "$d"/{lib,log/qemu,cache,run,ssh,iacloud}
    if [ ! -d "$d/etc" ]; then
        mkdir -p "$d/etc.new/qemu/networks/autostart" "$d/etc.new/storage" "$d/etc.new/secrets"
        cp -p /etc/libvirt/*.conf "$d/etc.new/"
        cp -rp /etc/libvirt/nwfilter "$d/etc.new/" 2>/dev/null || true
        chmod 700 "$d/etc.new/secrets"
        mv "$d/etc.new" "$d/etc"
    fi
    mkdir -p "$d/lib/images"
    [ -f "$d/ssh/ssh_host_ed25519_key" ] ||
        ssh-keygen -q -t ed25519 -N "" -C "iacloud-lab-$1" -f "$d/ssh/ssh_host_ed25519_key"
    cp "$LAB_DIR/id_ed25519.pub" "$d/ssh/authorized_keys"
    chmod 600 "$d/ssh/authorized_keys"
    cat >"$d/ssh/sshd_config" <<EOF
ListenAddress $2
HostKey $d/ssh/ssh_host_ed25519_key
AuthorizedKeysFile $d/ssh/authorized_keys
PidFile /run/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
X11Forwarding no
AllowTcpForwarding no
Subsystem sftp internal-sftp
EOF
}

host_net() {
    local h=$1 addr=$2 ns veth
    ns=$(netns_of "$h")
    veth="iaclab-$h"
    [ -e "/run/netns/$ns" ] || ip netns add "$ns"
    if ! ip link show "$veth" >/dev/null 2>&1; then
        ip link add "$veth" type veth peer name eth0 netns "$ns"
        ip link set "$veth" master "$BRIDGE" up
    fi
    ip -n "$ns" link set lo up
    ip -n "$ns" addr replace "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
}

kvm_unusable() {
    [ -e /dev/kvm ] || return 1
    [ "$(sed -n 1p "$KVM_CACHE" 2>/dev/null)" = yes ] && return 1
    return 0
}

# the daemons, started inside the host's namespaces; they keep the mount namespace alive
host_daemons() {
    local h=$1 d=$LAB_DIR/$1 ns mask=""
    ns=$(netns_of "$h")
    if kvm_unusable; then
        mask=$LAB_DIR/kvm-mask
        [ -c "$mask" ] || { rm -f "$mask"; mknod -m 000 "$mask" c 1 3; }
    fi
    if [ -n "$(pids_in "$h" libvirtd)" ] && [ -n "$(pids_in "$h" sshd)" ]; then
        return 0
    fi
    # a half-started host (one daemon died) is restarted whole: its mount namespace is gone
    # with the first daemon that held it only if all exited, so stop what is left first
    host_stop "$h"
    mkdir -p "$d/run/sshd"
    ip netns exec "$ns" unshare -m -u --propagation private /bin/sh -ec '
        d=$1; mask=$2; h=$3
        hostname "iaclab-$h"
        mount --bind "$d/etc" /etc/libvirt
        mount --bind "$d/lib" /var/lib/libvirt
        mount --bind "$d/log" /var/log/libvirt
        mount --bind "$d/cache" /var/cache/libvirt
        mount --bind "$d/run" /run
        mkdir -p /var/lib/iacloud
        mount --bind "$d/iacloud" /var/lib/iacloud
        mkdir -p /run/libvirt /run/sshd
        [ -z "$mask" ] || mount --bind "$mask" /dev/kvm
        virtlogd -d
        libvirtd -d
        /usr/sbin/sshd -f "$d/ssh/sshd_config"
    ' lab "$d" "$mask" "$h"
}

host_stop() {
    local h=$1 p name
    for name in sshd libvirtd virtlogd; do
        for p in $(pids_in "$h" "$name"); do kill "$p" 2>/dev/null || true; done
    done
    for _ in $(seq 1 50); do
        [ -z "$(pids_in "$h" libvirtd)$(pids_in "$h" virtlogd)$(pids_in "$h" sshd)" ] && return 0
        sleep 0.1
    done
    for name in sshd libvirtd virtlogd; do
        for p in $(pids_in "$h" "$name"); do kill -9 "$p" 2>/dev/null || true; done
    done
}

# guests of a lab host run as qemu processes in its network namespace
host_guests_kill() {
    local p
    for p in $(pids_in "$1" qemu-system-x86); do kill -9 "$p" 2>/dev/null || true; done
}

ssh_config() {
    local i
    {
        for i in $(seq 1 "$1"); do
            cat <<EOF
Host h$i
    HostName $NET.1$i
    User root
    IdentityFile $LAB_DIR/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $LAB_DIR/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 5
EOF
        done
    } >"$LAB_DIR/ssh_config"
}

known_host() {
    local h=$1 addr=$2 key
    key=$(cut -d' ' -f1-2 "$LAB_DIR/$h/ssh/ssh_host_ed25519_key.pub")
    grep -v "^$addr " "$LAB_DIR/known_hosts" >"$LAB_DIR/known_hosts.new" || true
    echo "$addr $key" >>"$LAB_DIR/known_hosts.new"
    mv "$LAB_DIR/known_hosts.new" "$LAB_DIR/known_hosts"
}

wait_host() {
    local h=$1 addr=$2
    for _ in $(seq 1 100); do
        if [ -S "$LAB_DIR/$h/run/libvirt/libvirt-sock" ] &&
            timeout 5 ssh -F "$LAB_DIR/ssh_config" "$h" true 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    die "host $h ($addr) did not answer on ssh and libvirt within 20 s"
}

cmd_up() {
    local n=${1:-2} i h addr
    [[ "$n" =~ ^[1-9]$ ]] && [ "$n" -le "$MAX_HOSTS" ] || die "N must be 1..$MAX_HOSTS"
    lab_key
    underlay
    ssh_config "$n"
    for i in $(seq 1 "$n"); do
        h=h$i
        addr=$NET.1$i
        host_dirs "$h" "$addr"
        host_net "$h" "$addr"
        known_host "$h" "$addr"
        host_daemons "$h"
    done
    for i in $(seq 1 "$n"); do wait_host "h$i" "$NET.1$i"; done
    say "$n host(s) up: $(for i in $(seq 1 "$n"); do printf 'h%s=%s ' "$i" "$NET.1$i"; done)"
}

cmd_down() {
    local ns h
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^iaclab-h[0-9]+$' || true); do
        h=${ns#iaclab-}
        host_guests_kill "$h"
        host_stop "$h"
        ip netns del "$ns"
        ip link del "iaclab-$h" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    # the hosts' disks and definitions go with them: a lab is made anew each time
    rm -rf "$LAB_DIR"
    say "down"
}

cmd_status() {
    local ns h
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^iaclab-h[0-9]+$' || true); do
        h=${ns#iaclab-}
        printf '%s %s.1%s libvirtd=%s sshd=%s\n' "$h" "$NET" "${h#h}" \
            "$(pids_in "$h" libvirtd | tr '\n' ' ' | sed 's/ $//')" \
            "$(pids_in "$h" sshd | tr '\n' ' ' | sed 's/ $//')"
    done
}

cmd_env() {
    echo "LAB_DIR=$LAB_DIR"
    echo "LAB_KEY=$LAB_DIR/id_ed25519"
    echo "LAB_KNOWN_HOSTS=$LAB_DIR/known_hosts"
    echo "LAB_SSH_CONFIG=$LAB_DIR/ssh_config"
    echo "LAB_NET=$NET.0/24"
}

case "${1:-}" in
    up) cmd_up "${2:-2}" ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) echo "usage: $0 up [N] | down | status | env" >&2; exit 2 ;;
esac
