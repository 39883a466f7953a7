#!/usr/bin/env bash
# A detached vsfs-mount logs to syslog (ident vsfs-mount, facility daemon) and, with
# -o log_file=, to a file: the warning of a datastore left unclean (kill -9) reaches the
# syslog socket this test listens on and the file, each naming the datastore; info lines
# (mounted, unmounted cleanly) too; with -o log_level=warning they do not.
# The socket is /dev/log. Where nothing listens there (no syslog daemon, as on a test
# machine), the test listens there itself and removes it at the end; where a syslog
# daemon has it, the test runs itself again in a private mount namespace with its own
# socket bound over /dev/log.
here=$(cd "$(dirname "$0")" && pwd)
if [ -e /dev/log ] && [ -z "${VSFS_SYSLOG_INNER:-}" ]; then
	exec unshare --mount --propagation private env VSFS_SYSLOG_INNER=1 bash "$0" "$@"
fi
. "$here/lib.sh"

cat >"$T/listen.py" <<'PY'
import os, socket, sys
path, out = sys.argv[1:3]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o666)
with open(out, "a", buffering=1) as f:
    f.write("listening\n")
    while True:
        f.write(s.recv(8192).decode(errors="replace").rstrip("\n") + "\n")
PY
if [ -n "${VSFS_SYSLOG_INNER:-}" ]; then
	sock=$T/log.sock
else
	sock=/dev/log
	CLEAN_DIRS+=(/dev/log)  # removed on exit (rm -rf of a socket)
fi
python3 "$T/listen.py" "$sock" "$T/syslog.txt" &
PIDS+=($!)
for _ in $(seq 50); do grep -q listening "$T/syslog.txt" 2>/dev/null && break; sleep 0.1; done
[ -S "$sock" ] || fail "the syslog listener did not start"
[ -z "${VSFS_SYSLOG_INNER:-}" ] || mount --bind "$sock" /dev/log || fail "bind over /dev/log"

mkfs_file "$T/ds.img" 256M
mkdir "$T/mnt"
ds=$T/ds.img
# A clean mount, then a kill -9: the mounted mark stays.
"$VSFS_MOUNT" -o log_file="$T/vsfs.log" "$ds" "$T/mnt" || fail "first mount"
pid=$(daemon_pid "$ds") || fail "no daemon"
echo x >"$T/mnt/f"
kill -9 "$pid"
for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
umount -l "$T/mnt" 2>/dev/null || fusermount3 -u -z "$T/mnt" 2>/dev/null || true

# The next mount recovers and says so.
"$VSFS_MOUNT" -o log_file="$T/vsfs.log" "$ds" "$T/mnt" 2>"$T/err" || fail "mount after kill -9: $(cat "$T/err")"
MOUNTS+=("$T/mnt")
pid=$(daemon_pid "$ds") || fail "no daemon after the recovery"
PIDS+=("$pid")
unmount_wait "$T/mnt" "$pid"
sleep 0.2

cat "$T/syslog.txt"
warn="warning: $ds: datastore was not unmounted cleanly (mounted mark set, no live owner); recovering"
# <28>: facility daemon (3 << 3) with priority warning (4).
grep -Fq "vsfs-mount[" "$T/syslog.txt" || fail "nothing from vsfs-mount reached syslog"
grep -E '^<28>' "$T/syslog.txt" | grep -Fq "$warn" || fail "the recovery warning did not reach syslog as daemon.warning"
grep -E '^<30>' "$T/syslog.txt" | grep -Fq "info: $ds mounted at $T/mnt" || fail "no daemon.info 'mounted' line in syslog"
grep -Fq "info: $ds unmounted cleanly" "$T/syslog.txt" || fail "no 'unmounted cleanly' in syslog (said after detaching)"
grep -Fq "$warn" "$T/vsfs.log" || fail "the recovery warning is not in the log file"
grep -Eq "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}[+-][0-9]{4} vsfs-mount\[$pid\]: info: $ds unmounted cleanly$" "$T/vsfs.log" ||
	fail "the log file's lines are not 'TIME vsfs-mount[PID]: LEVEL: TEXT'"

# log_level=warning: the info lines go.
: >"$T/syslog.txt"
: >"$T/vsfs.log"
"$VSFS_MOUNT" -o log_level=warning,log_file="$T/vsfs.log" "$ds" "$T/mnt" || fail "mount at level warning"
pid=$(daemon_pid "$ds") || fail "no daemon at level warning"
PIDS+=("$pid")
unmount_wait "$T/mnt" "$pid"
sleep 0.2
grep -q "mounted at\|unmounted cleanly" "$T/syslog.txt" "$T/vsfs.log" && fail "info lines logged at level warning"
echo "syslog: the recovery warning and the info lines reached syslog and the file; levels filter"
