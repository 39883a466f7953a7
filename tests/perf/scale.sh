#!/usr/bin/env bash
# scale.sh: how vsfs scales with the size of the datastore. For each size, on a sparse
# image file, one empty and one written datastore:
#   - vsfs-mkfs time
#   - mount time (vsfs-mount -f started until the mount shows in /proc/mounts as
#     fuse.vsfs) and the daemon's VmRSS just after (its first answer, then 1 s)
#   - the daemon's VmRSS after WRITE (default 10G) of 4 KiB random writes (fio, QD32,
#     O_DIRECT, io_uring) into one thin disk file, fsynced
#   - unmount time (fusermount3 -u until the daemon has exited)
#   - vsfs-fsck -n wall time and maximum RSS (/usr/bin/time -v)
#   - the daemon killed with -9 under a 4 KiB random-write load, then mounted again: the
#     blocks that recovery moved back to be formatted (space.crash_reformat_blocks) and
#     the bytes the formatter then formatted in that mount
#     (format.formatted_bytes_total, waited for at most 120 s)
# The empty row is the fresh datastore: mkfs, mount, RSS, unmount, fsck. The written row
# is that datastore mounted again and written; its umount_s is the clean unmount after
# the writes, its mount_s and rss_mount_MiB the clean mount that follows; then comes the
# kill -9, the recovery mount, the formatter, an unmount and fsck. At the end: the ratios
# largest / smallest size. Run by hand from a build tree, as root:
#
#   tests/perf/scale.sh [-b BUILD_DIR] [-S "1T 15T 64T"] [-w WRITE] [-d PARENT_DIR]
#                       [-m FSCK_MEM_MIB] [-x] [-k]
#
# -d: the work directory is a new directory in PARENT_DIR (default /var/tmp), removed at
# the end unless -k. A datastore larger than 15 TiB does not fit in a sparse file on ext4
# (16 TiB at most): it goes in a sparse file on an XFS filesystem made in a sparse 15 TiB
# image in the work directory on a loop device (XFS allows a sparse file larger than the
# filesystem); -x puts every size there, so that all sizes see the same IO stack. Needs
# fio, fusermount3, losetup, and installs xfsprogs and time with apt-get when mkfs.xfs or
# /usr/bin/time is missing.
# -m: vsfs-fsck runs with its virtual memory limited (ulimit -v) to FSCK_MEM_MIB, by
# default three quarters of MemAvailable, so that it fails instead of calling the OOM
# killer on the machine; 0 = no limit. A failed vsfs-fsck is shown as FAIL and the
# script goes on, then exits 1. Any other failing step stops it (exit 1, with the
# results so far). Timings are not checked: nothing here fails on a slow step.
# Host space: the fixed regions vsfs-mkfs allocates (half a GiB per TiB, plus the
# journal) and about twice WRITE per size, one size at a time (each image is removed
# once measured, unless -k).
set -euo pipefail

build=build
parent=/var/tmp
sizes="1T 15T 64T"
wsize=10G
keep=
all_xfs=
fsck_mem=
while getopts "b:d:S:w:m:xkh" opt; do
	case $opt in
	b) build=$OPTARG ;;
	d) parent=$OPTARG ;;
	S) sizes=$OPTARG ;;
	w) wsize=$OPTARG ;;
	m) fsck_mem=$OPTARG ;;
	x) all_xfs=1 ;;
	k) keep=1 ;;
	*) awk 'NR > 1 && !/^#/ { exit } NR > 1 { print }' "$0"; exit 2 ;;
	esac
done

die() { echo "scale: $*" >&2; exit 1; }
say() { echo "scale: $(date +%T) $*" >&2; }

[ "$(id -u)" = 0 ] || die "needs root (FUSE and loop mounts)"
bin=$build/bin
for p in vsfs-mkfs vsfs-mount vsfs-fsck; do
	[ -x "$bin/$p" ] || die "$bin/$p not found (-b BUILD_DIR)"
done
bin=$(cd "$bin" && pwd)
for p in fio fusermount3 losetup numfmt python3; do
	command -v "$p" >/dev/null || die "$p is not installed"
