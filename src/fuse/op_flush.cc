// flush: called on every close(2) of a file descriptor. vsfs keeps no dirty data of its
// own in the front end (every write is handed to the datastore before its reply), so
// there is nothing to push: success. Durability is fsync's job.
// Threading: any worker thread.
#include "fuse/ops.h"

namespace vsfs::fuse {

void op_flush(fuse_req_t req, fuse_ino_t /*ino*/, fuse_file_info* /*fi*/) {
  fuse_reply_err(req, 0);
}

}  // namespace vsfs::fuse
