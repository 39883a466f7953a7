#!/usr/bin/env bash
# coalesce_compare.sh: the same fio jobs on two vsfs mounts in one run, one with the
# coalescing queue on and one with -o coalesce=off, with the ratios on/off (issue 7
# targets: 4 KiB sequential O_DIRECT at QD32 >= 4x fewer device IOs than requests and
# >= 1.5x the throughput of off; 4 KiB random QD1 latency within 5 % of off). Device IOs
# per request = the change in .vsfs/stats io.device_ops (read or write) over fio's
# requests for the job. Jobs alternate between the two mounts, each on its own datastore
# file with its own daemon, so both see the same host conditions; the two files swap
# roles at every repeat (remounted with the other setting), so where each file lies on
# the disk below does not favour one side. Run by hand from a build tree:
#
#   tests/perf/coalesce_compare.sh [-b BUILD_DIR] [-d WORK_DIR] [-s FILE_SIZE]
#                                  [-r RUNTIME_S] [-n REPEATS] [-o "extra -o options"]
#                                  [-l DEVICE_IOPS]
#
# -l caps the device IOs per second of both daemons (each direction) with the block
# cgroup's throttle on the disk under WORK_DIR, as on a volume provisioned for so many
# IOPS (a cloud disk, a SAN LUN with a QoS limit): where each device IO has a price, as
# opposed to this machine's local disk, whose 4 KiB rate is above what requests through
# FUSE reach. The cap applies from the first job on, after the disks are laid out.
#
# WORK_DIR (default: a new directory under the current one) holds the two datastore
# files and mount points; it is removed at the end. REPEATS (default 2) runs every job
# that many times per side and reports the median. Needs fio and root (FUSE mount).
# Not a ctest test: timings vary.
set -euo pipefail

build=build
work=
size=1G
runtime=10
repeats=2
extra_opts=
iops_cap=
while getopts "b:d:s:r:n:o:l:h" opt; do
	case $opt in
	b) build=$OPTARG ;;
	d) work=$OPTARG ;;
	s) size=$OPTARG ;;
	r) runtime=$OPTARG ;;
	n) repeats=$OPTARG ;;
	o) extra_opts=$OPTARG ;;
	l) iops_cap=$OPTARG ;;
	*) sed -n '2,25p' "$0"; exit 2 ;;
	esac
done
[[ -z $iops_cap || $iops_cap =~ ^[1-9][0-9]*$ ]] ||
	{ echo "coalesce_compare: -l takes a number of IOPS, not '$iops_cap'" >&2; exit 2; }
command -v fio >/dev/null || { echo "coalesce_compare: fio is not installed" >&2; exit 2; }
bin=$build/bin
for p in vsfs-mkfs vsfs-mount; do
	[ -x "$bin/$p" ] || { echo "coalesce_compare: $bin/$p not found (-b BUILD_DIR)" >&2; exit 2; }
done
if [ -z "$work" ]; then work=$(mktemp -d "$PWD/vsfs-coalesce.XXXXXX"); else mkdir -p "$work"; fi
work=$(cd "$work" && pwd)
declare -A pid=()
cgroup=

