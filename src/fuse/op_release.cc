// release: the last close of an open file. Drops the open reference taken by open or
// create, so an unlinked file's space is freed once no one has it open; drops the
// handle's reference on its disk's coalescing queue (the last one sends what the queue
// holds; its IOs in flight keep it until they complete); frees the stats snapshot of a
// `.vsfs/stats` handle. Its only valid reply is an errno (0).
// Threading: any worker thread.
#include "fuse/ops.h"
#include "fuse/stats_file.h"

namespace vsfs::fuse {

void op_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (is_text_file(ino)) {
    fs_of(req).stats_handles().remove(fi->fh);
  } else if (!is_synthetic(ino)) {
    FuseFs& fs = fs_of(req);
    if (queue_of(fi->fh) != nullptr) fs.queues().release(ino);
    fs.ds().release_ref(ino);
  }
  fuse_reply_err(req, 0);
}

}  // namespace vsfs::fuse
