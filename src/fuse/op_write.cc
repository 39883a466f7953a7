// write: to a regular file through the asynchronous Datastore::write, which copies the
// payload before it returns (libfuse's buffer is reused as soon as this handler
// returns; the payload sits at offset 80 mod 4096 there, so it needs an aligned copy
// anyway). A payload in a FUSE ring entry is page-aligned and stays until the reply:
// it goes down as a stable write (Datastore::write_stable), copied by nobody when it
// covers whole grains. The reply (bytes written) comes from the completion.
// The synthetic tree is read-only: EBADF cannot happen (open refuses write access to
// stats), EISDIR for the directory.
// With coalescing on, the handle's fh names the disk's coalescing queue and the write
// goes through it (it copies the payload when it holds a write that is not stable, and
// a combined write goes down from the members' buffers); with it off (fh 0)
// the write goes straight to the datastore.
// Threading: a disk's write is handled on the device completion thread, which reads
// /dev/fuse (device_loop.cc); the handler returns at once (it must never block) and the
// reply is sent on the completion thread.
#include "fuse/ops.h"
#include "fuse/uring_channel.h"

namespace vsfs::fuse {

void op_write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
              fuse_file_info* fi) {
  guarded(req, [&] {
    if (ino == kVsfsDirIno) {
      fuse_reply_err(req, EISDIR);
      return;
    }
    if (is_synthetic(ino)) {
      fuse_reply_err(req, EBADF);
      return;
    }
    if (off < 0) {
      fuse_reply_err(req, EINVAL);
      return;
    }
    FuseFs& fs = fs_of(req);
    FuseFs* fsp = &fs;
    // Two pointers: fits std::function's inline storage, no allocation per request.
    Done<uint64_t> done = [req, fsp](Result<uint64_t> r) {
      if (!r.ok()) {
        reply_error(req, r.error());
      } else {
        fuse_reply_write(req, *r);
      }
      fsp->requests().end();
    };
    // A payload in a FUSE ring entry stays there until the reply: no copy is needed.
    const std::span<uint8_t> entry = UringChannel::current_payload();
    const bool stable = reinterpret_cast<const uint8_t*>(buf) == entry.data();
    // Nothing allocates from here on: `done` sends the one reply.
    fs.requests().begin();
    if (io::CoalesceQueue* q = queue_of(fi->fh)) {
      q->write(static_cast<uint64_t>(off), buf, size, std::move(done), stable);
    } else if (stable) {
      fs.ds().write_stable(ino, static_cast<uint64_t>(off), buf, size, std::move(done));
    } else {
      fs.ds().write(ino, static_cast<uint64_t>(off), buf, size, std::move(done));
    }
  });
}

}  // namespace vsfs::fuse