cleanup() {
	for side in on off; do
		local m=$work/mnt-$side
		if mountpoint -q "$m" 2>/dev/null; then
			fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
		fi
		local p=${pid[$side]:-}
		if [ -n "$p" ]; then
			for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
			kill "$p" 2>/dev/null || true
		fi
	done
	[ -z "$cgroup" ] || rmdir "$cgroup" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
trap "exit 143" TERM INT

size_bytes=$(numfmt --from=iec "$size")
ds_bytes=$((size_bytes * 2 + (1 << 30)))
for f in a b; do "$bin/vsfs-mkfs" -s "$ds_bytes" "$work/ds-$f.img" >/dev/null; done
mkdir -p "$work/mnt-on" "$work/mnt-off"

# mount_pair ROUND: datastore a on the side `on` and b on `off` in even rounds, the other
# way round in odd ones; each daemon's pid in pid[SIDE].
mount_pair() {
	local files=(a b) side i=0
	[ $(($1 % 2)) = 0 ] || files=(b a)
	for side in on off; do
		local mnt=$work/mnt-$side
		"$bin/vsfs-mount" -f -o "coalesce=$side${extra_opts:+,$extra_opts}" \
			"$work/ds-${files[$i]}.img" "$mnt" >"$work/daemon-$side.log" 2>&1 &
		pid[$side]=$!
		i=$((i + 1))
		for _ in $(seq 100); do grep -q " $mnt fuse.vsfs " /proc/mounts && break; sleep 0.1; done
		grep -q " $mnt fuse.vsfs " /proc/mounts || { cat "$work/daemon-$side.log" >&2; exit 1; }
	done
	[ -z "$iops_cap" ] || cap_iops "${pid[on]}" "${pid[off]}"
}

# unmount_pair: both unmounted and their daemons gone.
unmount_pair() {
	local side
	for side in on off; do
		fusermount3 -u "$work/mnt-$side"
		for _ in $(seq 100); do kill -0 "${pid[$side]}" 2>/dev/null || break; sleep 0.1; done
		pid[$side]=
	done
}

# cap_iops PID...: the daemons' device IOs limited to iops_cap per second each way, in a
# block cgroup of their own (cgroup v2 io.max, or v1 blkio throttle), on the whole disk
# that holds WORK_DIR.
cap_iops() {
	if [ -n "$cgroup" ]; then
		for p in "$@"; do echo "$p" >"$cgroup/cgroup.procs"; done
		return
	fi
	local devno sys
	devno=$(stat -c '%Hd:%Ld' "$work")
	sys=/sys/dev/block/$devno
	[ -e "$sys" ] || { echo "coalesce_compare: $work is not on a block device" >&2; exit 2; }
	[ -e "$sys/partition" ] && devno=$(cat "$(readlink -f "$sys")/../dev")
	if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
		grep -qw io /sys/fs/cgroup/cgroup.controllers ||
			{ echo "coalesce_compare: no io cgroup controller" >&2; exit 2; }
		echo +io >/sys/fs/cgroup/cgroup.subtree_control
		cgroup=/sys/fs/cgroup/vsfs-coalesce.$$
		mkdir "$cgroup"
		echo "$devno riops=$iops_cap wiops=$iops_cap" >"$cgroup/io.max"
	else
		[ -d /sys/fs/cgroup/blkio ] || { echo "coalesce_compare: no blkio cgroup" >&2; exit 2; }
		cgroup=/sys/fs/cgroup/blkio/vsfs-coalesce.$$
		mkdir "$cgroup"
		echo "$devno $iops_cap" >"$cgroup/blkio.throttle.read_iops_device"
		echo "$devno $iops_cap" >"$cgroup/blkio.throttle.write_iops_device"
	fi
	for p in "$@"; do echo "$p" >"$cgroup/cgroup.procs"; done
	echo "device IOs capped at $iops_cap/s each way on $devno (${cgroup})"
}
# Lay the disks out fully, so reads hit written data and writes go in place; the cap
# starts after this.
cap=$iops_cap
iops_cap=
mount_pair 0
for side in on off; do
	fio --name=layout --filename="$work/mnt-$side/disk.img" --size="$size" --ioengine=io_uring \
		--direct=1 --rw=write --bs=1M --iodepth=8 >/dev/null
	sync "$work/mnt-$side/disk.img"
done
unmount_pair
iops_cap=$cap

# stats SIDE -> "device_reads device_writes coalesce_merged coalesce_held"
stats() {
	python3 - "$work/mnt-$1/.vsfs/stats" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
ops = d["io"]["device_ops"]
c = d.get("coalesce", {})
print(ops["read"], ops["write"], c.get("merged", 0), c.get("held", 0))
PY
}

# run_job SIDE RW BS DEPTH -> "requests bw_bytes_per_s mean_lat_us dev_ios merged"
run_job() {
	local side=$1 rw=$2 bs=$3 depth=$4
	local before after
	before=$(stats "$side")
	local out
	out=$(fio --name=j --filename="$work/mnt-$side/disk.img" --size="$size" --ioengine=io_uring \
		--direct=1 --rw="$rw" --bs="$bs" --iodepth="$depth" --runtime="$runtime" --time_based \
		--randrepeat=0 --output-format=json 2>/dev/null)
	after=$(stats "$side")
	python3 - "$out" "$before" "$after" "$rw" <<'PY'
import json, sys
j = json.loads(sys.argv[1])["jobs"][0]
b = [int(x) for x in sys.argv[2].split()]
a = [int(x) for x in sys.argv[3].split()]
write = "write" in sys.argv[4]
d = j["write"] if write else j["read"]
dev = (a[1] - b[1]) if write else (a[0] - b[0])
print(d["total_ios"], d["bw_bytes"], d["lat_ns"]["mean"] / 1000.0, dev, a[2] - b[2])
PY
}

median() { python3 -c 'import sys, statistics; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

# name rw bs depth
jobs=(
	"seqwrite-4k-qd32 write 4k 32"
	"seqread-4k-qd32 read 4k 32"
	"randwrite-4k-qd1 randwrite 4k 1"
	"randread-4k-qd1 randread 4k 1"
	"randwrite-4k-qd32 randwrite 4k 32"
	"randread-4k-qd32 randread 4k 32"
)

# Every repeat mounts the pair the other way round and runs every job on both sides.
declare -A bw=() lat=() per=()  # by "JOB SIDE": the repeats' values
for round in $(seq "$repeats"); do
	mount_pair $((round - 1))
	for jspec in "${jobs[@]}"; do
		read -r name rw bs depth <<<"$jspec"
		for side in on off; do
			read -r r b l d _m <<<"$(run_job "$side" "$rw" "$bs" "$depth")"
			bw[$name $side]+=" $b"
			lat[$name $side]+=" $l"
			per[$name $side]+=" $(python3 -c "print($d / $r if $r else 0)")"
		done
	done
	[ "$round" = "$repeats" ] || unmount_pair
done

printf "%-18s %9s %9s %7s %9s %9s %9s %9s %7s %7s\n" job on_MB/s off_MB/s bw_x on_lat_us \
	off_lat_us lat_x on_dev/req off_dev/req ios_x
for jspec in "${jobs[@]}"; do
	read -r name _ <<<"$jspec"
	# shellcheck disable=SC2086  # word lists
	python3 - "$name" "$(median ${bw[$name on]})" "$(median ${bw[$name off]})" \
		"$(median ${lat[$name on]})" "$(median ${lat[$name off]})" \
		"$(median ${per[$name on]})" "$(median ${per[$name off]})" <<'PY'
import sys
name = sys.argv[1]
bon, boff, lon, loff, pon, poff = (float(x) for x in sys.argv[2:])
print("%-18s %9.1f %9.1f %7.2f %9.1f %9.1f %9.3f %9.3f %9.3f %7s" % (
    name, bon / 1e6, boff / 1e6, bon / boff if boff else 0, lon, loff,
    lon / loff if loff else 0, pon, poff, ("%.1f" % (poff / pon)) if pon else "n/a"))
PY
done

python3 - "$work/mnt-on/.vsfs/stats" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))["coalesce"]
print("coalesce (on, last repeat): requests_in %d ios_out %d merged %d held %d deadline_flushes %d "
      "full_flushes %d hold_us p50 %d p99 %d max %d" % (
          c["requests_in"], c["ios_out"], c["merged"], c["held"], c["deadline_flushes"],
          c["full_flushes"], c["hold_us"]["p50"], c["hold_us"]["p99"], c["hold_us"]["max"]))
PY
for side in on off; do
	transport=$(python3 -c "import json; print(json.load(open('$work/mnt-$side/.vsfs/stats'))['fuse']['transport'])")
	echo "daemon ($side) transport: $transport, peak RSS: $(awk '/VmHWM/ {print $2, $3}' "/proc/${pid[$side]}/status")"
done
