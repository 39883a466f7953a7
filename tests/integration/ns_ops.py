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


def show(what, fn, *args, **kw):
    try:
        r = fn(*args, **kw)
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

# ---- symlinks, fifos, sockets, device nodes, xattrs, and which times each changes ----
import socket
import time


def kind_of(path):
    m = os.lstat(path).st_mode
    for name, test in (("dir", stat.S_ISDIR), ("file", stat.S_ISREG), ("symlink", stat.S_ISLNK),
                       ("fifo", stat.S_ISFIFO), ("socket", stat.S_ISSOCK), ("chr", stat.S_ISCHR),
                       ("blk", stat.S_ISBLK)):
        if test(m):
            return name
    return "?"


def ldesc(path):
    st = os.lstat(path)
    s = f"{kind_of(path)} mode={oct(stat.S_IMODE(st.st_mode))} uid={st.st_uid} gid={st.st_gid} nlink={st.st_nlink}"
    if stat.S_ISLNK(st.st_mode) or stat.S_ISREG(st.st_mode):
        s += f" size={st.st_size}"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        s += f" rdev={os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    return s


def times_changed(paths, fn, *args, **kw):
    """Runs fn; says which of mtime and ctime of each path changed (atime depends on mount
    options, so it is left out)."""
    before = [os.lstat(p) for p in paths]
    time.sleep(0.02)
    try:
        ret = fn(*args, **kw)
        r = "done" if ret is None else f"done ({ret})"
    except OSError as e:
        r = errno.errorcode.get(e.errno, str(e.errno))
    out = []
    for p, b in zip(paths, before):
        try:
            a = os.lstat(p)
        except OSError:
            out.append(f"{p}:gone")
            continue
        ch = ("m" if a.st_mtime_ns != b.st_mtime_ns else "") + ("c" if a.st_ctime_ns != b.st_ctime_ns else "")
        out.append(f"{p}:{ch or '-'}")
    return f"{r} " + " ".join(out)


def fifo_roundtrip(path):
    r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(path, os.O_WRONLY)
    os.write(w, b"through the fifo")
    got = os.read(r, 100)
    os.close(w)
    os.close(r)
    return got


def socket_roundtrip(path):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    cli = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    cli.sendto(b"through the socket", path)
    got = srv.recv(100)
    srv.close()
    cli.close()
    return got


show("mkdir k", os.mkdir, "k")
show("create k/target", write, "k/target", b"target data")
show("symlink k/l -> target", lambda: times_changed(["k"], os.symlink, "target", "k/l"))
show("lstat k/l", ldesc, "k/l")
show("stat k/l follows", lambda: (stat.S_ISREG(os.stat("k/l").st_mode), os.stat("k/l").st_size))
show("readlink k/l", os.readlink, "k/l")
show("read through k/l", read, "k/l")
show("readlink k/target (a file)", os.readlink, "k/target")
show("symlink onto a name", os.symlink, "x", "k/target")
show("open O_NOFOLLOW k/l", lambda: os.close(os.open("k/l", os.O_RDONLY | os.O_NOFOLLOW)))
show("symlink k/dangling", os.symlink, "nowhere/at/all", "k/dangling")
show("stat k/dangling", os.stat, "k/dangling")
show("lstat k/dangling", ldesc, "k/dangling")
show("symlink loop a", os.symlink, "b", "k/a")
show("symlink loop b", os.symlink, "a", "k/b")
show("open k/a (a loop)", read, "k/a")
show("symlink to a dir", os.symlink, ".", "k/self")
show("list through k/self", listing, "k/self")
show("symlink 4095", os.symlink, "p" * 4095, "k/long")
show("readlink 4095", lambda: len(os.readlink("k/long")))
show("lstat 4095", ldesc, "k/long")
show("symlink 4096", os.symlink, "p" * 4096, "k/longer")
show("symlink name 256", os.symlink, "x", "k/" + "n" * 256)
show("lchown k/l", lambda: times_changed(["k/l", "k/target"], os.chown, "k/l", 4321, 8765, follow_symlinks=False))
show("lstat k/l after lchown", ldesc, "k/l")
show("stat k/target after lchown", desc, "k/target")
show("utime nofollow k/l", lambda: os.utime("k/l", ns=(2_000_000_000_000_000_001, 1_234_567_890_123_456_789), follow_symlinks=False))
show("k/l mtime", lambda: os.lstat("k/l").st_mtime_ns)
show("k/target mtime unchanged", lambda: os.stat("k/target").st_mtime_ns != 1_234_567_890_123_456_789)
def rename_times(src, dst):
    """Renames; says whether the moved inode's ctime and mtime changed."""
    b = os.lstat(src)
    time.sleep(0.02)
    os.rename(src, dst)
    a = os.lstat(dst)
    return f"ctime changed {a.st_ctime_ns != b.st_ctime_ns}, mtime changed {a.st_mtime_ns != b.st_mtime_ns}"


