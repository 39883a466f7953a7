#!/usr/bin/env bash
# vsfs-mkfs and vsfs-fsck on real files and, when losetup works, a loop device.
# Usage: admin_test.sh PATH/TO/vsfs-mkfs PATH/TO/vsfs-fsck
#
# Every refusal must leave the device byte for byte unchanged (sha256sum before and
# after). Everything this script starts or attaches (temporary directory, loop device,
# the background lock holder) is released by the EXIT trap, whatever happens.
set -u

MKFS=${1:?usage: admin_test.sh VSFS_MKFS VSFS_FSCK}
FSCK=${2:?usage: admin_test.sh VSFS_MKFS VSFS_FSCK}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/vsfs-admin.XXXXXX")
LOOP=""
HOLDER=""
cleanup() {
  if [ -n "$HOLDER" ]; then
    kill "$HOLDER" 2>/dev/null
    wait "$HOLDER" 2>/dev/null
  fi
  if [ -n "$LOOP" ]; then
    losetup -d "$LOOP" 2>/dev/null
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

failures=0
pass() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

hash_of() { sha256sum "$1" | cut -d' ' -f1; }

# expect_status WANT DESCRIPTION -- COMMAND...: runs COMMAND, keeps its stderr in $ERR.
ERR=""
OUT=""
expect_status() {
  local want=$1 what=$2
  shift 3
  local rc
  OUT=$("$@" 2>"$TMP/stderr")
  rc=$?
  ERR=$(cat "$TMP/stderr")
  if [ "$rc" -eq "$want" ]; then
    pass "$what (exit $rc)"
  else
    fail "$what: exit $rc, expected $want; stdout: $OUT; stderr: $ERR"
  fi
}

expect_in() {  # expect_in TEXT NEEDLE DESCRIPTION
  case "$1" in
    *"$2"*) pass "$3" ;;
    *) fail "$3: '$2' not in: $1" ;;
  esac
}

expect_unchanged() {  # expect_unchanged FILE HASH DESCRIPTION
  local now
  now=$(hash_of "$1")
  if [ "$now" = "$2" ]; then pass "$3: device unchanged"; else fail "$3: device changed"; fi
}

# ---- the programs answer --help and --version ----
expect_status 0 "vsfs-mkfs --version" -- "$MKFS" --version
expect_in "$OUT" "vsfs-mkfs 0.1.0" "vsfs-mkfs version text"
expect_status 0 "vsfs-fsck --version" -- "$FSCK" --version
expect_in "$OUT" "vsfs-fsck 0.1.0" "vsfs-fsck version text"
expect_status 0 "vsfs-mkfs --help" -- "$MKFS" --help
expect_in "$OUT" "usage: vsfs-mkfs" "vsfs-mkfs usage text"
expect_status 0 "vsfs-fsck --help" -- "$FSCK" --help
expect_in "$OUT" "usage: vsfs-fsck" "vsfs-fsck usage text"
expect_status 2 "vsfs-mkfs with a bad size" -- "$MKFS" -s 12Q "$TMP/never.img"
[ -e "$TMP/never.img" ] && fail "a bad size created the file" || pass "a bad size created nothing"
expect_status 8 "vsfs-fsck -n -y" -- "$FSCK" -n -y "$TMP/never.img"

# ---- a new 1 GiB file ----
DS=$TMP/ds.img
expect_status 0 "mkfs -s 1G on a new file" -- bash -c 'umask 022; exec "$@"' umask "$MKFS" -s 1G "$DS"
expect_in "$OUT" "uuid:" "mkfs prints a summary"
[ "$(stat -c %a "$DS")" = 600 ] && pass "the new image is 0600 under umask 022" ||
  fail "the new image is $(stat -c %a "$DS")"
size=$(stat -c %s "$DS")
[ "$size" -eq $((1 << 30)) ] && pass "file is 1 GiB" || fail "file is $size bytes"
expect_status 0 "fsck -n on the new datastore" -- "$FSCK" -n "$DS"
expect_in "$OUT" "clean" "fsck says clean"

h=$(hash_of "$DS")
expect_status 1 "mkfs again without -f" -- "$MKFS" "$DS"
expect_in "$ERR" "holds a vsfs datastore; use -f to overwrite it" "refusal names the datastore"
expect_unchanged "$DS" "$h" "mkfs without -f"
expect_status 1 "mkfs -s 2G again without -f" -- "$MKFS" -s 2G "$DS"
expect_unchanged "$DS" "$h" "mkfs -s without -f"
[ "$(stat -c %s "$DS")" -eq $((1 << 30)) ] && pass "refused mkfs -s did not grow the file" ||
  fail "refused mkfs -s grew the file"

expect_status 0 "mkfs -f over the datastore" -- "$MKFS" -f "$DS"
[ "$(hash_of "$DS")" != "$h" ] && pass "mkfs -f wrote a new datastore" || fail "mkfs -f changed nothing"
expect_status 0 "fsck -n after mkfs -f" -- "$FSCK" -n "$DS"

