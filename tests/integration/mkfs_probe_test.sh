#!/usr/bin/env bash
# vsfs-mkfs asks libblkid what a device holds and refuses to overwrite anything it finds
# (naming it), on loop devices as on files: an LVM physical volume, mdraid members
# (superblock at the start, and at the end of the device), DOS and GPT partition
# tables, ext4, swap. Every refusal leaves the device byte for byte as it was; -f
# overrides, erases every old signature (blkid -p finds none after it) and makes a
# clean datastore; an all-zero device is taken without -f.
# Usage: mkfs_probe_test.sh VSFS_MKFS VSFS_FSCK
set -euo pipefail
MKFS=${1:?usage: mkfs_probe_test.sh VSFS_MKFS VSFS_FSCK}
FSCK=${2:?usage: mkfs_probe_test.sh VSFS_MKFS VSFS_FSCK}
here=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/vsfs-probe.XXXXXX")
LOOP=""
cleanup() {
	[ -z "$LOOP" ] || losetup -d "$LOOP" 2>/dev/null || true
	rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "mkfs_probe: FAIL: $*" >&2; exit 1; }

# make KIND FILE: FILE (128 MiB of zeros) with KIND's signature.
make() {
	local kind=$1 f=$2
	rm -f "$f"
	truncate -s 128M "$f"
	case $kind in
	lvm2-pv | md-1.2 | md-1.0) python3 "$here/signatures.py" "$kind" "$f" ;;
	dos) echo 'start=2048, size=20480, type=83' | sfdisk -q -X dos "$f" >/dev/null ;;
	gpt) echo 'start=2048, size=20480' | sfdisk -q -X gpt "$f" >/dev/null ;;
	ext4) mkfs.ext4 -q -F "$f" >/dev/null ;;
	swap) mkswap "$f" >/dev/null 2>&1 ;;
	*) fail "unknown kind $kind" ;;
	esac
	blkid -p "$f" >"$T/blkid.out" 2>&1 || fail "blkid -p does not recognise the $kind written to $f"
}

# refused KIND DEVICE PATTERN: mkfs refuses DEVICE naming what it holds, and leaves it
# unchanged; mkfs -f then makes a clean datastore on it.
refused() {
	local kind=$1 dev=$2 pattern=$3 before rc
	before=$(sha256sum <"$dev")
	rc=0
	"$MKFS" "$dev" >"$T/out" 2>"$T/err" || rc=$?
	echo "$kind on $dev: exit $rc: $(cat "$T/err")"
	[ "$rc" -eq 1 ] || fail "$kind: mkfs exit $rc, expected 1"
	grep -Eq -- "^vsfs-mkfs: $dev holds $pattern, found by libblkid; use -f to overwrite it$" "$T/err" ||
		fail "$kind: the message does not name /$pattern/"
	[ "$(sha256sum <"$dev")" = "$before" ] || fail "$kind: mkfs changed the device"
	"$MKFS" -f "$dev" >"$T/out" 2>"$T/err" || fail "$kind: mkfs -f failed: $(cat "$T/err")"
	# What -f overwrote is erased, also a signature outside the datastore's first block
	# (mdraid 1.0 lives near the end of the device).
	grep -q "^vsfs-mkfs: erased the old " "$T/out" || fail "$kind: mkfs -f did not say what it erased"
	"$FSCK" -n "$dev" >/dev/null || fail "$kind: no clean datastore after mkfs -f"
	blkid -p "$dev" >/dev/null 2>&1 && fail "$kind: libblkid still finds a signature after mkfs -f: $(blkid -p "$dev")"
	return 0
}

declare -A expect=(
	[lvm2-pv]='LVM2_member \(a RAID or LVM member\)'
	[md-1.2]='linux_raid_member \(a RAID or LVM member\)'
	[md-1.0]='linux_raid_member \(a RAID or LVM member\)'
	[dos]='a dos partition table'
	[gpt]='a gpt partition table'
	[ext4]='ext4 \(a filesystem\)'
	[swap]='swap \(data in use\)'
)
for kind in lvm2-pv md-1.2 md-1.0 dos gpt ext4 swap; do
	make "$kind" "$T/$kind.img"
	refused "$kind" "$T/$kind.img" "${expect[$kind]}"
done

# The same on loop devices.
truncate -s 128M "$T/loop.img"
LOOP=$(losetup -f --show "$T/loop.img") || fail "losetup could not attach a loop device"
for kind in lvm2-pv md-1.2 md-1.0 dos; do
	losetup -d "$LOOP"
	LOOP=""
	make "$kind" "$T/loop.img"
	LOOP=$(losetup -f --show "$T/loop.img") || fail "losetup could not attach a loop device"
	refused "$kind" "$LOOP" "${expect[$kind]}"
done

# Zeros: nothing to protect.
losetup -d "$LOOP"
LOOP=""
rm -f "$T/zero.img"
truncate -s 128M "$T/zero.img"
"$MKFS" "$T/zero.img" >/dev/null 2>"$T/err" || fail "mkfs refused an all-zero image: $(cat "$T/err")"
echo "mkfs_probe: all refusals named what libblkid found; -f and zeros accepted"
