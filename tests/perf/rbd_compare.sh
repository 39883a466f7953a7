#!/usr/bin/env bash
# rbd_compare.sh: the same fio jobs, in one run, on three RBD images of one Ceph cluster:
#   limit  fio's ioengine=rbd straight on a bare image (librbd, no filesystem, no FUSE);
#   vsfs   a disk file in a vsfs datastore on an image (vsfs-mount rbd:POOL/IMAGE:conf=),
#          fio with io_uring and O_DIRECT on the file;
#   peer   an image exported as a file by qemu-storage-daemon's FUSE export, fio with
#          io_uring and O_DIRECT on the file.
# Jobs: 4 KiB randread and randwrite at QD1 and QD32, 1 MiB sequential read and write at
# QD4, RUNTIME seconds each (1 s ramp first), the three targets one after the other for
# each job. Every image (every disk file) is SIZE bytes and written fully once before
# the first job, so reads hit written data. Prints IOPS (4 KiB) or MiB/s (1 MiB) per
# target, the ratios vsfs/limit and vsfs/peer, and whether the targets are met: vsfs
# >= 0.8x limit at QD32, vsfs >= 1x peer in every job. The targets are reported, not
# enforced; timings vary. Run by hand (not a ctest test), as root (FUSE mounts):
#
#   tests/perf/rbd_compare.sh [-b BIN_DIR] [-s SIZE] [-r RUNTIME_S] [-c CEPH_CONF]
#
# -b  where vsfs-mkfs and vsfs-mount are (default build/bin)
# -s  size of each image and disk file (default 2G; a multiple of 1 MiB)
# -r  seconds per job and target (default 15)
# -c  use the running cluster of CEPH_CONF (its pool `rbd`) instead of starting one with
#     tests/ceph/cluster.sh; the script makes its three images there and removes them.
#     Its [client] section must turn librbd's cache off (`rbd cache = false`).
# Exit status: 0 when every job ran on every target (whatever the ratios), 1 when
# something did not run or a set-up step failed, 2 on a usage or missing-tool error.
#
# Memory: the test cluster's OSD is a memstore, it keeps what is written in RAM: about
# 3x SIZE plus vsfs's metadata (6.5 GiB with the default SIZE), plus ~0.5 GiB for the
# daemons. The script gives the memstore room (VSFS_CEPH_MEMSTORE_BYTES, at least 2x
# that) and refuses to start when MemAvailable is short.
#
# Notes on the targets, checked with QEMU 7.2 (Debian 12), fio 3.33, Ceph 16.2:
# - fio's rbd engine has no option for a ceph.conf path: librados reads $CEPH_CONF,
#   which the script sets. It opens the image as client.admin.
# - qemu-storage-daemon is in Debian's qemu-system-common, its rbd driver in
#   qemu-block-extra (.ci/deps.sh installs both). It runs as
#     qemu-storage-daemon --blockdev driver=rbd,pool=rbd,image=NAME,conf=CONF,
#         cache.direct=on,node-name=n0
#       --export type=fuse,id=e0,node-name=n0,mountpoint=FILE,writable=on
#   cache.direct=on is needed for a fair peer: QEMU's rbd driver sets librbd's
#   rbd_cache itself from the cache mode, whatever ceph.conf says (cache.direct=off,
#   the default, turns the writeback cache on; seen on the client's admin socket).
#   The mountpoint must be an existing regular file (else "Failed to stat"); the export
#   takes the image's size; O_DIRECT opens and io_uring work on it. A bad image or conf
#   makes the daemon exit 1 at once. The daemon does not exit when its export is
#   unmounted: SIGTERM (or SIGINT) ends it, and it unmounts the file itself.
# - vsfs: vsfs-mkfs on an image 1.25x SIZE + 1 GiB (thin: only written blocks take
#   memory), vsfs-mount -f in the background, the disk file made with truncate. The
#   transport to /dev/fuse is vsfs's default for this kernel (printed at the end, with
#   the daemon's peak requests in flight and any device errors it counted).
set -euo pipefail

me=rbd_compare
bin=build/bin
size=2G
runtime=15
ext_conf=
pool=rbd
seq_depth=4
here=$(cd "$(dirname "$0")" && pwd)
cluster_sh=$here/../ceph/cluster.sh

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
die() { echo "$me: $*" >&2; exit 1; }
bad() { echo "$me: $*" >&2; exit 2; }

