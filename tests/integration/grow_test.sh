#!/usr/bin/env bash
# vsfs-grow on a mounted datastore and on one that is not: after the image file grew,
# df shows the new size at once (the online growth runs under fio's verified writes), the disks, a snapshot and the .cbt map between two
# snapshots read as before, a write that needs the new space works, and fsck finds the
# grown datastore clean. Shrinking, a size past the device and a growth too small for
# its tables are refused with a message and change no byte of the image.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
: "${VSFS_GROW:?VSFS_GROW must name the vsfs-grow binary}"

new_mount 256M
mkdir "$m/vm" || fail mkdir
head -c 40M /dev/urandom >"$T/a"
dd if="$T/a" of="$m/vm/disk.img" bs=1M conv=fsync status=none || fail "write"
mkdir "$m/.snapshots/s1" || fail "snapshot s1"
head -c 1M /dev/urandom | dd of="$m/vm/disk.img" bs=1M seek=7 conv=notrunc,fsync status=none ||
	fail "overwrite"
mkdir "$m/.snapshots/s2" || fail "snapshot s2"

# sums: the disk, the first snapshot's copy and the .cbt map between the snapshots.
sums() {
	sha256sum "$m/vm/disk.img" "$m/.snapshots/s1/vm/disk.img" "$m/.cbt/s2/s1/vm/disk.img" |
		cut -d' ' -f1
}
before=$(sums)
grep -q "^7340032 1048576 data$" "$m/.cbt/s2/s1/vm/disk.img" || fail "the .cbt map lacks the overwrite"
df_bytes() { df -B1 --output=size "$m" | tail -n1 | tr -d ' '; }
small=$(df_bytes)

# Refusals, online: nothing changes.
refused() {
	local want=$1
	shift
	if "$VSFS_GROW" "$@" >"$T/grow.out" 2>&1; then cat "$T/grow.out" >&2; fail "vsfs-grow $* succeeded"; fi
	grep -q -- "$want" "$T/grow.out" || { cat "$T/grow.out" >&2; fail "vsfs-grow $*: no '$want'"; }
}
refused "shrinking" "$m" 128M
refused "grow the device" "$m" 2G       # the file is still 256 MiB
[ "$(df_bytes)" = "$small" ] || fail "a refused growth changed df"

# Online: the file grows, the daemon takes it in while fio writes and verifies a disk.
command -v fio >/dev/null || fail "fio is not installed (see README: install step)"
truncate -s 1G "$T/ds.img" || fail truncate
refused "too little" "$m" 257M
fio --name=busy --filename="$m/vm/busy.img" --size=48M --ioengine=io_uring --direct=1 \
	--rw=randwrite --bs=4k --iodepth=16 --verify=crc32c --randrepeat=1 --loops=6 \
	--verify_state_save=0 >"$T/fio.log" 2>&1 &
fio_pid=$!
PIDS+=("$fio_pid")
sleep 1
"$VSFS_GROW" "$m" >"$T/grow.out" 2>&1 || { cat "$T/grow.out" >&2; fail "vsfs-grow $m"; }
kill -0 "$fio_pid" 2>/dev/null || echo "note: fio ended before the growth" >&2
wait "$fio_pid" || { cat "$T/fio.log" >&2; fail "fio across the online growth"; }
grep -q "grown from 256.00 MiB to 1.00 GiB" "$T/grow.out" || { cat "$T/grow.out" >&2; fail "vsfs-grow's line"; }
big=$(df_bytes)
[ "$big" -gt $((small + 700 * 1048576)) ] || fail "df shows $big bytes after growing from $small"
[ "$(sums)" = "$before" ] || fail "contents changed by the online growth"
# More than the datastore had before: it must come from the new space.
dd if=/dev/urandom of="$T/big" bs=1M count=500 status=none
cp "$T/big" "$m/vm/big.img" && sync "$m/vm/big.img" || fail "write into the new space"
cmp "$T/big" "$m/vm/big.img" || fail "read back from the new space"
"$VSFS_GROW" "$m" >"$T/grow.out" 2>&1 || fail "vsfs-grow again"
grep -q "nothing to do" "$T/grow.out" || fail "a second vsfs-grow: $(cat "$T/grow.out")"
unmount_wait "$m" "$DAEMON_PID"
fsck_clean "$T/ds.img" "after the online growth"

# Offline: the file grows again, vsfs-grow opens the datastore itself.
truncate -s 3G "$T/ds.img" || fail truncate
cp --sparse=always "$T/ds.img" "$T/copy.img"
refused "shrinking" "$T/ds.img" 512M
cmp "$T/ds.img" "$T/copy.img" || fail "a refused offline growth changed the image"
"$VSFS_GROW" "$T/ds.img" 2G >"$T/grow.out" 2>&1 || { cat "$T/grow.out" >&2; fail "vsfs-grow offline"; }
grep -q "grown from 1.00 GiB to 2.00 GiB" "$T/grow.out" || { cat "$T/grow.out" >&2; fail "offline line"; }
fsck_clean "$T/ds.img" "after the offline growth"
mount_fg "$T/ds.img" "$m"
[ "$(sums)" = "$before" ] || fail "contents changed by the offline growth"
cmp "$T/big" "$m/vm/big.img" || fail "big.img after the offline growth"
[ "$(df_bytes)" -gt $((big + 900 * 1048576)) ] || fail "df after the offline growth: $(df_bytes)"
# A mounted datastore's device names its mount point.
refused "run vsfs-grow $m" "$T/ds.img"
dd if=/dev/urandom of="$m/vm/big2.img" bs=1M count=900 conv=fsync status=none || fail "write 900M"
unmount_wait "$m" "$DAEMON_PID"
fsck_clean "$T/ds.img" "after writes into the grown space"
echo "PASS"
