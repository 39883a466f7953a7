#!/usr/bin/env bash
# check_layers.sh SRC_DIR LIB_DIR...: the layers of src/ depend downward only
# (STYLE.md): util < device, format < meta < disk < io < fuse < the programs in mount/.
#
# Two checks, because either alone can be fooled:
# 1. Includes: a file of src/LAYER includes only headers of LAYER and the layers below
#    it (and include/vsfs); nothing in src/ or include/ includes a header of mount/.
# 2. Symbols: every vsfs symbol a layer's static library uses is defined in that library
#    or one below it. A static library may call a function that only a program defines
#    (the program's link resolves it): no include shows that, the symbol table does.
# LIB_DIR...: the libraries, named libvsfs_LAYER.a, in any of these directories.
# Exit 0 when both hold, 1 with each violation on stderr.
set -euo pipefail
src=$1
shift
layers=(util device format meta disk io fuse)
declare -A allowed=(
  [util]="util"
  [device]="util device"
  [format]="util format"
  [meta]="util device format meta vsfs"
  [disk]="util device format meta disk vsfs"
  [io]="util device format meta disk io vsfs"
  [fuse]="util device format meta disk io fuse vsfs"
)
fail=0

for layer in "${layers[@]}"; do
  while IFS= read -r line; do
    file=${line%%:*}
    dir=$(sed -E 's/.*#include "([a-z_]+)\/.*/\1/' <<<"$line")
    if [[ " ${allowed[$layer]} " != *" $dir "* ]]; then
      echo "layering: $file (layer $layer) includes a header of $dir: $line" >&2
      fail=1
    fi
  done < <(grep -rHE '^#include "[a-z_]+/' "$src/src/$layer" || true)
done
if grep -rnE '^#include "mount/' "$src/src" "$src/include" >&2; then
  echo "layering: the lines above include a program's header from src/ or include/" >&2
  fail=1
fi

lib_of() {
  local d
  for d in "${lib_dirs[@]}"; do
    if [[ -f $d/libvsfs_$1.a ]]; then echo "$d/libvsfs_$1.a"; return; fi
  done
  echo "layering: libvsfs_$1.a not found in ${lib_dirs[*]}" >&2
  exit 2
}
lib_dirs=("$@")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
below=()
for layer in "${layers[@]}"; do
  below+=("$layer")
  libs=()
  for b in "${below[@]}"; do libs+=("$(lib_of "$b")"); done
  # Weak and inline definitions count as defined (nm -g --defined-only lists them).
  nm -g --defined-only "${libs[@]}" 2>/dev/null | awk 'NF >= 3 { print $NF }' | sort -u >"$tmp/defined"
  nm -u "$(lib_of "$layer")" | awk '{ print $NF }' | grep -E '^_Z[A-Z]*4vsfs' | sort -u >"$tmp/used" || true
  if [[ ! -s $tmp/defined ]]; then
    echo "layering: no symbols read from ${libs[*]}" >&2
    exit 2
  fi
  comm -23 "$tmp/used" "$tmp/defined" >"$tmp/missing"
  if [[ -s $tmp/missing ]]; then
    echo "layering: libvsfs_$layer.a uses vsfs symbols defined only above it:" >&2
    c++filt <"$tmp/missing" | sed 's/^/  /' >&2
    fail=1
  fi
done
[[ $fail == 0 ]] && echo "layering: ${#layers[@]} layers, includes and symbols point downward"
exit $fail
