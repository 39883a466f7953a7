#!/usr/bin/env bash
# What `cmake --install` puts where, and that the names other tools call work: every
# administrator's program in sbin/ (vsfs-backup and vsfs-restore among them), vsfs-clone
# alone in bin/ (users run it), mkfs.vsfs
# and fsck.vsfs beside them (mkfs -t vsfs, fsck -t vsfs, fstab's pass number),
# mount.vsfs, the examples in share/vsfs/examples, the man pages.
# Usage: install_test.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: install_test.sh BUILD_DIR}
T=$(mktemp -d "${TMPDIR:-/tmp}/vsfs-install.XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "install: FAIL: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$T/inst" >"$T/install.log" 2>&1 ||
	{ cat "$T/install.log" >&2; fail "cmake --install failed"; }
sbin=$T/inst/sbin
for p in vsfs-mount vsfs-mkfs vsfs-fsck vsfs-grow vsfs-backup vsfs-restore mount.vsfs mkfs.vsfs fsck.vsfs \
	mount.fuse.vsfs umount.vsfs; do
	[ -x "$sbin/$p" ] || fail "$p is not installed in sbin/"
done
[ "$(readlink "$sbin/mkfs.vsfs")" = vsfs-mkfs ] || fail "mkfs.vsfs does not point at vsfs-mkfs"
[ "$(readlink "$sbin/fsck.vsfs")" = vsfs-fsck ] || fail "fsck.vsfs does not point at vsfs-fsck"
[ "$(readlink "$sbin/mount.fuse.vsfs")" = mount.vsfs ] || fail "mount.fuse.vsfs does not point at mount.vsfs"
[ "$(ls "$T/inst/bin")" = vsfs-clone ] || fail "bin/ should hold vsfs-clone alone: $(ls "$T/inst/bin")"
for e in vsfs.toml quickstart.sh; do
	[ -f "$T/inst/share/vsfs/examples/$e" ] || fail "examples/$e is not installed"
done
[ -x "$T/inst/share/vsfs/examples/quickstart.sh" ] || fail "examples/quickstart.sh is not executable"
for m in man5/vsfs-format.5 man5/vsfs.toml.5 man7/vsfs.7 man8/vsfs-mount.8 man8/vsfs-mkfs.8 \
	man8/vsfs-fsck.8 man8/vsfs-grow.8 man8/vsfs-backup.8 man8/vsfs-restore.8; do
	[ -f "$T/inst/share/man/$m" ] || fail "man page $m is not installed"
done
# vsfs(7) sends backups to the programs that make them.
grep -q '^\.BR vsfs-backup (8)' "$T/inst/share/man/man7/vsfs.7" ||
	fail "vsfs(7) does not name vsfs-backup(8)"
"$sbin/vsfs-backup" --help | grep -q '^usage: vsfs-backup ' || fail "vsfs-backup --help"
"$sbin/vsfs-restore" --help | grep -q '^usage: vsfs-restore ' || fail "vsfs-restore --help"
# The service template names the installed vsfs-mount; systemd accepts an instance of it.
unit=$T/inst/lib/systemd/system/vsfs@.service
[ -f "$unit" ] || fail "vsfs@.service is not installed"
grep -qx "ExecStart=$sbin/vsfs-mount -f -o \${OPTIONS} \${DEVICE} \${MOUNTPOINT}" "$unit" ||
	fail "vsfs@.service does not run $sbin/vsfs-mount: $(grep ExecStart "$unit")"
grep -qx "Type=notify" "$unit" || fail "vsfs@.service is not Type=notify"
if command -v systemd-analyze >/dev/null; then
	mkdir -p "$T/units"
	cp "$unit" "$T/units/vsfs@check.service"
	systemd-analyze verify --man=no "$T/units/vsfs@check.service" >"$T/verify.out" 2>&1 ||
		{ cat "$T/verify.out" >&2; fail "systemd-analyze verify refuses vsfs@.service"; }
else
	echo "note: systemd-analyze is not installed; the unit's syntax was not verified"
fi
echo "ok: layout"

# mkfs(8) and fsck(8) find the vsfs programs by their names.
export PATH="$sbin:$PATH"
mkfs -t vsfs -s 64M "$T/ds.img" >"$T/mkfs.out" 2>&1 || { cat "$T/mkfs.out" >&2; fail "mkfs -t vsfs failed"; }
"$sbin/vsfs-fsck" -n "$T/ds.img" >/dev/null || fail "mkfs -t vsfs did not make a clean datastore"
rc=0; fsck -t vsfs -a "$T/ds.img" >"$T/fsck.out" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || { cat "$T/fsck.out" >&2; fail "fsck -t vsfs -a: exit $rc"; }
rc=0; fsck.vsfs -p "$T/ds.img" >/dev/null 2>&1 || rc=$?
[ "$rc" -eq 0 ] || fail "fsck.vsfs -p: exit $rc"
: >"$T/empty.img"
rc=0; fsck -t vsfs -a "$T/empty.img" >"$T/fsck.out" 2>&1 || rc=$?
[ "$rc" -eq 8 ] || { cat "$T/fsck.out" >&2; fail "fsck -t vsfs of an empty image: exit $rc, expected 8"; }
echo "ok: mkfs -t vsfs, fsck -t vsfs"
