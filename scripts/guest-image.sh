#!/usr/bin/env bash
# Builds the tiny guest that `eventsvm up --hypervisor qemu` boots as the `cirros` image, the way
# nova boots AMI-style images: a kernel (Debian's linux-image-amd64), a ramdisk (an initramfs around
# busybox-static whose /init says "eventsvm guest <uuid> is up" on the serial console and then waits
# to be powered off) and an empty qcow2 root disk each instance gets a copy-on-write overlay of.
#
# Usage: scripts/guest-image.sh [OUT_DIR]   (default: ./guest, git-ignored)
# Also installs what running real guests needs (QEMU, qemu-img, libvirtd), only when missing.
# Quick and idempotent: a finished build is left as it is.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/guest}"
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_updated=""
apt_update() {
  [ -n "$apt_updated" ] && return 0
  $sudo apt-get update -qq
  apt_updated=1
}

# QEMU, qemu-img and libvirtd on the host (installed only when missing); the kernel and busybox
# for the guest are downloaded below, never installed.
bash "$root/scripts/libvirtd.sh" install

# The stamp records what the guest was built from; same recipe, same guest: nothing to do.
recipe="$(sha256sum "$0" | cut -c1-16)"
if [ -f "$out/.built" ] && [ "$(cat "$out/.built")" = "$recipe" ] \
   && [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ] && [ -s "$out/disk.qcow2" ]; then
  echo "guest image up to date in $out"
  exit 0
fi

mkdir -p "$out/debs"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# linux-image-amd64 is a metapackage; the kernel itself is in the versioned package it depends on.
kernel_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
pkg="$(kernel_pkg)"
if [ -z "$pkg" ]; then apt_update; pkg="$(kernel_pkg)"; fi
[ -n "$pkg" ] || { echo "cannot resolve linux-image-amd64 to a kernel package" >&2; exit 1; }

download() {  # download PACKAGE: fetch its .deb into $out/debs unless it is there already
  local name="$1"
  if ! ls "$out/debs/${name}_"*.deb >/dev/null 2>&1; then
    (cd "$out/debs" && { apt-get download -qq "$name" 2>/dev/null || { apt_update; apt-get download -qq "$name"; }; })
  fi
  ls "$out/debs/${name}_"*.deb | head -1
}
kernel_deb="$(download "$pkg")"
busybox_deb="$(download busybox-static)"

dpkg-deb --fsys-tarfile "$kernel_deb" | tar -x -C "$work" --wildcards './boot/vmlinuz-*'
dpkg-deb -x "$busybox_deb" "$work/bb"

initramfs="$work/initramfs"
mkdir -p "$initramfs"/{bin,dev,proc,sys,etc,tmp}
cp "$work/bb/bin/busybox" "$initramfs/bin/busybox"
ln -s busybox "$initramfs/bin/sh"
cat > "$initramfs/init" <<'INIT'
#!/bin/sh
# PID 1 of the eventsvm guest: bring up the console, say who we are, then wait to be powered off.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
# nova writes the instance UUID into SMBIOS (product serial and uuid); the hostname comes from the
# kernel command line when the image sets one.
id="$(cat /sys/class/dmi/id/product_serial 2>/dev/null)"
[ -n "$id" ] || id="$(cat /sys/class/dmi/id/product_uuid 2>/dev/null)"
for arg in $(cat /proc/cmdline); do
  case "$arg" in hostname=*) hostname "${arg#hostname=}" ;; esac
done
# boot_id is new at every boot: a reboot shows on the console as a new line, not the old one again
echo "eventsvm guest ${id:-$(hostname)} is up (boot $(cat /proc/sys/kernel/random/boot_id), kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) vCPU, $(awk '/MemTotal/ {print $2}' /proc/meminfo) kB)"
# An ACPI power button is honoured when the kernel exposes one; otherwise destroy ends the guest.
printf 'PWRF poweroff -f\n' > /etc/acpid.conf
acpid -c /etc/acpi -a /etc/acpid.conf 2>/dev/null
while :; do sleep 3600; done
INIT
chmod 755 "$initramfs/init"

cp "$work"/boot/vmlinuz-* "$work/vmlinuz"
(cd "$initramfs" && find . | "$work/bb/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -9 > "$work/initrd.img"
rm -f "$work/disk.qcow2"
qemu-img create -q -f qcow2 "$work/disk.qcow2" 64M

for f in vmlinuz initrd.img disk.qcow2; do mv -f "$work/$f" "$out/$f"; done
echo "${pkg#linux-image-}" > "$out/kernel-version"
echo "$recipe" > "$out/.built"
echo "guest image built in $out (kernel $(cat "$out/kernel-version"))"
