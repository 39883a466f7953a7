#!/usr/bin/env bash
# Sparse disks: truncate -s 10G uses no space; 1 MiB written at 5 GiB uses 1 MiB (du,
# st_blocks); SEEK_DATA/SEEK_HOLE find exactly that extent; fallocate punch-hole frees
# it again and reads zeros; zero-range behaves as documented (op_fallocate.cc); plain
# allocate (mode 0) reserves, and refuses more than the datastore holds.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

new_mount 1G
f=$T/mnt/disk.img

truncate -s 10G "$f" || fail "truncate -s 10G"
[ "$(stat -c %s "$f")" -eq $((10 << 30)) ] || fail "size after truncate"
[ "$(du -k "$f" | cut -f1)" -eq 0 ] || fail "a new 10G disk uses $(du -k "$f" | cut -f1) KiB"

head -c 1M /dev/urandom >"$T/chunk"
dd if="$T/chunk" of="$f" bs=1M seek=5120 conv=notrunc oflag=direct status=none || fail "dd at 5G"
[ "$(stat -c %s "$f")" -eq $((10 << 30)) ] || fail "size changed by a write inside the file"
used=$(du -k "$f" | cut -f1)
[ "$used" -eq 1024 ] || fail "du after 1 MiB written: $used KiB"
[ "$(stat -c %b "$f")" -eq 2048 ] || fail "st_blocks $(stat -c %b "$f"), expected 2048"
cmp <(dd if="$f" bs=1M skip=5120 count=1 status=none) "$T/chunk" || fail "data at 5G"

python3 - "$f" <<'PY' || fail "SEEK_DATA/SEEK_HOLE"
import errno, os, sys
G = 1 << 30
fd = os.open(sys.argv[1], os.O_RDONLY)
def seek(off, how):
    try:
        return os.lseek(fd, off, how)
    except OSError as e:
        return errno.errorcode[e.errno]
got = [
    seek(0, os.SEEK_DATA), seek(0, os.SEEK_HOLE), seek(5 * G, os.SEEK_HOLE),
    seek(5 * G + 4096, os.SEEK_DATA), seek(5 * G + (1 << 20), os.SEEK_DATA),
    seek(5 * G + (1 << 20), os.SEEK_HOLE), seek(10 * G, os.SEEK_DATA), seek(10 * G, os.SEEK_HOLE),
]
want = [5 * G, 0, 5 * G + (1 << 20), 5 * G + 4096, "ENXIO", 5 * G + (1 << 20), "ENXIO", "ENXIO"]
print("seek results:", got)
assert got == want, f"want {want}"
PY

# Punch the first half of the extent: half the space back, zeros there, data after.
fallocate -p -o $((5 << 30)) -l 512KiB "$f" || fail "punch hole"
[ "$(du -k "$f" | cut -f1)" -eq 512 ] || fail "du after punching 512 KiB: $(du -k "$f" | cut -f1)"
cmp <(dd if="$f" bs=512K skip=10240 count=1 status=none) <(head -c 512K /dev/zero) ||
	fail "punched range does not read as zeros"
cmp <(dd if="$f" bs=512K skip=10241 count=1 status=none) <(tail -c 512K "$T/chunk") ||
	fail "data after the punched range changed"

# Zero range inside the file keeps the size; past the end it extends the size.
fallocate -z -o $(((5 << 30) + (512 << 10))) -l 256KiB "$f" || fail "zero range"
cmp <(dd if="$f" bs=256K skip=$((5 * 4096 + 2)) count=1 status=none) <(head -c 256K /dev/zero) ||
	fail "zeroed range does not read as zeros"
[ "$(stat -c %s "$f")" -eq $((10 << 30)) ] || fail "zero range inside changed the size"
fallocate -z -o $((10 << 30)) -l 1MiB "$f" || fail "zero range past the end"
[ "$(stat -c %s "$f")" -eq $(((10 << 30) + (1 << 20))) ] || fail "zero range did not extend"

# Mode 0 reserves (fallocate_test.sh goes further): 12 GiB on a 1 GiB datastore is
# refused with ENOSPC at once and changes nothing; 2 MiB past the end extends the size
# and holds 2 MiB more; KEEP_SIZE holds the grains and keeps the size.
size=$(((10 << 30) + (1 << 20)))
blocks=$(stat -c %b "$f")
if fallocate -l 12GiB "$f" 2>"$T/falloc.log"; then fail "fallocate of 12 GiB on a 1 GiB datastore"; fi
grep -q "No space left on device" "$T/falloc.log" || { cat "$T/falloc.log" >&2; fail "fallocate 12 GiB: not ENOSPC"; }
[ "$(stat -c %s "$f")" -eq "$size" ] || fail "a refused fallocate changed the size"
[ "$(stat -c %b "$f")" -eq "$blocks" ] || fail "a refused fallocate changed st_blocks"
fallocate -o "$size" -l 2MiB "$f" || fail "fallocate mode 0"
[ "$(stat -c %s "$f")" -eq $((size + (2 << 20))) ] || fail "fallocate mode 0 did not extend"
[ "$(stat -c %b "$f")" -eq $((blocks + 4096)) ] || fail "fallocate mode 0 holds $(stat -c %b "$f") blocks, not $((blocks + 4096))"
fallocate -n -o $((11 << 30)) -l 1MiB "$f" || fail "fallocate keep size"
[ "$(stat -c %s "$f")" -eq $((size + (2 << 20))) ] || fail "fallocate -n changed the size"
[ "$(stat -c %b "$f")" -eq $((blocks + 6144)) ] || fail "fallocate -n holds $(stat -c %b "$f") blocks"
# Collapse range is not supported.
if fallocate -c -o 0 -l 1MiB "$f" 2>/dev/null; then fail "collapse range succeeded"; fi

# df: the datastore's space, so used space follows what was written.
df -k "$T/mnt" | tail -n1 | awk '{ if ($2 < 700000 || $2 > 1100000) exit 1 }' ||
	fail "df total is not about 1 GiB: $(df -k "$T/mnt" | tail -n1)"

unmount_wait "$T/mnt" "$DAEMON_PID"
echo "PASS: sparse"
