#!/bin/bash
# Restart libvirtd for fault tests and benches: stop the running one (SIGTERM, as a service
# restart does) and start it again through host-setup.sh, exactly as that script starts it
# (with /dev/kvm masked in its own mount namespace when KVM is unusable), waiting until it
# answers. Guests keep running meanwhile; libvirtd takes them back when it starts.
# Only run it while holding the host-test lock: others' runs depend on libvirtd.
#
#   scripts/restart-libvirtd.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" -eq 0 ] || { echo "restart-libvirtd: must run as root" >&2; exit 1; }

# the libvirtd of this network namespace: the lab hosts' (scripts/lab-hosts.sh) are left alone
pid=""
ours=$(stat -L -c %i /proc/self/ns/net)
for d in /proc/[0-9]*; do
    [ "$(cat "$d/comm" 2>/dev/null)" = libvirtd ] || continue
    if [ "$(stat -L -c %i "$d/ns/net" 2>/dev/null)" = "$ours" ]; then pid=${d#/proc/}; break; fi
done
if [ -n "$pid" ]; then
    kill "$pid"
    for _ in $(seq 1 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    if [ -d "/proc/$pid" ]; then
        kill -9 "$pid"
        for _ in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    fi
    [ -d "/proc/$pid" ] && { echo "restart-libvirtd: libvirtd (pid $pid) did not exit" >&2; exit 1; }
fi
bash "$here/host-setup.sh" >/dev/null
