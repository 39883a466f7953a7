#!/usr/bin/env bash
# Symlinks, fifos, sockets, device nodes and xattrs through the mount, as the tools
# around VMs use them (the per-call comparison with tmpfs is in mount_namespace):
# getfattr -d / setfattr on a disk with libvirt's and SELinux's attributes, cp -a and
# tar of a VM folder holding every kind (what they make back is the same), the limits
# and their errors, a snapshot that keeps all of it read-only, .cbt listing disks only,
# a device node that stays inert (the mount is nodev), and after an unmount, a kill -9
# and a fresh mount everything is still there and vsfs-fsck -n is clean.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

new_mount 1G
vm=$m/vm1
mkdir "$vm" || fail "mkdir vm1"
head -c 3M /dev/urandom >"$vm/disk.img" || fail "disk"
ln -s disk.img "$vm/current.img" || fail "symlink"
ln -s ../vm1/disk.img "$vm/rel.img" || fail "relative symlink"
mkfifo "$vm/monitor.fifo" || fail "mkfifo"
mknod "$vm/null.dev" c 1 3 || fail "mknod c"
mknod "$vm/sda.dev" b 8 0 || fail "mknod b"
python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$vm/qmp.sock" || fail "socket"
setfattr -n trusted.libvirt.security.dac -v "+107:+107" "$vm/disk.img" || fail "setfattr trusted"
setfattr -n trusted.libvirt.security.ref_dac -v 1 "$vm/disk.img" || fail "setfattr trusted 2"
setfattr -n security.selinux -v "system_u:object_r:svirt_image_t:s0:c1,c2" "$vm/disk.img" ||
	fail "setfattr security"
setfattr -n user.backup.policy -v nightly "$vm" || fail "setfattr on a directory"
setfattr -h -n trusted.link -v yes "$vm/current.img" || fail "setfattr on a symlink"

dump() { (cd "$1" && getfattr -h -R -d -m - --absolute-names . 2>&1 | sed "s|$1|DIR|g" && find . -printf '%p %y %m %s %l\n' | sort); }
dump "$vm" >"$T/before.txt"
grep -q 'trusted.libvirt.security.dac="+107:+107"' "$T/before.txt" || { cat "$T/before.txt"; fail "getfattr -d misses trusted"; }
grep -q 'security.selinux="system_u:object_r:svirt_image_t:s0:c1,c2"' "$T/before.txt" || fail "getfattr -d misses security"
[ "$(readlink "$vm/current.img")" = disk.img ] || fail "readlink"
cmp "$vm/current.img" "$vm/disk.img" || fail "read through the symlink"
[ "$(stat -c %t:%T "$vm/null.dev")" = 1:3 ] || fail "rdev of the character device"
# nodev: opening the node does not reach /dev/null's driver.
if (echo x 2>/dev/null >"$vm/null.dev") 2>/dev/null; then fail "a device node on the mount opened"; fi

# The limits: 4095-byte targets, 4096-byte values, 255-byte names.
ln -s "$(printf 'p%.0s' $(seq 4095))" "$m/long" || fail "4095-byte target"
if ln -s "$(printf 'p%.0s' $(seq 4096))" "$m/longer" 2>/dev/null; then fail "4096-byte target"; fi
python3 - "$m" <<'PY' || fail "xattr limits"
import errno, os, sys
f = os.path.join(sys.argv[1], "vm1", "disk.img")
os.setxattr(f, "user.grain", b"v" * 4096)
assert os.getxattr(f, "user.grain") == b"v" * 4096
try:
    os.setxattr(f, "user.big", b"v" * 4097); raise SystemExit("4097-byte value stored")
except OSError as e:
    assert e.errno == errno.E2BIG, e
try:
    os.setxattr(f, "user.vsfs.changeid", b"1"); raise SystemExit("user.vsfs. stored")
except OSError as e:
    assert e.errno == errno.EPERM, e
