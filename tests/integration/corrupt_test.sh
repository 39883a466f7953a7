#!/usr/bin/env bash
# Corrupted metadata: fsck and the daemon on a datastore whose metadata grains were
# damaged at random. They must never crash or hang, fsck -y must converge, and a mount
# must refuse with a message or serve reads that are right or fail.
#
# One population is made once: mkfs, mount, directories (one with enough names for
# several directory blocks and a two-level inode table), a dense disk, a sparse disk
# with a two-level map, a clone made with cp (copy_file_range shares the grains), the
# snapshots s1 and s2 taken between changes and a third one deleted with rmdir, and a
# per-directory snapshot. The sha256 of every file, live and in the snapshots, is
# recorded; then it is unmounted and must be clean.
#
# Each iteration copies the image (sparse) and lets vsfs-corrupt flip 1..6 bits in one
# live metadata grain chosen from the iteration's seed, either leaving the checksum
# broken ("plain") or resealing it so the block still decodes ("reseal"). Then, every
# step under `timeout`:
#   - one seed in four first mounts the damaged image read-only and reads every file;
#     another one in four mounts it read-write (read-only when refused), writes a new
#     file through the allocator (an error is allowed) and reads every file;
#   - vsfs-fsck -n, -y, -n. Each exits 0, 1 (only -y), 4 or 8. Convergence: after -y
#     exits 0 or 1 the second -n exits 0; after -y exits 4 it printed a problem: line
#     naming what it cannot repair and the second -n exits 4 too; after 8, 8 again;
#   - a read-write mount, or read-only when that is refused; when both are refused the
#     daemon must have said why on stderr. While mounted every directory is listed and
#     every recorded file read.
# A crash is a step killed by a signal or a sanitizer report in any output; a hang is a
# step that outlives its timeout. Both fail the test.
#
# What a read may return. With a plain flip the damaged block fails its checksum, so
# whatever reaches it gets an error: every read returns the recorded bytes or fails
# (EIO, EUCLEAN, ENOENT when a name cannot be looked up). vsfs-fsck -y never drops
# map entries or directory entries (it only rewrites counts, the block and refcount
# tables, inode counters and a superblock from its copy), so after it too a file either
# reads its recorded bytes or fails: zeros in place of data are wrong bytes. With a
# resealed flip the block is valid and says something else. In the blocks that carry
# the content itself (inode leaves and interiors, map leaves and interiors, directory
# blocks) that is indistinguishable from a change a user made: a file's size, a map
# slot pointing at another grain of data, a renamed entry. There, other bytes are
# allowed and counted. Everywhere else (superblocks, block table, refcount table,
# snapshot list, release list) other bytes are a failure: damage to the allocator's
# tables or the snapshot records must never change what a file reads, with one
# exception: a read-write mount of a datastore whose resealed refcount or block table
# says a grain in use is free may hand it out to the new file (only a full walk, which
# is fsck's, could tell), so after such a mount other bytes are allowed too.
#
# Environment: VSFS_CORRUPT_ITERATIONS (20), VSFS_CORRUPT_SEED_BASE (iteration i uses
# seed BASE+i; a new base per run by default), VSFS_CORRUPT_TIMEOUT (seconds per step,
# 120), VSFS_CORRUPT_KEEP (directory where a failure leaves its population image and
# sums, default /tmp), VSFS_CORRUPT_POP (a directory kept that way: use its population
# instead of making one, to replay a seed exactly), VSFS_CORRUPT_SAVE_POP (a directory
# where a new population is saved that way, for runs side by side).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd) || exit 1
. "$here/lib.sh" || exit 1
[ -n "${T:-}" ] && [ -d "$T" ] || exit 1

: "${VSFS_CORRUPT:?VSFS_CORRUPT must name the vsfs-corrupt binary}"
: "${VSFS_FSCK:?VSFS_FSCK must name the vsfs-fsck binary}"
iterations=${VSFS_CORRUPT_ITERATIONS:-20}
base=${VSFS_CORRUPT_SEED_BASE:-$(( $(date +%s) % 100000 * 1000 ))}
step_s=${VSFS_CORRUPT_TIMEOUT:-120}
keep=${VSFS_CORRUPT_KEEP:-${TMPDIR:-/tmp}}

