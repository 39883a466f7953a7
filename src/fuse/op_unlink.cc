// unlink: removes a name. The file lives on while it is open (open references) and its
// grains are released lazily by the library. `.vsfs` in the root is a directory: EISDIR,
// as unlink(2) of a directory on Linux; files inside `.vsfs` cannot be removed: EPERM.
// Threading: any worker thread; the library's unlink is synchronous and in memory.
#include "fuse/ops.h"

namespace vsfs::fuse {
namespace {

Result<void> do_unlink(FuseFs& fs, Ino parent, const char* name) {
  VSFS_TRY(check_name(name));
  if (is_vsfs_dir_name(parent, name)) return errno_error(EISDIR, ".vsfs is a directory");
  if (is_synthetic(parent)) return errno_error(EPERM, ".vsfs is read-only");
  return fs.ds().unlink(parent, name);
}

}  // namespace

void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, [&] {
    Result<void> r = do_unlink(fs_of(req), parent, name);
    reply_status(req, r);
  });
}

}  // namespace vsfs::fuse
