#!/usr/bin/env bash
# A damaged map through the mounted daemon: one slot of a disk's map leaf is pointed,
# with a valid checksum, at the leaf's own grain (metadata) and another at a grain of a
# free storage block that holds old bytes. Reads of those slots must fail (EUCLEAN, or
# EIO where the kernel's page cache reports it so), with none of those bytes, while the
# rest of the disk reads back and the daemon stays up.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

new_mount 64M
python3 - "$m/vm.img" <<'PY' || fail "writing vm.img"
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
os.write(fd, bytes((i * 7 + 3) & 0xff for i in range(4 * 4096)))
os.ftruncate(fd, 16 * 4096)
os.fsync(fd)
os.close(fd)
PY
ino=$(stat -c %i "$m/vm.img")
unmount_wait "$m" "$DAEMON_PID"

python3 - "$T/ds.img" "$ino" <<'PY' || fail "poking the map"
import struct, sys
path, ino = sys.argv[1], int(sys.argv[2])
G = 4096

def crc32c(data, crc=0):
    crc ^= 0xffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xffffffff

def grain_crc(g):
    return crc32c(g[:12] + b"\0\0\0\0" + g[16:])

with open(path, "r+b") as f:
    img = f.read()
    leaf, newest = None, -1
    for at in range(0, len(img), G):
        g = img[at:at + G]
        # Header: type u16 at 4 (3 = map leaf), owner u64 at 16, self u64 at 32.
        if struct.unpack_from("<H", g, 4)[0] != 3 or struct.unpack_from("<Q", g, 16)[0] != ino:
            continue
        if struct.unpack_from("<Q", g, 32)[0] != at // G:
            continue
        if struct.unpack_from("<I", g, 12)[0] != grain_crc(g):
            continue
        # An older copy may survive in a freed grain: the newest generation is the leaf.
        gen = struct.unpack_from("<Q", g, 24)[0]
        if gen > newest:
            leaf, newest = at // G, gen
    assert leaf is not None, "no map leaf of inode %d" % ino
    g = bytearray(img[leaf * G:(leaf + 1) * G])
    word0, stamp0 = struct.unpack_from("<QQ", g, 64)
    assert word0 >> 62 == 2, "slot 0 is not mapped"
    # A grain in the last storage block of the datastore, free in a fresh 64 MiB one,
    # holding old bytes.
    free_grain = len(img) // G - 200
    f.seek(free_grain * G)
    f.write(b"\x5a" * G)
    # Slot 8 -> the leaf itself, slot 9 -> the free grain.
    struct.pack_into("<QQ", g, 64 + 16 * 8, (2 << 62) | leaf, stamp0)
    struct.pack_into("<QQ", g, 64 + 16 * 9, (2 << 62) | free_grain, stamp0)
    struct.pack_into("<I", g, 12, grain_crc(bytes(g)))
    f.seek(leaf * G)
    f.write(g)
    print("leaf at grain", leaf, "free grain", free_grain)
PY

mount_fg "$T/ds.img" "$m"
python3 - "$m/vm.img" <<'PY' || fail "reads of the damaged slots"
import errno, mmap, os, sys
path = sys.argv[1]
G = 4096
good = bytes((i * 7 + 3) & 0xff for i in range(4 * G))
# O_DIRECT: the daemon's own answer reaches the reader.
fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, G)
for slot in (8, 9):
    try:
        n = os.preadv(fd, [buf], slot * G)
        raise SystemExit("O_DIRECT read of slot %d returned %d bytes: %r" % (slot, n, buf[:16]))
    except OSError as e:
        assert e.errno == errno.EUCLEAN, "slot %d: %s" % (slot, e)
whole = mmap.mmap(-1, 4 * G)
assert os.preadv(fd, [whole], 0) == 4 * G and whole[:] == good, "good grains read back wrong"
os.close(fd)
# Through the page cache: the kernel may turn the error into EIO.
fd = os.open(path, os.O_RDONLY)
for slot in (8, 9):
    try:
        data = os.pread(fd, G, slot * G)
        raise SystemExit("buffered read of slot %d returned %r" % (slot, data[:16]))
    except OSError as e:
        assert e.errno in (errno.EUCLEAN, errno.EIO), "slot %d: %s" % (slot, e)
assert os.pread(fd, 4 * G, 0) == good
os.close(fd)
print("damaged slots refused")
PY
kill -0 "$DAEMON_PID" || fail "the daemon died"
unmount_wait "$m" "$DAEMON_PID"
echo "PASS: damaged map slots are refused"