while getopts "b:s:r:c:h" opt; do
	case $opt in
	b) bin=$OPTARG ;;
	s) size=$OPTARG ;;
	r) runtime=$OPTARG ;;
	c) ext_conf=$OPTARG ;;
	h) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || bad "unexpected argument '$1' (-h for help)"

# ---- checks before anything starts
[[ $runtime =~ ^[1-9][0-9]*$ ]] || bad "-r takes whole seconds, not '$runtime'"
size_bytes=$(numfmt --from=iec "$size" 2>/dev/null) || bad "-s: cannot read size '$size'"
if [ $((size_bytes % (1 << 20))) -ne 0 ] || [ "$size_bytes" -lt $((64 << 20)) ]; then
	bad "-s: $size is not a multiple of 1 MiB of at least 64M"
fi
size_mib=$((size_bytes >> 20))
[ "$(id -u)" -eq 0 ] || bad "needs root (FUSE mounts)"
for p in vsfs-mkfs vsfs-mount; do
	[ -x "$bin/$p" ] || bad "$bin/$p not found (-b BIN_DIR)"
done
bin=$(cd "$bin" && pwd)
for c in fio rbd ceph-conf qemu-storage-daemon fusermount3 python3 numfmt mountpoint; do
	command -v "$c" >/dev/null || bad "$c is not installed (.ci/deps.sh installs what is needed)"
done
fio --enghelp=rbd >/dev/null 2>&1 || bad "this fio has no rbd engine"
if [ -n "$ext_conf" ]; then
	[ -r "$ext_conf" ] || bad "-c: cannot read $ext_conf"
	ext_conf=$(realpath "$ext_conf")
else
	[ -r "$cluster_sh" ] || bad "$cluster_sh not found"
	for c in ceph-mon ceph-osd ceph-mgr ceph; do
		command -v "$c" >/dev/null || bad "$c is not installed (.ci/deps.sh)"
	done
	# What the memstore will hold: three images and vsfs's metadata.
	need=$((3 * size_bytes + size_bytes / 4 + (1 << 30)))
	avail=$(($(awk '/^MemAvailable:/ {print $2}' /proc/meminfo) * 1024))
	[ "$avail" -ge $((need + (1 << 30))) ] ||
		bad "the test cluster keeps about $((need >> 30)) GiB in RAM and $((avail >> 30)) GiB are available: use a smaller -s"
	if [ -z "${VSFS_CEPH_MEMSTORE_BYTES:-}" ]; then
		mb=$((2 * need))
		[ $mb -ge $((10 << 30)) ] || mb=$((10 << 30))
		export VSFS_CEPH_MEMSTORE_BYTES=$mb
	fi
fi

# ---- state, and the cleanup that undoes it
work=$(mktemp -d /tmp/vsfs-rbdcmp.XXXXXX)
tag=${work##*.}
img_limit=rbdcmp-$tag-limit
img_vsfs=rbdcmp-$tag-vsfs
img_peer=rbdcmp-$tag-peer
mnt=$work/mnt
peer_file=$work/peer.img
mkdir -p "$mnt"
: >"$peer_file"
cdir=
conf=
vsfs_pid=
qsd_pid=
images=()

# alive PID: running, not a zombie yet to be reaped.
alive() {
	local st
	st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ]
}
# wait_gone PID TENTHS: up to TENTHS/10 s for PID to exit; then reaps it.
wait_gone() {
	local i
	for ((i = 0; i < $2; i++)); do alive "$1" || break; sleep 0.1; done
	! alive "$1" || return 1
	wait "$1" 2>/dev/null || true
}
# stop_pid PID: SIGTERM, 10 s, then SIGKILL.
stop_pid() {
	kill -TERM "$1" 2>/dev/null || true
	wait_gone "$1" 100 && return 0
	echo "$me: pid $1 did not exit in 10 s, killing it" >&2
	kill -KILL "$1" 2>/dev/null || true
	wait_gone "$1" 50 || true
}
mounted() { grep -q " $1 " /proc/mounts; }

