#!/usr/bin/env bash
# vsfs-backup and vsfs-restore end to end on a real mount:
# - point 0 is taken while a writer updates a counter in disk A then in disk B: the
#   restored disks hold counters from one instant (A == B or A == B + 1); a capture of
#   the two disks at different instants is shown to break that relation;
# - three incrementals with writes, punched holes, a shrunk disk, a deleted disk and a
#   new one, each copying exactly the data bytes of the .cbt maps it used;
# - --verify on every point; every point restored equals its snapshot (kept with
#   --keep-snapshot) byte for byte, and stays thin;
# - one flipped byte in a point's .data is caught by vsfs-restore (checksum) and by
#   vsfs-backup --verify (offset named);
# - --pre/--post: a failing --pre changes nothing, --post runs after the snapshot is
#   cut, a failing --post gives a nonzero exit with the point kept; the next run is
#   incremental from a deleted snapshot; a run stopped by SIGTERM changes nothing, and
#   point directories left by a crashed run are removed by the next;
# - --snapshot of datastore-wide snapshots (full, as the base differs, then incremental;
#   full again when a point's snapshot name was reused), and a full copy when the
#   datastore has dropped the previous point's record from its history;
# - refusals: another directory's or datastore's catalogue, a missing snapshot, a
#   directory that is not a vsfs mount, usage errors.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
: "${VSFS_BACKUP:?VSFS_BACKUP must name the vsfs-backup binary}"
: "${VSFS_RESTORE:?VSFS_RESTORE must name the vsfs-restore binary}"

B=$T/backup
MiB=$((1 << 20))
new_mount 2G
mkdir -p "$m/vm1/sub"
truncate -s 64M "$m/vm1/a.img" "$m/vm1/sub/b.img"
dd if=/dev/urandom of="$m/vm1/a.img" bs=1M count=8 seek=1 conv=notrunc status=none
dd if=/dev/urandom of="$m/vm1/sub/b.img" bs=1M count=8 seek=2 conv=notrunc status=none

# counter FILE: the writer's counter in FILE (16 decimal digits at 32 MiB; 0 if none).
counter() {
	local c
	c=$(dd if="$1" bs=16 count=1 iflag=skip_bytes skip=$((32 * MiB)) status=none | tr -d '\0')
	echo $((10#${c:-0}))
}

# same_instant A B: the counters of A and B come from one instant of the writer.
same_instant() {
	local a b
	a=$(counter "$1") b=$(counter "$2")
	[ "$a" -gt 0 ] && { [ "$a" -eq "$b" ] || [ "$a" -eq $((b + 1)) ]; }
}

# field KEY FILE [LINE_PREFIX]: the value of KEY=VALUE on the first line of FILE starting
# with LINE_PREFIX (default "total ").
field() {
	sed -n "/^${3:-total }/{s/.* $1=\([^ ]*\).*/\1/p;q}" "$2"
}

# cbt_data MAP: the data bytes a .cbt map lists.
cbt_data() {
	awk '$3 == "data" { s += $2 } END { print s + 0 }' "$1"
}

# backup OUT [OPTIONS]: vsfs-backup of vm1 into $B, its output in OUT; fails on error.
backup() {
	local out=$1
	shift
	"$VSFS_BACKUP" "$@" "$m" vm1 "$B" >"$out" 2>"$out.err" || {
		cat "$out" "$out.err" >&2
		fail "vsfs-backup $*"
	}
}

# check_copied OUT SNAP PREV: every disk of the point copied exactly the data bytes of
# the .cbt map it used (PREV for incrementals, full otherwise), and the total is > 0.
check_copied() {
	local out=$1 snap=$2 prev=$3 sum=0 line path kind copied map want
	while read -r line; do
		path=$(sed 's/.* path=\([^ ]*\).*/\1/' <<<"$line")
		kind=$(sed 's/.* kind=\([^ ]*\).*/\1/' <<<"$line")
		copied=$(sed 's/.* copied=\([^ ]*\).*/\1/' <<<"$line")
		case $kind in
		full) map=$m/vm1/.cbt/$snap/full/$path ;;
		incremental) map=$m/vm1/.cbt/$snap/$prev/$path ;;
		absent) [ "$copied" = 0 ] || fail "absent $path copied $copied bytes"; continue ;;
		*) fail "unknown kind in: $line" ;;
		esac
		want=$(cbt_data "$map") || fail "cannot read $map"
		[ "$copied" = "$want" ] || fail "$snap: $path ($kind) copied $copied bytes, its map lists $want"
		sum=$((sum + want))
	done < <(grep '^disk ' "$out")
	[ "$(field copied "$out")" = "$sum" ] || fail "$snap: total copied $(field copied "$out"), maps list $sum"
	[ "$sum" -gt 0 ] || fail "$snap copied nothing"
	[ "$(field verified "$out")" = yes ] || fail "$snap was not verified"
}

