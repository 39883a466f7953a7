// create (open with O_CREAT) and mknod: regular files, fifos, sockets and device nodes
// (kept with their rdev; a FUSE mount is nodev, so the kernel never opens a device
// through them). `.vsfs` in the root already exists (EEXIST); nothing can be created
// inside the synthetic tree (EPERM). The new file belongs to the caller (fuse_req_ctx);
// the kernel has applied the umask to `mode`.
// create takes an open reference like open, and answers with FOPEN_DIRECT_IO |
// FOPEN_PARALLEL_DIRECT_WRITES for O_DIRECT, and a handle on the disk's coalescing
// queue when coalescing is on (op_open.cc).
// Threading: any worker thread; the library's create is synchronous and in memory.
#include <fcntl.h>

#include "fuse/ops.h"

namespace vsfs::fuse {
namespace {

Result<Attr> do_create(fuse_req_t req, Ino parent, const char* name, mode_t mode) {
  VSFS_TRY(check_name(name));
  if (is_vsfs_dir_name(parent, name)) return errno_error(EEXIST, ".vsfs exists");
  if (is_synthetic(parent)) return errno_error(EPERM, ".vsfs is read-only");
  const fuse_ctx* ctx = fuse_req_ctx(req);
  return fs_of(req).ds().create(parent, name, mode & 07777, ctx->uid, ctx->gid);
}

}  // namespace

void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  guarded(req, [&] {
    if (S_ISREG(mode)) {
      reply_entry(req, do_create(req, parent, name, mode));
      return;
    }
    reply_entry(req, [&]() -> Result<Attr> {
      VSFS_TRY(check_name(name));
      if (is_vsfs_dir_name(parent, name)) return errno_error(EEXIST, ".vsfs exists");
      if (is_synthetic(parent)) return errno_error(EPERM, ".vsfs is read-only");
      const fuse_ctx* ctx = fuse_req_ctx(req);
      return fs_of(req).ds().mknod(parent, name, mode, rdev, ctx->uid, ctx->gid);
    }());
  });
}

void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
               fuse_file_info* fi) {
  guarded(req, [&] {
    FuseFs& fs = fs_of(req);
    Result<Attr> attr = do_create(req, parent, name, mode);
    if (!attr.ok()) {
      reply_error(req, attr.error());
      return;
    }
    io::CoalesceQueue* q = fs.queues().open(attr->ino);
    if (Result<void> r = fs.ds().open_ref(attr->ino); !r.ok()) {
      if (q != nullptr) fs.queues().release(attr->ino);
      reply_error(req, r.error());
      return;
    }
    fuse_entry_param e = make_entry(fs, *attr);
    if (reply_create_flags(req, e, fh_of(q), (fi->flags & O_DIRECT) != 0) != 0) {
      if (q != nullptr) fs.queues().release(attr->ino);  // interrupted: no release will come
      fs.ds().release_ref(attr->ino);
    }
  });
}

}  // namespace vsfs::fuse
