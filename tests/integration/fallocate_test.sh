#!/usr/bin/env bash
# fallocate mode 0 reserves space, through the real mount:
# - right after `fallocate -l`, df counts the reservation as used and st_blocks covers
#   it; the disk reads zeros;
# - another disk then fills the datastore until ENOSPC, and still every byte of the
#   fallocated disk can be written (dd oflag=direct, and small unaligned writes): no
#   ENOSPC, and it reads back;
# - punching a hole releases the grains (df goes down);
# - `fallocate -l 2T` fails with ENOSPC at once and changes nothing (df, size);
# - `qemu-img create -o preallocation=falloc` gives a disk that the same filling cannot
#   make fail, and a preallocated image larger than the datastore is refused;
# - fsck finds the datastore clean after it all, and after a remount the reservation
#   still holds.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

command -v fallocate >/dev/null || fail "fallocate(1) is missing"
command -v qemu-img >/dev/null || fail "qemu-img is missing"

new_mount 256M

used_kib() { df -k --output=used "$m" | tail -n 1 | tr -d ' '; }
avail_kib() { df -k --output=avail "$m" | tail -n 1 | tr -d ' '; }
blocks_kib() { echo $(($(stat -c %b "$1") * $(stat -c %B "$1") / 1024)); }

# Fills DISK with random data until the datastore is full (ENOSPC), or fails.
fill_until_full() {
	local disk=$1
	if dd if=/dev/urandom of="$disk" bs=1M count=400 oflag=direct 2>"$T/fill.log"; then
		fail "400 MiB fit into what was left of a 256 MiB datastore"
	fi
	grep -q "No space left on device" "$T/fill.log" || { cat "$T/fill.log" >&2; fail "filling $disk did not end in ENOSPC"; }
	echo "$(basename "$disk") took $(stat -c %s "$disk") bytes; $(avail_kib) KiB available"
}

# Writes every byte of DISK (SIZE MiB) from $T/data: whole MiBs with O_DIRECT, then a few
# small unaligned writes; compares. No write may fail.
write_all() {
	local disk=$1 mib=$2
	head -c "${mib}M" /dev/urandom >"$T/data"
	dd if="$T/data" of="$disk" bs=1M count="$mib" conv=notrunc oflag=direct status=none 2>"$T/w.log" ||
		{ cat "$T/w.log" >&2; fail "writing all of $disk on a full datastore"; }
	for at in 12345 4096000 $(((mib << 20) - 3000)); do
		head -c 2000 /dev/urandom >"$T/piece"
		dd if="$T/piece" of="$disk" bs=2000 count=1 seek="$at" oflag=seek_bytes conv=notrunc,fsync status=none 2>"$T/w.log" ||
			{ cat "$T/w.log" >&2; fail "unaligned write at $at of $disk on a full datastore"; }
		dd if="$T/piece" of="$T/data" bs=2000 count=1 seek="$at" oflag=seek_bytes conv=notrunc status=none
	done
	sync "$disk"
	cmp "$T/data" "$disk" || fail "$disk after it was written on a full datastore"
}

used0=$(used_kib)
avail0=$(avail_kib)
echo "empty datastore: $used0 KiB used, $avail0 KiB available"

# The reservation is counted at once.
fallocate -l 160M "$m/thick.img" || fail "fallocate -l 160M"
used1=$(used_kib)
echo "after fallocate -l 160M: $used1 KiB used, $(avail_kib) KiB available"
[ "$((used1 - used0))" -ge $((160 << 10)) ] || fail "df counts $((used1 - used0)) KiB used for a 160 MiB reservation"
[ "$(stat -c %s "$m/thick.img")" -eq $((160 << 20)) ] || fail "size after fallocate: $(stat -c %s "$m/thick.img")"
[ "$(blocks_kib "$m/thick.img")" -eq $((160 << 10)) ] || fail "st_blocks after fallocate: $(blocks_kib "$m/thick.img") KiB"
cmp -n $((160 << 20)) /dev/zero "$m/thick.img" || fail "a fallocated disk does not read zeros"

