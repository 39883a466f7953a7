#!/usr/bin/env bash
# FUSE over io_uring itself (run as mount_uring_uring, with the kernel's parameter on):
# - the daemon lends one entry per CPU queue and depth, and requests then come through
#   the ring (.vsfs/stats fuse: transport, ring_entries, ring_requests);
# - with one entry per queue, fio at depth 32 (writes, then reads, crc32c-verified)
#   makes the kernel queue requests behind busy entries: all complete, data intact;
# - uring_buffer_mib bounds the entries per queue, and below one per queue keeps
#   /dev/fuse;
# - -o io_uring=false keeps /dev/fuse although the kernel offers the ring, and the
#   data written through the ring reads back the same there;
# - fsck finds the datastore clean after each unmount.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
[ "${VSFS_IT_URING:-0}" = 1 ] || { echo "SKIP: run with VSFS_IT_URING=1 (mount_uring_uring)"; exit 77; }
command -v fio >/dev/null || fail "fio is not installed (see README: install step)"

mkfs_file "$T/ds.img" 1G
mkdir "$T/mnt"
queues=$(getconf _NPROCESSORS_CONF)


job=(--name=deep --filename="$T/mnt/deep.img" --size=64M --ioengine=io_uring --direct=1
	--bs=4k --iodepth=32 --verify=crc32c --randrepeat=1 --verify_state_save=0)

# Default depth: every queue's entries are lent.
mount_fg "$T/ds.img" "$T/mnt"
entries=$(stat_value "$T/mnt" fuse.ring_entries)
[ "$entries" -eq $((queues * 32)) ] || fail "ring_entries $entries, expected $((queues * 32))"
before=$(stat_value "$T/mnt" fuse.ring_requests)
head -c 1M /dev/urandom >"$T/ref"
cp "$T/ref" "$T/mnt/file" && cmp "$T/ref" "$T/mnt/file" || fail "copy through the ring"
after=$(stat_value "$T/mnt" fuse.ring_requests)
[ "$after" -gt $((before + 2)) ] || fail "ring_requests did not grow ($before -> $after)"
unmount_wait "$T/mnt" "$DAEMON_PID"
fsck_clean "$T/ds.img" "after the default depth"

# One entry per queue: requests wait in the kernel for the entry to come back.
mount_fg "$T/ds.img" "$T/mnt" -o uring_depth=1
entries=$(stat_value "$T/mnt" fuse.ring_entries)
[ "$entries" -eq "$queues" ] || fail "ring_entries $entries with uring_depth=1, expected $queues"
fio "${job[@]}" --rw=randwrite --do_verify=1 >"$T/fio.log" 2>&1 || {
	tail -n 30 "$T/fio.log" >&2
	fail "fio depth 32 over one entry per queue"
}
grep -q "err= 0" "$T/fio.log" || fail "fio reported errors"
unmount_wait "$T/mnt" "$DAEMON_PID"
fsck_clean "$T/ds.img" "after uring_depth=1"

# The payload budget bounds the entries: room for three 1 MiB entries per queue.
mount_fg "$T/ds.img" "$T/mnt" -o uring_buffer_mib=$((queues * 3))
entries=$(stat_value "$T/mnt" fuse.ring_entries)
[ "$entries" -eq $((queues * 3)) ] || fail "ring_entries $entries with uring_buffer_mib=$((queues * 3)), expected $((queues * 3))"
cmp "$T/ref" "$T/mnt/file" || fail "read back through a budgeted ring"
unmount_wait "$T/mnt" "$DAEMON_PID"
# Below one entry per queue the ring is not used at all.
if [ "$queues" -gt 1 ]; then
	VSFS_IT_TRANSPORT=dev_fuse mount_fg "$T/ds.img" "$T/mnt" -o uring_buffer_mib=1
	got=$(stat_value "$T/mnt" fuse.transport)
	[ "$got" = dev_fuse ] || fail "transport with uring_buffer_mib=1 on $queues CPUs: $got"
	grep -q "uring_buffer_mib 1 is below one" "$DAEMON_LOG" || fail "no warning about the budget"
	cmp "$T/ref" "$T/mnt/file" || fail "read back through /dev/fuse"
	unmount_wait "$T/mnt" "$DAEMON_PID"
fi

# Refused by configuration: /dev/fuse, and the same data.
mount_fg "$T/ds.img" "$T/mnt" -o io_uring=false
got=$(stat_value "$T/mnt" fuse.transport)
[ "$got" = dev_fuse ] || fail "transport with io_uring=false: $got"
[ "$(stat_value "$T/mnt" fuse.ring_requests)" -eq 0 ] || fail "ring requests with io_uring=false"
cmp "$T/ref" "$T/mnt/file" || fail "data written through the ring, read through /dev/fuse"
fio "${job[@]}" --rw=randread --verify_only=1 >"$T/fio2.log" 2>&1 || {
	tail -n 30 "$T/fio2.log" >&2
	fail "fio verify_only through /dev/fuse"
}
unmount_wait "$T/mnt" "$DAEMON_PID"
echo "PASS: FUSE over io_uring"
