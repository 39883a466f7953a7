#!/bin/sh
# Tests mount.vsfs's translation of mount(8)'s helper arguments into vsfs-mount's.
#
# A stub vsfs-mount, in a private temporary directory placed first in PATH, writes its
# arguments one per line; each case compares them with what vsfs-mount must receive.
# The stub stands in only for the program being called: what is tested is the helper.
# Usage: mount_vsfs_test.sh [PATH/TO/mount.vsfs]

set -u

here=$(cd "$(dirname "$0")" && pwd)
helper=${1:-$here/../../../mount/mount.vsfs}
[ -f "$helper" ] || { echo "no helper at $helper" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mount_vsfs_test.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

mkdir "$tmp/path" "$tmp/side"
log=$tmp/args
cat >"$tmp/path/vsfs-mount" <<EOF
#!/bin/sh
echo "path-stub" >"$log"
for a in "\$@"; do printf '%s\n' "\$a" >>"$log"; done
exit \${STUB_EXIT:-0}
EOF
chmod +x "$tmp/path/vsfs-mount"
# A copy of the helper with its own stub beside it, to test the next-to-itself lookup.
cp "$helper" "$tmp/side/mount.vsfs"
sed 's/path-stub/side-stub/' "$tmp/path/vsfs-mount" >"$tmp/side/vsfs-mount"
chmod +x "$tmp/side/mount.vsfs" "$tmp/side/vsfs-mount"

PATH=$tmp/path:$PATH
export PATH

failures=0
cases=0

fail() {
	echo "FAIL: $*" >&2
	failures=$((failures + 1))
}

# check NAME EXPECTED_STATUS EXPECTED_ARGS(newline-separated, "" = stub not run) -- ARGS...
check() {
	name=$1 want_status=$2 want=$3
	shift 4
	cases=$((cases + 1))
	rm -f "$log"
	sh "$helper" "$@" 2>"$tmp/stderr"
	status=$?
	if [ "$status" -ne "$want_status" ]; then
		fail "$name: exit status $status, want $want_status ($(cat "$tmp/stderr"))"
	fi
	if [ -z "$want" ]; then
		[ -e "$log" ] && fail "$name: vsfs-mount ran with: $(tr '\n' ' ' <"$log")"
		return
	fi
	if [ ! -e "$log" ]; then
		fail "$name: vsfs-mount did not run ($(cat "$tmp/stderr"))"
		return
	fi
	got=$(cat "$log")
	want=$(printf 'path-stub\n%s' "$want")
	[ "$got" = "$want" ] || fail "$name: got [$(echo "$got" | tr '\n' '|')] want [$(echo "$want" | tr '\n' '|')]"
}

nl='
'

check plain 0 "/srv/ds.img${nl}/mnt/ds" -- /srv/ds.img /mnt/ds
check options 0 "-o${nl}rw,allow_other${nl}/srv/ds.img${nl}/mnt/ds" -- \
	/srv/ds.img /mnt/ds -o rw,allow_other
check fstab-only-options-dropped 0 "/srv/ds.img${nl}/mnt/ds" -- \
	/srv/ds.img /mnt/ds -o defaults,noauto,_netdev,user,nofail,auto
check mixed-options 0 "-o${nl}allow_other,ro,threads=8${nl}/srv/ds.img${nl}/mnt/ds" -- \
	/srv/ds.img /mnt/ds -o defaults,allow_other,nofail,ro,_netdev,threads=8
check more-dropped 0 "-o${nl}noatime${nl}/d${nl}/m" -- \
	/d /m -o users,user=alice,x-systemd.automount,comment=x,noatime,owner,group,nouser
check config 0 "-o${nl}ro${nl}-c${nl}/etc/vsfs/other.toml${nl}/srv/ds.img${nl}/mnt/ds" -- \
	/srv/ds.img /mnt/ds -o defaults,config=/etc/vsfs/other.toml,ro
check config-alone 0 "-c${nl}/etc/a b.toml${nl}/d${nl}/m" -- /d /m -o "config=/etc/a b.toml"
check mount-flags-dropped 0 "-o${nl}allow_other${nl}/d${nl}/m" -- \
	/d /m -s -n -o allow_other -t vsfs
check combined-flags 0 "-o${nl}allow_other${nl}/d${nl}/m" -- /d /m -snv -oallow_other -tvsfs
check subtype 0 "/d${nl}/m" -- /d /m -t vsfs.test
check several-o 0 "-o${nl}allow_other,default_permissions${nl}/d${nl}/m" -- \
	/d /m -o allow_other -o defaults,default_permissions
check spaces-kept 0 "/srv/my ds.img${nl}/mnt/my ds" -- "/srv/my ds.img" "/mnt/my ds"
check options-first 0 "-o${nl}ro${nl}/d${nl}/m" -- -o ro /d /m
check double-dash 0 "--${nl}/d${nl}-m" -- -o defaults -- /d -m
check dash-device 0 "-o${nl}ro${nl}--${nl}-d${nl}/m" -- -o ro -- -d /m
check fake 0 "" -- /d /m -f -o allow_other
check fake-combined 0 "" -- /d /m -sfv
check missing-dir 1 "" -- /d
check no-args 1 "" --
check extra-arg 1 "" -- /d /m /x
check unknown-flag 1 "" -- /d /m -z
check o-without-value 1 "" -- /d /m -o
check wrong-type 1 "" -- /d /m -t ext4
check namespace 1 "" -- /d /m -N 1234
check empty-config 1 "" -- /d /m -o config=

cases=$((cases + 1))
STUB_EXIT=32 sh "$helper" /d /m 2>/dev/null
status=$?
[ "$status" -eq 32 ] || fail "exit status of vsfs-mount: got $status, want 32"

cases=$((cases + 1))
sh "$helper" --help >/dev/null 2>&1 || fail "--help: exit status $?"

# Next to itself first, even when PATH has another vsfs-mount.
cases=$((cases + 1))
rm -f "$log"
"$tmp/side/mount.vsfs" /d /m -o ro 2>"$tmp/stderr"
got=$(cat "$log" 2>/dev/null)
want=$(printf 'side-stub\n-o\nro\n/d\n/m')
[ "$got" = "$want" ] || fail "next-to-itself: got [$got] ($(cat "$tmp/stderr"))"

# Through a symlink, the link's target directory is searched.
cases=$((cases + 1))
mkdir "$tmp/link"
ln -s "$tmp/side/mount.vsfs" "$tmp/link/mount.vsfs"
rm -f "$log"
"$tmp/link/mount.vsfs" /d /m 2>"$tmp/stderr"
got=$(head -n 1 "$log" 2>/dev/null)
[ "$got" = "side-stub" ] || fail "symlink: got [$got] ($(cat "$tmp/stderr"))"

# No vsfs-mount anywhere: exit 2 with a message.
cases=$((cases + 1))
mkdir "$tmp/alone"
cp "$helper" "$tmp/alone/mount.vsfs"
PATH=/usr/bin:/bin sh "$tmp/alone/mount.vsfs" /d /m 2>"$tmp/stderr"
status=$?
[ "$status" -eq 2 ] || fail "not found: got status $status, want 2"
grep -q "vsfs-mount not found" "$tmp/stderr" || fail "not found: message [$(cat "$tmp/stderr")]"

if [ "$failures" -ne 0 ]; then
	echo "$failures of $cases cases failed" >&2
	exit 1
fi
echo "all $cases cases passed"
