#!/usr/bin/env bash
# One writer on Ceph RBD: the image's exclusive lock on top of the datastore's lease, two
# clients of one cluster (two vsfs-mount processes, each its own Ceph client). Run with
# VSFS_IT_RBD=1 through tests/ceph/with_cluster.sh.
#   1. While a daemon holds the datastore, a second mount, vsfs-mkfs -f and vsfs-fsck -y
#      refuse at once and name the holder (from its lease); vsfs-fsck -n names it too;
#      no byte of the image changes (the holder's own lease renewals aside).
#   2. kill -9 of the holder: a new mount breaks the dead client's lock (the cluster
#      blocklists it), takes the lease (at once on this host, after the lease time from
#      another pid namespace) and replays; every fsync'd byte is there.
#   3. A frozen holder (SIGSTOP): a second daemon takes over after the cluster's watch
#      timeout and the lease time, blocklisting the old client. After SIGCONT every write
#      of the old daemon fails with EIO, none reaches the image, and its log says that it
#      lost the datastore; the taker's data and the datastore stay whole (fsck clean).
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
[ "${VSFS_IT_RBD:-0}" = 1 ] || fail "run with VSFS_IT_RBD=1 (tests/ceph/with_cluster.sh)"
export VSFS_IT_MOUNT_WAIT=60  # a takeover waits for the cluster's watch timeout and the lease

lease_ms=3000  # renewed every 750 ms: room for a loaded machine (the test runs beside others)
opts=(-o "lease.time_ms=$lease_ms")
mkfs_file "$T/ds.img" 512M
dev=$(dev_of "$T/ds.img")
img=$(rbd_image "$T/ds.img")
mkdir -p "$T/a" "$T/b"

# sum_but_lease: the image's sha256 with the lease grain (grain 1) left out.
sum_but_lease() {
	rbd -c "$VSFS_CEPH_CONF" export --no-progress "$img" - | python3 -c '
import hashlib, sys
f = sys.stdin.buffer
h = hashlib.sha256()
h.update(f.read(4096))
f.read(4096)
for chunk in iter(lambda: f.read(1 << 20), b""):
    h.update(chunk)
print(h.hexdigest())'
}
blocklisted() {
	ceph -c "$VSFS_CEPH_CONF" osd blocklist ls 2>/dev/null | grep -c "^127.0.0.1"
}

# 1. Two clients.
listed=$(blocklisted)
mount_fg "$T/ds.img" "$T/a" "${opts[@]}"
a_pid=$DAEMON_PID
head -c 8M /dev/urandom >"$T/d1"
cp "$T/d1" "$T/a/d1" && sync "$T/a/d1" || fail "write d1"
sleep 2  # the commit after the write, so that the datastore rests
before=$(sum_but_lease)
start=$(date +%s%N)
rc=0; "$VSFS_MOUNT" -f "${opts[@]}" "$dev" "$T/b" >"$T/b.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || { MOUNTS+=("$T/b"); fail "a second mount of $dev succeeded"; }
took=$(( ($(date +%s%N) - start) / 1000000 ))
grep -q "already mounted .*in use by .*(pid $a_pid, this host)" "$T/b.log" ||
	fail "the second mount's refusal: $(cat "$T/b.log")"
echo "a second mount refused in $took ms: $(cat "$T/b.log")"
rc=0; "$VSFS_MKFS" -f "$dev" >"$T/mkfs.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && grep -q "in use by .*(pid $a_pid, this host)" "$T/mkfs.log" ||
	fail "vsfs-mkfs -f: exit $rc: $(cat "$T/mkfs.log")"
rc=0; "$VSFS_FSCK" -y "$dev" >"$T/fsck.log" 2>&1 || rc=$?
[ "$rc" -eq 8 ] && grep -q "in use by .*(pid $a_pid, this host)" "$T/fsck.log" ||
	fail "vsfs-fsck -y: exit $rc: $(cat "$T/fsck.log")"
