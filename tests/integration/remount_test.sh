#!/usr/bin/env bash
# mount -o remount,ro|rw DIR applies to the running daemon (mount(8) runs
# mount.fuse.vsfs, which asks the daemon through its ioctl). Under writers that keep
# writing (a fio job at first, a writer that goes on after EROFS):
# - once remount,ro returns: every write and every namespace change fails with EROFS,
#   reads work, .vsfs/stats says read_only, and the datastore image does not change
#   (its checksum, twice, a second apart, while the writer keeps trying);
# - after remount,rw: writes land again (a fio verify job passes), the image changes.
# Without writers the kernel's flag follows (findmnt ro/rw); with a file open for
# writing the kernel keeps the mount read-write and mount says why. A datastore mounted
# with -o ro refuses remount,rw with its reason; a user other than root gets EPERM from
# the ioctl. Every write the daemon acknowledged reads back after the last unmount.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
use_build_mount_helpers

command -v fio >/dev/null || fail "fio is not installed"
new_mount 1G -o allow_other
disk=$m/disk.img
truncate -s 64M "$disk"

now() { python3 -c 'import time; print(time.monotonic())'; }

# The writer: 4 KiB writes at offsets 0, 4096, ... (wrapping at 16 MiB) of a pattern
# that names the write, each line of its log "TIME SEQ ok|EROFS|errno"; it stops when
# $T/stop exists.
cat >"$T/writer.py" <<'PY'
import errno, os, sys, time
path, log, stop = sys.argv[1:4]
fd = os.open(path, os.O_WRONLY)
out = open(log, "w", buffering=1)
seq = 0
while not os.path.exists(stop):
    off = (seq % 4096) * 4096
    data = (b"%016d" % seq) * 256
    try:
        os.pwrite(fd, data, off)
        r = "ok"
    except OSError as e:
        r = "EROFS" if e.errno == errno.EROFS else str(e.errno)
    out.write("%.6f %d %s\n" % (time.monotonic(), seq, r))
    seq += 1
    time.sleep(0.002)
os.close(fd)
PY
python3 "$T/writer.py" "$disk" "$T/writer.log" "$T/stop" &
writer=$!
PIDS+=("$writer")
fio --name=load --filename="$disk" --size=16M --offset=32M --rw=randwrite --bs=4k \
	--direct=1 --ioengine=psync --time_based --runtime=30 --output="$T/fio1.out" >/dev/null 2>&1 &
fio1=$!
PIDS+=("$fio1")
sleep 1

# --- read-only under load
mount -o remount,ro "$m" 2>"$T/remount.err" || fail "remount,ro: $(cat "$T/remount.err")"
t_ro=$(now)
[ "$(stat_value "$m" datastore.read_only)" = True ] || fail "stats do not say read_only after remount,ro"
if findmnt -n -o OPTIONS "$m" | grep -q '^rw'; then
	grep -q "files are open for writing, so the kernel keeps the mount marked read-write" \
		"$T/remount.err" || fail "kernel flag still rw without the reason: $(cat "$T/remount.err")"
fi
sum1=$(md5sum <"$T/ds.img")
sleep 1
sum2=$(md5sum <"$T/ds.img")
[ "$sum1" = "$sum2" ] || fail "the datastore image changed while read-only"
wait "$fio1" && fail "fio went on writing while read-only"
grep -q "Read-only file system" "$T/fio1.out" || fail "fio did not fail with EROFS: $(grep -m1 err= "$T/fio1.out")"
for cmd in "touch $m/new" "mkdir $m/dir" "rm $m/disk.img" "mkdir $m/.snapshots/s" "truncate -s 1M $disk" \
	"fallocate -p -o 0 -l 4096 $disk" "mv $disk $m/moved"; do
	out=$($cmd 2>&1) && fail "$cmd succeeded while read-only"
	grep -q "Read-only file system" <<<"$out" || fail "$cmd: $out (expected EROFS)"
done
head -c 4096 "$disk" >/dev/null || fail "read while read-only"
# A second ro is harmless.
mount -o remount,ro "$m" || fail "remount,ro twice"

