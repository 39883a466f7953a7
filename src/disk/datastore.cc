// The disk layer's facade: Datastore::open wires the parts of a datastore and
// DatastoreImpl implements vsfs::Datastore by handing each call to the part that owns it.
//
//   InodeTable    inodes in use: grain queues, open references, hints, kept times
//   ChangeGates   the snapshot and journal gates every change passes
//   Services      committer, releaser, formatter (threads or stepped)
//   CbtView       the .cbt trees
//   NamespaceOps  the tree, attributes and views
//   DataPath      reads, writes, punch, truncate, seek
//   Snapshots     snapshot create/delete and clone_range
//
// Each part is given what it needs; they are declared (and built) in that order, each
// after those it uses, and destroyed in reverse. Every part's state is guarded by
// MetaStore's mutex, the one lock of the layer; Services adds its own (before that
// mutex, see services.h).
// Close: the services stop first (a last commit answers what waits), then writes still
// waiting for space fail, then close waits until no data op is alive (their IOs and
// completions use the parts), then kept times are written and a clean checkpoint ends.
// Threading: any thread may call any method; completions arrive on the device's thread.
#include <sys/stat.h>

#include <atomic>
#include <future>
#include <mutex>

#include "device/device.h"
#include "device/open.h"
#include "disk/cbt_view.h"
#include "disk/change_gates.h"
#include "disk/common.h"
#include "disk/data_path.h"
#include "disk/inode_table.h"
#include "disk/namespace_ops.h"
#include "disk/services.h"
#include "disk/snapshots.h"
#include "meta/meta_store.h"
#include "util/log.h"
#include "vsfs/datastore.h"

namespace vsfs {
namespace {

using namespace disk;

LifetimeCounts lifetime_counts(const format::LifetimeCounters& l) {
  LifetimeCounts c;
  c.read_bytes = l.read_bytes;
  c.write_bytes = l.write_bytes;
  c.read_errors = l.read_errors;
  c.write_errors = l.write_errors;
  c.no_space_errors = l.no_space_errors;
  c.unclean_mounts = l.unclean_mounts;
  c.snapshots_taken = l.snapshots_taken;
  c.snapshots_deleted = l.snapshots_deleted;
  c.formatted_bytes = l.formatted_bytes;
  c.mounted_seconds = l.mounted_seconds;
  return c;
}

class DatastoreImpl final : public Datastore {
 public:
  DatastoreImpl(std::unique_ptr<device::Device> dev, std::unique_ptr<meta::MetaStore> ms,
                const OpenOptions& options)
      : dev_(std::move(dev)),
        ms_(std::move(ms)),
        options_(options),
        inodes_(*ms_),
        gates_(*ms_, [this] { services_.wake(); }),
        services_(*dev_, *ms_, gates_, options_),
        cbt_(*ms_, options_.cbt_text_cache_bytes),
        read_only_(options_.read_only),
        ns_(*ms_, inodes_, cbt_, services_, read_only_, options_.snapshot_policy.takers),
        data_(*dev_, *ms_, inodes_, gates_, services_, ns_, cbt_, read_only_),
        snapshots_(*ms_, inodes_, gates_, ns_, cbt_, services_, data_, read_only_,
                   options_.snapshot_policy) {}

  ~DatastoreImpl() override {
    if (!closed_) {
      auto r = close();
      if (!r.ok()) VSFS_LOG_ERROR("closing the datastore: {}", r.error().to_string());
    }
    services_.fail_space_waiters();  // also any a caller started after close()
    data_.wait_idle();
  }

  void start() { services_.start(); }

  Result<void> close() override {
    if (closed_) return ok_result();
    closed_ = true;
    services_.stop();
    // The last checkpoint must see every completed write; writes still waiting for
    // space, which the stopped committer will not reclaim, fail.
    services_.fail_space_waiters();
    data_.wait_idle();
    if (options_.read_only) return ok_result();
    {
      std::lock_guard lock(ms_->mu());
      VSFS_TRY(inodes_.hold_frees_locked(false));  // those a read-only spell held
      VSFS_TRY(inodes_.persist_all_times_locked());
    }
    return ms_->checkpoint(true);
  }

