#!/usr/bin/env bash
# Delayed formatting on a file-backed datastore: deleting a 1 GiB disk returns at once,
# and once the background formatter has caught up the datastore file's allocated size
# (du) has shrunk by about 1 GiB; .vsfs/stats shows the format section.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

new_mount 3G
dd if=/dev/urandom of="$m/disk.img" bs=1M count=1024 oflag=direct conv=fsync status=none ||
	fail "writing the disk"
before=$(du -k "$T/ds.img" | cut -f1)
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
after=$(du -k "$T/ds.img" | cut -f1)
echo "datastore file: ${before} KiB before, ${after} KiB after"
[ $((before - after)) -gt $((900 * 1024)) ] || fail "du shrank by only $((before - after)) KiB"
[ "$(stat_value "$m" format.formatted_bytes_total)" -ge $((1000 << 20)) ] ||
	fail "formatted_bytes_total: $(stat_value "$m" format.formatted_bytes_total)"
stat_value "$m" format.rate_mib_s >/dev/null || fail "no format section in stats"
unmount_wait "$m" "$DAEMON_PID"
fsck_clean "$T/ds.img" "-f after formatting" -f
echo "format test passed"
