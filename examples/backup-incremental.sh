#!/usr/bin/env bash
# backup-incremental.sh MOUNT DISK BACKUP_DIR
#
# Backs up one virtual disk of a mounted vsfs datastore into BACKUP_DIR/NAME (a
# sparse raw image). The first run copies the whole disk; later runs copy only the
# extents that changed since the previous run, read from MOUNT/.cbt/NEW/PREVIOUS/DISK.
# Each run takes a snapshot of the disk's directory, copies from the snapshot (a
# consistent point in time), records the snapshot's name and changeId in
# BACKUP_DIR/NAME.vsfs-backup, and deletes the snapshot: vsfs keeps a deleted snapshot's
# name and changeId on record, so the next run can still ask what changed since it.
#
#   MOUNT       where the datastore is mounted, e.g. /mnt/ds
#   DISK        the disk's path inside the datastore, e.g. vm1/vm1.img
#   BACKUP_DIR  where the image and its state file are kept
#
# Exit status 0 on success; on failure the previous backup is left as it was.
set -euo pipefail

[ $# -eq 3 ] || { sed -n '2,17p' "$0" >&2; exit 2; }
mount=${1%/} disk=${2#/} dest=$3
dir=$(dirname "$disk") name=$(basename "$disk")
[ "$dir" = . ] && dir=
base=$mount${dir:+/$dir}
[ -f "$mount/$disk" ] || { echo "backup: $mount/$disk is not a disk" >&2; exit 1; }
mkdir -p "$dest"
image=$dest/$name state=$dest/$name.vsfs-backup
snap=backup-$(date +%Y%m%d-%H%M%S)-$$

prev=
[ -f "$state" ] && [ -f "$image" ] && prev=$(sed -n 's/^snapshot=//p' "$state")
mkdir "$base/.snapshots/$snap"
trap 'rmdir "$base/.snapshots/$snap" 2>/dev/null || true' EXIT
src=$base/.snapshots/$snap/$name
size=$(stat -c %s "$src")
changeid=$(python3 -c 'import os,sys; print(os.getxattr(sys.argv[1], "user.vsfs.changeid").decode())' \
	"$base/.snapshots/$snap")

if [ -n "$prev" ] && [ -e "$base/.cbt/$snap/$prev/$name" ]; then
	map=$base/.cbt/$snap/$prev/$name
	kind=incremental
else
	map=$base/.cbt/$snap/full/$name
	kind=full
	rm -f "$image.new"
	truncate -s 0 "$image.new"
fi
work=$image
[ "$kind" = full ] && work=$image.new
copied=0
while read -r off len what; do
	if [ "$what" = data ]; then
		dd if="$src" of="$work" bs=1M iflag=skip_bytes,count_bytes oflag=seek_bytes \
			skip="$off" seek="$off" count="$len" conv=notrunc,sparse status=none
		copied=$((copied + len))
	else
		fallocate --punch-hole --keep-size --offset "$off" --length "$len" "$work" 2>/dev/null ||
			dd if=/dev/zero of="$work" bs=1M oflag=seek_bytes,count_bytes seek="$off" count="$len" \
				conv=notrunc status=none
	fi
done < "$map"
truncate -s "$size" "$work"
sync "$work"
[ "$kind" = full ] && mv "$image.new" "$image"
printf 'snapshot=%s\nchangeid=%s\nsize=%s\n' "$snap" "$changeid" "$size" > "$state.new"
mv "$state.new" "$state"
echo "backup: $kind backup of $disk at changeId $changeid: $copied bytes copied into $image"
