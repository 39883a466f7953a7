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

# device_sum DEVICE: its sha256 without grain 1, the lease, which a mount that holds the
# datastore renews every few seconds ("none" when it cannot be read).
device_sum() {
	[ -r "$1" ] || { echo none; return; }
	{ head -c 4096 "$1" && tail -c +8193 "$1"; } 2>/dev/null | sha256sum
}

# refuse NAME DEVICE PATTERN ARGS...: vsfs-mount ARGS must fail with one stderr line
# matching PATTERN (grep -E) and leave DEVICE as it was (the lease of a mount holding it
# aside).
refuse() {
	local name=$1 dev=$2 pattern=$3
	shift 3
	local before after rc
	before=$(device_sum "$dev")
	rc=0
	"$VSFS_MOUNT" "$@" >"$T/out" 2>"$T/err" || rc=$?
	after=$(device_sum "$dev")
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
refuse "option without a name" "$T/ds.img" "^vsfs-mount: -o =0: option without a name$" \
	-o =0 "$T/ds.img" "$T/mnt"
: >"$T/empty.img"
refuse "empty image" "$T/empty.img" \
	"^vsfs-mount: $T/empty.img: not a vsfs datastore, or damaged \(device is 0 bytes, too small to hold a datastore\); see vsfs-fsck\(8\)$" \
	"$T/empty.img" "$T/mnt"

# Read-only devices: a read-only loop device (it opens for writing; its writes would
# fail) and an immutable image (it does not open for writing). Each program says so and
# how to open it; read-only use still works.
cp "$T/ds.img" "$T/ro.img"
loop=$(losetup -r -f --show "$T/ro.img") || fail "losetup -r failed"
LOOPS+=("$loop")
refuse "read-only loop device" "$loop" "^vsfs-mount: $loop is read-only \(.*\); mount it read-only \(-o ro\)$" \
	"$loop" "$T/mnt"
rc=0; "$VSFS_FSCK" -y "$loop" >"$T/out" 2>"$T/err" || rc=$?
echo "fsck -y on $loop: exit $rc: $(cat "$T/err")"
[ "$rc" -eq 8 ] || fail "vsfs-fsck -y on a read-only device: exit $rc, expected 8"
grep -Eq "^vsfs-fsck: $loop is read-only \(.*\); check it without repairs \(-n\)$" "$T/err" ||
	fail "vsfs-fsck -y on a read-only device: $(cat "$T/err")"
"$VSFS_FSCK" -n "$loop" >/dev/null || fail "vsfs-fsck -n on a read-only device failed"
rc=0; "$VSFS_MKFS" -f "$loop" >"$T/out" 2>"$T/err" || rc=$?
echo "mkfs on $loop: exit $rc: $(cat "$T/err")"
[ "$rc" -ne 0 ] && grep -Eq "^vsfs-mkfs: $loop is read-only \(.*\): nothing was written$" "$T/err" ||
	fail "vsfs-mkfs on a read-only device: exit $rc: $(cat "$T/err")"
# Read-only, it mounts and reads.
"$VSFS_MOUNT" -o ro "$loop" "$T/mnt" || fail "vsfs-mount -o ro of a read-only device failed"
pid=$(daemon_pid "$loop") || fail "no daemon found for $loop"
PIDS+=("$pid")
MOUNTS+=("$T/mnt")
stat "$T/mnt/.vsfs/stats" >/dev/null || fail "the read-only mount does not answer"
unmount_wait "$T/mnt" "$pid"
losetup -d "$loop"
LOOPS=()
if chattr +i "$T/ro.img" 2>/dev/null; then
	refuse "immutable image" "$T/ro.img" "^vsfs-mount: $T/ro.img is read-only \(Operation not permitted\); mount it read-only \(-o ro\)$" \
		"$T/ro.img" "$T/mnt"
	chattr -i "$T/ro.img"
else
	echo "immutable image: chattr +i is not supported under $T, not checked"
fi

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
