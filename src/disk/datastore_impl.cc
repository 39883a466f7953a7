// DatastoreImpl: the virtual-disk layer. It turns read/write/punch/truncate/fsync of a
// disk into grain-mapper decisions and device IO, and replies when the IO completes.
//
// A data request first takes its grain range in the disk's RangeLock (overlapping
// requests wait there, in order). Planning happens under MetaStore's mutex: for each
// grain, an in-place write when the grain and every map node above it belong to this
// disk alone and the grain's stamp is the current generation, else a redirect to a
// newly reserved grain (partial grains filled from the old grain or zeros). The IO is
// submitted with the mutex released; the completion installs redirected grains in the
// map (the next commit makes them durable), releases the range, and calls `done`.
//
// Threads: callers (any), the device completion thread (completions), the committer
// (group commit on fsync, on the interval, and when the open transaction grows), and
// the releaser (frees released trees in the background).
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <deque>
#include <dirent.h>
#include <future>
#include <list>
#include <map>
#include <thread>
#include <tuple>

#include "device/device.h"
#include "device/uring_device.h"
#include "disk/range_lock.h"
#include "disk/wait_histogram.h"
#include "meta/meta_store.h"
#include "util/aligned_buffer.h"
#include "util/buffer_pool.h"
#include "util/clock.h"
#include "util/log.h"
#include "vsfs/datastore.h"

namespace vsfs {
namespace {

using device::IoRequest;
using device::OpKind;
using meta::GrainLookup;
using meta::MetaStore;
using format::SlotState;
using disk::GrainRange;
using disk::RangeLock;

constexpr uint64_t kMaxFileBytes = 64ull << 40;  // 64 TiB
// Free data buffers kept for reuse: sixteen 1 MiB requests' worth.
constexpr size_t kBufferRetainBytes = 16u << 20;
constexpr uint32_t kReleaseBudget = 32;          // nodes released per step
// Metadata blocks one data change may dirty, at most, for a write of up to 1 MiB: two
// map leaves and the nodes above them copied, reference-count and block-table grains,
// the inode leaf. (A larger change may take more: room is half the journal.)
constexpr uint64_t kChangeBlocksMax = 16;


Attr to_attr(const format::InodeRecord& r) {
  Attr a;
  a.ino = r.ino;
  a.mode = r.mode;
  a.uid = r.uid;
  a.gid = r.gid;
  a.nlink = r.nlink;
  a.size_bytes = r.size_bytes;
  a.allocated_bytes = r.allocated_grains * kGrainBytes;
  a.atime_ns = r.atime_ns;
  a.mtime_ns = r.mtime_ns;
  a.ctime_ns = r.ctime_ns;
  a.btime_ns = r.btime_ns;
  return a;
}

Error err_from_device(int64_t res, const char* what) {
  return make_error(static_cast<int>(-res), ErrorKind::kIo, "device {} failed: {}", what,
                    std::strerror(static_cast<int>(-res)));
}

// [offset, end) in bytes as whole grains [whole_first, whole_end) and the partial
// grains at its edges (byte ranges), which punch and clone handle by writing.
struct GrainSplit {
  uint64_t whole_first = 0, whole_end = 0;
  std::vector<std::pair<uint64_t, uint64_t>> edges;  // (offset, length)
};
GrainSplit split_at_grains(uint64_t offset, uint64_t end) {
  GrainSplit g;
  g.whole_first = div_round_up(offset, kGrainBytes);
  g.whole_end = end / kGrainBytes;
  if (g.whole_first > g.whole_end) {  // inside one grain
    g.edges.emplace_back(offset, end - offset);
    g.whole_end = g.whole_first;
    return g;
  }
  if (offset < g.whole_first * kGrainBytes) {
    g.edges.emplace_back(offset, g.whole_first * kGrainBytes - offset);
  }
  if (end > g.whole_end * kGrainBytes) {
    g.edges.emplace_back(g.whole_end * kGrainBytes, end - g.whole_end * kGrainBytes);
  }
  return g;
}

// Joins the parts of one request that run asynchronously: `done` runs once, after the
// last part, with the first error. Thread-safe.
class Join {
 public:
  Join(size_t parts, Done<void> done) : pending_(parts), done_(std::move(done)) {}
  void part(Result<void> r) {
    {
      std::lock_guard l(mu_);
      if (!r.ok() && result_.ok()) result_ = std::move(r);
      if (--pending_ > 0) return;
    }
    done_(std::move(result_));
  }

 private:
  std::mutex mu_;
  size_t pending_;
  Result<void> result_;
  Done<void> done_;
};

// Joins IoRequests whose grains are physically contiguous into one request each.
struct IoPlan {
  struct Run {
    OpKind kind;
    uint64_t grain;
    uint64_t count;
    std::vector<iovec> iov;
  };
  std::vector<Run> runs;
  void add(OpKind kind, uint64_t grain, uint8_t* buf) {
    if (!runs.empty()) {
      Run& r = runs.back();
      if (r.kind == kind && r.grain + r.count == grain && r.iov.size() < IOV_MAX / 2) {
        if (static_cast<uint8_t*>(r.iov.back().iov_base) + r.iov.back().iov_len == buf) {
          r.iov.back().iov_len += kGrainBytes;
        } else {
          r.iov.push_back(iovec{buf, kGrainBytes});
        }
        ++r.count;
        return;
      }
    }
    runs.push_back(Run{kind, grain, 1, {iovec{buf, kGrainBytes}}});
  }
};

// True when the range is whole grains and every buffer is 4 KiB-aligned whole grains,
// so that the device can move each grain to or from the buffers directly.
bool grain_direct(uint64_t offset, uint64_t length, const iovec* iov, int iovcnt) {
  if (offset % kGrainBytes != 0 || length % kGrainBytes != 0) return false;
  for (int i = 0; i < iovcnt; ++i) {
    if (reinterpret_cast<uintptr_t>(iov[i].iov_base) % kGrainBytes != 0 ||
        iov[i].iov_len % kGrainBytes != 0) {
      return false;
    }
  }
  return true;
}

// Copies `length` bytes from `src` into the buffers, one after the other.
void scatter(const uint8_t* src, uint64_t length, const std::vector<iovec>& iov) {
  for (const iovec& v : iov) {
    if (length == 0) return;
    const uint64_t n = std::min<uint64_t>(length, v.iov_len);
    std::memcpy(v.iov_base, src, n);
    src += n;
    length -= n;
  }
}

class DatastoreImpl final : public Datastore {
  struct DataOp;

 public:
  DatastoreImpl(std::unique_ptr<device::Device> dev, std::unique_ptr<MetaStore> ms,
                const OpenOptions& options)
      : dev_(std::move(dev)), ms_(std::move(ms)), options_(options) {}

  ~DatastoreImpl() override {
    if (!closed_) {
      auto r = close();
      if (!r.ok()) VSFS_LOG_ERROR("closing the datastore: {}", r.error().to_string());
    }
    wait_for_data_ops();  // also any a caller started after close()
  }

