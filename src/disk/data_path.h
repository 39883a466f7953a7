// DataPath: reads, writes, hole punching, zeroing and truncation of disks, from request
// to device IO to answer. A request first takes its grain range in the disk's queue
// (InodeTable; overlapping requests wait there, in order); a change also passes the
// snapshot and journal gates (ChangeGates). Planning happens under MetaStore's mutex:
// for each grain, a write goes in place when the grain and every map node above it
// belong to this disk alone and the grain's stamp is the current generation, else to a
// newly reserved grain (partial grains filled from the old grain or zeros). The IO is
// submitted with the mutex released; the completion installs redirected grains in the
// map (the next commit makes them durable), releases the range, and answers.
// A write into an allocated grain (fallocate) that the disk alone holds goes to that
// grain, whole (padded with zeros), and its slot becomes mapped on completion: it needs
// no new grain. Shared (a snapshot or clone took it), it is redirected like a shared
// mapped grain.
// A write that finds no free grain while freed space waits to be reclaimed waits once
// for the committer to reclaim it (Services); with none to reclaim, grains the disk
// alone holds are restamped and written in place.
// A read of a .cbt map is answered from its text (CbtView). Reads are in data_path.cc;
// writes, zeroing and unmapping in write_path.cc.
// Threading: callers on any thread; completions on the device's completion thread;
// every *_locked method with MetaStore's mutex held. An answer (`done`) is never called
// with that mutex held.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "device/device.h"
#include "disk/cbt_view.h"
#include "disk/change_gates.h"
#include "disk/data_op.h"
#include "disk/inode_table.h"
#include "disk/namespace_ops.h"
#include "disk/services.h"
#include "disk/wait_histogram.h"
#include "meta/meta_store.h"
#include "util/buffer_pool.h"
#include "vsfs/datastore.h"

namespace vsfs::disk {

// What the data path counts, for .vsfs/stats.
struct DataCounters {
  uint64_t read_requests = 0, write_requests = 0;
  uint64_t read_bytes = 0, write_bytes = 0;
  uint64_t in_place_grain_writes = 0, redirected_grain_writes = 0, restamped_grain_writes = 0;
  uint64_t read_errors = 0, write_errors = 0, no_space = 0;  // data IOs the device failed
  uint64_t writes_waiting_for_window = 0;
};

class DataPath {
 public:
  DataPath(device::Device& dev, meta::MetaStore& ms, InodeTable& inodes, ChangeGates& gates,
           Services& services, NamespaceOps& ns, CbtView& cbt, const std::atomic<bool>& read_only)
      : dev_(dev), ms_(ms), inodes_(inodes), gates_(gates), services_(services), ns_(ns),
        cbt_(cbt), read_only_(read_only) {}
  DataPath(const DataPath&) = delete;
  DataPath& operator=(const DataPath&) = delete;

  void readv(Ino ino, uint64_t offset, const iovec* iov, int iovcnt, Done<uint64_t> done);
  void writev(Ino ino, uint64_t offset, const iovec* iov, int iovcnt, Done<uint64_t> done);
  void writev_stable(Ino ino, uint64_t offset, const iovec* iov, int iovcnt,
                     Done<uint64_t> done);
  void punch_hole(Ino ino, uint64_t offset, uint64_t length, Done<void> done);
  void truncate(Ino ino, uint64_t size, Done<void> done);
  void allocate(Ino ino, uint64_t offset, uint64_t length, bool keep_size, Done<void> done);
  Result<uint64_t> seek(Ino ino, uint64_t offset, bool data);

  // For requests built elsewhere (a clone's destination): a new op counted live, and
  // its grain range and change-gate primitives.
  std::shared_ptr<DataOp> new_op(Ino ino);
  void lock_range_locked(const std::shared_ptr<DataOp>& op, bool exclusive,
                         RangeLock::Start start);
  // Ends the op's change (gates) and releases its grain range; starts waiters.
  void release_locked(const std::shared_ptr<DataOp>& op);

