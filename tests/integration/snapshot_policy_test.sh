#!/usr/bin/env bash
# The snapshot policy as other users meet it, on an allow_other mount (vsfs(7),
# "Snapshot policy"): who may take and delete snapshots, names scoped by directory, the
# limits, the history no other user can evict, and the space each snapshot holds in
# .vsfs/snapshots and the user.vsfs.*_bytes attributes. Two unprivileged users (setpriv)
# try what the issue's users tried: pin the datastore's freed space, take root's names,
# push root's backup points out of the history, delete others' snapshots.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

alice=1001 bob=1002 carol=1003
# as UID CMD...: runs CMD as that user (no groups); its stderr goes to $T/as.err.
as() {
	local uid=$1
	shift
	setpriv --reuid="$uid" --regid="$uid" --clear-groups "$@" 2>"$T/as.err"
}
# refused HOW UID CMD...: CMD as UID must fail, its message naming HOW (the errno text).
refused() {
	local how=$1
	shift
	if as "$@"; then fail "uid $1 could: ${*:2}"; fi
	grep -q "$how" "$T/as.err" || { cat "$T/as.err" >&2; fail "uid $1: ${*:2}: expected '$how'"; }
}
xattr() { python3 -c 'import os,sys; print(os.getxattr(sys.argv[1], sys.argv[2]).decode())' "$1" "$2"; }
# snap_field DIR NAME FIELD: FIELD of snapshot NAME of directory DIR in .vsfs/snapshots.
snap_field() {
	python3 - "$m/.vsfs/snapshots" "$1" "$2" "$3" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for s in d["snapshots"]:
    if s["directory"] == sys.argv[2] and s["name"] == sys.argv[3]:
        print(s[sys.argv[4]])
        break
else:
    sys.exit("no snapshot %s of %s in .vsfs/snapshots" % (sys.argv[3], sys.argv[2]))
PY
}
used_mib() { df -m --output=used "$m" | tail -n1 | tr -d ' '; }

new_mount 1G -o allow_other,history=16,max_per_directory=4
chmod o+x "$T"
mkdir "$m/alice" "$m/bob" "$m/vm"
chown "$alice:$alice" "$m/alice"
chown "$bob:$bob" "$m/bob"
chmod 0777 "$m/vm"  # anyone may write it; its snapshots are still root's (owner)

# Who may take: the owner of a directory and root; nobody takes the whole datastore
# but root; a writer who is not the owner does not snapshot the directory.
as $alice mkdir "$m/alice/.snapshots/mine" || { cat "$T/as.err" >&2; fail "owner's snapshot"; }
[ "$(xattr "$m/alice/.snapshots/mine" user.vsfs.taker)" = $alice ] || fail "taker xattr"
refused "denied\|not permitted" $bob mkdir "$m/alice/.snapshots/x"
refused "denied\|not permitted" $alice mkdir "$m/.snapshots/all"
refused "denied\|not permitted" $bob mkdir "$m/vm/.snapshots/x"
# Who may delete: the taker, the directory's owner, root.
refused "denied\|not permitted" $bob rmdir "$m/alice/.snapshots/mine"
[ -d "$m/alice/.snapshots/mine" ] || fail "bob deleted alice's snapshot"

# Names are per directory: alice's names never take root's.
as $alice mkdir "$m/alice/.snapshots/nightly-2026-12-05" || fail "alice's nightly"
mkdir "$m/.snapshots/nightly-2026-12-05" || fail "root lost a name to alice"
[ -d "$m/.snapshots/nightly-2026-12-05/alice/.snapshots" ] && fail ".snapshots inside a snapshot"

# The per-directory limit (4 here) binds alice, not root.
as $alice mkdir "$m/alice/.snapshots/3" || fail "third"
as $alice mkdir "$m/alice/.snapshots/4" || fail "fourth"
refused "quota" $alice mkdir "$m/alice/.snapshots/5"
grep -q "refused for uid $alice: the directory has 4 snapshots" "$DAEMON_LOG" || fail "no log line for the limit"
mkdir "$m/alice/.snapshots/root-5" || fail "root was limited"
for s in 3 4 nightly-2026-12-05; do as $alice rmdir "$m/alice/.snapshots/$s" || fail "alice deletes $s"; done
rmdir "$m/alice/.snapshots/root-5" || fail "root deletes in alice's directory"

