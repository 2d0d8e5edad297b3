#!/bin/bash
# Build a small Debian 12 (bookworm) cloud image offline from Debian's own packages.
#
#   scripts/build-cloud-image.sh OUTPUT.qcow2
#
# What is in it: linux-image-cloud-amd64 with an initramfs-tools initrd, systemd, udev,
# cloud-init 22.4.2 (NoCloud datasource, see scripts/cloud-image/99_iacloud.cfg), netplan.io
# rendering for systemd-networkd, openssh-server (host keys made at first boot by cloud-init,
# none in the image), qemu-guest-agent (started by Debian's udev rule when the virtio channel
# org.qemu.guest_agent.0 appears), sudo, iproute2. No password for any account: log in with a key
# given through cloud-init (default user "debian", passwordless sudo, as Debian's images).
# Interface names are predictable (ens2 on pc, enp1s0 on q35), as in users' images.
#
# How, without mounting any disk image: mmdebstrap (root mode: it mounts /proc, /sys, /dev in its
# chroot while dpkg runs) builds the root directory from the host's apt
# sources (the bookworm entries of /etc/apt/sources.list{,.d}); mkfs.ext4 -d turns it into the
# root partition; the kernel and initrd go onto a FAT boot partition with mtools and syslinux;
# sfdisk writes the MBR partition table, dd puts the partitions in place and syslinux's MBR
# code into the first sector; qemu-img converts the 2 GiB raw disk to a compressed qcow2. The
# firmware boots it the standard way: MBR -> active FAT partition -> syslinux -> kernel with
# root=UUID=... console=ttyS0 (so systemd's and cloud-init's messages reach the serial console).
# The boot partition is not mounted in the guest: a kernel upgrade inside the guest installs
# into /boot but keeps booting the image's kernel.
#
# Cached like scripts/build-image.sh (scripts/lib/image-cache.sh): OUTPUT.stamp holds a hash of
# the inputs (this script, the files in scripts/cloud-image, the syslinux and mtools versions);
# the image is rebuilt only when it changes. A newer Debian point release does not trigger a rebuild: `rm OUTPUT.stamp` does.
#
# Measured on the 2-core development host: ~65 s build (50 s of it mmdebstrap: download and dpkg),
# image 181 MB compressed qcow2, 2 GiB virtual, 425 MiB used in the root file system. First boot
# under TCG emulation (-smp 1, 512 MiB-1 GiB) reaches cloud-init's "finished" line at 39-48 s of
# uptime on pc (seed on IDE) and q35 (seed on virtio-scsi: the cloud kernel has no AHCI driver).
# Like Debian's and Ubuntu's images, the boot waits for systemd-networkd-wait-online: a NIC that
# never gets an address (no DHCP server answering) delays it by that unit's 120 s timeout.
# Needs root (mmdebstrap's root mode) and the packages scripts/host-setup.sh installs.
set -euo pipefail

usage() { echo "usage: $0 OUTPUT.qcow2" >&2; exit 2; }
[ $# -eq 1 ] || usage
out=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$here/cloud-image

die() { echo "build-cloud-image: $*" >&2; exit 1; }

for c in mmdebstrap mkfs.ext4 mformat mcopy syslinux sfdisk qemu-img dpkg-query sha256sum flock; do
    command -v "$c" >/dev/null || die "missing command '$c': run scripts/host-setup.sh first"
done
[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap installs packages into a chroot)"
mbr_bin=/usr/lib/syslinux/mbr/mbr.bin
[ -f "$mbr_bin" ] || die "missing $mbr_bin (syslinux-common)"

SUITE=bookworm
DISK_MIB=2048          # virtual disk size; cloud-init's growpart grows the root to a larger disk
BOOT_START=2048        # sectors: partitions 1 MiB aligned
PACKAGES=(
    linux-image-cloud-amd64 initramfs-tools systemd-sysv udev dbus
    cloud-init cloud-guest-utils netplan.io systemd-resolved
    openssh-server qemu-guest-agent sudo iproute2 e2fsprogs
)

. "$here/lib/image-cache.sh"
cache_open "$out"
cache_skip_if_fresh build-cloud-image <<INPUTS
$(pkgver mmdebstrap syslinux syslinux-common mtools e2fsprogs)
INPUTS

start=$(date +%s%N)
work=$(mktemp -d "$(dirname "$out")/.cloud-build.XXXXXX")
# --one-file-system: never follow a mount mmdebstrap may have left in the chroot (e.g. after a kill)
trap 'rm -rf --one-file-system "$work"' EXIT
elapsed() { local ms=$(( ($(date +%s%N) - start) / 1000000 )); printf '%d.%01ds' $((ms / 1000)) $((ms % 1000 / 100)); }

# ---------------------------------------------------------------- apt sources
# The host's own mirror: every enabled "deb" entry for bookworm, bookworm-updates and
# bookworm-security, in one-line or deb822 form. Nothing else (third-party repositories) and no
# mirror host name of our own.
sources=$work/host.sources
{
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        # deb [options] URI SUITE COMPONENTS...
        awk -v s="$SUITE" '$1 == "deb" {
                i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) ~ ("^" s "(-updates|-security|/updates)?$")) print }' "$f"
    done
} > "$work/host.list"
for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822 stanzas: keep those of type deb naming a bookworm suite, drop disabled ones
    awk -v s="$SUITE" 'BEGIN { RS = ""; ORS = "\n\n" }
        {
            deb = 0; suite = 0; off = 0
            n = split($0, ln, "\n")
            for (j = 1; j <= n; j++) {
                if (ln[j] ~ /^Types:/ && ln[j] ~ /[ \t]deb([ \t]|$)/) deb = 1
                if (ln[j] ~ /^Suites:/ && ln[j] ~ ("[ \t]" s "(-updates|-security)?([ \t]|$)")) suite = 1
                if (ln[j] ~ /^Enabled:[ \t]*no/) off = 1
            }
            if (deb && suite && !off) print
        }' "$f"
