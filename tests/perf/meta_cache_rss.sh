#!/usr/bin/env bash
# meta_cache_rss.sh: the daemon's memory with a large datastore, against the metadata
# cache budget ([journal] meta_cache_mib). Makes a sparse datastore file of SIZE
# (default 64G), fills a DISK-sized file in it (default 60G; sequential 1 MiB O_DIRECT
# writes, so every map leaf exists), unmounts, then for the default budget and for
# REF_MIB (a budget that holds all the metadata) mounts it again and runs 4 KiB random
# reads and writes over the whole file at QD32 for RUNTIME seconds. It prints the
# daemon's peak RSS (VmHWM) after the fill and after each random run, the meta_cache
# section of .vsfs/stats and the IOPS. Run by hand from a build tree (needs fio, root
# for the FUSE mount, and DISK of free space in the work directory's filesystem):
#
#   tests/perf/meta_cache_rss.sh [-b BUILD_DIR] [-s SIZE] [-w DISK] [-r RUNTIME_S]
#                                [-m REF_MIB]
#
# The fill writes DISK at the device's speed (about 1 GB/s here: a minute for 60 GiB).
set -euo pipefail

build=build size=64G disk=60G runtime=20 ref_mib=512
while getopts "b:s:w:r:m:h" o; do
	case $o in
	b) build=$OPTARG ;;
	s) size=$OPTARG ;;
	w) disk=$OPTARG ;;
	r) runtime=$OPTARG ;;
	m) ref_mib=$OPTARG ;;
	*) sed -n '2,15p' "$0"; exit 2 ;;
	esac
done
command -v fio >/dev/null || { echo "meta_cache_rss: fio is not installed" >&2; exit 2; }
for p in vsfs-mkfs vsfs-mount; do
	[ -x "$build/bin/$p" ] || { echo "meta_cache_rss: $build/bin/$p not found (-b BUILD_DIR)" >&2; exit 2; }
done
bin=$(cd "$build/bin" && pwd)
. "$(dirname "$0")/lib.sh"
pid=
cleanup() {
	if mountpoint -q "$m" 2>/dev/null; then
		fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	fi
	if [ -n "$pid" ]; then
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill "$pid" 2>/dev/null || true
	fi
	perf_cleanup
}
trap cleanup EXIT
trap "exit 143" TERM INT

disk_bytes=$(numfmt --from=iec "$disk")
free_bytes=$(( $(df --output=avail -k "$work" | tail -1) * 1024 ))
if [ "$free_bytes" -lt $((disk_bytes + (1 << 30))) ]; then
	echo "meta_cache_rss: $disk needs $(numfmt --to=iec $((disk_bytes + (1 << 30)))) free in $work, only $(numfmt --to=iec "$free_bytes"): use -w" >&2
	exit 2
fi

# mount_daemon [vsfs-mount -o options]: starts the daemon in the foreground (pid in $pid).
mount_daemon() {
	"$bin/vsfs-mount" -f ${1:+-o "$1"} "$work/ds.img" "$m" >>"$work/daemon.log" 2>&1 &
	pid=$!
	for _ in $(seq 100); do grep -q " $m fuse.vsfs " /proc/mounts && break; sleep 0.1; done
	grep -q " $m fuse.vsfs " /proc/mounts || { cat "$work/daemon.log" >&2; exit 1; }
}
unmount_daemon() {
	fusermount3 -u "$m"
	for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	pid=
}
hwm() { awk '/VmHWM/ {print $2, $3}' "/proc/$pid/status"; }
rss() { awk '/VmRSS/ {print $2, $3}' "/proc/$pid/status"; }
cache() {
	st "' '.join(f'{k}={v}' for k, v in d['meta_cache'].items())"
}

"$bin/vsfs-mkfs" -s "$size" "$work/ds.img" >/dev/null
mount_daemon
a=$(us)
fio --name=fill --filename="$m/disk.img" --size="$disk" --bs=1M --rw=write --direct=1 \
	--ioengine=io_uring --iodepth=8 --end_fsync=1 >/dev/null
b=$(us)
echo "fill $disk (1 MiB sequential, QD8): $(echo "scale=2; $disk_bytes / ($b - $a) / 1000" | bc) GB/s"
echo "  peak RSS $(hwm), RSS now $(rss)"
echo "  meta_cache: $(cache)"
unmount_daemon

# random_run LABEL [options]: mounts with the options, 4 KiB random IO over the disk.
random_run() {
	mount_daemon "${2:-}"
	fio --name=rand --filename="$m/disk.img" --size="$disk" --bs=4k --rw=randrw --rwmixread=50 \
		--direct=1 --ioengine=io_uring --iodepth=32 --runtime="$runtime" --time_based \
		--norandommap --randrepeat=0 --output-format=json >"$work/rand.json"
	local iops
	iops=$(python3 -c "import json; j = json.load(open('$work/rand.json'))['jobs'][0]; print(f\"read {j['read']['iops']:.0f} IOPS, write {j['write']['iops']:.0f} IOPS\")")
	echo "$1: 4 KiB randrw 50/50 QD32 ${runtime} s over $disk: $iops"
	echo "  peak RSS $(hwm), RSS now $(rss)"
	echo "  meta_cache: $(cache)"
	unmount_daemon
}
random_run "default budget"
random_run "reference (meta_cache_mib=$ref_mib)" "meta_cache_mib=$ref_mib"
