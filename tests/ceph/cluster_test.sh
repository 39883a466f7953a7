#!/usr/bin/env bash
# cluster.sh works: two clusters started at once (their monitors' ports must not clash)
# both serve RBD IO (a 64 MiB image, 4 MiB of random data written and read back, a
# write benchmark), clients of a stopped cluster fail within seconds, and stop leaves
# none of their daemons running. No skipping: a missing Ceph package is a failure.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cluster=$here/cluster.sh
for b in ceph-mon ceph-osd ceph-mgr ceph rbd monmaptool python3; do
	command -v "$b" >/dev/null || { echo "FAIL: $b is missing (bash .ci/deps.sh)" >&2; exit 1; }
done

T=$(mktemp -d "${TMPDIR:-/tmp}/vsfs-ceph.XXXXXX")
cleanup() {
	local rc=$?
	bash "$cluster" stop "$T/a" || rc=1
	bash "$cluster" stop "$T/b" || rc=1
	rm -rf "$T"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

fail() { echo "FAIL: $*" >&2; exit 1; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.1f}')"; }

# Both at once, so that both pick their ports at the same moment.
t0=$(now)
bash "$cluster" start "$T/a" >"$T/a.out" 2>"$T/a.err" & pa=$!
bash "$cluster" start "$T/b" >"$T/b.out" 2>"$T/b.err" & pb=$!
ra=0; rb=0
wait $pa || ra=$?
wait $pb || rb=$?
echo "both started in $(secs "$t0" "$(now)") s"
for c in a b; do
	r=$ra; [ $c = a ] || r=$rb
	[ "$r" = 0 ] || { cat "$T/$c.err" >&2; fail "cluster.sh start $c exited $r"; }
	[ "$(cat "$T/$c.out")" = "$T/$c/ceph.conf" ] ||
		fail "start $c printed '$(cat "$T/$c.out")', not just the conf path"
done
mon_host() { sed -n 's/^mon host = //p' "$1/ceph.conf"; }
[ "$(mon_host "$T/a")" != "$(mon_host "$T/b")" ] || fail "both monitors on $(mon_host "$T/a")"
echo "monitors: $(mon_host "$T/a") and $(mon_host "$T/b")"

# The daemons of each, by pid, alive now and gone after stop.
declare -A pids
for c in a b; do
	for n in mon.a mgr.x osd.0; do
		p=$(cat "$T/$c/run/$n.pid") || fail "no pid file for $c's $n"
		tr '\0' ' ' </proc/"$p"/cmdline | grep -qF "$T/$c/ceph.conf" || fail "$c's $n (pid $p) is not running"
		pids[$c]+="$p "
	done
done

# IO on both, both running.
head -c 4M /dev/urandom >"$T/data"
truncate -s 64M "$T/data"
want=$(sha256sum <"$T/data")
for c in a b; do
	conf=$T/$c/ceph.conf
	rbd -c "$conf" import --no-progress "$T/data" rbd/img || fail "rbd import on $c"
	size=$(rbd -c "$conf" info --format json rbd/img | python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])')
	[ "$size" = $((64 << 20)) ] || fail "image size on $c is $size"
	rbd -c "$conf" export --no-progress rbd/img "$T/back.$c" || fail "rbd export on $c"
	[ "$(sha256sum <"$T/back.$c")" = "$want" ] || fail "$c: the data read back differs"
	rbd -c "$conf" create --size 64M rbd/bench || fail "rbd create on $c"
	rbd -c "$conf" bench --io-type write --io-size 4K --io-total 4M --io-pattern rand \
		rbd/bench >/dev/null || fail "rbd bench on $c"
	rbd -c "$conf" ls rbd | sort | tr '\n' ' ' | grep -qx "bench img " || fail "rbd ls on $c"
	echo "cluster $c: 4 MiB written and read back, write benchmark done"
done

# Stop (twice: the second is a no-op); clients of a stopped cluster give up in ~10 s.
for c in a b; do
	t0=$(now)
	bash "$cluster" stop "$T/$c" || fail "stop $c"
	echo "cluster $c stopped in $(secs "$t0" "$(now)") s"
	bash "$cluster" stop "$T/$c" || fail "second stop of $c"
	for p in ${pids[$c]}; do
		st=$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null || true)
		[ -z "$st" ] || [ "$st" = Z ] || fail "pid $p of cluster $c still runs after stop"
	done
done
t0=$(now)
if timeout 60 rbd -c "$T/a/ceph.conf" ls rbd 2>/dev/null; then fail "rbd ls on a stopped cluster succeeded"; fi
took=$(secs "$t0" "$(now)")
python3 -c "import sys; sys.exit(0 if $took <= 20 else 1)" ||
	fail "rbd against a stopped cluster took $took s to fail"
echo "rbd against a stopped cluster failed after $took s"
echo PASS
