#!/usr/bin/env bash
# Handles still open when the daemon stops: a process keeps directories (one of them
# read part way), the root and the `.vsfs/stats` file open while vsfs-mount is stopped
# with SIGTERM, which unmounts under them. The kernel never sends their release, so the
# daemon must free them itself: under the sanitizer build (VSFS_SANITIZE=ON) a handle
# left behind is a LeakSanitizer report and a non-zero exit. Then the datastore is
# clean, mounts again and reads back.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

new_mount 256M
mkdir "$m/vm1" "$m/vm2" || fail "mkdir"
for i in $(seq 40); do echo "disk $i" >"$m/vm1/disk-$i.img" || fail "create vm1/disk-$i.img"; done
echo "conf" >"$m/vm2/vm2.conf" || fail "create vm2/vm2.conf"

# The holder opens its handles, says so in $T/ready, and waits to be stopped.
python3 - "$m" "$T/ready" <<'PY' &
import os, sys, time
m, ready = sys.argv[1], sys.argv[2]
held = [os.open(m, os.O_RDONLY | os.O_DIRECTORY),
        os.open(m + "/vm2", os.O_RDONLY | os.O_DIRECTORY),
        os.open(m + "/.vsfs", os.O_RDONLY | os.O_DIRECTORY),
        os.open(m + "/.vsfs/stats", os.O_RDONLY)]
# One directory read part way: its handle has served readdir and is mid-listing.
it = os.scandir(m + "/vm1")
first = next(it)
assert first.name.startswith("disk-") or first.name in (".", ".."), first.name
assert os.read(held[3], 16), "stats read nothing"
with open(ready, "w") as f:
    f.write("%d\n" % len(held))
while True:
    time.sleep(1)
PY
holder=$!
PIDS+=("$holder")
for _ in $(seq 100); do [ -s "$T/ready" ] && break; sleep 0.1; done
[ -s "$T/ready" ] || fail "the holder did not open its handles"

# The daemon stops with the handles open; it must exit 0 (no leak report).
kill -TERM "$DAEMON_PID"
rc=0
wait "$DAEMON_PID" 2>/dev/null || rc=$?
kill "$holder" 2>/dev/null || true
wait "$holder" 2>/dev/null || true
if grep -q "LeakSanitizer\|AddressSanitizer" "$DAEMON_LOG"; then
	fail "sanitizer report after a stop with open handles (see the daemon log)"
fi
[ "$rc" -eq 0 ] || fail "daemon exited with status $rc after a stop with open handles"
mountpoint -q "$m" && fail "$m is still mounted after the daemon stopped"

fsck_clean "$T/ds.img" "after a stop with open handles"
mount_fg "$T/ds.img" "$m"
[ "$(ls "$m/vm1" | wc -l)" -eq 40 ] || fail "vm1 lists $(ls "$m/vm1" | wc -l) entries, not 40"
[ "$(cat "$m/vm2/vm2.conf")" = conf ] || fail "vm2/vm2.conf reads back wrong"
unmount_wait "$m" "$DAEMON_PID"
echo "PASS: handles open at a stop are freed"
