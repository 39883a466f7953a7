# shellcheck shell=bash
# Shared set-up of the tests/perf benchmarks (sourced after `bin` is set): a private
# work directory under /var/tmp with a mount point, unmounted and removed on exit, and
# helpers to read .vsfs/stats and the clock. Sets `work` and `m`.
work=$(mktemp -d /var/tmp/vsfs-perf.XXXXXX)
m=$work/mnt
mkdir -p "$m"
perf_cleanup() { mountpoint -q "$m" && fusermount3 -u "$m"; sleep 0.5; rm -rf "$work"; }
trap perf_cleanup EXIT
# st EXPR: a value of the mount's .vsfs/stats, EXPR in Python over the JSON `d`.
st() { python3 -c "import json; d=json.load(open('$m/.vsfs/stats')); print($1)"; }
us() { echo $(( $(date +%s%N) / 1000 )); }
