#!/usr/bin/env bash
# cbt_bench.sh: how long reading a changed-block map takes for a 64 GiB disk with 10,
# 10 000 and 1 000 000 changed grains, and how many bytes it lists against the bytes
# written (random 4 KiB writes through the mount). The reference is the time of reading
# the map of an unchanged disk in the same run. Run by hand: tests/perf/cbt_bench.sh [-b BUILD]
set -euo pipefail
build=build
while getopts "b:" o; do case $o in b) build=$OPTARG;; *) exit 2;; esac; done
bin=$(cd "$build/bin" && pwd)
. "$(dirname "$0")/lib.sh"

"$bin/vsfs-mkfs" -s 96G "$work/ds.img" >/dev/null
"$bin/vsfs-mount" "$work/ds.img" "$m"
truncate -s 64G "$m/disk.img"
fio --name=base --filename="$m/disk.img" --size=64G --bs=4k --rw=randwrite --direct=1 \
    --ioengine=io_uring --iodepth=32 --number_ios=200000 --norandommap --randseed=1 >/dev/null
mkdir "$m/.snapshots/s0"
mkdir "$m/.snapshots/same"
a=$(us); cat "$m/.cbt/same/s0/disk.img" >/dev/null; b=$(us)
ref=$((b - a))
echo "map of an unchanged 64 GiB disk (200k grains allocated): ${ref} us"
prev=s0
for n in 10 10000 1000000; do
	fio --name=w --filename="$m/disk.img" --size=64G --bs=4k --rw=randwrite --direct=1 \
	    --ioengine=io_uring --iodepth=32 --number_ios=$n --norandommap --randseed=$n >/dev/null
	mkdir "$m/.snapshots/n$n"
	a=$(us); lines=$(wc -l < "$m/.cbt/n$n/$prev/disk.img"); b=$(us)
	listed=$(awk '{s += $2} END {print s + 0}' "$m/.cbt/n$n/$prev/disk.img")
	echo "$n changed grains: map read in $((b - a)) us ($(echo "scale=1; ($b-$a)/$ref" | bc)x the unchanged map), $lines extents, $listed bytes listed for $((n * 4096)) bytes written"
	rmdir "$m/.snapshots/$prev"
	prev=n$n
done
