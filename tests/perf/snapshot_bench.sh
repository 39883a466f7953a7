#!/usr/bin/env bash
# snapshot_bench.sh: what snapshots and clones cost, in one run on a datastore file.
#   - mkdir .snapshots/NAME on an empty datastore and with DATA written (ratio: O(1))
#   - device bytes written by deleting a snapshot that holds 1 GiB of exclusive data
#   - cp (copy_file_range clone) of a DATA-sized disk: time and space used
#   - 4 KiB random writes in the first seconds after a snapshot, as a ratio to before
# Run by hand from a build tree: tests/perf/snapshot_bench.sh [-b BUILD] [-w DATA]
set -euo pipefail
build=build data=4G
while getopts "b:w:" o; do case $o in b) build=$OPTARG;; w) data=$OPTARG;; *) exit 2;; esac; done
bin=$(cd "$build/bin" && pwd)
. "$(dirname "$0")/lib.sh"
timed_mkdir() { local a b; a=$(us); mkdir "$1"; b=$(us); echo $((b - a)); }

"$bin/vsfs-mkfs" -s 16G "$work/ds.img" >/dev/null
"$bin/vsfs-mount" "$work/ds.img" "$m"
empty_us=$(timed_mkdir "$m/.snapshots/empty")
fio --name=fill --filename="$m/disk.img" --size="$data" --bs=1M --rw=write --direct=1 \
    --ioengine=io_uring --iodepth=8 --end_fsync=1 >/dev/null
full_us=$(timed_mkdir "$m/.snapshots/full-data")
echo "snapshot mkdir: empty ${empty_us} us, with $data written ${full_us} us, ratio $(echo "scale=2; $full_us/$empty_us" | bc)"

# 4 KiB random writes before and right after a snapshot (shared grains are redirected).
rw() { fio --name=rw --filename="$m/disk.img" --size="$data" --bs=4k --rw=randwrite --direct=1 \
    --ioengine=io_uring --iodepth=16 --runtime=3 --time_based --norandommap --output-format=json \
    | python3 -c "import json,sys; print(int(json.load(sys.stdin)['jobs'][0]['write']['iops']))"; }
before=$(rw)
mkdir "$m/.snapshots/fresh"
after=$(rw)
echo "4k randwrite QD16: before snapshot $before IOPS, first 3 s after $after IOPS, ratio $(echo "scale=2; $after/$before" | bc)"
rmdir "$m/.snapshots/fresh" "$m/.snapshots/full-data" "$m/.snapshots/empty"

# Deleting a snapshot holding 1 GiB of exclusive data writes metadata only.
fio --name=x --filename="$m/excl.img" --size=1G --bs=1M --rw=write --direct=1 --ioengine=io_uring \
    --iodepth=8 --end_fsync=1 >/dev/null
mkdir "$m/.snapshots/excl"
rm "$m/excl.img"
sleep 2
w0=$(st "d['io']['device_ops']['write']"); b0=$(st "d['journal']['bytes']")
rmdir "$m/.snapshots/excl"
for _ in $(seq 100); do [ "$(st "d['release_pending']")" = 0 ] && break; sleep 0.1; done
sleep 2
python3 -c "import os; fd=os.open('$m/disk.img', os.O_RDONLY); os.fsync(fd)"
w1=$(st "d['io']['device_ops']['write']"); b1=$(st "d['journal']['bytes']")
echo "delete a snapshot with 1 GiB exclusive: $((w1 - w0)) device writes (journal and checkpointed metadata), $(( (b1 - b0) / 1024 )) KiB of journal"

# cp of the disk is a clone.
u0=$(st "d['space']['used_bytes']")
a=$(us); cp "$m/disk.img" "$m/disk-clone.img"; b=$(us)
u1=$(st "d['space']['used_bytes']")
echo "cp of a $data disk: $(( (b - a) / 1000 )) ms, $(( (u1 - u0) / 1024 )) KiB of space"
