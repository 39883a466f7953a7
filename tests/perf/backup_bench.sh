#!/usr/bin/env bash
# backup_bench.sh: vsfs-backup of a 10 GiB disk filled with data (the full backup is the
# reference), then again after 1 % of it was changed by random 4 KiB writes (the
# incremental): both timed, the bytes the incremental copied against the data bytes its
# .cbt map lists and the bytes fio wrote, and the incremental's time as a ratio of the
# full one's, in the same run. Prints, asserts nothing. Needs about twice the disk size
# free in /var/tmp (the datastore file and the backup).
# Run by hand: tests/perf/backup_bench.sh [-b BUILD] [-g GIB]
set -euo pipefail
build=build
gib=10
while getopts "b:g:" o; do case $o in b) build=$OPTARG;; g) gib=$OPTARG;; *) exit 2;; esac; done
bin=$(cd "$build/bin" && pwd)
. "$(dirname "$0")/lib.sh"

# field KEY FILE: KEY=VALUE of vsfs-backup's total line.
field() { sed -n "s/^total .* $1=\([^ ]*\).*/\1/p" "$2"; }

"$bin/vsfs-mkfs" -s $((gib + gib / 4 + 2))G "$work/ds.img" >/dev/null
"$bin/vsfs-mount" "$work/ds.img" "$m"
mkdir "$m/vm"
truncate -s "${gib}G" "$m/vm/disk.img"
fio --name=fill --filename="$m/vm/disk.img" --size="${gib}G" --bs=1M --rw=write --direct=1 \
    --ioengine=io_uring --iodepth=8 --randseed=1 >/dev/null

a=$(us)
"$bin/vsfs-backup" --keep-snapshot "$m" vm "$work/backup" >"$work/full.out"
b=$(us)
full_us=$((b - a))
full_snap=$(field snapshot "$work/full.out")
echo "full backup of a ${gib} GiB disk: $(field copied "$work/full.out") bytes copied in $((full_us / 1000)) ms" \
     "($(echo "scale=1; $(field copied "$work/full.out") / $full_us" | bc) MB/s)"

changed=$((gib * 1024 * 1024 * 1024 / 100))
fio --name=change --filename="$m/vm/disk.img" --size="${gib}G" --bs=4k --rw=randwrite --direct=1 \
    --ioengine=io_uring --iodepth=16 --io_size="$changed" --randseed=2 >/dev/null

a=$(us)
"$bin/vsfs-backup" --keep-snapshot "$m" vm "$work/backup" >"$work/incr.out"
b=$(us)
incr_us=$((b - a))
incr_snap=$(field snapshot "$work/incr.out")
listed=$(awk '$3 == "data" { s += $2 } END { print s + 0 }' "$m/vm/.cbt/$incr_snap/$full_snap/disk.img")
echo "incremental after ${changed} bytes of random 4 KiB writes: $(field copied "$work/incr.out") bytes copied" \
     "in $((incr_us / 1000)) ms; the .cbt map lists ${listed} data bytes"
echo "incremental time / full time: $(echo "scale=4; $incr_us / $full_us" | bc)"
echo "backup directory: $(du -sk "$work/backup" | cut -f1) KiB used"
rmdir "$m/vm/.snapshots/$full_snap" "$m/vm/.snapshots/$incr_snap"