"$VSFS_FSCK" -n "$dev" >"$T/fsck.log" 2>&1
grep -q "lease is held by .*(pid $a_pid, this host)" "$T/fsck.log" ||
	fail "vsfs-fsck -n does not name the holder: $(cat "$T/fsck.log")"
[ "$(sum_but_lease)" = "$before" ] || fail "a refused command changed the datastore"
cmp "$T/d1" "$T/a/d1" || fail "d1 after the refusals"
[ "$(blocklisted)" = "$listed" ] || fail "a refusal blocklisted the holder"

# 2. kill -9, then a mount on this host.
head -c 4M /dev/urandom >"$T/d2"
cp "$T/d2" "$T/a/d2" && sync "$T/a/d2" || fail "write d2"
kill -9 "$a_pid"
wait "$a_pid" 2>/dev/null
fusermount3 -u "$T/a" 2>/dev/null || umount -l "$T/a"
start=$(date +%s%N)
mount_fg "$T/ds.img" "$T/b" "${opts[@]}"
took=$(( ($(date +%s%N) - start) / 1000000 ))
cmp "$T/d1" "$T/b/d1" && cmp "$T/d2" "$T/b/d2" || fail "fsync'd data after kill -9"
[ "$(blocklisted)" -gt "$listed" ] || fail "the dead client was not blocklisted"
echo "takeover on this host after kill -9: $took ms"
b_pid=$DAEMON_PID
kill -9 "$b_pid"
wait "$b_pid" 2>/dev/null
fusermount3 -u "$T/b" 2>/dev/null || umount -l "$T/b"
# From another pid namespace (as another host would): the lease is waited out too.
start=$(date +%s%N)
unshare --pid --fork "$VSFS_MOUNT" -f "${opts[@]}" "$dev" "$T/a" >"$T/ns.log" 2>&1 &
PIDS+=("$!")
MOUNTS+=("$T/a")
wait_mounted "$T/a" || { cat "$T/ns.log" >&2; fail "the mount from another pid namespace"; }
took=$(( ($(date +%s%N) - start) / 1000000 ))
grep -q "stopped renewing" "$T/ns.log" || fail "no wait for the lease: $(cat "$T/ns.log")"
cmp "$T/d2" "$T/a/d2" || fail "d2 after the takeover"
echo "takeover from another pid namespace after kill -9: $took ms"
fusermount3 -u "$T/a" || fail "unmount"
for _ in $(seq 100); do mountpoint -q "$T/a" || break; sleep 0.1; done
for p in "${PIDS[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
fsck_clean "$T/ds.img" "after the takeovers"

# 3. A frozen holder.
mount_fg "$T/ds.img" "$T/a" "${opts[@]}"
a_pid=$DAEMON_PID
a_log=$DAEMON_LOG
listed=$(blocklisted)
kill -STOP "$a_pid"
start=$(date +%s%N)
mount_fg "$T/ds.img" "$T/b" "${opts[@]}"
b_pid=$DAEMON_PID
took=$(( ($(date +%s%N) - start) / 1000000 ))
echo "takeover of a frozen holder: $took ms"
[ "$(blocklisted)" -gt "$listed" ] || fail "the frozen client was not blocklisted"
head -c 4M /dev/urandom >"$T/d3"
cp "$T/d3" "$T/b/d3" && sync "$T/b/d3" || fail "write d3 through the taker"
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
for _ in $(seq 50); do grep -q "lost the datastore" "$a_log" && break; sleep 0.1; done
grep -q "lost the datastore" "$a_log" || fail "the old holder's log: $(cat "$a_log")"
sleep 2
[ "$(sum_but_lease)" = "$before" ] || fail "the old holder changed the datastore after the takeover"
grep -q "lost" "$DAEMON_LOG" && fail "the taker lost its lease: $(cat "$DAEMON_LOG")"
cmp "$T/d3" "$T/b/d3" || fail "the taker's data"
fusermount3 -u "$T/a" 2>/dev/null || umount -l "$T/a"
unmount_wait "$T/b" "$b_pid"
fsck_clean "$T/ds.img" "after the frozen holder's takeover"
echo "PASS"
