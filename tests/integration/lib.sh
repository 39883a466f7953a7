# Shared helpers of the vsfs-mount integration tests (sourced, not run).
#
# Each test gets its own directory from mktemp -d, mounts the real daemon there and
# always unmounts on exit (trap cleanup EXIT): fusermount3 -u, falling back to
# umount -l, then the daemons it started are stopped by their pid.
# Binaries come from the environment (set by tests/integration/CMakeLists.txt):
#   VSFS_MOUNT, VSFS_MKFS, VSFS_FSCK.
# Exit 77 (skip) only when /dev/fuse is missing.
#
# VSFS_IT_URING=1 runs the test over FUSE over io_uring: the fuse module's enable_uring
# parameter is switched on for the test (restored on exit), and every mount_fg must end
# up serving through the ring (.vsfs/stats fuse.transport) unless its options say
# io_uring=false, or the caller expects otherwise (VSFS_IT_TRANSPORT=dev_fuse mount_fg
# ...). Exit 77 when the kernel has no such parameter.
#
# VSFS_IT_RBD=1 runs the test on Ceph RBD: tests/ceph/with_cluster.sh starts a cluster
# and names its ceph.conf in VSFS_CEPH_CONF. A datastore the test names by a file under
# $T is then an RBD image (dev_of): mkfs_file creates it, and mount_fg, fsck_clean,
# image_used_kb and wait_device_free take the file's name and use the image.

set -u
set -o pipefail

if [ ! -c /dev/fuse ]; then
	echo "SKIP: /dev/fuse is missing"
	exit 77
fi
: "${VSFS_MOUNT:?VSFS_MOUNT must name the vsfs-mount binary}"
: "${VSFS_MKFS:?VSFS_MKFS must name the vsfs-mkfs binary}"
: "${VSFS_FSCK:=}"

if [ "${VSFS_IT_RBD:-0}" = 1 ]; then
	: "${VSFS_CEPH_CONF:?VSFS_IT_RBD=1 needs VSFS_CEPH_CONF (run through tests/ceph/with_cluster.sh)}"
fi

URING_PARAM=/sys/module/fuse/parameters/enable_uring
URING_WAS=""
if [ "${VSFS_IT_URING:-0}" = 1 ]; then
	if [ ! -w "$URING_PARAM" ]; then
		echo "SKIP: this kernel has no FUSE over io_uring ($URING_PARAM)"
		exit 77
	fi
	URING_WAS=$(cat "$URING_PARAM")
	echo Y >"$URING_PARAM" || { echo "FAIL: cannot enable $URING_PARAM" >&2; exit 1; }
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/vsfs-it.XXXXXX")
MOUNTS=()   # mount points this test mounted
PIDS=()     # daemons this test started
CLEAN_DIRS=()  # more directories to remove on exit
LOOPS=()    # loop devices this test attached (and has not detached yet)
SBIN_LINKS=()  # links this test made in /sbin (use_build_mount_helpers)

