#!/usr/bin/env bash
# Data integrity through vsfs-mount with fio's crc32c verification, O_DIRECT io_uring:
# random 4 KiB writes (QD16) and sequential 1 MiB writes on 256 MiB disk files, each
# verified after writing; then unmount, vsfs-fsck -n must find the datastore clean,
# remount and verify everything again (verify_only regenerates the same pattern).
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
command -v fio >/dev/null || fail "fio is not installed (see README: install step)"

mkfs_file "$T/ds.img" 2G
mkdir "$T/mnt"
cd "$T" || fail "cd $T"

rand_job=(--name=rand --filename="$T/mnt/rand.img" --size=256M --ioengine=io_uring --direct=1
	--rw=randwrite --bs=4k --iodepth=16 --verify=crc32c --randrepeat=1
	--verify_state_save=0)
seq_job=(--name=seq --filename="$T/mnt/seq.img" --size=256M --ioengine=io_uring --direct=1
	--rw=write --bs=1M --iodepth=16 --verify=crc32c --verify_state_save=0)

mount_fg "$T/ds.img" "$T/mnt"
fio "${rand_job[@]}" --do_verify=1 >"$T/fio.rand.log" 2>&1 || {
	tail -n 30 "$T/fio.rand.log" >&2
	fail "fio random 4k write+verify"
}
fio "${seq_job[@]}" --do_verify=1 >"$T/fio.seq.log" 2>&1 || {
	tail -n 30 "$T/fio.seq.log" >&2
	fail "fio sequential 1M write+verify"
}
grep -q "err= 0" "$T/fio.rand.log" || fail "fio random reported errors"
unmount_wait "$T/mnt" "$DAEMON_PID"

fsck_clean "$T/ds.img" "after unmount"

mount_fg "$T/ds.img" "$T/mnt"
[ "$(stat -c %s "$T/mnt/rand.img")" -eq $((256 << 20)) ] || fail "rand.img size after remount"
fio "${rand_job[@]}" --verify_only=1 >"$T/fio.rand2.log" 2>&1 || {
	tail -n 30 "$T/fio.rand2.log" >&2
	fail "fio random verify_only after remount"
}
fio "${seq_job[@]}" --verify_only=1 >"$T/fio.seq2.log" 2>&1 || {
	tail -n 30 "$T/fio.seq2.log" >&2
	fail "fio sequential verify_only after remount"
}
# verify_only must really have read the data back.
grep -Eq "READ: bw=.*io=2(56|68)" "$T/fio.rand2.log" || {
	cat "$T/fio.rand2.log" >&2
	fail "fio verify_only read nothing"
}
unmount_wait "$T/mnt" "$DAEMON_PID"
echo "PASS: fio verify"
