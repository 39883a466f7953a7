#!/usr/bin/env bash
# A datastore made by an older vsfs still mounts and checks: tests/data holds one, made
# by vsfs-mkfs and vsfs-mount of December 2026 (format version 1, ro_compat 0x1: the
# allocation window, before the space summary), 64 MiB, xz-compressed:
#   vm1/disk.img      32 MiB, 3 MiB written at 0, 5 and 17 MiB, 64 KiB overwritten at
#                     5 MiB after the snapshot, 2 MiB allocated at 24 MiB, xattr
#                     user.role=golden
#   vm1/vm1.conf      "memory = 2048"
#   vm1/current       symlink to disk.img
#   .snapshots/before the tree before the overwrite
# It must check clean as it is, mount, read back what was written (the sums below were
# taken on the mount that wrote it), keep its changed-block maps, take writes and a new
# snapshot; the mount takes the lease (ro_compat bit 2); vsfs-fsck -y then adds the space
# summary (vsfs-format(5)), after which a mount holds only the block-table grains in use
# and everything reads the same.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

command -v xz >/dev/null || fail "xz is not installed"
xz -dc "$here/../data/datastore-v1-2026-12.img.xz" >"$T/ds.img" || fail "xz -d"
mkdir "$T/mnt"
m=$T/mnt

# check_contents WHAT DISK_SHA256
check_contents() {
	(cd "$m" && sha256sum -c --quiet) <<SUMS || fail "$1: contents differ"
$2  vm1/disk.img
184c25dc6b180726e9634bf4dba5e537c48c53d0ec6d4b1209e61791e056753b  .snapshots/before/vm1/disk.img
31ddd4585d54cd9fcec36d905c981562a98812894a7a90a13ce0131b2b674fde  vm1/vm1.conf
SUMS
	[ "$(readlink "$m/vm1/current")" = disk.img ] || fail "$1: symlink"
	[ "$(getfattr --only-values -n user.role "$m/vm1/disk.img" 2>/dev/null)" = golden ] ||
		fail "$1: xattr"
	printf '0 1048576 data\n5242880 1048576 data\n17825792 1048576 data\n' |
		cmp - "$m/.cbt/before/full/vm1/disk.img" || fail "$1: .cbt map of the snapshot"
}

sb_ro_compat() {
	python3 - "$T/ds.img" <<'PY'
import struct, sys
with open(sys.argv[1], 'rb') as f:
    print(struct.unpack_from('<Q', f.read(4096), 80)[0])
PY
}

[ "$(sb_ro_compat)" = 1 ] || fail "the kept image is not the old format (ro_compat $(sb_ro_compat))"
fsck_clean "$T/ds.img" "the old datastore as kept"

mount_fg "$T/ds.img" "$m"
check_contents "old format, first mount" 143ae67723ef49e9484468a682f1884b5af3aa9fd032f90dec3bd7f301c7b442
[ "$(stat_value "$m" space.space_summary)" = False ] || fail "space summary on an old datastore"
# Without the summary a mount holds the whole block table (one grain here).
[ "$(stat_value "$m" space.block_table_grains_loaded)" = "$(stat_value "$m" space.block_table_grains)" ] ||
	fail "block table not all loaded"
head -c 1M /dev/urandom >"$T/new"
dd if="$T/new" of="$m/vm1/disk.img" bs=1M seek=9 conv=notrunc,fsync status=none || fail "write"
mkdir "$m/.snapshots/after" || fail "snapshot"
cmp "$T/new" <(dd if="$m/vm1/disk.img" bs=1M skip=9 count=1 status=none) || fail "read back"
grep -q "^9437184 1048576 data$" "$m/.cbt/after/before/vm1/disk.img" ||
	fail "the write is not in .cbt/after/before: $(cat "$m/.cbt/after/before/vm1/disk.img")"
disk_sum=$(sha256sum <"$m/vm1/disk.img" | cut -d' ' -f1)
unmount_wait "$m" "$DAEMON_PID"
# The mount took the datastore's lease and set its bit (ro_compat bit 2), nothing else;
# the lease was released at the unmount.
[ "$(sb_ro_compat)" = 5 ] || fail "feature words after a mount: ro_compat $(sb_ro_compat), expected 5"
python3 - "$T/ds.img" <<'PY' || fail "the lease after the unmount"
import struct, sys
with open(sys.argv[1], 'rb') as f:
    f.seek(4096)
    g = f.read(4096)
assert struct.unpack_from('<H', g, 4)[0] == 15, 'no lease record in grain 1'
assert struct.unpack_from('<I', g, 64)[0] == 0, 'the lease is still held'
PY
fsck_clean "$T/ds.img" "after writing to the old datastore"

rc=0
"$VSFS_FSCK" -y "$T/ds.img" >"$T/fsck-y.log" 2>&1 || rc=$?
[ "$rc" = 1 ] || { cat "$T/fsck-y.log" >&2; fail "fsck -y: exit $rc, expected 1 (repaired)"; }
grep -q "the space summary is kept from now on" "$T/fsck-y.log" ||
	fail "fsck -y did not add the space summary: $(cat "$T/fsck-y.log")"
[ "$(sb_ro_compat)" = 7 ] || fail "ro_compat after fsck -y: $(sb_ro_compat)"
fsck_clean "$T/ds.img" "after fsck -y added the space summary"
mount_fg "$T/ds.img" "$m"
[ "$(stat_value "$m" space.space_summary)" = True ] || fail "space summary not kept"
check_contents "after the upgrade" "$disk_sum"
sha256sum <"$m/.snapshots/after/vm1/disk.img" | grep -q "^$disk_sum " || fail "snapshot after"
unmount_wait "$m" "$DAEMON_PID"
fsck_clean "$T/ds.img" "after the upgraded mount"
echo "PASS: old format mounts, checks and upgrades"
