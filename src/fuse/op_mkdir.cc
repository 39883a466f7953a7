// mkdir: a new directory owned by the caller (fuse_req_ctx); the kernel has applied the
// umask. `.vsfs` in the root exists already (EEXIST); nothing can be created inside the
// synthetic tree (EPERM).
// Threading: any worker thread; the library's mkdir is synchronous and in memory.
#include "fuse/ops.h"

namespace vsfs::fuse {
namespace {

Result<Attr> do_mkdir(fuse_req_t req, Ino parent, const char* name, mode_t mode) {
  VSFS_TRY(check_name(name));
  if (is_vsfs_dir_name(parent, name)) return errno_error(EEXIST, ".vsfs exists");
  if (is_synthetic(parent)) return errno_error(EPERM, ".vsfs is read-only");
  const fuse_ctx* ctx = fuse_req_ctx(req);
  return fs_of(req).ds().mkdir(parent, name, mode & 07777, ctx->uid, ctx->gid);
}

}  // namespace

void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  guarded(req, [&] {
    Result<Attr> attr = do_mkdir(req, parent, name, mode);
    if (!attr.ok()) {
      reply_error(req, attr.error());
      return;
    }
    fuse_entry_param e = make_entry(fs_of(req), *attr);
    fuse_reply_entry(req, &e);
  });
}

}  // namespace vsfs::fuse