# gen SEED BYTES: deterministic bytes.
gen() {
	python3 -c 'import random,sys; r=random.Random(int(sys.argv[1])); sys.stdout.buffer.write(r.randbytes(int(sys.argv[2])))' "$1" "$2"
}

# list_files DIR: the regular files under DIR, relative, skipping .snapshots, .cbt, .vsfs.
list_files() {
	(cd "$1" && find . \( -name .snapshots -o -name .cbt -o -name .vsfs \) -prune -o -type f -print) | sort
}

populate() {
	new_mount 128M
	mkdir -p "$m/vm1" "$m/vm2/sub" "$m/many"
	gen 1 $((3 << 20)) >"$m/vm1/dense.img"
	truncate -s 16M "$m/vm1/sparse.img"
	local off
	for off in 0 7 300 1000 2600 4093; do  # grains: several map leaves under an interior
		gen "$off" 12288 | dd of="$m/vm1/sparse.img" bs=4k seek="$off" conv=notrunc status=none
	done
	printf 'name = "vm2"\nmemory = 2048\n' >"$m/vm2/sub/vm2.conf"
	local i
	for i in $(seq 200); do  # several directory blocks; inode table of height 2
		printf 'file %d\n' "$i" >"$m/many/a-rather-long-file-name-$i.txt"
	done
	mkdir "$m/.snapshots/s1" || fail "mkdir .snapshots/s1"
	gen 2 40960 | dd of="$m/vm1/dense.img" bs=4k seek=100 conv=notrunc status=none
	cp "$m/vm1/dense.img" "$m/vm2/clone.img" || fail "clone"
	gen 3 8192 | dd of="$m/vm2/clone.img" bs=4k seek=5 conv=notrunc status=none
	mkdir "$m/vm1/.snapshots/vmsnap" || fail "per-directory snapshot"
	mkdir "$m/.snapshots/gone" || fail "mkdir .snapshots/gone"
	gen 4 4096 | dd of="$m/vm1/sparse.img" bs=4k seek=8 conv=notrunc status=none
	mkdir "$m/.snapshots/s2" || fail "mkdir .snapshots/s2"
	rm "$m/many/a-rather-long-file-name-7.txt"
	gen 5 4096 | dd of="$m/vm2/clone.img" bs=4k seek=700 conv=notrunc status=none
	rmdir "$m/.snapshots/gone" || fail "rmdir .snapshots/gone"
	# Paths to read, from the root of the mount, with their sums.
	{
		list_files "$m"
		local s
		for s in s1 s2; do list_files "$m/.snapshots/$s" | sed "s|^\./|./.snapshots/$s/|"; done
		list_files "$m/vm1/.snapshots/vmsnap" | sed "s|^\./|./vm1/.snapshots/vmsnap/|"
	} >"$T/paths"
	(cd "$m" && xargs -d '\n' sha256sum <"$T/paths") >"$T/sums" || fail "reading the population"
	[ "$(wc -l <"$T/sums")" -gt 600 ] || fail "the population has only $(wc -l <"$T/sums") files"
	unmount_wait "$m" "$DAEMON_PID"
	fsck_clean "$T/ds.img" "the population"
	mv "$T/ds.img" "$T/pop.img"
}

if [ -n "${VSFS_CORRUPT_POP:-}" ]; then
	cp --sparse=always "$VSFS_CORRUPT_POP/pop.img" "$T/pop.img" || fail "no $VSFS_CORRUPT_POP/pop.img"
	cp "$VSFS_CORRUPT_POP/sums" "$T/sums" || fail "no $VSFS_CORRUPT_POP/sums"
else
	populate
	if [ -n "${VSFS_CORRUPT_SAVE_POP:-}" ]; then
		mkdir -p "$VSFS_CORRUPT_SAVE_POP" && cp --sparse=always "$T/pop.img" "$T/sums" "$VSFS_CORRUPT_SAVE_POP/" ||
			fail "saving the population in $VSFS_CORRUPT_SAVE_POP"
	fi
