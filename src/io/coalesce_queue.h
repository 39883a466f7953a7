// CoalesceQueue: the coalescing queue of one open disk (DESIGN.md §2), between the FUSE
// front end and the virtual-disk layer.
//
// Requests (read, write, flush) arrive in a total order, the queue order: each gets a
// sequence number under the queue's mutex. A request is passed down at once when the
// disk is idle enough (fewer IOs in flight than the threshold, nothing held); otherwise
// it is held. The queue is checked at every arrival, every completion and when the
// oldest held request reaches its deadline; when any of these holds it is flushed:
//   - in flight < threshold (the adaptive target below),
//   - held requests >= max_held, or held bytes >= max_held_bytes (the queue is full),
//   - the oldest held request has waited hold_us_max,
//   - kick() or unplug() asked for it.
// A flush sends every held request up to the first flush barrier. Those requests are
// cut, in queue order, into epochs of requests that do not conflict (overlap with at
// least one write among the two); inside an epoch order does not matter, so requests
// are sorted by direction and offset and byte-contiguous ones of the same direction are
// joined into one combined IO of at most max_combined_kib, scatter-gather over the
// members' own buffers (DiskTarget::readv, writev_stable). Epochs are passed down in
// order, and the layer below (the disk's RangeLock) keeps overlapping requests in the
// order they were passed, so every request sees the disk as the queue order says:
// coalescing never reorders overlapping writes and never changes what a read returns.
//
// A flush barrier (fsync) is never merged across: requests after it stay held until
// every IO before it has completed and its members have been answered; then the
// barrier's fsync is passed down and the requests behind it go on (they need not wait
// for the fsync itself).
//
// Each original request completes exactly once with its own result: a combined IO that
// fails fails each member with its error; a short read is split among its members by
// offset (members past the end get 0 bytes).
//
// Requests with no merge partner in sight are not held: a request is held (when the
// threshold says so) only if a held or a recently sent IO of its direction lies within
// 128 KiB of it, so random IO is almost never delayed for nothing. (One held only to
// keep its place behind a conflicting request goes on its own as soon as it may, ahead
// of held requests it does not conflict with.) An idle disk (no IO in flight) always
// sends a lone request at once: no hold at queue depth 1.
//
// Adaptive threshold: the queue keeps an EWMA (weight 1/8) of the service time of its
// IOs, from pass-down to completion. With T IOs in flight, completions come about every
// service/T (Little's law), and a held request waits about that long for the next one.
// The threshold is the smallest T whose completion interval fits the hold budget:
//   T = clamp(ceil(service_ewma_us / hold_us_max), 1, max_inflight).
// While the disk completes IOs faster than hold_us_max, T is 1: one IO in flight, and
// everything that arrives meanwhile goes down merged when it completes, so a stream's
// IOs grow with the device's service time (natural batching; measured best when the
// host is CPU-bound). A slower device (remote storage, a saturated disk) gets more IOs
// in flight so that no request waits much longer than hold_us_max for a completion.
//
// Threading: read/write/flush/kick/plug/unplug may be called from any thread; `done`
// callbacks run on whatever thread completes the IO below (the device completion thread,
// or the caller's thread when the layer below answers at once). Held requests are passed
// down by one dispatcher at a time (a flag), in queue order, with the mutex released. A
// request that is not held is passed down by its own caller's thread, concurrently with
// others; it is registered "in transit" until that call returns, and a later request
// that conflicts with something in transit is held until it has gone down, so the
// order of conflicting requests is always the queue order.
// Lock order: mu_ before the timer's mutex; no lock is held while calling the layer
// below or a `done` callback.
// Ownership: create() returns a shared_ptr; each IO in flight keeps the queue alive, so
// the owner may drop its reference as soon as nothing more will arrive (after kick()),
// also from another thread while a call into the queue is still returning: each call
// holds a reference of its own until it returns.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "util/buffer_pool.h"
#include "util/result.h"
#include "vsfs/datastore.h"