# kind_of OUT PATH: the kind vsfs-backup reported for PATH.
kind_of() {
	grep "^disk path=$2 " "$1" | sed 's/.* kind=\([^ ]*\).*/\1/'
}

# restore_equals N SNAPDIR: vsfs-restore --point N gives exactly SNAPDIR's disks.
restore_equals() {
	local n=$1 snapdir=$2 dest=$T/restore.$1 f
	"$VSFS_RESTORE" --point "$n" "$B" "$dest" >"$T/restore.out" 2>&1 ||
		{ cat "$T/restore.out" >&2; fail "vsfs-restore --point $n"; }
	[ "$(cd "$snapdir" && find . -type f | sort)" = "$(cd "$dest" && find . -type f | sort)" ] ||
		fail "point $n restored other files than its snapshot holds: $(cd "$dest" && find . -type f)"
	while read -r f; do
		cmp "$snapdir/$f" "$dest/$f" || fail "point $n: $f differs from its snapshot"
	done < <(cd "$snapdir" && find . -type f)
}

# --- point 0 while the writer runs ---------------------------------------------------
python3 - "$m/vm1/a.img" "$m/vm1/sub/b.img" "$T/writer.stop" <<'PY' &
import os, random, sys
a, b = (os.open(p, os.O_WRONLY) for p in sys.argv[1:3])
rnd = random.Random(7)
i = 0
while not os.path.exists(sys.argv[3]):
    i += 1
    rec = b"%016d" % i
    os.pwrite(a, rec, 32 << 20)
    os.pwrite(b, rec, 32 << 20)
    os.pwrite(rnd.choice((a, b)), os.urandom(4096), (40 << 20) + rnd.randrange(4096) * 4096)
PY
writer=$!
PIDS+=("$writer")
sleep 0.5
# The check can fail: the two disks read 0.3 s apart are not from one instant.
cp "$m/vm1/a.img" "$T/a.early"
sleep 0.3
cp "$m/vm1/sub/b.img" "$T/b.late"
! same_instant "$T/a.early" "$T/b.late" || fail "the writer is too slow to tell instants apart"

backup "$T/out0" --keep-snapshot --verify
c0=$(counter "$m/vm1/a.img")
touch "$T/writer.stop"
wait "$writer" || fail "the writer failed"
snap0=$(field snapshot "$T/out0")
[ "$(field point "$T/out0")" = 0 ] || fail "the first point is not point 0: $(cat "$T/out0")"
[ "$(kind_of "$T/out0" a.img)" = full ] && [ "$(kind_of "$T/out0" sub/b.img)" = full ] ||
	fail "point 0 is not full: $(cat "$T/out0")"
check_copied "$T/out0" "$snap0" ""
restore_equals 0 "$m/vm1/.snapshots/$snap0"
same_instant "$T/restore.0/a.img" "$T/restore.0/sub/b.img" ||
	fail "point 0's disks are from different instants: A $(counter "$T/restore.0/a.img"), B $(counter "$T/restore.0/sub/b.img")"
