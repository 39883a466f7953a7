// FuseFs and the reply helpers shared by the handlers: see fuse_fs.h.
// Thread-safety: FuseFs is immutable after construction apart from its own thread-safe
// members; the helpers touch only their arguments.
#include "fuse/fuse_fs.h"

#include <cstring>
#include <ctime>

#include "fuse/stats_file.h"
#include "util/clock.h"

namespace vsfs::fuse {
namespace {

// Free read-reply and combined-IO buffers kept for reuse: enough for a deep queue of
// 1 MiB reads while bounding the daemon's memory (PERFORMANCE.md: reused, pre-faulted
// buffers).
constexpr size_t kRetainedBufferBytes = 32ull << 20;

timespec to_timespec(uint64_t ns) {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000ull);
  ts.tv_nsec = static_cast<long>(ns % 1'000'000'000ull);
  return ts;
}

}  // namespace

FuseFs::FuseFs(Datastore& ds, const FsOptions& options)
    : ds_(ds),
      options_(options),
      buffers_(kRetainedBufferBytes),
      queues_(ds, options.coalesce, buffers_),
      mount_time_ns_(realtime_ns()) {
  init_extensions_.want(InitExtensions::kDirectIoAllowMmap);
}

void reply_error(fuse_req_t req, const Error& error) {
  int e = error.errno_value > 0 ? error.errno_value : EIO;
  fuse_reply_err(req, e);
}

void fill_stat(const Attr& attr, struct stat* st) {
  std::memset(st, 0, sizeof(*st));
  st->st_ino = attr.ino;
  st->st_mode = attr.mode;
  st->st_nlink = attr.nlink;
  st->st_rdev = static_cast<dev_t>(attr.rdev);
  st->st_uid = attr.uid;
  st->st_gid = attr.gid;
  st->st_size = static_cast<off_t>(attr.size_bytes);
  st->st_blocks = static_cast<blkcnt_t>(attr.allocated_bytes / 512);
  st->st_blksize = kBlockSizeBytes;
  st->st_atim = to_timespec(attr.atime_ns);
  st->st_mtim = to_timespec(attr.mtime_ns);
  st->st_ctim = to_timespec(attr.ctime_ns);
}

fuse_entry_param make_entry(const FuseFs& fs, const Attr& attr) {
  fuse_entry_param e;
  std::memset(&e, 0, sizeof(e));
  e.ino = attr.ino;
  e.generation = 0;  // inode numbers are never reused
  fill_stat(attr, &e.attr);
  e.attr_timeout = fs.options().attr_timeout_s;
  e.entry_timeout = fs.options().entry_timeout_s;
  // The stats file changes under the reader: never cache its size.
  if (is_text_file(attr.ino)) e.attr_timeout = 0;
  return e;
}

void reply_entry(fuse_req_t req, const Result<Attr>& attr) {
  if (!attr.ok()) {
    if (attr.error().errno_value == ENOENT) {
      // A negative entry: the kernel may cache the absence for entry_timeout. Every
      // change goes through this mount, and the kernel drops it on create.
      fuse_entry_param e;
      std::memset(&e, 0, sizeof(e));
      e.entry_timeout = fs_of(req).options().entry_timeout_s;
      fuse_reply_entry(req, &e);
      return;
    }
    reply_error(req, attr.error());
    return;
  }
  fuse_entry_param e = make_entry(fs_of(req), *attr);
  fuse_reply_entry(req, &e);
}

void reply_attr(fuse_req_t req, const Result<Attr>& attr) {
  if (!attr.ok()) {
    reply_error(req, attr.error());
    return;
  }
  struct stat st;
  fill_stat(*attr, &st);
  double timeout = is_text_file(attr->ino) ? 0.0 : fs_of(req).options().attr_timeout_s;
  fuse_reply_attr(req, &st, timeout);
}

void reply_status(fuse_req_t req, const Result<void>& r) {
  if (r.ok()) {
    fuse_reply_err(req, 0);
  } else {
    reply_error(req, r.error());
  }
}

Result<void> check_name(const char* name) {
  if (std::strlen(name) > kNameMaxBytes) return errno_error(ENAMETOOLONG, "name too long");
  return ok_result();
}

Result<Attr> synthetic_attr(FuseFs& fs, Ino ino) {
  Attr a;
  a.ino = ino;
  a.atime_ns = a.mtime_ns = a.ctime_ns = a.btime_ns = fs.mount_time_ns();
  if (ino == kVsfsDirIno) {
    a.mode = S_IFDIR | 0555;
    a.nlink = 2;
    return a;
  }
  if (ino == kStatsIno) {
    a.mode = S_IFREG | 0444;
    a.nlink = 1;
    // The real size of a snapshot taken now, so `cat` and `stat` agree; each open takes
    // its own snapshot and is direct_io, so a reader reads until EOF whatever changed.
    a.size_bytes = render_stats_json(fs).size();
    a.mtime_ns = a.ctime_ns = a.atime_ns = realtime_ns();
    return a;
  }
  if (ino == kSnapshotListIno) {
    // Size 0, as /proc's files: rendering it walks metadata, which a stat should not.
    // Each open renders the text, and reads (direct_io) go to its end. Root's alone: it
    // names every user's snapshots and directories (users read their own snapshots'
    // figures in the snapshot directories' xattrs).
    a.mode = S_IFREG | 0400;
    a.nlink = 1;
    a.mtime_ns = a.ctime_ns = a.atime_ns = realtime_ns();
    return a;
  }
  return errno_error(ENOENT, "no such synthetic inode");
}

Result<Attr> synthetic_lookup(FuseFs& fs, Ino parent, const char* name) {
  if (is_vsfs_dir_name(parent, name)) return synthetic_attr(fs, kVsfsDirIno);
  if (parent == kVsfsDirIno) {
    if (kStatsName == name) return synthetic_attr(fs, kStatsIno);
    if (kSnapshotListName == name) return synthetic_attr(fs, kSnapshotListIno);
    return errno_error(ENOENT, "no such file in .vsfs");
  }
  if (is_text_file(parent)) return errno_error(ENOTDIR, "not a directory");
  return errno_error(ENOENT, "not synthetic");
}

}  // namespace vsfs::fuse
