#!/bin/bash
# Build the iacloud tiny test image (a ~15 MB qcow2) offline from Debian packages.
#
#   scripts/build-image.sh OUTPUT.qcow2
#
# The image is a partitionless FAT disk ("superfloppy") made with mtools, made bootable with
# syslinux, holding the linux-image-cloud-amd64 kernel and a busybox initramfs whose /init
# (scripts/tiny-image/init) reads a NoCloud seed, configures the NICs and prints
#   IACLOUD-READY hostname=<name> addresses=<if>=<ip/prefix>,... macs=<if>=<mac>,...
# on the serial console. The result is cached: OUTPUT.stamp holds a hash of every input, and
# the image is rebuilt only when it changes. Needs the packages scripts/host-setup.sh installs.
set -euo pipefail

usage() { echo "usage: $0 OUTPUT.qcow2" >&2; exit 2; }
[ $# -eq 1 ] || usage
out=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$here/tiny-image

die() { echo "build-image: $*" >&2; exit 1; }

for c in busybox cpio gzip mformat mcopy syslinux qemu-img dpkg-query sha256sum flock; do
    command -v "$c" >/dev/null || die "missing command '$c': run scripts/host-setup.sh first"
done
[ -x /bin/busybox ] || die "missing /bin/busybox (busybox-static): run scripts/host-setup.sh"

# newest installed cloud kernel
kver=$(ls /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -V | tail -n 1 || true)
[ -n "$kver" ] || die "no /boot/vmlinuz-*-cloud-amd64: install linux-image-cloud-amd64"
kernel=/boot/vmlinuz-$kver
moddir=/lib/modules/$kver
[ -f "$moddir/modules.dep" ] || die "missing $moddir/modules.dep"

. "$here/lib/image-cache.sh"
cache_open "$out"
cache_skip_if_fresh build-image <<INPUTS
kernel=$kver
$(pkgver "linux-image-$kver" busybox-static syslinux syslinux-common mtools)
INPUTS

start=$(date +%s%N)
work=$(mktemp -d "$(dirname "$out")/.tiny-build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# ---------------------------------------------------------------- initramfs
root=$work/root
mkdir -p "$root"/{bin,sbin,dev,proc,sys,run,tmp,etc,seed,lib/modules}
cp /bin/busybox "$root/bin/busybox"
for a in $(/bin/busybox --list); do
    [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"
done
mknod -m 600 "$root/dev/console" c 5 1
mknod -m 666 "$root/dev/null" c 1 3
install -m 0755 "$src/init" "$root/init"
install -m 0755 "$src/udhcpc.script" "$root/etc/udhcpc.script"
echo tiny > "$root/etc/hostname"
printf 'root:x:0:0:root:/:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"
: > "$root/etc/resolv.conf"

# Modules the guest needs (all are =m in the Debian cloud kernel):
#   virtio_pci virtio_blk virtio_net     disks and NICs (net_failover/failover come as deps)
#   virtio_scsi sd_mod sr_mod ata_piix   a seed on virtio-scsi (cdrom or disk) or on i440fx IDE
#   isofs vfat nls_*                     the seed filesystem (iso9660, or vfat labelled CIDATA)
#   button evdev                         ACPI power button -> /dev/input/eventN (virsh shutdown)
# (No AHCI driver is built for this kernel: a SATA cdrom on q35 is not seen by the guest.)
wanted="virtio_pci virtio_blk virtio_net virtio_scsi sd_mod sr_mod ata_piix isofs vfat
        nls_cp437 nls_ascii nls_utf8 button evdev"

declare -A path_of=() seen=()
order=()
while IFS= read -r line; do
    mod=${line%%:*}
    name=$(basename "$mod"); name=${name%%.ko*}; name=${name//-/_}
    path_of[$name]=$mod
done < "$moddir/modules.dep"

deps_of() { grep -m1 "^${path_of[$1]}:" "$moddir/modules.dep" | cut -d: -f2; }
visit() {   # depth-first: dependencies before the module
    local name=$1 d dn
    [ -n "${seen[$name]:-}" ] && return
    seen[$name]=1
    [ -n "${path_of[$name]:-}" ] || { echo "build-image: module $name not in $kver (built in?)" >&2; return; }
    for d in $(deps_of "$name"); do
        dn=$(basename "$d"); dn=${dn%%.ko*}; dn=${dn//-/_}
        visit "$dn"
    done
    order+=("$name")
}
for m in $wanted; do visit "$m"; done

for name in "${order[@]}"; do
    f=$moddir/${path_of[$name]}
    dst=$root/lib/modules/$name.ko
    case "$f" in   # busybox insmod loads plain .ko files only
        *.ko)     cp "$f" "$dst" ;;
        *.ko.xz)  xz -dc "$f" > "$dst" ;;
        *.ko.zst) zstd -qdc "$f" > "$dst" ;;
        *.ko.gz)  gzip -dc "$f" > "$dst" ;;
        *) die "unknown module file $f" ;;
    esac
    echo "$name" >> "$root/lib/modules/load-order"
done

(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) \
    | gzip -9 -n > "$work/initrd.gz"

# ---------------------------------------------------------------- boot disk
cat > "$work/syslinux.cfg" <<CFG
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL vmlinuz
  INITRD initrd.gz
  APPEND console=ttyS0,115200 quiet panic=10
CFG

# size: payload + 2 MiB for FAT metadata and ldlinux, rounded up to whole MiB
kb=$(( ( $(stat -c %s "$kernel") + $(stat -c %s "$work/initrd.gz") ) / 1024 + 2048 ))
mb=$(( (kb + 1023) / 1024 ))
raw=$work/disk.raw
truncate -s "${mb}M" "$raw"
export MTOOLS_SKIP_CHECK=1
# partitionless FAT (superfloppy); 64 heads x 32 sectors geometry as SeaBIOS reports it
mformat -i "$raw" -T $((mb * 2048)) -h 64 -s 32 -H 0 -v IACLOUDTINY ::
mcopy -i "$raw" "$kernel" ::vmlinuz
mcopy -i "$raw" "$work/initrd.gz" ::initrd.gz
mcopy -i "$raw" "$work/syslinux.cfg" ::syslinux.cfg
syslinux --install "$raw"

qemu-img convert -f raw -O qcow2 "$raw" "$work/out.qcow2"
mv -f "$work/out.qcow2" "$out"
cache_seal

ms=$(( ($(date +%s%N) - start) / 1000000 ))
printf 'build-image: built %s (%s bytes, kernel %s, %d modules) in %d.%03ds\n' \
    "$out" "$(stat -c %s "$out")" "$kver" "${#order[@]}" $((ms / 1000)) $((ms % 1000))