cleanup() {
	local rc=$?
	set +e
	trap '' INT TERM
	if [ $rc -ne 0 ]; then
		local f
		for f in "$work"/vsfs.log "$work"/qsd.log; do
			[ -s "$f" ] || continue
			echo "--- $f (last 20 lines)" >&2
			tail -n 20 "$f" >&2
		done
	fi
	# The peer: SIGTERM makes qemu-storage-daemon unmount its export and exit.
	if [ -n "$qsd_pid" ]; then stop_pid "$qsd_pid"; fi
	if mounted "$peer_file"; then
		fusermount3 -u "$peer_file" 2>/dev/null || umount -l "$peer_file"
	fi
	# vsfs: unmounted, then its daemon (in the foreground) exits on its own.
	if mounted "$mnt"; then
		fusermount3 -u "$mnt" 2>/dev/null || {
			sleep 1
			fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt"
		}
	fi
	if [ -n "$vsfs_pid" ]; then
		wait_gone "$vsfs_pid" 300 || {
			echo "$me: vsfs-mount (pid $vsfs_pid) still runs 30 s after the unmount" >&2
			stop_pid "$vsfs_pid"
		}
	fi
	if [ -n "$ext_conf" ]; then
		local i
		for i in "${images[@]}"; do
			timeout 60 rbd -c "$conf" rm --no-progress "$pool/$i" >/dev/null 2>&1 ||
				echo "$me: could not remove image $pool/$i" >&2
		done
	elif [ -n "$cdir" ]; then
		bash "$cluster_sh" stop "$cdir" || echo "$me: stopping the cluster in $cdir failed" >&2
		rm -rf "$cdir"
	fi
	rm -rf "$work"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the cluster
if [ -n "$ext_conf" ]; then
	conf=$ext_conf
	timeout 30 rbd -c "$conf" ls "$pool" >/dev/null 2>"$work/rbd.err" ||
		die "cannot list pool $pool with $conf: $(tail -n 1 "$work/rbd.err")"
else
	cdir=$(mktemp -d /tmp/vsfs-ceph.XXXXXX)
	echo "starting a test cluster in $cdir" >&2
	conf=$(bash "$cluster_sh" start "$cdir" 2>"$work/cluster.log") || {
		tail -n 40 "$work/cluster.log" >&2
		die "the test cluster did not start"
	}
fi
cache=$(ceph-conf -c "$conf" -n client.admin --lookup rbd_cache 2>/dev/null) || cache="not set"
[ "$cache" = false ] ||
	die "$conf does not turn librbd's cache off for clients (rbd_cache: $cache); add 'rbd cache = false' to its [client] section"
export CEPH_CONF=$conf  # for fio's rbd engine

for i in "$img_limit" "$img_vsfs" "$img_peer"; do
	s=$size_mib
	[ "$i" != "$img_vsfs" ] || s=$((size_mib + size_mib / 4 + 1024))
	rbd -c "$conf" create --size "${s}M" "$pool/$i" 2>"$work/rbd.err" ||
		die "rbd create $pool/$i: $(tail -n 1 "$work/rbd.err")"
	images+=("$i")
done

# ---- vsfs
"$bin/vsfs-mkfs" "rbd:$pool/$img_vsfs:conf=$conf" >"$work/mkfs.log" 2>&1 ||
	{ cat "$work/mkfs.log" >&2; die "vsfs-mkfs failed"; }
# Both daemons run in a session of their own (setsid, no fork: $! is the daemon), out of
# reach of a Ctrl-C meant for the script, which ends them itself.
setsid "$bin/vsfs-mount" -f "rbd:$pool/$img_vsfs:conf=$conf" "$mnt" >"$work/vsfs.log" 2>&1 &
vsfs_pid=$!
for _ in $(seq 300); do
	grep -q " $mnt fuse.vsfs " /proc/mounts && break
	alive "$vsfs_pid" || die "vsfs-mount exited before mounting"
	sleep 0.1
done
grep -q " $mnt fuse.vsfs " /proc/mounts || die "vsfs did not mount in 30 s"
sleep 0.5  # the ring's entries are lent just after INIT
vsfs_disk=$mnt/disk
truncate -s "$size_bytes" "$vsfs_disk"

# ---- the peer
setsid qemu-storage-daemon \
	--blockdev "driver=rbd,pool=$pool,image=$img_peer,conf=$conf,cache.direct=on,node-name=n0" \
	--export "type=fuse,id=e0,node-name=n0,mountpoint=$peer_file,writable=on" \
	</dev/null >"$work/qsd.log" 2>&1 &
qsd_pid=$!
for _ in $(seq 300); do
	mounted "$peer_file" && break
	alive "$qsd_pid" || {
		grep -q "Unknown driver 'rbd'" "$work/qsd.log" &&
			echo "$me: QEMU's rbd driver is missing (Debian: qemu-block-extra)" >&2
		die "qemu-storage-daemon exited before exporting"
	}
	sleep 0.1
done
mounted "$peer_file" || die "qemu-storage-daemon did not export in 30 s"

# ---- fio
# fio_on SECONDS TARGET ARGS...: fio with the ioengine and file options of TARGET and
# ARGS, stopped after SECONDS (a hung IO), in the foreground (a Ctrl-C reaches it).
fio_on() {
	local s=$1 t=$2 e
	shift 2
	case $t in
	limit) e=(--ioengine=rbd --clientname=admin --pool="$pool" --rbdname="$img_limit") ;;
	vsfs) e=(--ioengine=io_uring --direct=1 --filename="$vsfs_disk") ;;
	peer) e=(--ioengine=io_uring --direct=1 --filename="$peer_file") ;;
	esac
	timeout --foreground -k 10 "$s" fio "${e[@]}" "$@"
}
# check_targets: both daemons alive and their files mounted, or the run stops here (fio
# on an unmounted peer file would measure /tmp).
check_targets() {
	if ! alive "$vsfs_pid" || ! grep -q " $mnt fuse.vsfs " /proc/mounts; then
		die "the vsfs daemon exited or its mount went away"
	fi
	if ! alive "$qsd_pid" || ! mounted "$peer_file"; then
		die "qemu-storage-daemon exited or its export went away"
	fi
}
# fio_ok STATUS WHAT: 0 for fio's 0; stops the run on an interrupted fio (128: it
# caught SIGINT or SIGTERM; bash runs no trap for a signal its child handled).
fio_ok() {
	[ "$1" -ne 0 ] || return 0
	[ "$1" -ne 128 ] || { echo "$me: interrupted during $2" >&2; exit 130; }
	[ "$1" -ne 124 ] || echo "$me: $2: fio did not finish in time, stopped" >&2
	return 1
}
fio_timeout=$((runtime + 120))
fill_timeout=$((size_mib / 5 + 120))  # at 5 MiB/s
targets=(limit vsfs peer)

