#!/usr/bin/env bash
# .vsfs/stats lifetime: totals kept in the superblock across mounts. Write N bytes,
# unmount, mount again, write M bytes: the lifetime total counts N+M while the per-mount
# io counter shows only M. A kill -9 of the daemon and a remount: one more unclean mount,
# and the totals are not below what the last superblock write before the kill stored
# (nor below what the clean unmount before it stored). fsck is clean at the end.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

N=$((8 << 20))
M=$((3 << 20))

new_mount 1G
s=$T/mnt/.vsfs/stats

python3 - "$s" <<'PY' || fail "lifetime section: $(cat "$s")"
import json, sys
d = json.load(open(sys.argv[1]))
life = d["lifetime"]
keys = ["read_bytes", "write_bytes", "read_errors", "write_errors", "no_space_errors",
        "unclean_mounts", "snapshots_taken", "snapshots_deleted", "formatted_bytes",
        "mounted_seconds"]
for part in ("total", "this_mount", "stored"):
    for k in keys:
        assert isinstance(life[part][k], int), f"lifetime.{part}.{k}"
assert life["mount_count"] == d["datastore"]["mount_count"] == 1, life
assert life["total"]["write_bytes"] == 0 and life["total"]["unclean_mounts"] == 0, life
PY

# Mount 1: N bytes of data and a snapshot.
dd if=/dev/urandom of="$T/mnt/a.img" bs=1M count=$((N >> 20)) oflag=direct status=none || fail "dd a.img"
mkdir "$T/mnt/.snapshots/one" || fail "mkdir snapshot"
[ "$(stat_value "$T/mnt" io.write_bytes)" -eq "$N" ] || fail "io.write_bytes is not $N"
[ "$(stat_value "$T/mnt" lifetime.this_mount.write_bytes)" -eq "$N" ] || fail "this_mount.write_bytes is not $N"
[ "$(stat_value "$T/mnt" lifetime.total.snapshots_taken)" -eq 1 ] || fail "snapshots_taken"
unmount_wait "$T/mnt" "$DAEMON_PID"

# Mount 2: the totals of mount 1 were stored by its unmount; M bytes more.
mount_fg "$T/ds.img" "$T/mnt"
clean_wb=$(stat_value "$T/mnt" lifetime.stored.write_bytes)
clean_snaps=$(stat_value "$T/mnt" lifetime.stored.snapshots_taken)
[ "$clean_wb" -ge "$N" ] || fail "stored write_bytes $clean_wb after the clean unmount, expected >= $N"
[ "$clean_snaps" -eq 1 ] || fail "stored snapshots_taken $clean_snaps, expected 1"
[ "$(stat_value "$T/mnt" io.write_bytes)" -eq 0 ] || fail "io.write_bytes did not start at 0"
[ "$(stat_value "$T/mnt" lifetime.this_mount.write_bytes)" -eq 0 ] || fail "this_mount did not start at 0"
dd if=/dev/urandom of="$T/mnt/b.img" bs=1M count=$((M >> 20)) oflag=direct conv=fsync status=none || fail "dd b.img"
io_wb=$(stat_value "$T/mnt" io.write_bytes)
total_wb=$(stat_value "$T/mnt" lifetime.total.write_bytes)
echo "mount 2: io.write_bytes $io_wb, lifetime.total.write_bytes $total_wb (N=$N M=$M)"
[ "$io_wb" -eq "$M" ] || fail "io.write_bytes $io_wb, expected only this mount's $M"
[ "$total_wb" -ge $((N + M)) ] || fail "lifetime total write_bytes $total_wb < N+M $((N + M))"
[ "$(stat_value "$T/mnt" lifetime.mount_count)" -eq 2 ] || fail "mount_count is not 2"
[ "$(stat_value "$T/mnt" lifetime.total.unclean_mounts)" -eq 0 ] || fail "an unclean mount after a clean unmount"
# The fsync committed b.img's allocation: that commit's superblock image stored N+M.
stored=$(stat_value "$T/mnt" lifetime.stored.write_bytes)
[ "$stored" -ge $((N + M)) ] || fail "stored write_bytes $stored after an fsync, expected >= $((N + M))"

# kill -9, then a remount: it recovers, counts one unclean mount, loses nothing stored.
kill -9 "$DAEMON_PID"
wait "$DAEMON_PID" 2>/dev/null
fusermount3 -u "$T/mnt" 2>/dev/null || umount -l "$T/mnt" 2>/dev/null
wait_device_free "$T/ds.img"
mount_fg "$T/ds.img" "$T/mnt"
python3 - "$s" "$stored" "$clean_wb" "$clean_snaps" <<'PY' || fail "after kill -9: $(cat "$s")"
import json, sys
d = json.load(open(sys.argv[1]))
stored, clean_wb, clean_snaps = map(int, sys.argv[2:5])
life = d["lifetime"]
assert life["this_mount"]["unclean_mounts"] == 1, life
assert life["total"]["unclean_mounts"] == 1, life
assert life["total"]["write_bytes"] >= stored >= clean_wb, (life, stored, clean_wb)
assert life["total"]["snapshots_taken"] >= clean_snaps, life
assert life["stored"]["unclean_mounts"] == 1, life  # the mount's own superblock write
assert life["mount_count"] == 3, life
assert d["io"]["write_bytes"] == 0, d["io"]
PY
[ "$(stat -c %s "$T/mnt/b.img")" -eq "$M" ] || fail "b.img (fsynced) lost its size after the kill"
total_wb=$(stat_value "$T/mnt" lifetime.total.write_bytes)
unmount_wait "$T/mnt" "$DAEMON_PID"
fsck_clean "$T/ds.img" "after the lifetime mounts"

# A read-only mount shows the totals and stores nothing.
before=$(md5sum <"$T/ds.img")
mount_fg "$T/ds.img" "$T/mnt" -o ro
[ "$(stat_value "$T/mnt" lifetime.total.write_bytes)" -eq "$total_wb" ] || fail "read-only mount: totals differ"
cat "$T/mnt/a.img" >/dev/null || fail "read a.img"
[ "$(stat_value "$T/mnt" lifetime.this_mount.read_bytes)" -ge "$N" ] || fail "read-only mount: reads not counted"
unmount_wait "$T/mnt" "$DAEMON_PID"
[ "$(md5sum <"$T/ds.img")" = "$before" ] || fail "a read-only mount changed the datastore"
echo "PASS: lifetime"