[ "$c0" -gt $(($(counter "$T/restore.0/a.img") + 1)) ] || fail "the writer did not run during the backup"
used=$(du -k "$T/restore.0/a.img" | cut -f1)
[ "$used" -lt $((64 * 1024 / 2)) ] || fail "restored a.img is not thin: $used KiB used of 64 MiB"

# --- three incrementals ---------------------------------------------------------------
dd if=/dev/urandom of="$m/vm1/a.img" bs=4K count=5 seek=5000 conv=notrunc status=none
dd if=/dev/urandom of="$m/vm1/a.img" bs=64K count=3 seek=700 conv=notrunc status=none
fallocate -p -o $((3 * MiB)) -l $((2 * MiB)) "$m/vm1/sub/b.img"
backup "$T/out1" --keep-snapshot --verify
snap1=$(field snapshot "$T/out1")
[ "$(kind_of "$T/out1" a.img)" = incremental ] || fail "point 1 a.img is not incremental"
[ "$(sed -n 's/^disk path=sub\/b.img .* zeroed=\([0-9]*\).*/\1/p' "$T/out1")" -ge $((2 * MiB)) ] ||
	fail "point 1 does not record b.img's punched hole: $(cat "$T/out1")"
check_copied "$T/out1" "$snap1" "$snap0"

truncate -s 48M "$m/vm1/a.img"
dd if=/dev/urandom of="$m/vm1/sub/b.img" bs=1M count=1 seek=20 conv=notrunc status=none
backup "$T/out2" --keep-snapshot --verify
snap2=$(field snapshot "$T/out2")
[ "$(sed -n 's/^disk path=a.img .* size=\([0-9]*\).*/\1/p' "$T/out2")" = $((48 * MiB)) ] ||
	fail "point 2 does not record a.img's new size"
check_copied "$T/out2" "$snap2" "$snap1"

rm "$m/vm1/sub/b.img"
truncate -s 32M "$m/vm1/c.img"
dd if=/dev/urandom of="$m/vm1/c.img" bs=1M count=3 seek=4 conv=notrunc status=none
truncate -s 64M "$m/vm1/a.img"
dd if=/dev/urandom of="$m/vm1/a.img" bs=1M count=1 seek=60 conv=notrunc status=none
backup "$T/out3" --keep-snapshot --verify
snap3=$(field snapshot "$T/out3")
[ "$(kind_of "$T/out3" sub/b.img)" = absent ] || fail "point 3 does not record b.img as absent"
[ "$(kind_of "$T/out3" c.img)" = full ] || fail "point 3 does not copy the new c.img in full"
[ "$(kind_of "$T/out3" a.img)" = incremental ] || fail "point 3 a.img is not incremental"
check_copied "$T/out3" "$snap3" "$snap2"

for n in 1 2 3; do
	snap=snap$n
	restore_equals "$n" "$m/vm1/.snapshots/${!snap}"
done
used=$(du -k "$T/restore.3/c.img" | cut -f1)
[ "$used" -lt $((32 * 1024 / 2)) ] || fail "restored c.img is not thin: $used KiB used of 32 MiB"
"$VSFS_RESTORE" --point "$snap1" --disk sub/b.img "$B" "$T/one" >/dev/null || fail "restore by snapshot name"
[ "$(cd "$T/one" && find . -type f)" = ./sub/b.img ] || fail "--disk restored more than one disk"
cmp "$T/one/sub/b.img" "$m/vm1/.snapshots/$snap1/sub/b.img" || fail "--disk sub/b.img of point 1 differs"
"$VSFS_RESTORE" --list "$B" >"$T/list" || fail "vsfs-restore --list"
[ "$(grep -c '^point ' "$T/list")" = 4 ] || fail "--list shows other than 4 points: $(cat "$T/list")"

