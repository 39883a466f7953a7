#!/usr/bin/env bash
# A shared map of a disk opened with O_DIRECT (QEMU and other tools map disks they open
# for direct IO): the kernel allows it only when vsfs asked for FUSE_DIRECT_IO_ALLOW_MMAP
# at INIT (else ENODEV). What is written through the map reads back through O_DIRECT
# pread, and after unmounting and mounting again; what O_DIRECT pwrite writes reads back
# through the map; .vsfs/stats says the flag was granted.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

new_mount 1G
[ "$(stat_value "$m" fuse.direct_io_mmap)" = True ] || fail "stats: direct_io_mmap is not granted"
python3 - "$m/disk.img" write <<'PY' || fail "shared map of an O_DIRECT file"
import mmap, os, random, sys
path = sys.argv[1]
size = 8 << 20
with open(path, "wb") as f:
    f.truncate(size)
fd = os.open(path, os.O_RDWR | os.O_DIRECT)
m = mmap.mmap(fd, size, mmap.MAP_SHARED)
rng = random.Random(7)
want = bytearray(size)
for _ in range(64):  # scattered writes through the map, some across page boundaries
    off = rng.randrange(0, size - 10000)
    data = rng.randbytes(rng.randrange(1, 10000))
    m[off:off + len(data)] = data
    want[off:off + len(data)] = data
m.flush()
# Through O_DIRECT (page-aligned buffer: an anonymous map).
buf = mmap.mmap(-1, size)
assert os.preadv(fd, [buf], 0) == size
assert buf[:] == want, "O_DIRECT pread differs from what the map wrote"
# An O_DIRECT write is seen through the map.
patch = mmap.mmap(-1, 65536)
patch.write(rng.randbytes(65536))
assert os.pwritev(fd, [patch], 1 << 20) == 65536
want[1 << 20:(1 << 20) + 65536] = patch[:]
assert m[(1 << 20):(1 << 20) + 65536] == patch[:], "the map does not see an O_DIRECT write"
m.close()
os.close(fd)
open(path + ".want", "wb").write(want)
PY
mv "$m/disk.img.want" "$T/want"
pid=$DAEMON_PID
unmount_wait "$m" "$pid"
mount_fg "$T/ds.img" "$m"
cmp "$m/disk.img" "$T/want" || fail "after mounting again the disk differs from what was written"
unmount_wait "$m" "$DAEMON_PID"
fsck_clean "$T/ds.img" "after the mapped writes"
echo "mmap: shared map of an O_DIRECT disk agrees with pread, pwrite and a new mount"