show("rename k/l k/l2", lambda: times_changed(["k"], rename_times, "k/l", "k/l2"))
show("readlink k/l2", os.readlink, "k/l2")
show("link k/l2 (a symlink)", lambda: times_changed(["k", "k/l2"], os.link, "k/l2", "k/l3", follow_symlinks=False))
show("lstat k/l3", ldesc, "k/l3")
show("unlink k/l2", lambda: times_changed(["k", "k/l3"], os.unlink, "k/l2"))
show("read k/target after", read, "k/target")

show("mkfifo k/p", lambda: times_changed(["k"], os.mkfifo, "k/p", 0o640))
show("lstat k/p", ldesc, "k/p")
show("fifo round trip", fifo_roundtrip, "k/p")
show("link k/p", os.link, "k/p", "k/p2")
show("lstat k/p2", ldesc, "k/p2")
show("mknod chr 1:3", os.mknod, "k/c", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
show("lstat k/c", ldesc, "k/c")
show("mknod blk 8:1", os.mknod, "k/bl", 0o660 | stat.S_IFBLK, os.makedev(8, 1))
show("lstat k/bl", ldesc, "k/bl")
show("socket round trip", socket_roundtrip, "k/s")
show("lstat k/s", ldesc, "k/s")
show("chmod k/p", lambda: times_changed(["k/p"], os.chmod, "k/p", 0o600))
show("lstat k/p after chmod", ldesc, "k/p")
show("truncate k/p", os.truncate, "k/p", 0)
show("rename k/p over k/c", os.rename, "k/p", "k/c")
show("lstat k/c after", ldesc, "k/c")
show("list k", listing, "k")

show("setxattr user.a", lambda: times_changed(["k/target"], os.setxattr, "k/target", "user.a", b"one"))
show("getxattr user.a", os.getxattr, "k/target", "user.a")
show("setxattr user.a CREATE", os.setxattr, "k/target", "user.a", b"x", os.XATTR_CREATE)
show("setxattr user.b REPLACE", os.setxattr, "k/target", "user.b", b"x", os.XATTR_REPLACE)
show("setxattr user.a REPLACE", os.setxattr, "k/target", "user.a", b"two", os.XATTR_REPLACE)
show("setxattr user.empty", os.setxattr, "k/target", "user.empty", b"")
show("setxattr trusted.t", os.setxattr, "k/target", "trusted.t", b"\x00\x01binary\xff")
show("setxattr security.s", os.setxattr, "k/target", "security.s", b"label")
show("setxattr user.grain", os.setxattr, "k/target", "user.grain", b"g" * 4096)
show("listxattr", lambda: sorted(os.listxattr("k/target")))
show("getxattr trusted.t", os.getxattr, "k/target", "trusted.t")
show("getxattr user.grain", lambda: len(os.getxattr("k/target", "user.grain")))
show("getxattr user.none", os.getxattr, "k/target", "user.none")
show("removexattr user.none", os.removexattr, "k/target", "user.none")
show("removexattr user.a", lambda: times_changed(["k/target"], os.removexattr, "k/target", "user.a"))
show("listxattr after", lambda: sorted(os.listxattr("k/target")))
show("setxattr user.d on a dir", os.setxattr, "k", "user.d", b"dir")
show("getxattr user.d", os.getxattr, "k", "user.d")
show("setxattr user.l on a symlink", os.setxattr, "k/l3", "user.l", b"x", follow_symlinks=False)
show("setxattr trusted.l on a symlink", os.setxattr, "k/l3", "trusted.l", b"x", follow_symlinks=False)
show("listxattr of the symlink", lambda: sorted(os.listxattr("k/l3", follow_symlinks=False)))
show("setxattr user.p on a fifo", os.setxattr, "k/p2", "user.p", b"x")
show("setxattr trusted.p on a fifo", os.setxattr, "k/p2", "trusted.p", b"x")
show("getxattr trusted.p", os.getxattr, "k/p2", "trusted.p")
show("xattr survives rename", lambda: (os.rename("k/target", "k/t2"), os.getxattr("k/t2", "trusted.t"))[1])
for n in ("t2", "l3", "p2", "c", "bl", "s", "self", "a", "b", "dangling", "long"):
    show(f"unlink k/{n}", os.unlink, f"k/{n}")
show("rmdir k", os.rmdir, "k")
