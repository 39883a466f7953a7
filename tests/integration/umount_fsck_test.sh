#!/usr/bin/env bash
# umount(8) returns only once the datastore is committed and released: vsfs-mount
# records helper=vsfs in utab, so umount runs umount.vsfs, which waits for the daemon.
# VSFS_UMOUNT_ROUNDS rounds (100) of mount, write, umount, then at once: the device is
# free (its lock), and vsfs-fsck -n finds it clean without waiting; every 10th round
# mounts again at once instead. Without the helper (umount -i, fusermount3 -u) the
# kernel detaches the mount and the daemon closes afterwards: vsfs-fsck, vsfs-mount and
# vsfs-mkfs that find a daemon closing wait for it (saying so), bounded; 20 such rounds
# are clean too, and the last runs vsfs-mkfs -f at once. A device held by another
# process is still refused at once.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
use_build_mount_helpers

rounds=${VSFS_UMOUNT_ROUNDS:-100}
mkfs_file "$T/ds.img" 256M
mkdir "$T/mnt"
"$VSFS_MOUNT" "$T/ds.img" "$T/mnt" || fail "vsfs-mount failed"
grep -q "TARGET=$T/mnt .*helper=vsfs" /run/mount/utab ||
	fail "no helper=vsfs entry in /run/mount/utab: $(cat /run/mount/utab 2>&1)"
umount "$T/mnt" || fail "umount"
grep -q "TARGET=$T/mnt " /run/mount/utab 2>/dev/null && fail "the utab entry outlived the mount"

# fsck_right_after ROUND: vsfs-fsck -n at once finds the datastore clean; sets
# fsck_waited when it had to wait for a closing daemon.
fsck_right_after() {
	local rc=0
	fsck_waited=0
	"$VSFS_FSCK" -n "$T/ds.img" >"$T/fsck.out" 2>"$T/err" || rc=$?
	[ "$rc" -eq 0 ] || { cat "$T/err" "$T/fsck.out" >&2; fail "round $1: fsck -n right after umount: exit $rc"; }
	grep -q ": clean$" "$T/fsck.out" || fail "round $1: fsck did not say clean: $(cat "$T/fsck.out")"
	if grep -q "waiting (up to 60 s) for vsfs-mount (pid [0-9]*) to finish closing the datastore on $T/ds.img" "$T/err"; then
		fsck_waited=1
	fi
	return 0
}

for i in $(seq "$rounds"); do
	"$VSFS_MOUNT" "$T/ds.img" "$T/mnt" || fail "round $i: vsfs-mount failed"
	head -c $((64 * 1024 + i * 4096)) /dev/urandom >"$T/mnt/f$((i % 7))" || fail "round $i: write"
	umount "$T/mnt" || fail "round $i: umount"
	flock -n "$T/ds.img" true || fail "round $i: umount returned while the daemon still held the device"
	if [ $((i % 10)) -eq 0 ]; then
		"$VSFS_MOUNT" "$T/ds.img" "$T/mnt" 2>"$T/err" || fail "round $i: mounting again at once: $(cat "$T/err")"
		grep -q "waiting" "$T/err" && fail "round $i: vsfs-mount waited after umount returned"
		umount "$T/mnt" || fail "round $i: umount"
	fi
	fsck_right_after "$i"
	[ "$fsck_waited" -eq 0 ] || fail "round $i: fsck waited for a daemon umount had returned from"
done
echo "umount_fsck: $rounds rounds of umount(8) with umount.vsfs: the device was free and clean every time"

# Without the helper: the programs wait for the closing daemon.
waited=0
for i in $(seq 20); do
	"$VSFS_MOUNT" "$T/ds.img" "$T/mnt" || fail "round -i $i: vsfs-mount failed"
	head -c $((64 * 1024 + i * 4096)) /dev/urandom >"$T/mnt/f$((i % 7))" || fail "round -i $i: write"
	if [ $((i % 2)) -eq 0 ]; then umount -i "$T/mnt"; else fusermount3 -u "$T/mnt"; fi || fail "round -i $i: unmount"
	if [ $((i % 10)) -eq 0 ]; then
		"$VSFS_MOUNT" "$T/ds.img" "$T/mnt" 2>"$T/err" || fail "round -i $i: mounting again at once: $(cat "$T/err")"
		grep -q "waiting" "$T/err" && waited=$((waited + 1))
		umount -i "$T/mnt" || fail "round -i $i: umount -i"
	fi
	fsck_right_after "-i $i"
	waited=$((waited + fsck_waited))
done
"$VSFS_MOUNT" "$T/ds.img" "$T/mnt" || fail "vsfs-mount before mkfs"
umount -i "$T/mnt"
"$VSFS_MKFS" -f "$T/ds.img" >/dev/null 2>"$T/err" || fail "vsfs-mkfs -f right after umount -i: $(cat "$T/err")"
echo "umount_fsck: 20 rounds without the helper clean; the programs waited for a closing daemon $waited times"

# A daemon killed with -9 leaves its utab entry behind: another filesystem mounted
# there later still unmounts with umount(8), and the next vsfs mount replaces the entry.
"$VSFS_MKFS" -f "$T/ds.img" >/dev/null 2>&1 || fail "mkfs for the kill round"
"$VSFS_MOUNT" "$T/ds.img" "$T/mnt" || fail "vsfs-mount before kill -9"
pid=$(daemon_pid "$T/ds.img") || fail "no daemon for $T/ds.img"
kill -9 "$pid"
for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
umount -n -i -l "$T/mnt" || fail "detaching the dead mount"  # -n: utab as the kill left it
grep -q "TARGET=$T/mnt " /run/mount/utab || fail "expected the killed daemon's utab entry"
mount -t tmpfs tmpfs "$T/mnt" || fail "mount tmpfs"
MOUNTS+=("$T/mnt")
umount "$T/mnt" 2>"$T/err" || fail "umount of tmpfs where a killed daemon left its entry: $(cat "$T/err")"
mountpoint -q "$T/mnt" && fail "tmpfs still mounted"
wait_device_free "$T/ds.img"
"$VSFS_MOUNT" "$T/ds.img" "$T/mnt" 2>/dev/null || fail "vsfs-mount after kill -9"
[ "$(grep -c "TARGET=$T/mnt " /run/mount/utab)" -eq 1 ] || fail "utab: $(grep "TARGET=$T/mnt " /run/mount/utab)"
umount "$T/mnt" || fail "umount after kill -9"
grep -q "TARGET=$T/mnt " /run/mount/utab && fail "the utab entry outlived the mount"

# Held by something else than a closing daemon: refused at once, no wait.
flock "$T/ds.img" sleep 30 &
holder=$!
PIDS+=("$holder")
sleep 0.3
start=$(date +%s)
rc=0
"$VSFS_FSCK" -n "$T/ds.img" >/dev/null 2>"$T/err" || rc=$?
[ "$rc" -eq 8 ] || fail "fsck of a device another program holds: exit $rc, expected 8"
grep -q "in use" "$T/err" || fail "fsck of a held device: $(cat "$T/err")"
grep -q "waiting" "$T/err" && fail "fsck waited for a holder that is not a closing daemon"
[ $(($(date +%s) - start)) -lt 5 ] || fail "the refusal took more than 5 s"
kill "$holder"