  // Waits until no op is alive: their IOs and completions are over.
  void wait_idle() const;
  void fill_stats_locked(DatastoreStats& s) const;

 private:
  // Reads.
  void read_locked(const std::shared_ptr<DataOp>& op, uint64_t offset);
  void start_read_locked(const std::shared_ptr<DataOp>& op);
  // Both.
  void acquire_locked(const std::shared_ptr<DataOp>& op, bool exclusive, RangeLock::Start start);
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
    meta::MetaStore::NoWaitScope no_wait(ms_);
    return lookup();
  }
  void wait_for_metadata_locked(const std::shared_ptr<DataOp>& op, std::function<void()> restart);
  Result<void> check_mapped_locked(const std::shared_ptr<DataOp>& op,
                                   const std::vector<meta::GrainLookup>& map);
  void take_buffer(const std::shared_ptr<DataOp>& op, uint64_t bytes);
  void finish_now(const std::shared_ptr<DataOp>& op, Result<uint64_t> r);
  // Writes (write_path.cc).
  void write_locked(const std::shared_ptr<DataOp>& op, uint64_t offset, uint64_t length);
  void start_write_locked(const std::shared_ptr<DataOp>& op);
  Result<void> choose_targets_locked(const std::shared_ptr<DataOp>& op,
                                     const std::vector<meta::GrainLookup>& map, uint64_t gen,
                                     std::vector<uint64_t>* restamped);
  void wait_for_space_locked(const std::shared_ptr<DataOp>& op);
  void after_commit_write(const std::shared_ptr<DataOp>& op, bool window_only);
  void fail_write_locked(const std::shared_ptr<DataOp>& op, Error err);
  void unreserve_all_locked(const std::shared_ptr<DataOp>& op);
  void write_fill_phase(const std::shared_ptr<DataOp>& op);
  void write_data_phase(const std::shared_ptr<DataOp>& op);
  void write_complete(const std::shared_ptr<DataOp>& op);
  void zero_range(Ino ino, uint64_t offset, uint64_t length, Done<void> done);
  void unmap_range(Ino ino, uint64_t first, uint64_t end, std::optional<uint64_t> new_size,
                   Done<void> done);
  void unmap_range_locked(const std::shared_ptr<DataOp>& op);
  // allocate(): one piece of at most kAllocatePieceGrains under its range and the gates,
  // the next queued when it is done. Two map leaves' worth: with the nodes above them,
  // the reference-count and block-table grains and the inode leaf, a piece dirties about
  // as many metadata blocks as one data change may (kChangeBlocksMax).
  struct Allocation;
  static constexpr uint64_t kAllocatePieceGrains = 2 * format::kTreeFanout;
  void allocate_start_locked(const std::shared_ptr<Allocation>& a);
  void allocate_piece_locked(const std::shared_ptr<Allocation>& a);
  Result<void> writable(Ino ino) const { return check_writable(ms_, read_only_, ino); }

  device::Device& dev_;
  meta::MetaStore& ms_;
  InodeTable& inodes_;
  ChangeGates& gates_;
  Services& services_;
  NamespaceOps& ns_;
  CbtView& cbt_;  // reads of .cbt maps
  const std::atomic<bool>& read_only_;  // DatastoreImpl's: set by set_read_only
  // Data ops alive (DataOp's constructor and destructor); wait_idle waits for none.
  std::atomic<uint64_t> live_ops_{0};
  // Write and bounce buffers of data requests (thread-safe): reused, not reallocated.
  static constexpr size_t kBufferRetainBytes = 16u << 20;  // sixteen 1 MiB requests
  BufferPool buffers_{kBufferRetainBytes};
  DataCounters counters_;     // MetaStore's mutex
  WaitHistogram meta_waits_;  // the metadata queue; MetaStore's mutex
};

}  // namespace vsfs::disk
