#!/usr/bin/env bash
# The main job of vsfs, end to end: install what is missing, build, make a datastore in
# a file under the current directory, mount it, create a VM folder with a disk, write
# and read it, and show df and .vsfs/stats. Run as root from the source tree.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
bash "$src/.ci/deps.sh"
cmake -S "$src" -B "$src/build" >/dev/null
cmake --build "$src/build" -j"$(nproc)" >/dev/null
bin=$src/build/bin

store=$PWD/vsfs-datastore.img
mnt=$PWD/vsfs-mnt
mkdir -p "$mnt"
if ! mountpoint -q "$mnt"; then
  [ -e "$store" ] || "$bin/vsfs-mkfs" -s 4G "$store"
  "$bin/vsfs-mount" "$store" "$mnt"
fi
mkdir -p "$mnt/vm1"
truncate -s 10G "$mnt/vm1/vm1.img"                    # a thin 10 GiB disk
dd if=/dev/urandom of=/tmp/vsfs-sample bs=1M count=64 status=none
dd if=/tmp/vsfs-sample of="$mnt/vm1/vm1.img" bs=1M oflag=direct conv=notrunc,fsync status=none
cmp -n $((64 << 20)) /tmp/vsfs-sample "$mnt/vm1/vm1.img" && echo "vm1.img: 64 MiB written and read back"
rm -f /tmp/vsfs-sample
ls -ls "$mnt/vm1"
df -h "$mnt"
cat "$mnt/.vsfs/stats"
echo
echo "Mounted at $mnt (datastore $store). Unmount with: fusermount3 -u $mnt"
