#!/usr/bin/env bash
# Unlink while open: the name goes at once, the open file keeps working (write, read
# back, fstat), and its space returns to the datastore after the last close.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

mkfs_file "$T/ds.img" 1G
mkdir "$T/mnt"
mount_fg "$T/ds.img" "$T/mnt"

python3 - "$T/mnt" <<'PY' || fail "unlink while open"
import os, sys, time
m = sys.argv[1]
def free():
    st = os.statvfs(m)
    return st.f_bfree * st.f_frsize
MiB = 1 << 20
before = free()
path = m + "/victim.img"
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
data = os.urandom(16 * MiB)
assert os.write(fd, data) == len(data)
os.fsync(fd)
with_file = free()
assert before - with_file >= 16 * MiB, f"free space did not drop: {before} -> {with_file}"
os.unlink(path)
assert not os.path.exists(path), "the name survived unlink"
assert "victim.img" not in os.listdir(m)
more = os.urandom(MiB)
assert os.pwrite(fd, more, 16 * MiB) == MiB
assert os.fstat(fd).st_size == 17 * MiB, os.fstat(fd).st_size
assert os.pread(fd, 16 * MiB, 0) == data, "data of the unlinked file changed"
assert os.pread(fd, MiB, 16 * MiB) == more
os.fsync(fd)
os.close(fd)
# The library frees the grains lazily: wait for them.
deadline = time.time() + 30
while time.time() < deadline and free() < with_file + 16 * MiB:
    time.sleep(0.2)
after = free()
assert after >= with_file + 16 * MiB, f"space not returned: with file {with_file}, after close {after}"
print(f"free: before {before}, with file {with_file}, after close {after}")
PY

unmount_wait "$T/mnt" "$DAEMON_PID"
echo "PASS: unlink while open"