fi
"$VSFS_CORRUPT" list "$T/pop.img" >"$T/live" || fail "vsfs-corrupt list"
echo "population: $(wc -l <"$T/sums") files; live metadata grains by type:" \
	"$(cut -d' ' -f2- "$T/live" | sort | uniq -c | awk '{c=$1; $1=""; printf "%s%s=%d", s, substr($0,2), c; s=", "}')"

# Counters for the closing line.
declare -A seen=()
count() { seen[$1]=$(( ${seen[$1]:-0} + 1 )); }

cur_seed=""
cur_desc=""
iter_fail() {
	echo "FAIL: seed $cur_seed ($cur_desc): $*" >&2
	local dir="$keep/vsfs-corrupt.$cur_seed"
	mkdir -p "$dir" && cp --sparse=always "$T/pop.img" "$dir/pop.img" && cp "$T/sums" "$dir/sums" &&
		echo "population kept in $dir" >&2
	echo "replay: VSFS_MOUNT=$VSFS_MOUNT VSFS_MKFS=$VSFS_MKFS VSFS_FSCK=$VSFS_FSCK" \
		"VSFS_CORRUPT=$VSFS_CORRUPT VSFS_CORRUPT_POP=$dir VSFS_CORRUPT_SEED_BASE=$cur_seed" \
		"VSFS_CORRUPT_ITERATIONS=1 bash $here/corrupt_test.sh" >&2
	exit 1
}

# sanitizer_check FILE WHAT: a sanitizer report in FILE is a crash.
sanitizer_check() {
	if grep -Eq 'ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error:|SUMMARY: .*Sanitizer' "$1"; then
		cat "$1" >&2
		iter_fail "$2: sanitizer report"
	fi
}

# timed_rc RC WHAT: a timeout or a signal is a failure.
timed_rc() {
	case $1 in
	124 | 137) iter_fail "$2: did not finish within ${step_s}s (hang)" ;;
	esac
	[ "$1" -lt 128 ] || iter_fail "$2: killed by signal $(($1 - 128))"
}

# run_fsck OPTION: runs vsfs-fsck OPTION on the iteration's image; its status in rc.
run_fsck() {
	rc=0
	timeout -k 5 "$step_s" "$VSFS_FSCK" "$1" "$img" >"$T/fsck$1.out" 2>"$T/fsck$1.err" || rc=$?
	timed_rc "$rc" "fsck $1"
	sanitizer_check "$T/fsck$1.err" "fsck $1"
	case $rc in
	0 | 4 | 8) ;;
	1) [ "$1" = -y ] || iter_fail "fsck $1 exited 1" ;;
	*) cat "$T/fsck$1.out" "$T/fsck$1.err" >&2; iter_fail "fsck $1 exited $rc" ;;
	esac
	if [ "$rc" = 8 ] && ! grep -q '^vsfs-fsck: ' "$T/fsck$1.err"; then
		cat "$T/fsck$1.err" >&2
		iter_fail "fsck $1 could not run and did not say why"
	fi
}

# try_mount DIR [options]: starts the daemon; 0 when mounted (pid in dpid), 1 when it
# refused (exited by itself, with a message).
try_mount() {
	local dir=$1
	shift
	dlog="$T/daemon.${#PIDS[@]}.log"
	"$VSFS_MOUNT" -f "$@" "$img" "$dir" >"$dlog" 2>&1 &
	dpid=$!
	PIDS+=("$dpid")
	MOUNTS+=("$dir")
	local waited=0
	while ! grep -q " $(readlink -f "$dir") fuse.vsfs " /proc/mounts; do
		if ! kill -0 "$dpid" 2>/dev/null; then
			local rc=0
			wait "$dpid" || rc=$?
			[ "$rc" -lt 128 ] || { cat "$dlog" >&2; iter_fail "vsfs-mount $* killed by signal $((rc - 128))"; }
			sanitizer_check "$dlog" "vsfs-mount $*"
			[ "$rc" -ne 0 ] || iter_fail "vsfs-mount $* exited 0 without mounting"
			grep -q '^vsfs-mount: ' "$dlog" || { cat "$dlog" >&2; iter_fail "vsfs-mount $* refused without a message"; }
			return 1
		fi
		waited=$((waited + 1))
		[ "$waited" -le $((step_s * 10)) ] || iter_fail "vsfs-mount $* neither mounted nor exited (hang)"
		sleep 0.1
	done
	return 0
}

