#!/usr/bin/env python3
"""Namespace operations for the vsfs integration test: run in a directory, print one line
per operation with its result or errno name. The same script runs in a tmpfs directory and
in a vsfs mount; the outputs must be identical. Only what a local filesystem defines is
printed (no inode numbers, no directory sizes or link counts, no block counts)."""
import errno
import os
import stat
import subprocess
import sys

root = sys.argv[1]
os.chdir(root)


def show(what, fn, *args):
    try:
        r = fn(*args)
        print(f"{what}: ok" + ("" if r is None else f" {r}"))
    except OSError as e:
        print(f"{what}: {errno.errorcode.get(e.errno, e.errno)}")


def desc(path):
    st = os.lstat(path)
    kind = "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else "other"
    s = f"{kind} mode={oct(stat.S_IMODE(st.st_mode))} uid={st.st_uid} gid={st.st_gid}"
    if kind == "file":
        s += f" size={st.st_size} nlink={st.st_nlink}"
    return s


def listing(path):
    return sorted(n for n in os.listdir(path) if not (path in (".", root) and n == ".vsfs"))


def write(path, data, mode="wb"):
    with open(path, mode) as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


os.umask(0o022)
show("mkdir d1", os.mkdir, "d1")
show("mkdir d1 again", os.mkdir, "d1")
show("mkdir d1/sub", os.mkdir, "d1/sub", 0o700)
show("mkdir missing/x", os.mkdir, "missing/x")
show("mknod regular", os.mknod, "nod", 0o640 | stat.S_IFREG)
show("stat nod", desc, "nod")
show("unlink nod", os.unlink, "nod")
show("create f1", write, "f1", b"hello world\n")
show("create d1/f2", write, "d1/f2", b"x" * 10000)
show("append f1", write, "f1", b"more\n", "ab")
show("read f1", lambda: read("f1"))
show("stat f1", desc, "f1")
show("stat d1", desc, "d1")
show("stat d1/sub", desc, "d1/sub")
show("stat missing", os.stat, "missing")
show("stat f1/x (ENOTDIR)", os.stat, "f1/x")
show("open missing", read, "missing")
show("list .", listing, ".")
show("list d1", listing, "d1")
show("exclusive create f1", lambda: os.close(os.open("f1", os.O_CREAT | os.O_EXCL | os.O_WRONLY)))
show("rename f1 f3", os.rename, "f1", "f3")
show("stat f1 after rename", os.stat, "f1")
show("read f3", lambda: read("f3"))
show("create f4", write, "f4", b"four")
show("rename f3 onto f4", os.rename, "f3", "f4")
show("read f4", lambda: read("f4"))
show("list . after", listing, ".")
show("rename f4 into d1", os.rename, "f4", "d1/f4")
show("list d1 after", listing, "d1")
show("rename d1/f4 onto dir", os.rename, "d1/f4", "d1/sub")
show("rename dir onto file", os.rename, "d1/sub", "d1/f4")
show("mkdir d2", os.mkdir, "d2")
show("rename d2 into d1", os.rename, "d2", "d1/d2")
show("rename d1 into its child", os.rename, "d1", "d1/d2/d1")
show("rmdir d1 (not empty)", os.rmdir, "d1")
show("unlink d1 (a dir)", os.unlink, "d1")
show("rmdir d1/f2 (a file)", os.rmdir, "d1/f2")
show("unlink d1/f2", os.unlink, "d1/f2")
show("unlink d1/f2 again", os.unlink, "d1/f2")
show("rmdir d1/d2", os.rmdir, "d1/d2")
show("list d1 end", listing, "d1")
show("chmod d1/f4 600", os.chmod, "d1/f4", 0o600)
show("chown d1/f4 1234:5678", os.chown, "d1/f4", 1234, 5678)
show("stat d1/f4", desc, "d1/f4")
show("utime d1/f4", lambda: os.utime("d1/f4", ns=(1_000_000_123_456_789, 1_500_000_000_000_000_001)))
show("times d1/f4", lambda: (os.stat("d1/f4").st_atime_ns, os.stat("d1/f4").st_mtime_ns))
show("touch -d d1/f4", lambda: subprocess.run(["touch", "-d", "2001-02-03 04:05:06.5 UTC", "d1/f4"], check=True) and None)
show("mtime after touch -d", lambda: os.stat("d1/f4").st_mtime_ns)
show("truncate d1/f4 100000", os.truncate, "d1/f4", 100000)
show("stat d1/f4 grown", desc, "d1/f4")
show("read tail zeros", lambda: read("d1/f4")[17:] == b"\0" * (100000 - 17))
show("truncate d1/f4 2", os.truncate, "d1/f4", 2)
show("read d1/f4 short", lambda: read("d1/f4"))
show("name 255", write, "n" * 255, b"")
show("stat name 255", desc, "n" * 255)
show("name 256", write, "n" * 256, b"")
show("stat name 256", os.stat, "n" * 256)
show("mkdir name 256", os.mkdir, "m" * 256)
show("unlink name 255", os.unlink, "n" * 255)
show("rmdir .", os.rmdir, ".")
show("rmdir d1/sub", os.rmdir, "d1/sub")
show("unlink d1/f4", os.unlink, "d1/f4")
show("rmdir d1", os.rmdir, "d1")
show("list . final", listing, ".")
