#!/usr/bin/env bash
# A throw-away single-node Ceph cluster for vsfs's tests: one monitor, one manager and
# one memstore OSD (data in RAM), authentication off, listening on 127.0.0.1 only.
#
#   conf=$(tests/ceph/cluster.sh start DIR)   # DIR empty or missing; prints DIR/ceph.conf
#   rbd -c "$conf" create --size 64M rbd/img
#   tests/ceph/cluster.sh stop DIR            # then the caller removes DIR
#
# start makes the pool `rbd` (8 PGs, one copy, rbd pool init) and returns once an image
# can be created in it. Its only stdout is the conf path; progress and errors go to
# stderr. On failure it stops what it started, prints the tail of the daemons' logs and
# exits non-zero; it gives up after VSFS_CEPH_START_TIMEOUT seconds (90).
# stop ends the OSD and the manager, then the monitor (the OSD tells the monitor it
# goes, and waits for it), each by the pid in its pid file; safe to repeat, and on a
# half-started DIR.
#
# Every file the cluster writes (state, logs, pid files, admin sockets, crash reports)
# stays inside DIR; keep DIR's path short, a socket path has at most 107 bytes. The
# monitor's two ports are picked free at start, the OSD and manager pick their own, so
# clusters in different directories run side by side.
# Environment: VSFS_CEPH_MEMSTORE_BYTES, the OSD's memstore size (10 GiB; only what is
# written takes memory); VSFS_CEPH_START_TIMEOUT (90).
# Clients against a dead cluster fail in about 10 s (client mount timeout), a monitor
# command that gets no answer in 15 s (rados mon op timeout). Needs the Debian packages
# ceph-mon ceph-osd ceph-mgr ceph-common (.ci/deps.sh) and python3.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
D=$(realpath -m -- "$2")
CONF=$D/ceph.conf
DAEMONS_FIRST=(osd.0 mgr.x)  # stopped before the monitor
MON=mon.a

log() { echo "cluster.sh: $*" >&2; }

# pid_of NAME: the pid in NAME's pid file if that process is still a daemon of this
# DIR (its command line names CONF; a stale file's pid may belong to someone else now).
pid_of() {
	local f=$D/run/$1.pid p
	[ -s "$f" ] || return 1
	p=$(<"$f")
	[[ $p =~ ^[0-9]+$ ]] || return 1
	tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF -- "$CONF" || return 1
	echo "$p"
}

# alive PID: running, not a zombie its parent has yet to reap.
alive() {
	local st
	st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ]
}

# stop_daemons NAME...: SIGTERM to each, up to 10 s for all to exit, then SIGKILL.
stop_daemons() {
	local n p pids=()
	for n in "$@"; do
		p=$(pid_of "$n") || continue
		kill -TERM "$p" 2>/dev/null || true
		pids+=("$p")
	done
	[ ${#pids[@]} -gt 0 ] || return 0
	for _ in $(seq 100); do
		local any=0
		for p in "${pids[@]}"; do ! alive "$p" || any=1; done
		[ $any = 1 ] || return 0
		sleep 0.1
	done
	for p in "${pids[@]}"; do
		if alive "$p"; then
			log "pid $p did not exit in 10 s, killing it"
			kill -KILL "$p" 2>/dev/null || true
		fi
	done
	# A killed process is gone once /proc says so (it is not our child to wait for).
	for p in "${pids[@]}"; do
		for _ in $(seq 50); do alive "$p" || break; sleep 0.1; done
	done
}

stop_all() {
	stop_daemons "${DAEMONS_FIRST[@]}"
	stop_daemons "$MON"
}

if [ "$cmd" = stop ]; then
	[ -d "$D" ] || exit 0
	stop_all
	exit 0
fi
[ "$cmd" = start ] || usage

if [ -e "$D" ] && [ -n "$(ls -A "$D")" ]; then
	log "$D is not empty"
	exit 2
fi
mkdir -p "$D"
DEADLINE=$(( $(date +%s) + ${VSFS_CEPH_START_TIMEOUT:-90} ))
MEMSTORE_BYTES=${VSFS_CEPH_MEMSTORE_BYTES:-10737418240}

# On any failure (fail, a command under set -e, a signal): stop what was started and
# show the daemons' logs.
started_ok=0
on_exit() {
	local rc=$?
	[ $started_ok = 0 ] || return 0
	[ $rc != 0 ] || rc=1
	stop_all
	local f
	for f in "$D"/log/*.log "$D"/log/*.out; do
		[[ -s $f && $f != */cluster.audit.log ]] || continue
		echo "--- $f (last 30 lines)" >&2
		tail -n 30 "$f" >&2
	done
	log "start failed"
	exit $rc
}
trap on_exit EXIT
trap 'exit 143' TERM INT
fail() { log "FAILED: $*"; exit 1; }

# bounded CMD...: CMD, killed when the start's deadline passes (30 s at most).
bounded() {
	local left=$(( DEADLINE - $(date +%s) ))
	[ $left -gt 0 ] || return 124
	timeout -k 2 $(( left < 30 ? left : 30 )) "$@"
}
ceph_() { bounded ceph -c "$CONF" "$@"; }
rbd_() { bounded rbd -c "$CONF" "$@"; }