namespace vsfs::io {

class CoalesceTimer;

struct CoalesceOptions {
  bool enabled = true;                 // [coalesce] enabled: off = the direct path
  uint32_t max_inflight = 8;           // [coalesce] max_inflight: threshold's top (1..1024)
  uint32_t max_held = 64;              // [coalesce] max_held: held requests (1..4096)
  uint64_t max_held_bytes = 8ull << 20;  // [coalesce] max_held_bytes (4096..1 GiB)
  uint32_t hold_us_max = 500;          // [coalesce] hold_us_max: deadline (10..1000000)
  uint32_t max_combined_kib = 1024;    // [coalesce] max_combined_kib: (4..16384)
};

// The virtual disk below the queue: one disk's data operations. The calls follow
// Datastore's contract: asynchronous, `done` exactly once, and requests passed in order
// are applied in order where they overlap. Buffers are one after the other from
// offset_bytes: a read's live until `done`; writev copies its data before it returns,
// writev_stable's caller keeps its data unchanged until `done`.
class DiskTarget {
 public:
  virtual ~DiskTarget() = default;
  virtual void readv(uint64_t offset_bytes, const iovec* iov, int iovcnt,
                     Done<uint64_t> done) = 0;
  virtual void writev(uint64_t offset_bytes, const iovec* iov, int iovcnt,
                      Done<uint64_t> done) = 0;
  virtual void writev_stable(uint64_t offset_bytes, const iovec* iov, int iovcnt,
                             Done<uint64_t> done) {
    writev(offset_bytes, iov, iovcnt, std::move(done));
  }
  virtual void fsync(Done<void> done) = 0;
};

// One inode of a Datastore as a DiskTarget.
class DatastoreDisk final : public DiskTarget {
 public:
  DatastoreDisk(Datastore& ds, Ino ino) : ds_(ds), ino_(ino) {}
  void readv(uint64_t offset_bytes, const iovec* iov, int iovcnt, Done<uint64_t> done) override {
    ds_.readv(ino_, offset_bytes, iov, iovcnt, std::move(done));
  }
  void writev(uint64_t offset_bytes, const iovec* iov, int iovcnt, Done<uint64_t> done) override {
    ds_.writev(ino_, offset_bytes, iov, iovcnt, std::move(done));
  }
  void writev_stable(uint64_t offset_bytes, const iovec* iov, int iovcnt,
                     Done<uint64_t> done) override {
    ds_.writev_stable(ino_, offset_bytes, iov, iovcnt, std::move(done));
  }
  void fsync(Done<void> done) override { ds_.fsync(ino_, std::move(done)); }

 private:
  Datastore& ds_;
  const Ino ino_;
};

// Counters of one or several queues (vsfs-mount shares one set among all its disks).
// Thread-safety: atomics, updated with relaxed ordering; a snapshot is not atomic as a
// whole.
class CoalesceStats {
 public:
  // Hold-time histogram: bucket 0 is [0, 1) us, bucket b is [2^(b-1), 2^b) us.
  static constexpr int kHoldBuckets = 32;

  struct Snapshot {
    uint64_t requests_in = 0;   // reads and writes that entered a queue
    uint64_t ios_out = 0;       // reads and writes passed down (combined or not)
    uint64_t merged = 0;        // requests that joined another one's IO
    uint64_t held = 0;          // requests that were held (not passed down at arrival)
    uint64_t held_now = 0;
    uint64_t in_flight_now = 0;  // IOs passed down, not completed
    uint64_t barriers = 0;      // flush barriers (fsync)
    uint64_t deadline_flushes = 0, full_flushes = 0;
    uint64_t hold_us_p50 = 0, hold_us_p99 = 0, hold_us_max = 0;  // held requests only
  };
  Snapshot snapshot() const;

  void record_hold(uint64_t hold_us);

  std::atomic<uint64_t> requests_in{0}, ios_out{0}, merged{0}, held{0}, barriers{0};
  std::atomic<uint64_t> deadline_flushes{0}, full_flushes{0};
  std::atomic<int64_t> held_now{0}, in_flight_now{0};

 private:
  std::atomic<uint64_t> hold_hist_[kHoldBuckets] = {};
  std::atomic<uint64_t> hold_max_us_{0};
};

class CoalesceQueue : public std::enable_shared_from_this<CoalesceQueue> {
 public:
  // `stats`, `timer` and `buffers` must outlive the queue; `timer` may be null (then the
  // deadline is checked only at arrivals and completions); `buffers`, where combined IOs
  // take their buffers, may be null (then each is allocated and freed).
  static std::shared_ptr<CoalesceQueue> create(std::unique_ptr<DiskTarget> target,
                                               const CoalesceOptions& options,
                                               CoalesceStats* stats, CoalesceTimer* timer,
                                               BufferPool* buffers = nullptr);
  ~CoalesceQueue();
  CoalesceQueue(const CoalesceQueue&) = delete;
  CoalesceQueue& operator=(const CoalesceQueue&) = delete;

