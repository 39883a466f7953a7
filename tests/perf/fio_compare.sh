#!/usr/bin/env bash
# fio_compare.sh: the same fio jobs on a raw file in the host filesystem and on a vsfs
# disk file, in one run, with the ratios vsfs/raw (issue 3 targets: 4k random >= 0.8x raw
# at QD1 and >= 0.5x at QD32; 1 MiB sequential >= 0.7x), the daemon's peak RSS and the
# peak requests in flight from .vsfs/stats. Run by hand from a build tree:
#
#   tests/perf/fio_compare.sh [-b BUILD_DIR] [-d WORK_DIR] [-s FILE_SIZE] [-r RUNTIME_S]
#                             [-o "vsfs-mount -o options"] [-t io_uring|dev_fuse]
#
# -t: how requests reach vsfs. io_uring (the default when the kernel has FUSE over
# io_uring) switches the fuse module's enable_uring parameter on for the run and
# restores it after; dev_fuse mounts with io_uring=false.
#
# WORK_DIR (default: a new directory under the current one) holds the raw file, the
# datastore file (sized 4x FILE_SIZE plus room) and the mount point; it is removed at the
# end. Needs fio, and root (FUSE mount). Not a ctest test: timings vary.
set -euo pipefail

build=build
work=
size=2G
runtime=10
mount_opts=
uring_param=/sys/module/fuse/parameters/enable_uring
transport=dev_fuse
[ -w "$uring_param" ] && transport=io_uring
while getopts "b:d:s:r:o:t:h" opt; do
	case $opt in
	b) build=$OPTARG ;;
	d) work=$OPTARG ;;
	s) size=$OPTARG ;;
	r) runtime=$OPTARG ;;
	o) mount_opts=$OPTARG ;;
	t) transport=$OPTARG ;;
	*) sed -n '2,18p' "$0"; exit 2 ;;
	esac
done
command -v fio >/dev/null || { echo "fio_compare: fio is not installed" >&2; exit 2; }
bin=$build/bin
for p in vsfs-mkfs vsfs-mount; do
	[ -x "$bin/$p" ] || { echo "fio_compare: $bin/$p not found (-b BUILD_DIR)" >&2; exit 2; }
done
if [ -z "$work" ]; then work=$(mktemp -d "$PWD/vsfs-perf.XXXXXX"); else mkdir -p "$work"; fi
work=$(cd "$work" && pwd)
mnt=$work/mnt
mkdir -p "$mnt" "$work/raw"
pid=
uring_was=
case $transport in
io_uring)
	[ -w "$uring_param" ] || { echo "fio_compare: this kernel has no FUSE over io_uring" >&2; exit 2; }
	uring_was=$(cat "$uring_param")
	echo Y >"$uring_param" ;;
dev_fuse) mount_opts=${mount_opts:+$mount_opts,}io_uring=false ;;
*) echo "fio_compare: -t io_uring or dev_fuse" >&2; exit 2 ;;
esac

cleanup() {
	if mountpoint -q "$mnt" 2>/dev/null; then
		fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
	fi
	if [ -n "$pid" ]; then
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill "$pid" 2>/dev/null || true
	fi
	rm -rf "$work"
	[ -z "$uring_was" ] || echo "$uring_was" >"$uring_param"
}
trap cleanup EXIT
trap "exit 143" TERM INT

size_bytes=$(numfmt --from=iec "$size")
ds_bytes=$((size_bytes * 4 + (1 << 30)))
"$bin/vsfs-mkfs" -s "$ds_bytes" "$work/ds.img" >/dev/null
# shellcheck disable=SC2086  # options are one word or none
"$bin/vsfs-mount" -f ${mount_opts:+-o "$mount_opts"} "$work/ds.img" "$mnt" >"$work/daemon.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q " $mnt fuse.vsfs " /proc/mounts && break; sleep 0.1; done
grep -q " $mnt fuse.vsfs " /proc/mounts || { cat "$work/daemon.log" >&2; exit 1; }
sleep 0.5  # the ring's entries are lent just after INIT

# name rw bs iodepth
jobs=(
	"randread-4k-qd1 randread 4k 1"
	"randread-4k-qd32 randread 4k 32"
	"randwrite-4k-qd1 randwrite 4k 1"
	"randwrite-4k-qd32 randwrite 4k 32"
	"read-1m-qd8 read 1M 8"
	"write-1m-qd8 write 1M 8"
)

# run_job FILE RW BS DEPTH -> "iops bw_bytes_per_s"
run_job() {
	fio --name=j --filename="$1" --size="$size" --ioengine=io_uring --direct=1 --rw="$2" \
		--bs="$3" --iodepth="$4" --runtime="$runtime" --time_based --ramp_time=1 \
		--randrepeat=0 --output-format=json 2>/dev/null | python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
iops = j["read"]["iops"] + j["write"]["iops"]
bw = j["read"]["bw_bytes"] + j["write"]["bw_bytes"]
print("%.0f %.0f" % (iops, bw))'
}

# Lay the files out fully so reads hit written data on both sides.
for f in "$work/raw/disk.img" "$mnt/disk.img"; do
	fio --name=layout --filename="$f" --size="$size" --ioengine=io_uring --direct=1 \
		--rw=write --bs=1M --iodepth=8 >/dev/null
done

printf "%-20s %12s %12s %12s %12s %7s\n" job raw_iops vsfs_iops raw_MB/s vsfs_MB/s ratio
for j in "${jobs[@]}"; do
	read -r name rw bs depth <<<"$j"
	read -r ri rb <<<"$(run_job "$work/raw/disk.img" "$rw" "$bs" "$depth")"
	read -r vi vb <<<"$(run_job "$mnt/disk.img" "$rw" "$bs" "$depth")"
	ratio=$(python3 -c "print(f'{$vi / $ri:.2f}' if $ri else 'n/a')")
	printf "%-20s %12s %12s %12.0f %12.0f %7s\n" "$name" "$ri" "$vi" \
		"$(python3 -c "print($rb / 1e6)")" "$(python3 -c "print($vb / 1e6)")" "$ratio"
done

stats=$(cat "$mnt/.vsfs/stats")
python3 - "$stats" <<'PY'
import json, sys
io = json.loads(sys.argv[1])["io"]
print(f"transport: {json.loads(sys.argv[1])['fuse']['transport']}")
print(f"peak in flight: fuse {io['fuse_in_flight_peak']} (client QD max 32), "
      f"device {io['device_in_flight_peak']}")
PY
echo "daemon peak RSS: $(awk '/VmHWM/ {print $2, $3}' "/proc/$pid/status")"
