#!/usr/bin/env bash
# vsfs-mount's refusals: each exits non-zero with one clear line on stderr, mounts
# nothing and leaves the device unchanged (sha256 before and after). Also: without -f
# vsfs-mount returns only once the mount answers, and a second mount of a mounted
# datastore is refused (exclusive device lock).
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

mkfs_file "$T/ds.img" 256M
mkdir "$T/mnt" "$T/mnt2"
head -c 64M /dev/zero >"$T/zero.img"
printf '[fuse]\nthreads = 4\nbogus_key = 1\n' >"$T/bad.toml"

# refuse NAME DEVICE PATTERN ARGS...: vsfs-mount ARGS must fail with one stderr line
# matching PATTERN (grep -E) and leave DEVICE as it was.
refuse() {
	local name=$1 dev=$2 pattern=$3
	shift 3
	local before after rc
	before=$({ sha256sum <"$dev"; } 2>/dev/null || echo none)
	rc=0
	"$VSFS_MOUNT" "$@" >"$T/out" 2>"$T/err" || rc=$?
	after=$({ sha256sum <"$dev"; } 2>/dev/null || echo none)
	echo "$name: exit $rc: $(cat "$T/err")"
	[ "$rc" -ne 0 ] || fail "$name: vsfs-mount succeeded"
	[ "$(wc -l <"$T/err")" -eq 1 ] || fail "$name: expected one line on stderr, got: $(cat "$T/err")"
	grep -Eq -- "$pattern" "$T/err" || fail "$name: message does not match /$pattern/"
	[ "$before" = "$after" ] || fail "$name: the device changed"
	[ "$(grep -c " $T/.* fuse.vsfs " /proc/mounts)" -eq "$live" ] || fail "$name: something got mounted"
}

live=0  # vsfs mounts under $T that should exist
refuse "mount point missing" "$T/ds.img" "^vsfs-mount: $T/nodir: mount point: No such file or directory$" \
	"$T/ds.img" "$T/nodir"
touch "$T/afile"
refuse "mount point not a directory" "$T/ds.img" "^vsfs-mount: $T/afile: mount point is not a directory$" \
	"$T/ds.img" "$T/afile"
refuse "device missing" "$T/missing.img" "^vsfs-mount: $T/missing.img: No such file or directory$" \
	"$T/missing.img" "$T/mnt"
refuse "not a datastore" "$T/zero.img" "^vsfs-mount: $T/zero.img: not a vsfs datastore, or damaged \(.*\); see vsfs-fsck\(8\)$" \
	"$T/zero.img" "$T/mnt"
refuse "bad config key" "$T/ds.img" "$T/bad.toml:3.*bogus_key" -c "$T/bad.toml" "$T/ds.img" "$T/mnt"
refuse "config file missing" "$T/ds.img" "$T/none.toml" -c "$T/none.toml" "$T/ds.img" "$T/mnt"
refuse "bad option value" "$T/ds.img" "^vsfs-mount: -o queue_depth=x: " -o queue_depth=x "$T/ds.img" "$T/mnt"
refuse "unknown FUSE option" "$T/ds.img" "^vsfs-mount: bad FUSE options: .*frobnicate" \
	-o frobnicate "$T/ds.img" "$T/mnt"

# Daemon mode: returns 0 once the mount answers.
"$VSFS_MOUNT" "$T/ds.img" "$T/mnt" || fail "vsfs-mount (daemon mode) failed"
MOUNTS+=("$T/mnt")
live=1
pid=$(daemon_pid "$T/ds.img") || fail "no daemon found for $T/ds.img"
PIDS+=("$pid")
grep -q " $T/mnt fuse.vsfs " /proc/mounts || fail "not mounted when vsfs-mount returned"
stat "$T/mnt/.vsfs/stats" >/dev/null || fail "the mount does not answer"

# Already mounted: the device is locked by the live daemon. The live mount is idle (let
# its first commit interval pass), so the device must not change during the attempts.
sleep 2
sync
refuse "already mounted" "$T/ds.img" "^vsfs-mount: $T/ds.img: datastore is already mounted" \
	"$T/ds.img" "$T/mnt2"
refuse "already mounted, read-only" "$T/ds.img" "^vsfs-mount: $T/ds.img: datastore is already mounted" \
	-o ro "$T/ds.img" "$T/mnt2"

unmount_wait "$T/mnt" "$pid"

# --help and --version answer and exit 0.
"$VSFS_MOUNT" --help | grep -q "^usage: vsfs-mount" || fail "--help"
[ "$("$VSFS_MOUNT" --version)" = "vsfs-mount 0.1.0" ] || fail "--version"
if "$VSFS_MOUNT" "$T/ds.img" 2>/dev/null; then fail "one argument accepted"; fi
echo "PASS: refusals"
