#!/usr/bin/env bash
# A datastore in a sparse file on a filesystem that fills up (a 200 MiB tmpfs holding a
# 1 GiB image): the writer gets ENOSPC, df says there is no room, and everything else
# goes on: creating, renaming and deleting files (the way to free space), snapshots,
# fsync, unmount, fsck (-n and -y), a kill -9 and the remount that replays the journal. The space
# comes back when a disk is deleted (the freed blocks are punched out of the file).
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

mkdir "$T/host" "$T/mnt"
mount -t tmpfs -o size=200m tmpfs "$T/host" || fail "tmpfs"
MOUNTS+=("$T/host")
img=$T/host/ds.img
mkfs_file "$img" 1G
avail_mib() { df -B1M --output=avail "$m" | tail -n1 | tr -d ' '; }
host_avail_mib() { df -B1M --output=avail "$T/host" | tail -n1 | tr -d ' '; }

for round in 1 2; do
	mount_fg "$img" "$T/mnt"
	m=$T/mnt
	if [ "$round" = 1 ]; then
		head -c 4M /dev/urandom >"$T/keep" || fail "pattern"
		cp "$T/keep" "$m/keep.img" && sync -f "$m" || fail "keep.img"
	fi
	# Fill the host: the write fails with ENOSPC, nothing else does.
	if dd if=/dev/urandom of="$m/big.img" bs=1M count=400 oflag=direct status=none 2>"$T/dd.err"; then
		fail "400 MiB fit in a 200 MiB filesystem"
	fi
	grep -q "No space left on device" "$T/dd.err" || { cat "$T/dd.err" >&2; fail "the writer's error"; }
	[ "$(host_avail_mib)" -lt 2 ] || fail "the host still has $(host_avail_mib) MiB"
	[ "$(avail_mib)" -lt 4 ] || fail "df shows $(avail_mib) MiB available on a full host"
	for i in $(seq 20); do : >"$m/small$i" || fail "create $i on a full host"; done
	mkdir "$m/dir" && mv "$m/small1" "$m/dir/" && rm "$m/small2" || fail "namespace on a full host"
	mkdir "$m/.snapshots/s1" && rmdir "$m/.snapshots/s1" || fail "a snapshot on a full host"
	sync -f "$m" || fail "sync on a full host"
	[ "$(stat_value "$m" health.metadata_failed)" = False ] || fail "the metadata failed"
	cmp "$T/keep" "$m/keep.img" || fail "keep.img changed"
	if [ "$round" = 1 ]; then
		# Deleting the big disk gives the room back: writes go on.
		rm "$m/big.img" || fail "rm on a full host"
		for _ in $(seq 100); do [ "$(host_avail_mib)" -gt 60 ] && break; sleep 0.1; done
		[ "$(host_avail_mib)" -gt 60 ] || fail "deleting the disk freed nothing on the host"
		dd if=/dev/urandom of="$m/after.img" bs=1M count=20 oflag=direct status=none || fail "write after rm"
		rm -r "$m/dir" "$m"/small* "$m/after.img"
		unmount_wait "$m" "${PIDS[-1]}"
		fsck_clean "$img" "after a clean unmount on a full host"
	else
		# kill -9 while full: the remount replays the journal into backed space.
		kill -9 "${PIDS[-1]}"
		wait "${PIDS[-1]}" 2>/dev/null
		fusermount3 -u "$m" 2>/dev/null || umount -l "$m"
		wait_device_free "$img"
		fsck_clean "$img" "after kill -9 on a full host"
		rc=0
		"$VSFS_FSCK" -y "$img" >"$T/fsck-y.log" 2>&1 || rc=$?
		# 1: repaired (the formatted blocks an unclean stop leaves are moved, as at mount).
		[ "$rc" -le 1 ] || { cat "$T/fsck-y.log" >&2; fail "vsfs-fsck -y on a full host exited $rc"; }
		mount_fg "$img" "$T/mnt"
		cmp "$T/keep" "$m/keep.img" || fail "keep.img after the crash"
		[ -e "$m/small20" ] || fail "small20 was lost"
		rm "$m/big.img" || fail "rm after the crash"
		unmount_wait "$m" "${PIDS[-1]}"
		fsck_clean "$img" "at the end"
	fi
done
echo "PASS"