done > "$sources"
mirrors=()
[ -s "$work/host.list" ] && mirrors+=("$work/host.list")
[ -s "$sources" ] && mirrors+=("$sources")
[ ${#mirrors[@]} -gt 0 ] || die "no '$SUITE' apt source in /etc/apt/sources.list{,.d}: the image is built from the host's Debian mirror"

# ---------------------------------------------------------------- root file system
root=$work/root
# Hooks run on the host with the root directory as $1.
customize=$work/customize.sh
cat > "$customize" <<'HOOK'
#!/bin/sh
set -eu
r=$1 src=$2 uuid=$3
install -m 0644 "$src/99_iacloud.cfg" "$r/etc/cloud/cloud.cfg.d/99_iacloud.cfg"
# netplan's output is for networkd; enable it (Debian leaves it disabled)
chroot "$r" systemctl enable systemd-networkd.service >/dev/null 2>&1
# first-boot state: host keys from cloud-init, a fresh machine-id (DHCP client id), no logs
rm -f "$r"/etc/ssh/ssh_host_*
: > "$r/etc/machine-id"
rm -f "$r/var/lib/dbus/machine-id"
echo debian > "$r/etc/hostname"
echo LANG=C.UTF-8 > "$r/etc/default/locale"   # see locale: in 99_iacloud.cfg
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$r/etc/hosts"
# the host's resolv.conf was copied in for the build: use systemd-resolved's stub instead
rm -f "$r/etc/resolv.conf"
ln -s ../run/systemd/resolve/stub-resolv.conf "$r/etc/resolv.conf"
printf 'UUID=%s\t/\text4\terrors=remount-ro\t0\t1\n' "$uuid" > "$r/etc/fstab"
# apt in the guest behaves as on any Debian install (recommends, translations); the dpkg path
# excludes stay, so packages installed later leave out docs, man pages and locales too
rm -f "$r/etc/apt/apt.conf.d/99mmdebstrap"
rm -rf "$r"/var/cache/debconf/*-old "$r"/var/lib/dpkg/*-old "$r"/var/log/*.log "$r"/var/log/apt/*
HOOK
chmod +x "$customize"

root_uuid=$(cat /proc/sys/kernel/random/uuid)
echo "build-cloud-image: mmdebstrap $SUITE (${PACKAGES[*]})"
mmdebstrap --quiet --mode=root --variant=apt \
    --include="${PACKAGES[*]}" \
    --aptopt='APT::Install-Recommends "false"' \
    --aptopt='Acquire::Languages "none"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --customize-hook="$customize \"\$1\" '$src' '$root_uuid'" \
    "$SUITE" "$root" "${mirrors[@]}"
echo "build-cloud-image: root file system ready after $(elapsed) ($(du -sm "$root" | cut -f1) MiB)"

kernel=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n 1)
kver=${kernel##*/vmlinuz-}
initrd=$root/boot/initrd.img-$kver
[ -f "$initrd" ] || die "no initrd for $kver in the root file system"

# ---------------------------------------------------------------- partitions
# boot: kernel + initrd + 4 MiB (FAT metadata, ldlinux), whole MiB
boot_mib=$(( ( $(stat -c %s "$kernel") + $(stat -c %s "$initrd") ) / 1048576 + 5 ))
boot_sectors=$(( boot_mib * 2048 ))
root_start=$(( BOOT_START + boot_sectors ))
root_sectors=$(( DISK_MIB * 2048 - root_start ))

cat > "$work/syslinux.cfg" <<CFG
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL vmlinuz
  INITRD initrd.img
  APPEND root=UUID=$root_uuid ro console=tty0 console=ttyS0,115200
CFG
export MTOOLS_SKIP_CHECK=1
bootimg=$work/boot.img
truncate -s "${boot_mib}M" "$bootimg"
# -H: hidden sectors = the partition's start, which the syslinux boot sector adds to its reads
mformat -i "$bootimg" -T "$boot_sectors" -h 64 -s 32 -H "$BOOT_START" -v IACLOUDBOOT ::
mcopy -i "$bootimg" "$kernel" ::vmlinuz
mcopy -i "$bootimg" "$initrd" ::initrd.img
mcopy -i "$bootimg" "$work/syslinux.cfg" ::syslinux.cfg
syslinux --install "$bootimg"

rootimg=$work/root.img
truncate -s $(( root_sectors * 512 )) "$rootimg"
mkfs.ext4 -q -F -L root -U "$root_uuid" -m 1 -d "$root" "$rootimg"

raw=$work/disk.raw
truncate -s "${DISK_MIB}M" "$raw"
sfdisk --quiet "$raw" <<PT
label: dos
start=$BOOT_START, size=$boot_sectors, type=e, bootable
start=$root_start, size=$root_sectors, type=83
PT
dd if="$bootimg" of="$raw" bs=1M seek=$(( BOOT_START / 2048 )) conv=notrunc,sparse status=none
dd if="$rootimg" of="$raw" bs=1M seek=$(( root_start / 2048 )) conv=notrunc,sparse status=none
dd if="$mbr_bin" of="$raw" bs=440 count=1 conv=notrunc status=none

qemu-img convert -c -f raw -O qcow2 "$raw" "$work/out.qcow2"
mv -f "$work/out.qcow2" "$out"
cache_seal

printf 'build-cloud-image: built %s (%s bytes, %s MiB virtual, kernel %s) in %s\n' \
    "$out" "$(stat -c %s "$out")" "$DISK_MIB" "$kver" "$(elapsed)"