echo "$me: SIZE $size per target, ${runtime}s per job; writing the three images fully" >&2
for t in "${targets[@]}"; do
	check_targets
	a=$(date +%s%N)
	st=0
	fio_on $fill_timeout "$t" --name=fill --size="$size_bytes" --rw=write --bs=1M --iodepth=8 \
		--output="$work/fill-$t.json" --output-format=json 2>"$work/fill-$t.err" || st=$?
	fio_ok $st "writing the $t image" || { cat "$work/fill-$t.err" >&2; die "writing the $t image failed"; }
	echo "$me:   $t: $(( size_bytes * 1000 / ($(date +%s%N) - a) ))" MB/s >&2
done

# run_job TARGET RW BS DEPTH -> "iops MiB/s"; fails when fio fails or reports an error.
run_job() {
	local t=$1 out=$work/$1-$2-$3-$4 st=0
	fio_on $fio_timeout "$t" --name=j --size="$size_bytes" --rw="$2" --bs="$3" --iodepth="$4" \
		--runtime="$runtime" --time_based --ramp_time=1 --randrepeat=0 \
		--output="$out.json" --output-format=json 2>"$out.err" || st=$?
	fio_ok $st "$2 bs=$3 QD$4 on $t" || {
		echo "$me: fio $2 bs=$3 QD$4 on $t failed ($st): $(tail -n 3 "$out.err" | tr '\n' ' ')" >&2
		return 1
	}
	python3 - "$out.json" <<-'PY'
		import json, sys
		j = json.load(open(sys.argv[1]))["jobs"][0]
		if j["error"]:
		    sys.exit("fio reported error %d" % j["error"])
		iops = j["read"]["iops"] + j["write"]["iops"]
		mib = (j["read"]["bw_bytes"] + j["write"]["bw_bytes"]) / 2**20
		print("%.0f %.1f" % (iops, mib))
	PY
}