# --- a damaged backup is caught ---------------------------------------------------------
head -n1 "$B/points/0/0.extents" | grep -q ' disk a.img$' || fail "points/0/0 is not a.img"
cp "$B/points/0/0.data" "$T/good.data"
flip=$((1 * MiB + 100))
printf '\xa5' | dd of="$B/points/0/0.data" bs=1 seek="$flip" conv=notrunc status=none
cmp -s "$T/good.data" "$B/points/0/0.data" && fail "the byte was not changed"
rc=0
"$VSFS_RESTORE" "$B" "$T/bad" >"$T/bad.out" 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "restore of a damaged backup: exit $rc"
grep -q 'points/0/0.data: the extent at offset .* of a.img fails its checksum' "$T/bad.out" ||
	fail "restore did not name the damage: $(cat "$T/bad.out")"
[ ! -e "$T/bad/a.img.restoring" ] || fail "a failed restore left a.img.restoring"
sum_before=$(sha256sum <"$B/catalog")
rc=0
"$VSFS_BACKUP" --verify "$m" vm1 "$B" >"$T/bad.out" 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "--verify over a damaged chain: exit $rc"
grep -q "a.img: the backup differs from the snapshot at offset $flip" "$T/bad.out" ||
	fail "--verify did not name the damaged offset: $(cat "$T/bad.out")"
[ "$(sha256sum <"$B/catalog")" = "$sum_before" ] || fail "a failed --verify changed the catalogue"
[ ! -e "$B/points/4" ] || fail "a failed --verify kept its point"
cp "$T/good.data" "$B/points/0/0.data"

# --- hooks -----------------------------------------------------------------------------
snaps_before=$(ls "$m/vm1/.snapshots")
points_before=$(ls "$B/points")
rc=0
"$VSFS_BACKUP" --pre 'echo pre; exit 3' --post "touch $T/post.ran" "$m" vm1 "$B" >"$T/pre.out" 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "a failing --pre: exit $rc"
grep -q -- '--pre command .* exited with status 3' "$T/pre.out" || fail "no message for --pre: $(cat "$T/pre.out")"
[ "$(ls "$m/vm1/.snapshots")" = "$snaps_before" ] || fail "a failing --pre took a snapshot"
[ "$(sha256sum <"$B/catalog")" = "$sum_before" ] || fail "a failing --pre changed the catalogue"
[ "$(ls "$B/points")" = "$points_before" ] || fail "a failing --pre made a point directory"
[ ! -e "$T/post.ran" ] || fail "--post ran after a failing --pre"

# An interrupted run (SIGTERM while --pre runs) deletes the snapshot it took and changes
# nothing; point directories a run stopped by a crash would leave (made here) are
# removed by the next run.
dd if=/dev/urandom of="$m/vm1/c.img" bs=4K count=1 seek=10 conv=notrunc status=none
"$VSFS_BACKUP" --pre "touch $T/pre.started; sleep 1" "$m" vm1 "$B" >"$T/int.out" 2>&1 &
bpid=$!
for _ in $(seq 100); do [ -e "$T/pre.started" ] && break; sleep 0.1; done
kill -TERM "$bpid"
rc=0
wait "$bpid" || rc=$?
[ "$rc" = 1 ] || fail "an interrupted run: exit $rc: $(cat "$T/int.out")"
grep -q 'vsfs-backup: interrupted' "$T/int.out" || fail "no message for the interruption: $(cat "$T/int.out")"
[ "$(ls "$m/vm1/.snapshots")" = "$snaps_before" ] || fail "an interrupted run left its snapshot"
[ "$(sha256sum <"$B/catalog")" = "$sum_before" ] || fail "an interrupted run changed the catalogue"

mkdir -p "$B/points/4.partial" "$B/points/9"
touch "$B/points/4.partial/0.data"
backup "$T/out4" --pre "ls $m/vm1/.snapshots >$T/pre.ls" \
	--post "ls $m/vm1/.snapshots >$T/post.ls; echo \$VSFS_BACKUP_SNAPSHOT >$T/post.name"
