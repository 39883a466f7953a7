// forget / forget_multi: the kernel dropping lookup references. The library keeps no
// per-lookup state (inode numbers are stable and never reused), so there is nothing to
// drop; both answer with fuse_reply_none, their only valid reply.
// Threading: any worker thread.
#include "fuse/ops.h"

namespace vsfs::fuse {

void op_forget(fuse_req_t req, fuse_ino_t /*ino*/, uint64_t /*nlookup*/) {
  fuse_reply_none(req);
}

void op_forget_multi(fuse_req_t req, size_t /*count*/, fuse_forget_data* /*forgets*/) {
  fuse_reply_none(req);
}

}  // namespace vsfs::fuse
