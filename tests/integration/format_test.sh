#!/usr/bin/env bash
# Delayed formatting: deleting a 1 GiB disk returns at once, and once the background
# formatter has caught up none of the disk's bytes is left on the device (read back after
# unmount, the whole image), and a datastore file's allocated size (du) has shrunk by
# about 1 GiB (an RBD image keeps the objects a partial discard zeroed: not checked
# there); .vsfs/stats shows the format section.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

new_mount 3G
marker="vsfs-format-test-$$-$RANDOM"
(set +o pipefail; yes "$marker" | head -c 1G) | dd of="$m/disk.img" bs=1M iflag=fullblock oflag=direct conv=fsync status=none ||
	fail "writing the disk"
before=$(image_used_kb "$T/ds.img")
[ "$before" -gt $((1000 * 1024)) ] || fail "the datastore file holds only ${before} KiB"
start=$(date +%s%N)
rm "$m/disk.img"
took_ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "unlink of a 1 GiB disk: ${took_ms} ms"
[ "$took_ms" -lt 2000 ] || fail "unlink took ${took_ms} ms"
# The last close reaches the daemon asynchronously (FUSE release), so the space may start
# to be released a moment after rm returns: wait for the formatter to have done it all.
for _ in $(seq 300); do
	[ "$(stat_value "$m" format.formatted_bytes_total)" -ge $((1000 << 20)) ] &&
		[ "$(stat_value "$m" format.to_format_blocks)" = 0 ] &&
		[ "$(stat_value "$m" release_pending)" = 0 ] && break
	sleep 0.1
done
after=$(image_used_kb "$T/ds.img")
echo "datastore file: ${before} KiB before, ${after} KiB after"
if [ "${VSFS_IT_RBD:-0}" != 1 ]; then
	[ $((before - after)) -gt $((900 * 1024)) ] || fail "du shrank by only $((before - after)) KiB"
fi
[ "$(stat_value "$m" format.formatted_bytes_total)" -ge $((1000 << 20)) ] ||
	fail "formatted_bytes_total: $(stat_value "$m" format.formatted_bytes_total)"
stat_value "$m" format.rate_mib_s >/dev/null || fail "no format section in stats"
unmount_wait "$m" "$DAEMON_PID"
if [ "${VSFS_IT_RBD:-0}" = 1 ]; then
	left=$(rbd -c "$VSFS_CEPH_CONF" export --no-progress "$(rbd_image "$T/ds.img")" - | grep -c -a -F "$marker")
else
	left=$(grep -c -a -F "$marker" "$T/ds.img")
fi
[ "$left" = 0 ] || fail "$left lines of the deleted disk's data are still on the device"
fsck_clean "$T/ds.img" "-f after formatting" -f
echo "format test passed"
