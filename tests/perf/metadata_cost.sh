#!/usr/bin/env bash
# metadata_cost.sh: what the format costs. Makes a datastore file of SIZE (default 64G),
# writes DATA (default 8G) into one disk through the mount (sequential 1 MiB, then the
# same amount again as random 4 KiB overwrites of a 256 MiB region), and prints: mkfs
# time, journal bytes per GiB written for each phase (from .vsfs/stats), device writes
# per 4 KiB overwrite, and the time of vsfs-fsck -n on the result. Run by hand from a
# build tree: tests/perf/metadata_cost.sh [-b BUILD] [-s SIZE] [-w DATA]
set -euo pipefail
build=build size=64G data=8G
while getopts "b:s:w:" o; do case $o in b) build=$OPTARG;; s) size=$OPTARG;; w) data=$OPTARG;; *) exit 2;; esac; done
bin=$(cd "$build/bin" && pwd)
. "$(dirname "$0")/lib.sh"

t0=$(date +%s.%N); "$bin/vsfs-mkfs" -s "$size" "$work/ds.img" >/dev/null; t1=$(date +%s.%N)
echo "mkfs $size: $(echo "$t1 - $t0" | bc) s, file allocates $(du -h "$work/ds.img" | cut -f1)"
"$bin/vsfs-mount" "$work/ds.img" "$m"
mkdir "$m/vm"
j0=$(st "d['journal']['bytes']")
fio --name=seq --filename="$m/vm/disk.img" --size="$data" --bs=1M --rw=write --direct=1 \
    --ioengine=io_uring --iodepth=8 --end_fsync=1 >/dev/null
j1=$(st "d['journal']['bytes']")
data_bytes=$(numfmt --from=iec "$data")
echo "sequential $data: journal $(( (j1 - j0) * 1073741824 / data_bytes / 1024 )) KiB per GiB written ($(echo "scale=3; ($j1-$j0)*100/$data_bytes" | bc)%)"
w0=$(st "d['io']['device_ops']['write']"); r0=$(st "d['io']['redirected_grain_writes']")
fio --name=ow --filename="$m/vm/disk.img" --size=256M --bs=4k --rw=randwrite --direct=1 \
    --ioengine=io_uring --iodepth=16 --number_ios=20000 --norandommap >/dev/null
w1=$(st "d['io']['device_ops']['write']"); r1=$(st "d['io']['redirected_grain_writes']")
echo "20000 random 4 KiB overwrites of written grains: $(echo "scale=3; ($w1-$w0)/20000" | bc) device writes each, $((r1 - r0)) redirected"
fusermount3 -u "$m"; sleep 1
t0=$(date +%s.%N); "$bin/vsfs-fsck" -n "$work/ds.img" >/dev/null; rc=$?; t1=$(date +%s.%N)
echo "fsck -n after $data written: $(echo "$t1 - $t0" | bc) s, exit $rc"