  // Waits until no data op is alive: their device IOs and completions (which use this
  // object's members) are over, and the last checkpoint sees every completed write.
  // Writes still waiting for space, which the stopped committer will not reclaim, fail.
  void wait_for_data_ops() {
    std::vector<std::shared_ptr<DataOp>> no_space;
    {
      std::lock_guard lock(ms_->mu());
      no_space.swap(nospace_);
    }
    for (auto& op : no_space) {
      op->done_len(make_error(ENOSPC, ErrorKind::kNoSpace, "no space left on the datastore"));
    }
    no_space.clear();
    while (live_ops_.load(std::memory_order_acquire) != 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  void start_background() {
    if (options_.read_only || !options_.start_background) return;
    committer_ = std::thread([this] { committer_loop(); });
    releaser_ = std::thread([this] { releaser_loop(); });
    if (options_.format_rate_mib_s > 0) formatter_ = std::thread([this] { formatter_loop(); });
  }

  Result<void> close() override {
    if (closed_) return ok_result();
    closed_ = true;
    {
      std::lock_guard l(bg_mu_);
      stop_ = true;
    }
    bg_cv_.notify_all();
    if (committer_.joinable()) committer_.join();
    if (releaser_.joinable()) releaser_.join();
    if (formatter_.joinable()) formatter_.join();
    answer_late_fsyncs();  // without background threads, restamps may still wait
    wait_for_data_ops();
    if (options_.read_only) return ok_result();
    {
      std::lock_guard lock(ms_->mu());
      std::vector<Ino> inos;
      for (auto& [ino, rt] : rt_) inos.push_back(ino);
      for (Ino ino : inos) VSFS_TRY(persist_times_locked(ino));
    }
    return ms_->checkpoint(true);
  }

  // ---- namespace ----

  Result<Attr> lookup(Ino parent, const std::string& name) override {
    std::lock_guard lock(ms_->mu());
    const uint16_t view = view_of(parent);
    const Ino dir = base_of(parent);
    if (view == kSnapshotsDirView) {
      const format::SnapshotRecord* r = ms_->snapshot_by_name_locked(name);
      if (r == nullptr || r->base_ino != dir) {
        return make_error(ENOENT, ErrorKind::kNotFound, "no snapshot '{}' here", name);
      }
      return getattr_locked(make_ino(r->id, dir));
    }
    if (view == 0 && name == kSnapshotsDirName) return getattr_locked(make_ino(kSnapshotsDirView, dir));
    if (view == 0 && name == kCbtDirName) {
      VSFS_ASSIGN_OR_RETURN(auto d, ms_->inode_locked(dir));
      if (!S_ISDIR(d->mode)) return make_error(ENOTDIR, ErrorKind::kInvalidArgument, "not a directory");
      CbtNode root;
      root.dir = dir;
      return getattr_locked(cbt_node(std::move(root)));
    }
    if (view == kCbtView) return cbt_lookup(parent, name);
    VSFS_ASSIGN_OR_RETURN(auto idx, ms_->dir_index_locked(dir, view));
    auto it = idx->find(name);
    if (it == idx->end()) return make_error(ENOENT, ErrorKind::kNotFound, "no such entry");
    return getattr_locked(make_ino(view, it->second.ino));
  }

  Result<Attr> getattr(Ino ino) override {
    std::lock_guard lock(ms_->mu());
    return getattr_locked(ino);
  }

  Result<Attr> getattr_locked(Ino ino) {
    const uint16_t view = view_of(ino);
    if (view == kCbtView) return cbt_getattr(ino);
    if (view == kSnapshotsDirView) {
      // The ".snapshots" directory: read-only listing, mkdir/rmdir make and drop snapshots.
      VSFS_ASSIGN_OR_RETURN(auto dir, ms_->inode_locked(base_of(ino)));
      if (!S_ISDIR(dir->mode)) return make_error(ENOTDIR, ErrorKind::kInvalidArgument, "not a directory");
      Attr a = to_attr(*dir);
      a.ino = ino;
      a.mode = S_IFDIR | 0755;
      a.nlink = 2;
      a.size_bytes = 0;
      a.allocated_bytes = 0;
      return a;
    }
    VSFS_ASSIGN_OR_RETURN(auto rec, ms_->inode_locked(base_of(ino), view));
    Attr a = view == 0 ? attr_locked(*rec) : to_attr(*rec);
    a.ino = ino;
    if (view != 0) a.mode &= ~0222u;  // snapshots are read-only
    return a;
  }

  Result<Attr> create(Ino parent, const std::string& name, uint32_t mode, uint32_t uid,
                      uint32_t gid) override {
    return make_node(parent, name, S_IFREG | (mode & 07777), uid, gid);
  }

  Result<Attr> mkdir(Ino parent, const std::string& name, uint32_t mode, uint32_t uid,
                     uint32_t gid) override {
    if (view_of(parent) == kSnapshotsDirView) return create_snapshot(base_of(parent), name);
    return make_node(parent, name, S_IFDIR | (mode & 07777), uid, gid);
  }

  Result<void> unlink(Ino parent, const std::string& name) override {
    std::lock_guard lock(ms_->mu());
    VSFS_TRY(writable(parent));
    VSFS_ASSIGN_OR_RETURN(auto entry, find_entry(parent, name));
    if (entry.type == DT_DIR) return make_error(EISDIR, ErrorKind::kInvalidArgument, "is a directory");
    VSFS_TRY(ms_->dir_remove_locked(parent, name));
    VSFS_TRY(touch_dir(parent));
    VSFS_TRY(drop_link(entry.ino));
    return after_change();
  }

  Result<void> rmdir(Ino parent, const std::string& name) override {
    if (view_of(parent) == kSnapshotsDirView) return delete_snapshot(base_of(parent), name);
    std::lock_guard lock(ms_->mu());
    VSFS_TRY(writable(parent));
    VSFS_ASSIGN_OR_RETURN(auto entry, find_entry(parent, name));
    if (entry.type != DT_DIR) return make_error(ENOTDIR, ErrorKind::kInvalidArgument, "not a directory");
    VSFS_TRY(check_removable_dir_locked(entry.ino));
    VSFS_TRY(ms_->dir_remove_locked(parent, name));
    VSFS_TRY(touch_dir(parent));
    VSFS_ASSIGN_OR_RETURN(auto prec, ms_->inode_for_update_locked(parent));
    --prec->nlink;
    VSFS_TRY(free_dir_locked(entry.ino));
    return after_change();
  }

  // A directory may go when it has no entries and no snapshot: its snapshots would be
  // left with no path to them (no way to delete them), holding their space.
  Result<void> check_removable_dir_locked(Ino dir) {
    VSFS_ASSIGN_OR_RETURN(auto idx, ms_->dir_index_locked(dir));
    if (!idx->empty()) return make_error(ENOTEMPTY, ErrorKind::kInvalidArgument, "directory not empty");
    for (const auto& r : ms_->snapshots_locked()) {
      if (r.base_ino == dir && (r.flags & format::kSnapDeleted) == 0) {
        return make_error(ENOTEMPTY, ErrorKind::kInvalidArgument,
                          "directory has snapshots ('{}'): delete them first", r.name);
      }
    }
    return ok_result();
  }

  // Frees a removed directory's inode, and its .cbt node.
  Result<void> free_dir_locked(Ino dir) {
    VSFS_TRY(ms_->free_inode_locked(dir));
    CbtNode root;
    root.dir = dir;
    if (auto it = cbt_index_.find(root.key()); it != cbt_index_.end()) {
      cbt_nodes_.erase(it->second);
      cbt_index_.erase(it);
    }
    return ok_result();
  }

  Result<void> rename(Ino parent, const std::string& name, Ino new_parent,
                      const std::string& new_name, RenameFlags flags) override {
    std::lock_guard lock(ms_->mu());
    VSFS_TRY(writable(parent));
    VSFS_TRY(writable(new_parent));
    if (name == kSnapshotsDirName || new_name == kSnapshotsDirName || name == kCbtDirName ||
        new_name == kCbtDirName) {
      return make_error(EBUSY, ErrorKind::kInvalidArgument, "reserved name");
    }
    if (!format::valid_name(new_name)) {
      return make_error(new_name.size() > format::kMaxNameBytes ? ENAMETOOLONG : EINVAL,
                        ErrorKind::kInvalidArgument, "invalid name");
    }
    VSFS_ASSIGN_OR_RETURN(auto src, find_entry(parent, name));
    VSFS_ASSIGN_OR_RETURN(auto nidx, ms_->dir_index_locked(new_parent));
    std::optional<meta::DirIndexEntry> dst;
    if (auto it = nidx->find(new_name); it != nidx->end()) dst = it->second;
    if (parent == new_parent && name == new_name) {
      return flags == RenameFlags::kNoReplace
                 ? Result<void>(make_error(EEXIST, ErrorKind::kExists, "target exists"))
                 : ok_result();
    }
    // A directory may not move into its own subtree.
    if (src.type == DT_DIR) VSFS_TRY(check_not_ancestor(src.ino, new_parent));
    if (flags == RenameFlags::kExchange) {
      if (!dst) return make_error(ENOENT, ErrorKind::kNotFound, "target does not exist");
      if (dst->type == DT_DIR) VSFS_TRY(check_not_ancestor(dst->ino, parent));
      VSFS_TRY(ms_->dir_remove_locked(parent, name));
      VSFS_TRY(ms_->dir_remove_locked(new_parent, new_name));
      VSFS_TRY(ms_->dir_add_locked(parent, name, dst->ino, dst->type));
      VSFS_TRY(ms_->dir_add_locked(new_parent, new_name, src.ino, src.type));
      if (parent != new_parent) {
        VSFS_TRY(move_dir_links(src, parent, new_parent));
        VSFS_TRY(move_dir_links(*dst, new_parent, parent));
      }
    } else {
      if (dst) {
        if (flags == RenameFlags::kNoReplace) return make_error(EEXIST, ErrorKind::kExists, "target exists");
        if (dst->ino == src.ino) return ok_result();
        if (src.type == DT_DIR && dst->type != DT_DIR) return make_error(ENOTDIR, ErrorKind::kInvalidArgument, "not a directory");
        if (src.type != DT_DIR && dst->type == DT_DIR) return make_error(EISDIR, ErrorKind::kInvalidArgument, "is a directory");
        if (dst->type == DT_DIR) {
          VSFS_TRY(check_removable_dir_locked(dst->ino));
          VSFS_TRY(ms_->dir_remove_locked(new_parent, new_name));
          VSFS_ASSIGN_OR_RETURN(auto np, ms_->inode_for_update_locked(new_parent));
          --np->nlink;
          VSFS_TRY(free_dir_locked(dst->ino));
        } else {
          VSFS_TRY(ms_->dir_remove_locked(new_parent, new_name));
          VSFS_TRY(drop_link(dst->ino));
        }
      }
      VSFS_TRY(ms_->dir_remove_locked(parent, name));
      VSFS_TRY(ms_->dir_add_locked(new_parent, new_name, src.ino, src.type));
      if (parent != new_parent) VSFS_TRY(move_dir_links(src, parent, new_parent));
    }
    VSFS_TRY(touch_dir(parent));
    if (new_parent != parent) VSFS_TRY(touch_dir(new_parent));
    VSFS_ASSIGN_OR_RETURN(auto srec, ms_->inode_for_update_locked(src.ino));
    srec->ctime_ns = realtime_ns();
    return after_change();
  }

  Result<std::vector<DirEntryInfo>> readdir(Ino dir) override {
    std::lock_guard lock(ms_->mu());
    const uint16_t view = view_of(dir);
    std::vector<DirEntryInfo> out;
    if (view == kCbtView) return cbt_readdir(dir);
    if (view == kSnapshotsDirView) {
      VSFS_TRY(getattr_locked(dir));
      for (const auto& r : ms_->snapshots_locked()) {
        if ((r.flags & format::kSnapDeleted) || r.base_ino != base_of(dir)) continue;
        out.push_back(DirEntryInfo{r.name, make_ino(r.id, r.base_ino), S_IFDIR});
      }
      return out;
    }
    // ".snapshots" and ".cbt" are never listed: tree walks (backups, du, find) do not
    // descend into them.
    VSFS_ASSIGN_OR_RETURN(auto list, ms_->dir_list_locked(base_of(dir), view));
    out.reserve(list.size());
    for (auto& e : list) {
      out.push_back(DirEntryInfo{std::move(e.name), make_ino(view, e.ino),
                                 static_cast<uint32_t>(e.type == DT_DIR ? S_IFDIR : S_IFREG)});
    }
    return out;
  }

  Result<Attr> setattr(Ino ino, const SetAttr& a) override {
    std::lock_guard lock(ms_->mu());
    VSFS_TRY(writable(ino));
    VSFS_TRY(persist_times_locked(ino));
    VSFS_ASSIGN_OR_RETURN(auto rec, ms_->inode_for_update_locked(ino));
    if (a.mode) rec->mode = (rec->mode & S_IFMT) | (*a.mode & 07777);
    if (a.uid) rec->uid = *a.uid;
    if (a.gid) rec->gid = *a.gid;
    if (a.atime_ns) rec->atime_ns = *a.atime_ns;
    if (a.mtime_ns) rec->mtime_ns = *a.mtime_ns;
    rec->ctime_ns = realtime_ns();
    Attr out = to_attr(*rec);
    VSFS_TRY(after_change());
    return out;
  }

  Result<void> open_ref(Ino ino) override {
    std::lock_guard lock(ms_->mu());
    VSFS_TRY(getattr_locked(ino));
    ++rt_[ino].open_refs;
    return ok_result();
  }

  void release_ref(Ino ino) override {
    std::lock_guard lock(ms_->mu());
    auto it = rt_.find(ino);
    if (it == rt_.end() || it->second.open_refs == 0) return;
    if (--it->second.open_refs > 0) return;
    if (auto t = persist_times_locked(ino); !t.ok()) {
      VSFS_LOG_ERROR("inode {}: {}", ino, t.error().to_string());
    }
    auto rec = ms_->inode_locked(ino);
    if (rec.ok() && (*rec)->nlink == 0 && it->second.locks.idle()) {
      auto freed = ms_->free_inode_locked(ino);
      if (!freed.ok()) VSFS_LOG_ERROR("freeing inode {}: {}", ino, freed.error().to_string());
      rt_.erase(it);
    }
  }

  // ---- data ----

  void readv(Ino ino, uint64_t offset, const iovec* iov, int iovcnt,
             Done<uint64_t> done) override {
    auto op = std::make_shared<DataOp>(*this);
    op->ino = ino;
    op->done_len = std::move(done);
    op->user.assign(iov, iov + iovcnt);
    {
      std::lock_guard lock(ms_->mu());
      read_locked(op, offset);
    }
    run_deferred();
  }

  // op->user: where the read goes.
  void read_locked(const std::shared_ptr<DataOp>& op, uint64_t offset) {
    uint64_t length = 0;
    for (const iovec& v : op->user) length += v.iov_len;
    if (view_of(op->ino) == kCbtView) {
      auto text = cbt_text(op->ino);
      if (!text.ok()) return finish_now(op, text.take_error());
      const std::string& t = **text;
      if (offset >= t.size()) return finish_now(op, uint64_t{0});
      const uint64_t n = std::min<uint64_t>(length, t.size() - offset);
      scatter(reinterpret_cast<const uint8_t*>(t.data()) + offset, n, op->user);
      return finish_now(op, n);
    }
    {
      auto rec = getattr_locked(op->ino);
      if (!rec.ok()) return finish_now(op, rec.take_error());
      if (S_ISDIR(rec->mode)) return finish_now(op, make_error(EISDIR, ErrorKind::kInvalidArgument, "is a directory"));
      const uint64_t size = rec->size_bytes;
      if (offset >= size || length == 0) return finish_now(op, uint64_t{0});
      length = std::min(length, size - offset);
      op->offset = offset;
      op->length = length;
      op->first = offset / kGrainBytes;
      op->end = div_round_up(offset + length, kGrainBytes);
      ++stats_.read_requests;
      stats_.read_bytes += length;
      acquire_locked(op, false, [this, op] { start_read_locked(op); });
    }
  }

  void writev(Ino ino, uint64_t offset, const iovec* iov, int iovcnt,
              Done<uint64_t> done) override {
    auto op = std::make_shared<DataOp>(*this);
    op->ino = ino;
    op->done_len = std::move(done);
    uint64_t length = 0;
    for (int i = 0; i < iovcnt; ++i) length += iov[i].iov_len;
    // The payload goes into the grain-aligned buffer before the lock is taken: copying
    // up to 1 MiB must not hold up every other request.
    if (length > 0 && offset < kMaxFileBytes && length <= kMaxFileBytes - offset) {
      const uint64_t first = offset / kGrainBytes;
      take_buffer(op, (div_round_up(offset + length, kGrainBytes) - first) * kGrainBytes);
      uint8_t* p = op->buf.data() + (offset - first * kGrainBytes);
      for (int i = 0; i < iovcnt; ++i) {
        std::memcpy(p, iov[i].iov_base, iov[i].iov_len);
        p += iov[i].iov_len;
      }
    }
    {
      std::lock_guard lock(ms_->mu());
      write_locked(op, offset, length);
    }
    run_deferred();
  }

  // Whole grains from aligned buffers the caller keeps: no partial grain to merge, so
  // the payload goes to the device from where it is (write_data_phase).
  void writev_stable(Ino ino, uint64_t offset, const iovec* iov, int iovcnt,
                     Done<uint64_t> done) override {
    uint64_t length = 0;
    for (int i = 0; i < iovcnt; ++i) length += iov[i].iov_len;
    if (!grain_direct(offset, length, iov, iovcnt) || offset >= kMaxFileBytes ||
        length > kMaxFileBytes - offset) {
      return writev(ino, offset, iov, iovcnt, std::move(done));
    }
    auto op = std::make_shared<DataOp>(*this);
    op->ino = ino;
    op->done_len = std::move(done);
    op->user.assign(iov, iov + iovcnt);
    {
      std::lock_guard lock(ms_->mu());
      write_locked(op, offset, length);
    }
    run_deferred();
  }

  // `op->buf` (writev) or `op->user` (writev_stable) holds the payload.
  void write_locked(const std::shared_ptr<DataOp>& op, uint64_t offset, uint64_t length) {
    {
      if (auto w = writable(op->ino); !w.ok()) return finish_now(op, w.take_error());
      auto rec = ms_->inode_locked(op->ino);
      if (!rec.ok()) return finish_now(op, rec.take_error());
      if (S_ISDIR((*rec)->mode)) return finish_now(op, make_error(EISDIR, ErrorKind::kInvalidArgument, "is a directory"));
      if (offset >= kMaxFileBytes || length > kMaxFileBytes - offset) {
        return finish_now(op, make_error(EFBIG, ErrorKind::kInvalidArgument, "beyond the largest disk (64 TiB)"));
      }
      if (length == 0) return finish_now(op, uint64_t{0});
      op->offset = offset;
      op->length = length;
      op->first = offset / kGrainBytes;
      op->end = div_round_up(offset + length, kGrainBytes);
      ++stats_.write_requests;
      stats_.write_bytes += length;
      acquire_locked(op, true, [this, op] { start_write_locked(op); });
    }
  }

  void punch_hole(Ino ino, uint64_t offset, uint64_t length, Done<void> done) override {
    // Partial grains at the edges are written with zeros; whole grains are unmapped.
    if (view_of(ino) != 0) return done(make_error(EROFS, ErrorKind::kState, "snapshots are read-only"));
    auto rec = getattr(ino);
    if (!rec.ok()) return done(rec.take_error());
    const uint64_t size = rec->size_bytes;
    if (offset >= size || length == 0) return done(ok_result());
    const uint64_t end = std::min(size, offset + std::min(length, kMaxFileBytes));
    const GrainSplit g = split_at_grains(offset, end);
    auto join = std::make_shared<Join>(g.edges.size() + 1, std::move(done));
    auto part = [join](Result<void> r) { join->part(std::move(r)); };
    for (const auto& [off, len] : g.edges) zero_range(ino, off, len, part);
    if (g.whole_first < g.whole_end) {
      unmap_range(ino, g.whole_first, g.whole_end, std::nullopt, part);
    } else {
      part(ok_result());
    }
  }

  void truncate(Ino ino, uint64_t size, Done<void> done) override {
    if (size > kMaxFileBytes) return done(make_error(EFBIG, ErrorKind::kInvalidArgument, "beyond the largest disk (64 TiB)"));
    if (view_of(ino) != 0) return done(make_error(EROFS, ErrorKind::kState, "snapshots are read-only"));
    auto rec = getattr(ino);
    if (!rec.ok()) return done(rec.take_error());
    if (S_ISDIR(rec->mode)) return done(make_error(EISDIR, ErrorKind::kInvalidArgument, "is a directory"));
    const uint64_t old = rec->size_bytes;
    auto finish = [this, ino, size, old, done = std::move(done)](Result<void> r) mutable {
      if (!r.ok()) return done(std::move(r));
      // Nothing is mapped past the old end: unmapping stops there.
      const uint64_t first = div_round_up(size, kGrainBytes);
      unmap_range(ino, first, std::max(first, div_round_up(old, kGrainBytes)), size, std::move(done));
    };
    if (size < old && size % kGrainBytes != 0) {
      // The tail of the last grain must read zeros if the disk grows again.
      const uint64_t grain_end = round_up(size, kGrainBytes);
      zero_range(ino, size, std::min(grain_end, old) - size, std::move(finish));
    } else {
      finish(ok_result());
    }
  }

  void fsync(Ino, Done<void> done) override {
    bool queued = false;
    {
      std::lock_guard l(bg_mu_);
      if (!options_.read_only && !stop_) {
        fsync_waiters_.push_back(std::move(done));
        queued = true;
        if (options_.start_background) {
          bg_cv_.notify_all();
          return;
        }
      }
    }
    // Without background threads the caller's thread runs the committer's round.
    if (queued) {
      (void)commit_round(false);  // answers `done`
      return;
    }
    done(ms_->commit());
  }

  Result<uint64_t> seek(Ino ino, uint64_t offset, bool data) override {
    std::lock_guard lock(ms_->mu());
    VSFS_ASSIGN_OR_RETURN(auto attr, getattr_locked(ino));
    if (S_ISDIR(attr.mode)) return make_error(EISDIR, ErrorKind::kInvalidArgument, "is a directory");
    const uint64_t size = attr.size_bytes;
    if (offset >= size) return make_error(ENXIO, ErrorKind::kInvalidArgument, "offset past the end");
    if (view_of(ino) == kCbtView) return data ? offset : size;
    const uint64_t limit = div_round_up(size, kGrainBytes);
    VSFS_ASSIGN_OR_RETURN(uint64_t g, ms_->map_seek_locked(base_of(ino), offset / kGrainBytes,
                                                           limit, data, view_of(ino)));
    if (data) {
      if (g >= limit) return make_error(ENXIO, ErrorKind::kInvalidArgument, "no data past the offset");
      return std::max(offset, g * kGrainBytes);
    }
    return std::max(offset, std::min(size, g * kGrainBytes));
  }

  std::vector<SnapshotInfo> snapshots() override {
    std::lock_guard lock(ms_->mu());
    std::vector<SnapshotInfo> out;
    for (const auto& r : ms_->snapshots_locked()) {
      out.push_back(SnapshotInfo{r.name, r.change_id, r.created_ns, r.base_ino, r.id,
                                 (r.flags & format::kSnapDeleted) != 0});
    }
    return out;
  }

  Result<std::vector<std::pair<std::string, std::string>>> xattrs(Ino ino) override {
    std::lock_guard lock(ms_->mu());
    VSFS_TRY(getattr_locked(ino));
    std::vector<std::pair<std::string, std::string>> out;
    const uint16_t view = view_of(ino);
    if (view != 0 && view != kSnapshotsDirView) {
      const format::SnapshotRecord* r = ms_->snapshot_by_id_locked(view);
      if (r != nullptr && r->base_ino == base_of(ino)) {
        out.emplace_back("user.vsfs.changeid", std::to_string(r->change_id));
        out.emplace_back("user.vsfs.created", std::to_string(r->created_ns / 1000000000ull));
      }
    }
    return out;
  }

  void clone_range(Ino src, uint64_t src_offset, Ino dst, uint64_t dst_offset, uint64_t length,
                   Done<uint64_t> done) override {
    Result<void> check = ok_result();
    uint64_t src_size = 0;
    {
      std::lock_guard lock(ms_->mu());
      auto sa = getattr_locked(src);
      auto da = getattr_locked(dst);
      if (!sa.ok()) check = sa.take_error();
      else if (!da.ok()) check = da.take_error();
      else if (auto w = writable(dst); !w.ok()) check = w.take_error();
      else if (S_ISDIR(sa->mode) || S_ISDIR(da->mode)) check = make_error(EISDIR, ErrorKind::kInvalidArgument, "is a directory");
      else if (src_offset % kGrainBytes != dst_offset % kGrainBytes) {
        check = make_error(EOPNOTSUPP, ErrorKind::kUnsupported, "offsets differ within a grain");
      } else if (base_of(src) == base_of(dst) && view_of(src) == view_of(dst)) {
        check = make_error(EOPNOTSUPP, ErrorKind::kUnsupported, "clone within one file");
      }
      if (check.ok()) src_size = sa->size_bytes;
    }
    if (!check.ok()) return done(check.take_error());
    if (src_offset >= src_size || length == 0) return done(uint64_t{0});
    length = std::min(length, src_size - src_offset);
    if (dst_offset >= kMaxFileBytes || length > kMaxFileBytes - dst_offset) {
      return done(make_error(EFBIG, ErrorKind::kInvalidArgument, "beyond the largest disk"));
    }
    // Whole grains are shared; partial grains at the edges are copied (read + write).
    const GrainSplit g = split_at_grains(dst_offset, dst_offset + length);
    const uint64_t delta = dst_offset - src_offset;  // a multiple of the grain size
    auto join = std::make_shared<Join>(
        g.edges.size() + 1, [length, done = std::move(done)](Result<void> r) {
          done(r.ok() ? Result<uint64_t>(length) : Result<uint64_t>(r.take_error()));
        });
    auto part = [join](Result<void> r) { join->part(std::move(r)); };
    for (const auto& [off, len] : g.edges) {
      auto buf = std::make_shared<std::vector<uint8_t>>(len);
      read(src, off - delta, len, buf->data(), [this, part, dst, off, len, buf](Result<uint64_t> r) {
        if (!r.ok()) return part(r.take_error());
        std::fill(buf->begin() + static_cast<ptrdiff_t>(*r), buf->end(), 0);
        write(dst, off, buf->data(), len, [part, buf](Result<uint64_t> w) {
          part(w.ok() ? ok_result() : Result<void>(w.take_error()));
        });
      });
    }
    if (g.whole_first < g.whole_end) {
      auto op = std::make_shared<DataOp>(*this);  // the destination's range, exclusive
      op->ino = dst;
      op->first = g.whole_first;
      op->end = g.whole_end;
      op->done_void = part;
      // The source's range, shared: a write in flight there (which may be landing in
      // place) finishes first, and none starts until the grains are shared; otherwise
      // a write planned in place could land in a grain the clone already shares, and
      // the new file would change after the clone returned.
      auto src_op = std::make_shared<DataOp>(*this);
      src_op->ino = src;
      src_op->first = g.whole_first - delta / kGrainBytes;
      src_op->end = src_op->first + (g.whole_end - g.whole_first);
      const uint64_t end_bytes = dst_offset + length;
      auto share = [this, op, src_op, end_bytes] {
        Result<void> r = ok_result();
        if (src_op->first != op->first) {
          r = make_error(EOPNOTSUPP, ErrorKind::kUnsupported, "clone to another offset");
        } else {
          r = ms_->map_share_range_locked(base_of(src_op->ino), view_of(src_op->ino), op->ino,
                                          op->first, op->end - op->first);
        }
        if (r.ok()) {
          auto rec = ms_->inode_for_update_locked(op->ino);
          if (rec.ok()) {
            (*rec)->size_bytes = std::max((*rec)->size_bytes, end_bytes);
            (*rec)->mtime_ns = (*rec)->ctime_ns = realtime_ns();
          } else {
            r = rec.take_error();
          }
        }
        if (ms_->wants_commit_locked()) bg_cv_.notify_all();
        release_locked(src_op);
        release_locked(op);
        defer([op, r]() mutable { op->done_void(std::move(r)); });
      };
      {
        std::lock_guard lock(ms_->mu());
        // Counted as a change before either range is taken, so a snapshot cut never
        // waits for a clone that waits for it; the two ranges in inode order, so that
        // clones in opposite directions never each hold one and wait for the other.
        begin_change_locked(op, [this, op, src_op, share = std::move(share)]() mutable {
          const bool source_first = src_op->ino < op->ino;
          const auto& a = source_first ? src_op : op;
          const auto& b = source_first ? op : src_op;
          lock_range_locked(a, a == op, [this, b, op, share = std::move(share)]() mutable {
            lock_range_locked(b, b == op, std::move(share));
          });
        });
      }
      run_deferred();
    } else {
      part(ok_result());
    }
  }

  SpaceInfo space() override {
    std::lock_guard lock(ms_->mu());
    return space_locked();
  }

  DatastoreStats stats() override {
    DatastoreStats s;
    {
      std::lock_guard lock(ms_->mu());
      s = stats_;
      // First, before the lookups below load anything: the cache as the last release
      // of the mutex left it.
      const meta::MetaCacheStats mc = ms_->cache_stats_locked();
      s.meta_cache = MetaCacheInfo{mc.bytes, mc.budget_bytes, mc.unevictable_bytes, mc.blocks,
                                   mc.hits, mc.misses, mc.evictions,
                                   ms_->dir_indexes_locked(), ms_->dir_index_bytes_locked()};
      s.space = space_locked();
      auto c = ms_->counters_locked();
      s.journal_commits = c.commits;
      s.journal_bytes = c.journal_bytes;
      s.checkpoints = c.checkpoints;
      s.full_journal_checkpoints = c.full_checkpoints;
      s.release_pending = ms_->release_pending_locked();
      s.generation = ms_->generation_locked();
      s.format_rate_mib_s = options_.format_rate_mib_s;
      grain_waits_.fill(s.grain_queue);
      for (const auto& [ino, rt] : rt_) s.grain_queue.waiting_now += rt.locks.waiting();
      snapshot_waits_.fill(s.snapshot_queue);
      meta_waits_.fill(s.metadata_queue);
      journal_waits_.fill(s.journal_queue);
      s.journal_queue.waiting_now = journal_parked_.size();
      s.metadata_queue.waiting_now = ms_->fetch_waiters_locked();
      s.snapshot_queue.waiting_now = parked_.size();
      s.formatter_running = formatter_running_.load();
      s.cbt_nodes = cbt_nodes_.size();
      s.cbt_texts = cbt_texts_.size();
      s.cbt_text_bytes = cbt_text_bytes_;
      s.cbt_text_budget_bytes = options_.cbt_text_cache_bytes;
    }
    auto d = dev_->counters();
    for (int i = 0; i < device::kOpKinds; ++i) s.device_ops[i] = d.ops[i];
    s.device_in_flight = d.in_flight;
    s.device_in_flight_peak = d.in_flight_peak;
    s.device_queued_now = d.queued;
    return s;
  }

 private:
  struct InodeRt {
    RangeLock locks;
    uint32_t open_refs = 0;
    uint64_t hint_block = 0;
    uint64_t pending_mtime_ns = 0;  // in-place writes' time, not yet in the record
  };

  // One data request in flight.
  struct DataOp {
    explicit DataOp(DatastoreImpl& owner) : live(owner.live_ops_) {
      live.fetch_add(1, std::memory_order_relaxed);
    }
    // The data buffer goes back to the pool it came from. Counting the op out is the
    // last thing: close() may go on as soon as it sees none alive.
    ~DataOp() {
      if (pool != nullptr) pool->give(std::move(buf));
      live.fetch_sub(1, std::memory_order_release);
    }
    DataOp(const DataOp&) = delete;
    DataOp& operator=(const DataOp&) = delete;
    std::atomic<uint64_t>& live;
    BufferPool* pool = nullptr;
    Ino ino = 0;
    uint64_t offset = 0, length = 0;
    uint64_t first = 0, end = 0;  // grain range held
    // Reads: the caller's buffers. Stable writes: the caller's data, whole aligned grains
    // used in place (writev_stable).
    std::vector<iovec> user;
    AlignedBuffer buf;  // aligned data, grain `first` at offset 0 (take_buffer)
    Done<uint64_t> done_len;
    Done<void> done_void;
    RangeLock::Handle handle;
    // Writes: per grain of the range, the target and whether it was redirected.
    std::vector<uint64_t> target;
    std::vector<uint8_t> redirected;
    std::vector<std::pair<uint64_t, uint64_t>> fills;  // (grain index in op, old grain)
    bool zero_write = false;  // zero_range: never extends the file
    std::optional<uint64_t> new_size;  // unmap: truncate to this size
    bool counted = false;              // holds a place in changes_active_
    bool admitted = false;             // holds room in the open transaction
    bool retried = false;              // already waited once for space to be reclaimed
    bool meta_sync = false;            // a metadata fetch failed: look up waiting
    uint32_t meta_fetches = 0;         // blocks fetched for it (see lookup_locked)
    IoPlan plan;
    std::atomic<uint32_t> outstanding{0};
    std::atomic<int64_t> error{0};
  };

  // Cuts a snapshot of `dir`: waits for changes in flight, freezes the tree (O(1)),
  // lets the held-back changes go, then commits so the snapshot is durable on return.
  Result<Attr> create_snapshot(Ino dir, const std::string& name) {
    Result<Attr> out = make_error(EIO, ErrorKind::kIo, "unset");
    {
      std::unique_lock lock(ms_->mu());
      VSFS_TRY(writable());
      barrier_cv_.wait(lock, [&] { return !barrier_; });
      barrier_ = true;
      barrier_cv_.wait(lock, [&] { return changes_active_ == 0; });
      auto rec = ms_->create_snapshot_locked(dir, name, realtime_ns());
      barrier_ = false;
      barrier_cv_.notify_all();
      auto parked = std::move(parked_);
      parked_.clear();
      for (auto& p : parked) p();
      if (rec.ok()) {
        out = getattr_locked(make_ino(rec->id, dir));
      } else {
        out = rec.take_error();
      }
    }
    run_deferred();
    if (!out.ok()) return out;
    VSFS_TRY(ms_->commit());
    return out;
  }

  // Drops a snapshot's references (released in the background) and commits, so the
  // deletion is durable on return; the release itself resumes after a crash.
  Result<void> delete_snapshot(Ino dir, const std::string& name) {
    {
      std::lock_guard lock(ms_->mu());
      VSFS_TRY(writable());
      const format::SnapshotRecord* r = ms_->snapshot_by_name_locked(name);
      if (r == nullptr || r->base_ino != dir) {
        return make_error(ENOENT, ErrorKind::kNotFound, "no snapshot '{}' here", name);
      }
      const uint16_t id = r->id;
      VSFS_TRY(ms_->delete_snapshot_locked(name));
      drop_cbt_nodes_of_locked(id);
    }
    bg_cv_.notify_all();  // the releaser has work
    return ms_->commit();
  }

  // ---- the .cbt tree ----
  // DIR/.cbt/B/A/<path>: the changed extents of a disk of snapshot B since backup point A
  // (or "full"), as text. Nodes are interned: the same path always has the same inode
  // number (kCbtView, node id). Ids are never reused, so an id the kernel still holds
  // after its node went finds nothing (ENOENT). Deleting snapshot B drops the nodes of
  // its queries (as a backup point A it stays on record, and so do those of later
  // snapshots' queries since it). Texts are made on first use and kept while they fit in
  // cbt_text_cache_bytes, least recently read dropped first (the most recent always
  // stays, so that one reader of a larger text does not make it again for every read):
  // B is frozen and A's changeId fixed, so a text made again is the same.
  struct CbtNode {
    enum Kind : uint8_t { kRoot, kB, kA, kDir, kFile } kind = kRoot;
    Ino dir = 0;                      // the live directory whose .cbt this is
    uint16_t b = 0;                   // snapshot id of B
    std::optional<uint64_t> since;    // A's changeId; none for "full"
    uint64_t since_next_ino = 0;      // A's next_ino
    Ino base = 0;                     // inode in B's view (kA: B's base directory)
    std::string a_name;
    std::shared_ptr<const std::string> text;  // kFile, once made (and until dropped)
    std::list<uint64_t>::iterator text_lru;   // its id in cbt_texts_, with a text
    using Key = std::tuple<uint8_t, Ino, uint16_t, std::string, Ino>;
    Key key() const { return Key{kind, dir, b, a_name, base}; }
  };

  Ino cbt_node(CbtNode n) {
    auto [it, fresh] = cbt_index_.try_emplace(n.key(), next_cbt_id_);
    if (fresh) cbt_nodes_.emplace(next_cbt_id_++, std::move(n));
    return make_ino(kCbtView, it->second);
  }

  Result<CbtNode*> cbt_get(Ino ino) {
    auto it = cbt_nodes_.find(base_of(ino));
    if (it == cbt_nodes_.end()) return make_error(ENOENT, ErrorKind::kNotFound, "no such entry");
    return &it->second;
  }

  Result<Attr> cbt_getattr(Ino ino) {
    VSFS_ASSIGN_OR_RETURN(CbtNode * n, cbt_get(ino));
    VSFS_ASSIGN_OR_RETURN(auto dir, ms_->inode_locked(n->dir));
    Attr a = to_attr(*dir);
    a.ino = ino;
    a.nlink = 2;
    a.allocated_bytes = 0;
    a.size_bytes = 0;
    a.mode = S_IFDIR | 0555;
    if (n->kind == CbtNode::kFile) {
      VSFS_ASSIGN_OR_RETURN(auto text, cbt_text(ino));
      a.mode = S_IFREG | 0444;
      a.nlink = 1;
      a.size_bytes = text->size();  // the real length: tools read until EOF
    }
    return a;
  }

  // Older backup points of B: every record (live or deleted) of the same directory with a
  // smaller changeId.
  std::vector<const format::SnapshotRecord*> cbt_points(const format::SnapshotRecord& b) {
    std::vector<const format::SnapshotRecord*> out;
    for (const auto& r : ms_->snapshots_locked()) {
      if (r.base_ino == b.base_ino && r.change_id < b.change_id) out.push_back(&r);
    }
    return out;
  }

  Result<Attr> cbt_lookup(Ino parent, const std::string& name) {
    VSFS_ASSIGN_OR_RETURN(CbtNode * p, cbt_get(parent));
    CbtNode n = *p;
    n.text.reset();
    switch (p->kind) {
      case CbtNode::kRoot: {
        const format::SnapshotRecord* b = ms_->snapshot_by_name_locked(name);
        if (b == nullptr || b->base_ino != p->dir) {
          return make_error(ENOENT, ErrorKind::kNotFound, "no snapshot '{}' here", name);
        }
        n.kind = CbtNode::kB;
        n.b = b->id;
        return getattr_locked(cbt_node(std::move(n)));
      }
      case CbtNode::kB: {
        const format::SnapshotRecord* b = ms_->snapshot_by_id_locked(p->b);
        n.kind = CbtNode::kA;
        n.base = b->base_ino;
        n.a_name = name;
        if (name != "full") {
          const format::SnapshotRecord* a = nullptr;
          for (const auto* r : cbt_points(*b)) {
            if (r->name == name) a = r;
          }
          if (a == nullptr) return make_error(ENOENT, ErrorKind::kNotFound, "no backup point '{}'", name);
          n.since = a->change_id;
          n.since_next_ino = a->next_ino;
        }
        return getattr_locked(cbt_node(std::move(n)));
      }
      case CbtNode::kA:
      case CbtNode::kDir: {
        VSFS_ASSIGN_OR_RETURN(auto idx, ms_->dir_index_locked(p->base, p->b));
        auto it = idx->find(name);
        if (it == idx->end()) return make_error(ENOENT, ErrorKind::kNotFound, "no such entry");
        n.kind = it->second.type == DT_DIR ? CbtNode::kDir : CbtNode::kFile;
        n.base = it->second.ino;
        return getattr_locked(cbt_node(std::move(n)));
      }
      case CbtNode::kFile:
        return make_error(ENOTDIR, ErrorKind::kInvalidArgument, "not a directory");
    }
    return make_error(ENOENT, ErrorKind::kNotFound, "no such entry");
  }

  Result<std::vector<DirEntryInfo>> cbt_readdir(Ino ino) {
    VSFS_ASSIGN_OR_RETURN(CbtNode * p, cbt_get(ino));
    const CbtNode parent = *p;
    std::vector<DirEntryInfo> out;
    auto child = [&](CbtNode n, const std::string& name, uint32_t mode) {
      n.text.reset();
      out.push_back(DirEntryInfo{name, cbt_node(std::move(n)), mode});
    };
    switch (parent.kind) {
      case CbtNode::kRoot:
        for (const auto& r : ms_->snapshots_locked()) {
          if ((r.flags & format::kSnapDeleted) || r.base_ino != parent.dir) continue;
          CbtNode n = parent;
          n.kind = CbtNode::kB;
          n.b = r.id;
          child(n, r.name, S_IFDIR);
        }
        return out;
      case CbtNode::kB: {
        const format::SnapshotRecord* b = ms_->snapshot_by_id_locked(parent.b);
        CbtNode full = parent;
        full.kind = CbtNode::kA;
        full.base = b->base_ino;
        full.a_name = "full";
        child(full, "full", S_IFDIR);
        for (const auto* r : cbt_points(*b)) {
          CbtNode n = full;
          n.a_name = r->name;
          n.since = r->change_id;
          n.since_next_ino = r->next_ino;
          child(n, r->name, S_IFDIR);
        }
        return out;
      }
      case CbtNode::kA:
      case CbtNode::kDir: {
        VSFS_ASSIGN_OR_RETURN(auto list, ms_->dir_list_locked(parent.base, parent.b));
        for (auto& e : list) {
          CbtNode n = parent;
          n.kind = e.type == DT_DIR ? CbtNode::kDir : CbtNode::kFile;
          n.base = e.ino;
          child(n, e.name, e.type == DT_DIR ? S_IFDIR : S_IFREG);
        }
        return out;
      }
      case CbtNode::kFile:
        return make_error(ENOTDIR, ErrorKind::kInvalidArgument, "not a directory");
    }
    return out;
  }

  Result<std::shared_ptr<const std::string>> cbt_text(Ino ino) {
    VSFS_ASSIGN_OR_RETURN(CbtNode * n, cbt_get(ino));
    if (n->kind != CbtNode::kFile) return make_error(EISDIR, ErrorKind::kInvalidArgument, "is a directory");
    if (n->text) {
      cbt_texts_.splice(cbt_texts_.begin(), cbt_texts_, n->text_lru);
      return n->text;
    }
    VSFS_ASSIGN_OR_RETURN(auto extents,
                          ms_->changed_extents_locked(n->base, n->b, n->since, n->since_next_ino));
    std::string text;
    for (const auto& e : extents) {
      text += fmt::format("{} {} {}\n", e.offset_bytes, e.length_bytes, e.data ? "data" : "zero");
    }
    const uint64_t id = base_of(ino);
    n = &cbt_nodes_.at(id);
    n->text = std::make_shared<const std::string>(std::move(text));
    cbt_texts_.push_front(id);
    n->text_lru = cbt_texts_.begin();
    cbt_text_bytes_ += n->text->size();
    auto text_ptr = n->text;  // the drops below may take n's own reference
    while (cbt_text_bytes_ > options_.cbt_text_cache_bytes && cbt_texts_.size() > 1) {
      drop_cbt_text_locked(cbt_texts_.back());
    }
    return text_ptr;
  }

  void drop_cbt_text_locked(uint64_t id) {
    CbtNode& n = cbt_nodes_.at(id);
    cbt_text_bytes_ -= n.text->size();
    cbt_texts_.erase(n.text_lru);
    n.text.reset();
  }

  // The .cbt nodes (and texts) of snapshot B, which is being deleted. As a backup point
  // A of later snapshots it stays on record, and so do their nodes.
  void drop_cbt_nodes_of_locked(uint16_t b) {
    for (auto it = cbt_nodes_.begin(); it != cbt_nodes_.end();) {
      CbtNode& n = it->second;
      if (n.kind == CbtNode::kRoot || n.b != b) {
        ++it;
        continue;
      }
      if (n.text) drop_cbt_text_locked(it->first);
      cbt_index_.erase(n.key());
      it = cbt_nodes_.erase(it);
    }
  }

  Attr attr_locked(const format::InodeRecord& rec) {
    Attr a = to_attr(rec);
    if (auto it = rt_.find(rec.ino); it != rt_.end() && it->second.pending_mtime_ns > a.mtime_ns) {
      a.mtime_ns = a.ctime_ns = it->second.pending_mtime_ns;
    }
    return a;
  }

  // Writes lazily kept times into the inode record.
  Result<void> persist_times_locked(Ino ino) {
    auto it = rt_.find(ino);
    if (it == rt_.end() || it->second.pending_mtime_ns == 0) return ok_result();
    const uint64_t t = it->second.pending_mtime_ns;
    it->second.pending_mtime_ns = 0;
    VSFS_ASSIGN_OR_RETURN(auto rec, ms_->inode_for_update_locked(ino));
    rec->mtime_ns = std::max(rec->mtime_ns, t);
    rec->ctime_ns = std::max(rec->ctime_ns, t);
    return ok_result();
  }

  // Changes are refused in snapshots and in ".snapshots" directories (EROFS).
  Result<void> writable(Ino ino) {
    if (view_of(ino) != 0) return make_error(EROFS, ErrorKind::kState, "snapshots are read-only");
    return writable();
  }

  Result<void> writable() {
    if (options_.read_only) return make_error(EROFS, ErrorKind::kState, "datastore is read-only");
    if (ms_->failed()) return make_error(EIO, ErrorKind::kIo, "datastore stopped after an IO error");
    return ok_result();
  }

  // Answers a request that needs no IO; the callback runs once the mutex is dropped.
  void finish_now(const std::shared_ptr<DataOp>& op, Result<uint64_t> r) {
    defer([op, r = std::move(r)]() mutable { op->done_len(std::move(r)); });
  }

  SpaceInfo space_locked() {
    auto sp = ms_->space_locked();
    SpaceInfo s;
    s.total_bytes = sp.data_blocks * kBlockBytes;
    s.used_bytes = sp.used_grains * kGrainBytes;
    s.free_bytes = sp.free_grains * kGrainBytes;
    s.formatted_blocks = sp.formatted_blocks;
    s.to_format_blocks = sp.to_format_blocks;
    s.formatted_bytes_total = sp.formatted_bytes_total;
    s.inodes = ms_->live_inodes_locked();
    return s;
  }

  Result<meta::DirIndexEntry> find_entry(Ino parent, const std::string& name) {
    VSFS_ASSIGN_OR_RETURN(auto idx, ms_->dir_index_locked(parent));
    auto it = idx->find(name);
    if (it == idx->end()) return make_error(ENOENT, ErrorKind::kNotFound, "no such entry");
    return it->second;
  }

  Result<void> touch_dir(Ino dir) {
    VSFS_ASSIGN_OR_RETURN(auto rec, ms_->inode_for_update_locked(dir));
    rec->mtime_ns = rec->ctime_ns = realtime_ns();
    return ok_result();
  }

  Result<void> drop_link(Ino ino) {
    VSFS_ASSIGN_OR_RETURN(auto rec, ms_->inode_for_update_locked(ino));
    rec->ctime_ns = realtime_ns();
    if (rec->nlink > 0) --rec->nlink;
    if (rec->nlink > 0) return ok_result();
    auto it = rt_.find(ino);
    if (it != rt_.end() && (it->second.open_refs > 0 || !it->second.locks.idle())) {
      return ok_result();  // freed at the last release_ref
    }
    rt_.erase(ino);
    return ms_->free_inode_locked(ino);
  }

  Result<void> check_not_ancestor(Ino dir, Ino target) {
    for (Ino cur = target;;) {
      if (cur == dir) return make_error(EINVAL, ErrorKind::kInvalidArgument, "cannot move a directory into itself");
      if (cur == kRootIno) return ok_result();
      VSFS_ASSIGN_OR_RETURN(auto rec, ms_->inode_locked(cur));
      cur = rec->parent;
    }
  }

  Result<void> move_dir_links(const meta::DirIndexEntry& e, Ino from, Ino to) {
    if (e.type != DT_DIR) return ok_result();
    VSFS_ASSIGN_OR_RETURN(auto f, ms_->inode_for_update_locked(from));
    --f->nlink;
    VSFS_ASSIGN_OR_RETURN(auto t, ms_->inode_for_update_locked(to));
    ++t->nlink;
    VSFS_ASSIGN_OR_RETURN(auto d, ms_->inode_for_update_locked(e.ino));
    d->parent = to;
    return ok_result();
  }

  Result<Attr> make_node(Ino parent, const std::string& name, uint32_t mode, uint32_t uid,
                         uint32_t gid) {
    std::lock_guard lock(ms_->mu());
    VSFS_TRY(writable(parent));
    if (name == kSnapshotsDirName || name == kCbtDirName) {
      return make_error(EEXIST, ErrorKind::kExists, "reserved name");
    }
    if (!format::valid_name(name)) {
      return make_error(name.size() > format::kMaxNameBytes ? ENAMETOOLONG : EINVAL,
                        ErrorKind::kInvalidArgument, "invalid name");
    }
    VSFS_ASSIGN_OR_RETURN(auto idx, ms_->dir_index_locked(parent));
    if (idx->count(name)) return make_error(EEXIST, ErrorKind::kExists, "'{}' exists", name);
    const uint64_t now = realtime_ns();
    VSFS_ASSIGN_OR_RETURN(uint64_t ino, ms_->alloc_inode_locked(mode, uid, gid, parent, now));
    const bool dir = S_ISDIR(mode);
    VSFS_TRY(ms_->dir_add_locked(parent, name, ino, dir ? DT_DIR : DT_REG));
    VSFS_ASSIGN_OR_RETURN(auto prec, ms_->inode_for_update_locked(parent));
    prec->mtime_ns = prec->ctime_ns = now;
    if (dir) ++prec->nlink;
    VSFS_ASSIGN_OR_RETURN(auto rec, ms_->inode_locked(ino));
    Attr a = to_attr(*rec);
    VSFS_TRY(after_change());
    return a;
  }

  Result<void> after_change() {
    if (ms_->wants_commit_locked()) bg_cv_.notify_all();
    return ok_result();
  }

  void acquire_locked(const std::shared_ptr<DataOp>& op, bool exclusive, RangeLock::Start start) {
    if (!exclusive) return lock_range_locked(op, false, std::move(start));
    begin_change_locked(op, [this, op, start = std::move(start)]() mutable {
      lock_range_locked(op, true, [this, op, start = std::move(start)]() mutable {
        admit_locked(op, std::move(start));
      });
    });
  }

  // Runs `start` once the open transaction has room for one more change. The op holds
  // its grain range meanwhile, so requests behind it in its disk's queue stay behind it.
  // Each change admitted and not yet ended may still dirty up to kChangeBlocksMax
  // blocks. When there is no room even for one, the transaction is at least a quarter
  // of the journal, so the committer is due (wants_commit_locked) and its commit makes
  // room; otherwise a change in progress ends and makes room.
  void admit_locked(const std::shared_ptr<DataOp>& op, RangeLock::Start start) {
    if ((changes_admitted_ + 1) * kChangeBlocksMax > ms_->transaction_room_locked()) {
      const uint64_t since = monotonic_ns();
      journal_parked_.push_back([this, op, since, start = std::move(start)]() mutable {
        journal_waits_.add((monotonic_ns() - since) / 1000);
        admit_locked(op, std::move(start));
      });
      bg_cv_.notify_all();
      return;
    }
    ++changes_admitted_;
    op->admitted = true;
    start();
  }

  // Counts `op` as a change in progress (released by release_locked), then runs
  // `start`; a snapshot being cut holds new changes back until it is taken.
  void begin_change_locked(const std::shared_ptr<DataOp>& op, std::function<void()> start) {
    if (barrier_) {
      const uint64_t since = monotonic_ns();
      parked_.push_back([this, op, since, start = std::move(start)]() mutable {
        snapshot_waits_.add((monotonic_ns() - since) / 1000);
        begin_change_locked(op, std::move(start));
      });
      return;
    }
    ++changes_active_;
    op->counted = true;
    start();
  }

  // Changes held back for room in the transaction try again (a commit made room, or a
  // change in progress ended).
  void resume_journal_parked_locked() {
    if (journal_parked_.empty()) return;
    auto parked = std::move(journal_parked_);
    journal_parked_.clear();
    for (auto& p : parked) p();
  }

  // Takes `op`'s grain range of its inode; `start` runs once it is held.
  void lock_range_locked(const std::shared_ptr<DataOp>& op, bool exclusive, RangeLock::Start start) {
    InodeRt& rt = rt_[op->ino];
    rt.locks.acquire(GrainRange{op->first, op->end, exclusive}, std::move(start), &op->handle);
  }

  // The metadata queue. A request's map lookup (which changes nothing) runs without
  // waiting for the device: when a map node or refcount block is not cached, the lookup
  // fails with kWouldBlock and the request waits in that block's fetch queue
  // (MetaStore::fetch_missed_locked) while it keeps its grain range; once the block is
  // in, `restart` plans the request again from its lookup. Requests whose metadata is
  // cached go on meanwhile: a cold map never stalls the IO thread or the mutex. After a
  // failed fetch the request looks up waiting, so it gets the error as before.
  // A request that needs more blocks than the cache may keep at once (a large request
  // with a small meta_cache_mib) could lose the first ones it fetched before the last
  // arrives, and fetch forever: after kMetaFetchesMax fetches it also looks up waiting,
  // which reads what is missing under the mutex, where nothing is evicted.
  static constexpr uint32_t kMetaFetchesMax = 16;
  template <typename Lookup>
  Result<void> lookup_locked(const std::shared_ptr<DataOp>& op, Lookup&& lookup) {
    if (op->meta_sync) return lookup();
    meta::MetaStore::NoWaitScope no_wait(*ms_);
    return lookup();
  }

  void wait_for_metadata_locked(const std::shared_ptr<DataOp>& op, std::function<void()> restart) {
    const uint64_t since = monotonic_ns();
    ms_->fetch_missed_locked([this, op, since, restart = std::move(restart)](Result<void> r) {
      {
        std::lock_guard lock(ms_->mu());
        meta_waits_.add((monotonic_ns() - since) / 1000);
        if (!r.ok() || ++op->meta_fetches >= kMetaFetchesMax) op->meta_sync = true;
        restart();
      }
      run_deferred();
    });
  }

  // Gives `op` a data buffer of at least `bytes` from the pool (old contents), returned
  // when the op goes.
  void take_buffer(const std::shared_ptr<DataOp>& op, uint64_t bytes) {
    if (op->pool != nullptr) op->pool->give(std::move(op->buf));
    op->buf = buffers_.take(bytes);
    op->pool = &buffers_;
  }

  // Calls fn(i, memory of grain i) for the op's first n grains: in its aligned buffer
  // when it has one, else in the caller's buffers (whole aligned grains: grain_direct).
  template <typename Fn>
  static void for_each_grain(DataOp& op, uint64_t n, Fn&& fn) {
    if (op.buf.size() > 0) {
      for (uint64_t i = 0; i < n; ++i) fn(i, op.buf.data() + i * kGrainBytes);
      return;
    }
    uint64_t i = 0;
    for (const iovec& v : op.user) {
      for (uint64_t at = 0; at < v.iov_len && i < n; at += kGrainBytes) {
        fn(i++, static_cast<uint8_t*>(v.iov_base) + at);
      }
    }
    VSFS_ASSERT(i == n);
  }

  // Releases the op's range; starts waiters that now hold theirs. Mutex held.
  void release_locked(const std::shared_ptr<DataOp>& op) {
    auto it = rt_.find(op->ino);
    VSFS_ASSERT(it != rt_.end());
    if (op->counted) {
      op->counted = false;
      if (--changes_active_ == 0 && barrier_) barrier_cv_.notify_all();
    }
    if (op->admitted) {
      op->admitted = false;
      --changes_admitted_;
      resume_journal_parked_locked();
    }
    for (auto& g : it->second.locks.release(op->handle)) {
      grain_waits_.add(g.waited_us);
      g.start();
    }
    if (it->second.locks.idle() && it->second.open_refs == 0) {
      auto rec = ms_->inode_locked(op->ino);
      if (rec.ok() && (*rec)->nlink == 0) {
        auto freed = ms_->free_inode_locked(op->ino);
        if (!freed.ok()) VSFS_LOG_ERROR("freeing inode {}: {}", op->ino, freed.error().to_string());
        rt_.erase(it);
      } else if (it->second.pending_mtime_ns == 0) {
        keep_hint_locked(op->ino, it->second.hint_block);
        rt_.erase(it);  // keep entries that hold lazily kept times
      }
    }
  }

  // Submits the runs of op->plan; `complete` runs once all finish (mutex not held).
  void submit_plan(const std::shared_ptr<DataOp>& op, std::function<void()> complete) {
    auto& runs = op->plan.runs;
    if (runs.empty()) {
      complete();
      return;
    }
    op->outstanding = static_cast<uint32_t>(runs.size());
    std::vector<IoRequest> reqs;
    reqs.reserve(runs.size());
    auto shared_complete = std::make_shared<std::function<void()>>(std::move(complete));
    for (auto& r : runs) {
      IoRequest q;
      q.kind = r.kind;
      q.offset_bytes = r.grain * kGrainBytes;
      q.length_bytes = r.count * kGrainBytes;
      q.iov = r.iov.data();
      q.iovcnt = static_cast<int>(r.iov.size());
      q.done = [op, shared_complete](int64_t res) {
        if (res < 0) {
          int64_t zero = 0;
          op->error.compare_exchange_strong(zero, res);
        }
        if (--op->outstanding == 0) (*shared_complete)();
      };
      reqs.push_back(std::move(q));
    }
    dev_->submit(reqs);
  }

  // ---- reads ----

  void start_read_locked(const std::shared_ptr<DataOp>& op) {
    // Runs with the mutex held (from acquire or a release): plan, then submit after
    // the lock is dropped by deferring to the pending list.
    const uint64_t n = op->end - op->first;
    const bool direct = grain_direct(op->offset, op->length, op->user.data(),
                                     static_cast<int>(op->user.size()));
    if (!direct) take_buffer(op, n * kGrainBytes);
    std::vector<GrainLookup> map;
    auto looked = lookup_locked(op, [&] {
      return ms_->map_lookup_range_locked(base_of(op->ino), op->first, n, view_of(op->ino),
                                          false, map);
    });
    if (!looked.ok() && looked.error().kind == ErrorKind::kWouldBlock) {
      return wait_for_metadata_locked(op, [this, op] { start_read_locked(op); });
    }
    if (looked.ok()) looked = check_mapped_locked(op, map);
    if (!looked.ok()) {
      // Nothing is read: the answer is the lookup's own error (EUCLEAN for a damaged map).
      release_locked(op);
      defer([op, err = looked.take_error()]() mutable { op->done_len(std::move(err)); });
      return;
    }
    for_each_grain(*op, n, [&](uint64_t i, uint8_t* g) {
      if (map[i].state == SlotState::kMapped) {
        op->plan.add(OpKind::kRead, map[i].grain, g);
      } else {
        std::memset(g, 0, kGrainBytes);
      }
    });
    defer([this, op, direct] {
      submit_plan(op, [this, op, direct] {
        if (op->error == 0 && !direct) {
          scatter(op->buf.data() + (op->offset - op->first * kGrainBytes), op->length,
                  op->user);
        }
        {
          std::lock_guard lock(ms_->mu());
          release_locked(op);
        }
        run_deferred();
        if (op->error != 0) {
          op->done_len(err_from_device(op->error, "read"));
        } else {
          op->done_len(op->length);
        }
      });
    });
  }

  // A map entry is followed only to a data grain in use (MetaStore::check_data_grain_locked):
  // a damaged but checksum-valid map that points at a metadata grain or into a free block
  // answers EUCLEAN, instead of handing out what is there (a read, or the fill of a partial
  // write) or overwriting it (a write in place).
  Result<void> check_mapped_locked(const std::shared_ptr<DataOp>& op,
                                   const std::vector<GrainLookup>& map) {
    for (uint64_t i = 0; i < map.size(); ++i) {
      if (map[i].state != SlotState::kMapped) continue;
      if (auto c = ms_->check_data_grain_locked(map[i].grain); !c.ok()) {
        return corruption(fmt::format("disk {}, grain {} of the disk: {}", op->ino,
                                      op->first + i, c.error().message));
      }
    }
    return ok_result();
  }

  // ---- writes ----

  void start_write_locked(const std::shared_ptr<DataOp>& op) {
    const uint64_t n = op->end - op->first;
    const uint64_t gen = ms_->generation_locked();
    op->target.assign(n, 0);
    op->redirected.assign(n, 0);
    op->fills.clear();
    op->plan.runs.clear();
    const uint64_t head_pad = op->offset - op->first * kGrainBytes;
    const uint64_t tail_end = op->offset + op->length - op->first * kGrainBytes;
    std::vector<GrainLookup> map;
    Result<void> failed = lookup_locked(
        op, [&] { return ms_->map_lookup_range_locked(op->ino, op->first, n, 0, true, map); });
    if (!failed.ok() && failed.error().kind == ErrorKind::kWouldBlock) {
      return wait_for_metadata_locked(op, [this, op] { start_write_locked(op); });
    }
    if (failed.ok()) failed = check_mapped_locked(op, map);
    if (failed.ok()) failed = choose_targets_locked(op, map, gen, nullptr);
    if (!failed.ok() && failed.error().kind == ErrorKind::kNoSpace && !op->retried &&
        ms_->space_reclaimable_locked()) {
      // Freed space is waiting for the releaser or a checkpoint: the committer reclaims
      // it and starts this write again (a write that fits never fails for that).
      op->retried = true;
      release_locked(op);
      nospace_.push_back(op);
      bg_cv_.notify_all();
      return;
    }
    std::vector<uint64_t> restamped;
    if (!failed.ok() && failed.error().kind == ErrorKind::kNoSpace) {
      // No free grain. A grain this disk alone holds needs none, only a new change stamp
      // (redirecting is how a write normally changes the stamp and the map in one
      // transaction): the stamp is committed first, then the grain is written in place.
      // A crash in between lists a grain as changed that did not change, which is safe.
      failed = choose_targets_locked(op, map, gen, &restamped);
      for (uint64_t i : restamped) {
        if (!failed.ok()) break;
        auto alone = ms_->map_restamp_locked(op->ino, op->first + i);
        if (!alone.ok()) {
          failed = alone.take_error();
        } else if (!*alone) {
          // A snapshot still shares it: it needs a new grain after all.
          failed = make_error(ENOSPC, ErrorKind::kNoSpace, "no free grain");
        }
      }
    }
    if (!failed.ok()) return fail_write_locked(op, failed.take_error());
    // Counted, and the partial edge grains prepared: their old contents are read
    // before the write, or they are zeros.
    for (uint64_t i = 0; i < n; ++i) {
      ++(op->redirected[i] ? stats_.redirected_grain_writes : stats_.in_place_grain_writes);
      const GrainLookup* l = &map[i];
      const bool partial = (i == 0 && head_pad != 0) ||
                           (i == n - 1 && tail_end < n * kGrainBytes);
      if (partial) {
        if (l->state == SlotState::kMapped) {
          op->fills.emplace_back(i, l->grain);
        } else {
          // Unmapped or zero: the rest of the grain is zeros.
          uint8_t* g = op->buf.data() + i * kGrainBytes;
          if (i == 0) std::memset(g, 0, head_pad);
          if (i == n - 1 && tail_end < n * kGrainBytes) {
            std::memset(op->buf.data() + tail_end, 0, n * kGrainBytes - tail_end);
          }
        }
      }
    }
    stats_.restamped_grain_writes += restamped.size();
    if (restamped.empty()) {
      defer([this, op] { write_fill_phase(op); });
      return;
    }
    // After the commit (the committer's lock comes before the metadata mutex: queue the
    // wait once this one is released).
    defer([this, op] {
      Done<void> after = [this, op](Result<void> r) {
        if (r.ok()) return write_fill_phase(op);
        {
          std::lock_guard lock(ms_->mu());
          fail_write_locked(op, Error(r.error()));
        }
        run_deferred();
      };
      {
        // Without background threads, the owner's next commit step answers it
        // (run_background_step).
        std::lock_guard l(bg_mu_);
        if (!stop_) {
          fsync_waiters_.push_back(std::move(after));
          after = nullptr;
        }
      }
      if (after == nullptr) return bg_cv_.notify_all();
      // No committer (closing): nothing will commit the stamp.
      after(make_error(EIO, ErrorKind::kIo, "the datastore is closing"));
    });
  }

  // Chooses where each grain of `op` is written: in place when the disk alone holds it
  // and its stamp is current; with `restamped`, also when only its stamp is stale (the
  // index is added there); else a newly reserved grain. On failure (kNoSpace: no free
  // grain) nothing stays reserved.
  Result<void> choose_targets_locked(const std::shared_ptr<DataOp>& op,
                                     const std::vector<GrainLookup>& map, uint64_t gen,
                                     std::vector<uint64_t>* restamped) {
    unreserve_all_locked(op);
    InodeRt& rt = rt_[op->ino];
    if (rt.hint_block == 0) {
      // A disk without runtime state since its last request goes on where it stopped.
      if (auto it = idle_hints_.find(op->ino); it != idle_hints_.end()) rt.hint_block = it->second;
    }
    uint64_t& hint = rt.hint_block;
    for (uint64_t i = 0; i < map.size(); ++i) {
      const GrainLookup& l = map[i];
      const bool alone = l.state == SlotState::kMapped && l.exclusive;
      if (alone && (l.stamp == gen || restamped != nullptr)) {
        op->target[i] = l.grain;
        if (l.stamp != gen) restamped->push_back(i);
        continue;
      }
      auto g = ms_->reserve_data_grain_locked(hint);
      if (!g.ok()) {
        unreserve_all_locked(op);
        if (restamped != nullptr) restamped->clear();
        return g.take_error();
      }
      op->target[i] = *g;
      op->redirected[i] = 1;
    }
    return ok_result();
  }

  // Ends a write that never reached the device: its reservations and range go, and it is
  // answered with `err` once the mutex is released (run_deferred).
  void fail_write_locked(const std::shared_ptr<DataOp>& op, Error err) {
    unreserve_all_locked(op);
    release_locked(op);
    defer([op, err = std::move(err)]() mutable { op->done_len(std::move(err)); });
  }

  void unreserve_all_locked(const std::shared_ptr<DataOp>& op) {
    for (size_t i = 0; i < op->redirected.size(); ++i) {
      if (op->redirected[i] && op->target[i] != 0) ms_->unreserve_locked(op->target[i]);
      op->redirected[i] = 0;
    }
  }

  // Reads the old contents of partial edge grains, then merges and writes.
  void write_fill_phase(const std::shared_ptr<DataOp>& op) {
    if (op->fills.empty()) return write_data_phase(op);
    auto old = std::make_shared<AlignedBuffer>(op->fills.size() * kGrainBytes, false);
    for (size_t k = 0; k < op->fills.size(); ++k) {
      op->plan.add(OpKind::kRead, op->fills[k].second, old->data() + k * kGrainBytes);
    }
    submit_plan(op, [this, op, old] {
      op->plan.runs.clear();
      if (op->error != 0) return write_complete(op);
      const uint64_t n = op->end - op->first;
      const uint64_t head_pad = op->offset - op->first * kGrainBytes;
      const uint64_t tail_end = op->offset + op->length - op->first * kGrainBytes;
      for (size_t k = 0; k < op->fills.size(); ++k) {
        const uint64_t i = op->fills[k].first;
        const uint8_t* src = old->data() + k * kGrainBytes;
        uint8_t* dst = op->buf.data() + i * kGrainBytes;
        if (i == 0 && head_pad != 0) std::memcpy(dst, src, head_pad);
        if (i == n - 1 && tail_end < n * kGrainBytes) {
          const uint64_t in_grain = tail_end - i * kGrainBytes;
          std::memcpy(dst + in_grain, src + in_grain, kGrainBytes - in_grain);
        }
      }
      write_data_phase(op);
    });
  }

  void write_data_phase(const std::shared_ptr<DataOp>& op) {
    const uint64_t n = op->end - op->first;
    // The device only reads a write's buffer.
    for_each_grain(*op, n,
                   [&](uint64_t i, uint8_t* g) { op->plan.add(OpKind::kWrite, op->target[i], g); });
    submit_plan(op, [this, op] { write_complete(op); });
  }

  void write_complete(const std::shared_ptr<DataOp>& op) {
    Result<uint64_t> result = op->length;
    {
      std::lock_guard lock(ms_->mu());
      if (op->error != 0) {
        unreserve_all_locked(op);
        result = err_from_device(op->error, "write");
      } else {
        Result<void> r = ok_result();
        bool mapped_new = false;
        for (uint64_t i = 0; i < op->target.size() && r.ok(); ++i) {
          if (op->redirected[i]) {
            r = ms_->map_install_locked(op->ino, op->first + i, op->target[i]);
            op->redirected[i] = 0;
            mapped_new = true;
          }
        }
        const uint64_t end = op->offset + op->length;
        auto cur = ms_->inode_locked(op->ino);
        const bool grows = cur.ok() && !op->zero_write && end > (*cur)->size_bytes;
        if (r.ok() && !mapped_new && !grows) {
          // A pure in-place overwrite changes no metadata: its times are kept in memory
          // and written with the inode's next change or its last close (lazytime).
          rt_[op->ino].pending_mtime_ns = realtime_ns();
        } else if (r.ok()) {
          auto rec = ms_->inode_for_update_locked(op->ino);
          if (rec.ok()) {
            if (grows) (*rec)->size_bytes = end;
            (*rec)->mtime_ns = (*rec)->ctime_ns = realtime_ns();
            rt_[op->ino].pending_mtime_ns = 0;
          } else {
            r = rec.take_error();
          }
        }
        if (!r.ok()) {
          unreserve_all_locked(op);
          result = r.take_error();
        }
        if (ms_->wants_commit_locked()) bg_cv_.notify_all();
      }
      release_locked(op);
    }
    run_deferred();
    op->done_len(std::move(result));
  }

  // Writes zeros over [offset, offset+length) of one grain (or a few), never growing the
  // file. Grains that already read zeros are left alone.
  void zero_range(Ino ino, uint64_t offset, uint64_t length, Done<void> done) {
    Result<void> check = ok_result();
    bool any = false;
    {
      std::lock_guard lock(ms_->mu());
      const uint64_t first = offset / kGrainBytes;
      std::vector<GrainLookup> map;
      check = ms_->map_lookup_range_locked(ino, first,
                                           div_round_up(offset + length, kGrainBytes) - first, 0,
                                           false, map);
      for (const auto& l : map) any = any || l.state == SlotState::kMapped;
    }
    if (!check.ok() || !any) return done(std::move(check));
    auto op = std::make_shared<DataOp>(*this);
    op->ino = ino;
    op->zero_write = true;
    op->done_len = [done = std::move(done)](Result<uint64_t> r) {
      done(r.ok() ? ok_result() : Result<void>(r.take_error()));
    };
    op->offset = offset;
    op->length = length;
    op->first = offset / kGrainBytes;
    op->end = div_round_up(offset + length, kGrainBytes);
    take_buffer(op, (op->end - op->first) * kGrainBytes);
    std::memset(op->buf.data(), 0, (op->end - op->first) * kGrainBytes);
    {
      std::lock_guard lock(ms_->mu());
      acquire_locked(op, true, [this, op] { start_write_locked(op); });
    }
    run_deferred();
  }

  // Unmaps grains [first, end) under the range lock; with new_size, sets the size too.
  void unmap_range(Ino ino, uint64_t first, uint64_t end, std::optional<uint64_t> new_size,
                   Done<void> done) {
    auto op = std::make_shared<DataOp>(*this);
    op->ino = ino;
    op->first = first;
    op->end = std::max(first + 1, end);
    op->new_size = new_size;
    op->done_void = std::move(done);
    {
      std::lock_guard lock(ms_->mu());
      unmap_range_locked(op);
    }
    run_deferred();
  }

  void unmap_range_locked(const std::shared_ptr<DataOp>& op) {
    if (auto w = writable(op->ino); !w.ok()) {
      auto e = w.take_error();
      defer([op, e]() mutable { op->done_void(std::move(e)); });
      return;
    }
    acquire_locked(op, true, [this, op] {
      Result<void> r = ok_result();
      if (op->end > op->first) r = ms_->map_unmap_range_locked(op->ino, op->first, op->end - op->first);
      if (r.ok()) {
        auto rec = ms_->inode_for_update_locked(op->ino);
        if (rec.ok()) {
          if (op->new_size) (*rec)->size_bytes = *op->new_size;
          (*rec)->mtime_ns = (*rec)->ctime_ns = realtime_ns();
        } else {
          r = rec.take_error();
        }
      }
      if (ms_->wants_commit_locked()) bg_cv_.notify_all();
      release_locked(op);
      defer([op, r]() mutable { op->done_void(std::move(r)); });
    });
  }

  // Work that must run without the mutex (IO submission, callbacks), queued while it is
  // held. Per thread, so each thread runs what it queued.
  static thread_local std::vector<std::function<void()>> deferred_;
  void defer(std::function<void()> fn) { deferred_.push_back(std::move(fn)); }
  static void run_deferred() {
    while (!deferred_.empty()) {
      auto batch = std::move(deferred_);
      deferred_.clear();
      for (auto& fn : batch) fn();
    }
  }

  // ---- background ----

  // The background work is three kinds of step, each run by its own thread, or, when
  // the datastore was opened without background threads, by the owner through
  // run_background_step() (so that a test decides when each runs).
  Result<bool> run_background_step(BackgroundStep step) override {
    if (options_.start_background || options_.read_only) {
      return make_error(EINVAL, ErrorKind::kInvalidArgument,
                        "background steps are run by the datastore's own threads");
    }
    switch (step) {
      case BackgroundStep::kCommit: return commit_round(false);
      case BackgroundStep::kCommitIfWanted: return commit_round(true);
      case BackgroundStep::kRelease: return ms_->release_step(kReleaseBudget);
      case BackgroundStep::kFormat: return format_one_block();
    }
    return false;
  }

  // One round of the committer: writes that waited for space are retried once space is
  // reclaimed, the open transaction is committed, the fsyncs (and restamps) that waited
  // for it are answered, and a checkpoint follows when one would free something. With
  // only_if_wanted, nothing happens unless someone waits or the transaction is large.
  // Returns whether it ran, or the commit's (or checkpoint's) error.
  Result<bool> commit_round(bool only_if_wanted) {
    bool waiting;
    {
      std::lock_guard l(bg_mu_);
      waiting = !fsync_waiters_.empty();
    }
    std::vector<std::shared_ptr<DataOp>> retry;
    {
      std::lock_guard m(ms_->mu());
      if (only_if_wanted && !waiting && nospace_.empty() && !ms_->wants_commit_locked()) {
        return false;
      }
      retry.swap(nospace_);
    }
    if (!retry.empty()) {
      auto reclaimed = ms_->reclaim_space();
      if (!reclaimed.ok()) VSFS_LOG_ERROR("reclaiming space: {}", reclaimed.error().to_string());
      {
        std::lock_guard m(ms_->mu());
        for (auto& op : retry) acquire_locked(op, true, [this, op] { start_write_locked(op); });
      }
      run_deferred();
    }
    VSFS_TRY(commit_and_answer());
    bool checkpoint;
    {
      std::lock_guard m(ms_->mu());
      checkpoint = ms_->wants_checkpoint_locked();
    }
    if (checkpoint) {
      // Freed blocks become allocatable (and formattable) only after a checkpoint.
      auto c = ms_->checkpoint(false);
      if (!c.ok()) {
        VSFS_LOG_ERROR("checkpoint failed: {}", c.error().to_string());
        return c.take_error();
      }
    }
    return true;
  }

  void committer_loop() {
    std::unique_lock l(bg_mu_);
    while (!stop_) {
      bg_cv_.wait_for(l, std::chrono::milliseconds(options_.commit_interval_ms), [&] {
        if (stop_ || !fsync_waiters_.empty()) return true;
        std::lock_guard m(ms_->mu());
        return ms_->wants_commit_locked() || !nospace_.empty();
      });
      l.unlock();
      (void)commit_round(false);  // a failure is logged, and answered to the waiters
      l.lock();
    }
    l.unlock();
    answer_late_fsyncs();
  }

  // Commits, answers the fsyncs (and restamps) that waited for this commit, and lets
  // the changes held back for room in the transaction go on (after a failed commit
  // too: they fail then).
  Result<void> commit_and_answer() {
    std::vector<Done<void>> waiters;
    {
      std::lock_guard l(bg_mu_);
      waiters = std::move(fsync_waiters_);
      fsync_waiters_.clear();
    }
    auto r = ms_->commit();
    if (!r.ok()) VSFS_LOG_ERROR("journal commit failed: {}", r.error().to_string());
    for (auto& w : waiters) w(r.ok() ? ok_result() : Result<void>(Error(r.error())));
    {
      std::lock_guard m(ms_->mu());
      resume_journal_parked_locked();
    }
    run_deferred();
    return r;
  }

  // fsyncs (and restamps) queued, or changes held back, when the committer has stopped
  // (close): the final commit answers them.
  void answer_late_fsyncs() {
    bool waiting;
    {
      std::lock_guard l(bg_mu_);
      waiting = !fsync_waiters_.empty();
    }
    {
      std::lock_guard m(ms_->mu());
      waiting |= !journal_parked_.empty();
    }
    if (waiting) (void)commit_and_answer();
  }

  // Moves freed blocks from the to-be-formatted list to the formatted one: a hole punched
  // in a file (the space returns to the host filesystem) or a discard where the device
  // reads discarded space as zeros, else write-zeroes. At most format_rate_mib_s, and it
  // waits (a while) for foreground IO in flight to drain before each block.
  void formatter_loop() {
    const auto per_block = std::chrono::microseconds(1000000 / options_.format_rate_mib_s);
    std::unique_lock l(bg_mu_);
    while (!stop_) {
      l.unlock();
      for (int i = 0; i < 25 && dev_->counters().in_flight > 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      auto r = format_one_block();
      l.lock();
      if (r.ok() && !*r) {
        formatter_running_ = false;
        bg_cv_.wait_for(l, std::chrono::milliseconds(200), [&] { return stop_; });
        continue;
      }
      bg_cv_.wait_for(l, r.ok() ? per_block : std::chrono::microseconds(1000000),
                      [&] { return stop_; });
    }
    formatter_running_ = false;
  }

  // Formats one block from the to-be-formatted list; false when there is none.
  Result<bool> format_one_block() {
    uint64_t block = 0;
    {
      std::lock_guard m(ms_->mu());
      if (!ms_->failed()) block = ms_->take_block_to_format_locked();
    }
    if (block == 0) return false;
    formatter_running_ = true;
    const uint64_t offset = block * kBlockBytes;
    auto r = dev_->discard_zeroes() ? device::discard_sync(*dev_, offset, kBlockBytes)
                                    : device::write_zeroes_sync(*dev_, offset, kBlockBytes);
    std::lock_guard m(ms_->mu());
    if (r.ok()) r = ms_->block_formatted_locked(block);
    if (!r.ok()) {
      ms_->block_format_failed_locked(block);
      VSFS_LOG_ERROR("formatting storage block {}: {}", block, r.error().to_string());
      return r.take_error();
    }
    return true;
  }

  void releaser_loop() {
    std::unique_lock l(bg_mu_);
    while (!stop_) {
      l.unlock();
      auto more = ms_->release_step(kReleaseBudget);
      l.lock();
      if (!more.ok()) {
        VSFS_LOG_ERROR("background release: {}", more.error().to_string());
        bg_cv_.wait_for(l, std::chrono::seconds(5), [&] { return stop_; });
      } else if (*more) {
        bg_cv_.notify_all();  // let the committer see a growing transaction
        bg_cv_.wait_for(l, std::chrono::milliseconds(1), [&] { return stop_; });
      } else {
        bg_cv_.wait_for(l, std::chrono::milliseconds(200), [&] { return stop_; });
      }
    }
  }

  std::unique_ptr<device::Device> dev_;
  std::unique_ptr<MetaStore> ms_;
  OpenOptions options_;
  bool closed_ = false;
  // Data ops alive (DataOp's constructor and destructor); close() waits for none. Both
  // this and buffers_ (where an op's buffer goes back) are declared before every member
  // that may hold an op, so that they outlive them.
  std::atomic<uint64_t> live_ops_{0};
  // Write and bounce buffers of data requests (thread-safe): reused, not reallocated.
  BufferPool buffers_{kBufferRetainBytes};

  std::unordered_map<Ino, InodeRt> rt_;  // guarded by ms_->mu()
  // Allocation hints of disks whose runtime state went with their last request (no open
  // reference: a caller of the API that never calls open_ref). Without them each such
  // write would take a new storage block and leave it almost empty. Bounded: beyond
  // kIdleHintsMax disks the oldest entry goes (that disk starts a new block next time).
  // A hint is only a preference: reserve_data_grain_locked checks the block it names.
  static constexpr size_t kIdleHintsMax = 4096;
  std::unordered_map<Ino, uint64_t> idle_hints_;  // guarded by ms_->mu()
  std::deque<Ino> idle_hint_order_;               // its keys, oldest first; ms_->mu()
  void keep_hint_locked(Ino ino, uint64_t hint_block) {
    if (hint_block == 0) return;
    auto [it, added] = idle_hints_.try_emplace(ino, hint_block);
    it->second = hint_block;
    if (!added) return;
    idle_hint_order_.push_back(ino);
    if (idle_hints_.size() > kIdleHintsMax) {
      idle_hints_.erase(idle_hint_order_.front());
      idle_hint_order_.pop_front();
    }
  }
  // Guarded by ms_->mu(): the .cbt trees' nodes by id, their ids by path, the next id.
  std::unordered_map<uint64_t, CbtNode> cbt_nodes_;
  std::map<CbtNode::Key, uint64_t> cbt_index_;
  uint64_t next_cbt_id_ = 1;
  std::list<uint64_t> cbt_texts_;  // guarded by ms_->mu(): nodes with a text, most recent first
  uint64_t cbt_text_bytes_ = 0;  // guarded by ms_->mu(): their texts' sizes
  DatastoreStats stats_;                 // guarded by ms_->mu()

  // Snapshot barrier, guarded by ms_->mu(): while set, new changes park in parked_.
  bool barrier_ = false;
  std::vector<std::shared_ptr<DataOp>> nospace_;  // writes waiting for reclaimed space
  // Resource-queue statistics, guarded by ms_->mu().
  disk::WaitHistogram grain_waits_, snapshot_waits_, meta_waits_, journal_waits_;
  // Changes admitted against the room in the open transaction (admit_locked) and not
  // yet ended, and those waiting for room, in arrival order; guarded by ms_->mu().
  uint64_t changes_admitted_ = 0;
  std::vector<std::function<void()>> journal_parked_;
  uint64_t changes_active_ = 0;
  std::vector<std::function<void()>> parked_;
  std::condition_variable_any barrier_cv_;

  std::mutex bg_mu_;  // lock order: after ms_->mu() is never taken inside it except briefly
  std::condition_variable_any bg_cv_;
  bool stop_ = false;
  std::vector<Done<void>> fsync_waiters_;
  std::thread committer_;
  std::thread releaser_;
  std::thread formatter_;
  std::atomic<bool> formatter_running_{false};
};

thread_local std::vector<std::function<void()>> DatastoreImpl::deferred_;

}  // namespace

Result<std::unique_ptr<Datastore>> Datastore::open(std::unique_ptr<device::Device> dev,
                                                   const OpenOptions& options) {
  meta::MetaOptions mo;
  mo.read_only = options.read_only;
  mo.mark_mounted = options.mark_mounted;
  mo.force = options.force;
  mo.cache_budget_bytes = options.meta_cache_bytes;
  VSFS_ASSIGN_OR_RETURN(auto ms, MetaStore::open(*dev, mo));
  ms->set_snapshot_history_max(options.cbt_history);
  auto ds = std::make_unique<DatastoreImpl>(std::move(dev), std::move(ms), options);
  ds->start_background();
  return std::unique_ptr<Datastore>(std::move(ds));
}

Result<std::unique_ptr<Datastore>> open_datastore_path(const std::string& path,
                                                       const OpenOptions& options) {
  device::UringOptions uo;
  uo.read_only = options.read_only;
  VSFS_ASSIGN_OR_RETURN(auto dev, device::open_uring_device(path, uo));
  return Datastore::open(std::move(dev), options);
}

namespace {
template <typename T>
Result<T> wait_for(const std::function<void(Done<T>)>& start) {
  std::promise<Result<T>> p;
  auto f = p.get_future();
  start([&p](Result<T> r) { p.set_value(std::move(r)); });
  return f.get();
}
}  // namespace

Result<uint64_t> Datastore::read_sync(Ino ino, uint64_t offset, uint64_t length, void* buf) {
  return wait_for<uint64_t>([&](Done<uint64_t> d) { read(ino, offset, length, buf, std::move(d)); });
}
Result<uint64_t> Datastore::write_sync(Ino ino, uint64_t offset, const void* data, uint64_t length) {
  return wait_for<uint64_t>([&](Done<uint64_t> d) { write(ino, offset, data, length, std::move(d)); });
}
Result<void> Datastore::punch_hole_sync(Ino ino, uint64_t offset, uint64_t length) {
  return wait_for<void>([&](Done<void> d) { punch_hole(ino, offset, length, std::move(d)); });
}
Result<void> Datastore::truncate_sync(Ino ino, uint64_t size) {
  return wait_for<void>([&](Done<void> d) { truncate(ino, size, std::move(d)); });
}
Result<uint64_t> Datastore::clone_range_sync(Ino src, uint64_t src_offset, Ino dst,
                                             uint64_t dst_offset, uint64_t length) {
  return wait_for<uint64_t>([&](Done<uint64_t> d) {
    clone_range(src, src_offset, dst, dst_offset, length, std::move(d));
  });
}
Result<void> Datastore::fsync_sync(Ino ino) {
  return wait_for<void>([&](Done<void> d) { fsync(ino, std::move(d)); });
}

}  // namespace vsfs