done
wbytes=$(numfmt --from=iec "$wsize")
declare -a size_list=()
read -r -a size_list <<<"$sizes"
[ ${#size_list[@]} -gt 0 ] || die "no sizes (-S)"
declare -A sbytes=()
for s in "${size_list[@]}"; do sbytes[$s]=$(numfmt --from=iec "$s"); done
if [ -z "$fsck_mem" ]; then
	fsck_mem=$(awk '/^MemAvailable:/ {print int($2 / 1024 * 3 / 4)}' /proc/meminfo)
fi
ext4_max=$((15 << 40))  # larger datastores go on the XFS (a file on ext4 < 16 TiB)
crash_after=3           # seconds of fio load before the kill -9
format_wait=120         # seconds at most for the formatter after the recovery mount
mount_wait=600          # seconds at most for a mount or a daemon's exit

apt_install() {
	say "installing $1"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1" >/dev/null ||
		die "apt-get install $1 failed"
}
[ -x /usr/bin/time ] || apt_install time
need_xfs=
for s in "${size_list[@]}"; do
	if [ -n "$all_xfs" ] || [ "${sbytes[$s]}" -gt "$ext4_max" ]; then need_xfs=1; fi
done
if [ -n "$need_xfs" ] && ! command -v mkfs.xfs >/dev/null; then apt_install xfsprogs; fi

mkdir -p "$parent"
work=$(mktemp -d "$(cd "$parent" && pwd)/vsfs-scale.XXXXXX")
mnt=$work/mnt
mkdir -p "$mnt"
pid=      # the vsfs-mount daemon running now
fio_pid=  # the fio of the kill -9 test while it runs
loop=     # the loop device of the XFS
xfs_mnt=  # where the XFS is mounted
img=      # the datastore image of the size being measured
declare -a rows=() notes=() done_sizes=()
declare -A V=()  # V[size/phase/key]: the measured values
failed=
reported=

# alive PID WORD: PID runs (not a zombie) and its command line holds WORD; so a pid that
# bash reaped and the system gave to another process is never signalled.
alive() {
	local state
	state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	# (the process may exit between the two reads: no message then either)
	[ -n "$state" ] && [ "$state" != Z ] && { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null | grep -qF -- "$2"
}
mounted() { grep -qF " $1 " /proc/mounts; }

cleanup() {
	local rc=$?
	set +e
	trap - EXIT
	if [ "$rc" != 0 ] && [ -z "$reported" ] && [ ${#rows[@]} -gt 0 ]; then
		echo "scale: failed (status $rc); results so far:" >&2
		report >&2
	fi
	if [ -n "$fio_pid" ] && alive "$fio_pid" "$mnt"; then kill "$fio_pid"; wait "$fio_pid" 2>/dev/null; fi
	if mounted "$mnt"; then
		fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt"
	fi
	if [ -n "$pid" ]; then
		for _ in $(seq 300); do alive "$pid" "$mnt" || break; sleep 0.1; done
		if alive "$pid" "$mnt"; then kill "$pid"; sleep 5; fi
		alive "$pid" "$mnt" && kill -9 "$pid"
		wait "$pid" 2>/dev/null
	fi
	if [ -n "$xfs_mnt" ] && mountpoint -q "$xfs_mnt"; then umount "$xfs_mnt" || umount -l "$xfs_mnt"; fi
	[ -z "$loop" ] || losetup -d "$loop"
	if [ -n "$keep" ]; then
		echo "scale: kept $work${loop:+ (the XFS is $work/xfs.img: mount -o loop $work/xfs.img DIR)}" >&2
	else
		rm -rf "$work"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'; }
mib() { awk -v v="$1" 'BEGIN { printf "%.1f", v / 1048576 }'; }
gib() { awk -v v="$1" 'BEGIN { printf "%.1f", v / 1073741824 }'; }
# st EXPR: a value of the mount's .vsfs/stats, EXPR in Python over the JSON `d`.
st() { python3 -c "import json; d=json.load(open('$mnt/.vsfs/stats')); print($1)"; }
rss_mib() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status"; }
# host_bytes: what the datastore costs the host filesystem of the work directory now.
host_bytes() {
	local f=$img
	[ -z "$xfs_mnt" ] || [[ $img != "$xfs_mnt"/* ]] || f=$work/xfs.img
	stat -c '%b %B' "$f" | awk '{ print $1 * $2 }'
}

setup_xfs() {
	[ -z "$xfs_mnt" ] || return 0
	say "making an XFS on a sparse 15 TiB image on a loop device"
	truncate -s 15T "$work/xfs.img"
	loop=$(losetup -f --show "$work/xfs.img")
	mkfs.xfs -q -K "$loop"
	mkdir -p "$work/xfs"
	mount "$loop" "$work/xfs"
	xfs_mnt=$work/xfs
}

# start_daemon LOG: vsfs-mount -f of $img on $mnt; sets pid and mount_s.
start_daemon() {
	local t0 t rc=0
	t0=$(now)
	"$bin/vsfs-mount" -f "$img" "$mnt" >"$1" 2>&1 &
	pid=$!
	until grep -qF " $mnt fuse.vsfs " /proc/mounts; do
		if ! alive "$pid" "$mnt"; then
			wait "$pid" || rc=$?
			pid=
			cat "$1" >&2
			die "vsfs-mount exited with status $rc before mounting"
		fi
		t=$(now)
		[ $(((t - t0) / 1000000000)) -lt "$mount_wait" ] || die "not mounted after $mount_wait s (log: $1)"
		sleep 0.01
	done
	mount_s=$(secs "$t0" "$(now)")
	st "d['datastore']['uuid']" >/dev/null  # it answers
}

# stop_daemon LOG: fusermount3 -u, until the daemon has exited; sets umount_s.
stop_daemon() {
	local t0 t rc=0
	t0=$(now)
	fusermount3 -u "$mnt"
	while alive "$pid" "$mnt"; do
		t=$(now)
		[ $(((t - t0) / 1000000000)) -lt "$mount_wait" ] || die "the daemon is still running $mount_wait s after the unmount"
		sleep 0.01
	done
	umount_s=$(secs "$t0" "$(now)")
	wait "$pid" || rc=$?
	pid=
	[ "$rc" = 0 ] || { tail -20 "$1" >&2; die "vsfs-mount exited with status $rc"; }
}

# run_fsck LOG: vsfs-fsck -n of $img; sets fsck_s and fsck_rss ("FAIL" when it failed).
run_fsck() {
	local rc=0
	(
		ulimit -c 0
		[ "$fsck_mem" = 0 ] || ulimit -v $((fsck_mem * 1024))
		exec /usr/bin/time -v "$bin/vsfs-fsck" -n "$img"
	) >"$1" 2>&1 || rc=$?
	fsck_s=$(awk -F': ' '/Elapsed \(wall clock\)/ {
		n = split($2, a, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + a[i]; printf "%.2f", s }' "$1")
	fsck_rss=$(awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$1")
	if [ "$rc" != 0 ]; then
		echo "scale: vsfs-fsck -n $img failed (status $rc, limit ${fsck_mem} MiB of virtual memory):" >&2
		grep -v '^	' "$1" | tail -5 >&2
		notes+=("$size: vsfs-fsck failed (status $rc) after ${fsck_s:-?} s at ${fsck_rss:-?} MiB RSS (virtual memory limit ${fsck_mem} MiB)")
		fsck_s="FAIL" fsck_rss="FAIL"
		failed=1
	fi
}

# wait_formatter: until nothing is left to format, or the to-be-formatted count and the
# formatted bytes stay the same for 5 s, at most $format_wait s; sets format_s.
wait_formatter() {
	local t0 t cur last="" same=0
	t0=$(now)
	while :; do
		cur=$(st "d['format']['to_format_blocks'], d['format']['formatted_bytes_total'], d['format']['running']")
		[[ $cur != "0 "*" False" ]] || break
		if [ "$cur" = "$last" ]; then same=$((same + 1)); else same=0; fi
		[ "$same" -lt 10 ] || break
		last=$cur
		t=$(now)
		if [ $(((t - t0) / 1000000000)) -ge "$format_wait" ]; then
			notes+=("$size: the formatter was not done after $format_wait s (to format, formatted bytes, running: $cur)")
			break
		fi
		sleep 0.5
	done
	format_s=$(secs "$t0" "$(now)")
}

row() {  # SIZE PHASE: a table line from V
	local k p="$1/$2" out
	out=$(printf "%-6s %-8s" "$1" "$2")
	for k in mkfs_s mount_s rss_mount rss_written fsck_s fsck_rss umount_s crash_reformat formatted_after_crash; do
		out+=$(printf " %*s" "${width[$k]}" "${V[$p/$k]:--}")
	done
	echo "$out"
}
declare -A width=([mkfs_s]=7 [mount_s]=8 [rss_mount]=13 [rss_written]=15 [fsck_s]=8 [fsck_rss]=12
	[umount_s]=8 [crash_reformat]=18 [formatted_after_crash]=25)

report() {
	local r n small="" large="" s ph k line
	printf "%-6s %-8s %7s %8s %13s %15s %8s %12s %8s %18s %25s\n" size phase mkfs_s mount_s \
		rss_mount_MiB rss_written_MiB fsck_s fsck_rss_MiB umount_s crash_reformat_MiB formatted_after_crash_MiB
	for r in "${rows[@]}"; do echo "$r"; done
	if [ ${#notes[@]} -gt 0 ]; then
		echo
		for n in "${notes[@]}"; do echo "$n"; done
	fi
	for s in "${done_sizes[@]}"; do
		if [ -z "$small" ] || [ "${sbytes[$s]}" -lt "${sbytes[$small]}" ]; then small=$s; fi
		if [ -z "$large" ] || [ "${sbytes[$s]}" -gt "${sbytes[$large]}" ]; then large=$s; fi
	done
	[ -n "$small" ] && [ "$small" != "$large" ] || return 0
	echo
	printf "%-20s %8s %14s %16s %8s %13s\n" "ratio $large/$small" mount_s rss_mount_MiB rss_written_MiB \
		fsck_s fsck_rss_MiB
	for ph in empty written; do
		line=$(printf "%-20s" "$ph")
		for k in mount_s:8 rss_mount:14 rss_written:16 fsck_s:8 fsck_rss:13; do
			line+=$(awk -v a="${V[$small/$ph/${k%:*}]:-}" -v b="${V[$large/$ph/${k%:*}]:-}" -v w="${k#*:}" 'BEGIN {
				if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && a > 0) printf " %*.2f", w, b / a
				else printf " %*s", w, "n/a" }')
		done
		echo "$line"
	done
}

dsize_for() {  # the disk file's size: 64 GiB or 4x WRITE, at most half the datastore
	local d=$((64 << 30))
	[ $((wbytes * 4)) -le "$d" ] || d=$((wbytes * 4))
	[ "$d" -le $(($1 / 2)) ] || d=$(($1 / 2))
	echo "$d"
}

for size in "${size_list[@]}"; do
	b=${sbytes[$size]}
	if [ -n "$all_xfs" ] || [ "$b" -gt "$ext4_max" ]; then
		setup_xfs
		img=$xfs_mnt/ds-$size.img
	else
		img=$work/ds-$size.img
	fi
	log=$work/$size
	E=$size/empty W=$size/written

	say "$size: vsfs-mkfs ($img)"
	t0=$(now)
	"$bin/vsfs-mkfs" -s "$b" "$img" >"$log.mkfs" 2>&1 || { cat "$log.mkfs" >&2; die "vsfs-mkfs -s $size failed"; }
	V[$E/mkfs_s]=$(secs "$t0" "$(now)")
	host_mkfs=$(host_bytes)

	say "$size: empty: mount, unmount, fsck"
	start_daemon "$log.mount1"
	V[$E/mount_s]=$mount_s
	sleep 1
	V[$E/rss_mount]=$(rss_mib)
	cache=$(st "'%.1f MiB (%.1f MiB unevictable)' % (d['meta_cache']['bytes'] / 2**20, d['meta_cache']['unevictable_bytes'] / 2**20)")
	stop_daemon "$log.mount1"
	V[$E/umount_s]=$umount_s
	run_fsck "$log.fsck1"
	V[$E/fsck_s]=$fsck_s V[$E/fsck_rss]=$fsck_rss
	rows+=("$(row "$size" empty)")

	say "$size: writing $wsize of 4 KiB random writes"
	start_daemon "$log.mount2"
	dsize=$(dsize_for "$b")
	truncate -s "$dsize" "$mnt/disk.img"
	t0=$(now)
	fio --name=w --filename="$mnt/disk.img" --ioengine=io_uring --direct=1 --rw=randwrite \
		--bs=4k --iodepth=32 --size="$dsize" --io_size="$wbytes" --randrepeat=0 --end_fsync=1 \
		--output-format=json >"$log.fio" 2>"$log.fio.err" || { cat "$log.fio.err" >&2; die "fio failed"; }
	sync "$mnt/disk.img"
	write_s=$(secs "$t0" "$(now)")
	iops=$(python3 -c "import json; print(int(json.load(open('$log.fio'))['jobs'][0]['write']['iops']))")
	V[$W/rss_written]=$(rss_mib)
	hwm=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status")
	host_written=$(host_bytes)
	stop_daemon "$log.mount2"
	V[$W/umount_s]=$umount_s

	say "$size: written: mount, kill -9 under load, mount again"
	start_daemon "$log.mount3"
	V[$W/mount_s]=$mount_s
	sleep 1
	V[$W/rss_mount]=$(rss_mib)
	fio --name=k --filename="$mnt/disk.img" --ioengine=io_uring --direct=1 --rw=randwrite \
		--bs=4k --iodepth=32 --size="$dsize" --randrepeat=0 --time_based --runtime=60 \
		>"$log.fio-kill" 2>&1 &
	fio_pid=$!
	sleep "$crash_after"
	alive "$fio_pid" "$mnt" || { cat "$log.fio-kill" >&2; die "fio stopped before the kill"; }
	kill -9 "$pid"
	{ wait "$pid"; } 2>/dev/null || true  # without bash's "Killed" line
	pid=
	wait "$fio_pid" || true  # fails: its file's daemon is gone
	fio_pid=
	fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt"
	start_daemon "$log.mount4"
	crash_mount_s=$mount_s
	read -r crash_blocks window window_end unclean < <(st "d['space']['crash_reformat_blocks'], \
		d['space'].get('alloc_window', 'n/a'), d['space'].get('alloc_window_end', 'n/a'), \
		d['lifetime']['this_mount']['unclean_mounts']")
	V[$W/crash_reformat]=$(mib $((crash_blocks << 20)))
	wait_formatter
	formatted=$(st "d['format']['formatted_bytes_total']")
	V[$W/formatted_after_crash]=$(mib "$formatted")
	stop_daemon "$log.mount4"
	run_fsck "$log.fsck2"
	V[$W/fsck_s]=$fsck_s V[$W/fsck_rss]=$fsck_rss
	rows+=("$(row "$size" written)")
	notes+=("$size: empty: metadata cache after mount $cache")
	notes+=("$size: $wsize written in $write_s s ($iops IOPS) into a $(gib "$dsize") GiB disk, daemon peak RSS $hwm MiB; host space $(gib "$host_mkfs") GiB after mkfs, $(gib "$host_written") GiB after the writes${xfs_mnt:+ (on the XFS: ${img#"$work"/})}")
	notes+=("$size: after kill -9: unclean_mounts $unclean, recovery mount ${crash_mount_s} s, $crash_blocks blocks back to be formatted, alloc_window $window (end block $window_end), formatter done in $format_s s")
	done_sizes+=("$size")

	if [ -z "$keep" ]; then
		rm -f "$img"
		[ -z "$xfs_mnt" ] || fstrim "$xfs_mnt" 2>/dev/null || true
	fi
done

report
reported=1
[ -z "$failed" ] || exit 1
