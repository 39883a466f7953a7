#!/usr/bin/env bash
# Cloning a disk: vsfs-clone (vsfs-clone(1)) and the standard commands vsfs(7) "Clones"
# documents. A thin 4 GiB disk (plus a partial last grain) with 40 MiB of data at
# scattered offsets is cloned: the clone reads the same (cmp), has the same data map
# (SEEK_DATA/SEEK_HOLE), and the datastore's used space (.vsfs/stats and df) and the
# data it wrote (io.write_bytes, data grains written) grow by almost nothing, which a
# copy of 40 MiB could not do. Also: a clone from a snapshot, -f over an existing disk
# (in place), --progress on a pipe and on a terminal, the refusals and their exit
# status (DST exists, SRC or DST on another filesystem, SRC a directory or a file of
# .vsfs/, DST is SRC), a source written during clones (exit 0 or 4, never half a DST);
# then `cat >`, `cp` of a dense disk and `qemu-img convert -C` clone, `cp` of a thin
# disk copies, `cp --reflink=always` fails.
# vsfs-fsck -n finds the datastore clean afterwards.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
: "${VSFS_CLONE:?VSFS_CLONE must name the vsfs-clone binary}"

new_mount 2G
thin=$m/vm1/thin.img
mkdir "$m/vm1" || fail "mkdir vm1"

# 40 chunks of 1 MiB, 100 MiB apart, not grain-aligned; the size ends 1000 bytes into a
# grain, and the last bytes hold data (a partial grain that a clone copies).
python3 - "$thin" <<'PY' || fail "writing the thin disk"
import os, sys
with open(sys.argv[1], "wb") as f:
    f.truncate((4 << 30) + 1000)
    for i in range(40):
        f.seek(i * (100 << 20) + 12288 * i + 5000)
        f.write(os.urandom(1 << 20))
    f.seek(4 << 30)
    f.write(os.urandom(1000))
    os.fsync(f.fileno())
PY

# extents(fd): a file's size and data extents [(start, end)...] (SEEK_DATA/SEEK_HOLE),
# for the scripts below.
cat >"$T/extents.py" <<'PY'
import os
def extents(fd):
    size, at, out = os.fstat(fd).st_size, 0, []
    while at < size:
        try:
            d = os.lseek(fd, at, os.SEEK_DATA)
        except OSError:
            break
        h = os.lseek(fd, d, os.SEEK_HOLE)
        out.append((d, h))
        at = h
    return size, out
PY

# data_map FILE: its size and data extents, one line.
data_map() {
	PYTHONPATH="$T" python3 - "$1" <<'PY'
import os, sys
from extents import extents
size, out = extents(os.open(sys.argv[1], os.O_RDONLY))
print(size, " ".join(f"{d}-{h}" for d, h in out))
PY
}

# What a copy would grow: used space (stats and df), bytes clients wrote, data grains
# written on the device.
counters() {
	python3 - "$m" <<'PY'
import json, os, sys
d = json.load(open(os.path.join(sys.argv[1], ".vsfs/stats")))
v = os.statvfs(sys.argv[1])
io = d["io"]
print(d["space"]["used_bytes"], (v.f_blocks - v.f_bfree) * v.f_frsize, io["write_bytes"],
      io["in_place_grain_writes"] + io["redirected_grain_writes"])
PY
}
mark() { read -r u0 df0 w0 g0 < <(counters); }

# shared WHAT MAX_BYTES: since `mark`, used space (stats and df) grew by at most
# MAX_BYTES and at most MAX_BYTES were written (client bytes and data grains).
shared() {
	local u1 df1 w1 g1
	read -r u1 df1 w1 g1 < <(counters)
	echo "$1: used +$((u1 - u0)) (df +$((df1 - df0))), written +$((w1 - w0)), grains written +$((g1 - g0))"
	[ $((u1 - u0)) -le "$2" ] || fail "$1: used space grew by $((u1 - u0)) bytes: data was copied, not shared"
	[ $((df1 - df0)) -le "$2" ] || fail "$1: df's used space grew by $((df1 - df0)) bytes"
	[ $((w1 - w0)) -le "$2" ] || fail "$1: $((w1 - w0)) bytes were written: data was copied"
	[ $((g1 - g0)) -le $(($2 / 4096)) ] || fail "$1: $((g1 - g0)) data grains were written: data was copied"
}

# copied WHAT MIN_BYTES: since `mark`, at least MIN_BYTES were written.
copied() {
	local u1 df1 w1 g1
	read -r u1 df1 w1 g1 < <(counters)
	echo "$1: used +$((u1 - u0)), written +$((w1 - w0)) (a copy)"
	[ $((w1 - w0)) -ge "$2" ] || fail "$1: only $((w1 - w0)) bytes written; vsfs(7) says it copies"
}

