#!/usr/bin/env bash
# Snapshots and clones through the mounted daemon: write, snapshot, overwrite, and the
# snapshot still holds the original; every change under .snapshots answers EROFS; name
# rules; deletion in every order; clone with cp and write both sides; unmount, fsck
# clean, remount and compare again; kill -9 during the deletion of a large snapshot,
# remount, and the deletion finishes with fsck clean.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

new_mount 2G

# space_returned WHAT: the background release ends (30 s) and less than 80 MiB stays used.
space_returned() {
	for _ in $(seq 150); do
		[ "$(stat_value "$m" release_pending)" = 0 ] && break
		sleep 0.2
	done
	[ "$(stat_value "$m" release_pending)" = 0 ] || fail "the release did not finish after $1"
	local used
	used=$(stat_value "$m" space.used_bytes)
	[ "$used" -lt $((80 << 20)) ] || fail "space not returned after $1: $used bytes used"
}

mkdir "$m/vm1"
head -c $((24 << 20)) /dev/urandom > "$T/orig"
cp "$T/orig" "$m/vm1/vm1.img"
mkdir "$m/.snapshots/first" || fail "mkdir .snapshots/first"
dd if=/dev/urandom of="$m/vm1/vm1.img" bs=4k count=300 seek=11 conv=notrunc status=none
cmp "$T/orig" "$m/.snapshots/first/vm1/vm1.img" || fail "the snapshot changed after an overwrite"
cmp -s "$T/orig" "$m/vm1/vm1.img" && fail "the live disk did not change"
cp "$m/vm1/vm1.img" "$T/second"

# Read-only: every kind of change is EROFS.
python3 - "$m/.snapshots/first" <<'PY' || fail "EROFS under .snapshots"
import errno, os, sys
s = sys.argv[1]
def erofs(what, fn):
    try:
        fn()
    except OSError as e:
        assert e.errno == errno.EROFS, f"{what}: {e}"
        return
    raise AssertionError(f"{what} succeeded in a snapshot")
erofs("create", lambda: open(s + "/new", "w"))
erofs("write", lambda: os.open(s + "/vm1/vm1.img", os.O_WRONLY))
erofs("truncate", lambda: os.truncate(s + "/vm1/vm1.img", 0))
erofs("unlink", lambda: os.unlink(s + "/vm1/vm1.img"))
erofs("mkdir", lambda: os.mkdir(s + "/d"))
erofs("rmdir", lambda: os.rmdir(s + "/vm1"))
erofs("rename", lambda: os.rename(s + "/vm1/vm1.img", s + "/vm1/x"))
erofs("chmod", lambda: os.chmod(s + "/vm1/vm1.img", 0o600))
assert ".snapshots" not in os.listdir(s), "a snapshot lists .snapshots"
assert not os.path.exists(s + "/.snapshots"), "snapshots recurse"
assert os.getxattr(s, "user.vsfs.changeid").isdigit()
assert int(os.getxattr(s, "user.vsfs.created")) > 1600000000
PY

# Name rules.
for bad in full . .. ; do
	mkdir "$m/.snapshots/$bad" 2>/dev/null && fail "snapshot name '$bad' accepted"
done
mkdir "$m/.snapshots/$(printf 'n%.0s' $(seq 256))" 2>/dev/null && fail "a 256-byte name accepted"
mkdir "$m/.snapshots/$(printf 'n%.0s' $(seq 255))" || fail "a 255-byte name refused"
mkdir "$m/.snapshots/first" 2>/dev/null && fail "an existing name accepted"
rmdir "$m/.snapshots/$(printf 'n%.0s' $(seq 255))" || fail "rmdir of a snapshot"

# A per-VM snapshot.
mkdir "$m/vm1/.snapshots/vmsnap" || fail "per-directory snapshot"
cmp "$T/second" "$m/vm1/.snapshots/vmsnap/vm1.img" || fail "per-directory snapshot contents"
[ "$(ls "$m/.snapshots")" = "first" ] || fail "the root lists a per-directory snapshot"