# The pin: alice's snapshot of her (empty) directory holds what root frees anywhere,
# and shows it: .vsfs/snapshots and the xattrs name her snapshot and its bytes.
dd if=/dev/urandom of="$m/vm/disk.img" bs=1M count=300 status=none || fail "write"
sync -f "$m"
as $alice mkdir "$m/alice/.snapshots/pin" || fail "pin"
rm "$m/vm/disk.img"
before=$(used_mib)
[ "$before" -ge 300 ] || fail "the pin should hold the deleted disk ($before MiB used)"
excl=$(snap_field /alice pin exclusive_bytes) || fail ".vsfs/snapshots"
[ "$excl" -ge $((300 << 20)) ] || fail "pin holds $excl bytes alone, expected >= 300 MiB"
[ "$(xattr "$m/alice/.snapshots/pin" user.vsfs.exclusive_bytes)" = "$excl" ] || fail "xattr and listing differ"
[ "$(snap_field /alice pin taker_uid)" = $alice ] || fail "taker in the listing"
refused "denied" $alice cat "$m/.vsfs/snapshots"  # names every user's directories: root's
python3 - "$m/.vsfs/snapshots" "$alice" "$excl" <<'PY' || fail "per-taker totals"
import json, sys
d = json.load(open(sys.argv[1]))
t = {x["uid"]: x for x in d["takers"]}
uid, excl = int(sys.argv[2]), int(sys.argv[3])
assert t[uid]["snapshots"] == 2, t      # mine and pin
assert t[uid]["exclusive_bytes"] >= excl, t
PY
# Root sees it and deletes it: the space comes back.
rmdir "$m/alice/.snapshots/pin" || fail "root deletes alice's pin"
for _ in $(seq 100); do [ "$(used_mib)" -lt $((before - 250)) ] && break; sleep 0.1; done
[ "$(used_mib)" -lt $((before - 250)) ] || fail "deleting the pin freed nothing ($(used_mib) MiB used)"

# The history: alice's thousand rounds push out only her own deleted records; root's
# backup point "monday" stays, and root's next incremental backup has its base.
echo a >"$m/vm/small.img"
mkdir "$m/.snapshots/monday" && rmdir "$m/.snapshots/monday" || fail "monday"
as $alice /usr/bin/python3 - "$m/alice/.snapshots" <<'PY' || { cat "$T/as.err" >&2; fail "alice's rounds"; }
import os, sys
for i in range(1000):
    p = os.path.join(sys.argv[1], "r%d" % i)
    os.mkdir(p)
    os.rmdir(p)
PY
echo b >>"$m/vm/small.img"
mkdir "$m/.snapshots/tuesday" || fail "tuesday"
[ -f "$m/.cbt/tuesday/monday/vm/small.img" ] || fail "root's backup point was evicted"
grep -qx "0 4 data" "$m/.cbt/tuesday/monday/vm/small.img" || fail "the map since monday"

# takers = writers: in a shared directory every writer takes snapshots; only the
# taker, the owner and root delete them (the kernel lets every writer through to the
# policy, which refuses and logs).
unmount_wait "$m" "${PIDS[-1]}"
mount_fg "$T/ds.img" "$m" -o allow_other,takers=writers
mkdir "$m/shared"
chown "$alice:$alice" "$m/shared"
chmod 0777 "$m/shared"
as $bob mkdir "$m/shared/.snapshots/bobs" || fail "a writer's snapshot"
refused "not permitted" $carol rmdir "$m/shared/.snapshots/bobs"
grep -q "refused for uid $carol: only its taker (uid $bob)" "$DAEMON_LOG" || fail "no log line"
as $alice rmdir "$m/shared/.snapshots/bobs" || fail "the owner deletes"
as $bob mkdir "$m/shared/.snapshots/bobs" || fail "again"
as $bob rmdir "$m/shared/.snapshots/bobs" || fail "the taker deletes"
rmdir "$m/alice/.snapshots/mine" "$m/.snapshots/nightly-2026-12-05" "$m/.snapshots/tuesday"

# takers = root: the owner reaches the policy and is refused, with a log line.
unmount_wait "$m" "${PIDS[-1]}"
mount_fg "$T/ds.img" "$m" -o allow_other,takers=root
refused "not permitted" $alice mkdir "$m/alice/.snapshots/x"
grep -q "refused for uid $alice: only root takes snapshots" "$DAEMON_LOG" || fail "no log line"
mkdir "$m/alice/.snapshots/x" && rmdir "$m/alice/.snapshots/x" || fail "root's snapshot"

unmount_wait "$m" "${PIDS[-1]}"
fsck_clean "$T/ds.img" "after the policy rounds"
echo "PASS"