snap4=$(field snapshot "$T/out4")
[ "$(cat "$T/post.name")" = "$snap4" ] || fail "--post was not told the snapshot's name"
grep -qx "$snap4" "$T/pre.ls" && fail "--pre ran after the snapshot"
grep -qx "$snap4" "$T/post.ls" || fail "--post ran before the snapshot: $(cat "$T/post.ls")"
[ ! -e "$m/vm1/.snapshots/$snap4" ] || fail "the run did not delete its snapshot"
[ ! -e "$B/points/4.partial" ] && [ ! -e "$B/points/9" ] || fail "the leftover point directories stay"
grep -q "removing $B/points/4.partial, left by an interrupted run" "$T/out4.err" ||
	fail "no note of the leftover removed: $(cat "$T/out4.err")"

dd if=/dev/urandom of="$m/vm1/c.img" bs=4K count=2 seek=20 conv=notrunc status=none
rc=0
"$VSFS_BACKUP" --post 'exit 5' "$m" vm1 "$B" >"$T/out5" 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "a failing --post: exit $rc"
grep -q -- '--post command .* exited with status 5' "$T/out5" || fail "no message for --post: $(cat "$T/out5")"
[ "$(field point "$T/out5")" = 5 ] || fail "the point of a run whose --post failed was not kept"
# From a deleted snapshot: vsfs keeps its changeId on record.
[ "$(kind_of "$T/out5" c.img)" = incremental ] || fail "point 5 is not incremental from a deleted snapshot"
[ "$(sed -n 's/^disk path=c.img .* copied=\([0-9]*\).*/\1/p' "$T/out5")" = 8192 ] ||
	fail "point 5 copied other than the 8 KiB written: $(cat "$T/out5")"

# --- datastore-wide snapshots -------------------------------------------------------------
mkdir "$m/.snapshots/ds1" || fail "mkdir .snapshots/ds1"
backup "$T/out6" --snapshot ds1 --verify
grep -q 'copying every disk in full' "$T/out6.err" || fail "no note of the full copy: $(cat "$T/out6.err")"
[ "$(kind_of "$T/out6" a.img)" = full ] || fail "point 6 is not full"
dd if=/dev/urandom of="$m/vm1/a.img" bs=4K count=3 seek=100 conv=notrunc status=none
mkdir "$m/.snapshots/ds2" || fail "mkdir .snapshots/ds2"
backup "$T/out7" --snapshot ds2 --verify
[ "$(kind_of "$T/out7" a.img)" = incremental ] || fail "point 7 is not incremental"
[ "$(field copied "$T/out7")" = "$(cbt_data "$m/.cbt/ds2/ds1/vm1/a.img")" ] ||
	fail "point 7 copied $(field copied "$T/out7"), the map lists $(cbt_data "$m/.cbt/ds2/ds1/vm1/a.img")"
[ "$(field copied "$T/out7")" = 12288 ] || fail "point 7 copied other than the 12 KiB written"
restore_equals 7 "$m/.snapshots/ds2/vm1"
[ -d "$m/.snapshots/ds2" ] || fail "--snapshot deleted a snapshot it did not take"
# A snapshot made later under point 7's name is not point 7: the datastore's record of
# ds2 answers for the new one, so the next run copies in full instead of missing what
# changed in between.
rmdir "$m/.snapshots/ds2"
dd if=/dev/urandom of="$m/vm1/a.img" bs=4K count=2 seek=200 conv=notrunc status=none
mkdir "$m/.snapshots/ds2" "$m/.snapshots/ds3" || fail "mkdir .snapshots/ds2 ds3"
backup "$T/out8" --snapshot ds3 --verify
grep -q "snapshot $m/.snapshots/ds2 is not point 7's" "$T/out8.err" ||
	fail "a reused name was not noticed: $(cat "$T/out8.err")"
