// symlink and link: vsfs holds regular files (disks) and directories only, so both are
// refused with EPERM, as a local filesystem without links refuses them (vsfs.7,
// Limits). Answered here rather than left out of the table: libfuse would answer
// ENOSYS, which the kernel passes on for symlink(2).
// Threading: any worker thread; nothing is touched.
#include "fuse/ops.h"

namespace vsfs::fuse {

void op_symlink(fuse_req_t req, const char* /*target*/, fuse_ino_t /*parent*/,
                const char* /*name*/) {
  fuse_reply_err(req, EPERM);
}

void op_link(fuse_req_t req, fuse_ino_t /*ino*/, fuse_ino_t /*new_parent*/,
             const char* /*new_name*/) {
  fuse_reply_err(req, EPERM);
}

}  // namespace vsfs::fuse
