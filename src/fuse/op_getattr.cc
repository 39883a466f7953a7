// getattr: inode -> attributes. The stats file reports the size of a snapshot rendered
// now (fuse_fs.cc), never cached by the kernel.
// Threading: any worker thread; the library's getattr is synchronous and in memory.
#include "fuse/ops.h"

namespace vsfs::fuse {

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* /*fi*/) {
  guarded(req, [&] {
    FuseFs& fs = fs_of(req);
    reply_attr(req, is_synthetic(ino) ? synthetic_attr(fs, ino) : fs.ds().getattr(ino));
  });
}

}  // namespace vsfs::fuse