  Result<Attr> lookup(Ino parent, const std::string& name) override {
    return ns_.lookup(parent, name);
  }
  Result<Attr> getattr(Ino ino) override { return ns_.getattr(ino); }
  Result<Attr> create(Ino parent, const std::string& name, uint32_t mode, uint32_t uid,
                      uint32_t gid) override {
    return ns_.make_node(parent, name, S_IFREG | (mode & 07777), uid, gid);
  }
  Result<Attr> mkdir(Ino parent, const std::string& name, uint32_t mode, uint32_t uid,
                     uint32_t gid) override {
    if (view_of(parent) == kSnapshotsDirView) return snapshots_.create(base_of(parent), name, uid);
    return ns_.make_node(parent, name, S_IFDIR | (mode & 07777), uid, gid);
  }
  Result<Attr> symlink(Ino parent, const std::string& name, const std::string& target,
                       uint32_t uid, uint32_t gid) override {
    return ns_.make_node(parent, name, S_IFLNK | 0777, uid, gid, 0, &target);
  }
  Result<Attr> mknod(Ino parent, const std::string& name, uint32_t mode, uint64_t rdev,
                     uint32_t uid, uint32_t gid) override {
    switch (mode & S_IFMT) {
      case S_IFREG: return create(parent, name, mode, uid, gid);
      case S_IFIFO:
      case S_IFSOCK: rdev = 0; break;
      case S_IFCHR:
      case S_IFBLK: break;
      default:
        return make_error(EINVAL, ErrorKind::kInvalidArgument, "mknod of file type 0{:o}",
                          mode & S_IFMT);
    }
    return ns_.make_node(parent, name, (mode & S_IFMT) | (mode & 07777), uid, gid, rdev);
  }
  Result<std::string> readlink(Ino ino) override { return ns_.readlink(ino); }
  Result<Attr> link(Ino ino, Ino new_parent, const std::string& new_name) override {
    return ns_.link(ino, new_parent, new_name);
  }
  Result<void> unlink(Ino parent, const std::string& name) override {
    return ns_.unlink(parent, name);
  }
  Result<void> rmdir(Ino parent, const std::string& name, uint32_t uid) override {
    if (view_of(parent) == kSnapshotsDirView) return snapshots_.remove(base_of(parent), name, uid);
    return ns_.rmdir(parent, name);
  }
  Result<void> rename(Ino parent, const std::string& name, Ino new_parent,
                      const std::string& new_name, RenameFlags flags) override {
    return ns_.rename(parent, name, new_parent, new_name, flags);
  }
  Result<std::vector<DirEntryInfo>> readdir(Ino dir) override { return ns_.readdir(dir); }
  Result<Attr> setattr(Ino ino, const SetAttr& a) override { return ns_.setattr(ino, a); }
  Result<void> open_ref(Ino ino) override { return ns_.open_ref(ino); }
  void release_ref(Ino ino) override { ns_.release_ref(ino); }
  Result<std::vector<std::pair<std::string, std::string>>> xattrs(Ino ino) override {
    return ns_.xattrs(ino);
  }
  Result<void> setxattr(Ino ino, const std::string& name, const std::string& value,
                        int flags) override {
    return ns_.setxattr(ino, name, &value, flags);
  }
  Result<void> removexattr(Ino ino, const std::string& name) override {
    return ns_.setxattr(ino, name, nullptr, 0);
  }

  void readv(Ino ino, uint64_t offset, const iovec* iov, int iovcnt,
             Done<uint64_t> done) override {
    data_.readv(ino, offset, iov, iovcnt, std::move(done));
  }
  void writev(Ino ino, uint64_t offset, const iovec* iov, int iovcnt,
              Done<uint64_t> done) override {
    data_.writev(ino, offset, iov, iovcnt, std::move(done));
  }
  void writev_stable(Ino ino, uint64_t offset, const iovec* iov, int iovcnt,
                     Done<uint64_t> done) override {
    data_.writev_stable(ino, offset, iov, iovcnt, std::move(done));
  }
  void punch_hole(Ino ino, uint64_t offset, uint64_t length, Done<void> done) override {
    data_.punch_hole(ino, offset, length, std::move(done));
  }
  void truncate(Ino ino, uint64_t size, Done<void> done) override {
    data_.truncate(ino, size, std::move(done));
  }
  void allocate(Ino ino, uint64_t offset, uint64_t length, bool keep_size,
                Done<void> done) override {
    data_.allocate(ino, offset, length, keep_size, std::move(done));
  }
  void fsync(Ino, Done<void> done) override { services_.fsync(std::move(done)); }
  Result<uint64_t> seek(Ino ino, uint64_t offset, bool data) override {
    return data_.seek(ino, offset, data);
  }