# unmount_daemon DIR: unmounts and waits for the daemon; it must exit by itself,
# without a signal or a sanitizer report.
unmount_daemon() {
	local dir=$1 rc=0
	timeout -k 5 "$step_s" fusermount3 -u "$dir" || {
		timeout 10 umount -l "$dir" 2>/dev/null
		iter_fail "unmount of $dir failed (hang or busy)"
	}
	local waited=0
	while kill -0 "$dpid" 2>/dev/null; do
		waited=$((waited + 1))
		[ "$waited" -le $((step_s * 10)) ] || iter_fail "the daemon did not exit after unmount (hang)"
		sleep 0.1
	done
	wait "$dpid" || rc=$?
	[ "$rc" -lt 128 ] || { tail -n 50 "$dlog" >&2; iter_fail "the daemon died of signal $((rc - 128))"; }
	sanitizer_check "$dlog" "the daemon"
}

# read_all DIR WHEN: lists every directory and reads every recorded file (one python
# process: hundreds of files per iteration); counts the outcomes and fails on other bytes
# where they are not allowed.
read_all() {
	local dir=$1 when=$2 rc=0
	timeout -k 5 "$step_s" python3 - "$dir" "$T/sums" >"$T/reads" 2>"$T/reads.err" <<'PY' || rc=$?
import hashlib, os, sys
root, sums = sys.argv[1], sys.argv[2]
for d, subdirs, files in os.walk(root, onerror=lambda e: None):
    for f in files:
        try:
            os.lstat(os.path.join(d, f))
        except OSError:
            pass
for line in open(sums):
    want, path = line.rstrip("\n").split("  ", 1)
    try:
        # At most 64 MiB, above every recorded file: a size damaged into terabytes of
        # holes is other bytes, not hours of zeros.
        h = hashlib.sha256()
        with open(os.path.join(root, path), "rb") as f:
            for _ in range(64):
                b = f.read(1 << 20)
                if not b:
                    break
                h.update(b)
            else:
                h.update(f.read(1))
    except OSError as e:
        print("error", path, e.errno)
        continue
    print("right" if h.hexdigest() == want else "other", path)
PY
	timed_rc "$rc" "reading the mount ($when)"
	[ "$rc" = 0 ] || { cat "$T/reads.err" >&2; iter_fail "reading the mount ($when) failed: exit $rc"; }
	local verdict path
	while read -r verdict path; do
		case $verdict in
		right) count "read right" ;;
		error) count "read error" ;;
		other)
			[ "$changes_allowed" = 1 ] || iter_fail "${path% *} read other bytes ($when) without an error"
			count "read other bytes (resealed content block)"
			;;
		esac
	done <"$T/reads"
}

