#!/usr/bin/env bash
# Namespace operations through vsfs-mount compared with the same operations on a tmpfs
# directory (ns_ops.py prints each result or errno), plus the refusals of the synthetic
# `.vsfs` directory, which only vsfs has.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

new_mount 1G

ref=$(mktemp -d /dev/shm/vsfs-ns.XXXXXX 2>/dev/null || mktemp -d "$T/ref.XXXXXX")
CLEAN_DIRS+=("$ref")
python3 "$here/ns_ops.py" "$ref" >"$T/ref.txt" || fail "ns_ops.py on the reference directory"
mkdir "$T/mnt/ns"
python3 "$here/ns_ops.py" "$T/mnt/ns" >"$T/vsfs.txt" || fail "ns_ops.py on vsfs"
if ! diff -u "$T/ref.txt" "$T/vsfs.txt"; then
	fail "namespace results differ from the reference directory"
fi
[ "$(wc -l <"$T/vsfs.txt")" -gt 50 ] || fail "ns_ops.py printed too little"

# The root lists .vsfs, which cannot be created, removed or renamed.
python3 - "$T/mnt" <<'PY' >"$T/synthetic.txt" || fail "synthetic checks crashed"
import errno, os, sys
m = sys.argv[1]
def show(what, fn):
    try:
        fn(); print(f"{what}: ok")
    except OSError as e:
        print(f"{what}: {errno.errorcode[e.errno]}")
print("root lists .vsfs:", ".vsfs" in os.listdir(m))
print(".vsfs lists:", sorted(os.listdir(m + "/.vsfs")))
show("mkdir .vsfs", lambda: os.mkdir(m + "/.vsfs"))
show("create .vsfs", lambda: os.close(os.open(m + "/.vsfs", os.O_CREAT | os.O_EXCL | os.O_WRONLY)))
show("rmdir .vsfs", lambda: os.rmdir(m + "/.vsfs"))
show("unlink .vsfs", lambda: os.unlink(m + "/.vsfs"))
show("rename .vsfs", lambda: os.rename(m + "/.vsfs", m + "/x"))
os.mkdir(m + "/victim")
show("rename onto .vsfs", lambda: os.rename(m + "/victim", m + "/.vsfs"))
show("create in .vsfs", lambda: open(m + "/.vsfs/new", "w"))
show("unlink stats", lambda: os.unlink(m + "/.vsfs/stats"))
show("open stats for writing", lambda: open(m + "/.vsfs/stats", "w"))
show("chmod stats", lambda: os.chmod(m + "/.vsfs/stats", 0o666))
open(m + "/disk", "w").close()
show("symlink", lambda: os.symlink("disk", m + "/sym"))
show("link", lambda: os.link(m + "/disk", m + "/hard"))
with open(m + "/hard", "w") as f:
    f.write("one disk")
a, b = os.stat(m + "/disk"), os.stat(m + "/hard")
print("hard link:", a.st_ino == b.st_ino, a.st_nlink, open(m + "/disk").read())
show("link onto a name", lambda: os.link(m + "/disk", m + "/victim"))
show("link a directory", lambda: os.link(m + "/victim", m + "/dirlink"))
show("link into .vsfs", lambda: os.link(m + "/disk", m + "/.vsfs/x"))
show("link stats", lambda: os.link(m + "/.vsfs/stats", m + "/statslink"))
os.unlink(m + "/disk")
print("after unlink:", os.stat(m + "/hard").st_nlink, open(m + "/hard").read())
PY
cat >"$T/synthetic.want" <<'W'
root lists .vsfs: True
.vsfs lists: ['snapshots', 'stats']
mkdir .vsfs: EEXIST
create .vsfs: EEXIST
rmdir .vsfs: EBUSY
unlink .vsfs: EISDIR
rename .vsfs: EBUSY
rename onto .vsfs: EBUSY
create in .vsfs: EPERM
unlink stats: EPERM
open stats for writing: EACCES
chmod stats: EPERM
symlink: ok
link: ok
hard link: True 2 one disk
link onto a name: EEXIST
link a directory: EPERM
link into .vsfs: EPERM
link stats: EPERM
after unlink: 1 one disk
W
diff -u "$T/synthetic.want" "$T/synthetic.txt" || fail ".vsfs refusals differ"

unmount_wait "$T/mnt" "$DAEMON_PID"
echo "PASS: namespace"