  // Each returns the request's position in the queue order. `buf` (reads) must live
  // until `done`; `data` (writes) is copied before write() returns, unless `stable`:
  // then the caller keeps it unchanged until `done` and a held write is not copied. A
  // write goes down as DiskTarget::writev_stable unless it is neither stable nor held. Throws std::bad_alloc
  // only before the request is taken (then `done` is never called).
  uint64_t read(uint64_t offset_bytes, uint64_t length_bytes, void* buf, Done<uint64_t> done);
  uint64_t write(uint64_t offset_bytes, const void* data, uint64_t length_bytes,
                 Done<uint64_t> done, bool stable = false);
  // A flush barrier: fsync of the disk once every request before it has completed.
  uint64_t flush(Done<void> done);

  // Sends everything held now (up to a barrier still waiting): close, last release.
  void kick();
  // While plugged, every request is held (only the size limits flush); unplug() sends
  // what was held. For callers that know more requests follow, and for tests.
  void plug();
  void unplug();

  // Called by the timer at a deadline.
  void on_deadline();

  uint32_t threshold() const { return threshold_.load(std::memory_order_relaxed); }
  size_t held() const;
  uint64_t in_flight() const;

 private:
  enum class Kind : uint8_t { kRead, kWrite, kBarrier };
  struct Request;
  struct Io;
  struct Range {
    uint64_t offset = 0, end = 0;
    Kind kind = Kind::kRead;
    uint64_t key = 0;  // transit_: the direct request's seq or the dispatch batch's key
  };

  CoalesceQueue(std::unique_ptr<DiskTarget> target, const CoalesceOptions& options,
                CoalesceStats* stats, CoalesceTimer* timer, BufferPool* buffers);

  uint64_t arrive(std::unique_ptr<Request> r, const void* write_src);
  static bool conflicts(const Request& a, const Request& b);
  bool likely_held() const;
  bool can_send_now_locked(const Request& r) const;
  bool is_candidate_locked(const Request& r) const;
  bool conflicts_transit_locked(const Request& r) const;
  void end_transit_locked(uint64_t key);
  bool should_flush_locked(uint64_t now_ns);
  // Runs the dispatcher loop; `l` holds mu_ and dispatching_ is set by the caller.
  void dispatch_locked(std::unique_lock<std::mutex>& l);
  // Takes the next work to pass down: IOs of one flushed segment, or a barrier.
  void take_locked(uint64_t now_ns, std::vector<Io*>* ios, std::unique_ptr<Request>* barrier);
  void take_lone_locked(uint64_t now_ns, std::vector<Io*>* ios);
  void build_ios_locked(std::vector<std::unique_ptr<Request>> segment, std::vector<Io*>* ios);
  Io* new_io_locked(std::vector<std::unique_ptr<Request>> members);
  void submit_io(Io* io);
  void copy_write(Request& r, const void* data);  // r.copy, the same way
  void submit_barrier(std::unique_ptr<Request> barrier);
  void on_complete(Io* io, Result<uint64_t> result);
  void remember_sent_locked(const Io& io);
  void arm_timer_locked();

  const std::unique_ptr<DiskTarget> target_;
  const CoalesceOptions options_;
  const uint64_t max_combined_bytes_;
  CoalesceStats* const stats_;
  CoalesceTimer* const timer_;
  BufferPool* const buffers_;  // may be null

  mutable std::mutex mu_;
  std::deque<std::unique_ptr<Request>> held_;  // guarded by mu_, in queue order
  uint64_t held_bytes_ = 0;                    // guarded by mu_
  uint32_t barriers_held_ = 0;                 // guarded by mu_
  uint64_t next_seq_ = 1;                      // guarded by mu_
  uint64_t force_seq_ = 0;    // guarded by mu_: held requests below it go at once
  bool dispatching_ = false;  // guarded by mu_: a thread is passing IOs down
  bool plugged_ = false;      // guarded by mu_
  bool timer_armed_ = false;  // guarded by mu_
  uint64_t unanswered_ = 0;   // guarded by mu_: IOs whose members are not all answered
  double service_ewma_us_ = 0;  // guarded by mu_
  // Recently passed-down ranges, for the merge-candidate test (a small ring).
  static constexpr size_t kRecent = 8;
  Range recent_[kRecent];     // guarded by mu_
  size_t recent_next_ = 0;    // guarded by mu_
  // IOs decided but whose call down has not returned yet: a request that conflicts with
  // one of them must not be passed down before that call returns.
  std::vector<Range> transit_;  // guarded by mu_
  // Written under mu_, read without it by the likely_held() hint.
  std::atomic<uint64_t> in_flight_{0};
  std::atomic<uint32_t> threshold_{1};
  std::atomic<size_t> held_count_{0};
};

}  // namespace vsfs::io