# write_new DIR: a new directory and file with 1 MiB written and fsync'd, through the
# allocator; failing with an error is allowed, hanging or crashing is not.
write_new() {
	local rc=0
	timeout -k 5 "$step_s" python3 - "$1" >"$T/write.out" 2>&1 <<'PY' || rc=$?
import os, sys
try:
    d = os.path.join(sys.argv[1], "new")
    os.mkdir(d)
    fd = os.open(os.path.join(d, "new.img"), os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        for i in range(16):
            os.pwrite(fd, bytes([i + 1]) * 65536, i * 65536 * 3)
        os.fsync(fd)
    finally:
        os.close(fd)
    print("written")
except OSError as e:
    print("error", e.errno)
PY
	timed_rc "$rc" "writing a new file"
	[ "$rc" = 0 ] || { cat "$T/write.out" >&2; iter_fail "writing a new file failed: exit $rc"; }
	count "write $(cut -d' ' -f1 "$T/write.out")"
}

img=$T/it.img
mnt=$T/mnt
mkdir -p "$mnt"
for i in $(seq 0 $((iterations - 1))); do
	cur_seed=$((base + i))
	cp --sparse=always "$T/pop.img" "$img" || fail "copying the population"
	cur_desc=$("$VSFS_CORRUPT" flip "$img" "$cur_seed") || fail "vsfs-corrupt flip $cur_seed"
	mode=${cur_desc%% *}
	type=$(sed 's/.*(\(.*\)).*/\1/' <<<"$cur_desc")
	count "mode $mode"
	count "type $type"
	changes_allowed=0
	if [ "$mode" = reseal ]; then
		case $type in *inode* | *map* | *directory* | *dir*) changes_allowed=1 ;; esac
	fi

	before=none
	if [ $((cur_seed % 4)) = 1 ]; then
		before=refused
		if try_mount "$mnt" -o ro; then
			before=ro
			read_all "$mnt" "read-only, before fsck"
			unmount_daemon "$mnt"
		fi
	elif [ $((cur_seed % 4)) = 3 ]; then
		before=refused
		if try_mount "$mnt"; then
			before=rw
			write_new "$mnt"
			# A valid-looking refcount or block table may hand out grains in use.
			if [ "$mode" = reseal ]; then
				case $type in "refcount table" | "block table") changes_allowed=1 ;; esac
			fi
			read_all "$mnt" "read-write with a write, before fsck"
			unmount_daemon "$mnt"
		elif try_mount "$mnt" -o ro; then
			before=ro
			read_all "$mnt" "read-only, before fsck"
			unmount_daemon "$mnt"
		fi
	fi
	count "mount before fsck: $before"

	run_fsck -n; n1=$rc
	count "fsck -n $n1"
	run_fsck -y; y=$rc
	count "fsck -y $y"
	run_fsck -n; n2=$rc
	case $y in
	0 | 1) [ "$n2" = 0 ] || { cat "$T/fsck-y.out" "$T/fsck-n.out" >&2; iter_fail "fsck -y exited $y but the next -n exited $n2"; } ;;
	4)
		grep -q '^problem: ' "$T/fsck-y.out" || { cat "$T/fsck-y.out" >&2; iter_fail "fsck -y exited 4 naming no problem"; }
		[ "$n2" = 4 ] || { cat "$T/fsck-y.out" "$T/fsck-n.out" >&2; iter_fail "fsck -y exited 4 but the next -n exited $n2"; }
		;;
	8) [ "$n2" = 8 ] || iter_fail "fsck -y could not run but the next -n exited $n2" ;;
	esac

	if try_mount "$mnt"; then
		mounted=rw
		read_all "$mnt" "read-write, after fsck -y"
		unmount_daemon "$mnt"
	elif try_mount "$mnt" -o ro; then
		mounted=ro
		read_all "$mnt" "read-only, after fsck -y"
		unmount_daemon "$mnt"
	else
		mounted=refused
	fi
	count "mount after fsck: $mounted"
	echo "seed $cur_seed: $cur_desc; before fsck: $before; fsck -n $n1, -y $y, -n $n2; mount $mounted"
	# Only the daemons still running need cleanup's attention.
	PIDS=()
	MOUNTS=("$mnt")
done

# Every randomised category must have been reached.
if [ "$iterations" -ge 8 ]; then
	for k in "mode plain" "mode reseal" "read right"; do
		[ -n "${seen[$k]:-}" ] || fail "$iterations iterations never reached '$k'"
	done
fi
summary=""
for k in $(printf '%s\n' "${!seen[@]}" | sort | tr ' ' '~'); do
	summary+="${summary:+, }${k//\~/ }=${seen[${k//\~/ }]}"
done
echo "corrupt: $iterations iterations (seeds $base..$((base + iterations - 1))): $summary"