[ "$(kind_of "$T/out8" a.img)" = full ] || fail "point 8 is not full"

# --- refusals -------------------------------------------------------------------------------
sum_before=$(sha256sum <"$B/catalog")
# refused CODE TEXT CMD...: CMD exits CODE and says TEXT.
refused() {
	local code=$1 text=$2 rc=0
	shift 2
	"$@" >"$T/refused.out" 2>&1 || rc=$?
	[ "$rc" = "$code" ] || fail "$*: exit $rc, expected $code: $(cat "$T/refused.out")"
	grep -q -- "$text" "$T/refused.out" || fail "$*: no '$text' in: $(cat "$T/refused.out")"
}
mkdir "$m/vm2"
truncate -s 1M "$m/vm2/d.img"
refused 1 "holds backups of directory 'vm1' of datastore" "$VSFS_BACKUP" "$m" vm2 "$B"
[ -z "$(ls "$m/vm2/.snapshots")" ] || fail "a refused run left a snapshot"
cp -r "$B" "$T/other"
sed -i '2s/.*/datastore 00000000-0000-0000-0000-000000000000/' "$T/other/catalog"
refused 1 "of datastore 00000000-0000-0000-0000-000000000000, not of" "$VSFS_BACKUP" "$m" vm1 "$T/other"
refused 1 "snapshot 'nosuch' not found" "$VSFS_BACKUP" --snapshot nosuch "$m" vm1 "$B"
mkdir -p "$T/plain/vm1"
refused 1 "$T/plain is not a vsfs mount" "$VSFS_BACKUP" "$T/plain" vm1 "$T/b2"
refused 1 "$T/missing: No such file" "$VSFS_BACKUP" "$T/missing" vm1 "$T/b2"
refused 1 "is not a directory" "$VSFS_BACKUP" "$m" vm9 "$B"
refused 2 "expected MOUNT VMDIR BACKUP_DIR" "$VSFS_BACKUP" "$m" vm1
refused 2 "not with --snapshot" "$VSFS_BACKUP" --snapshot ds1 --pre true "$m" vm1 "$B"
refused 1 "no point 'nosuch'" "$VSFS_RESTORE" --point nosuch "$B" "$T/r"
refused 1 "disk zz.img is not in point" "$VSFS_RESTORE" --disk zz.img "$B" "$T/r"
refused 2 "expected BACKUP_DIR DEST" "$VSFS_RESTORE" "$B"
[ "$(sha256sum <"$B/catalog")" = "$sum_before" ] || fail "a refused run changed the catalogue"

for s in "$snap0" "$snap1" "$snap2" "$snap3"; do rmdir "$m/vm1/.snapshots/$s" || fail "rmdir $s"; done
rmdir "$m/.snapshots/ds1" "$m/.snapshots/ds2" "$m/.snapshots/ds3" || fail "rmdir ds1 ds2 ds3"

# --- a previous point the datastore no longer has on record ---------------------------------
# With a history of 16 deleted snapshots, 17 more deletions drop point 9's record: the
# next run copies in full and says so.
unmount_wait "$m" "$DAEMON_PID"
mount_fg "$T/ds.img" "$m" -o cbt.history=16
backup "$T/out9"
for k in $(seq 17); do
	mkdir "$m/vm1/.snapshots/h$k" && rmdir "$m/vm1/.snapshots/h$k" || fail "snapshot h$k"
done
backup "$T/out10" --verify
grep -q "the datastore has no record of point 9's snapshot '$(field snapshot "$T/out9")'" "$T/out10.err" ||
	fail "no note of the forgotten point: $(cat "$T/out10.err")"
[ "$(kind_of "$T/out10" a.img)" = full ] || fail "point 10 is not full"
unmount_wait "$m" "$DAEMON_PID"
fsck_clean "$T/ds.img" "after backups"
echo "backup tool test passed: 11 points; the writer ran $c0 rounds, point 0 caught round $(counter "$T/restore.0/a.img")"
