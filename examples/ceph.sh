#!/usr/bin/env bash
# A datastore on Ceph RBD, and a failover between two "hosts", end to end. Run as root
# from the source tree, after the README's first command has built vsfs.
#
#   bash examples/ceph.sh [CEPH_CONF]
#
# With a ceph.conf, it uses that cluster (pool rbd must exist; the image it makes,
# rbd/vsfs-example, is removed at the end). Without one, it starts a throw-away
# single-node cluster on 127.0.0.1 (tests/ceph/cluster.sh) and stops it at the end.
# Host A and host B are two vsfs-mount processes, B in a pid namespace of its own, so
# that, as a real second host, it cannot see whether A's process lives.
#   1. Make the datastore on an image, mount it on A, write a VM disk and fsync it.
#   2. B's mount is refused while A lives: it names A.
#   3. A freezes (SIGSTOP, as a hung host would). B takes over: the cluster blocklists
#      A's client, B waits out A's lease, replays the journal and serves the disk.
#   4. A wakes: its writes fail with EIO and its log says it lost the datastore.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
bin=$src/build/bin
[ -x "$bin/vsfs-mount" ] || { echo "build vsfs first (README)" >&2; exit 1; }
work=$(mktemp -d /tmp/vsfs-ceph-example.XXXXXX)
conf=${1:-}
started=0
pids=()
cleanup() {
	for m in "$work/a" "$work/b"; do
		mountpoint -q "$m" 2>/dev/null && { fusermount3 -u "$m" 2>/dev/null || umount -l "$m"; }
	done
	for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill "$p" 2>/dev/null || true; done
	sleep 1
	[ -n "$conf" ] && rbd -c "$conf" rm --no-progress rbd/vsfs-example 2>/dev/null || true
	[ "$started" = 1 ] && bash "$src/tests/ceph/cluster.sh" stop "$work/ceph"
	rm -rf "$work"
}
trap cleanup EXIT
if [ -z "$conf" ]; then
	echo "== starting a throw-away Ceph cluster (about 10 s)"
	started=1
	conf=$(bash "$src/tests/ceph/cluster.sh" start "$work/ceph" 2>"$work/cluster.log") ||
		{ cat "$work/cluster.log" >&2; exit 1; }
fi
ds="rbd:rbd/vsfs-example:conf=$conf"
lease=(-o lease.time_ms=4000)
mkdir -p "$work/a" "$work/b"

echo "== 1. a 2 GiB image, a datastore on it, mounted on host A"
rbd -c "$conf" create --size 2G rbd/vsfs-example
"$bin/vsfs-mkfs" "$ds" | head -n 3
"$bin/vsfs-mount" -f "${lease[@]}" "$ds" "$work/a" 2>"$work/a.log" &
pids+=($!)
for _ in $(seq 100); do mountpoint -q "$work/a" && break; sleep 0.1; done
mkdir "$work/a/vm1"
head -c 64M /dev/urandom >"$work/data"
dd if="$work/data" of="$work/a/vm1/disk.img" bs=1M oflag=direct conv=fsync status=none
echo "vm1/disk.img: 64 MiB written and fsync'd on A"

echo "== 2. host B tries to mount it while A lives"
if unshare --pid --fork "$bin/vsfs-mount" -f "${lease[@]}" "$ds" "$work/b"; then
	echo "unexpected: B mounted it" >&2
	exit 1
fi

echo "== 3. A freezes; B takes over"
kill -STOP "${pids[0]}"
start=$(date +%s)
unshare --pid --fork "$bin/vsfs-mount" -f "${lease[@]}" "$ds" "$work/b" 2>"$work/b.log" &
pids+=($!)
for _ in $(seq 1200); do mountpoint -q "$work/b" && break; sleep 0.1; done
mountpoint -q "$work/b" || { cat "$work/b.log" >&2; exit 1; }
echo "B serves the datastore after $(( $(date +%s) - start )) s:"
sed 's/^/  B: /' "$work/b.log"
echo "the cluster's blocklist:"
ceph -c "$conf" osd blocklist ls 2>/dev/null | sed 's/^/  /'
cmp "$work/data" "$work/b/vm1/disk.img" && echo "vm1/disk.img reads back whole on B: start the VM there"

echo "== 4. A wakes"
kill -CONT "${pids[0]}"
if dd if=/dev/zero of="$work/a/vm1/disk.img" bs=4k count=1 oflag=direct conv=notrunc 2>"$work/dd.err"; then
	echo "unexpected: A could still write" >&2
	exit 1
fi
echo "A's write: $(grep -m1 -i error "$work/dd.err")"
sleep 1
grep "lost the datastore" "$work/a.log" | head -n 1 | sed 's/^/  A: /'
cmp "$work/data" "$work/b/vm1/disk.img" && echo "B's disk is untouched"
fusermount3 -u "$work/b"
echo "done"
