#!/usr/bin/env bash
# Everything at once on one datastore for VSFS_STRESS_SECONDS (default 15):
#  - vm1: fio random writes of 4-64 KiB at QD16 with crc32c verification as it goes;
#  - vm2: rounds of writes, each followed by an incremental vsfs-backup (a snapshot of
#    the directory, its changed-block map, the copy, the snapshot's deletion) whose
#    restore must equal the disk;
#  - vm3: rounds of writes, each followed by a snapshot of the directory whose disk must
#    read back as the disk was; earlier snapshots are read again (they must not change)
#    and deleted in random order while the rest goes on, and some are cloned (cp) and
#    the clone compared;
#  - whole-datastore snapshots taken and deleted, .vsfs/stats read, all along.
# Then: every snapshot deleted, unmount, vsfs-fsck clean, remount, the disks read back
# as they were; and a kill -9 in the middle of writes and snapshot deletions, after which
# everything that returned before it is there (see the last part).
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
: "${VSFS_BACKUP:?VSFS_BACKUP must name the vsfs-backup binary}"
: "${VSFS_RESTORE:?VSFS_RESTORE must name the vsfs-restore binary}"
command -v fio >/dev/null || fail "fio is not installed (see README: install step)"
secs=${VSFS_STRESS_SECONDS:-15}

new_mount 3G
mkdir "$m/vm1" "$m/vm2" "$m/vm3" "$T/backup" "$T/sums"
truncate -s 64M "$m/vm2/b.img" "$m/vm3/c.img"
end=$((SECONDS + secs))

fio_job=(--name=stress --filename="$m/vm1/a.img" --size=128M --ioengine=io_uring --direct=1
	--rw=randwrite --bsrange=4k-64k --iodepth=16 --verify=crc32c --verify_state_save=0
	--do_verify=1 --verify_backlog=256 --serialize_overlap=1 --runtime="$secs" --time_based)
fio "${fio_job[@]}" >"$T/fio.log" 2>&1 &
fio_pid=$!
PIDS+=("$fio_pid")

# scribble FILE: a few random writes of random sizes at random offsets (within 64 MiB).
scribble() {
	for _ in 1 2 3 4 5; do
		dd if=/dev/urandom of="$1" bs=$((512 + RANDOM % 70000)) count=1 oflag=seek_bytes \
			seek=$(((RANDOM * 32768 + RANDOM) % (60 << 20))) conv=notrunc status=none ||
			return 1
	done
}

# backup_restore: vsfs-backup of vm2, then its latest point restored into $T/vm2.restored.
backup_restore() {
	rm -rf "$T/vm2.restored"
	"$VSFS_BACKUP" "$m" vm2 "$T/backup" && "$VSFS_RESTORE" "$T/backup" "$T/vm2.restored"
}

# vm2: incremental backups, each compared with the disk (nothing else writes it).
(
	rounds=0
	while [ "$SECONDS" -lt "$end" ] || [ "$rounds" -lt 2 ]; do
		scribble "$m/vm2/b.img" || { echo "vm2: write failed"; exit 1; }
		backup_restore >"$T/backup.out" 2>&1 || { cat "$T/backup.out"; exit 1; }
		cmp "$T/vm2.restored/b.img" "$m/vm2/b.img" || { echo "vm2: backup $rounds differs"; exit 1; }
		rounds=$((rounds + 1))
	done
	echo "vm2: $rounds backups"
) >"$T/vm2.log" 2>&1 &
vm2_pid=$!

