#!/usr/bin/env bash
# The daemon's life: mounted without -f (returns once the mount answers), stopped with
# SIGTERM (unmounts, closes the datastore cleanly, exits 0), the datastore then checks
# clean with vsfs-fsck -n and the data is there after a remount; unmount with umount(8)
# works too; -o ro mounts read-only (EROFS); SIGTERM while a client has 32 IOs in
# flight stops the daemon cleanly too (replies in flight are sent before the session
# goes).
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

mkfs_file "$T/ds.img" 1G
mkdir "$T/mnt"
"$VSFS_MOUNT" "$T/ds.img" "$T/mnt" || fail "vsfs-mount"
MOUNTS+=("$T/mnt")
pid=$(daemon_pid "$T/ds.img") || fail "no daemon found"
PIDS+=("$pid")
mkdir "$T/mnt/vm1" && head -c 3M /dev/urandom >"$T/ref" && cp "$T/ref" "$T/mnt/vm1/disk.img" ||
	fail "write through the mount"

kill -TERM "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "daemon still running 10 s after SIGTERM"
grep -q " $T/mnt fuse.vsfs " /proc/mounts && fail "still mounted after SIGTERM"
fsck_clean "$T/ds.img" "after SIGTERM"

mount_fg "$T/ds.img" "$T/mnt"
cmp "$T/ref" "$T/mnt/vm1/disk.img" || fail "data after SIGTERM and remount"
umount "$T/mnt" || fail "umount"
wait "$DAEMON_PID" || fail "daemon exit status after umount: $?"

mount_fg "$T/ds.img" "$T/mnt" -o ro
cmp "$T/ref" "$T/mnt/vm1/disk.img" || fail "data on the read-only mount"
err=$(touch "$T/mnt/new" 2>&1) && fail "created a file on a read-only mount"
grep -q "Read-only file system" <<<"$err" || fail "expected EROFS, got: $err"
unmount_wait "$T/mnt" "$DAEMON_PID"

if command -v fio >/dev/null; then
	mount_fg "$T/ds.img" "$T/mnt"
	truncate -s 256M "$T/mnt/vm1/busy.img"
	fio --name=busy --filename="$T/mnt/vm1/busy.img" --size=256M --ioengine=io_uring \
		--direct=1 --rw=randrw --bs=4k --iodepth=32 --runtime=30 --time_based \
		>"$T/fio.busy.log" 2>&1 &
	fio_pid=$!
	PIDS+=("$fio_pid")
	for _ in $(seq 100); do
		[ "$(stat_value "$T/mnt" io.write_requests)" -gt 1000 ] 2>/dev/null && break
		sleep 0.1
	done
	[ "$(stat_value "$T/mnt" io.write_requests)" -gt 1000 ] || fail "fio did not get going"
	kill -TERM "$DAEMON_PID"
	rc=0
	wait "$DAEMON_PID" || rc=$?
	[ "$rc" -eq 0 ] || { cat "$T/daemon."*.log >&2; fail "daemon exit status $rc after SIGTERM under load"; }
	wait "$fio_pid" 2>/dev/null || true
	grep -q " $T/mnt fuse.vsfs " /proc/mounts && fail "still mounted after SIGTERM under load"
	fsck_clean "$T/ds.img" "after SIGTERM under load"
	mount_fg "$T/ds.img" "$T/mnt"
	cmp "$T/ref" "$T/mnt/vm1/disk.img" || fail "data after SIGTERM under load"
	unmount_wait "$T/mnt" "$DAEMON_PID"
fi
echo "PASS: lifecycle"
