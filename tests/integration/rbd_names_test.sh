#!/usr/bin/env bash
# rbd: device names through every program (run with VSFS_IT_RBD=1 through
# tests/ceph/with_cluster.sh):
#   - bad names are refused with a line saying what is expected, nothing created;
#   - vsfs-mkfs refuses an image holding a filesystem (found by libblkid in a copy of
#     the image's ends), and -f formats it;
#   - mount -t vsfs and an fstab line (mount -T FILE) mount an image by its name;
#   - rbd resize under the mount, then vsfs-grow on the mount point, and offline on the
#     name; vsfs-fsck -n on the name finds it clean.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
use_build_mount_helpers
[ "${VSFS_IT_RBD:-0}" = 1 ] || fail "run with VSFS_IT_RBD=1 (tests/ceph/with_cluster.sh)"
: "${VSFS_GROW:?VSFS_GROW must name the vsfs-grow binary}"
rbdc() { rbd -c "$VSFS_CEPH_CONF" "$@"; }
mkdir -p "$T/mnt"

for bad in "rbd:onlypool" "rbd:p/i@snap" "rbd:p/i:rbd_cache=true" "rbd:p/i:novalue"; do
	rc=0; "$VSFS_MOUNT" -f "$bad" "$T/mnt" >"$T/out" 2>&1 || rc=$?
	[ "$rc" -ne 0 ] && grep -q "expected rbd:POOL/IMAGE" "$T/out" || fail "mount $bad: exit $rc: $(cat "$T/out")"
	rc=0; "$VSFS_MKFS" "$bad" >"$T/out" 2>&1 || rc=$?
	[ "$rc" -ne 0 ] && grep -q "expected rbd:POOL/IMAGE" "$T/out" || fail "mkfs $bad: exit $rc: $(cat "$T/out")"
done
rc=0; "$VSFS_MKFS" "rbd:rbd/missing:conf=$VSFS_CEPH_CONF" >"$T/out" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && grep -q "no such file or device" "$T/out" || fail "mkfs of a missing image: $(cat "$T/out")"

# An image holding ext4: refused, then formatted with -f.
truncate -s 256M "$T/ext4.img"
mkfs.ext4 -q -F "$T/ext4.img" || fail "mkfs.ext4"
rbdc import --no-progress "$T/ext4.img" "$(rbd_image "$T/ds.img")" || fail "rbd import"
dev=$(dev_of "$T/ds.img")
rc=0; "$VSFS_MKFS" "$dev" >"$T/out" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && grep -q "holds ext4 (a filesystem), found by libblkid; use -f" "$T/out" ||
	fail "mkfs over ext4: exit $rc: $(cat "$T/out")"
"$VSFS_MKFS" -f "$dev" >"$T/out" 2>&1 || fail "mkfs -f: $(cat "$T/out")"

# mount -t vsfs, and an fstab line.
mount -t vsfs "$dev" "$T/mnt" || fail "mount -t vsfs $dev"
MOUNTS+=("$T/mnt")
grep -qF "$dev $T/mnt fuse.vsfs" /proc/mounts || fail "not in /proc/mounts: $(grep vsfs /proc/mounts)"
head -c 4M /dev/urandom >"$T/d1"
cp "$T/d1" "$T/mnt/d1" && sync "$T/mnt/d1" || fail "write d1"
umount "$T/mnt" || fail "umount"
printf '%s %s vsfs defaults,_netdev 0 0\n' "$dev" "$T/mnt" >"$T/fstab"
mount -T "$T/fstab" "$T/mnt" || fail "mount through an fstab line"
cmp "$T/d1" "$T/mnt/d1" || fail "d1 after the fstab mount"

# Growing: online, then offline.
size() { stat -f -c '%b %S' "$T/mnt" | awk '{print $1 * $2}'; }
was=$(size)
rbdc resize --no-progress --size 512M "$(rbd_image "$T/ds.img")" || fail "rbd resize"
"$VSFS_GROW" "$T/mnt" >"$T/out" 2>&1 || fail "vsfs-grow on the mount: $(cat "$T/out")"
now=$(size)
[ "$now" -gt $((was + (200 << 20))) ] || fail "df size $was -> $now after growing to 512M"
umount "$T/mnt" || fail "umount"  # umount.vsfs waits for the daemon to close the image
rbdc resize --no-progress --size 768M "$(rbd_image "$T/ds.img")" || fail "rbd resize"
"$VSFS_GROW" "$dev" >"$T/out" 2>&1 || fail "vsfs-grow on the name: $(cat "$T/out")"
grep -q "grown from 512" "$T/out" || fail "offline growth: $(cat "$T/out")"
fsck_clean "$T/ds.img" "after the growths"
echo "PASS"
