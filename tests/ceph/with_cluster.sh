#!/usr/bin/env bash
# with_cluster.sh COMMAND [ARGS...]: runs COMMAND against a throw-away Ceph cluster of
# its own (cluster.sh), with VSFS_CEPH_CONF naming the cluster's ceph.conf, and stops
# the cluster afterwards whatever COMMAND did. Exits with COMMAND's status, or 1 when the
# cluster does not start.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# A short path: the daemons' admin sockets live under it (107 bytes at most).
dir=$(mktemp -d /tmp/vsfs-ceph.XXXXXX)
stop() {
	bash "$here/cluster.sh" stop "$dir" || true
	rm -rf "$dir"
}
trap stop EXIT
trap "exit 143" TERM INT
conf=$(bash "$here/cluster.sh" start "$dir") || { echo "FAIL: the test cluster did not start" >&2; exit 1; }
VSFS_CEPH_CONF=$conf "$@"
