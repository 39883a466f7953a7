#!/usr/bin/env bash
# Installs what vsfs needs to build and test on Debian 12, only what is missing.
set -euo pipefail
pkgs=(cmake g++ make pkg-config libfuse3-dev fuse3 liburing-dev libfmt-dev
      libtomlplusplus-dev libgtest-dev libblkid-dev libmount-dev libsystemd-dev fio qemu-utils python3 e2fsprogs util-linux fdisk attr xz-utils
      clang libclang-rt-14-dev  # clang 14 and its libFuzzer runtime: tests/fuzz
      ceph-mon ceph-osd ceph-mgr ceph-common librbd-dev  # tests/ceph, the RBD backend
      qemu-system-common qemu-block-extra)  # qemu-storage-daemon, its rbd driver: tests/perf/rbd_compare.sh
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
fi