# same_as A B: B has A's size and data map and the same bytes in every data extent (the
# holes of both read zeros: sparse_test.sh), which is cmp without reading gigabytes of
# holes through FUSE.
same_as() {
	PYTHONPATH="$T" python3 - "$1" "$2" <<'PY' || fail "$2 differs from $1"
import os, sys
from extents import extents
a, b = (os.open(p, os.O_RDONLY) for p in sys.argv[1:3])
ma, mb = extents(a), extents(b)
if ma != mb:
    sys.exit(f"size or data map: {ma[0]} {ma[1][:4]}... vs {mb[0]} {mb[1][:4]}...")
for d, h in ma[1]:
    for off in range(d, h, 1 << 20):
        n = min(1 << 20, h - off)
        if os.pread(a, n, off) != os.pread(b, n, off):
            sys.exit(f"bytes differ in [{off}, {off + n})")
PY
}
same() { same_as "$thin" "$1"; }

thin_map=$(data_map "$thin")
[ "$(wc -w <<<"$thin_map")" -eq 42 ] || fail "the thin disk's map: $thin_map"
limit=$((2 << 20))  # a copy of the 40 MiB would be 20 times this

# --- vsfs-clone: a thin disk.
mark
"$VSFS_CLONE" "$thin" "$m/vm1/c1.img" 2>"$T/err" || { cat "$T/err" >&2; fail "vsfs-clone exit $?"; }
[ ! -s "$T/err" ] || fail "vsfs-clone without --progress printed: $(cat "$T/err")"
shared "vsfs-clone" "$limit"
cmp "$thin" "$m/vm1/c1.img" || fail "the clone differs from its source"
same "$m/vm1/c1.img"
[ "$(stat -c %a "$m/vm1/c1.img")" = "$(stat -c %a "$thin")" ] || fail "the clone's mode"

# --progress on a pipe: lines, the last one says all of it.
size=$(stat -c %s "$thin")
"$VSFS_CLONE" --progress "$thin" "$m/vm1/c2.img" 2>"$T/progress" || fail "vsfs-clone --progress"
tail -n 1 "$T/progress" | grep -q "^vsfs-clone: $m/vm1/c2.img: $size/$size bytes (.*, 100%)\$" ||
	fail "--progress last line: $(cat "$T/progress")"
grep -q $'\r' "$T/progress" && fail "--progress on a pipe used carriage returns"
same "$m/vm1/c2.img"
# ... and on a terminal: one line, redrawn.
script -qec "$VSFS_CLONE --progress $thin $m/vm1/c3.img" /dev/null >"$T/tty" </dev/null ||
	fail "vsfs-clone --progress on a terminal"
grep -q $'\r'"vsfs-clone: $m/vm1/c3.img: $size/$size bytes" "$T/tty" || fail "--progress on a terminal: $(cat -v "$T/tty")"
[ "$(tr -cd '\n' <"$T/tty" | wc -c)" -eq 1 ] || fail "--progress on a terminal wrote more than one line: $(cat -v "$T/tty")"
same "$m/vm1/c3.img"
rm "$m/vm1/c2.img" "$m/vm1/c3.img"

# --- From a snapshot, after the live disk changed: the clone is the snapshot's.
mkdir "$m/.snapshots/s1" || fail "mkdir .snapshots/s1"
dd if=/dev/urandom of="$thin" bs=1M count=1 seek=7 conv=notrunc,fsync status=none || fail "writing after the snapshot"
mark
"$VSFS_CLONE" "$m/.snapshots/s1/vm1/thin.img" "$m/vm1/from-snap.img" || fail "vsfs-clone from a snapshot"
shared "vsfs-clone from a snapshot" "$limit"
same_as "$m/.snapshots/s1/vm1/thin.img" "$m/vm1/from-snap.img"
cmp -s "$thin" "$m/vm1/from-snap.img" && fail "the clone from the snapshot has the live disk's later write"
same_as "$m/vm1/c1.img" "$m/vm1/from-snap.img"