# Another disk takes the rest; the thick one still has all of its space.
fill_until_full "$m/thin.img"
write_all "$m/thick.img" 160
[ "$(blocks_kib "$m/thick.img")" -eq $((160 << 10)) ] || fail "st_blocks after the writes: $(blocks_kib "$m/thick.img") KiB"

# Punching releases the reservation's grains.
used2=$(used_kib)
fallocate -p -o 0 -l 64M "$m/thick.img" || fail "punch 64 MiB"
used3=$(used_kib)
echo "after punching 64 MiB: $used3 KiB used (was $used2)"
[ "$((used2 - used3))" -ge $((64 << 10)) ] || fail "punching 64 MiB freed only $((used2 - used3)) KiB"
[ "$(blocks_kib "$m/thick.img")" -eq $((96 << 10)) ] || fail "st_blocks after the punch: $(blocks_kib "$m/thick.img") KiB"

# Far more than the datastore: refused at once, nothing changed.
rm "$m/thin.img" || fail "rm thin.img"
for _ in $(seq 50); do [ "$(avail_kib)" -ge $((100 << 10)) ] && break; sleep 0.1; done
touch "$m/huge.img"
used4=$(used_kib)
if fallocate -l 2T "$m/huge.img" 2>"$T/huge.log"; then
	fail "fallocate -l 2T succeeded on a 256 MiB datastore"
fi
grep -q "No space left on device" "$T/huge.log" || { cat "$T/huge.log" >&2; fail "fallocate -l 2T: not ENOSPC"; }
[ "$(used_kib)" -eq "$used4" ] || fail "a refused fallocate changed df: $used4 -> $(used_kib) KiB used"
[ "$(stat -c %s "$m/huge.img")" -eq 0 ] || fail "a refused fallocate changed the size"
[ "$(stat -c %b "$m/huge.img")" -eq 0 ] || fail "a refused fallocate left blocks"
# Just over what is available fails the same way.
if fallocate -l $((($(avail_kib) + 1024) << 10)) "$m/huge.img" 2>/dev/null; then
	fail "fallocate of more than df's available space succeeded"
fi
[ "$(used_kib)" -eq "$used4" ] || fail "a refused fallocate changed df"
rm "$m/huge.img"

# qemu-img's preallocation=falloc: the same promise.
qemu-img create -q -f raw -o preallocation=falloc "$m/q.img" 48M || fail "qemu-img create preallocation=falloc"
[ "$(blocks_kib "$m/q.img")" -eq $((48 << 10)) ] || fail "qemu-img's falloc disk holds $(blocks_kib "$m/q.img") KiB"
if qemu-img create -q -f raw -o preallocation=falloc "$m/q5g.img" 5G 2>"$T/q5g.log"; then
	fail "qemu-img preallocated 5 GiB on a 256 MiB datastore"
fi
grep -qi "No space left on device" "$T/q5g.log" || { cat "$T/q5g.log" >&2; fail "qemu-img 5G: not ENOSPC"; }
rm -f "$m/q5g.img"
fill_until_full "$m/thin2.img"
write_all "$m/q.img" 48
qemu-img compare -q -f raw -F raw "$T/data" "$m/q.img" || fail "qemu-img compare of the falloc disk"

unmount_wait "$m" "$DAEMON_PID"
fsck_clean "$T/ds.img" "after the reservations"

# After a remount: the punched range can be reserved again, and writing it works while
# the datastore is full.
mount_fg "$T/ds.img" "$m"
rm "$m/thin2.img" || fail "rm thin2.img"
fallocate -o 0 -l 64M "$m/thick.img" || fail "fallocate of the punched range after a remount"
[ "$(blocks_kib "$m/thick.img")" -eq $((160 << 10)) ] || fail "st_blocks after the second fallocate: $(blocks_kib "$m/thick.img") KiB"
fill_until_full "$m/thin3.img"
write_all "$m/thick.img" 160
unmount_wait "$m" "$DAEMON_PID"
fsck_clean "$T/ds.img" "after the remount"
echo "PASS: fallocate reserves"
