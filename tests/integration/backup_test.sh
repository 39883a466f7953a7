#!/usr/bin/env bash
# vsfs-backup across a daemon crash: a full backup, several incrementals with writes (of
# many sizes, punches and a truncate) and a kill -9 of the daemon in between, each
# verified against its snapshot and restored equal to the disk, the incrementals copying
# only what changed; then a restore into the datastore itself, equal to the disk.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
: "${VSFS_BACKUP:?VSFS_BACKUP must name the vsfs-backup binary}"
: "${VSFS_RESTORE:?VSFS_RESTORE must name the vsfs-restore binary}"

# backup_equals ROUND KIND: vsfs-backup --verify of vm1 is of KIND, and the point restored
# equals the disk (nothing writes it meanwhile).
backup_equals() {
	"$VSFS_BACKUP" --verify "$m" vm1 "$T/backup" >"$T/out" 2>&1 || { cat "$T/out" >&2; fail "backup $1"; }
	grep -q "^disk path=vm1.img kind=$2 " "$T/out" || fail "backup $1 was not $2: $(cat "$T/out")"
	rm -rf "$T/restored"
	"$VSFS_RESTORE" "$T/backup" "$T/restored" >/dev/null || fail "restore of backup $1"
	cmp "$T/restored/vm1.img" "$m/vm1/vm1.img" || fail "backup $1 differs"
}

new_mount 2G
mkdir "$m/vm1"
truncate -s 64M "$m/vm1/vm1.img"
dd if=/dev/urandom of="$m/vm1/vm1.img" bs=1M count=20 seek=3 conv=notrunc status=none

backup_equals 0 full
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
	backup_equals "$round" incremental
	copied=$(sed -n 's/^total .* copied=\([0-9]*\) .*/\1/p' "$T/out")
	[ "$copied" -gt 0 ] && [ "$copied" -lt $((8 << 20)) ] || fail "incremental $round copied $copied bytes"
done

"$VSFS_RESTORE" "$T/backup" "$m/restored" >/dev/null || fail "restore into the datastore"
cmp "$m/vm1/vm1.img" "$m/restored/vm1.img" || fail "restored disk differs"
unmount_wait "$m" "$DAEMON_PID"
fsck_clean "$T/ds.img" "after backups"
echo "backup test passed"
