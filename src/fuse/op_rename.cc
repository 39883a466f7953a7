// rename and renameat2: RENAME_NOREPLACE and RENAME_EXCHANGE map to RenameFlags; other
// flags (RENAME_WHITEOUT) are EINVAL. `.vsfs` in the root can be neither the source nor
// the target: EBUSY, as for a mount point; moving anything into or out of the synthetic
// tree is EPERM.
// Threading: any worker thread; the library's rename is synchronous and in memory.
#include <linux/fs.h>

#include "fuse/ops.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

namespace vsfs::fuse {
namespace {

Result<void> do_rename(FuseFs& fs, Ino parent, const char* name, Ino new_parent,
                       const char* new_name, unsigned flags) {
  VSFS_TRY(check_name(name));
  VSFS_TRY(check_name(new_name));
  RenameFlags rf = RenameFlags::kNone;
  if (flags == RENAME_NOREPLACE) {
    rf = RenameFlags::kNoReplace;
  } else if (flags == RENAME_EXCHANGE) {
    rf = RenameFlags::kExchange;
  } else if (flags != 0) {
    return errno_error(EINVAL, "unsupported rename flags");
  }
  if (is_vsfs_dir_name(parent, name) || is_vsfs_dir_name(new_parent, new_name)) {
    return errno_error(EBUSY, ".vsfs cannot be renamed or replaced");
  }
  if (is_synthetic(parent) || is_synthetic(new_parent)) {
    return errno_error(EPERM, ".vsfs is read-only");
  }
  return fs.ds().rename(parent, name, new_parent, new_name, rf);
}

}  // namespace

void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
               const char* newname, unsigned int flags) {
  guarded(req, [&] {
    Result<void> r = do_rename(fs_of(req), parent, name, newparent, newname, flags);
    reply_status(req, r);
  });
}

}  // namespace vsfs::fuse
