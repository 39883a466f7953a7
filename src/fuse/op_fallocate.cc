// fallocate:
// - mode 0 (allocate) [| KEEP_SIZE]: Datastore::allocate reserves a grain for every
//   grain of the range that has none (it reads zeros; writing it needs no new space),
//   ENOSPC up front when they do not fit, and without KEEP_SIZE extends the size to the
//   range's end.
// - PUNCH_HOLE | KEEP_SIZE: Datastore::punch_hole over the part of the range inside the
//   file (grains freed, partial grains zeroed); the size never changes.
// - ZERO_RANGE [| KEEP_SIZE]: the same punch (a punched range reads as zeros, which is
//   what ZERO_RANGE promises) and, without KEEP_SIZE, the size extended to the range's
//   end.
// - Any other mode (COLLAPSE_RANGE, INSERT_RANGE, UNSHARE_RANGE, PUNCH_HOLE without
//   KEEP_SIZE): EOPNOTSUPP.
// Threading: the handler runs on a worker thread and returns at once; the reply is sent
// from the device completion thread (a ZERO_RANGE that extends chains the truncate from
// the punch's completion).
#include <fcntl.h>
#include <linux/falloc.h>

#include <algorithm>
#include <memory>

#include "fuse/ops.h"

namespace vsfs::fuse {
namespace {

struct Plan {
  bool allocate = false;
  bool keep_size = false;
  uint64_t allocate_offset = 0, allocate_length = 0;
  bool punch = false;
  uint64_t punch_offset = 0, punch_length = 0;
  bool extend = false;
  uint64_t new_size = 0;
};

Result<Plan> plan_fallocate(FuseFs& fs, Ino ino, int mode, off_t offset, off_t length) {
  if (is_synthetic(ino)) return errno_error(EPERM, ".vsfs is read-only");
  if (offset < 0 || length <= 0) return errno_error(EINVAL, "bad range");
  auto off = static_cast<uint64_t>(offset);
  auto len = static_cast<uint64_t>(length);
  if (off + len < off) return errno_error(EFBIG, "range overflows");
  uint64_t end = off + len;
  VSFS_ASSIGN_OR_RETURN(Attr attr, fs.ds().getattr(ino));
  if ((attr.mode & S_IFMT) == S_IFDIR) return errno_error(EISDIR, "is a directory");
  bool keep_size = (mode & FALLOC_FL_KEEP_SIZE) != 0;
  int op = mode & ~FALLOC_FL_KEEP_SIZE;
  Plan p;
  if (op == 0) {
    p.allocate = true;
    p.keep_size = keep_size;
    p.allocate_offset = off;
    p.allocate_length = len;
    return p;  // the size too is Datastore::allocate's
  } else if (op == FALLOC_FL_PUNCH_HOLE) {
    if (!keep_size) return errno_error(EOPNOTSUPP, "PUNCH_HOLE needs KEEP_SIZE");
    p.punch = true;
  } else if (op == FALLOC_FL_ZERO_RANGE) {
    p.punch = true;
  } else {
    return errno_error(EOPNOTSUPP, "unsupported fallocate mode");
  }
  if (p.punch && off < attr.size_bytes) {
    p.punch_offset = off;
    p.punch_length = std::min(end, attr.size_bytes) - off;
  } else {
    p.punch = false;
  }
  if (!keep_size && end > attr.size_bytes) {
    p.extend = true;
    p.new_size = end;
  }
  return p;
}

// Owns the request across the two asynchronous steps; deleted by the last one.
struct FallocateRequest {
  fuse_req_t req;
  FuseFs* fs;
  Ino ino;
  Plan plan;
};

void finish(FallocateRequest* fr, const Result<void>& r) {
  std::unique_ptr<FallocateRequest> owned(fr);
  if (!r.ok()) {
    reply_error(owned->req, r.error());
  } else {
    fuse_reply_err(owned->req, 0);
  }
  owned->fs->requests().end();
}

void start_extend(FallocateRequest* fr) {
  fr->fs->ds().truncate(fr->ino, fr->plan.new_size, [fr](Result<void> r) { finish(fr, r); });
}

}  // namespace

void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                  fuse_file_info* /*fi*/) {
  guarded(req, [&] {
    FuseFs& fs = fs_of(req);
    Result<Plan> plan = plan_fallocate(fs, ino, mode, offset, length);
    if (!plan.ok()) {
      reply_error(req, plan.error());
      return;
    }
    if (!plan->allocate && !plan->punch && !plan->extend) {
      fuse_reply_err(req, 0);
      return;
    }
    auto owned = std::make_unique<FallocateRequest>(FallocateRequest{req, &fs, ino, *plan});
    FallocateRequest* fr = owned.get();
    // One pointer each: fits std::function's inline storage, nothing allocates below.
    Done<void> after_punch = [fr](Result<void> r) {
      if (r.ok() && fr->plan.extend) {
        start_extend(fr);
      } else {
        finish(fr, r);
      }
    };
    owned.release();
    fs.requests().begin();
    if (fr->plan.allocate) {
      fs.ds().allocate(ino, fr->plan.allocate_offset, fr->plan.allocate_length,
                       fr->plan.keep_size, [fr](Result<void> r) { finish(fr, r); });
    } else if (fr->plan.punch) {
      fs.ds().punch_hole(ino, fr->plan.punch_offset, fr->plan.punch_length,
                         std::move(after_punch));
    } else {
      start_extend(fr);
    }
  });
}

}  // namespace vsfs::fuse
