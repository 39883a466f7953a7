// flush: called on every close(2) of a file descriptor. vsfs keeps no dirty data of its
// own in the front end (every write is handed to the datastore, or to the disk's
// coalescing queue, before its reply), so there is nothing to push and the answer is
// success at once; with coalescing on, the queue is kicked so that whatever it still
// holds goes down now rather than at its deadline. Durability is fsync's job.
// Threading: any worker thread.
#include "fuse/ops.h"

namespace vsfs::fuse {

void op_flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (fi != nullptr && !is_synthetic(ino)) {
    if (io::CoalesceQueue* q = queue_of(fi->fh)) q->kick();
  }
  fuse_reply_err(req, 0);
}

}  // namespace vsfs::fuse
