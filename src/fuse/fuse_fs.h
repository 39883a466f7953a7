// FuseFs: the state every FUSE handler of vsfs-mount shares, and the helpers they use to
// answer the kernel (attribute conversion, error replies, the synthetic `.vsfs` tree).
//
// One FuseFs lives for the whole session; libfuse hands it to each handler as the
// session's userdata. Handlers run on the loop's workers, disk reads and writes and the
// completions of data operations on the device completion thread (device_loop.cc):
// every member is either immutable after construction, atomic, or guarded inside its
// own class (BufferPool, DiskQueues).
// Every handler sends exactly one reply; inner functions return a Result and the outer
// handler turns it into the reply (reply_error maps Error::errno_value).
#pragma once

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 34
#endif
#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <string_view>

#include "util/buffer_pool.h"
#include "fuse/disk_queues.h"
#include "fuse/init_extensions.h"
#include "fuse/handles.h"
#include "fuse/stats_file.h"
#include "io/coalesce_queue.h"
#include "util/result.h"
#include "vsfs/datastore.h"

namespace vsfs::fuse {

class UringChannel;

// Synthetic inodes at the top of the 64-bit range: the library hands out inode numbers
// from 1 upwards and never reuses one, so it cannot reach these.
inline constexpr Ino kVsfsDirIno = 0xFFFFFFFFFFFFFF00ull;
inline constexpr Ino kStatsIno = kVsfsDirIno + 1;
inline constexpr std::string_view kVsfsDirName = ".vsfs";
inline constexpr std::string_view kStatsName = "stats";
inline constexpr Ino kSnapshotListIno = kVsfsDirIno + 2;
inline constexpr std::string_view kSnapshotListName = "snapshots";
// The read-only text files of `.vsfs`: each open renders one text (stats_file.h).
inline bool is_text_file(Ino ino) { return ino == kStatsIno || ino == kSnapshotListIno; }
inline constexpr size_t kNameMaxBytes = 255;
inline constexpr uint32_t kBlockSizeBytes = 1u << 20;  // st_blksize: favour 1 MiB IO

inline bool is_synthetic(Ino ino) { return ino >= kVsfsDirIno; }

struct FsOptions {
  double attr_timeout_s = 1.0;
  double entry_timeout_s = 1.0;
  uint32_t max_background = 128;       // init: kernel's async request limit
  uint32_t max_write_bytes = 1u << 20;  // init: largest write request
  bool read_only = false;
  // Send FOPEN_PARALLEL_DIRECT_WRITES with FOPEN_DIRECT_IO (O_DIRECT opens). Only off
  // to measure what it brings (VSFS_NO_PARALLEL_DIRECT_WRITES=1 in the environment).
  bool parallel_direct_writes = true;
  // The coalescing queue of each open disk ([coalesce], -o coalesce=off).
  io::CoalesceOptions coalesce;
  // What .vsfs/stats says the datastore is: the program's version, the device, when
  // it was mounted (CLOCK_REALTIME, ns).
  std::string version;
  std::string device;
  uint64_t mounted_at_ns = 0;
};

// Requests that are waiting for a datastore completion (read, write, fsync, ...).
class InFlightCounter {
 public:
  void begin() {
    uint64_t now = in_flight_.fetch_add(1, std::memory_order_relaxed) + 1;
    uint64_t peak = peak_.load(std::memory_order_relaxed);
    while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
  }
  void end() { in_flight_.fetch_sub(1, std::memory_order_relaxed); }
  uint64_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }
  uint64_t peak() const { return peak_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> in_flight_{0};
  std::atomic<uint64_t> peak_{0};
};

class FuseFs {
 public:
  FuseFs(Datastore& ds, const FsOptions& options);
  FuseFs(const FuseFs&) = delete;
  FuseFs& operator=(const FuseFs&) = delete;

  Datastore& ds() { return ds_; }
  const FsOptions& options() const { return options_; }
  BufferPool& buffers() { return buffers_; }  // read replies and combined IOs
  InFlightCounter& requests() { return requests_; }
  DiskQueues& queues() { return queues_; }
  // The handles of open directories and `.vsfs/stats` files (handles.h): freed by their
  // release, or with this FuseFs when the session ends with them still open.
  HandleTable<DirHandle>& dir_handles() { return dir_handles_; }
  HandleTable<StatsHandle>& stats_handles() { return stats_handles_; }
  uint64_t mount_time_ns() const { return mount_time_ns_; }
  // FUSE over io_uring, when the loop uses it: replies to its requests go back through
  // their ring entry. Set once before the loop starts; kept for the session, since
  // replies of requests in flight may come after the loop has ended.
  void set_uring(std::shared_ptr<UringChannel> channel) { uring_ = std::move(channel); }
  UringChannel* uring() const { return uring_.get(); }
  // The FUSE_INIT flags libfuse does not know, added to its reply.
  InitExtensions& init_extensions() { return init_extensions_; }

 private:
  Datastore& ds_;
  const FsOptions options_;
  BufferPool buffers_;
  InFlightCounter requests_;
  DiskQueues queues_;
  const uint64_t mount_time_ns_;
  std::shared_ptr<UringChannel> uring_;
  InitExtensions init_extensions_;
  HandleTable<DirHandle> dir_handles_;
  HandleTable<StatsHandle> stats_handles_;
};

inline FuseFs& fs_of(fuse_req_t req) { return *static_cast<FuseFs*>(fuse_req_userdata(req)); }

// ---- replies ----
void reply_error(fuse_req_t req, const Error& error);
void fill_stat(const Attr& attr, struct stat* st);
fuse_entry_param make_entry(const FuseFs& fs, const Attr& attr);
// Replies with an entry, or with the error.
void reply_entry(fuse_req_t req, const Result<Attr>& attr);
void reply_attr(fuse_req_t req, const Result<Attr>& attr);
// Replies 0 or the error's errno (operations whose only reply is an errno).
void reply_status(fuse_req_t req, const Result<void>& r);

// ---- names ----
// ENAMETOOLONG over 255 bytes, as a local filesystem.
Result<void> check_name(const char* name);
// The root's `.vsfs`.
inline bool is_vsfs_dir_name(Ino parent, const char* name) {
  return parent == kRootIno && kVsfsDirName == name;
}

// ---- the synthetic tree ----
Result<Attr> synthetic_attr(FuseFs& fs, Ino ino);
Result<Attr> synthetic_lookup(FuseFs& fs, Ino parent, const char* name);

// Errors for the handlers.
inline Error errno_error(int errno_value, const char* what) {
  return Error{errno_value, ErrorKind::kInvalidArgument, what};
}

// Runs `body` (which sends the reply); answers ENOMEM when an allocation fails before
// the reply was sent. `body` must not allocate after it has replied.
template <typename Body>
void guarded(fuse_req_t req, Body&& body) {
  try {
    body();
  } catch (const std::bad_alloc&) {
    fuse_reply_err(req, ENOMEM);
  }
}

}  // namespace vsfs::fuse
