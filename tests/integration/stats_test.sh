#!/usr/bin/env bash
# .vsfs/stats: valid JSON with the documented sections; its size in stat(1) is the size
# of what cat reads; counters move after IO (requests, bytes, device writes, FUSE
# in-flight peak, metadata cache lookups); the metadata cache reports its budget; the
# datastore's identity (UUID, device, version, mount time, mounts) and health.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

new_mount 1G -o meta_cache_mib=16
s=$T/mnt/.vsfs/stats

python3 -m json.tool "$s" >/dev/null || fail "stats is not JSON: $(cat "$s")"
python3 - "$s" <<'PY' || fail "stats lacks keys"
import json, sys
d = json.load(open(sys.argv[1]))
need = {
    "space": ["total_bytes", "used_bytes", "free_bytes", "formatted_blocks", "to_format_blocks", "inodes"],
    "io": ["read_requests", "write_requests", "read_bytes", "write_bytes", "in_place_grain_writes",
           "redirected_grain_writes", "restamped_grain_writes", "device_ops", "device_in_flight", "device_in_flight_peak",
           "fuse_in_flight", "fuse_in_flight_peak"],
    "journal": ["commits", "bytes", "checkpoints"],
    "meta_cache": ["bytes", "budget_bytes", "unevictable_bytes", "blocks", "hits", "misses",
                   "evictions", "dir_indexes", "dir_index_bytes"],
    "fuse": ["transport", "ring_entries", "ring_requests"],
    "cbt": ["nodes", "texts", "text_bytes", "text_budget_bytes"],
}
for sec, keys in need.items():
    for k in keys:
        assert k in d[sec], f"{sec}.{k} missing"
for k in ["read", "write", "flush", "discard", "write_zeroes"]:
    assert k in d["io"]["device_ops"], f"io.device_ops.{k} missing"
for q in ["grain", "snapshot", "metadata"]:
    for k in ["waits", "waiting_now", "wait_us_p50", "wait_us_p99", "wait_us_max"]:
        assert k in d["queues"][q], f"queues.{q}.{k} missing"
assert "waiting_now" in d["queues"]["device"]
assert "release_pending" in d and "generation" in d
assert d["space"]["total_bytes"] > 0
assert d["meta_cache"]["budget_bytes"] == 16 << 20, d["meta_cache"]
assert 0 < d["meta_cache"]["bytes"] <= d["meta_cache"]["budget_bytes"], d["meta_cache"]
assert d["meta_cache"]["blocks"] > 0, d["meta_cache"]
assert d["fuse"]["transport"] in ("io_uring", "dev_fuse"), d["fuse"]
assert (d["fuse"]["transport"] == "io_uring") == (d["fuse"]["ring_requests"] > 0), d["fuse"]
PY
[ "$(stat -c %s "$s")" -eq "$(wc -c <"$s")" ] || fail "stat size $(stat -c %s "$s") != bytes read $(wc -c <"$s")"
[ "$(stat -c %a "$s")" = 444 ] || fail "stats mode $(stat -c %a "$s")"

w0=$(stat_value "$T/mnt" io.write_requests)
wb0=$(stat_value "$T/mnt" io.write_bytes)
dw0=$(stat_value "$T/mnt" io.device_ops.write)
r0=$(stat_value "$T/mnt" io.read_requests)
h0=$(stat_value "$T/mnt" meta_cache.hits)
dd if=/dev/urandom of="$T/mnt/f.img" bs=1M count=8 oflag=direct status=none || fail "dd write"
sync "$T/mnt/f.img"
dd if="$T/mnt/f.img" of=/dev/null bs=1M iflag=direct status=none || fail "dd read"
w1=$(stat_value "$T/mnt" io.write_requests)
wb1=$(stat_value "$T/mnt" io.write_bytes)
dw1=$(stat_value "$T/mnt" io.device_ops.write)
r1=$(stat_value "$T/mnt" io.read_requests)
h1=$(stat_value "$T/mnt" meta_cache.hits)
echo "write_requests $w0 -> $w1, write_bytes $wb0 -> $wb1, device writes $dw0 -> $dw1, read_requests $r0 -> $r1"
[ "$w1" -ge $((w0 + 8)) ] || fail "write_requests did not move"
[ "$wb1" -ge $((wb0 + (8 << 20))) ] || fail "write_bytes did not move"
[ "$dw1" -gt "$dw0" ] || fail "device writes did not move"
[ "$r1" -ge $((r0 + 8)) ] || fail "read_requests did not move"
[ "$h1" -gt "$h0" ] || fail "meta_cache.hits did not move ($h0 -> $h1)"
[ "$(stat_value "$T/mnt" io.fuse_in_flight_peak)" -ge 1 ] || fail "fuse_in_flight_peak is 0"
[ "$(stat_value "$T/mnt" space.used_bytes)" -ge $((8 << 20)) ] || fail "used_bytes below what was written"
# The root directory was used (f.img created and looked up): its index is held and counted.
[ "$(stat_value "$T/mnt" meta_cache.dir_indexes)" -ge 1 ] || fail "no directory index counted"
[ "$(stat_value "$T/mnt" meta_cache.dir_index_bytes)" -gt 0 ] || fail "dir_index_bytes is 0"

# Readers opening, reading and closing the stats file at once, for 5 s: every read is a
# whole JSON document. (The handle of a closed reader is freed while others read theirs;
# the sanitizer build of the daemon caught a reply that still pointed into a handle.)
readers=()
for _ in 1 2 3 4; do
	python3 - "$T/mnt/.vsfs/stats" <<'PY' &
import json, sys, time
end = time.monotonic() + 5
while time.monotonic() < end:
    with open(sys.argv[1]) as f:
        json.load(f)
PY
	readers+=($!)
done
for r in "${readers[@]}"; do wait "$r" || fail "a concurrent reader of .vsfs/stats failed"; done

# Which datastore, and its health: the UUID vsfs-mkfs printed, the device, the version,
# when it was mounted; no errors. mount_count grows with each read-write mount.
uuid=$(awk '/uuid:/ {print $2}' "$T/mkfs.log")
[ -n "$uuid" ] || fail "no uuid in the mkfs output"
check_identity() {  # check_identity MOUNT_COUNT
	python3 - "$T/mnt/.vsfs/stats" "$uuid" "$T/ds.img" "$1" "$(date -u +%s)" <<'PY' || fail "datastore/health sections: $(cat "$T/mnt/.vsfs/stats")"
import calendar, json, sys, time
d = json.load(open(sys.argv[1]))
uuid, device, count, now = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
ds, h = d["datastore"], d["health"]
assert ds["uuid"] == uuid, (ds, uuid)
assert ds["device"] == device, ds
assert ds["version"] and ds["version"][0].isdigit(), ds
assert ds["mount_count"] == count, (ds, count)
t = calendar.timegm(time.strptime(ds["mounted_at"], "%Y-%m-%dT%H:%M:%SZ"))
assert now - 120 <= t <= now + 1, (ds, now)
assert h["state"] == "ok", h
for k in ("device_read_errors", "device_write_errors", "device_no_space"):
    assert h[k] == 0, h
assert h["metadata_failed"] is False, h
assert h["last_error"] is None and h["last_error_at"] is None, h
PY
}
check_identity 1
unmount_wait "$T/mnt" "$DAEMON_PID"
mount_fg "$T/ds.img" "$T/mnt"
check_identity 2
unmount_wait "$T/mnt" "$DAEMON_PID"
echo "PASS: stats"