# --- read-write again
t_rw_asked=$(now)
mount -o remount,rw "$m" 2>"$T/remount.err" || fail "remount,rw: $(cat "$T/remount.err")"
t_rw=$(now)
findmnt -n -o OPTIONS "$m" | grep -q '^rw' || fail "the kernel's flag is not rw after remount,rw"
[ "$(stat_value "$m" datastore.read_only)" = False ] || fail "stats say read_only after remount,rw"
sleep 1
fio --name=verify --filename="$disk" --size=8M --offset=48M --rw=randwrite --bs=4k --direct=1 \
	--ioengine=psync --verify=crc32c --do_verify=1 --output="$T/fio2.out" >/dev/null 2>&1 ||
	fail "fio verify after remount,rw: $(grep -m1 err= "$T/fio2.out")"
touch "$m/new" || fail "create after remount,rw"
touch "$T/stop"
wait "$writer" || fail "the writer failed"

# The writer's log: from when remount,ro returned until remount,rw was asked every
# write failed with EROFS, after rw returned every write succeeded; nothing else failed.
python3 - "$T/writer.log" "$t_ro" "$t_rw_asked" "$t_rw" <<'PY' || fail "writer results"
import sys
log, t_ro, t_rw_asked, t_rw = sys.argv[1], *map(float, sys.argv[2:5])
rows = [l.split() for l in open(log)]
bad = [r for r in rows if r[2] not in ("ok", "EROFS")]
assert not bad, "writes failed with something else: %s" % bad[:3]
ro = [r for r in rows if t_ro < float(r[0]) < t_rw_asked]
assert ro and all(r[2] == "EROFS" for r in ro), "a write succeeded while read-only: %s" % \
    [r for r in ro if r[2] != "EROFS"][:3]
after = [r for r in rows if float(r[0]) > t_rw]
assert after and all(r[2] == "ok" for r in after), "a write failed after remount,rw"
assert any(float(r[0]) < t_ro and r[2] == "ok" for r in rows), "no write before remount,ro"
print("writer: %d writes, %d refused while read-only, %d ok after" %
      (len(rows), len(ro), len(after)))
PY

# --- without writers the kernel's flag follows
mount -o remount,ro "$m" || fail "remount,ro without writers"
findmnt -n -o OPTIONS "$m" | grep -q '^ro' || fail "the kernel's flag is not ro without writers"
touch "$m/x" 2>/dev/null && fail "create on a read-only mount"
# Only root may switch: another user's ioctl gets EPERM.
chmod o+x "$T"
setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 - "$m" <<'PY' || fail "ioctl as another user"
import errno, fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
try:
    fcntl.ioctl(fd, (1 << 30) | (4 << 16) | (0xbd << 8) | 1, struct.pack("I", 0))
    sys.exit("the ioctl succeeded for another user")
except OSError as e:
    assert e.errno == errno.EPERM, e
PY
[ "$(stat_value "$m" datastore.read_only)" = True ] || fail "another user's ioctl changed the mode"
mount -o remount,rw "$m" || fail "remount,rw without writers"
findmnt -n -o OPTIONS "$m" | grep -q '^rw' || fail "the kernel's flag is not rw"
# The last write of the writer that was answered reads back after the unmount.
last=$(awk '$3 == "ok" { s = $2 } END { print s }' "$T/writer.log")
umount "$m" || fail "umount"
fsck_clean "$T/ds.img" "after the remounts"
mount_fg "$T/ds.img" "$m" -o ro
off=$(( (last % 4096) * 4096 ))
got=$(dd if="$disk" bs=4096 skip=$((off / 4096)) count=1 status=none | head -c 16)
[ "$got" = "$(printf '%016d' "$last")" ] || fail "write $last read back as '$got'"

# --- mounted -o ro: remount,rw is refused with its reason
rc=0
mount -o remount,rw "$m" 2>"$T/remount.err" || rc=$?
[ "$rc" -ne 0 ] || fail "remount,rw of a datastore mounted -o ro succeeded"
grep -q "mounted read-only (-o ro), its device open for reading only; unmount it and mount it read-write" \
	"$T/remount.err" || fail "remount,rw of an -o ro mount: $(cat "$T/remount.err")"
mount -o remount,ro "$m" || fail "remount,ro of an -o ro mount"
umount "$m" || fail "umount of the -o ro mount"
echo "remount: ro and rw applied to the running daemon"
