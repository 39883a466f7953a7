#!/usr/bin/env bash
# Everything at once on one datastore for VSFS_STRESS_SECONDS (default 15):
#  - vm1: fio random writes of 4-64 KiB at QD16 with crc32c verification as it goes;
#  - vm2: rounds of writes, each followed by an incremental backup (a snapshot of the
#    directory, its changed-block map, the copy, the snapshot's deletion) that must equal
#    the disk;
#  - vm3: rounds of writes, each followed by a snapshot of the directory whose disk must
#    read back as the disk was; earlier snapshots are read again (they must not change)
#    and deleted in random order while the rest goes on, and some are cloned (cp) and
#    the clone compared;
#  - whole-datastore snapshots taken and deleted, .vsfs/stats read, all along.
# Then: every snapshot deleted, unmount, vsfs-fsck clean, remount, the disks read back
# as they were.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
examples=$(cd "$here/../../examples" && pwd)
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

# vm2: incremental backups, each compared with the disk (nothing else writes it).
(
	rounds=0
	while [ "$SECONDS" -lt "$end" ] || [ "$rounds" -lt 2 ]; do
		scribble "$m/vm2/b.img" || { echo "vm2: write failed"; exit 1; }
		bash "$examples/backup-incremental.sh" "$m" vm2/b.img "$T/backup" >"$T/backup.out" 2>&1 ||
			{ cat "$T/backup.out"; exit 1; }
		cmp "$T/backup/b.img" "$m/vm2/b.img" || { echo "vm2: backup $rounds differs"; exit 1; }
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
cmp "$T/backup/b.img" "$m/vm2/b.img" || fail "vm2 after remount differs from its backup"
unmount_wait "$m" "$DAEMON_PID"
echo "PASS: stress"
