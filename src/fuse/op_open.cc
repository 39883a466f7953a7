// open: a regular file (takes an open reference, so an unlinked file lives until its
// last release) or the stats file (renders one snapshot into the handle).
//
// O_DIRECT opens are answered FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES: without
// the second flag the kernel serialises O_DIRECT writes to one file on its inode lock
// (PERFORMANCE.md). libfuse 3.14's fuse_file_info has no bit for it, so the reply
// (struct fuse_open_out, and fuse_entry_out + fuse_open_out for create) is built here
// and sent with fuse_reply_buf, exactly as fuse_reply_open/fuse_reply_create would.
// Other opens go through the page cache (no writeback cache: writes are write-through).
// With coalescing on, the handle's fh is the disk's coalescing queue (DiskQueues takes
// a reference for each open and drops it at release); with it off fh stays 0.
// Threading: any worker thread.
#include <fcntl.h>
#include <linux/fuse.h>

#include <cstring>

#include "fuse/ops.h"
#include "fuse/stats_file.h"

#ifndef FOPEN_PARALLEL_DIRECT_WRITES
#define FOPEN_PARALLEL_DIRECT_WRITES (1 << 6)
#endif

namespace vsfs::fuse {
namespace {

uint32_t open_flags(bool direct_io, bool parallel) {
  uint32_t flags = 0;
  if (direct_io) {
    flags |= FOPEN_DIRECT_IO;
    if (parallel) flags |= FOPEN_PARALLEL_DIRECT_WRITES;
  }
  return flags;
}

// fuse_lowlevel.c's convert_stat and calc_timeout_sec/nsec, for fuse_entry_out.
void fill_attr(const struct stat& st, fuse_attr* a) {
  a->ino = st.st_ino;
  a->mode = st.st_mode;
  a->nlink = static_cast<uint32_t>(st.st_nlink);
  a->uid = st.st_uid;
  a->gid = st.st_gid;
  a->rdev = static_cast<uint32_t>(st.st_rdev);
  a->size = static_cast<uint64_t>(st.st_size);
  a->blksize = static_cast<uint32_t>(st.st_blksize);
  a->blocks = static_cast<uint64_t>(st.st_blocks);
  a->atime = static_cast<uint64_t>(st.st_atim.tv_sec);
  a->mtime = static_cast<uint64_t>(st.st_mtim.tv_sec);
  a->ctime = static_cast<uint64_t>(st.st_ctim.tv_sec);
  a->atimensec = static_cast<uint32_t>(st.st_atim.tv_nsec);
  a->mtimensec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
  a->ctimensec = static_cast<uint32_t>(st.st_ctim.tv_nsec);
}

uint64_t timeout_sec(double t) {
  if (t > static_cast<double>(UINT64_MAX)) return UINT64_MAX;
  if (t < 0.0) return 0;
  return static_cast<uint64_t>(t);
}

uint32_t timeout_nsec(double t) {
  double f = t - static_cast<double>(timeout_sec(t));
  if (f < 0.0) return 0;
  if (f >= 0.999999999) return 999999999;
  return static_cast<uint32_t>(f * 1.0e9);
}

Result<uint64_t> open_text_file(fuse_file_info* fi, FuseFs& fs, Ino ino) {
  if ((fi->flags & O_ACCMODE) != O_RDONLY) return errno_error(EACCES, ".vsfs is read-only");
  return fs.stats_handles().add(std::make_unique<StatsHandle>(StatsHandle{
      ino == kStatsIno ? render_stats_json(fs) : render_snapshots_json(fs)}));
}

}  // namespace

int reply_open_flags(fuse_req_t req, uint64_t fh, bool direct_io) {
  fuse_open_out out;
  std::memset(&out, 0, sizeof(out));
  out.fh = fh;
  out.open_flags = open_flags(direct_io, fs_of(req).options().parallel_direct_writes);
  return fuse_reply_buf(req, reinterpret_cast<const char*>(&out), sizeof(out));
}

int reply_create_flags(fuse_req_t req, const fuse_entry_param& e, uint64_t fh,
                       bool direct_io) {
  struct {
    fuse_entry_out entry;
    fuse_open_out open;
  } out;
  static_assert(sizeof(out) == sizeof(fuse_entry_out) + sizeof(fuse_open_out));
  std::memset(&out, 0, sizeof(out));
  out.entry.nodeid = e.ino;
  out.entry.generation = e.generation;
  out.entry.entry_valid = timeout_sec(e.entry_timeout);
  out.entry.entry_valid_nsec = timeout_nsec(e.entry_timeout);
  out.entry.attr_valid = timeout_sec(e.attr_timeout);
  out.entry.attr_valid_nsec = timeout_nsec(e.attr_timeout);
  fill_attr(e.attr, &out.entry.attr);
  out.open.fh = fh;
  out.open.open_flags = open_flags(direct_io, fs_of(req).options().parallel_direct_writes);
  return fuse_reply_buf(req, reinterpret_cast<const char*>(&out), sizeof(out));
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, [&] {
    FuseFs& fs = fs_of(req);
    if (ino == kVsfsDirIno) {
      fuse_reply_err(req, EISDIR);
      return;
    }
    if (is_text_file(ino)) {
      Result<uint64_t> fh = open_text_file(fi, fs, ino);
      if (!fh.ok()) {
        reply_error(req, fh.error());
        return;
      }
      fi->fh = *fh;
      fi->direct_io = 1;
      if (fuse_reply_open(req, fi) != 0) fs.stats_handles().remove(fi->fh);
      return;
    }
    // Files in snapshots are read-only (O_TRUNC without write access is refused too).
    if (view_of(ino) != 0 && ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))) {
      fuse_reply_err(req, EROFS);
      return;
    }
    io::CoalesceQueue* q = fs.queues().open(ino);  // may throw: nothing taken yet
    if (Result<void> r = fs.ds().open_ref(ino); !r.ok()) {
      if (q != nullptr) fs.queues().release(ino);
      reply_error(req, r.error());
      return;
    }
    if (reply_open_flags(req, fh_of(q), (fi->flags & O_DIRECT) != 0) != 0) {
      // The open was interrupted: the kernel will not send release for it.
      if (q != nullptr) fs.queues().release(ino);
      fs.ds().release_ref(ino);
    }
  });
}

}  // namespace vsfs::fuse