# Clone with cp (copy_file_range): instant, no data copied, sides independent.
used0=$(stat_value "$m" space.used_bytes)
cp "$m/vm1/vm1.img" "$m/vm1/clone.img"
used1=$(stat_value "$m" space.used_bytes)
[ $((used1 - used0)) -lt $((1 << 20)) ] || fail "the clone took $((used1 - used0)) bytes"
cmp "$m/vm1/vm1.img" "$m/vm1/clone.img" || fail "clone differs"
dd if=/dev/urandom of="$m/vm1/clone.img" bs=4k count=10 seek=100 conv=notrunc status=none
cmp "$T/second" "$m/vm1/vm1.img" || fail "writing the clone changed the original"
cp "$m/vm1/clone.img" "$T/clone"
# Revert a disk to a snapshot: a clone over it.
cp "$m/.snapshots/first/vm1/vm1.img" "$m/vm1/vm1.img"
cmp "$T/orig" "$m/vm1/vm1.img" || fail "revert to a snapshot"

# Remount and compare again; fsck clean in between.
unmount_wait "$m" "$DAEMON_PID"
fsck_clean "$T/ds.img" "after snapshots"
mount_fg "$T/ds.img" "$m"
cmp "$T/orig" "$m/.snapshots/first/vm1/vm1.img" || fail "snapshot after remount"
cmp "$T/second" "$m/vm1/.snapshots/vmsnap/vm1.img" || fail "per-directory snapshot after remount"
cmp "$T/clone" "$m/vm1/clone.img" || fail "clone after remount"
cmp "$T/orig" "$m/vm1/vm1.img" || fail "reverted disk after remount"

# Delete a snapshot that holds a lot of exclusive data, and kill -9 the daemon while the
# deletion runs; after a remount it finishes and fsck is clean.
head -c $((300 << 20)) /dev/urandom > "$m/big.img"
mkdir "$m/.snapshots/big"
rm "$m/big.img"
rmdir "$m/.snapshots/big" "$m/.snapshots/first" "$m/vm1/.snapshots/vmsnap"
kill -9 "$DAEMON_PID"
wait "$DAEMON_PID" 2>/dev/null
fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
wait_device_free "$T/ds.img"
mount_fg "$T/ds.img" "$m"
[ -z "$(ls "$m/.snapshots")" ] || fail "deleted snapshots came back: $(ls "$m/.snapshots")"
space_returned "the deletion"
cmp "$T/clone" "$m/vm1/clone.img" || fail "clone after the deletions"

# A backup job reads a snapshot that is deleted meanwhile: it reads to the end without
# an error (the snapshot left the namespace at once), and the space comes back after it
# closes the file.
head -c $((48 << 20)) /dev/urandom >"$m/reader.img"
mkdir "$m/.snapshots/reading"
cp "$m/reader.img" "$T/reader.want"
rm "$m/reader.img"
python3 - "$m/.snapshots/reading/reader.img" "$m/.snapshots" "$T/reader.got" <<'PY' || fail "reading a snapshot deleted meanwhile"
import os, sys
path, snaps, out = sys.argv[1:4]
with open(path, "rb") as f, open(out, "wb") as o:
    o.write(f.read(16 << 20))
    os.rmdir(os.path.join(snaps, "reading"))
    assert "reading" not in os.listdir(snaps), "the deleted snapshot is still listed"
    st = os.fstat(f.fileno())
    assert st.st_size == 48 << 20, st
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        o.write(b)
PY
cmp "$T/reader.want" "$T/reader.got" || fail "the reader of the deleted snapshot read other data"
space_returned "the reader's close"
unmount_wait "$m" "$DAEMON_PID"
fsck_clean "$T/ds.img" "after the deletion"
echo "snapshot test passed"
