// rmdir: removes an empty directory (ENOTEMPTY otherwise, from the library); in a
// `.snapshots` directory deletes a snapshot, as the caller (fuse_req_ctx) may. `.vsfs` in
// the root cannot be removed: EBUSY, as for a mount point; nothing inside it either
// (EPERM).
// Threading: any worker thread; the library's rmdir is synchronous and in memory.
#include "fuse/ops.h"

namespace vsfs::fuse {
namespace {

Result<void> do_rmdir(fuse_req_t req, Ino parent, const char* name) {
  FuseFs& fs = fs_of(req);
  VSFS_TRY(check_name(name));
  if (is_vsfs_dir_name(parent, name)) return errno_error(EBUSY, ".vsfs cannot be removed");
  if (is_synthetic(parent)) return errno_error(EPERM, ".vsfs is read-only");
  return fs.ds().rmdir(parent, name, fuse_req_ctx(req)->uid);
}

}  // namespace

void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, [&] {
    Result<void> r = do_rmdir(req, parent, name);
    reply_status(req, r);
  });
}

}  // namespace vsfs::fuse