  std::vector<SnapshotInfo> snapshots() override { return snapshots_.list(); }
  Result<SnapshotSpaceInfo> snapshot_space(uint16_t id) override { return snapshots_.space(id); }
  Result<std::string> dir_path(Ino dir) override { return ns_.dir_path(dir); }
  void clone_range(Ino src, uint64_t src_offset, Ino dst, uint64_t dst_offset, uint64_t length,
                   Done<uint64_t> done) override {
    snapshots_.clone_range(src, src_offset, dst, dst_offset, length, std::move(done));
  }

  SpaceInfo space() override {
    SpaceInfo s;
    {
      std::lock_guard lock(ms_->mu());
      s = space_locked();
    }
    limit_to_backing(s);
    return s;
  }

  DatastoreStats stats() override {
    DatastoreStats s;
    {
      std::lock_guard lock(ms_->mu());
      // First, before the lookups below load anything: the cache as the last release of
      // the mutex left it.
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
      s.uuid = ms_->superblock_locked().uuid;
      s.mount_count = ms_->superblock_locked().mount_count;
      s.metadata_failed = ms_->failed();
      s.read_only = read_only_;
      const meta::LifetimeView life = ms_->lifetime_locked();
      s.lifetime.total = lifetime_counts(life.total);
      s.lifetime.this_mount = lifetime_counts(life.this_mount);
      s.lifetime.stored = lifetime_counts(life.stored);
      data_.fill_stats_locked(s);
      inodes_.fill_stats_locked(s.grain_queue);
      gates_.fill_stats_locked(s);
      cbt_.fill_stats_locked(s);
    }
    s.formatter_running = services_.formatter_running();
    limit_to_backing(s.space);
    auto d = dev_->counters();
    for (int i = 0; i < device::kOpKinds; ++i) s.device_ops[i] = d.ops[i];
    s.device_in_flight = d.in_flight;
    s.device_in_flight_peak = d.in_flight_peak;
    s.device_queued_now = d.queued;
    return s;
  }

  Result<bool> run_background_step(BackgroundStep step) override {
    return services_.run_step(step);
  }

  Result<GrowReport> grow(uint64_t new_bytes,
                          std::function<void(const Progress&)> progress) override {
    std::lock_guard switching(switch_mu_);  // not while turning read-only
    if (closed_) return make_error(EIO, ErrorKind::kState, "the datastore is closed");
    if (read_only_) return make_error(EROFS, ErrorKind::kState, "the datastore is read-only");
    VSFS_ASSIGN_OR_RETURN(const meta::MetaStore::Grown g,
                          ms_->grow(new_bytes, [&](uint64_t done, uint64_t total) {
                            if (progress) progress(Progress{1, 1, "new space", done, total});
                          }));
    // Writes waiting for space retry at the next commit round; the formatter finds
    // blocks to format.
    services_.wake();
    return GrowReport{g.old_bytes, g.new_bytes, g.region_blocks * kBlockBytes, g.formatted};
  }

  // Read-only: changes are refused from now on; those that passed their check first
  // end, writes waiting for space fail, the releaser and formatter pause, kept times are
  // written and a checkpoint leaves the journal empty, so that the device no longer
  // changes, and the lease is given up. Read-write: the lease is taken again (refused
  // when someone else holds it now), and changes and the background work go on.
  Result<void> set_read_only(bool read_only) override {
    std::lock_guard switching(switch_mu_);
    if (options_.read_only) {
      if (read_only) return ok_result();
      return make_error(EROFS, ErrorKind::kState,
                        "the datastore was opened read-only (its device is open for reading "
                        "only); unmount it and mount it read-write");
    }
    if (closed_) return make_error(EIO, ErrorKind::kState, "the datastore is closed");
    if (!read_only) {
      // A writer again: the lease first (someone may have taken it meanwhile).
      if (read_only_) VSFS_TRY(dev_->set_writer(true));
      {
        std::lock_guard lock(ms_->mu());
        read_only_ = false;
        ms_->count_read_write_time_locked(true);
        VSFS_TRY(inodes_.hold_frees_locked(false));
      }
      services_.resume();
      return ok_result();
    }
    {
      std::lock_guard lock(ms_->mu());
      if (read_only_) return ok_result();  // already: the device stays as it is
      read_only_ = true;
      ms_->count_read_write_time_locked(false);  // the checkpoint below stores it so
      VSFS_TRY(inodes_.hold_frees_locked(true));
    }
    services_.fail_space_waiters(
        make_error(EROFS, ErrorKind::kState, "datastore is read-only"));
    {
      std::unique_lock lock(ms_->mu());
      gates_.wait_until_no_change_locked(lock);
    }
    services_.pause();
    {
      std::lock_guard lock(ms_->mu());
      VSFS_TRY(inodes_.persist_all_times_locked());
    }
    VSFS_TRY(ms_->checkpoint(false));
    VSFS_TRY(ms_->commit());  // flushes the checkpoint's last writes (the superblock)
    // Not a writer any more: the lease goes, so that another mount may take it.
    return dev_->set_writer(false);
  }

