#!/usr/bin/env bash
# Builds the tiny guest that `eventsvm up --hypervisor qemu` boots as the `cirros` image, the way
# nova boots AMI-style images: a kernel (Debian's linux-image-amd64), a ramdisk (an initramfs around
# busybox-static and Debian's dropbear SSH server) and an empty qcow2 root disk each instance gets a
# copy-on-write overlay of. Its /init reads the instance's config drive (ISO9660 labelled config-2,
# what nova's force_config_drive attaches) as cirros and cloud-init do: the fixed IP of each NIC
# (network_data.json, matched by MAC), the hostname and the key pair's public key for root
# (meta_data.json); then it starts dropbear on port 22 and says "eventsvm guest <uuid> is up" on the
# serial console, and waits to be powered off.
#
# Usage: scripts/guest-image.sh [OUT_DIR]   (default: ./guest, git-ignored)
# Also installs what running real guests needs (QEMU, qemu-img, libvirtd, genisoimage), only when missing.
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
# the SSH server and the two libraries of its package that a Debian host does not have already
ssh_debs=("$(download dropbear-bin)" "$(download libtomcrypt1)" "$(download libtommath1)")

# the guest's virtio NIC, disks and RNG and the config drive's filesystem are modules in Debian's
# kernel; listed in load order (each after what it needs)
modules=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio-rng failover
         net_failover virtio_net virtio_blk cdrom isofs)
dpkg-deb --fsys-tarfile "$kernel_deb" | tar -x -C "$work" --wildcards './boot/vmlinuz-*' \
  $(printf "./lib/modules/*/%s.ko " "${modules[@]/#/*/}")
dpkg-deb -x "$busybox_deb" "$work/bb"
for deb in "${ssh_debs[@]}"; do dpkg-deb -x "$deb" "$work/ssh"; done

initramfs="$work/initramfs"
mkdir -p "$initramfs"/{bin,dev,proc,sys,etc,tmp,run,root,lib/modules,usr/sbin,usr/bin}
cp "$work/bb/bin/busybox" "$initramfs/bin/busybox"
ln -s busybox "$initramfs/bin/sh"
for m in "${modules[@]}"; do
  found="$(find "$work/lib/modules" -name "$m.ko" | head -1)"
  [ -n "$found" ] || { echo "module $m.ko is not in $kernel_deb" >&2; exit 1; }
  cp "$found" "$initramfs/lib/modules/"
done
printf '%s\n' "${modules[@]}" > "$initramfs/lib/modules/load-order"
# dropbear and dropbearkey with every shared library they load, at the paths the dynamic loader
# looks in: the packaged ones from the downloaded .debs, the rest (libc, zlib, ...) from this host
cp "$work/ssh/usr/sbin/dropbear" "$initramfs/usr/sbin/"
cp "$work/ssh/usr/bin/dropbearkey" "$initramfs/usr/bin/"
libs="$(LD_LIBRARY_PATH="$work/ssh/usr/lib/x86_64-linux-gnu" ldd "$work/ssh/usr/sbin/dropbear" "$work/ssh/usr/bin/dropbearkey")"
if grep -q "not found" <<<"$libs"; then echo "dropbear needs libraries this host lacks: $libs" >&2; exit 1; fi
mkdir -p "$initramfs/lib/x86_64-linux-gnu" "$initramfs/lib64"
for lib in $(awk '/=>/ {print $3}' <<<"$libs" | sort -u); do
  cp -L "$lib" "$initramfs/lib/x86_64-linux-gnu/$(basename "$lib")"
done
loader="$(awk '/ld-linux/ && !/=>/ {print $1}' <<<"$libs" | sort -u | head -1)"
cp -L "$loader" "$initramfs/lib64/$(basename "$loader")"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$initramfs/etc/passwd"
printf 'root:x:0:\n' > "$initramfs/etc/group"
printf '/bin/sh\n' > "$initramfs/etc/shells"