# --- Refusals: exit 3, nothing changed.
refused() {  # refused WHAT WANT_IN_MESSAGE ARGS...
	local what=$1 want=$2 rc=0
	shift 2
	"$VSFS_CLONE" "$@" 2>"$T/err" || rc=$?
	[ "$rc" -eq 3 ] || fail "$what: exit $rc, expected 3 ($(cat "$T/err"))"
	grep -q -- "$want" "$T/err" || fail "$what: message '$(cat "$T/err")' does not say '$want'"
	echo "$what: exit 3: $(cat "$T/err")"
}
before=$(cksum <"$m/vm1/from-snap.img")
refused "DST exists" "File exists" "$thin" "$m/vm1/from-snap.img"
[ "$(cksum <"$m/vm1/from-snap.img")" = "$before" ] || fail "a refused clone changed DST"
ino=$(stat -c %i "$m/vm1/from-snap.img")
"$VSFS_CLONE" -f "$thin" "$m/vm1/from-snap.img" || fail "vsfs-clone -f over an existing file"
same_as "$thin" "$m/vm1/from-snap.img"
[ "$(stat -c %i "$m/vm1/from-snap.img")" = "$ino" ] || fail "-f replaced DST's inode instead of cloning in place"
echo outside >"$T/outside.img"
refused "SRC on another filesystem" "not on a vsfs datastore" "$T/outside.img" "$m/vm1/o.img"
[ ! -e "$m/vm1/o.img" ] || fail "a refused clone created DST"
refused "DST on another filesystem" "not on the vsfs mount" "$thin" "$T/o.img"
[ ! -e "$T/o.img" ] || fail "a refused clone created DST on the other filesystem"
refused "SRC a directory" "Is a directory" "$m/vm1" "$m/vm1-copy"
[ ! -e "$m/vm1-copy" ] || fail "a refused clone of a directory created DST"
refused "SRC made up by vsfs" "not a disk" "$m/.vsfs/stats" "$m/stats.json"
[ ! -e "$m/stats.json" ] || fail "a refused clone of .vsfs/stats created DST"
refused "DST is SRC" "itself" -f "$thin" "$m/vm1/../vm1/thin.img"
same_as "$thin" "$m/vm1/from-snap.img"  # $thin was not emptied
rc=0; "$VSFS_CLONE" "$thin" 2>/dev/null || rc=$?
[ "$rc" -eq 2 ] || fail "one argument: exit $rc, expected 2"
rc=0; "$VSFS_CLONE" "$m/vm1/missing.img" "$m/vm1/m.img" 2>"$T/err" || rc=$?
[ "$rc" -eq 3 ] && grep -q "missing.img: No such file or directory" "$T/err" ||
	fail "missing SRC: exit $rc, $(cat "$T/err")"

# --- A source written during clones (the first clone, so $thin stays as it is): each
# clone either is whole (0) or says the source changed (4) and leaves no DST.
python3 - "$m/vm1/c1.img" "$T/writer.stop" <<'PY' &
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
buf = os.urandom(4096)
i = 0
while not os.path.exists(sys.argv[2]):
    os.pwrite(fd, buf, (i % 4096) * 1048576)
    i += 1
PY
writer=$!
changed=0
for i in $(seq 20); do
	rc=0
	"$VSFS_CLONE" "$m/vm1/c1.img" "$m/vm1/busy.img" 2>"$T/err" || rc=$?
	case $rc in
	0) rm "$m/vm1/busy.img" ;;
	4) grep -q "was written during the clone" "$T/err" || fail "exit 4 says: $(cat "$T/err")"
	   [ ! -e "$m/vm1/busy.img" ] || fail "exit 4 left DST behind"
	   changed=$((changed + 1)) ;;
	*) fail "clone of a source being written: exit $rc: $(cat "$T/err")" ;;
	esac
done
touch "$T/writer.stop"
wait "$writer" || fail "the writer failed"
echo "clones of a source being written: $changed of 20 saw it change"

# --- The standard commands vsfs(7) says clone.
mark
cat "$thin" >"$m/vm1/cat.img" || fail "cat"
sync "$m/vm1/cat.img"
shared "cat SRC > DST" "$limit"
same "$m/vm1/cat.img"

mark
qemu-img convert -C -f raw -O raw "$thin" "$m/vm1/qemu.img" || fail "qemu-img convert -C"
sync "$m/vm1/qemu.img"
shared "qemu-img convert -C" "$limit"
# qemu-img writes the first 4 KiB of a new raw image (zeros) before converting, so the
# first grain of the copy holds data where the source has a hole: no map comparison. It
# also rounds the size up to whole 512-byte sectors.
[ "$(stat -c %s "$m/vm1/qemu.img")" -eq $(((size + 511) / 512 * 512)) ] ||
	fail "qemu-img convert -C: size $(stat -c %s "$m/vm1/qemu.img")"
cmp -n "$size" "$thin" "$m/vm1/qemu.img" || fail "qemu-img convert -C: the copy differs"

head -c 16M /dev/urandom >"$m/vm1/dense.img" || fail "writing a dense disk"
sync "$m/vm1/dense.img"
mark
cp "$m/vm1/dense.img" "$m/vm1/dense-cp.img" || fail "cp of a dense disk"
sync "$m/vm1/dense-cp.img"
shared "cp of a dense disk" "$limit"
cmp "$m/vm1/dense.img" "$m/vm1/dense-cp.img" || fail "cp of a dense disk: the copy differs"

# --- ... and those it says copy or fail.
mark
cp "$thin" "$m/vm1/cp.img" || fail "cp of a thin disk"
sync "$m/vm1/cp.img"
copied "cp of a thin disk" $((40 << 20))
rc=0; cp --reflink=always "$m/vm1/dense.img" "$m/vm1/reflink.img" 2>"$T/err" || rc=$?
[ "$rc" -ne 0 ] && grep -q "Operation not supported" "$T/err" ||
	fail "cp --reflink=always: exit $rc, $(cat "$T/err"); vsfs(7) says it fails"
rm -f "$m/vm1/reflink.img"

unmount_wait "$m" "$DAEMON_PID"
fsck_clean "$T/ds.img" "after the clones"
echo "clone tool: ok"
