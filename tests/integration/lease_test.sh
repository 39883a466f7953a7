#!/usr/bin/env bash
# One writer, whatever the path to a datastore's bytes (the image file, and a loop device
# over it): the datastore's lease.
#   1. While a daemon holds it through the file, a mount, vsfs-mkfs -f and vsfs-fsck -y
#      through the loop device refuse and name the holder, and change no byte of the
#      datastore (the holder's own lease renewals aside).
#   2. kill -9 of the holder: a mount on this host takes over at once (the holder's
#      process is gone); one from another pid namespace, which cannot know that, waits
#      the lease out. Every fsync'd byte is there.
#   3. A frozen holder (SIGSTOP): a mount through the loop device takes over after the
#      lease time; after SIGCONT every write of the old daemon fails with EIO, its log
#      says why, and the taker's data and the datastore stay whole (fsck clean).
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

lease_ms=2000
opts=(-o "lease.time_ms=$lease_ms")
mkfs_file "$T/ds.img" 512M
mkdir -p "$T/a" "$T/b"
loop=$(losetup -f --show "$T/ds.img") || fail "losetup failed"
LOOPS+=("$loop")

# sum_but_lease: the image's sha256 with the lease grain (grain 1) left out.
sum_but_lease() {
	python3 - "$T/ds.img" <<'PY'
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], 'rb') as f:
    h.update(f.read(4096))
    f.seek(8192)
    for chunk in iter(lambda: f.read(1 << 20), b''):
        h.update(chunk)
print(h.hexdigest())
PY
}

# 1. Two paths.
mount_fg "$T/ds.img" "$T/a" "${opts[@]}"
a_pid=$DAEMON_PID
head -c 8M /dev/urandom >"$T/d1"
cp "$T/d1" "$T/a/d1" && sync "$T/a/d1" || fail "write d1"
sleep 2  # the commit after the write, so that the datastore rests
before=$(sum_but_lease)
rc=0; "$VSFS_MOUNT" -f "${opts[@]}" "$loop" "$T/b" >"$T/b.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || { MOUNTS+=("$T/b"); fail "a second mount through $loop succeeded"; }
grep -q "in use by .*(pid $a_pid, this host), which renews its lease" "$T/b.log" ||
	fail "the second mount's refusal: $(cat "$T/b.log")"
rc=0; "$VSFS_MKFS" -f "$loop" >"$T/mkfs.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && grep -q "in use by .*(pid $a_pid, this host).*nothing was written" "$T/mkfs.log" ||
	fail "vsfs-mkfs -f through $loop: exit $rc: $(cat "$T/mkfs.log")"
rc=0; "$VSFS_FSCK" -y "$loop" >"$T/fsck.log" 2>&1 || rc=$?
[ "$rc" -eq 8 ] && grep -q "in use by .*(pid $a_pid, this host)" "$T/fsck.log" ||
	fail "vsfs-fsck -y through $loop: exit $rc: $(cat "$T/fsck.log")"
"$VSFS_FSCK" -n "$loop" >"$T/fsck.log" 2>&1
grep -q "lease is held by .*(pid $a_pid, this host)" "$T/fsck.log" ||
	fail "vsfs-fsck -n does not name the holder: $(cat "$T/fsck.log")"
[ "$(sum_but_lease)" = "$before" ] || fail "a refused command changed the datastore"
cmp "$T/d1" "$T/a/d1" || fail "d1 after the refusals"

