// DiskQueues: the coalescing queues of the open disks of a mount (src/io), one per inode
// with open handles. open/create take a reference (creating the queue on the first),
// release drops it; the last release sends what the queue still holds and lets it go
// once its IOs complete (each IO in flight keeps its queue alive). The handle's fh
// carries the queue pointer, so read/write/fsync/flush find it without a lookup.
// With [coalesce] enabled = false nothing is created: open returns null and every
// handler keeps the direct path to the datastore.
// Thread-safety: open/release/stats from any thread (one mutex, never held while a
// queue calls down). Lock order: mu_ before a queue's mutex.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "io/coalesce_queue.h"
#include "io/coalesce_timer.h"
#include "util/buffer_pool.h"
#include "vsfs/datastore.h"

namespace vsfs::fuse {

class DiskQueues {
 public:
  // Combined IOs take their buffers from `buffers`, which must outlive the queues.
  DiskQueues(Datastore& ds, const io::CoalesceOptions& options, BufferPool& buffers);
  ~DiskQueues();
  DiskQueues(const DiskQueues&) = delete;
  DiskQueues& operator=(const DiskQueues&) = delete;

  bool enabled() const { return options_.enabled; }
  // A reference to ino's queue, valid until the matching release(); null when off.
  // Throws std::bad_alloc before taking the reference.
  io::CoalesceQueue* open(Ino ino);
  void release(Ino ino);

  io::CoalesceStats::Snapshot stats() const { return stats_.snapshot(); }
  size_t open_disks() const;

 private:
  struct Entry {
    std::shared_ptr<io::CoalesceQueue> queue;
    uint64_t refs = 0;
  };

  BufferPool& buffers_;
  Datastore& ds_;
  const io::CoalesceOptions options_;
  io::CoalesceStats stats_;
  std::unique_ptr<io::CoalesceTimer> timer_;  // only when enabled; outlives the queues
  mutable std::mutex mu_;
  std::unordered_map<Ino, Entry> queues_;  // guarded by mu_
};

// The queue carried by an open handle's fh (0: none, the direct path).
inline io::CoalesceQueue* queue_of(uint64_t fh) { return reinterpret_cast<io::CoalesceQueue*>(fh); }
inline uint64_t fh_of(io::CoalesceQueue* q) { return reinterpret_cast<uint64_t>(q); }

}  // namespace vsfs::fuse
