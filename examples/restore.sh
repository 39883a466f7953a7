#!/usr/bin/env bash
# restore.sh IMAGE MOUNT DISK
#
# Restores a backup image made by backup-incremental.sh into the datastore mounted at
# MOUNT as DISK (a new file, or one that is replaced). Holes in the image stay holes:
# only data is written, so the restored disk is as thin as the backup.
set -euo pipefail
[ $# -eq 3 ] || { sed -n '2,7p' "$0" >&2; exit 2; }
image=$1 mount=${2%/} disk=${3#/}
[ -f "$image" ] || { echo "restore: $image not found" >&2; exit 1; }
mkdir -p "$(dirname "$mount/$disk")"
cp --sparse=always "$image" "$mount/$disk.restoring"
python3 -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' "$mount/$disk.restoring"
mv "$mount/$disk.restoring" "$mount/$disk"
echo "restore: $image -> $mount/$disk ($(stat -c %s "$mount/$disk") bytes)"