cleanup() {
	local rc=$?
	local m p
	for m in "${MOUNTS[@]}"; do
		if mountpoint -q "$m" 2>/dev/null; then
			fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
		fi
	done
	# Anything mounted under $T that a failed step left behind, before rm -rf.
	while read -r _ m _; do
		case $m in "$T"/*) fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true ;; esac
	done </proc/mounts
	for p in "${PIDS[@]}"; do
		if kill -0 "$p" 2>/dev/null; then
			# Give a clean exit a moment, then insist.
			for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
			kill "$p" 2>/dev/null || true
		fi
	done
	if [ "$rc" != 0 ]; then
		# What the daemons said (a sanitizer report, an error) belongs with the failure.
		for log in "$T"/daemon.*.log; do
			[ -s "$log" ] || continue
			echo "--- $(basename "$log") (last 150 lines)" >&2
			tail -n 150 "$log" >&2
		done
	fi
	for p in "${LOOPS[@]}"; do losetup -d "$p" 2>/dev/null || true; done
	for p in "${SBIN_LINKS[@]}"; do rm -f "$p"; done
	chattr -R -i "$T" 2>/dev/null || true  # an immutable image a failed step left
	rm -rf "$T" "${CLEAN_DIRS[@]}"
	[ -z "$URING_WAS" ] || echo "$URING_WAS" >"$URING_PARAM" || true
	exit "$rc"
}
trap cleanup EXIT
trap "exit 143" TERM INT

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# dev_of FILE: the device name of the datastore the test calls FILE: FILE itself, or with
# VSFS_IT_RBD=1 the RBD image named after it and this test's directory.
dev_of() {
	if [ "${VSFS_IT_RBD:-0}" = 1 ]; then
		echo "rbd:rbd/$(basename "$T")-$(basename "$1"):conf=$VSFS_CEPH_CONF"
	else
		echo "$1"
	fi
}

# rbd_image FILE: POOL/IMAGE of FILE's RBD image (VSFS_IT_RBD=1).
rbd_image() {
	echo "rbd/$(basename "$T")-$(basename "$1")"
}

# image_used_kb FILE: the KiB the datastore FILE takes from its backing store: the file's
# allocated size (du), or what the RBD image has written.
image_used_kb() {
	if [ "${VSFS_IT_RBD:-0}" = 1 ]; then
		rbd -c "$VSFS_CEPH_CONF" du --format json "$(rbd_image "$1")" |
			python3 -c 'import json,sys; print(json.load(sys.stdin)["images"][0]["used_size"] // 1024)'
	else
		du -k "$1" | cut -f1
	fi
}

# fsck_clean IMAGE WHAT [vsfs-fsck options]: vsfs-fsck -n finds IMAGE clean, else its
# report and a failure naming WHAT.
fsck_clean() {
	local image what=$2
	image=$(dev_of "$1")
	shift 2
	[ -n "$VSFS_FSCK" ] || fail "VSFS_FSCK is not set: cannot check $what"
	"$VSFS_FSCK" -n "$@" "$image" >"$T/fsck.log" 2>&1 || {
		cat "$T/fsck.log" >&2
		fail "fsck $what"
	}
}

# mkfs_file FILE [SIZE]: a new datastore in FILE (in its RBD image, created here, with
# VSFS_IT_RBD=1).
mkfs_file() {
	if [ "${VSFS_IT_RBD:-0}" = 1 ]; then
		rbd -c "$VSFS_CEPH_CONF" create --size "${2:-1G}" "$(rbd_image "$1")" ||
			fail "rbd create $(rbd_image "$1")"
		"$VSFS_MKFS" "$(dev_of "$1")" >"$T/mkfs.log" 2>&1 || {
			cat "$T/mkfs.log" >&2
			fail "vsfs-mkfs $(dev_of "$1")"
		}
		return 0
	fi
	"$VSFS_MKFS" -s "${2:-1G}" "$1" >"$T/mkfs.log" 2>&1 || {
		cat "$T/mkfs.log" >&2
		fail "vsfs-mkfs $1"
	}
}

# new_mount SIZE [vsfs-mount options...]: a new datastore of SIZE in $T/ds.img, mounted
# on $T/mnt (mount_fg), which is also in $m.
new_mount() {
	local size=$1
	shift
	mkfs_file "$T/ds.img" "$size"
	mkdir -p "$T/mnt"
	mount_fg "$T/ds.img" "$T/mnt" "$@"
	m=$T/mnt
}

# wait_mounted DIR: until DIR is a vsfs mount (10 s, or VSFS_IT_MOUNT_WAIT seconds).
wait_mounted() {
	for _ in $(seq $((${VSFS_IT_MOUNT_WAIT:-10} * 10))); do
		if grep -q " $(readlink -f "$1") fuse.vsfs " /proc/mounts; then return 0; fi
		sleep 0.1
	done
	return 1
}

# mount_fg DEVICE DIR [vsfs-mount options...]: runs the daemon with -f in the
# background (its pid in DAEMON_PID, its log in DAEMON_LOG, $T/daemon.N.log) and waits
# for the mount.
mount_fg() {
	local dev dir=$2
	dev=$(dev_of "$1")
	shift 2
	local log="$T/daemon.${#PIDS[@]}.log"
	DAEMON_LOG=$log
	"$VSFS_MOUNT" -f "$@" "$dev" "$dir" >"$log" 2>&1 &
	DAEMON_PID=$!
	PIDS+=("$DAEMON_PID")
	MOUNTS+=("$dir")
	if ! wait_mounted "$dir"; then
		cat "$log" >&2
		fail "mount of $dev on $dir did not appear"
	fi
	if [ "${VSFS_IT_URING:-0}" = 1 ] && [[ " $* " != *io_uring=false* ]]; then
		local want=${VSFS_IT_TRANSPORT:-io_uring}
		wait_transport "$dir" "$want" || {
			cat "$log" >&2
			fail "$dir does not serve through $want"
		}
	fi
}

# wait_transport DIR TRANSPORT: until the mount's .vsfs/stats names TRANSPORT (io_uring
# or dev_fuse) as the way requests come (5 s: the ring's entries are lent after INIT).
wait_transport() {
	local got=""
	for _ in $(seq 50); do
		got=$(stat_value "$1" fuse.transport 2>/dev/null) || got=""
		[ "$got" = "$2" ] && return 0
		sleep 0.1
	done
	echo "transport of $1: '$got', expected $2" >&2
	return 1
}

# unmount_wait DIR PID: unmounts and waits until the daemon has exited (datastore
# closed); fails when the daemon's exit status is not 0.
unmount_wait() {
	local dir=$1 pid=$2
	fusermount3 -u "$dir" || fail "fusermount3 -u $dir"
	local rc=0
	if wait "$pid" 2>/dev/null; then rc=0; else rc=$?; fi
	# `wait` only knows our own children; poll for others (daemon mode).
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -0 "$pid" 2>/dev/null && fail "daemon $pid still running after unmount"
	[ "$rc" -eq 0 ] || [ "$rc" -eq 127 ] || fail "daemon exited with status $rc"
}

# daemon_pid DEVICE: the pid of the vsfs-mount process serving DEVICE (daemon mode),
# found by its exact command line.
daemon_pid() {
	local p args
	for p in /proc/[0-9]*; do
		args=$(tr '\0' '\n' <"$p/cmdline" 2>/dev/null) || continue
		case $(head -n1 <<<"$args") in */vsfs-mount | vsfs-mount) ;; *) continue ;; esac
		if grep -qxF -- "$1" <<<"$args"; then
			echo "${p#/proc/}"
			return 0
		fi
	done
	return 1
}