# json-flat: every scalar of a JSON document as path=value, one a line (keys joined by '.', array
# items by their index): what the init below reads the config drive's JSON files with
cat > "$initramfs/bin/json-flat" <<'FLAT'
#!/bin/sh
exec awk '
function path(   p, i) { p = ""; for (i = 1; i <= depth; i++) p = p (i > 1 ? "." : "") key[i]; return p }
{ doc = doc $0 "\n" }
END {
  depth = 0
  while (length(doc) > 0) {
    if (match(doc, /^[ \t\r\n]+/)) { doc = substr(doc, RLENGTH + 1); continue }
    if (match(doc, /^"([^"\\]|\\.)*"/)) { tok = substr(doc, 2, RLENGTH - 2); kind = "v" }
    else if (match(doc, /^[][{},:]/)) { tok = substr(doc, 1, 1); kind = tok }
    else if (match(doc, /^[^][ \t\r\n{},:]+/)) { tok = substr(doc, 1, RLENGTH); kind = "v" }
    else break
    doc = substr(doc, RLENGTH + 1)
    if (kind == "{") { depth++; type[depth] = "o"; want_key[depth] = 1 }
    else if (kind == "[") { depth++; type[depth] = "a"; key[depth] = 0 }
    else if (kind == "}" || kind == "]") depth--
    else if (kind == ",") { if (type[depth] == "o") want_key[depth] = 1; else key[depth]++ }
    else if (kind == ":") want_key[depth] = 0
    else if (type[depth] == "o" && want_key[depth]) key[depth] = tok
    else print path() "=" tok
  }
}' "$@"
FLAT
chmod 755 "$initramfs/bin/json-flat"
cat > "$initramfs/init" <<'INIT'
#!/bin/sh
# PID 1 of the eventsvm guest: bring up the console, the drivers, the network and SSH from the
# config drive, say who we are, then wait to be powered off.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
exec </dev/console >/dev/console 2>&1
for m in $(cat /lib/modules/load-order); do insmod "/lib/modules/$m.ko" || echo "eventsvm guest: no $m"; done
# nova writes the instance UUID into SMBIOS (product serial and uuid); the hostname comes from the
# kernel command line when the image sets one, else from the config drive.
id="$(cat /sys/class/dmi/id/product_serial 2>/dev/null)"
[ -n "$id" ] || id="$(cat /sys/class/dmi/id/product_uuid 2>/dev/null)"
for arg in $(cat /proc/cmdline); do
  case "$arg" in hostname=*) hostname "${arg#hostname=}" ;; esac
done
ip link set lo up

# The config drive: the disk whose ISO9660 filesystem is labelled config-2 (findfs), else the
# first disk that mounts with openstack/latest/meta_data.json on it.
value() { awk -v k="$1" 'index($0, k "=") == 1 { print substr($0, length(k) + 2); exit }' "$2"; }
mkdir -p /mnt/config
drive="$(findfs LABEL=config-2 2>/dev/null)"
for dev in $drive /dev/vd? /dev/sr?; do
  [ -b "$dev" ] && mount -t iso9660 -o ro "$dev" /mnt/config 2>/dev/null || continue
  [ -f /mnt/config/openstack/latest/meta_data.json ] && break
  umount /mnt/config
done
md=/mnt/config/openstack/latest
if [ -f "$md/meta_data.json" ]; then
  json-flat "$md/meta_data.json" > /run/meta_data
  json-flat "$md/network_data.json" > /run/network_data 2>/dev/null
  name="$(value hostname /run/meta_data)"
  [ -n "$name" ] && hostname "$name" && echo "$name" > /etc/hostname
  mkdir -p /root/.ssh && chmod 700 /root/.ssh
  sed -n 's/^public_keys\.[^=]*=//p' /run/meta_data | sed 's/\\n$//' > /root/.ssh/authorized_keys
  chmod 600 /root/.ssh/authorized_keys
  # each network of network_data.json on the NIC whose MAC its link names, statically (neutron
  # hands out the address; no DHCP server runs here)
  n=0
  while link="$(value "networks.$n.link" /run/network_data)"; [ -n "$link" ]; do
    l=0; mac=""
    while lid="$(value "links.$l.id" /run/network_data)"; [ -n "$lid" ]; do
      [ "$lid" = "$link" ] && mac="$(value "links.$l.ethernet_mac_address" /run/network_data)"
      l=$((l + 1))
    done
    nic=""
    for dev in /sys/class/net/*; do
      [ "$(cat "$dev/address")" = "$mac" ] && nic="${dev##*/}"
    done
    address="$(value "networks.$n.ip_address" /run/network_data)"
    if [ -n "$nic" ] && [ -n "$address" ]; then
      ifconfig "$nic" "$address" netmask "$(value "networks.$n.netmask" /run/network_data)" up
      r=0
      while gw="$(value "networks.$n.routes.$r.gateway" /run/network_data)"; [ -n "$gw" ]; do
        net="$(value "networks.$n.routes.$r.network" /run/network_data)"
        mask="$(value "networks.$n.routes.$r.netmask" /run/network_data)"
        if [ "$net" = 0.0.0.0 ]; then route add default gw "$gw" "$nic"
        else route add -net "$net" netmask "$mask" gw "$gw" "$nic"; fi
        r=$((r + 1))
      done
      echo "eventsvm guest: $nic ($mac) has $address"
    fi
    n=$((n + 1))
  done
  umount /mnt/config
fi
# SSH: root logs in with the key pair's key only (-s: no passwords); the host key is made on the
# first connection (-R), not here: it needs the kernel's random pool ready, which under TCG can take
# seconds after boot even with the virtio RNG
mkdir -p /etc/dropbear
dropbear -s -R -p 22
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
