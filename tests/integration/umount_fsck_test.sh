#!/usr/bin/env bash
# umount(8) returns once the kernel has detached the mount; the daemon then commits and
# closes the datastore. A script that runs vsfs-fsck (or mounts again, or makes a new
# datastore) right after umount must not get "in use": the programs wait for a daemon
# that is closing (saying so), bounded. VSFS_UMOUNT_ROUNDS rounds (100) of mount, write,
# umount, fsck -n at once: clean every time; every 10th round mounts again at once
# instead; the last runs vsfs-mkfs -f at once. A device held by another process is still
# refused at once.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

rounds=${VSFS_UMOUNT_ROUNDS:-100}
mkfs_file "$T/ds.img" 256M
mkdir "$T/mnt"
waited=0
for i in $(seq "$rounds"); do
	"$VSFS_MOUNT" "$T/ds.img" "$T/mnt" || fail "round $i: vsfs-mount failed"
	head -c $((64 * 1024 + i * 4096)) /dev/urandom >"$T/mnt/f$((i % 7))" || fail "round $i: write"
	umount "$T/mnt" || fail "round $i: umount"
	if [ $((i % 10)) -eq 0 ]; then
		# Mount again at once: waits for the closing daemon, then mounts.
		"$VSFS_MOUNT" "$T/ds.img" "$T/mnt" 2>"$T/err" || fail "round $i: mounting again at once: $(cat "$T/err")"
		grep -q "waiting" "$T/err" && waited=$((waited + 1))
		umount "$T/mnt" || fail "round $i: umount"
	fi
	rc=0
	"$VSFS_FSCK" -n "$T/ds.img" >"$T/fsck.out" 2>"$T/err" || rc=$?
	[ "$rc" -eq 0 ] || { cat "$T/err" "$T/fsck.out" >&2; fail "round $i: fsck -n right after umount: exit $rc"; }
	if grep -q "waiting (up to 60 s) for vsfs-mount (pid [0-9]*) to finish closing the datastore on $T/ds.img" "$T/err"; then
		waited=$((waited + 1))
	fi
	grep -q ": clean$" "$T/fsck.out" || fail "round $i: fsck did not say clean: $(cat "$T/fsck.out")"
done
"$VSFS_MOUNT" "$T/ds.img" "$T/mnt" || fail "vsfs-mount before mkfs"
umount "$T/mnt"
"$VSFS_MKFS" -f "$T/ds.img" >/dev/null 2>"$T/err" || fail "vsfs-mkfs -f right after umount: $(cat "$T/err")"
echo "umount_fsck: $rounds rounds clean; the programs waited for a closing daemon $waited times"

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
