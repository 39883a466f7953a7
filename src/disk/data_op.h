// DataOp: one data request of a disk in flight (read, write, zeroing, unmapping, or the
// destination of a clone), from its grain range through planning and device IO to its
// answer, and the small tools its path uses: the plan of device IOs (IoPlan), the join
// of a request's asynchronous parts (Join), the split of a byte range at grains.
// An op is shared (std::shared_ptr) by every closure that may run it on; it counts
// itself in its owner's live count, so that close can wait until none is left, and
// gives its data buffer back to the pool it came from.
// Thread-safety: an op is used by one thread at a time, handed over through
// MetaStore's mutex or the device's completion; `outstanding` and `error` are atomic
// because the device completes the IOs of one plan on any thread.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <climits>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "device/device.h"
#include "disk/range_lock.h"
#include "util/aligned_buffer.h"
#include "util/assert.h"
#include "util/buffer_pool.h"
#include "util/units.h"
#include "vsfs/datastore.h"

namespace vsfs::disk {

// Joins IoRequests whose grains are physically contiguous into one request each.
struct IoPlan {
  struct Run {
    device::OpKind kind;
    uint64_t grain;
    uint64_t count;
    std::vector<iovec> iov;
  };
  std::vector<Run> runs;
  void add(device::OpKind kind, uint64_t grain, uint8_t* buf);
};

struct DataOp {
  explicit DataOp(std::atomic<uint64_t>& live_count) : live(live_count) {
    live.fetch_add(1, std::memory_order_relaxed);
  }
  // The data buffer goes back to the pool it came from. Counting the op out is the last
  // thing: close() may go on as soon as it sees none alive.
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
  // Writes: per grain, 1 when it goes in place into an allocated grain (the slot becomes
  // mapped on completion: MetaStore::map_claim_allocated_locked).
  std::vector<uint8_t> claimed;
  std::vector<std::pair<uint64_t, uint64_t>> fills;  // (grain index in op, old grain)
  bool zero_write = false;           // zero_range: never extends the file
  std::optional<uint64_t> new_size;  // unmap: truncate to this size
  // unmap: grains [first, unmap_end) are unmapped; `end` is at least first + 1 (a range
  // lock is never empty), so an empty unmap (a truncate that grows) unmaps nothing.
  uint64_t unmap_end = 0;
  bool counted = false;              // counted as a change in progress (ChangeGates)
  bool admitted = false;             // holds room in the open transaction (ChangeGates)
  bool retried = false;              // already waited once for space to be reclaimed
  bool meta_sync = false;            // a metadata fetch failed: look up waiting
  uint32_t meta_fetches = 0;         // blocks fetched for it (DataPath::lookup_locked)
  IoPlan plan;
  std::atomic<uint32_t> outstanding{0};
  std::atomic<int64_t> error{0};
};

// Submits the runs of op->plan to `dev`; `complete` runs once all finish (on the
// device's completion thread, or at once when the plan is empty), with the first
// error in op->error.
void submit_plan(device::Device& dev, const std::shared_ptr<DataOp>& op,
                 std::function<void()> complete);

// Calls fn(i, memory of grain i) for the op's first n grains: in its aligned buffer
// when it has one, else in the caller's buffers (whole aligned grains: grain_direct).
template <typename Fn>
void for_each_grain(DataOp& op, uint64_t n, Fn&& fn) {
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

// True when the range is whole grains and every buffer is 4 KiB-aligned whole grains,
// so that the device can move each grain to or from the buffers directly.
bool grain_direct(uint64_t offset, uint64_t length, const iovec* iov, int iovcnt);

// [offset, end) in bytes as whole grains [whole_first, whole_end) and the partial
// grains at its edges (byte ranges), which punch and clone handle by writing.
struct GrainSplit {
  uint64_t whole_first = 0, whole_end = 0;
  std::vector<std::pair<uint64_t, uint64_t>> edges;  // (offset, length)
};
GrainSplit split_at_grains(uint64_t offset, uint64_t end);

// Joins the parts of one request that run asynchronously: `done` runs once, after the
// last part, with the first error. Thread-safe.
class Join {
 public:
  Join(size_t parts, Done<void> done) : pending_(parts), done_(std::move(done)) {}
  void part(Result<void> r);

 private:
  std::mutex mu_;
  size_t pending_;
  Result<void> result_;
  Done<void> done_;
};

}  // namespace vsfs::disk
