#!/usr/bin/env bash
# qemu-img convert of a random raw image (data with holes between) into the datastore,
# once through the page cache and once with O_DIRECT (-t none), then qemu-img compare
# against the source; the copy must also stay sparse (holes are not written).
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
command -v qemu-img >/dev/null || fail "qemu-img is not installed (qemu-utils; see README)"

new_mount 1G

# 96 MiB image: random extents of assorted sizes at assorted offsets, holes elsewhere.
src=$T/src.raw
truncate -s 96M "$src"
for spec in 0:1 3:5 17:2 40:9 63:1 95:1; do
	off=${spec%:*} len=${spec#*:}
	head -c $((len << 20)) /dev/urandom | dd of="$src" bs=1M seek="$off" conv=notrunc status=none
done
# An unaligned tail inside a grain, so partial grains are exercised.
printf 'unaligned tail' | dd of="$src" bs=1 seek=$(((50 << 20) + 1234)) conv=notrunc status=none

mkdir "$T/mnt/vm1"
qemu-img convert -p -f raw -O raw "$src" "$T/mnt/vm1/a.img" >/dev/null || fail "convert (cached)"
qemu-img convert -f raw -O raw -t none "$src" "$T/mnt/vm1/b.img" || fail "convert -t none"
qemu-img compare -f raw -F raw "$src" "$T/mnt/vm1/a.img" || fail "compare a.img"
qemu-img compare -f raw -F raw "$src" "$T/mnt/vm1/b.img" || fail "compare b.img"
cmp "$src" "$T/mnt/vm1/b.img" || fail "cmp b.img"
[ "$(stat -c %s "$T/mnt/vm1/b.img")" -eq $((96 << 20)) ] || fail "b.img size"

# Sparse: 19 MiB of data plus a grain; allow the copy a little slack, never the whole size.
used_kib=$(du -k "$T/mnt/vm1/b.img" | cut -f1)
[ "$used_kib" -ge $((19 * 1024)) ] && [ "$used_kib" -le $((24 * 1024)) ] ||
	fail "b.img uses $used_kib KiB, expected about 19 MiB"

unmount_wait "$T/mnt" "$DAEMON_PID"
mount_fg "$T/ds.img" "$T/mnt"
qemu-img compare -f raw -F raw "$src" "$T/mnt/vm1/b.img" || fail "compare after remount"
unmount_wait "$T/mnt" "$DAEMON_PID"
echo "PASS: qemu-img"