try:
    os.setxattr(f, "user." + "n" * 251, b"1"); raise SystemExit("256-byte name stored")
except OSError as e:
    assert e.errno == errno.ERANGE, e
os.removexattr(f, "user.grain")
PY

# cp -a and tar keep every kind, mode, target and xattr (tar leaves sockets out).
cp -a "$vm" "$m/vm1-copy" || fail "cp -a"
dump "$m/vm1-copy" >"$T/copy.txt"
diff -u "$T/before.txt" "$T/copy.txt" || fail "cp -a changed something"
(cd "$m" && tar --xattrs --xattrs-include='*' -cf "$T/vm1.tar" vm1 2>"$T/tar.err") || { cat "$T/tar.err"; fail "tar c"; }
mkdir "$m/untar" && (cd "$m/untar" && tar --xattrs --xattrs-include='*' -xf "$T/vm1.tar") || fail "tar x"
dump "$m/untar/vm1" >"$T/untar.txt"
grep -v '^./qmp.sock s ' "$T/before.txt" | diff -u - "$T/untar.txt" || fail "tar round trip changed something (tar leaves sockets out)"

# A snapshot keeps it all, read-only; later changes do not reach it.
mkdir "$m/.snapshots/s1" || fail "snapshot"
setfattr -n trusted.libvirt.security.dac -v "+0:+0" "$vm/disk.img" || fail "setfattr after the snapshot"
rm "$vm/current.img" "$vm/monitor.fifo" || fail "rm after the snapshot"
dump "$m/.snapshots/s1/vm1" | sed 's/ [0-7]\{3,4\} / /' >"$T/snap.txt"
sed 's/ [0-7]\{3,4\} / /' "$T/before.txt" | diff -u - "$T/snap.txt" || fail "the snapshot differs"
if setfattr -n user.x -v 1 "$m/.snapshots/s1/vm1/disk.img" 2>/dev/null; then fail "setfattr in a snapshot"; fi
if ln -s x "$m/.snapshots/s1/vm1/new" 2>/dev/null; then fail "symlink in a snapshot"; fi
[ "$(readlink "$m/.snapshots/s1/vm1/current.img")" = disk.img ] || fail "readlink in the snapshot"
ls "$m/.cbt/s1/full/vm1" >"$T/cbt.txt" || fail "ls .cbt"
[ "$(cat "$T/cbt.txt")" = disk.img ] || { cat "$T/cbt.txt"; fail ".cbt lists more than the disk"; }

# Across an unmount, a kill -9 (the journal replays) and a fresh mount.
dump "$vm" >"$T/live.txt"
sync "$vm/disk.img"
unmount_wait "$m" "$DAEMON_PID"
fsck_clean "$T/ds.img" "after the unmount"
mount_fg "$T/ds.img" "$m"
dump "$vm" | diff -u "$T/live.txt" - || fail "changed across a remount"
ln -s after-kill "$vm/k.lnk" && setfattr -n user.k -v 9 "$vm/disk.img" && mkfifo "$vm/k.fifo" || fail "changes before the kill"
sync "$vm/disk.img" || fail "sync"  # commits the namespace changes with it
kill -9 "$DAEMON_PID"
wait "$DAEMON_PID" 2>/dev/null
fusermount3 -u "$m" 2>/dev/null
mount_fg "$T/ds.img" "$m"
[ "$(readlink "$vm/k.lnk")" = after-kill ] || fail "symlink lost by the kill"
[ "$(getfattr --only-values -n user.k "$vm/disk.img")" = 9 ] || fail "xattr lost by the kill"
[ -p "$vm/k.fifo" ] || fail "fifo lost by the kill"
dump "$m/.snapshots/s1/vm1" | sed 's/ [0-7]\{3,4\} / /' | diff -u "$T/snap.txt" - || fail "the snapshot changed"
unmount_wait "$m" "$DAEMON_PID"
fsck_clean "$T/ds.img" "at the end"
echo "PASS: posix_inodes"
