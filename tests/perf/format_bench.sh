#!/usr/bin/env bash
# format_bench.sh: what delayed formatting costs, in one run on a datastore file:
#   - unlink time of a 1 GiB and a DATA (default 16 GiB) disk
#   - the formatter's throughput, and 4 KiB random-write IOPS of another disk while it
#     runs, as a ratio to the same fio job with the formatter idle
# Run by hand from a build tree: tests/perf/format_bench.sh [-b BUILD] [-w DATA]
set -euo pipefail
build=build data=16G
while getopts "b:w:" o; do case $o in b) build=$OPTARG;; w) data=$OPTARG;; *) exit 2;; esac; done
bin=$(cd "$build/bin" && pwd)
. "$(dirname "$0")/lib.sh"
ms() { echo $(( $(us) / 1000 )); }
fill() { fio --name=fill --filename="$1" --size="$2" --bs=1M --rw=write --direct=1 \
	--ioengine=io_uring --iodepth=8 --end_fsync=1 >/dev/null; }
rw() { fio --name=rw --filename="$m/other.img" --size=1G --bs=4k --rw=randwrite --direct=1 \
	--ioengine=io_uring --iodepth=16 --runtime=8 --time_based --output-format=json |
	python3 -c "import json,sys; print(int(json.load(sys.stdin)['jobs'][0]['write']['iops']))"; }
wait_formatted() {
	for _ in $(seq 600); do
		[ "$(st "d['format']['to_format_blocks']")" = 0 ] && [ "$(st "d['release_pending']")" = 0 ] && return
		sleep 0.5
	done
}

"$bin/vsfs-mkfs" -s 40G "$work/ds.img" >/dev/null
"$bin/vsfs-mount" "$work/ds.img" "$m"
fill "$m/other.img" 1G
fill "$m/one.img" 1G
a=$(ms); rm "$m/one.img"; b=$(ms)
echo "unlink of a 1 GiB disk: $((b - a)) ms"
wait_formatted
idle=$(rw)
fill "$m/big.img" "$data"
a=$(ms); rm "$m/big.img"; b=$(ms)
echo "unlink of a $data disk: $((b - a)) ms"
f0=$(st "d['format']['formatted_bytes_total']"); t0=$(ms)
busy=$(rw)
f1=$(st "d['format']['formatted_bytes_total']"); t1=$(ms)
echo "4k randwrite QD16 on another disk: ${idle} IOPS with the formatter idle, ${busy} while it formats ($(echo "scale=2; $busy/$idle" | bc)x)"
echo "formatter: $(( (f1 - f0) >> 20 )) MiB formatted in $((t1 - t0)) ms under that load (rate limit $(st "d['format']['rate_mib_s']") MiB/s)"
wait_formatted
echo "du of the datastore file after formatting: $(du -h "$work/ds.img" | cut -f1)"