 private:
  // A sparse image's filesystem may have less room than the datastore: asked of the
  // device (a system call), so never with MetaStore's mutex held.
  void limit_to_backing(SpaceInfo& s) {
    if (auto room = dev_->backing_free_bytes()) s.available_bytes = std::min(s.free_bytes, *room);
  }

  SpaceInfo space_locked() {
    auto sp = ms_->space_locked();
    SpaceInfo s;
    s.total_bytes = sp.data_blocks * kBlockBytes;
    s.used_bytes = sp.used_grains * kGrainBytes;
    s.free_bytes = sp.free_grains * kGrainBytes;
    s.available_bytes = s.free_bytes;  // limit_to_backing, outside the mutex
    s.formatted_blocks = sp.formatted_blocks;
    s.alloc_window = sp.window;
    s.alloc_window_end = sp.window_end;
    s.crash_reformat_blocks = sp.crash_reformat_blocks;
    s.space_summary = sp.summary;
    s.table_grains = sp.table_grains;
    s.table_grains_loaded = sp.table_grains_loaded;
    s.to_format_blocks = sp.to_format_blocks;
    s.formatted_bytes_total = sp.formatted_bytes_total;
    s.damaged_free_blocks = sp.damaged_free_blocks;
    s.inodes = ms_->live_inodes_locked();
    return s;
  }

  std::unique_ptr<device::Device> dev_;
  std::unique_ptr<meta::MetaStore> ms_;
  const OpenOptions options_;
  bool closed_ = false;
  InodeTable inodes_;
  ChangeGates gates_;
  Services services_;
  CbtView cbt_;
  // Changes are refused (EROFS): opened read-only, or turned read-only by
  // set_read_only. Written under MetaStore's mutex; the parts read it under it.
  std::atomic<bool> read_only_;
  std::mutex switch_mu_;  // one set_read_only at a time
  NamespaceOps ns_;
  DataPath data_;
  Snapshots snapshots_;
};

}  // namespace

Result<std::unique_ptr<Datastore>> Datastore::open(std::unique_ptr<device::Device> dev,
                                                   const OpenOptions& options) {
  meta::MetaOptions mo;
  mo.read_only = options.read_only;
  mo.mark_mounted = options.mark_mounted;
  mo.force = options.force;
  mo.cache_budget_bytes = options.meta_cache_bytes;
  mo.alloc_window_blocks = options.alloc_window_blocks;
  VSFS_ASSIGN_OR_RETURN(auto ms, meta::MetaStore::open(*dev, mo));
  ms->set_snapshot_history_max(options.cbt_history);
  auto ds = std::make_unique<DatastoreImpl>(std::move(dev), std::move(ms), options);
  ds->start();
  return std::unique_ptr<Datastore>(std::move(ds));
}

Result<std::unique_ptr<Datastore>> open_datastore_path(const std::string& path,
                                                       const OpenOptions& options) {
  device::UringOptions uo;
  uo.read_only = options.read_only;
  VSFS_ASSIGN_OR_RETURN(auto dev, device::open_device(path, uo));
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
Result<void> Datastore::allocate_sync(Ino ino, uint64_t offset, uint64_t length, bool keep_size) {
  return wait_for<void>([&](Done<void> d) { allocate(ino, offset, length, keep_size, std::move(d)); });
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
