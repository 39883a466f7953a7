#!/usr/bin/env bash
# A full datastore (thin provisioning overcommitted), through the real mount:
# - a write that finds no free grain fails with ENOSPC, and df shows the datastore full;
# - what was written before reads back unchanged, and so does a second disk;
# - overwrites of a disk's own grains still work (they need no free grain), also after
#   a snapshot that shared them was deleted;
# - an overwrite of a grain a live snapshot shares fails with ENOSPC, and the snapshot
#   keeps its data;
# - deleting a disk gives its space back (df) and writes work again;
# - fsck finds the datastore clean after it all, and after a remount.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

new_mount 64M


# df's available and used, in KiB.
avail_kib() { df -k --output=avail "$m" | tail -n 1 | tr -d ' '; }

head -c 4M /dev/urandom >"$T/small"
cp "$T/small" "$m/small.img" || fail "copy of a 4 MiB disk"
sync "$m/small.img"

# Fill with a second disk until ENOSPC.
if dd if=/dev/urandom of="$m/big.img" bs=1M count=200 oflag=direct 2>"$T/dd.log"; then
	fail "200 MiB fit into a 64 MiB datastore"
fi
grep -q "No space left on device" "$T/dd.log" || { cat "$T/dd.log" >&2; fail "the full write did not fail with ENOSPC"; }
big=$(stat -c %s "$m/big.img")
echo "big.img holds $big bytes, $(avail_kib) KiB available"
[ "$big" -ge $((32 << 20)) ] || fail "only $big bytes fit"
[ "$(avail_kib)" -lt 1024 ] || fail "df shows $(avail_kib) KiB available on a full datastore"
cmp "$T/small" "$m/small.img" || fail "the other disk changed when the datastore filled"
dd if="$m/big.img" of="$T/big" bs=1M iflag=direct status=none || fail "read of the full disk"
[ "$(stat -c %s "$T/big")" -eq "$big" ] || fail "the full disk reads short"

# Overwrites in place need no free grain.
head -c 1M /dev/urandom >"$T/patch"
dd if="$T/patch" of="$m/big.img" bs=1M seek=3 conv=notrunc oflag=direct status=none ||
	fail "overwrite on a full datastore"
dd if="$T/patch" of="$T/big" bs=1M seek=3 conv=notrunc status=none
cmp "$T/big" "$m/big.img" || fail "data after the overwrite"

# A live snapshot shares the grains: overwriting them needs space there is not.
mkdir "$m/.snapshots/s1" || fail "snapshot on a full datastore"
if dd if=/dev/urandom of="$m/big.img" bs=64k count=1 seek=8 conv=notrunc oflag=direct 2>"$T/dd2.log"; then
	echo "note: the snapshot's commit freed room for one more write"
else
	grep -q "No space left on device" "$T/dd2.log" || { cat "$T/dd2.log" >&2; fail "shared overwrite: not ENOSPC"; }
fi
cmp "$T/big" "$m/.snapshots/s1/big.img" || fail "the snapshot's data changed"
# Deleted, it shares nothing: overwrites work again.
rmdir "$m/.snapshots/s1" || fail "rmdir of the snapshot"
ok=0
for _ in $(seq 50); do
	if dd if="$T/patch" of="$m/big.img" bs=1M seek=6 conv=notrunc oflag=direct status=none 2>/dev/null; then
		ok=1
		break
	fi
	sleep 0.1
done
[ "$ok" = 1 ] || fail "overwrite after the snapshot was deleted"
dd if="$T/patch" of="$T/big" bs=1M seek=6 conv=notrunc status=none
cmp "$T/big" "$m/big.img" || fail "data after the snapshot went"
echo "restamped grain writes: $(stat_value "$m" io.restamped_grain_writes)"

# Deleting the big disk gives its space back.
rm "$m/big.img" || fail "rm big.img"
for _ in $(seq 50); do [ "$(avail_kib)" -ge $((32 << 10)) ] && break; sleep 0.1; done
[ "$(avail_kib)" -ge $((32 << 10)) ] || fail "df shows $(avail_kib) KiB available after the delete"
dd if=/dev/urandom of="$m/again.img" bs=1M count=16 oflag=direct status=none || fail "write after the delete"
cmp "$T/small" "$m/small.img" || fail "the other disk after it all"
unmount_wait "$m" "$DAEMON_PID"
fsck_clean "$T/ds.img" "after the full datastore"

mount_fg "$T/ds.img" "$m"
cmp "$T/small" "$m/small.img" || fail "the other disk after a remount"
[ "$(stat -c %s "$m/again.img")" -eq $((16 << 20)) ] || fail "again.img after a remount"
unmount_wait "$m" "$DAEMON_PID"
fsck_clean "$T/ds.img" "after the remount"
echo "PASS: full datastore"