# stat_value DIR SECTION.KEY: one value of the mount's .vsfs/stats (parsed as JSON).
stat_value() {
	python3 - "$1/.vsfs/stats" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for k in sys.argv[2].split('.'):
    d = d[k]
print(d)
PY
}

# wait_device_free FILE: after a daemon was killed, the kernel may hold the device's
# lock a moment longer (io_uring tears down asynchronously); wait until it is free (5 s).
wait_device_free() {
	# An RBD image's lock is broken by the next owner once the killed one's watch expires.
	[ "${VSFS_IT_RBD:-0}" = 1 ] && return 0
	for _ in $(seq 50); do
		flock -n "$1" true 2>/dev/null && return 0
		sleep 0.1
	done
	fail "$1 is still locked after the daemon exited"
}

# use_build_mount_helpers: mount(8) and umount(8) run /sbin/mount.vsfs (mount -t vsfs),
# /sbin/mount.fuse.vsfs (remount) and /sbin/umount.vsfs (vsfs-mount records helper=vsfs
# in utab); libmount looks in /sbin only. Makes those names run this build's helpers
# (beside $VSFS_MOUNT): links made here go on exit; where the names exist already and are
# not this build's (an installed vsfs), the test runs again in a private mount namespace
# with scripts that run this build's helpers bound over them. Call it first.
use_build_mount_helpers() {
	local bin name ours=1
	bin=$(dirname "$(readlink -f "$VSFS_MOUNT")")
	for name in mount.vsfs mount.fuse.vsfs umount.vsfs; do
		[ -x "$bin/$name" ] || fail "$bin/$name is missing"
		if [ -e "/sbin/$name" ] && [ "$(readlink -f "/sbin/$name")" != "$(readlink -f "$bin/$name")" ]; then
			ours=0
		fi
	done
	if [ "$ours" = 0 ] && [ -z "${VSFS_IT_PRIVATE_NS:-}" ]; then
		rm -rf "$T"
		trap - EXIT
		VSFS_IT_PRIVATE_NS=1 exec unshare -m --propagation private "$BASH" "$0" "$@"
	fi
	for name in mount.vsfs mount.fuse.vsfs umount.vsfs; do
		if [ ! -e "/sbin/$name" ]; then
			ln -s "$bin/$name" "/sbin/$name" || fail "linking /sbin/$name"
			SBIN_LINKS+=("/sbin/$name")
		elif [ "$(readlink -f "/sbin/$name")" != "$(readlink -f "$bin/$name")" ]; then
			# A bound script would look for vsfs-mount beside the file it is bound over:
			# bind one that runs this build's helper by its path instead.
			printf '#!/bin/sh\nexec %q "$@"\n' "$bin/$name" >"$T/$name"
			chmod +x "$T/$name"
			mount --bind "$T/$name" "$(readlink -f "/sbin/$name")" ||
				fail "binding $name over /sbin/$name"
		fi
	done
}
