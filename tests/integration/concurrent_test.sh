#!/usr/bin/env bash
# Two (three) files written concurrently: dd with O_DIRECT, dd through the page cache
# and fio random writes, all at once; each file must match its reference byte for byte
# (sha256), and still after a remount.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
command -v fio >/dev/null || fail "fio is not installed (see README: install step)"

new_mount 1G

head -c 64M /dev/urandom >"$T/a.ref"
head -c 48M /dev/urandom >"$T/b.ref"
dd if="$T/a.ref" of="$T/mnt/a.img" bs=1M oflag=direct status=none &
pa=$!
dd if="$T/b.ref" of="$T/mnt/b.img" bs=64K status=none &
pb=$!
fio --name=c --filename="$T/mnt/c.img" --size=32M --ioengine=io_uring --direct=1 \
	--rw=randwrite --bs=4k --iodepth=32 --verify=crc32c --do_verify=1 \
	--verify_state_save=0 >"$T/fio.log" 2>&1 &
pc=$!
wait "$pa" || fail "dd a"
wait "$pb" || fail "dd b"
wait "$pc" || { tail -n 20 "$T/fio.log" >&2; fail "fio c"; }

check() {
	[ "$(sha256sum <"$T/mnt/a.img")" = "$(sha256sum <"$T/a.ref")" ] || fail "a.img differs ($1)"
	[ "$(sha256sum <"$T/mnt/b.img")" = "$(sha256sum <"$T/b.ref")" ] || fail "b.img differs ($1)"
}
check "mounted"
unmount_wait "$T/mnt" "$DAEMON_PID"
mount_fg "$T/ds.img" "$T/mnt"
check "after remount"
unmount_wait "$T/mnt" "$DAEMON_PID"
echo "PASS: concurrent writers"