# vm3: snapshots checked again later, cloned, deleted in random order.
(
	n=0
	live=()
	while [ "$SECONDS" -lt "$end" ] || [ "$n" -lt 6 ]; do
		scribble "$m/vm3/c.img" || { echo "vm3: write failed"; exit 1; }
		mkdir "$m/vm3/.snapshots/s$n" || { echo "vm3: snapshot s$n"; exit 1; }
		sum=$(sha256sum <"$m/vm3/c.img")
		echo "$sum" >"$T/sums/s$n"
		[ "$(sha256sum <"$m/vm3/.snapshots/s$n/c.img")" = "$sum" ] ||
			{ echo "vm3: snapshot s$n differs from the disk"; exit 1; }
		live+=("s$n")
		n=$((n + 1))
		if [ $((n % 3)) = 0 ]; then
			cp "$m/vm3/.snapshots/s$((n - 1))/c.img" "$m/vm3/clone.img" || { echo "vm3: clone"; exit 1; }
			[ "$(sha256sum <"$m/vm3/clone.img")" = "$(cat "$T/sums/s$((n - 1))")" ] ||
				{ echo "vm3: clone of s$((n - 1)) differs"; exit 1; }
		fi
		if [ "${#live[@]}" -gt 4 ]; then
			i=$((RANDOM % ${#live[@]}))
			s=${live[$i]}
			[ "$(sha256sum <"$m/vm3/.snapshots/$s/c.img")" = "$(cat "$T/sums/$s")" ] ||
				{ echo "vm3: snapshot $s changed"; exit 1; }
			rmdir "$m/vm3/.snapshots/$s" || { echo "vm3: delete $s"; exit 1; }
			live=("${live[@]:0:$i}" "${live[@]:$((i + 1))}")
		fi
	done
	for s in "${live[@]}"; do
		[ "$(sha256sum <"$m/vm3/.snapshots/$s/c.img")" = "$(cat "$T/sums/$s")" ] ||
			{ echo "vm3: snapshot $s changed"; exit 1; }
		rmdir "$m/vm3/.snapshots/$s" || { echo "vm3: delete $s"; exit 1; }
	done
	echo "vm3: $n snapshots"
) >"$T/vm3.log" 2>&1 &
vm3_pid=$!

# The whole datastore: snapshots of everything in flight, deleted two rounds later.
g=0
while [ "$SECONDS" -lt "$end" ]; do
	mkdir "$m/.snapshots/g$g" || fail "datastore snapshot g$g"
	[ "$g" -lt 2 ] || rmdir "$m/.snapshots/g$((g - 2))" || fail "delete datastore snapshot g$((g - 2))"
	stat_value "$m" io.write_requests >/dev/null || fail ".vsfs/stats"
	g=$((g + 1))
	sleep 0.5
done

rc=0
wait "$vm2_pid" || rc=$?
cat "$T/vm2.log"
[ "$rc" = 0 ] || fail "vm2 backups"
wait "$vm3_pid" || rc=$?
cat "$T/vm3.log"
[ "$rc" = 0 ] || fail "vm3 snapshots"
wait "$fio_pid" || { tail -n 30 "$T/fio.log" >&2; fail "fio write+verify"; }
grep -q "err= 0" "$T/fio.log" || { tail -n 30 "$T/fio.log" >&2; fail "fio reported errors"; }
for s in "$m"/.snapshots/g*; do rmdir "$s" || fail "delete $s"; done
echo "datastore: $g snapshots"
sums=$(cd "$m" && sha256sum vm1/a.img vm2/b.img vm3/c.img vm3/clone.img)

unmount_wait "$m" "$DAEMON_PID"
fsck_clean "$T/ds.img" "after the stress run"
mount_fg "$T/ds.img" "$m"
[ "$(cd "$m" && sha256sum vm1/a.img vm2/b.img vm3/c.img vm3/clone.img)" = "$sums" ] ||
	fail "the disks changed across the remount"
cmp "$T/vm2.restored/b.img" "$m/vm2/b.img" || fail "vm2 after remount differs from its backup"

# A crash in the middle of it: snapshots taken, some deleted (their release still
# running), writes in flight, then kill -9. After a remount the snapshots whose mkdir
# returned read as they were, the deleted ones stay deleted and their release finishes,
# the next backup of vm2 is still incremental, and fsck is clean.
for n in 0 1 2 3 4 5; do
	scribble "$m/vm3/c.img" || fail "vm3 write before the crash"
	mkdir "$m/vm3/.snapshots/k$n" || fail "snapshot k$n"
	sha256sum <"$m/vm3/c.img" >"$T/sums/k$n"
done
scribble "$m/vm2/b.img" || fail "vm2 write before the crash"
fio --name=crash --filename="$m/vm1/a.img" --size=128M --ioengine=io_uring --direct=1 \
	--rw=randwrite --bsrange=4k-64k --iodepth=16 --runtime=60 --time_based >/dev/null 2>&1 &
crash_fio=$!
PIDS+=("$crash_fio")
sleep 1
rmdir "$m/vm3/.snapshots/k1" "$m/vm3/.snapshots/k3" "$m/vm3/.snapshots/k4" || fail "delete before the crash"
kill -9 "$DAEMON_PID"
wait "$DAEMON_PID" 2>/dev/null
wait "$crash_fio" 2>/dev/null
fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
wait_device_free "$T/ds.img"
mount_fg "$T/ds.img" "$m"
[ "$(ls "$m/vm3/.snapshots" | tr '\n' ' ')" = "k0 k2 k5 " ] ||
	fail "snapshots after the crash: $(ls "$m/vm3/.snapshots")"
for k in k0 k2 k5; do
	[ "$(sha256sum <"$m/vm3/.snapshots/$k/c.img")" = "$(cat "$T/sums/$k")" ] ||
		fail "snapshot $k differs after the crash"
	rmdir "$m/vm3/.snapshots/$k" || fail "delete $k after the crash"
done
backup_restore >"$T/backup.out" 2>&1 || { cat "$T/backup.out" >&2; fail "backup after the crash"; }
grep -q "^disk path=b.img kind=incremental " "$T/backup.out" ||
	fail "backup after the crash: $(cat "$T/backup.out")"
cmp "$T/vm2.restored/b.img" "$m/vm2/b.img" || fail "backup after the crash differs"
for _ in $(seq 150); do
	[ "$(stat_value "$m" release_pending)" = 0 ] && break
	sleep 0.2
done
[ "$(stat_value "$m" release_pending)" = 0 ] || fail "the deletions did not finish after the crash"
unmount_wait "$m" "$DAEMON_PID"
fsck_clean "$T/ds.img" "after the crash"
echo "PASS: stress"
