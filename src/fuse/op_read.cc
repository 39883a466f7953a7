// read: from a regular file through the asynchronous Datastore::read into a pooled,
// aligned, pre-faulted buffer (BufferPool), or straight into the FUSE ring entry the
// request came in (UringChannel::current_payload), answered with fuse_reply_buf from
// the completion; or from the stats handle's snapshot. Short reads at end of file.
// With coalescing on, the handle's fh names the disk's coalescing queue and the read
// goes through it (it may be held and merged with its neighbours, the combined read
// landing in each member's own buffer); with it off (fh 0)
// the read goes straight to the datastore.
// Threading: a disk's read is handled on the device completion thread, which reads
// /dev/fuse (device_loop.cc), a `.vsfs` or `.cbt` file's on a worker; the handler
// returns at once and the reply is sent on the completion thread, which also gives the
// buffer back to the pool. The handler must never block.
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

#include "fuse/ops.h"
#include "fuse/stats_file.h"
#include "fuse/uring_channel.h"

namespace vsfs::fuse {
namespace {

struct ReadRequest {
  fuse_req_t req;
  FuseFs* fs;
  AlignedBuffer buffer;
};

void read_stats(fuse_req_t req, size_t size, off_t off, fuse_file_info* fi) {
  const StatsHandle* h = HandleTable<StatsHandle>::get(fi->fh);
  const std::string& s = h->json;
  if (off < 0 || static_cast<size_t>(off) >= s.size()) {
    fuse_reply_buf(req, nullptr, 0);
    return;
  }
  size_t n = std::min(size, s.size() - static_cast<size_t>(off));
  // Replied from a copy: the reader may close the file as soon as the kernel has taken
  // the reply, before writev returns here, and a worker then frees the handle on
  // RELEASE. The kernel has copied the bytes by then, but the handle's text is not
  // ours to touch after the reply (AddressSanitizer's writev check reads it after the
  // call, and caught exactly that).
  const std::string chunk(s, static_cast<size_t>(off), n);
  fuse_reply_buf(req, chunk.data(), n);
}

}  // namespace

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  guarded(req, [&] {
    if (is_text_file(ino)) {
      read_stats(req, size, off, fi);
      return;
    }
    if (ino == kVsfsDirIno) {
      fuse_reply_err(req, EISDIR);
      return;
    }
    if (off < 0) {
      fuse_reply_err(req, EINVAL);
      return;
    }
    if (size == 0) {
      fuse_reply_buf(req, nullptr, 0);
      return;
    }
    FuseFs& fs = fs_of(req);
    // A request from a FUSE ring entry is answered from the entry's own buffer.
    const std::span<uint8_t> entry = UringChannel::current_payload();
    const bool in_entry = entry.size() >= size;
    auto rr = std::make_unique<ReadRequest>(
        ReadRequest{req, &fs, in_entry ? AlignedBuffer() : fs.buffers().take(size)});
    ReadRequest* p = rr.get();
    uint8_t* into = in_entry ? entry.data() : p->buffer.data();
    // Two pointers: fits std::function's inline storage, no allocation per request.
    Done<uint64_t> done = [p, into](Result<uint64_t> r) {
      std::unique_ptr<ReadRequest> owned(p);
      if (!r.ok()) {
        reply_error(owned->req, r.error());
      } else {
        fuse_reply_buf(owned->req, reinterpret_cast<const char*>(into), *r);
      }
      FuseFs* fsp = owned->fs;
      if (owned->buffer.size() > 0) fsp->buffers().give(std::move(owned->buffer));
      fsp->requests().end();
    };
    // Nothing allocates from here on: `done` sends the one reply and frees `p`.
    rr.release();
    fs.requests().begin();
    if (io::CoalesceQueue* q = queue_of(fi->fh)) {
      q->read(static_cast<uint64_t>(off), size, into, std::move(done));
    } else {
      fs.ds().read(ino, static_cast<uint64_t>(off), size, into, std::move(done));
    }
  });
}

}  // namespace vsfs::fuse
