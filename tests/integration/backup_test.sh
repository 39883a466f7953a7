#!/usr/bin/env bash
# The example backup scripts end to end: a full backup, several incrementals with writes
# (of many sizes, punches and a truncate) and a kill -9 of the daemon in between, each
# compared with the disk, the incrementals copying only what changed; then a restore,
# compared with the backup.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
examples=$(cd "$here/../../examples" && pwd)

mkdir "$T/backup"
new_mount 2G
mkdir "$m/vm1"
truncate -s 64M "$m/vm1/vm1.img"
dd if=/dev/urandom of="$m/vm1/vm1.img" bs=1M count=20 seek=3 conv=notrunc status=none

bash "$examples/backup-incremental.sh" "$m" vm1/vm1.img "$T/backup" >"$T/out" || fail "full backup"
grep -q "full backup" "$T/out" || fail "the first backup was not full: $(cat "$T/out")"
cmp "$T/backup/vm1.img" "$m/vm1/vm1.img" || fail "full backup differs"
[ -z "$(ls "$m/vm1/.snapshots")" ] || fail "the backup left a snapshot behind"

for round in 1 2 3; do
	for _ in $(seq 20); do
		off=$((RANDOM * 1500 + RANDOM % 4096))
		dd if=/dev/urandom of="$m/vm1/vm1.img" bs=$((512 + RANDOM % 70000)) count=1 \
			oflag=seek_bytes seek="$off" conv=notrunc status=none
	done
	fallocate --punch-hole --keep-size --offset $((round * 5 << 20)) --length 300000 "$m/vm1/vm1.img"
	if [ "$round" = 2 ]; then
		truncate -s 50M "$m/vm1/vm1.img"
		# A daemon crash between backups: tracking goes on, no full copy needed.
		kill -9 "$DAEMON_PID"
		wait "$DAEMON_PID" 2>/dev/null
		fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
		wait_device_free "$T/ds.img"
		mount_fg "$T/ds.img" "$m"
	fi
	bash "$examples/backup-incremental.sh" "$m" vm1/vm1.img "$T/backup" >"$T/out" ||
		fail "incremental backup $round"
	grep -q "incremental backup" "$T/out" || fail "backup $round was not incremental: $(cat "$T/out")"
	copied=$(sed -n 's/.*: \([0-9]*\) bytes copied.*/\1/p' "$T/out")
	[ "$copied" -lt $((8 << 20)) ] || fail "incremental $round copied $copied bytes"
	cmp "$T/backup/vm1.img" "$m/vm1/vm1.img" || fail "incremental backup $round differs"
done

bash "$examples/restore.sh" "$T/backup/vm1.img" "$m" vm1/restored.img >/dev/null || fail "restore"
cmp "$T/backup/vm1.img" "$m/vm1/restored.img" || fail "restored disk differs"
unmount_wait "$m" "$DAEMON_PID"
fsck_clean "$T/ds.img" "after backups"
echo "backup test passed"
