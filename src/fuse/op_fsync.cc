// fsync, fdatasync and fsyncdir: Datastore::fsync commits the journal and flushes the
// device, making every completed write and namespace change durable; the reply is sent
// from its completion, so an acknowledged fsync survives power loss. A commit covers the
// whole datastore, so fdatasync and fsync are the same. The synthetic tree has nothing
// to sync. With coalescing on, a file's fsync is a flush barrier in its disk's queue:
// it is passed down once every request before it has completed, and nothing is merged
// across it (src/io/coalesce_queue.h).
// Threading: the handler runs on a worker thread and returns at once; the reply is sent
// on the device completion thread.
#include "fuse/ops.h"

namespace vsfs::fuse {
namespace {

void do_fsync(fuse_req_t req, fuse_ino_t ino, io::CoalesceQueue* q) {
  guarded(req, [&] {
    if (is_synthetic(ino)) {
      fuse_reply_err(req, 0);
      return;
    }
    FuseFs& fs = fs_of(req);
    FuseFs* fsp = &fs;
    Done<void> done = [req, fsp](Result<void> r) {
      if (!r.ok()) {
        reply_error(req, r.error());
      } else {
        fuse_reply_err(req, 0);
      }
      fsp->requests().end();
    };
    fs.requests().begin();
    if (q != nullptr) {
      q->flush(std::move(done));
    } else {
      fs.ds().fsync(ino, std::move(done));
    }
  });
}

}  // namespace

void op_fsync(fuse_req_t req, fuse_ino_t ino, int /*datasync*/, fuse_file_info* fi) {
  do_fsync(req, ino, fi != nullptr && !is_synthetic(ino) ? queue_of(fi->fh) : nullptr);
}

void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int /*datasync*/, fuse_file_info* /*fi*/) {
  do_fsync(req, ino, nullptr);  // a directory's fh is its DirHandle
}

}  // namespace vsfs::fuse
