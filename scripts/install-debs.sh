#!/usr/bin/env bash
# Debian packages the project needs: libvirt-dev + pkg-config to build libvirt-python (PyPI ships
# no wheel), chromium for the dashboard's browser test, genisoimage for config drives (its unit test
# builds one), libjemalloc2 for the C allocator `up --processes` gives its children by default,
# qemu-utils (qemu-img) for the tests that build qcow2 files: a snapshot's, an upload's with a
# backing file that glance's inspection must refuse.
# Installed only when missing.
set -euo pipefail
want=(libvirt-dev pkg-config chromium genisoimage libjemalloc2 qemu-utils)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing Debian packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
