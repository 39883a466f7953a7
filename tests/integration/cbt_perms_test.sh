#!/usr/bin/env bash
# .cbt as other users see it, on an allow_other mount: every entry carries the owner,
# group and permission bits (less write) of what it describes, so another user can do
# in .cbt/B/A/... exactly what the live tree let them do in snapshot B: list a
# directory, look up and read a disk's map. Two unprivileged users (uids 1001 and 1002,
# as setpriv makes them) try every path of a tree with private and shared parts, in the
# live tree at the snapshot and in its .cbt maps; the results (success or errno) must be
# the same. A mode changed after the snapshot does not open the snapshot's maps.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

new_mount 1G -o allow_other
chmod o+x "$T"
alice=1001 bob=1002
mkdir -p "$m/vm/alice/private" "$m/vm/alice/open" "$m/vm/bob"
for f in vm/alice/private/disk.img vm/alice/open/disk.img vm/alice/mine.img vm/bob/disk.img; do
	head -c 1M /dev/urandom >"$m/$f"
done
chown -R "$alice:$alice" "$m/vm/alice"
chown -R "$bob:$bob" "$m/vm/bob"
chmod 0755 "$m/vm" "$m/vm/alice" "$m/vm/alice/open" "$m/vm/bob"
chmod 0700 "$m/vm/alice/private"
chmod 0600 "$m/vm/alice/private/disk.img" "$m/vm/alice/mine.img" "$m/vm/bob/disk.img"
chmod 0644 "$m/vm/alice/open/disk.img"
mkdir "$m/.snapshots/s1" || fail "snapshot"

# probe.py USER_ROOT PATH...: one line per path: "PATH stat=R list=R read=R", each R
# "ok" or the errno's name.
cat >"$T/probe.py" <<'PY'
import errno, os, sys
root = sys.argv[1]
def res(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
for p in sys.argv[2:]:
    full = os.path.join(root, p)
    st = res(lambda: os.stat(full))
    is_dir = st == "ok" and os.path.isdir(full)
    ls = res(lambda: os.listdir(full)) if is_dir else "-"
    rd = res(lambda: open(full, "rb").read(1)) if st == "ok" and not is_dir else "-"
    print(p, "stat=" + st, "list=" + ls, "read=" + rd)
PY
paths=(vm vm/alice vm/alice/private vm/alice/private/disk.img vm/alice/open vm/alice/open/disk.img
	vm/alice/mine.img vm/bob vm/bob/disk.img)
as_user() {
	local uid=$1
	shift
	setpriv --reuid="$uid" --regid="$uid" --clear-groups /usr/bin/python3 "$T/probe.py" "$@"
}
for who in $alice $bob; do
	as_user "$who" "$m/.snapshots/s1" "${paths[@]}" >"$T/live.$who" || fail "probe of the snapshot as $who"
	as_user "$who" "$m/.cbt/s1/full" "${paths[@]}" >"$T/cbt.$who" || fail "probe of .cbt as $who"
	# A map is a file where the live tree has a disk: only the reads are compared there;
	# listing a map's directory lists maps, as the snapshot's lists disks.
	if ! diff "$T/live.$who" "$T/cbt.$who" >"$T/diff"; then
		cat "$T/diff" >&2
		fail "uid $who can do in .cbt/s1/full what it could not in the snapshot, or the reverse"
	fi
done
# The cases that matter, stated: bob cannot list alice's private directory nor read her
# private maps; alice can; bob reads the open one.
grep -qx "vm/alice/private stat=ok list=EACCES read=-" "$T/cbt.$bob" || fail "bob lists alice/private: $(grep 'private ' "$T/cbt.$bob")"
grep -qx "vm/alice/private/disk.img stat=EACCES list=- read=-" "$T/cbt.$bob" || fail "bob reaches alice's private map"
grep -qx "vm/alice/mine.img stat=ok list=- read=EACCES" "$T/cbt.$bob" || fail "bob reads alice's 0600 map"
grep -qx "vm/alice/open/disk.img stat=ok list=- read=ok" "$T/cbt.$bob" || fail "bob cannot read an open map"
grep -qx "vm/alice/private/disk.img stat=ok list=- read=ok" "$T/cbt.$alice" || fail "alice cannot read her own map"

# Opened up after the snapshot: the snapshot's maps stay as they were.
chmod 0755 "$m/vm/alice/private"
chmod 0644 "$m/vm/alice/private/disk.img"
as_user "$bob" "$m/.cbt/s1/full" vm/alice/private vm/alice/private/disk.img >"$T/after" || fail "probe after chmod"
grep -q "vm/alice/private stat=ok list=EACCES" "$T/after" || fail "a later chmod opened the snapshot's directory: $(cat "$T/after")"
# And a later snapshot's maps follow the later modes (also as a backup point since s1).
mkdir "$m/.snapshots/s2" || fail "snapshot s2"
as_user "$bob" "$m/.cbt/s2/s1" vm/alice/private/disk.img >"$T/s2" || fail "probe of s2"
grep -qx "vm/alice/private/disk.img stat=ok list=- read=ok" "$T/s2" || fail "s2's map: $(cat "$T/s2")"
echo "cbt_perms: .cbt allows each user exactly what the snapshot's tree allows"