# ---- -s grows a smaller file ----
GROW=$TMP/grow.img
truncate -s 10M "$GROW"
expect_status 0 "mkfs -s 128M grows a 10M file" -- "$MKFS" -s 128M "$GROW"
[ "$(stat -c %s "$GROW")" -eq $((128 << 20)) ] && pass "file grown to 128 MiB" || fail "file not grown"
expect_status 0 "fsck -n on the grown file" -- "$FSCK" -n "$GROW"

# ---- refusals ----
SMALL=$TMP/small.img
truncate -s 32M "$SMALL"
h=$(hash_of "$SMALL")
expect_status 1 "mkfs on a 32M file" -- "$MKFS" "$SMALL"
expect_in "$ERR" "a datastore needs at least 64 MiB" "refusal names the minimum"
expect_unchanged "$SMALL" "$h" "mkfs on a too-small file"
expect_status 1 "mkfs -s 32M on a new file" -- "$MKFS" -s 32M "$TMP/small2.img"
[ -e "$TMP/small2.img" ] && fail "too-small -s created the file" || pass "too-small -s created nothing"

expect_status 1 "mkfs on a missing file without -s" -- "$MKFS" "$TMP/missing.img"
expect_in "$ERR" "no such file" "refusal names the missing device"
[ -e "$TMP/missing.img" ] && fail "mkfs created a file without -s" || pass "no file created"

EXT=$TMP/ext4.img
truncate -s 70M "$EXT"
mkfs.ext4 -q -F "$EXT" >/dev/null 2>&1 || { echo "FAIL: mkfs.ext4 (e2fsprogs) failed"; exit 1; }
h=$(hash_of "$EXT")
expect_status 1 "mkfs on an ext4 filesystem" -- "$MKFS" "$EXT"
expect_in "$ERR" "holds ext4 (a filesystem), found by libblkid" "refusal names ext4"
expect_unchanged "$EXT" "$h" "mkfs on ext4"
expect_status 1 "mkfs -s 128M on an ext4 filesystem" -- "$MKFS" -s 128M "$EXT"
expect_unchanged "$EXT" "$h" "mkfs -s on ext4"

# ---- in use: another process holds the file's lock ----
LOCKED=$TMP/locked.img
expect_status 0 "mkfs for the lock test" -- "$MKFS" -s 128M "$LOCKED"
h=$(hash_of "$LOCKED")
if command -v flock >/dev/null 2>&1; then
  # The subshell takes the lock on fd 9 and becomes `sleep`, so killing $HOLDER drops it.
  ( exec 9<"$LOCKED"; flock -x 9; exec sleep 30 ) &
  HOLDER=$!
  for _ in $(seq 1 50); do
    flock -n "$LOCKED" true 2>/dev/null || break
    sleep 0.1
  done
  expect_status 1 "mkfs -f on a file another process holds" -- "$MKFS" -f "$LOCKED"
  expect_in "$ERR" "in use" "refusal says in use"
  expect_unchanged "$LOCKED" "$h" "mkfs on a held file"
  expect_status 8 "fsck on a file another process holds" -- "$FSCK" -n "$LOCKED"
  expect_in "$ERR" "in use" "fsck says in use"
  kill "$HOLDER" 2>/dev/null
  wait "$HOLDER" 2>/dev/null
  HOLDER=""
  expect_status 0 "fsck once the lock is gone" -- "$FSCK" -n "$LOCKED"
else
  echo "skip: flock(1) is not installed; in-use refusal not tested"
fi

# ---- fsck cannot run ----
ZERO=$TMP/zero.img
truncate -s 100M "$ZERO"
expect_status 8 "fsck on a zeroed file" -- "$FSCK" -n "$ZERO"
expect_in "$ERR" "vsfs-fsck:" "fsck error line is prefixed"
expect_status 8 "fsck -y on a zeroed file" -- "$FSCK" -y "$ZERO"
[ "$(hash_of "$ZERO")" = "$(head -c $((100 << 20)) /dev/zero | sha256sum | cut -d' ' -f1)" ] &&
  pass "fsck -y wrote nothing to a non-datastore" || fail "fsck -y wrote to a non-datastore"
expect_status 8 "fsck on a missing file" -- "$FSCK" -n "$TMP/missing.img"

# ---- fsck -y rebuilds a smashed primary superblock ----
expect_status 0 "mkfs for the repair test" -- "$MKFS" -f "$DS"
dd if=/dev/zero of="$DS" bs=4096 count=1 conv=notrunc status=none
h=$(hash_of "$DS")
expect_status 4 "fsck -n with the primary superblock zeroed" -- "$FSCK" -n "$DS"
expect_in "$OUT" "primary superblock" "fsck names the primary superblock"
expect_unchanged "$DS" "$h" "fsck -n"
expect_status 1 "fsck -y repairs it" -- "$FSCK" -y "$DS"
expect_in "$OUT" "repaired: primary superblock rewritten from its copy" "fsck reports the repair"
expect_status 0 "fsck -n after the repair" -- "$FSCK" -n "$DS"
dd if=/dev/zero of="$DS" bs=4096 count=1 conv=notrunc status=none
dd if=/dev/zero of="$DS" bs=4096 seek=255 count=1 conv=notrunc status=none
expect_status 8 "fsck with both superblocks zeroed" -- "$FSCK" -y "$DS"
expect_in "$ERR" "superblock" "the error names the superblocks"