# 2. kill -9, then a mount on this host: at once.
head -c 4M /dev/urandom >"$T/d2"
cp "$T/d2" "$T/a/d2" && sync "$T/a/d2" || fail "write d2"
kill -9 "$a_pid"
wait "$a_pid" 2>/dev/null
fusermount3 -u "$T/a" 2>/dev/null || umount -l "$T/a"
wait_device_free "$T/ds.img"
start=$(date +%s%N)
mount_fg "$loop" "$T/b" "${opts[@]}"
took=$(( ($(date +%s%N) - start) / 1000000 ))
grep -q "is gone: taking its lease" "$DAEMON_LOG" || fail "no takeover line: $(cat "$DAEMON_LOG")"
cmp "$T/d1" "$T/b/d1" && cmp "$T/d2" "$T/b/d2" || fail "fsync'd data after kill -9"
echo "takeover on this host after kill -9: $took ms"
b_pid=$DAEMON_PID
kill -9 "$b_pid"
wait "$b_pid" 2>/dev/null
fusermount3 -u "$T/b" 2>/dev/null || umount -l "$T/b"
# From another pid namespace (as another host would): the lease is waited out.
start=$(date +%s%N)
unshare --pid --fork "$VSFS_MOUNT" -f "${opts[@]}" "$T/ds.img" "$T/a" >"$T/ns.log" 2>&1 &
PIDS+=("$!")
MOUNTS+=("$T/a")
wait_mounted "$T/a" || { cat "$T/ns.log" >&2; fail "the mount from another pid namespace"; }
took=$(( ($(date +%s%N) - start) / 1000000 ))
grep -q "stopped renewing" "$T/ns.log" || fail "no wait for the lease: $(cat "$T/ns.log")"
[ "$took" -ge $((2 * lease_ms)) ] || fail "took over after $took ms, less than twice the lease time"
cmp "$T/d2" "$T/a/d2" || fail "d2 after the takeover"
echo "takeover from another pid namespace after kill -9: $took ms"
fusermount3 -u "$T/a" || fail "unmount"
for _ in $(seq 100); do mountpoint -q "$T/a" || break; sleep 0.1; done
wait_device_free "$T/ds.img"
fsck_clean "$T/ds.img" "after the takeovers"

# 3. A frozen holder.
mount_fg "$T/ds.img" "$T/a" "${opts[@]}"
a_pid=$DAEMON_PID
a_log=$DAEMON_LOG
kill -STOP "$a_pid"
start=$(date +%s%N)
mount_fg "$loop" "$T/b" "${opts[@]}"
b_pid=$DAEMON_PID
took=$(( ($(date +%s%N) - start) / 1000000 ))
echo "takeover of a frozen holder: $took ms"
grep -q "stopped renewing" "$DAEMON_LOG" || fail "the taker did not wait: $(cat "$DAEMON_LOG")"
head -c 4M /dev/urandom >"$T/d3"
cp "$T/d3" "$T/b/d3" && sync "$T/b/d3" || fail "write d3 through the taker"
# The taker comes to rest (its recovery gave the formatter blocks to format), so that
# any change of the image from now on would be the old holder's.
for _ in $(seq 200); do
	[ "$(stat_value "$T/b" format.to_format_blocks)" = 0 ] && break
	sleep 0.1
done
[ "$(stat_value "$T/b" format.to_format_blocks)" = 0 ] || fail "the taker's formatter does not finish"
sleep 2
before=$(sum_but_lease)
kill -CONT "$a_pid"
sleep 1
if dd if=/dev/urandom of="$T/a/late" bs=64k count=4 conv=fsync status=none 2>"$T/dd.err"; then
	fail "the old holder's write succeeded after the takeover"
fi
grep -q "Input/output error" "$T/dd.err" || fail "the old holder's write: $(cat "$T/dd.err")"
grep -q "lost the datastore" "$a_log" || fail "the old holder's log: $(cat "$a_log")"
sleep 2
[ "$(sum_but_lease)" = "$before" ] || fail "the old holder changed the datastore after the takeover"
grep -q "lost" "$DAEMON_LOG" && fail "the taker lost its lease: $(cat "$DAEMON_LOG")"
cmp "$T/d3" "$T/b/d3" || fail "the taker's data"
fusermount3 -u "$T/a" 2>/dev/null || umount -l "$T/a"
unmount_wait "$T/b" "$b_pid"
fsck_clean "$T/ds.img" "after the frozen holder's takeover"
echo "PASS"