# name rw bs iodepth unit
jobs=(
	"randread-4k-qd1 randread 4k 1 IOPS"
	"randread-4k-qd32 randread 4k 32 IOPS"
	"randwrite-4k-qd1 randwrite 4k 1 IOPS"
	"randwrite-4k-qd32 randwrite 4k 32 IOPS"
	"read-1m-qd$seq_depth read 1M $seq_depth MiB/s"
	"write-1m-qd$seq_depth write 1M $seq_depth MiB/s"
)
failed=0
rows=()
for j in "${jobs[@]}"; do
	read -r name rw bs depth unit <<<"$j"
	row="$name $unit"
	for t in "${targets[@]}"; do
		echo "$me: $name on $t" >&2
		check_targets
		st=0
		r=$(run_job "$t" "$rw" "$bs" "$depth") || st=$?
		[ $st -ne 130 ] || exit 130
		if [ $st -eq 0 ]; then
			read -r iops mib <<<"$r"
			if [ "$unit" = IOPS ]; then row+=" $iops"; else row+=" $mib"; fi
		else
			failed=1
			row+=" -"
		fi
	done
	rows+=("$row")
done

# ---- the table and the targets
echo
echo "rbd_compare: SIZE $size, ${runtime}s per job, pool $pool; limit = fio rbd engine on a bare image,"
echo "vsfs = disk file in a vsfs datastore on RBD, peer = qemu-storage-daemon FUSE export of RBD"
printf '%s\n' "${rows[@]}" | python3 -c '
import sys
rows = [l.split() for l in sys.stdin if l.strip()]
num = lambda s: None if s == "-" else float(s)
def ratio(a, b):
    return None if a is None or not b else a / b
fmt = lambda r: "-" if r is None else "%.2f" % r
print("%-18s %-6s %9s %9s %9s %11s %10s" % ("job", "unit", "limit", "vsfs", "peer", "vsfs/limit", "vsfs/peer"))
checks = []
for name, unit, *v in rows:
    lim, vs, peer = map(num, v)
    rl, rp = ratio(vs, lim), ratio(vs, peer)
    print("%-18s %-6s %9s %9s %9s %11s %10s" % (name, unit, *v, fmt(rl), fmt(rp)))
    if "qd32" in name:
        checks.append((name, "vsfs >= 0.8x limit", rl, 0.8))
    checks.append((name, "vsfs >= 1x peer", rp, 1.0))
print()
print("targets (reported, not enforced):")
for name, what, r, goal in checks:
    verdict = "not run" if r is None else ("met" if r >= goal else "NOT met")
    print("  %-18s %-19s %-8s (%s)" % (name, what, verdict, fmt(r)))
'

# ---- what the vsfs daemon saw
python3 - "$mnt/.vsfs/stats" <<'PY' || echo "rbd_compare: could not read $mnt/.vsfs/stats" >&2
import json, sys
d = json.load(open(sys.argv[1]))
io, h = d["io"], d["health"]
print()
print("vsfs: transport %s; peak in flight: fuse %s, device %s; health %s, device errors: "
      "read %s, write %s" % (d["fuse"]["transport"], io["fuse_in_flight_peak"],
      io["device_in_flight_peak"], h["state"], h["device_read_errors"],
      h["device_write_errors"]))
PY
echo "vsfs daemon peak RSS: $(awk '/VmHWM/ {print $2, $3}' "/proc/$vsfs_pid/status")"
odd=$(grep -Eci 'error|warn|fail' "$work/vsfs.log" || true)
if [ "$odd" -gt 0 ]; then
	echo "vsfs log: $odd lines with error/warn/fail, the first ones:"
	grep -Ei 'error|warn|fail' "$work/vsfs.log" | head -n 5 | sed 's/^/  /'
fi
odd=$(grep -Eci 'error|warn|fail' "$work/qsd.log" || true)
if [ "$odd" -gt 0 ]; then
	echo "qemu-storage-daemon log: $odd lines with error/warn/fail, the first ones:"
	grep -Ei 'error|warn|fail' "$work/qsd.log" | head -n 5 | sed 's/^/  /'
fi
if [ $failed -ne 0 ]; then
	echo "$me: some jobs did not run (see above)" >&2
	exit 1
fi