# ---- a loop device ----
IMG=$TMP/loop.img
truncate -s 256M "$IMG"
if LOOP=$(losetup -f --show "$IMG" 2>/dev/null) && [ -b "$LOOP" ]; then
  expect_status 0 "mkfs on loop device $LOOP" -- "$MKFS" "$LOOP"
  expect_status 0 "fsck -n on the loop device" -- "$FSCK" -n "$LOOP"
  expect_status 0 "fsck -y on the loop device" -- "$FSCK" -y "$LOOP"
  h=$(hash_of "$LOOP")
  expect_status 1 "mkfs again on the loop device" -- "$MKFS" "$LOOP"
  expect_unchanged "$LOOP" "$h" "mkfs on the loop device without -f"
  expect_status 1 "mkfs -s 1G on the 256M loop device" -- "$MKFS" -f -s 1G "$LOOP"
  expect_unchanged "$LOOP" "$h" "mkfs -s too large on a block device"
  expect_status 0 "mkfs -f -s 128M on the loop device" -- "$MKFS" -f -s 128M "$LOOP"
  expect_status 0 "fsck -n on the 128M datastore on a 256M device" -- "$FSCK" -n "$LOOP"
  losetup -d "$LOOP" && LOOP=""
else
  LOOP=""
  echo "skip: losetup could not attach a loop device; block-device part not tested"
fi

# mkfs -C FD: "STEP DONE TOTAL DEVICE" lines in bytes, the six steps in order, DONE never
# above TOTAL, each step ending at its TOTAL; the data area's step covers the data area
# (a 40 GiB sparse file: discarded in 1 GiB chunks, so several lines).
img=$TMP/progress.img
if "$MKFS" -s 40G -C 3 "$img" 3>"$TMP/mkfs-progress.txt" >/dev/null 2>&1; then
  if python3 - "$TMP/mkfs-progress.txt" "$img" <<'PY'; then pass "mkfs -C 3 progress lines"; else fail "mkfs -C 3 progress lines: $(head -3 "$TMP/mkfs-progress.txt")"; fi
import sys
lines = [l.split() for l in open(sys.argv[1])]
assert lines, "no progress lines"
seen, last, count = [], {}, {}
for f in lines:
    assert len(f) == 4 and f[3] == sys.argv[2], f
    p, done, total = int(f[0]), int(f[1]), int(f[2])
    assert done <= total, f
    if not seen or seen[-1] != p:
        seen.append(p)
    last[p] = (done, total)
    count[p] = count.get(p, 0) + 1
assert seen == list(range(1, 7)), seen
for p, (done, total) in last.items():
    assert done == total, (p, done, total)
assert last[4][1] > 39 << 30, last[4]      # the data area, nearly all of 40 GiB
assert count[4] >= 2, count                 # reported along the way
PY
else
  fail "mkfs -s 40G -C 3 exited nonzero"
fi
expect_status 2 "mkfs -C with a bad descriptor number" -- "$MKFS" -s 1G -C x "$TMP/never2.img"
rm -f "$img"

# fsck -C FD: "PASS DONE TOTAL DEVICE" lines, every pass in order (7 checking, 8 with
# -y), DONE never above TOTAL when TOTAL is known, each pass ending at its TOTAL.
expect_status 0 "mkfs for the progress check" -- "$MKFS" -s 1G "$img"
for mode in -n -y; do
  if "$FSCK" "$mode" -C 3 "$img" 3>"$TMP/progress.txt" >/dev/null 2>&1; then
    if python3 - "$TMP/progress.txt" "$img" "$mode" <<'PY'; then pass "fsck $mode -C 3 progress lines"; else fail "fsck $mode -C 3 progress lines: $(head -3 "$TMP/progress.txt")"; fi
import sys
lines = [l.split() for l in open(sys.argv[1])]
want_passes = 8 if sys.argv[3] == "-y" else 7
assert lines, "no progress lines"
seen, last = [], {}
for f in lines:
    assert len(f) == 4 and f[3] == sys.argv[2], f
    p, done, total = int(f[0]), int(f[1]), int(f[2])
    assert total == 0 or done <= total, f
    if not seen or seen[-1] != p:
        seen.append(p)
    last[p] = (done, total)
assert seen == list(range(1, want_passes + 1)), seen
for p, (done, total) in last.items():
    assert done == total, (p, done, total)
PY
  else
    fail "fsck $mode -C 3 exited nonzero"
  fi
done
expect_status 8 "fsck -C with a bad descriptor number" -- "$FSCK" -n -C x "$img"

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"
exit 0
