#!/usr/bin/env bash
# vsfs-mount as a Type=notify service: with NOTIFY_SOCKET pointing at a socket this test
# holds, READY=1 (with MAINPID, STATUS) arrives only once the mount answers, STOPPING=1
# when it is unmounted, and nothing else breaks.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

mkfs_file "$T/ds.img" 256M
mkdir "$T/mnt"
# The listener records each datagram; at READY=1 it checks at once that the mount is in
# place and answers (a stat through it), and records the outcome.
cat >"$T/listen.py" <<'PY'
import os, socket, sys
sock_path, out_path, mnt = sys.argv[1:4]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sock_path)
s.settimeout(60)
with open(out_path, "a", buffering=1) as out:
    out.write("listening\n")
    while True:
        try:
            msg = s.recv(4096).decode()
        except socket.timeout:
            out.write("timeout\n")
            break
        for line in msg.split("\n"):
            out.write("got " + line + "\n")
        if "READY=1" in msg.split("\n"):
            mounted = any(l.split()[1] == mnt and l.split()[2] == "fuse.vsfs"
                          for l in open("/proc/mounts"))
            try:
                os.stat(os.path.join(mnt, ".vsfs/stats"))
                answers = True
            except OSError:
                answers = False
            out.write("at-ready mounted=%s answers=%s\n" % (mounted, answers))
        if "STOPPING=1" in msg.split("\n"):
            break
PY
python3 "$T/listen.py" "$T/notify.sock" "$T/notify.log" "$T/mnt" &
listener=$!
PIDS+=("$listener")
for _ in $(seq 50); do grep -q listening "$T/notify.log" 2>/dev/null && break; sleep 0.1; done
[ -S "$T/notify.sock" ] || fail "the listener did not start"

NOTIFY_SOCKET=$T/notify.sock "$VSFS_MOUNT" -f "$T/ds.img" "$T/mnt" >"$T/daemon.0.log" 2>&1 &
daemon=$!
PIDS+=("$daemon")
MOUNTS+=("$T/mnt")
for _ in $(seq 100); do grep -q "^got READY=1" "$T/notify.log" && break; sleep 0.1; done
cat "$T/notify.log"
grep -q "^got READY=1$" "$T/notify.log" || fail "no READY=1"
grep -q "^got MAINPID=$daemon$" "$T/notify.log" || fail "MAINPID is not the daemon ($daemon)"
grep -q "^got STATUS=serving $T/ds.img at $T/mnt$" "$T/notify.log" || fail "no STATUS naming the datastore"
grep -q "^at-ready mounted=True answers=True$" "$T/notify.log" ||
	fail "READY=1 came before the mount answered"
grep -q "STOPPING=1" "$T/notify.log" && fail "STOPPING=1 before the unmount"
echo data >"$T/mnt/f" || fail "the mount does not take writes"

unmount_wait "$T/mnt" "$daemon"
wait "$listener" 2>/dev/null || true
cat "$T/notify.log"
grep -q "^got STOPPING=1$" "$T/notify.log" || fail "no STOPPING=1 at unmount"
[ "$(grep -c '^got READY=1$' "$T/notify.log")" -eq 1 ] || fail "READY=1 more than once"
fsck_clean "$T/ds.img" "after the notified mount"
echo "notify: READY=1 after the mount answered, STOPPING=1 at unmount"