# wait_for WHAT CMD...: retries CMD until it succeeds or the deadline passes.
wait_for() {
	local what=$1; shift
	until "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -lt "$DEADLINE" ] || fail "timed out waiting for $what"
		sleep 0.5
	done
}

# start_daemon NAME CMD...: CMD forks the daemon (ceph's own daemonize); then its pid
# file must appear, so that a stop finds it.
start_daemon() {
	local n=$1; shift
	bounded "$@" </dev/null >>"$D/log/$n.out" 2>&1 || return 1
	wait_for "$n's pid file" pid_of "$n"
}

write_conf() {  # write_conf V2PORT V1PORT
	cat >"$CONF" <<EOF
# Throw-away test cluster made by tests/ceph/cluster.sh; everything lives in $D.
[global]
fsid = $(python3 -c "import uuid; print(uuid.uuid4())")
mon host = [v2:127.0.0.1:$1,v1:127.0.0.1:$2]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.0/8
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
keyring = /dev/null
run dir = $D/run
crash dir = $D/crash
osd pool default size = 1
osd pool default min size = 1
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false
# Only a nearly full disk is worth a warning here.
mon data avail warn = 10
osd pool default pg autoscale mode = off

[mon]
mon data = $D/mon
log file = $D/log/\$name.log
pid file = $D/run/\$name.pid
mon cluster log file = $D/log/cluster.\$channel.log
# A port taken meanwhile fails the start at once; cluster.sh retries with new ports.
ms bind retry count = 1

[mgr]
mgr data = $D/mgr
log file = $D/log/\$name.log
pid file = $D/run/\$name.pid

[osd]
osd data = $D/osd
log file = $D/log/\$name.log
pid file = $D/run/\$name.pid
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES
# Without pages every small write fills a whole 4 MiB object in RAM.
memstore page set = true
memstore page size = 4096
osd memory target = 1073741824
# librbd breaks a frozen lock owner's lock after ~5 s instead of ~30 s.
osd client watch timeout = 5

[client]
# A fenced client's writes must fail, not land in a cache.
rbd cache = false
# Never wait forever on a dead cluster.
client mount timeout = 10
rados mon op timeout = 15
EOF
}

# free_ports: two TCP ports free on 127.0.0.1 right now.
free_ports() {
	python3 -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in ss))'
}

# The monitor, on ports picked free; another cluster may take them first: retry.
mkdir -p "$D/log" "$D/run" "$D/crash"
started=0
for attempt in 1 2 3 4 5; do
	read -r p2 p1 < <(free_ports)
	rm -rf "$D/mon" "$D/monmap"
	write_conf "$p2" "$p1"
	log "monitor on 127.0.0.1:$p2 (v2), :$p1 (v1); attempt $attempt"
	fsid=$(sed -n 's/^fsid = //p' "$CONF")
	bounded monmaptool --create --addv a "[v2:127.0.0.1:$p2,v1:127.0.0.1:$p1]" --fsid "$fsid" \
		"$D/monmap" >&2 || fail "monmaptool"
	mkdir -p "$D/mon"
	bounded ceph-mon -c "$CONF" --mkfs -i a --monmap "$D/monmap" >>"$D/log/mon.a.out" 2>&1 ||
		fail "ceph-mon --mkfs"
	if start_daemon mon.a ceph-mon -c "$CONF" -i a; then
		started=1
		break
	fi
	log "the monitor did not start (port taken?)"
	stop_daemons "$MON"
	[ "$(date +%s)" -lt "$DEADLINE" ] || break
done
[ $started = 1 ] || fail "the monitor did not start"

# The OSD: registered, made and started; up and in after a few seconds.
osd_id=$(ceph_ osd create) || fail "ceph osd create"
[ "$osd_id" = 0 ] || fail "ceph osd create gave id '$osd_id', not 0"
ceph_ osd crush add osd.0 1 root=default >&2 || fail "ceph osd crush add"
mkdir -p "$D/osd"
bounded ceph-osd -c "$CONF" -i 0 --mkfs >>"$D/log/osd.0.out" 2>&1 || fail "ceph-osd --mkfs"
start_daemon osd.0 ceph-osd -c "$CONF" -i 0 || fail "ceph-osd did not start"

# The manager, without its device-health module, which makes the monitor run smartctl
# on the host's disks (only `config set` works, not ceph.conf).
ceph_ config set mgr mgr/devicehealth/enable_monitoring false --force >&2 ||
	fail "ceph config set mgr/devicehealth"
mkdir -p "$D/mgr"
start_daemon mgr.x ceph-mgr -c "$CONF" -i x || fail "ceph-mgr did not start"

osd_up_in() {
	ceph_ osd stat -f json | python3 -c '
import json, sys
d = json.load(sys.stdin)
sys.exit(0 if d["num_up_osds"] == 1 and d["num_in_osds"] == 1 else 1)'
}
wait_for "osd.0 up and in" osd_up_in

ceph_ osd pool create rbd 8 >&2 || fail "ceph osd pool create rbd"
rbd_ pool init rbd >&2 || fail "rbd pool init"
wait_for "rbd ls" rbd_ ls rbd
probe=cluster-sh-probe
rbd_ create --size 1M "rbd/$probe" >&2 || fail "rbd create (probe image)"
rbd_ rm --no-progress "rbd/$probe" >&2 || fail "rbd rm (probe image)"
started_ok=1
log "up in $D"
echo "$CONF"
